"""The compute recorder: what each compute measured, folded into the profiles.

One :class:`ComputeRecorder` per engine. The optimizer hook asks it for the plan of
a compute (:meth:`~ComputeRecorder.plan`) and lets it instrument the tasks; as the
compute's collector's :class:`~.tasks.ComputeSink` it hears when the compute starts
and ends, folds the records (:func:`.folding.fold`) and applies the updates to the
profiles; computes sent to a ``dask.distributed`` scheduler are drained from it
(:meth:`~ComputeRecorder.drain`) and go through the same fold.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dask.highlevelgraph import HighLevelGraph

from dask.array._adaptive_chunking import attribution as _attribution
from dask.array._adaptive_chunking import cluster_client as _cluster
from dask.array._adaptive_chunking import config as _config
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import memory as _memory
from dask.array._adaptive_chunking import peaks as _peaks
from dask.array._adaptive_chunking import records as _records
from dask.array._adaptive_chunking.aggregate import Aggregate
from dask.array._adaptive_chunking.errors import holding, warn, warn_engine_error, warn_once
from dask.array._adaptive_chunking.folding import ComputeFold, GraphFacts, fold
from dask.array._adaptive_chunking.history_service import (HistoryService, fingerprint,
                                                            scheduler_kind)
from dask.array._adaptive_chunking.profiles import Profile, ProfileRegistry, UnsavedCompute
from dask.array._adaptive_chunking.tasks import ComputeCollector, in_task

__all__ = ["ComputePlan", "ComputeRecorder", "Deferred", "deferred"]

logger = logging.getLogger("dask.array.adaptive_chunking")

#: Compute ids sent to clusters and not yet drained.
MAX_REMOTE = 4096
#: Failed computes whose late records are still folded one by one.
MAX_FAILED = 64


class Deferred:
    """What a compute leaves for after its result is handed back: folding its
    records, applying the fold and storing the compute, done in order in one
    background thread.

    The last task of a compute used to do this before returning its result, so
    the caller waited for it (40 ms for 5,000 tasks). Whatever reads profiles
    calls :meth:`settle` first, so it sees every compute that has returned. The
    warnings of the deferred work, and its errors, are held and given there, in
    the reader's thread and under the reader's warning filters.
    """

    #: Seconds the thread waits for more work before it ends.
    IDLE = 2.0

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queue: deque[Callable[[], None]] = deque()
        self._submitted = self._done = 0  # jobs, counted: a reader waits for its own
        self._thread: threading.Thread | None = None
        self._warnings: list[str] = []  # held messages, errors as warnings too

    def submit(self, job: Callable[[], None]) -> None:
        with self._cv:
            thread = self._thread
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._run, daemon=True,
                                          name="adaptive-chunking-fold")
                try:
                    thread.start()
                except RuntimeError:  # no new threads (at exit, or at a limit)
                    thread = None
                self._thread = thread
            if thread is not None:
                self._queue.append(job)
                self._submitted += 1
                self._cv.notify()
                return
        with holding(self._warnings):  # done here and now, as before
            job()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._queue:
                    self._cv.wait(self.IDLE)
                if not self._queue:
                    self._thread = None
                    return
                job = self._queue.popleft()
            held: list[str] = []
            try:
                with holding(held):
                    try:
                        job()
                    except Exception as e:  # for the next reader; never lost silently
                        logger.debug("adaptive chunking: deferred fold failed: %s", e)
                        warn_engine_error(e)
            finally:
                # The compute's collector goes here, in this thread, not later in
                # whichever thread's garbage collection finds it.
                job = None
                with self._cv:
                    self._warnings += held
                    self._done += 1
                    self._cv.notify_all()

    def settle(self, timeout: float = 120.0) -> None:
        """Wait for the work submitted so far (not for work submitted meanwhile by
        computes that go on in other threads), then give its held warnings."""
        if self._done < self._submitted and threading.current_thread() is not self._thread:
            with self._cv:
                ticket = self._submitted
                if not self._cv.wait_for(lambda: self._done >= ticket, timeout):
                    logger.warning("adaptive chunking: profiles may lag the computes "
                                   "that returned (still folding after %s s)", timeout)
        self.report()

    def _before_fork(self) -> None:
        # A lock the thread holds at the fork stays locked in the child.
        if threading.current_thread() is not self._thread:
            with self._cv:
                ticket = self._submitted
                self._cv.wait_for(lambda: self._done >= ticket, 10.0)

    def report(self) -> None:
        """Give, in this thread, the warnings the deferred work held."""
        if self._warnings and threading.current_thread() is not self._thread:
            with self._cv:
                held, self._warnings = self._warnings, []
            for message in held:
                warn(message, stacklevel=3)

    def _after_fork(self) -> None:
        # The thread is not in the child; what it had queued belongs to the parent.
        self._cv = threading.Condition()
        self._queue.clear()
        self._submitted = self._done = 0
        self._thread, self._warnings = None, []


#: The one background folder of this process, shared by every engine.
deferred = Deferred()
atexit.register(deferred.settle)  # a script's last compute is still stored
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=deferred._before_fork, after_in_child=deferred._after_fork)


@dataclass
class ComputePlan:
    """How one local compute is instrumented: its profiles and how tasks map to them.

    ``named`` is what :func:`.attribution.attribute` takes: a frozenset when every
    task works for ``states``, a dict by array name, None for the engine's aggregate
    only (the engine is enabled and no profiled array is in the compute).
    """

    states: list[Profile]
    named: Any
    hints: dict
    signatures: dict
    settings: _config.Settings
    chunks: dict = field(default_factory=dict)  # profile -> the chunks it runs at


class ComputeRecorder:
    """Receives what computes measured and folds it into the profiles of one engine.

    Parameters
    ----------
    profiles : ProfileRegistry
        The engine's profiles.
    aggregate : callable
        Returns the engine-wide aggregate (the engine's ``ChunkProfiler``'s).
    history : HistoryService
        Where complete computes are stored while ``history`` is on.
    on_stored : callable
        Called with the settings after a complete compute was stored (auto-rechunk
        follows it).
    """

    def __init__(self, profiles: ProfileRegistry, aggregate: Callable[[], Aggregate],
                 history: HistoryService,
                 on_stored: Callable[[_config.Settings], None]) -> None:
        self.profiles = profiles
        self.aggregate = aggregate
        self.history = history
        self.on_stored = on_stored
        self.is_global = False  # the process-wide engine's: profiles everything when enabled
        self.profile_chunks: bool | None = None  # None: the ``profile`` setting
        self._lock = threading.RLock()
        # cid -> (tags, profiles, settings) of a compute that started and has not ended
        self._pending: dict[str, tuple[list[frozenset], set[Profile], _config.Settings]] = {}
        self._failed: OrderedDict[str, tuple] = OrderedDict()
        self._abandoned: deque[tuple] = deque()
        self._remote: OrderedDict[str, Any] = OrderedDict()  # cid -> (client, sent at)
        self.computes = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)

    # -- planning (the hook, in the thread that calls compute) ------------

    def plan(self, dsk, keys, settings: _config.Settings) -> ComputePlan | None:
        """Whether and for which profiles this compute is instrumented (None: not)."""
        if getattr(in_task, "depth", 0):
            return None  # a compute nested inside a measured task
        self.drain(settings, wait=False)  # a compute does not wait for the one before
        by_name = self.profiles.in_graph(dsk.layers) if isinstance(dsk, HighLevelGraph) \
            else {}
        states = list(dict.fromkeys(s for group in by_name.values() for s in group))
        if not states:
            if self.is_global and settings.enabled:  # for the engine's aggregate only
                return ComputePlan([], None, {}, {}, settings)
            return None
        found = _attribution.plan_graph(dsk, by_name, {n: g[0].shape for n, g in
                                                       by_name.items()})
        ran = {s: s.chunks_in(dsk.layers) for s in states}
        hints = {s: found.downstream[name] for s, (name, _) in ran.items()}
        signatures = {s: _graph.signature(dsk.layers, len(s.shape), s.dtype)
                      for s in states}
        named = frozenset(states) if found.whole else {
            n: frozenset(group) for n, group in by_name.items()}
        return ComputePlan(states, named, hints, signatures, settings,
                           {s: chunks for s, (_, chunks) in ran.items()})

    def instrument(self, dsk, keys, plan: ComputePlan):
        """The optimized graph ``dsk`` with its tasks measured for ``plan``."""
        out, collector = _attribution.instrument(dsk, keys, plan.named, self)
        if not collector.n_tasks and plan.states:
            # Only data and aliases: no task will run, so this compute is already over.
            self.profiles.ended_empty(plan.states, "complete")
        collector.states, collector.settings = plan.states, plan.settings
        collector.method = plan.settings.peak_method
        collector.interval = plan.settings.sample_interval
        collector.hints, collector.signatures = plan.hints, plan.signatures
        collector.chunks = plan.chunks
        if isinstance(dsk, HighLevelGraph):  # keep the graph's type and layers
            return _attribution.same_layers(dsk, out)
        return out

    # -- the ComputeSink protocol (threads running the compute's tasks) ----

    def start(self, collector: ComputeCollector) -> None:
        """The first task of a compute starts: track it and mark its profiles."""
        with self._lock:
            self._pending[collector.cid] = (collector.tags, set(collector.states),
                                            collector.settings)
        with self.profiles.lock:
            for state in collector.states:
                state.status = "running"
        _peaks.track_peak(collector, collector.method, collector.interval)

    def register_failed(self, cid: str) -> None:
        """A task of this compute raised: later records are folded as they come."""
        with self._lock:
            entry = self._pending.get(cid)
            if entry is not None:
                self._failed[cid] = entry
                while len(self._failed) > MAX_FAILED:
                    self._failed.popitem(last=False)

    def finish(self, collector: ComputeCollector) -> None:
        """The compute's last task ended: fold it after its result is handed back,
        or at once when a task failed (the profile says so before the error
        reaches the caller)."""
        with self._lock:
            entry = self._pending.pop(collector.cid, None)
            failed = collector.cid in self._failed
        if entry is None:
            return
        # The hardware as configured now, not when it is folded; only profiles keep it
        # (the engine's aggregate alone is not stored).
        now = scheduler_kind() if collector.states else None
        # Auto-rechunk sets array.chunk-size from what is stored: arrays made next
        # must see this compute, as they did before folding was deferred.
        if not failed and not getattr(collector.settings, "auto_rechunk", False):
            deferred.submit(functools.partial(self._fold_local, collector, entry, now))
            return
        deferred.settle()  # the computes that ended before it first
        self._fold_local(collector, entry, now)

    def _fold_local(self, collector: ComputeCollector, entry: tuple,
                    now: tuple[str, int] | None) -> None:
        tags, states, _ = entry
        records = collector.records
        k = len(records)
        batch = _records.batch_from_records(records[:k])
        failed = bool(batch.data["failed"].any())
        baseline = collector.baseline
        in_use = _memory.live_rss(baseline, collector.free)
        if collector.include_children:
            baseline += collector.children_baseline
            in_use += collector.children_baseline
        # KeyboardInterrupt or SystemExit in a task stopped the compute: not a failure
        interrupted = collector.error is not None and collector.error.interrupted
        status = ("incomplete" if interrupted else "failed") if failed else "complete"
        if collector.include_children:
            kind = "processes"
        elif len(batch) and (batch.data["worker"] == collector.caller).all():
            kind = "sync"
        else:
            kind = "threads"
        settings = collector.settings
        graph = GraphFacts(hints=collector.hints, tasks=collector.tasks,
                           aliases=collector.aliases, signatures=collector.signatures,
                           chunks=collector.chunks)
        folded = fold(batch, tags, states, status, peak=collector.peak, baseline=baseline,
                      graph=graph, error=collector.error, in_use=in_use)
        self.apply(folded, settings, lambda: fingerprint(settings, kind, now=now))
        for record in records[k:]:  # appended while the compute was being finalized
            self.late(collector.cid, record)

    def late(self, cid: str, record: tuple) -> None:
        """A task that finished after its compute failed: add its record."""
        with self._lock:
            entry = self._failed.get(cid)
        if entry is None:
            return
        tags, _, settings = entry  # the compute's own settings
        if not self._profiling_chunks(settings):
            return
        batch = _records.batch_from_records([record])
        for state in tags[int(batch.data["tag"][0])]:
            state.aggregate.add_batch(batch, settings.max_records)
        self.aggregate().add_batch(batch, settings.max_records)

    def abandon(self, records: list, cid: str) -> None:
        """The collector of an unfinished compute was garbage collected.

        Called by ``weakref.finalize``, possibly in the middle of another engine
        call of this thread: only queue it; :meth:`drain` does the work.
        """
        if cid in self._pending:  # started and unfinished; else nothing to keep
            self._abandoned.append((records, cid))

    # -- applying a fold ---------------------------------------------------

    def _profiling_chunks(self, settings: _config.Settings) -> bool:
        return settings.profile if self.profile_chunks is None else self.profile_chunks

    def apply(self, folded: ComputeFold, settings: _config.Settings,
              hardware: Callable[[], str] | None = None) -> None:
        """Apply one compute's fold to the profiles; store it if complete.

        ``hardware`` gives the fingerprint a complete compute is stored under.
        """
        status = folded.status
        hardware_id = None
        if status == "complete" and hardware is not None and folded.updates:
            try:
                hardware_id = hardware()
            except Exception as e:  # the history's problem, never the profile's
                warn_once("history", "adaptive chunking could not describe this machine "
                          f"for its history ({type(e).__name__}: {e})")
        chunks = self._profiling_chunks(settings)
        probe = bool(folded.updates) and all(u.profile.sample for u in folded.updates)
        if folded.observation is not None and not probe:
            engine = self.aggregate()
            if chunks:
                engine.add_batch(folded.batch, settings.max_records)
            engine.add_compute(folded.observation)
        for u in folded.updates:
            state = u.profile
            if chunks:
                state.aggregate.add_batch(u.part, settings.max_records)
            if u.observation is not None:
                state.aggregate.add_compute(u.observation)
            with self.profiles.lock:
                if u.downstream is not None:
                    state.downstream = u.downstream
                if u.chunks is not None and u.observation is not None:
                    state.run_at(u.chunks)
                state.status = status
                state.signature = u.signature or state.signature
                state.fingerprint = hardware_id or state.fingerprint
                if u.observation is not None and u.signature and hardware_id:
                    state.unsaved.append(UnsavedCompute(u.observation, u.signature,
                                                        hardware_id))
                state.computes += 1
                state.wall_seconds += folded.summary["wall_time_s"]
                state.last = dict(folded.summary, tasks=len(u.part))
                if u.error is not None:
                    state.error = u.error
        with self._lock:
            self.computes += 1
            self.recent.append(folded.summary)
        self.profiles.bound_memory(self.aggregate(), settings.max_memory,
                                   settings.max_records)
        if status == "complete" and settings.history:
            self._store([u.profile for u in folded.updates], settings)

    def _store(self, states: list[Profile], settings: _config.Settings) -> None:
        """Store a finished local compute's profiles in the history."""
        for state in states:
            if not self.profiles.knows(state.id):
                continue  # dropped meanwhile (max-memory, remove_profile): forgotten
            try:
                self.history.save(state, settings)
            except Exception as e:  # a history problem never breaks the compute
                warn_once("history", "adaptive chunking could not store a profile in its "
                          f"history ({type(e).__name__}: {e})")
        self.on_stored(settings)

    # -- clusters ----------------------------------------------------------

    def sent(self, cid: str, client) -> None:
        """A compute with profiled arrays was sent to ``client``'s scheduler."""
        with self._lock:
            self._remote[cid] = (client, time.monotonic())
            # Ids of computes without profiled arrays (or pickled but never sent) are
            # dropped once the grace period shows they never reached the scheduler.
            while len(self._remote) > MAX_REMOTE:
                self._remote.popitem(last=False)

    def drain(self, settings: _config.Settings | None = None, wait: bool = True) -> None:
        """Fold the computes that ended on clusters or whose graphs were dropped;
        with ``wait``, also wait for the local computes' deferred folds."""
        if wait:
            deferred.settle()
        else:
            deferred.report()
        if not self._remote and not self._abandoned:
            return
        settings = settings or _config.snapshot(strict=False)
        if self._remote:
            self._drain_remote(settings)
        while self._abandoned:
            try:
                records, cid = self._abandoned.popleft()
            except IndexError:
                return
            with self._lock:
                entry = self._pending.pop(cid, None)
            if entry is None or not records:
                continue  # finished normally, or optimized and never run
            tags, states, _ = entry
            try:
                batch = _records.batch_from_records(list(records))
                self.apply(fold(batch, tags, states, "incomplete", peak=0, baseline=0),
                           settings)
            except Exception as e:  # profiling must never break the caller
                warn_engine_error(e)

    def _drain_remote(self, settings: _config.Settings) -> None:
        with self._lock:
            by_client: dict = {}
            sent_at = {}
            for cid, (client, when) in self._remote.items():
                by_client.setdefault(id(client), (client, []))[1].append(cid)
                sent_at[cid] = when
        for client, cids in by_client.values():
            found = self._fetch(client, cids)
            for cid, entry in (found or {}).items():
                failed = entry.get("failed") or any(
                    map(_records.cluster_failed, entry["records"]))
                if entry.get("gone") and not entry["records"] and not entry.get("closed") and (
                    time.monotonic() - sent_at.get(cid, 0) < _cluster.SUBMIT_GRACE
                ):
                    continue  # maybe not on the scheduler yet
                if not (entry["done"] or entry.get("gone") or failed):
                    self._running(entry.get("profiles") or ())
                    continue
                with self._lock:
                    self._remote.pop(cid, None)
                status = "failed" if failed else "complete" if entry["done"] else "incomplete"
                try:
                    self._fold_remote(entry, status, client, settings)
                except Exception as e:  # profiling must never break the caller
                    warn_engine_error(e)

    @staticmethod
    def _fetch(client, cids) -> dict | None:
        """The scheduler's records of ``cids``; for a closed client, every one gone."""
        try:
            found = _cluster.drain(client, cids)
            if not isinstance(found, dict):
                raise TypeError(f"unexpected answer {type(found).__name__}")
            return found
        except Exception as e:  # a closed client, a lost scheduler
            logger.debug("adaptive chunking could not drain %s: %s", cids, e)
            if getattr(client, "status", "running") in ("closing", "closed"):
                return {c: {"records": [], "workers": {}, "done": False, "gone": True,
                            "closed": True} for c in cids}
            return None

    def _running(self, profile_ids) -> None:
        """Profiles whose compute is in flight on a cluster are ``running``."""
        with self.profiles.lock:
            for state in self.profiles.all():
                if state.id in profile_ids:
                    state.status = "running"

    def _fold_remote(self, entry: dict[str, Any], status: str, client,
                     settings: _config.Settings) -> None:
        records = entry["records"]
        if entry.get("seen", 0) > len(records):
            logger.info(
                "adaptive chunking: the scheduler kept %d of the %d task records of a "
                "compute (its share of '%s.max-memory'); the profile rests on those",
                len(records), entry["seen"], _config.PREFIX,
            )
        states = self.profiles.by_id()
        structure = entry.get("structure") or {}
        if not records:  # the compute ended before any task of it finished
            self._ended_empty(entry, status, states, structure)
            return
        outputs = set(map(_cluster.as_key, structure.get("outputs", ())))
        batch, groups = _records.batch_from_cluster(records, outputs, _cluster.as_key)
        tags = [frozenset(states[i] for i in profiles if i in states) for profiles in groups]
        involved = set().union(*tags) if tags else set()
        workers = entry.get("workers", {})
        top = max(workers.values(), key=lambda w: w["process"], default=None)
        peak, baseline = (top["process"], top["baseline"]) if top else (0, 0)
        graph = _cluster.graph_facts(structure, involved) if structure else None
        with self.profiles.lock:
            for state in involved:
                state.workers = dict(workers)
                state.saturation = entry.get("saturation")
        folded = fold(batch, tags, involved, status, peak=peak, baseline=baseline,
                      graph=graph)
        # Stored under the whole cluster (the workers of this compute may be fewer)
        self.apply(folded, settings, lambda: fingerprint(
            settings, "distributed", _cluster.cluster_workers(client) or workers))

    def _ended_empty(self, entry, status: str, states: dict, structure: dict) -> None:
        """A cluster compute that ended with no task record: only its status counts.

        Only profiles the scheduler saw in its graph change; a compute that never got
        there (or had no profiled array) says nothing about any profile.
        """
        known = {states[i] for i in structure.get("profiles", ()) if i in states}
        self.profiles.ended_empty(known, status)
        with self.profiles.lock:
            if entry.get("closed"):  # what was sent on a closed client is lost
                for state in self.profiles.all():
                    if state.status in ("pending", "running") and state.computes == 0:
                        state.status = status

