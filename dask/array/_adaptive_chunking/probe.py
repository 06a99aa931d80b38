"""Probes: measure a workload at a chunk size no profiled compute ran, on a sample.

A recommendation far from every measured chunk size is a guess (``model.REACH``):
caches, fresh pages and a library's choice of algorithm change the cost per byte
in ways a fit to other sizes cannot see. A probe settles it by running the user's
workload (a function of the array) on a corner of the array at the candidate
chunks (read again from storage when the array was), profiled like any compute,
and adding what it measured to the observations the recommendation rests on.
One chunk's worth is also run a task at a time under :mod:`tracemalloc`, which
NumPy reports its allocations to: what a running task holds beyond its inputs
(its output and temporaries) is then measured rather than assumed, which the
process's memory readings cannot separate from everything else a compute holds.

:func:`tune` is the loop (probe the best size, refit, until the recommendation is
near what was measured or the time budget is spent); the advisor gives it the
ways to recommend and to measure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dask.array._adaptive_chunking import cluster_client as _cluster
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import shapes as _shapes

__all__ = ["ProbeRun", "SAMPLE_WAVES", "CLOSE", "MAX_PROBES", "STEP", "stored", "sample_of",
           "production_per_byte", "with_production", "traced_task_peak", "measure", "tune"]

#: A probe's sample holds this many waves of tasks (each as many chunks as run at
#: once): one wave would time the slowest task, not the typical one.
SAMPLE_WAVES = 2
#: A recommendation within this factor of a measured chunk size needs no probe.
CLOSE = 2.0
#: Probes per recommendation at most (each refits and may move the best size).
MAX_PROBES = 3
#: A probe goes at most this many times beyond the chunk sizes measured so far. The
#: model's far best is where its fit is least sure; probing the way there in steps
#: measures the sizes between too (a transpose profiled at 250^2 chunks and probed
#: only at the far best, 2000^2, was held there, 1.6x slower than 1000^2), and
#: each step's sample is smaller than the far one's, so the budget goes further.
STEP = 8.0


@dataclass(frozen=True)
class ProbeRun:
    """One probe: the chunks it ran, on which sample, and what it cost and found.

    ``seconds`` is the probe's wall time (the sample's compute and the traced
    task); ``task_peak_bytes`` the most one task held beyond its inputs (0: not
    traced, because the user's own :mod:`tracemalloc` session is left alone);
    ``error`` what went wrong when the workload could not run on the sample.
    """

    chunks: tuple[int, ...]
    sample_shape: tuple[int, ...]
    tasks: int
    seconds: float
    task_peak_bytes: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (sizes in MiB) for a recommendation's ``to_dict``."""
        return {"chunks": self.chunks, "sample_shape": self.sample_shape,
                "tasks": self.tasks, "seconds": self.seconds,
                "task_peak_mb": self.task_peak_bytes / 2**20, "error": self.error}


def stored(array) -> bool:
    """Whether ``array`` reads its storage directly, so a sample can read it again."""
    return _graph.rereadable(array) is not None


def _culled(corner):
    """``corner`` with its graph culled to its own blocks, so that running it without
    the array optimizer (which profiles, and would cull) runs only them."""
    import dask.array as da
    from dask.core import flatten

    graph = corner.__dask_graph__().cull(set(flatten(corner.__dask_keys__())))
    return da.Array(graph, corner.name, corner.chunks, meta=corner._meta)


def _held(corner, chunks):
    """``corner`` at ``chunks``, made once, unprofiled, and held where a compute
    started here runs: in this process, or in the memory of the cluster's workers.
    Values made here would travel inside every probe's graph to the cluster, which
    cost 3 s for the 512 MiB sample of a transpose, ten times its compute."""
    import dask.array as da

    client = _cluster.client_for_compute()
    if client is None:
        return da.from_array(_culled(corner).compute(optimize_graph=False), chunks=chunks)
    from distributed import wait

    held = client.persist(_culled(corner.rechunk(chunks)), optimize_graph=False)
    wait(held)
    return held


def _traceable(block):
    """``block`` as the synchronous scheduler can run it here: with a cluster, its
    values are fetched first (the graph of a persisted sample holds futures; one
    read from storage is the one chunk either way)."""
    import dask.array as da

    if _cluster.client_for_compute() is None:
        return block
    return da.from_array(_culled(block).compute(optimize_graph=False), chunks=block.chunks)


def sample_of(array, chunks: Sequence[int], blocks: int, shape: Sequence[int] | None = None):
    """A corner of ``array`` holding about ``blocks`` chunks of ``chunks``, in them.

    An array read from storage (Zarr, HDF5) is read again at ``chunks``, as a
    compute at them would. Any other array's corner is made once, unmeasured, and
    held in memory (the workers', on a cluster). Rechunking the array's blocks
    instead would time what the real compute never runs, the merges and making the
    blocks at the old size: twice the time per byte for a Zarr mean, seven times
    for a transpose of random data. What making the array costs is then missing
    from the sample; :func:`with_production` adds it back. ``shape`` overrides the
    corner's shape.

    >>> import dask.array as da
    >>> sample_of(da.ones((1000, 10), chunks=(10, 10)), (100, 10), 4).chunks
    ((100, 100, 100, 100), (10,))
    """
    import dask.array as da

    if shape is None:
        shape = _shapes.sample_shape(array.shape, chunks, blocks)
    corner = tuple(slice(0, n) for n in shape)
    chunks = tuple(min(c, n) for c, n in zip(chunks, shape))
    source = _graph.rereadable(array)
    if source is not None:
        return da.from_array(source, chunks=chunks)[corner]
    return _held(array[corner], chunks)


def production_per_byte(profiled: _model.Observation, reference: _model.Observation
                        ) -> float:
    """Task seconds per byte a real compute spent making the array, which a sample
    held in memory skips: the profile's cost per byte minus that of a ``reference``
    sample at the profile's own chunks (never below 0, which would favour the
    sizes probed).

    >>> from dask.array._adaptive_chunking.model import Observation
    >>> o = lambda secs: Observation(array_bytes=100.0, chunk_bytes=10.0, n_tasks=10,
    ...     task_seconds=secs, wall_seconds=secs, peak_bytes=0, baseline_bytes=0,
    ...     results_bytes=0, concurrency=1)
    >>> round(production_per_byte(o(3.0), o(1.0)), 6), production_per_byte(o(1.0), o(3.0))
    (0.02, 0.0)
    """
    return max(0.0, profiled.task_seconds / max(profiled.array_bytes, 1.0)
               - reference.task_seconds / max(reference.array_bytes, 1.0))


def with_production(o: _model.Observation, per_byte: float) -> _model.Observation:
    """``o`` as a compute that also made its array would have measured it, at
    ``per_byte`` task seconds per byte spread over the tasks that ran at once."""
    extra = per_byte * o.array_bytes
    return replace(o, task_seconds=o.task_seconds + extra,
                   wall_seconds=o.wall_seconds + extra / max(1, min(o.concurrency, o.n_chunks)))


def traced_task_peak(collection) -> float:
    """The most memory one task of ``collection`` allocated beyond its inputs.

    The tasks run one at a time (the synchronous scheduler) with
    :mod:`tracemalloc` reset before each, so a task's peak is its own: its
    output and its temporaries at their largest. Returns 0 when tracemalloc is
    already tracing (a user's session is not disturbed).

    >>> import dask.array as da
    >>> x = da.ones((1000, 1000), chunks=(1000, 1000))
    >>> traced_task_peak((x + 1) * 2) >= 8e6  # at least the chunk it made
    True
    """
    import tracemalloc

    import dask
    from dask.callbacks import Callback

    if tracemalloc.is_tracing():
        return 0.0
    peaks: list[int] = []
    start = [0]

    class Trace(Callback):
        def _pretask(self, key, dsk, state):
            tracemalloc.reset_peak()
            start[0] = tracemalloc.get_traced_memory()[0]

        def _posttask(self, key, result, dsk, state, id):
            peaks.append(tracemalloc.get_traced_memory()[1] - start[0])

    tracemalloc.start()
    try:
        with Trace():
            dask.compute(collection, scheduler="sync")
    finally:
        tracemalloc.stop()
    return float(max(peaks, default=0))


def measure(array, workload: Callable, chunks: Sequence[int], blocks: int,
            run_profiled: Callable[[Any, Any], list[_model.Observation]],
            shape: Sequence[int] | None = None, per_byte: float = 0.0, trace: bool = True
            ) -> tuple[list[_model.Observation], ProbeRun]:
    """Probe ``workload`` at ``chunks``: its observations, and the run's record.

    ``run_profiled(sample, collection)`` computes ``collection`` with ``sample``
    profiled and returns the observations of that compute; ``per_byte`` is what
    making the array costs a real compute (:func:`with_production`); ``trace``
    also runs one chunk's task under tracemalloc. An error of the workload on the
    sample (a shape it cannot take) is returned in the record, not raised: a probe
    never breaks a recommendation.
    """
    chunks = tuple(int(c) for c in chunks)
    began = time.perf_counter()
    try:
        sample = sample_of(array, chunks, blocks, shape)
        shape = tuple(int(n) for n in sample.shape)
        observations = run_profiled(sample, workload(sample))
        block = sample[tuple(slice(0, min(c, n)) for c, n in zip(chunks, shape))]
        peak = traced_task_peak(workload(_traceable(block))) if trace else 0.0
    except Exception as e:  # the user's workload, on a shape it was not written for
        return [], ProbeRun(chunks, tuple(shape or ()), 0, time.perf_counter() - began,
                            error=f"{type(e).__name__}: {e}")
    observations = [replace(with_production(o, per_byte) if per_byte else o,
                            task_peak_bytes=peak) for o in observations]
    tasks = sum(o.n_tasks for o in observations)
    return observations, ProbeRun(chunks, shape, tasks, time.perf_counter() - began, peak)


def tune(recommend: Callable[[list, float | None], Any],
         measure_at: Callable[[tuple[int, ...]], tuple[list, ProbeRun]],
         estimate: Callable[[Any], float], budget_seconds: float
         ) -> tuple[list[_model.Observation], tuple[ProbeRun, ...], str]:
    """Probe until the recommendation rests on measurements near it.

    ``recommend(extra, reach)`` gives the model's own best (not weighed against
    what was measured) from the profiles and the ``extra`` observations, within
    ``reach`` (None: anywhere); ``measure_at(chunks)`` probes
    a chunking; ``estimate(rec)`` is the predicted cost of probing ``rec``'s
    chunks. Each round probes the best chunking within :data:`STEP` of the sizes
    measured so far, when it is further than :data:`CLOSE` from every one of them
    and its probe fits what is left of ``budget_seconds``. Returns the observations the probes made (to recommend
    from, within the usual reach of what is now measured), the probes run, and
    why probing stopped.
    """
    extra: list = []
    runs: list[ProbeRun] = []
    spent, why = 0.0, "no probe needed: the best chunks are near a measured size"
    for _ in range(MAX_PROBES):
        best = recommend(extra, STEP)
        if best is None or best.model is None:
            why = "nothing measured to probe from"
            break
        if best.model.distance(best.chunk_bytes) <= CLOSE:
            if runs:
                why = "the best chunks are near a measured size"
            break
        if any(r.chunks == tuple(best.chunks) for r in runs):
            why = "the best chunks were probed already"
            break
        cost = estimate(best)
        if spent + cost > budget_seconds:
            why = (f"a probe of {best.chunks} would take about {cost:.2g} s, more than "
                   f"the {max(0.0, budget_seconds - spent):.2g} s left of its budget")
            break
        observations, run = measure_at(tuple(best.chunks))
        runs.append(run)
        spent += run.seconds
        if run.error is not None:
            why = f"the workload failed on the probe's sample ({run.error})"
            break
        extra.extend(observations)
        why = f"probed {len(runs)} chunking(s) in {spent:.2g} s"
    else:
        why = f"stopped after {MAX_PROBES} probes ({spent:.2g} s)"
    return extra, tuple(runs), why
