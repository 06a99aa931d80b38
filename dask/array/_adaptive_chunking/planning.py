"""Pure planning: from a fitted model, settings and workers to a :class:`Recommendation`.

As ``dask/array/rechunk.py`` keeps its planners apart from graph building, nothing
here reads config, clocks or memory: the caller passes a :class:`PlanSettings`
snapshot, the memory limit and the cluster's :class:`Workers`, and gets back the
chunks with the numbers and words behind them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from dask.utils import format_bytes

from dask.array._adaptive_chunking import config as _config
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import saturation as _saturation
from dask.array._adaptive_chunking import shapes as _shapes
from dask.array._adaptive_chunking import views as _views
from dask.array._adaptive_chunking.recommendation import (
    REASONS,
    Recommendation,
    saturation_reason,
)

__all__ = ["PlanSettings", "Workers", "check_cluster", "checked_arguments", "plan",
           "budget_warning", "fits"]

PREFIX = _config.PREFIX


@dataclass(frozen=True)
class PlanSettings:
    """The recommender's settings for one recommendation, validated (bytes, fractions).

    >>> PlanSettings(50.0, 2**20, None, 0.8, 0.1, None).budget(10 * 2**30) == 4 * 2**30
    True
    """

    target_memory_percent: float
    min_chunk_bytes: int
    max_chunk_bytes: int | None
    safety_factor: float
    overhead_target: float
    memory_limit: int | None  # configured; None: the limit the process lives under
    reach: float | None = _model.REACH  # see model.choose_chunk_bytes; None: no limit
    default_chunk_bytes: int | None = None  # what Dask's "auto" aims at (None: not compared)
    evidence: bool = True  # weigh the choice against what was measured (False: a probe's)

    def budget(self, limit: int) -> int:
        """Bytes a computation may reach at its peak: limit x percent x safety factor."""
        return int(limit * self.target_memory_percent / 100 * self.safety_factor)


@dataclass(frozen=True)
class Workers:
    """What a recommendation needs of a cluster's workers (all zero/None locally)."""

    threads: int = 0  # of the whole cluster
    most_threads: int = 0  # of one worker
    processes: int = 1
    baseline: float | None = None  # the largest worker's memory at its first task
    resident: float = 0.0  # this process's resident memory now (0: not this process)
    memory_limit: int | None = None  # the tightest worker's

    @classmethod
    def of(cls, cluster: Mapping[str, Mapping[str, int]] | None) -> Workers:
        """From a cluster description (address -> ``nthreads``, ``memory_limit``,
        ``baseline``), as a cluster profile's ``workers`` gives it.

        >>> Workers.of({"w": {"nthreads": 2, "memory_limit": "1GiB"}}).memory_limit
        1073741824
        """
        if cluster is not None:
            check_cluster(cluster)
        workers = [w for w in (cluster or {}).values() if w.get("nthreads")]
        if not workers:
            return cls()

        def nbytes(w, name):  # bytes, or a size string such as "4GiB"
            return (_config.nbytes_setting(name, w.get(name), allow_none=True)
                    if w.get(name) else 0)

        limits = [nbytes(w, "memory_limit") for w in workers if w.get("memory_limit")]
        return cls(
            threads=sum(int(w["nthreads"]) for w in workers),
            most_threads=max(int(w["nthreads"]) for w in workers),
            processes=len(workers),
            baseline=max(nbytes(w, "baseline") for w in workers),
            memory_limit=min(limits) if limits else None,
        )

    def saturation(self, fit, array_bytes, chunk_bytes, *, budget, n_chunks,
                   aligned) -> _saturation.Saturation | None:
        """The worker saturation for a chunking on these workers (None locally)."""
        if not self.threads:
            return None
        return _saturation.worker_saturation(
            fit, array_bytes, chunk_bytes, budget_bytes=budget,
            threads_per_worker=self.most_threads, workers=self.processes,
            n_chunks=n_chunks, baseline_bytes=self.baseline, aligned=aligned,
        )


