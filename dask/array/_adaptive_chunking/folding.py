"""Pure folding: one compute's records and graph facts in, profile updates out.

A local compute (its collector) and a cluster compute (what the scheduler sent
back) both arrive here as a :class:`~.records.RecordBatch`, the tags that say which
profiles each record belongs to, and :class:`GraphFacts`. :func:`fold` turns them
into a :class:`ComputeFold`: the summary of the compute, the observation for the
engine's aggregate, and one :class:`ProfileUpdate` per profile. Applying them is
the recorder's job; nothing here changes a profile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dask.array._adaptive_chunking import attribution as _attribution
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import summary as _summary
from dask.array._adaptive_chunking.graph import Downstream
from dask.array._adaptive_chunking.records import RECORD_DTYPE, RecordBatch, max_overlap  # noqa: F401 (RECORD_DTYPE: the doctest's)
from dask.array._adaptive_chunking.tasks import TaskError

__all__ = ["GraphFacts", "ProfileUpdate", "ComputeFold", "fold", "summarize"]

MiB = 2**20


@dataclass
class GraphFacts:
    """What a compute's graph says about its tasks, from a local collector or a cluster.

    Locally ``tasks`` (key -> the task before instrumenting) and ``aliases`` come
    from the collector's graph; from a distributed scheduler ``dependencies`` (key
    -> keys it reads, aliases resolved) and ``fused`` (key -> contraction fused into
    it) came with the records. ``hints`` maps each profile to its
    :class:`~.graph.Downstream`, ``signatures`` to this compute's workload
    signature and ``chunks`` to the chunks it ran at (those of a rechunk by
    apply_recommendation; a profile missing: its own).
    """

    dependencies: dict | None = None
    fused: dict | None = None
    hints: dict = field(default_factory=dict)
    tasks: dict | None = None
    aliases: dict | None = None
    signatures: dict = field(default_factory=dict)
    chunks: dict = field(default_factory=dict)

    def dependencies_of(self, keys) -> dict:
        if self.tasks is not None:
            return _attribution.dependencies_of(self, keys)
        deps = self.dependencies or {}
        return {k: deps[k] for k in keys if k in deps}

    def fused_op_of(self):
        """A function of a key: the contraction fused into its task, or None."""
        if self.tasks is None:
            return (self.fused or {}).get
        tasks, split = self.tasks, {}
        return lambda key: _attribution.fused_op(tasks.get(key), _model.CONTRACTIONS, split)


@dataclass
class ProfileUpdate:
    """What one compute adds to one profile."""

    profile: Any
    part: RecordBatch  # its records
    observation: _model.Observation | None  # None: no task worked on its array
    downstream: Downstream | None
    signature: str | None
    error: str | None
    chunks: tuple | None = None  # those it ran at, when known


@dataclass
class ComputeFold:
    """One compute, folded: its summary, the engine-wide observation and the updates."""

    status: str
    summary: dict[str, Any]
    batch: RecordBatch
    observation: _model.Observation | None
    updates: list[ProfileUpdate]


def summarize(batch: RecordBatch, status: str, peak: float, baseline: float,
              in_use: float | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """The compute's summary (as ``last_compute`` shows it) and its raw numbers.

    ``in_use`` is the part of ``baseline`` the compute could not reuse (the
    allocator's free heap left out, see :func:`.memory.live_rss`; default
    ``baseline``): the observations' baseline, so that what a compute needed is
    what it added to that.

    >>> empty = RecordBatch(np.empty(0, RECORD_DTYPE), [], [], [])
    >>> summarize(empty, "complete", peak=0, baseline=2**20)[0]["peak_memory_mb"]
    1.0
    """
    d = batch.data
    wall, concurrency, results = 0.0, 1, 0
    if len(batch):
        wall = float(d["t1"].max() - d["t0"].min())
        peak = max(peak, float(d["rss1"].max()))
        workers = len(np.unique(d["worker"]))
        concurrency = max(1, min(max_overlap(d["t0"], d["t1"]), workers))
        results = int(d["nbytes"][d["out"]].sum())
    peak = max(peak, baseline)  # the baseline is one moment of the compute
    summary = {
        "status": status,
        "tasks": len(batch),
        "wall_time_s": wall,
        "peak_memory_mb": peak / MiB,
        "baseline_memory_mb": baseline / MiB,
        "results_memory_mb": results / MiB,
        "concurrency": concurrency,
    }
    in_use = baseline if in_use is None else min(in_use, baseline)
    numbers = {"wall": wall, "peak": peak, "results": results, "concurrency": concurrency,
               "baseline": in_use, "free": baseline - in_use}
    return summary, numbers


def _structure(chunks: tuple, part: RecordBatch, graph: GraphFacts) -> dict[str, Any]:
    """What the graph tells of a profile's tasks: how tasks grow with the chunks, the
    outputs that waited for their readers, the largest task's memory."""
    p = part.data
    deps = graph.dependencies_of(part.keys)
    replay = (part.keys, p["t0"], p["t1"], p["nbytes"], p["out"], deps)
    memory = {"mem": p["mem"], "mem_bytes": p["membytes"]}
    held, largest = _summary.replay_memory(*replay, **memory)
    rechunked = _attribution.read_only_by_rechunks(deps)
    split = sum(len(c) > 1 for c in chunks)
    held_aligned = _summary.replay_memory(*replay, rechunked, **memory)[0] if rechunked else held
    return {
        "blocks": max(1, math.prod(len(c) for c in chunks)),
        # One chunk cannot show how tasks grow with the number of chunks. The
        # fused contractions are looked up for the keys that name a layer's op
        # only (walking every fused task's subgraph was a third of the fold).
        "terms": _summary.task_terms(
            part.keys, split, p["t1"] - p["t0"], graph.fused_op_of(),
        ) if split else (),
        "held_bytes": held,
        "task_bytes": largest,
        "held_aligned_bytes": held_aligned,
    }


