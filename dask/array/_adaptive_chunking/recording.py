"""How the engine receives what a compute measured, and folds it into its profiles.

A mixin of :class:`~dask.array.adaptive_chunking.AdaptiveChunkingEngine`. The
optimizer hook asks :meth:`Recording._plan` which profiled arrays a graph contains
and :meth:`Recording._instrument` wraps its tasks; the collector of each compute
(``instrument.ComputeCollector``) calls ``_start``, ``_finish`` and the rest from the
threads that ran the tasks; computes on a ``dask.distributed`` cluster are drained
from its scheduler. ``_fold`` turns one compute's records into per-profile
observations and statistics.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from dask.highlevelgraph import HighLevelGraph

from dask.array._adaptive_chunking import cluster as _cluster
from dask.array._adaptive_chunking import config as _config
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import attribution as _attribution
from dask.array._adaptive_chunking import errors as _errors
from dask.array._adaptive_chunking import peaks as _peaks
from dask.array._adaptive_chunking import records as _records
from dask.array._adaptive_chunking import tasks as _tasks
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import public as _ac
from dask.array._adaptive_chunking.learning import _cluster_workers, _fingerprint

__all__ = ["Recording"]

logger = logging.getLogger("dask.array.adaptive_chunking")
_PREFIX = _config.PREFIX
_read = _config.setting
MiB = 2**20


class Recording:
    """The engine's side of measuring computes (see the module's docstring)."""

    def _plan(self, dsk, keys):
        """Decide whether and for which profiles this compute is instrumented.

        Returns None (do not instrument) or ``(states, named)``: the profiles in
        this compute and, per profiled array name in it, its profiles (tasks are
        attributed from these by ``instrument.assign_tags``).
        """
        if getattr(_tasks.in_task, "depth", 0):
            return None  # a compute nested inside a measured task
        self._drain()
        names: list[str] = []
        if isinstance(dsk, HighLevelGraph) and self._by_name:
            with self._lock:
                names = [n for n in dsk.layers if n in self._by_name]
                by_name = {n: list(self._by_name[n]) for n in names}
        states = [s for n in names for s in by_name[n]]
        if not states:
            if self is _ac._engine and self.enabled:
                # profile everything, for the engine's aggregate only
                return [], None, {}, {}
            return None
        hints, signatures = {}, {}
        for n in names:
            downstream = _graph.downstream(dsk, n, by_name[n][0].shape)
            hints.update((s, downstream) for s in by_name[n])
            for state in by_name[n]:
                signatures[state] = _graph.signature(dsk.layers, len(state.shape), state.dtype)
        if len(names) == 1 and _graph.whole_lineage(dsk.dependencies, names[0]):
            # every task works for this array
            return states, frozenset(states), hints, signatures
        return states, {n: frozenset(by_name[n]) for n in names}, hints, signatures

    def _instrument(self, dsk, keys, plan):
        states, named, hints, signatures = plan
        interval, method = _read("sample-interval"), _read("peak-method")
        out, collector = _attribution.instrument(dsk, keys, named, self)
        if not collector.n_tasks and states:
            # Only data and aliases: no task will run, so this compute is already over.
            with self._lock:
                for state in states:
                    state.status = "complete"
                    state.computes += 1
                    state.last = {"status": "complete", "tasks": 0}
        collector.states, collector.method, collector.interval = states, method, interval
        collector.hints, collector.signatures = hints, signatures
        if isinstance(dsk, HighLevelGraph):  # keep the graph's type and layers
            return _attribution.same_layers(dsk, out)
        return out

    def start(self, collector) -> None:
        """The first task of a compute starts: track it and mark its profiles."""
        with self._lock:
            self._pending[collector.cid] = (collector.tags, set(collector.states))
            for state in collector.states:
                state.status = "running"
        _peaks.track_peak(collector, collector.method, collector.interval)

    def register_failed(self, cid: str) -> None:
        """A task of this compute raised: later records are folded as they come."""
        with self._lock:
            entry = self._pending.get(cid)
            if entry is not None:
                self._failed_computes[cid] = entry
                while len(self._failed_computes) > 64:
                    self._failed_computes.popitem(last=False)

    def finish(self, collector) -> None:
        with self._lock:
            entry = self._pending.pop(collector.cid, None)
        if entry is None:
            return
        tags, states = entry
        records = collector.records
        k = len(records)
        batch = _records.batch_from_records(records[:k])
        failed = bool(batch.data["failed"].any())
        baseline = collector.baseline
        if collector.include_children:
            baseline += collector.children_baseline
        # KeyboardInterrupt or SystemExit in a task stopped the compute: not a failure
        interrupted = collector.error is not None and collector.error[2]
        status = ("incomplete" if interrupted else "failed") if failed else "complete"
        if collector.include_children:
            kind = "processes"
        elif len(batch) and (batch.data["worker"] == collector.caller).all():
            kind = "sync"
        else:
            kind = "threads"
        self._fold(batch, tags, states, status, peak=collector.peak, baseline=baseline,
                   collector=collector, hardware=lambda: _fingerprint(kind))
        for record in records[k:]:  # appended while the compute was being finalized
            self.late(collector.cid, record)

    def late(self, cid: str, record: tuple) -> None:
        """A task that finished after its compute failed: add its chunk record."""
        with self._lock:
            entry = self._failed_computes.get(cid)
        if entry is None or not self.profile_chunks:
            return
        batch = _records.batch_from_records([record])
        for state in entry[0][int(batch.data["tag"][0])]:
            state.profiler._record_batch(batch)
        self.profiler._record_batch(batch)

    def abandon(self, records: list, cid: str) -> None:
        """The collector of an unfinished compute was garbage collected.

        Called by ``weakref.finalize``, possibly in the middle of another engine
        call of this thread: only queue it; :meth:`_drain` does the work.
        """
        if cid in self._pending:  # started and unfinished; else nothing to keep
            self._abandoned.append((records, cid))

    def _remote_names(self) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple]]:
        """Per profiled array name: its profile ids, and its shape."""
        with self._lock:
            named = {n: tuple(s.id for s in states) for n, states in self._by_name.items()}
            shapes = {n: states[0].shape for n, states in self._by_name.items() if states}
        return named, shapes

    def _sent(self, cid: str, client) -> None:
        """A compute with profiled arrays was sent to ``client``'s scheduler."""
        with self._lock:
            self._remote[cid] = (client, time.monotonic())
            # Ids of computes without profiled arrays (or pickled but never sent) are
            # dropped once the grace period shows they never reached the scheduler.
            while len(self._remote) > _ac._MAX_REMOTE:
                self._remote.popitem(last=False)

    def _drain_remote(self) -> None:
        """Fold the records of finished computes from the distributed schedulers."""
        with self._lock:
            by_client: dict = {}
            sent_at = {}
            for cid, (client, when) in self._remote.items():
                by_client.setdefault(id(client), (client, []))[1].append(cid)
                sent_at[cid] = when
        for client, cids in by_client.values():
            try:
                found = _cluster.drain(client, cids)
                if not isinstance(found, dict):
                    raise TypeError(f"unexpected answer {type(found).__name__}")
            except Exception as e:  # a closed client, a lost scheduler
                logger.debug("adaptive chunking could not drain %s: %s", cids, e)
                if getattr(client, "status", "running") in ("closing", "closed"):
                    found = {c: {"records": [], "workers": {}, "done": False, "gone": True,
                                 "closed": True} for c in cids}
                else:
                    continue
            for cid, entry in found.items():
                failed = entry.get("failed") or any(map(_records.cluster_failed, entry["records"]))
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
                    self._fold_remote(entry, status, client)
                except Exception as e:  # profiling must never break the caller
                    _errors.warn_engine_error(e)

    def _running(self, profile_ids) -> None:
        """Profiles whose compute is in flight on a cluster are ``running``."""
        with self._lock:
            for state in self._profiles.values():
                if state.id in profile_ids:
                    state.status = "running"

    def _fold_remote(self, entry: dict[str, Any], status: str, client=None) -> None:
        records = entry["records"]
        if entry.get("seen", 0) > len(records):
            logger.info(
                "adaptive chunking: the scheduler kept %d of the %d task records of a "
                "compute (its share of '%s.max-memory'); the profile rests on those",
                len(records), entry["seen"], _PREFIX,
            )
        with self._lock:
            states = {s.id: s for s in self._profiles.values()}
        structure = entry.get("structure") or {}
        outputs = set(map(_cluster.as_key, structure.get("outputs", ())))
        batch, groups = _records.batch_from_cluster(records, outputs, _cluster.as_key)
        tags = [frozenset(states[i] for i in profiles if i in states) for profiles in groups]
        involved = set().union(*tags) if tags else set()
        if not records:  # the compute ended before any task of it finished
            # Only profiles the scheduler saw in its graph; a compute that never got
            # there (or had no profiled array) says nothing about any profile.
            known = {states[i] for i in structure.get("profiles", ()) if i in states}
            with self._lock:
                for state in known:
                    state.status = status
                    state.computes += 1
                    state.last = {"status": status, "tasks": 0}
                if entry.get("closed"):  # what was sent on a closed client is lost
                    for state in self._profiles.values():
                        if state.status in ("pending", "running") and state.computes == 0:
                            state.status = status
            return
        workers = entry.get("workers", {})
        top = max(workers.values(), key=lambda w: w["process"], default=None)
        peak, baseline = (top["process"], top["baseline"]) if top else (0, 0)
        graph = None
        if structure:
            as_key = _cluster.as_key
            layers = structure.get("layers")
            graph = _ac._GraphFacts(
                {as_key(k): [as_key(d) for d in ds] for k, ds in structure["dependencies"]},
                {as_key(k): op for k, op in structure["fused"]},
                {states[i]: _graph.Downstream(frozenset(w), bool(sq), tuple(ops))
                 for i, (w, sq, ops) in structure["hints"].items() if i in states},
                signatures={
                    s: _graph.signature(layers, len(s.shape), s.dtype) for s in involved
                } if layers is not None else None,
            )
        with self._lock:
            for state in involved:
                state.workers = dict(workers)
                state.saturation = entry.get("saturation")
        # Stored under the whole cluster (the workers of this compute may be fewer)
        self._fold(batch, tags, involved, status, peak=peak, baseline=baseline, graph=graph,
                   hardware=lambda: _fingerprint("distributed",
                                                 _cluster_workers(client) or workers))

    def _drain(self) -> None:
        """Fold the computes whose graphs were dropped before they finished."""
        if self._remote:
            self._drain_remote()
        while self._abandoned:
            try:
                records, cid = self._abandoned.popleft()
            except IndexError:
                return
            with self._lock:
                entry = self._pending.pop(cid, None)
            if entry is None or not records:
                continue  # finished normally, or optimized and never run
            tags, states = entry
            try:
                batch = _records.batch_from_records(list(records))
                self._fold(batch, tags, states, "incomplete", peak=0, baseline=0)
            except Exception as e:  # profiling must never break the caller
                _errors.warn_engine_error(e)

    def _fold(self, batch, tags, states, status, *, peak, baseline, collector=None,
              graph=None, hardware=None) -> None:
        """Fold one compute's records into the profiles it belongs to.

        With the ``collector`` (a compute that finished, not one abandoned) or the
        ``graph`` a distributed scheduler sent (a :class:`_GraphFacts`), each
        profile also learns the compute's structure: how its task count grows with
        the number of chunks, the task outputs that waited for their consumers, and
        what the downstream operations want from its chunks. ``hardware`` gives the
        fingerprint a complete compute is stored under in the history.
        """
        if graph is None and collector is not None:
            graph = _ac._GraphFacts(None, None, collector.hints, collector, collector.signatures)
        fingerprint = None
        if status == "complete" and hardware is not None:
            try:
                fingerprint = hardware()
            except Exception as e:  # the history's problem, never the profile's
                _errors.warn_once("history", "adaptive chunking could not describe this "
                                 f"machine for its history ({type(e).__name__}: {e})")
        profile_chunks = self.profile_chunks
        d = batch.data
        n = len(batch)
        if n:
            wall = float(d["t1"].max() - d["t0"].min())
            peak = max(peak, float(d["rss1"].max()))
            workers = len(np.unique(d["worker"]))
            concurrency = max(1, min(_records.max_overlap(d["t0"], d["t1"]), workers))
            results = int(d["nbytes"][d["out"]].sum())
        else:
            wall, concurrency, results = 0.0, 1, 0
        peak = max(peak, baseline)  # the baseline is one moment of the compute
        summary = {
            "status": status,
            "tasks": n,
            "wall_time_s": wall,
            "peak_memory_mb": peak / MiB,
            "baseline_memory_mb": baseline / MiB,
            "results_memory_mb": results / MiB,
            "concurrency": concurrency,
        }

        def observation(array_bytes, chunk_bytes, part, state=None) -> _model.Observation:
            structure = {}
            if state is not None and graph is not None:
                p = part.data
                deps = graph.dependencies_of(part.keys)
                replay = (part.keys, p["t0"], p["t1"], p["nbytes"], p["out"], deps)
                memory = {"mem": p["mem"], "mem_bytes": p["membytes"]}
                held, largest = _model.replay_memory(*replay, **memory)
                rechunked = _attribution.read_only_by_rechunks(deps)
                held_aligned = (
                    _model.replay_memory(*replay, rechunked, **memory)[0] if rechunked else held
                )
                structure = {
                    "blocks": max(1, math.prod(len(c) for c in state.chunks)),
                    # One chunk cannot show how tasks grow with the number of chunks.
                    "terms": _model.task_terms(
                        part.keys, state.split_dims, p["t1"] - p["t0"],
                        graph.fused_ops(part.keys),
                    ) if state.split_dims else (),
                    "held_bytes": held,
                    "task_bytes": largest,
                    "held_aligned_bytes": held_aligned,
                }
            return _model.Observation(
                array_bytes=array_bytes,
                chunk_bytes=chunk_bytes,
                n_tasks=len(part),
                task_seconds=float((part.data["t1"] - part.data["t0"]).sum()),
                wall_seconds=wall,
                peak_bytes=peak,
                baseline_bytes=baseline,
                results_bytes=results,
                concurrency=concurrency,
                **structure,
            )

        if n:
            if profile_chunks:
                self.profiler._record_batch(batch)
            total = int(d["logical"].sum())
            self.profiler._record_compute(observation(total, total / n, batch))
        for state in states:
            if len(tags) == 1 and state in tags[0]:
                part = batch
            else:
                mine = [i for i, group in enumerate(tags) if state in group]
                part = batch.take(np.isin(d["tag"], mine))
            if profile_chunks:
                state.profiler._record_batch(part)
            measured = None
            if len(part) and state.nbytes:
                measured = observation(state.nbytes, state.chunk_bytes, part, state)
                state.profiler._record_compute(measured)
            if graph is not None and state in graph.hints:
                state.downstream = graph.hints[state]
            signature = graph.signatures.get(state) if graph is not None else None
            with self._lock:
                state.status = status
                state.signature = signature or state.signature
                state.fingerprint = fingerprint or state.fingerprint
                if measured is not None and signature and fingerprint:
                    state.unsaved.append((measured, signature, fingerprint))
                state.computes += 1
                state.wall_seconds += wall
                state.last = dict(summary, tasks=len(part))
                error = collector.error if collector is not None else None
                if status == "failed" or error is not None:
                    if error is not None:  # the task and what it raised, as one
                        key, why, interrupted = error
                        state.error = (f"task {key!r} was interrupted ({why})" if interrupted
                                       else f"task {key!r} raised {why}")
                    else:  # from another process or a cluster: the task only
                        bad = np.flatnonzero(part.data["failed"])
                        what = f"task {part.keys[bad[0]]!r}" if len(bad) else "a task"
                        state.error = f"{what} raised"
        with self._lock:
            self._computes += 1
            self._recent.append(summary)
        self._bound_memory()
        self._autosave(states, status)