def check_cluster(cluster) -> None:
    """A cluster description: address -> nthreads, memory_limit, baseline (bytes)."""
    fix = ("pass cluster as {address: {'nthreads': int >= 1, 'memory_limit': bytes or "
           "None, 'baseline': bytes}}, as a cluster profile's 'workers' gives it")
    if not isinstance(cluster, Mapping):
        raise TypeError(f"cluster must be a mapping, got {cluster!r}; {fix}")
    for address, worker in cluster.items():
        if not isinstance(worker, Mapping):
            raise TypeError(f"cluster[{address!r}] must be a mapping, got {worker!r}; {fix}")
        _config.count(f"cluster[{address!r}]['nthreads']", worker.get("nthreads", 0), low=0)
        for name in ("memory_limit", "baseline"):
            value = worker.get(name)
            if value:
                _config.nbytes_setting(f"cluster[{address!r}][{name!r}]", value,
                                       allow_none=True)


def whole_dims(shape: tuple[int, ...], downstream: _graph.Downstream,
               current_chunks) -> tuple[set[int], set[int]]:
    """The dimensions to keep whole, and those of them a later operation wants whole.

    What the downstream operations want wins; without it, dimensions that are one
    chunk now stay so, unless a transpose or matmul wants square chunks.

    >>> whole_dims((10, 10), _graph.Downstream(), ((5, 5), (10,)))
    ({1}, set())
    """
    wanted = {d for d in downstream.whole_dims if 0 <= d < len(shape)}
    whole = set(wanted)
    if current_chunks is not None and not downstream.square and not whole:
        whole = {d for d, (n, c) in enumerate(zip(shape, current_chunks))
                 if len(c) == 1 and n > 1}
    return whole, wanted


def _facts(binding: str, pred: _model.Prediction, fit: _model.WorkloadModel,
           settings: PlanSettings, budget: float, conc: int, array_bytes: float,
           lower: float, upper: float, least: float | None = None) -> dict[str, str]:
    """The numbers a reason names, as a person reads them; ``least`` is the smallest
    predicted peak when no chunking fits the budget."""
    facts = {"seconds": _views.duration_text(pred.seconds),
             "peak": format_bytes(int(pred.peak_bytes)),
             "budget": format_bytes(int(budget)), "target": f"{settings.overhead_target:.0%}",
             "fraction": f"{pred.overhead_fraction:.0%}",
             "per_task": _views.duration_text(fit.overhead_seconds),
             "blocks": _views.count_text(pred.n_chunks, "chunk"),
             "low": format_bytes(int(lower)), "high": format_bytes(int(upper)),
             "size": format_bytes(int(array_bytes))}
    if binding == "memory" and least is not None:
        facts.update(why="over_budget", least=format_bytes(int(least)),
                     tolerance=f"{_model.PEAK_TOLERANCE:.0%}")
    if binding == "speed":
        facts["smaller"] = (f"would add per-task overhead ({facts['per_task']} a task)"
                            if fit.overhead_seconds > 0 else "are predicted no faster")
        # What stops a larger chunk, of the two things the model sees growing with it.
        if pred.n_chunks < 8 * conc:
            facts["larger"] = f"would leave some of the {conc} threads idle at the end"
        elif pred.chunk_bytes * _model.GRID_STEP >= _model.FRESH_PAGES_BYTES:
            facts["larger"] = (f"would be slower to allocate (chunks of "
                               f"{format_bytes(_model.FRESH_PAGES_BYTES)} and more get fresh "
                               "memory pages every time)")
        else:
            facts["larger"] = "are predicted no faster"
    return facts


