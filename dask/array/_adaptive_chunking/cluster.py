"""Profiling on a ``dask.distributed`` cluster.

On a cluster the engine's ``array_optimize`` hook is pickled on the client and
runs on the scheduler, and tasks run in the workers: nothing the local schedulers
use reaches the client. Instead:

- when the hook is pickled on a client (:func:`snapshot`), it takes with it a
  compute id and the profiled array names with their profile ids;
- on the scheduler (:class:`RemoteOptimizer`) it optimizes as Dask would, finds
  which tasks work for which profiles (``instrument.assign_tags``) and annotates
  each group of tasks with ``(compute id, profile ids, tasks in the compute)``;
- a scheduler plugin (:class:`ProfilingPlugin`) records, for every annotated task
  that finishes, the worker's own compute interval, the output bytes, the worker and
  the thread, and the workers' memory while the compute runs;
- the client drains those records (:func:`drain`) when a profile is read.

``distributed`` is imported lazily: the module imports without it.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

__all__ = ["PLUGIN_NAME", "ANNOTATION", "ProfilingPlugin", "RemoteOptimizer", "drain"]

PLUGIN_NAME = "adaptive-chunking"
ANNOTATION = "adaptive_chunking"
#: Computes kept on the scheduler waiting to be drained; older ones are dropped.
MAX_COMPUTES = 64
#: Seconds a compute may take from being sent (or optimized) to having its tasks on
#: the scheduler; until then, not finding them does not mean it is gone.
SUBMIT_GRACE = 5.0
#: On the scheduler: compute id -> the graph facts :class:`RemoteOptimizer` found.
STRUCTURE: OrderedDict[str, dict[str, Any]] = OrderedDict()


def _structure() -> OrderedDict[str, dict[str, Any]]:
    """:data:`STRUCTURE` of the module as imported where this runs.

    The plugin class is built in a function, so registering it pickles it by
    value with a copy of this module's globals; it must look the dict up here.
    """
    from dask.array._adaptive_chunking import cluster

    return cluster.STRUCTURE


def _plugin_class():
    from distributed.diagnostics.plugin import SchedulerPlugin

    from dask.array._adaptive_chunking.records import cluster_record

    class ProfilingPlugin(SchedulerPlugin):
        """Records the annotated tasks of profiled computes on the scheduler."""

        name = PLUGIN_NAME
        idempotent = True

        def __init__(self, max_records: int = 1_000_000):
            self.max_records = max_records  # held across all computes until drained
            self.held = 0
            self.computes: OrderedDict[str, dict[str, Any]] = OrderedDict()
            self.ended: OrderedDict[str, None] = OrderedDict()  # drained: ignore stragglers
            self.scheduler = None

        async def start(self, scheduler) -> None:
            self.scheduler = scheduler
            scheduler.handlers["adaptive_chunking_drain"] = self.drain

        def _compute(self, cid: str, total: int) -> dict[str, Any]:
            entry = self.computes.get(cid)
            if entry is None:
                entry = self.computes[cid] = {
                    "total": total, "seen": 0, "records": [], "index": {}, "workers": {},
                    "tags": {},
                    "started": time.time(),
                    "saturation": float(getattr(self.scheduler, "WORKER_SATURATION", 0))
                    or None,
                }
                while len(self.computes) > MAX_COMPUTES:
                    old, dropped = self.computes.popitem(last=False)
                    self._forget(dropped)
                    self._end(old)  # its later tasks must not bring it back
            return entry

        def _end(self, cid: str) -> None:
            """Records of ``cid`` that arrive from now on are ignored."""
            self.ended[cid] = None
            while len(self.ended) > 16 * MAX_COMPUTES:
                self.ended.popitem(last=False)

        def _forget(self, entry: dict[str, Any]) -> None:
            self.held -= len(entry["records"])

        def _make_room(self, cid: str) -> None:
            """Drop the records of the oldest finished computes no client drained.

            (A client that went away, or an engine that was reset, never drains.)
            Computes still running keep theirs: past the bound, new records are
            counted, not kept.
            """
            for old in list(self.computes):
                if self.held < self.max_records:
                    return
                entry = self.computes[old]
                if old != cid and entry["records"] and entry["seen"] >= entry["total"]:
                    self._forget(self.computes.pop(old))
                    self._end(old)

        def update_graph(self, scheduler, *, keys=(), annotations=None, tasks=(),
                         **kwargs) -> None:
            """A graph arrived: count the tasks that will run for its compute.

            Distributed annotates only the tasks it did not have, and runs only what
            the wanted ``keys`` still need: nothing behind a result in memory or a
            task already running (for an earlier compute of the same array). Those
            the compute does not wait for. A task it had that has yet to run (kept
            for an earlier compute, not started) runs once, for this compute: it is
            tagged so, and the earlier compute stops waiting for it.
            """
            ours = (annotations or {}).get(ANNOTATION) or {}
            structure = _structure()
            cids = {tag[0] for tag in ours.values()}
            known = [c for c in cids if c in structure]
            if not known and tasks:  # every task existed: find the compute by its keys
                wanted = set(tasks)
                # list(): one step under the GIL, while the optimizer may add entries
                known = [c for c, st in list(structure.items())
                         if any(k in wanted for k in st.get("tags", ()))][-1:]
            for cid in known:
                mine = structure[cid].pop("tags", None) or {}
                if cid in self.ended or not mine:
                    continue
                run: set = set()
                stack = [scheduler.tasks.get(k) for k in keys]
                while stack:
                    ts = stack.pop()
                    if ts is None or ts.key in run or ts.state in (
                        "memory", "processing", "erred"
                    ):
                        continue
                    run.add(ts.key)
                    stack.extend(ts.dependencies)
                n = 0
                for key in run:
                    tag = mine.get(key)
                    if tag is None:
                        continue  # not a counted task of this compute
                    n += 1
                    ts = scheduler.tasks[key]
                    old = (ts.annotations or {}).get(ANNOTATION)
                    if old is not None and old[0] != cid:
                        ts.annotations = {**ts.annotations, ANNOTATION: tag}
                        earlier = self.computes.get(old[0])
                        if earlier is not None:  # it no longer waits for this task
                            earlier["total"] -= 1
                entry = self._compute(cid, n)
                entry["total"] = n

        def transition(self, key, start, finish, *args, **kwargs) -> None:
            if start != "processing" or finish not in ("memory", "erred"):
                return
            ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            tag = (ts.annotations or {}).get(ANNOTATION) if ts is not None else None
            if not tag:
                return
            cid, profiles, total = tag
            if cid in self.ended:
                return
            entry = self._compute(cid, total)
            t0 = t1 = 0.0
            for ss in kwargs.get("startstops") or ():
                if ss.get("action") == "compute":
                    t0, t1 = ss["start"], ss["stop"]
            worker = kwargs.get("worker") or ""
            profiles = entry["tags"].setdefault(tuple(profiles), tuple(profiles))
            record = cluster_record(key, t0, t1, int(kwargs.get("nbytes") or 0), worker,
                                    kwargs.get("thread") or 0, profiles, finish == "erred")
            index, records = entry["index"], entry["records"]
            if finish == "erred":  # known even if its record is not kept
                entry["failed"] = True
            if key in index:  # recomputed (a worker was lost): the newest run counts
                records[index[key]] = record
            else:
                entry["seen"] += 1
                if self.held >= self.max_records:
                    self._make_room(cid)
                if self.held < self.max_records:  # beyond: counted, not kept
                    index[key] = len(records)
                    records.append(record)
                    self.held += 1
            ws = self.scheduler.workers.get(worker)
            if ws is not None:
                memory = ws.memory
                seen = entry["workers"].get(worker)
                if seen is None:  # its memory when its first task of the compute ended
                    seen = entry["workers"][worker] = {
                        "nthreads": ws.nthreads, "memory_limit": ws.memory_limit or 0,
                        "baseline": int(getattr(memory, "process", 0) or 0),
                        "process": 0, "managed": 0, "unmanaged": 0, "spilled": 0,
                    }
                for field in ("process", "managed", "unmanaged", "spilled"):
                    value = int(getattr(memory, field, 0) or 0)
                    if value > seen[field]:
                        seen[field] = value

        def _live(self, cids) -> set:
            """Those of ``cids`` that still have tasks on the scheduler."""
            live: set = set()
            for ts in self.scheduler.tasks.values():
                tag = (ts.annotations or {}).get(ANNOTATION)
                if tag and tag[0] in cids:
                    live.add(tag[0])
                    if len(live) == len(cids):
                        break
            return live

        def drain(self, cids=None) -> dict[str, Any]:
            """The records of ``cids`` (all when None), removed once the compute ended.

            A compute has ended when all its tasks were recorded (``done``), when a
            task failed (the client gets the error), or when none of its tasks is left
            on the scheduler (``gone``: it was cancelled or lost a worker, and the
            client has released it). Records of an ended compute that arrive later
            are ignored.
            """
            wanted = list(self.computes if cids is None else cids)
            unfinished = {c for c in wanted if c not in self.computes
                          or self.computes[c]["seen"] < self.computes[c]["total"]}
            live = self._live(unfinished) if unfinished else set()
            out = {}
            structure = _structure()
            for cid in wanted:
                entry = self.computes.get(cid)
                done = entry is not None and cid not in unfinished
                gone = cid not in live and not done
                if entry is None:
                    if cids is None:
                        continue
                    known = structure.get(cid)
                    if known is not None and (
                        not gone or time.time() - known["time"] < SUBMIT_GRACE
                    ):  # optimized; its tasks are being added, or none finished yet
                        out[cid] = {"records": [], "workers": {}, "done": False,
                                    "gone": False, "profiles": known["profiles"]}
                    elif gone:
                        out[cid] = {"records": [], "workers": {}, "done": False, "gone": True,
                                    "structure": structure.pop(cid, None)}
                    continue
                failed = entry.get("failed", False)
                out[cid] = dict(entry, done=done, gone=gone, failed=failed)
                del out[cid]["index"], out[cid]["tags"]
                if not (done or gone or failed):
                    out[cid]["profiles"] = structure.get(cid, {}).get("profiles", [])
                else:
                    out[cid]["structure"] = structure.pop(cid, None)
                    self._forget(self.computes.pop(cid))
                    self._end(cid)
            return out

    return ProfilingPlugin


def ProfilingPlugin(*args, **kwargs):  # noqa: N802 - a class, built lazily
    """A :class:`distributed.diagnostics.plugin.SchedulerPlugin` (see the module doc)."""
    return _plugin_class()(*args, **kwargs)


class RemoteOptimizer:
    """The engine's optimizer as it runs on a distributed scheduler.

    ``named`` maps a profiled array's name to its profile ids and ``shapes`` maps
    it to its shape; the result is the optimization ``base`` would give, as a
    high-level graph whose layers group the tasks by the profiles they work for,
    each annotated for the plugin. What the local path learns from the graph (which
    keys each task reads, the contractions fused into tasks, the compute's outputs
    and what the later operations want from each profiled array) is kept in
    :data:`STRUCTURE` for the plugin to hand to the client with the records.
    """

    def __init__(self, base, cid: str, named: dict[str, tuple[str, ...]], everything=False,
                 shapes: dict[str, tuple[int, ...]] | None = None):
        self.base, self.cid, self.named, self.everything = base, cid, named, everything
        self.shapes = shapes or {}

    def __reduce__(self):
        return RemoteOptimizer, (self.base, self.cid, self.named, self.everything,
                                 self.shapes)

    def __call__(self, dsk, keys, **kwargs):
        from types import SimpleNamespace

        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

        from dask.array._adaptive_chunking import graph as _graph
        from dask.array._adaptive_chunking import attribution as _attribution
        from dask.array._adaptive_chunking.model import CONTRACTIONS

        names = [n for n in getattr(dsk, "layers", {}) if n in self.named]
        out = self.base(dsk, keys, **kwargs)
        if not names and not self.everything:
            return out
        try:
            flat, tasks, aliases, outputs = _attribution.measured_tasks(out, keys)
            named = {n: frozenset(self.named[n]) for n in names}
            if len(names) == 1 and isinstance(dsk, HighLevelGraph) and \
                    _graph.whole_lineage(dsk.dependencies, names[0]):
                # Every task works for this array (as on the local path), even where
                # fusion left none of its keys.
                tag_of, tags = dict.fromkeys(tasks, 0), [named[names[0]]]
            else:
                tag_of, tags = _attribution.assign_tags(flat, list(tasks), named)
            if self.everything:  # profile every task, for the engine's aggregate at least
                tags = [t | {""} for t in tags]
            counted = [k for k in tasks if tags[tag_of[k]]]
            graph = SimpleNamespace(tasks=tasks, aliases=aliases)
            hints = {}
            for n in names:
                if n in self.shapes and isinstance(dsk, HighLevelGraph):
                    d = _graph.downstream(dsk, n, tuple(self.shapes[n]))
                    hints.update((i, (sorted(d.whole_dims), d.square, list(d.ops)))
                                 for i in self.named[n])
            STRUCTURE[self.cid] = {
                "time": time.time(),
                # each counted key's tag, for tasks the scheduler already has (the
                # plugin's update_graph takes it)
                "tags": {k: (self.cid, tuple(sorted(tags[tag_of[k]] - {""})), len(counted))
                         for k in counted},
                "profiles": sorted(set().union(*tags) - {""}),
                "dependencies": list(_attribution.dependencies_of(graph, counted).items()),
                "fused": list(_attribution.fused_ops(graph, counted, CONTRACTIONS).items()),
                "outputs": [k for k in counted if k in outputs],
                "hints": hints,
                # the names of the expression's layers: the workload's signature
                "layers": list(dsk.layers) if isinstance(dsk, HighLevelGraph) else None,
            }
            while len(STRUCTURE) > MAX_COMPUTES:
                STRUCTURE.popitem(last=False)
            groups: dict[int, dict] = {}
            for key, node in flat.items():
                groups.setdefault(tag_of.get(key, -1) if key in tasks else -1, {})[key] = node
            layers, deps = {}, {}
            for i, part in groups.items():
                name = f"adaptive-chunking-{self.cid}-{i}"
                profiles = tuple(sorted(tags[i] - {""})) if i >= 0 else ()
                annotated = i >= 0 and bool(tags[i])
                annotations = ({ANNOTATION: (self.cid, profiles, len(counted))}
                               if annotated else None)
                layers[name] = MaterializedLayer(part, annotations=annotations)
                deps[name] = set()
            return HighLevelGraph(layers, deps)
        except Exception:
            STRUCTURE.pop(self.cid, None)
            return out  # profiling must never break the compute


def as_key(key):
    """A task key as Dask spells it (messages from the scheduler may turn tuples into lists)."""
    if isinstance(key, list):
        return tuple(as_key(k) for k in key)
    return key


def client_for_compute():
    """The distributed client a compute started here uses, or None.

    The same choice as Dask's ``get_scheduler`` (``distributed.get_client``: the
    client of ``as_current``, else the newest), except inside a worker's task, whose
    computes are not the user's.
    """
    import sys

    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import Client, get_worker

        try:
            get_worker()
            return None
        except ValueError:
            pass
        client = Client.current(allow_global=True)
    except (ValueError, ImportError):
        return None
    # An asynchronous client's calls return coroutines the engine cannot wait for.
    return None if getattr(client, "asynchronous", False) else client


def snapshot(base, named: dict[str, tuple[str, ...]], everything: bool = False,
             shapes: dict[str, tuple[int, ...]] | None = None):
    """A :class:`RemoteOptimizer` for one compute, and its compute id."""
    cid = uuid.uuid4().hex
    return RemoteOptimizer(base, cid, named, everything, shapes), cid


def _importable(dask_scheduler=None) -> bool:
    import importlib.util

    return importlib.util.find_spec("dask.array._adaptive_chunking.cluster") is not None


def _set_record_cap(value: int, dask_scheduler=None) -> None:
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is not None:
        plugin.max_records = value


def ensure_plugin(client, max_records: int) -> bool:
    """Register the profiling plugin on the client's scheduler (idempotent; blocking).

    Returns False, and profiles nothing there, when the scheduler cannot import
    this package (the optimizer sent to it would not unpickle). Settings are read
    on the client and travel with the plugin: the scheduler does not see the
    client's ``dask.config``. Never call this while distributed pickles a graph
    (it waits for the client's event loop, which may wait for the pickling).
    """
    state = getattr(client, "_adaptive_chunking_plugin", None)
    if state is False or (state is not None and state == max_records):
        return state is not False
    if isinstance(state, int):  # registered (idempotent): change its bound in place
        client.run_on_scheduler(_set_record_cap, max_records)
        client._adaptive_chunking_plugin = max_records
        return True
    if not client.run_on_scheduler(_importable):
        import warnings

        from dask.array._adaptive_chunking.errors import AdaptiveChunkingWarning

        client._adaptive_chunking_plugin = False
        warnings.warn(
            "the distributed scheduler cannot import dask.array.adaptive_chunking; "
            "computes on it are not profiled. Install this package where the "
            "scheduler runs",
            AdaptiveChunkingWarning,
            stacklevel=2,
        )
        return False
    client.register_plugin(ProfilingPlugin(max_records=max_records))
    client._adaptive_chunking_plugin = max_records
    return True


def plugin_ready(client, max_records: int) -> bool:
    """Whether computes on ``client`` can be profiled now, without blocking.

    When nobody has registered the plugin on this client yet (a client started after
    ``profile_array``), a background thread does, and this compute runs unprofiled.
    """
    state = getattr(client, "_adaptive_chunking_plugin", None)
    if state is None:
        import threading

        client._adaptive_chunking_plugin = "registering"

        def register():
            try:
                ensure_plugin(client, max_records)
            except Exception:
                client._adaptive_chunking_plugin = None  # try again next time

        threading.Thread(target=register, name="adaptive-chunking-plugin",
                         daemon=True).start()
        return False
    return state is not False and state != "registering"


def _set_saturation(value: float, dask_scheduler=None) -> float:
    if dask_scheduler.queued:
        raise RuntimeError(
            f"{len(dask_scheduler.queued)} root tasks are queued on the scheduler; "
            "change worker-saturation between computes"
        )
    old = dask_scheduler.WORKER_SATURATION
    dask_scheduler.WORKER_SATURATION = value
    return old


def set_worker_saturation(client, value: float) -> float:
    """Set the scheduler's worker saturation; returns the previous value."""
    return client.run_on_scheduler(_set_saturation, value)


def drain(client, cids) -> dict[str, Any]:
    """Fetch (and, for finished computes, remove) the records of ``cids``."""
    return client.sync(client.scheduler.adaptive_chunking_drain, cids=list(cids))