def _observation(numbers, array_bytes, chunk_bytes, part: RecordBatch, structure=None
                 ) -> _model.Observation:
    return _model.Observation(
        array_bytes=array_bytes,
        chunk_bytes=chunk_bytes,
        n_tasks=len(part),
        task_seconds=float((part.data["t1"] - part.data["t0"]).sum()),
        wall_seconds=numbers["wall"],
        peak_bytes=numbers["peak"],
        baseline_bytes=numbers["baseline"],
        free_bytes=numbers["free"],
        results_bytes=numbers["results"],
        concurrency=numbers["concurrency"],
        **(structure or {}),
    )


def _error(status: str, part: RecordBatch, error: TaskError | None) -> str | None:
    """What went wrong, as a profile's ``error`` says it (None: nothing)."""
    if error is not None:  # the task and what it raised, as one
        if error.interrupted:
            return f"task {error.key!r} was interrupted ({error.message})"
        return f"task {error.key!r} raised {error.message}"
    if status == "failed":  # from another process or a cluster: the task only
        bad = np.flatnonzero(part.data["failed"])
        return f"task {part.keys[bad[0]]!r} raised" if len(bad) else "a task raised"
    return None


def fold(batch: RecordBatch, tags: Sequence[frozenset], states, status: str, *,
         peak: float, baseline: float, graph: GraphFacts | None = None,
         error: TaskError | None = None, in_use: float | None = None) -> ComputeFold:
    """Fold one compute's records into an update for each of ``states``.

    ``tags[i]`` is the set of profiles of the records tagged ``i``; ``peak`` and
    ``baseline`` are the process (or worker) memory in bytes, ``in_use`` the part of
    ``baseline`` the compute could not reuse (see :func:`summarize`); ``error`` the
    :class:`~.tasks.TaskError` of a task that raised, when known. With
    ``graph`` each profile also learns the compute's structure.
    """
    summary, numbers = summarize(batch, status, peak, baseline, in_use)
    n = len(batch)
    engine_observation = None
    if n:
        total = int(batch.data["logical"].sum())
        engine_observation = _observation(numbers, total, total / n, batch)
    updates = []
    for state in states:
        if len(tags) == 1 and state in tags[0]:
            part = batch
        else:
            mine = [i for i, group in enumerate(tags) if state in group]
            part = batch.take(np.isin(batch.data["tag"], mine))
        measured = None
        chunks = graph.chunks.get(state) if graph is not None else None
        if len(part) and state.nbytes:
            ran = chunks or state.chunks
            structure = _structure(ran, part, graph) if graph is not None else None
            blocks = math.prod(len(c) for c in ran) if ran else 1
            measured = _observation(numbers, state.nbytes, state.nbytes / max(1, blocks),
                                    part, structure)
        updates.append(ProfileUpdate(
            profile=state, part=part, observation=measured,
            downstream=graph.hints.get(state) if graph is not None else None,
            signature=graph.signatures.get(state) if graph is not None else None,
            error=_error(status, part, error) if status == "failed" or error else None,
            chunks=chunks,
        ))
    return ComputeFold(status, summary, batch, engine_observation, updates)