def _reason(binding: str, conc: int, downstream: _graph.Downstream, whole: set[int],
            storage_chunks, reach: float | None = _model.REACH, chunks=(), shape=(),
            **numbers) -> str:
    """Why these chunks, in a sentence: the binding constraint with its numbers, and
    the shape rules that applied to this workload."""
    shown = numbers.pop("shown", None) or reach or _model.REACH
    seen = numbers.pop("seen", None)
    reason = REASONS[numbers.pop("why", binding)].format(conc=conc, reach=shown, **numbers)
    notes = []
    if seen:
        notes.append(f"the peak measured at these chunks ({seen}) is inside the budget, "
                     f"though {numbers['peak']} is predicted now")
    if downstream.whole_dims:
        ops = "/".join(o for o in downstream.ops if o.startswith(_graph.WHOLE_AXIS_OPS))
        them = "it" if len(downstream.whole_dims) == 1 else "them"
        notes.append(f"{_axes(downstream.whole_dims)} whole, because the workload's {ops} "
                     f"needs {them} in one chunk")
    elif downstream.square and len(set(chunks)) == 1:
        notes.append("square chunks, because the workload's " + " and its ".join(
            f"{op} {_PAIRS.get(op, _PAIRS['matmul'])}" for op in downstream.ops
            if op in _graph.SQUARE_OPS))
    elif whole:
        notes.append(f"{_axes(whole)} kept whole, as in the current chunks")
    if storage_chunks is not None and all(c % s == 0 or c == n for c, s, n in
                                          zip(chunks, storage_chunks, shape)):
        notes.append(f"whole multiples of the storage chunks {tuple(storage_chunks)}")
    return reason + ("; " + "; ".join(notes) if notes else "")


#: What a square-favouring operation pairs, in words (others pair as matmul does).
_PAIRS = {"transpose": "pairs each chunk with its mirror across the diagonal",
          "swapaxes": "pairs each chunk with its mirror across the diagonal",
          "matmul": "pairs row blocks of one side with column blocks of the other"}


def _axes(dims) -> str:
    """``axis 1`` or ``axes 0 and 2``."""
    dims = sorted(dims)
    if len(dims) == 1:
        return f"axis {dims[0]}"
    return "axes " + ", ".join(map(str, dims[:-1])) + f" and {dims[-1]}"


def _empty(fit, shape, itemsize, budget, limit, concurrency, workers) -> Recommendation:
    """The recommendation for an array with no elements: nothing to measure or chunk."""
    conc = concurrency or workers.threads or (fit.concurrency if fit else 1)
    peak = _model.predict(fit, 1, 1, conc).peak_bytes if fit else 0.0
    return Recommendation(_shapes.chunk_shape(shape, itemsize, 1), 0, "array", True,
                          budget, limit, peak, 0.0, 1, conc, fit,
                          reason="the array is empty")


