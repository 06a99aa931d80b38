"""The scheduler's half of profiling on a ``dask.distributed`` cluster.

Imported where a scheduler runs (and, to register the plugin or to pickle the
optimizer, on a client that has a cluster); it imports ``distributed`` at the top,
so nothing else of the engine imports it before a cluster exists.

- :class:`RemoteOptimizer` is the engine's ``array_optimize`` as it runs on the
  scheduler: it optimizes as Dask would, attributes the tasks to profiles with the
  same step as the local hook (``attribution.plan_graph`` and ``attribute``) and
  annotates each group of tasks with ``(compute id, profile ids, tasks in the
  compute)``;
- :class:`ProfilingPlugin` records, for every annotated task that finishes, the
  worker's own compute interval, the output bytes, the worker and the thread, and
  the workers' memory while the compute runs, until the client drains them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from distributed.diagnostics.plugin import SchedulerPlugin

from dask.array._adaptive_chunking import attribution as _attribution
from dask.array._adaptive_chunking.cluster_client import (
    ANNOTATION,
    MAX_COMPUTES,
    PLUGIN_NAME,
    SUBMIT_GRACE,
)
from dask.array._adaptive_chunking.model import CONTRACTIONS
from dask.array._adaptive_chunking.records import cluster_record

__all__ = ["ProfilingPlugin", "RemoteOptimizer", "STRUCTURE"]

#: On the scheduler: compute id -> the graph facts :class:`RemoteOptimizer` found.
STRUCTURE: OrderedDict[str, dict[str, Any]] = OrderedDict()


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
        structure = STRUCTURE
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
        structure = STRUCTURE
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
        names = [n for n in getattr(dsk, "layers", {}) if n in self.named]
        out = self.base(dsk, keys, **kwargs)
        if not names and not self.everything:
            return out
        try:
            return self._annotated(dsk, out, keys, names)
        except Exception:
            STRUCTURE.pop(self.cid, None)
            return out  # profiling must never break the compute

    def _annotated(self, dsk, out, keys, names: list[str]) -> HighLevelGraph:
        """``out`` regrouped in layers by profiles, each annotated for the plugin."""
        plan = _attribution.plan_graph(dsk, names, self.shapes)
        named = {n: frozenset(self.named[n]) for n in names}
        # Every task works for one array (as on the local path), even where fusion
        # left none of its keys
        found = _attribution.attribute(out, keys, named[names[0]] if plan.whole else named)
        tag_of, tags = found.tag_of, found.tags
        if self.everything:  # profile every task, for the engine's aggregate at least
            tags = [t | {""} for t in tags]
        counted = [k for k in found.tasks if tags[tag_of[k]]]
        STRUCTURE[self.cid] = self._structure(dsk, found, tags, counted, plan)
        while len(STRUCTURE) > MAX_COMPUTES:
            STRUCTURE.popitem(last=False)
        groups: dict[int, dict] = {}
        for key, node in found.graph.items():
            groups.setdefault(tag_of.get(key, -1) if key in found.tasks else -1, {})[key] = node
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

    def _structure(self, dsk, found, tags, counted, plan) -> dict[str, Any]:
        """What the local path learns from the graph, for the client's fold: which keys
        each task reads, the contractions fused into tasks, the outputs and what the
        later operations want from each profiled array."""
        # By array name: the client knows which of a profile's arrays (its own or a
        # rechunk of it) the compute works at.
        hints = {n: (sorted(d.whole_dims), d.square, list(d.ops))
                 for n, d in plan.downstream.items()}
        return {
            "time": time.time(),
            # each counted key's tag, for tasks the scheduler already has (the
            # plugin's update_graph takes it)
            "tags": {k: (self.cid, tuple(sorted(tags[found.tag_of[k]] - {""})), len(counted))
                     for k in counted},
            "profiles": sorted(set().union(*tags) - {""}),
            "dependencies": list(_attribution.dependencies_of(found, counted).items()),
            "fused": list(_attribution.fused_ops(found, counted, CONTRACTIONS).items()),
            "outputs": [k for k in counted if k in found.outputs],
            "hints": hints,
            # the names of the expression's layers: the workload's signature
            "layers": list(dsk.layers) if isinstance(dsk, HighLevelGraph) else None,
        }


def importable(dask_scheduler=None) -> bool:
    """Run on the scheduler: whether it can import this package (and so the optimizer)."""
    import importlib.util

    return importlib.util.find_spec("dask.array._adaptive_chunking.cluster_scheduler") \
        is not None


def set_record_cap(value: int, dask_scheduler=None) -> None:
    """Run on the scheduler: change the plugin's bound on the records it holds."""
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is not None:
        plugin.max_records = value


def set_saturation(value: float, dask_scheduler=None) -> float:
    """Run on the scheduler: set ``worker-saturation`` between computes; the old value."""
    if dask_scheduler.queued:
        raise RuntimeError(
            f"{len(dask_scheduler.queued)} root tasks are queued on the scheduler; "
            "change worker-saturation between computes"
        )
    old = dask_scheduler.WORKER_SATURATION
    dask_scheduler.WORKER_SATURATION = value
    return old