def plan(fit: _model.WorkloadModel | None, shape: tuple[int, ...], itemsize: int,
         settings: PlanSettings, *, limit: int, current_chunks=None,
         concurrency: int | None = None, storage_chunks: tuple[int, ...] | None = None,
         downstream: _graph.Downstream | None = None, workers: Workers = Workers(),
         worker_saturation: float | None = None) -> Recommendation | None:
    """The recommended chunking of an array of ``shape`` under a fitted model.

    ``limit`` is the memory limit in bytes (the budget follows from ``settings``),
    ``concurrency`` the tasks that run at once (default: the cluster's threads, else
    as measured). None when nothing was measured (``fit`` is None) and the array is
    not empty.
    """
    budget = settings.budget(limit)
    array_bytes = math.prod(shape) * itemsize
    if array_bytes == 0:
        return _empty(fit, shape, itemsize, budget, limit, concurrency, workers)
    if fit is None:
        return None
    conc = concurrency or workers.threads or fit.concurrency
    downstream = downstream or _graph.Downstream()
    whole, wanted = whole_dims(shape, downstream, current_chunks)
    upper = max(settings.max_chunk_bytes or budget, 1)
    lower = min(settings.min_chunk_bytes, upper)

    realize = _realizer(shape, itemsize, whole, wanted, lower, upper, storage_chunks,
                        current_chunks)

    def predicted(chunks, blocks, aligned):
        return _model.predict(fit, array_bytes, math.prod(chunks) * itemsize, conc,
                              workers.baseline, aligned=aligned, n_chunks=blocks,
                              processes=workers.processes, resident_bytes=workers.resident)

    choice = _model.choose_chunk_bytes(
        fit, array_bytes, budget_bytes=budget, min_chunk_bytes=lower,
        max_chunk_bytes=upper, overhead_target=settings.overhead_target,
        concurrency=conc, baseline_bytes=workers.baseline, resident_bytes=workers.resident,
        realize=lambda target: realize(target)[1:], processes=workers.processes,
        reach=settings.reach,
    )
    chunks, chunk_bytes, blocks, aligned = realize(choice.chunk_bytes)
    pred = predicted(chunks, blocks, aligned)
    binding = choice.binding
    if whole and any(chunks[d] != shape[d] for d in whole):
        binding = "shape"
    elif binding == "smallest":
        binding = "storage" if storage_chunks is not None else "speed"
    numbers = {}
    # Without evidence the model's own best is asked for: what a probe must measure.
    if settings.evidence:
        chunks, pred, binding, numbers = _evidence(
            fit, chunks, pred, binding, choice.chunk_bytes, current_chunks, shape, itemsize,
            wanted, budget, lower, upper, realize, predicted)
    if binding != "current" and (auto := _dask_default(
            fit, chunks, pred, shape, itemsize, whole, wanted, storage_chunks,
            settings.default_chunk_bytes, budget, lower, upper, predicted,
            settings.reach)) is not None:
        numbers = _against(chunks, auto, f"{1 - auto[1].seconds / pred.seconds:.0%}")
        (chunks, pred), binding = auto[:2], "default"
    elif binding == "reach":
        numbers = {"measured": ", ".join(format_bytes(c) for c in fit.measured_bytes[-3:]),
                   "shown": max(settings.reach or _model.REACH, fit.distance(chunk_bytes))}
    chunk_bytes, blocks = math.prod(chunks) * itemsize, pred.n_chunks
    aligned = bool(wanted) and all(chunks[d] == shape[d] for d in wanted)
    if pred.peak_bytes > budget and fits(fit, pred, budget, array_bytes):
        numbers["seen"] = format_bytes(int(fit.measured_peak(array_bytes, pred.chunk_bytes)))
    saturation = workers.saturation(fit, array_bytes, chunk_bytes, budget=budget,
                                    n_chunks=blocks, aligned=aligned)
    return Recommendation(
        chunks=chunks, chunk_bytes=chunk_bytes, binding=binding,
        fits_budget=fits(fit, pred, budget, array_bytes), memory_budget_bytes=budget,
        memory_limit_bytes=limit, predicted_peak_bytes=pred.peak_bytes,
        predicted_seconds=pred.seconds, predicted_tasks=pred.n_tasks, concurrency=conc,
        model=fit,
        reason=_reason(binding, conc, downstream, whole, storage_chunks, settings.reach,
                       chunks=chunks, shape=shape, **numbers,
                       **_facts(binding, pred, fit, settings, budget, conc, array_bytes,
                                lower, upper, choice.least_peak_bytes)),
        overhead_fraction=pred.overhead_fraction, downstream=downstream.ops,
        storage_chunks=storage_chunks, saturation=saturation,
        scheduler_reason="" if saturation is None
        else saturation_reason(saturation, budget, worker_saturation),
        shape=tuple(int(n) for n in shape),
        current_chunks=None if current_chunks is None else _shapes.largest(current_chunks),
    )


def _evidence(fit, chunks, pred, binding, goal_bytes, current_chunks, shape, itemsize,
              wanted, budget, lower, upper, realize, predicted):
    """The model's choice (``chunks``, predicted ``pred``, decided by ``binding``)
    weighed against what was measured: ``(chunks, prediction, binding, numbers)``.

    The fastest size measured, or else the current chunks, is held unless the choice
    is predicted to beat it by more than the model's uncertainty there ("measured",
    "current"); a held chunking gives way to a step toward the choice that beats it by
    more than the uncertainty at the step ("step"). ``numbers`` are the reason's.
    """
    array_bytes = math.prod(shape) * itemsize
    numbers = {}
    best = _best_measured(fit, pred, chunks, realize, predicted, budget, array_bytes)
    if best is not None:
        numbers = _against(chunks, best, _gain(pred.seconds, best[1].seconds))
        (chunks, pred), binding = best[:2], "measured"
    kept = _keep_current(fit, pred, current_chunks, shape, itemsize, wanted, budget,
                         lower, upper, predicted)
    if kept is not None and tuple(kept[0]) != tuple(chunks):
        numbers = _against(chunks, kept, _gain(pred.seconds, kept[1].seconds))
        (chunks, pred), binding = kept[:2], "current"
    if binding in ("measured", "current") and (step := _step(
            fit, (chunks, pred), goal_bytes, realize, predicted, budget,
            array_bytes)) is not None:
        numbers = {**numbers, "held": chunks, "gain": _gain(step[1].seconds, pred.seconds),
                   "far": numbers["uncertainty"], "uncertainty": step[2]}
        (chunks, pred), binding = step[:2], "step"
    return chunks, pred, binding, numbers


def fits(fit: _model.WorkloadModel, pred: _model.Prediction, budget: float,
         array_bytes: float) -> bool:
    """Whether a chunking fits the memory budget: predicted to, or measured to.

    A peak measured inside the budget is evidence a prediction above it does not
    outweigh (the tall-skinny qr peaked at 787 MiB against an 819 MiB budget, was
    predicted at 850, and the smaller chunks taken for it ran 1.6x slower).
    """
    if pred.peak_bytes <= budget:
        return True
    seen = fit.measured_peak(array_bytes, pred.chunk_bytes)
    return seen is not None and seen <= budget


def _realizer(shape, itemsize, whole, wanted, lower, upper, storage_chunks, current_chunks
              ) -> Callable[[float], tuple[tuple[int, ...], int, int, bool]]:
    """A function of a byte target: the chunk shape it gets (see
    :func:`.shapes.chunk_shape`), its bytes, its number of chunks, and whether it has
    the layout a downstream rechunk wants (then what only that rechunk reads never
    waits)."""
    # Applied by a rechunk, chunks aligned to the current ones only merge blocks.
    unit = None if storage_chunks is not None or current_chunks is None \
        else _shapes.largest(current_chunks)

    def realize(target: float) -> tuple[tuple[int, ...], int, int, bool]:
        chunks = _shapes.chunk_shape(shape, itemsize, target, whole_dims=sorted(whole),
                                     min_bytes=lower, max_bytes=upper,
                                     multiple_of=storage_chunks)
        if unit is not None:
            chunks = _shapes.aligned_to(chunks, shape, unit)
        aligned = bool(wanted) and all(chunks[d] == shape[d] for d in wanted)
        return chunks, math.prod(chunks) * itemsize, _shapes.blocks(shape, chunks), aligned

    return realize


def _against(chunks, other: tuple, gain: str) -> dict:
    """The numbers of a reason for taking ``other`` (``(chunks, prediction,
    uncertainty)``) instead of ``chunks``: what it replaced, by how much, and the
    doubt it weighed."""
    return {"other": chunks, "uncertainty": other[2], "gain": gain}


def _gain(seconds: float, than: float) -> str:
    gain = 1 - seconds / than
    return f"{gain:.0%} faster" if gain >= 0.005 else "no faster"


def _best_measured(fit, pred, chunks, realize, predicted, budget, array_bytes):
    """``(chunks, prediction, uncertainty)`` of the fastest chunk size measured that
    fits the budget, when the model's choice (``chunks``, predicted ``pred``) is not
    predicted faster than it by more than the uncertainty at the choice; else None.

    A measured time is evidence, and a prediction elsewhere is a guess that has to
    beat it by more than it can be wrong by. Without this rule the spec's loop
    (profile, apply, compute) wandered between sizes (800, then 400, then 2000 on a
    4000^2 transpose) on predictions between the measured points.
    """
    best = None
    for size in fit.measured_bytes:
        shape, chunk_bytes, blocks, aligned = realize(size)
        if abs(chunk_bytes - size) > 0.1 * size:  # the bounds or the shape rules moved it
            continue
        p = predicted(shape, blocks, aligned)
        if fits(fit, p, budget, array_bytes) and (best is None or p.seconds < best[1].seconds):
            best = shape, p
    if best is None or tuple(best[0]) == tuple(chunks):
        return None
    margin = fit.uncertainty(pred.chunk_bytes)
    if pred.seconds < best[1].seconds * (1 - margin):
        return None
    return best[0], best[1], margin


def _doubt(fit: _model.WorkloadModel, *predictions: _model.Prediction) -> float:
    """The uncertainty of comparing ``predictions``: the largest at any of their sizes,
    since a move between two chunkings is only as sure as the farther one from what
    was measured."""
    return max(fit.uncertainty(p.chunk_bytes) for p in predictions)


def _step(fit, held, goal_bytes, realize, predicted, budget, array_bytes):
    """``(chunks, prediction, uncertainty)`` of a step from the chunks held (``held``:
    the fastest measured or the current ones, with their prediction) toward the
    model's choice (``goal_bytes``), when one is predicted faster than the held
    chunks by more than the uncertainty at the step; the fastest such step, else None.

    The model's choice far out was not trusted: its predicted gain is inside the
    uncertainty of a prediction that far from what was measured. A step part of the
    way is a smaller claim, with a smaller uncertainty; a compute at it measures it,
    and the next recommendation goes on from there or comes back. Without steps a
    transpose profiled at 250x250 kept those chunks, 1.6x slower than 1000x1000.
    Steps are whole doublings of the chunk bytes held.
    """
    chunks, now = held
    start = now.chunk_bytes
    if not start > 0 or not goal_bytes > 0:
        return None
    doublings = int(math.log2(max(goal_bytes, start) / min(goal_bytes, start)) + 1e-9)
    sign = 1 if goal_bytes > start else -1
    best = None
    for k in range(1, doublings + 1):
        shape, _, blocks, aligned = realize(start * 2.0 ** (sign * k))
        if tuple(shape) == tuple(chunks):
            continue
        p = predicted(shape, blocks, aligned)
        margin = _doubt(fit, p, now)
        if fits(fit, p, budget, array_bytes) and p.seconds < now.seconds * (1 - margin) \
                and (best is None or p.seconds < best[1].seconds):
            best = shape, p, margin
    return best


def _keep_current(fit, pred, current_chunks, shape, itemsize, wanted, budget, lower,
                  upper, predicted):
    """``(chunks, prediction, uncertainty)`` of the current chunks when the
    recommendation is not predicted faster than them by more than the model's
    uncertainty, and they fit the budget and the chunk-size bounds; else None.

    Doing nothing is the user's safe choice: a move must be predicted to pay by more
    than the model can be wrong by, at the farther of the two sizes from what was
    measured.
    """
    if current_chunks is None:
        return None
    chunks = _shapes.largest(current_chunks)
    chunk_bytes = math.prod(chunks) * itemsize
    if not chunk_bytes or not lower <= chunk_bytes <= upper:
        return None
    blocks = math.prod(len(c) for c in current_chunks)
    aligned = bool(wanted) and all(len(current_chunks[d]) == 1 for d in wanted)
    now = predicted(chunks, blocks, aligned)
    if not fits(fit, now, budget, math.prod(shape) * itemsize):
        return None
    margin = _doubt(fit, pred, now)
    if pred.seconds < now.seconds * (1 - margin):
        return None
    return chunks, now, margin


def _dask_default(fit, mine, pred, shape, itemsize, whole, wanted, storage_chunks, target,
                  budget, lower, upper, predicted, reach=None):
    """``(chunks, prediction, uncertainty)`` of Dask's ``"auto"`` chunks (the
    dimensions kept whole stay whole) when they are predicted faster than ``mine``
    (the recommendation, predicted ``pred``) by more than the model's uncertainty,
    and fit the budget, the chunk-size bounds and ``reach`` of the sizes measured;
    else None. A user who does nothing gets them; but a prediction far from every
    measurement is a guess, and Dask's 128 MiB was 2.4x slower than the best for
    a transpose whose model, fitted at 0.5 and 2 MiB, preferred it."""
    # Dask spells "auto" chunks out block by block (and the storage's too): an array
    # of millions of blocks is no case a user runs with the default chunks.
    blocks_of = (lambda unit: max((n // max(1, c) for n, c in zip(shape, unit)), default=1))
    if not target or math.prod(shape) * itemsize / target > 1e6 or (
            storage_chunks is not None and blocks_of(storage_chunks) > 1e6):
        return None
    from dask.array.core import normalize_chunks

    try:
        chunks = _shapes.largest(normalize_chunks(
            tuple(-1 if d in whole else "auto" for d in range(len(shape))), shape,
            limit=target, dtype=np.dtype((np.void, itemsize)),
            previous_chunks=storage_chunks))
    except ValueError:  # no "auto" chunking within the limit: Dask would refuse too
        return None
    chunk_bytes = math.prod(chunks) * itemsize
    if tuple(chunks) == tuple(mine) or not lower <= chunk_bytes <= upper or (
            reach is not None and fit.distance(chunk_bytes) > reach * 1.001):
        return None
    blocks = _shapes.blocks(shape, chunks)
    aligned = bool(wanted) and all(chunks[d] == shape[d] for d in wanted)
    auto = predicted(chunks, blocks, aligned)
    margin = _doubt(fit, pred, auto)
    if auto.peak_bytes > budget or not auto.seconds < pred.seconds * (1 - margin):
        return None
    return chunks, auto, margin


def budget_warning(rec: Recommendation, settings: PlanSettings) -> str:
    """What to tell a user whose array fits no chunking within the memory budget."""
    return (
        f"no chunking of this {rec.shape} array fits the memory budget of "
        f"{format_bytes(rec.memory_budget_bytes)} ({settings.target_memory_percent:g}% x "
        f"{settings.safety_factor:g} of {format_bytes(rec.memory_limit_bytes)}); the "
        f"chunks recommended are predicted to peak at {format_bytes(rec.predicted_peak_bytes)}"
        f", the fastest of those within {_model.PEAK_TOLERANCE:.0%} of the smallest "
        "predicted peak. Raise "
        f"'{PREFIX}.memory-limit' or '{PREFIX}.target-memory-percent', or lower "
        "min-chunk-bytes"
    )


def checked_arguments(shape, dtype_size, num_dimensions, storage_chunks,
                            concurrency, current_chunks, downstream, worker_saturation):
    """The arguments of ``ChunkSizeRecommender.recommend`` checked, in order (a
    TypeError or ValueError names the first bad one): storage chunks, concurrency
    and current chunks as the planner takes them."""
    if isinstance(dtype_size, bool) or not isinstance(dtype_size, (int, np.integer)):
        raise TypeError(f"dtype_size must be an int number of bytes, got {dtype_size!r}")
    if dtype_size < 1:
        raise ValueError(f"dtype_size must be at least 1 byte, got {dtype_size!r}")
    if num_dimensions is not None and num_dimensions != len(shape):
        raise ValueError(
            f"num_dimensions={num_dimensions!r} does not match array_shape {shape!r} "
            f"with {len(shape)} dimensions; pass num_dimensions={len(shape)} or omit it"
        )
    if storage_chunks is not None:
        storage_chunks = _shapes.validate_shape(storage_chunks, "storage_chunks")
        if len(storage_chunks) != len(shape) or 0 in storage_chunks:
            raise ValueError(
                f"storage_chunks {storage_chunks!r} must give one positive length per "
                f"dimension of array_shape {shape!r}"
            )
    if concurrency is not None:  # 0: as measured
        concurrency = _config.count("concurrency", concurrency, low=0) or None
    if current_chunks is not None:
        current_chunks = _shapes.check_chunks(current_chunks, shape)
    if downstream is not None and not isinstance(downstream, _graph.Downstream):
        raise TypeError(
            f"downstream must be a Downstream (from "
            f"dask.array._adaptive_chunking.graph.downstream), got {downstream!r}"
        )
    if worker_saturation is not None:
        _config.number("worker_saturation", worker_saturation, low=0, high=math.inf,
                       low_open=True)
    return storage_chunks, concurrency, current_chunks
