"""The memory and time model behind chunk-size recommendations.

Everything here is a pure function of numbers: no clocks, no ``psutil``, no Dask
config. Measurement (``dask.array.adaptive_chunking``) turns a profiled compute into
:class:`Observation` objects; this module fits a :class:`WorkloadModel` to them,
predicts peak memory and wall time for any chunk size, chooses the chunk size with
the best predicted time that fits a memory budget, and turns a byte target into a
chunk shape.

The model in one paragraph: a compute holds the process baseline, the results it
returns, a little scheduler bookkeeping per task, and, for every task running at
once, a working set of ``amplification * chunk_bytes``. Its wall time is the
per-task scheduling overhead (paid serially by the scheduler) for every task, plus
the compute time of one chunk for every wave of ``concurrency`` chunks.

All sizes are in bytes and all durations in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Observation",
    "WorkloadModel",
    "Prediction",
    "Choice",
    "fit_workload",
    "predict",
    "choose_chunk_bytes",
    "chunk_shape",
]

#: Scheduler bookkeeping per task (graph node, state dicts), in bytes.
GRAPH_BYTES_PER_TASK = 4096
#: Working set of one running task relative to its chunk when nothing better is known:
#: one input, one output and one temporary of the chunk's size.
DEFAULT_AMPLIFICATION = 3.0
#: Bounds of the fitted amplification: a task holds at least its chunk, and a fit above
#: the upper bound says the measurement was dominated by something other than chunks.
MIN_AMPLIFICATION = 1.0
MAX_AMPLIFICATION = 32.0
#: Scheduling overhead per task on Dask's local schedulers when it was not measured.
DEFAULT_OVERHEAD_SECONDS = 3e-4
#: Candidate chunk sizes are spaced by this factor.
GRID_STEP = 2 ** 0.25
#: A candidate within this fraction of the best predicted time counts as equally fast;
#: among equally fast candidates the smallest (least memory) wins.
TIME_TOLERANCE = 0.05


@dataclass(frozen=True)
class Observation:
    """What one profiled compute measured.

    Parameters
    ----------
    array_bytes : float
        Bytes of the profiled array (the data the compute chunks).
    chunk_bytes : float
        Bytes of one chunk of that array.
    n_tasks : int
        Tasks executed for this array.
    task_seconds : float
        Sum of the time those tasks spent computing in the worker, in seconds.
    wall_seconds : float
        Wall time from the first task's start to the last task's end, in seconds.
    peak_bytes : float
        Peak process memory during the compute (0 if unknown).
    baseline_bytes : float
        Process memory when the compute started.
    results_bytes : float
        Bytes of the results the compute returned.
    concurrency : int
        Largest number of tasks that ran at the same time.
    """

    array_bytes: float
    chunk_bytes: float
    n_tasks: int
    task_seconds: float
    wall_seconds: float
    peak_bytes: float
    baseline_bytes: float
    results_bytes: float
    concurrency: int

    @property
    def n_chunks(self) -> int:
        """Number of chunks of the profiled array (at least one)."""
        if self.chunk_bytes <= 0:
            return 1
        return max(1, round(self.array_bytes / self.chunk_bytes))


@dataclass(frozen=True)
class WorkloadModel:
    """How a workload uses memory and time per chunk byte.

    Attributes
    ----------
    tasks_per_chunk : float
        Tasks the workload runs per chunk of its input.
    seconds_per_byte : float
        Task compute time per input byte, in seconds.
    overhead_seconds : float
        Scheduling overhead per task, in seconds, paid serially.
    amplification : float
        Working set of one running task divided by its chunk bytes.
    results_fraction : float
        Bytes of results held divided by input bytes.
    baseline_bytes : float
        Process memory before the compute, in bytes.
    concurrency : int
        Tasks that run at once.
    observations : int
        Number of observations the model was fitted to.
    """

    tasks_per_chunk: float
    seconds_per_byte: float
    overhead_seconds: float
    amplification: float
    results_fraction: float
    baseline_bytes: float
    concurrency: int
    observations: int


@dataclass(frozen=True)
class Prediction:
    """Predicted cost of computing an array of ``array_bytes`` in ``chunk_bytes`` chunks."""

    chunk_bytes: float
    n_chunks: int
    n_tasks: int
    seconds: float
    peak_bytes: float
    overhead_fraction: float


@dataclass(frozen=True)
class Choice:
    """The chosen chunk size, why, and what it is predicted to cost.

    ``binding`` names the constraint that decided the size: ``"memory"`` (a larger
    chunk would be faster but exceeds the budget), ``"overhead"`` (the smallest size
    whose scheduling overhead is acceptable), ``"parallelism"`` (larger chunks would
    leave threads idle), ``"min_chunk_bytes"``, ``"max_chunk_bytes"`` or ``"array"``
    (the whole array is one chunk). ``fits`` is False when no candidate fits the budget;
    the choice is then the one with the smallest predicted peak.
    """

    chunk_bytes: float
    binding: str
    prediction: Prediction
    budget_bytes: float
    fits: bool


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def fit_workload(observations: Sequence[Observation]) -> WorkloadModel | None:
    """Fit a :class:`WorkloadModel` to profiled computes.

    Returns None when no observation carries data (no tasks or no bytes).

    >>> obs = Observation(array_bytes=8e8, chunk_bytes=8e4, n_tasks=10_000,
    ...                   task_seconds=2.0, wall_seconds=4.0, peak_bytes=3e8,
    ...                   baseline_bytes=1e8, results_bytes=0, concurrency=2)
    >>> model = fit_workload([obs])
    >>> model.tasks_per_chunk, model.concurrency
    (1.0, 2)
    >>> round(model.overhead_seconds * 1e3, 3)  # ms per task
    0.3
    """
    usable = [o for o in observations if o.n_tasks > 0 and o.array_bytes > 0]
    if not usable:
        return None
    concurrency = max(1, max(o.concurrency for o in usable))
    total_bytes = sum(o.array_bytes for o in usable)
    seconds_per_byte = sum(o.task_seconds for o in usable) / total_bytes
    tasks_per_chunk = sum(o.n_tasks for o in usable) / sum(o.n_chunks for o in usable)

    overheads = []
    amplifications = []
    for o in usable:
        parallel = max(1, min(o.concurrency, o.n_chunks))
        waves = math.ceil(o.n_chunks / parallel)
        busy = waves * o.task_seconds / o.n_chunks
        if o.wall_seconds > 0:
            overheads.append(max(0.0, o.wall_seconds - busy) / o.n_tasks)
        if o.peak_bytes > 0 and o.chunk_bytes > 0:
            working = (
                o.peak_bytes
                - o.baseline_bytes
                - o.results_bytes
                - o.n_tasks * GRAPH_BYTES_PER_TASK
            )
            amplifications.append(working / (parallel * o.chunk_bytes))
    overhead = sum(overheads) / len(overheads) if overheads else DEFAULT_OVERHEAD_SECONDS
    amplification = (
        _clamp(max(amplifications), MIN_AMPLIFICATION, MAX_AMPLIFICATION)
        if amplifications
        else DEFAULT_AMPLIFICATION
    )
    last = usable[-1]
    return WorkloadModel(
        tasks_per_chunk=tasks_per_chunk,
        seconds_per_byte=seconds_per_byte,
        overhead_seconds=overhead,
        amplification=amplification,
        results_fraction=max(o.results_bytes / o.array_bytes for o in usable),
        baseline_bytes=last.baseline_bytes,
        concurrency=concurrency,
        observations=len(usable),
    )


def predict(
    model: WorkloadModel,
    array_bytes: float,
    chunk_bytes: float,
    concurrency: int | None = None,
    baseline_bytes: float | None = None,
) -> Prediction:
    """Predict wall time and peak memory of a chunking.

    Parameters
    ----------
    model : WorkloadModel
    array_bytes : float
        Bytes of the array to compute.
    chunk_bytes : float
        Bytes of one chunk; the array is assumed split into
        ``ceil(array_bytes / chunk_bytes)`` chunks.
    concurrency : int, optional
        Tasks that run at once; defaults to the model's.
    baseline_bytes : float, optional
        Process memory before the compute; defaults to the model's.

    >>> model = WorkloadModel(tasks_per_chunk=1.0, seconds_per_byte=1e-9,
    ...                       overhead_seconds=1e-3, amplification=2.0,
    ...                       results_fraction=0.0, baseline_bytes=0.0,
    ...                       concurrency=2, observations=1)
    >>> p = predict(model, array_bytes=1e9, chunk_bytes=1e8)
    >>> p.n_tasks, round(p.seconds, 3), p.peak_bytes > 4e8
    (10, 0.51, True)
    """
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")
    concurrency = model.concurrency if concurrency is None else max(1, int(concurrency))
    baseline = model.baseline_bytes if baseline_bytes is None else baseline_bytes
    chunk_bytes = min(chunk_bytes, max(array_bytes, 1.0))
    n_chunks = max(1, math.ceil(array_bytes / chunk_bytes))
    n_tasks = max(1, round(n_chunks * model.tasks_per_chunk))
    parallel = min(concurrency, n_chunks)
    waves = math.ceil(n_chunks / parallel)
    compute = waves * model.seconds_per_byte * chunk_bytes
    overhead = n_tasks * model.overhead_seconds
    seconds = compute + overhead
    peak = (
        baseline
        + model.results_fraction * array_bytes
        + n_tasks * GRAPH_BYTES_PER_TASK
        + parallel * model.amplification * chunk_bytes
    )
    return Prediction(
        chunk_bytes=chunk_bytes,
        n_chunks=n_chunks,
        n_tasks=n_tasks,
        seconds=seconds,
        peak_bytes=peak,
        overhead_fraction=overhead / seconds if seconds > 0 else 0.0,
    )


def _candidates(low: float, high: float) -> list[float]:
    sizes = []
    size = low
    while size < high:
        sizes.append(size)
        size *= GRID_STEP
    sizes.append(high)
    return sizes


def choose_chunk_bytes(
    model: WorkloadModel,
    array_bytes: float,
    *,
    budget_bytes: float,
    min_chunk_bytes: float,
    max_chunk_bytes: float,
    overhead_target: float,
    concurrency: int | None = None,
    baseline_bytes: float | None = None,
) -> Choice:
    """Choose the chunk size, in bytes, for an array of ``array_bytes``.

    Among sizes in ``[min_chunk_bytes, max_chunk_bytes]`` whose predicted peak fits
    ``budget_bytes``, take the fastest; among those within ``TIME_TOLERANCE`` of it
    and with an overhead fraction at most ``overhead_target`` (when any has), take the
    smallest. When nothing fits, take the size with the smallest predicted peak.

    >>> model = WorkloadModel(tasks_per_chunk=1.0, seconds_per_byte=1e-9,
    ...                       overhead_seconds=3e-4, amplification=3.0,
    ...                       results_fraction=0.0, baseline_bytes=1e8,
    ...                       concurrency=2, observations=1)
    >>> c = choose_chunk_bytes(model, 3.2e9, budget_bytes=1e9, min_chunk_bytes=2**20,
    ...                        max_chunk_bytes=3.2e9, overhead_target=0.1)
    >>> c.fits, c.binding, 2**20 <= c.chunk_bytes <= 3.2e9
    (True, 'overhead', True)
    """
    if array_bytes <= 0:
        raise ValueError(f"array_bytes must be positive, got {array_bytes!r}")
    high = min(max_chunk_bytes, array_bytes)
    low = min(min_chunk_bytes, high)
    grid = _candidates(low, high)
    preds = [predict(model, array_bytes, c, concurrency, baseline_bytes) for c in grid]
    fitting = [p for p in preds if p.peak_bytes <= budget_bytes]
    if not fitting:
        best = min(preds, key=lambda p: p.peak_bytes)
        return Choice(best.chunk_bytes, "memory", best, budget_bytes, False)

    fastest = min(p.seconds for p in fitting)
    fast = [p for p in fitting if p.seconds <= fastest * (1 + TIME_TOLERANCE)]
    cheap = [p for p in fast if p.overhead_fraction <= overhead_target]
    chosen = min(cheap or fast, key=lambda p: p.chunk_bytes)

    # Name the constraint that decided the size.
    larger = [p for p in preds if p.chunk_bytes > chosen.chunk_bytes]
    if chosen.chunk_bytes >= array_bytes:
        binding = "array"
    elif larger and larger[0].peak_bytes > budget_bytes and (
        larger[0].seconds < chosen.seconds * (1 - TIME_TOLERANCE / 2)
    ):
        binding = "memory"
    elif chosen.chunk_bytes >= high and high < array_bytes:
        binding = "max_chunk_bytes"
    elif chosen.chunk_bytes <= low and low < array_bytes:
        binding = "min_chunk_bytes"
    elif chosen.n_chunks <= (concurrency or model.concurrency) * 2:
        binding = "parallelism"
    else:
        binding = "overhead"
    return Choice(chosen.chunk_bytes, binding, chosen, budget_bytes, True)


def chunk_shape(
    shape: Sequence[int],
    itemsize: int,
    target_bytes: float,
    *,
    whole_dims: Sequence[int] = (),
    min_bytes: float = 0,
    max_bytes: float = math.inf,
) -> tuple[int, ...]:
    """Turn a byte target into a chunk shape for an array of ``shape``.

    Dimensions in ``whole_dims`` stay whole when the bounds allow; the others share
    the remaining elements as evenly as possible. Every dimension is then divided
    evenly (``ceil(n / blocks)`` per block, so no sliver chunk is left over) and
    the result kept within ``[min_bytes, max_bytes]`` where the array allows.

    >>> chunk_shape((10000, 10000), 8, 32 * 2**20)
    (2000, 2000)
    >>> chunk_shape((10000, 10000), 8, 32 * 2**20, whole_dims=[1])
    (417, 10000)
    >>> chunk_shape((100, 7), 8, 2**30)
    (100, 7)
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim == 0:
        return ()
    if any(s == 0 for s in shape):
        return tuple(max(s, 1) if s else 0 for s in shape)
    itemsize = max(1, int(itemsize))
    target = max(1.0, float(target_bytes)) / itemsize  # in elements

    whole = {d % ndim for d in whole_dims}
    fixed = math.prod(shape[d] for d in whole)
    if fixed * itemsize > max_bytes:
        whole = set()
        fixed = 1
    free = [d for d in range(ndim) if d not in whole]
    sides = [float(s) for s in shape]
    remaining = max(1.0, target / fixed)
    # Water-filling: dims shorter than the equal side stay whole.
    free.sort(key=lambda d: shape[d])
    for i, d in enumerate(free):
        side = remaining ** (1 / (len(free) - i))
        if shape[d] <= side:
            sides[d] = shape[d]
            remaining /= shape[d]
        else:
            sides[d] = side
            remaining /= side

    blocks = [max(1, min(shape[d], round(shape[d] / sides[d]))) for d in range(ndim)]

    def chunks_of(blocks: list[int]) -> list[int]:
        return [math.ceil(shape[d] / blocks[d]) for d in range(ndim)]

    def nbytes(blocks: list[int]) -> int:
        return math.prod(chunks_of(blocks)) * itemsize

    # Respect the bounds: split more while too large, merge while too small.
    for _ in range(64 * ndim):
        size = nbytes(blocks)
        if size > max_bytes:
            d = max(
                (d for d in range(ndim) if blocks[d] < shape[d]),
                key=lambda d: math.ceil(shape[d] / blocks[d]),
                default=None,
            )
            if d is None:
                break
            blocks[d] = _next_blocks(shape[d], blocks[d], +1)
        elif size < min_bytes:
            d = min(
                (d for d in range(ndim) if blocks[d] > 1),
                key=lambda d: math.ceil(shape[d] / blocks[d]),
                default=None,
            )
            if d is None:
                break
            trial = blocks.copy()
            trial[d] = _next_blocks(shape[d], blocks[d], -1)
            if nbytes(trial) > max_bytes:
                break
            blocks = trial
        else:
            break
    chunks = chunks_of(blocks)
    if math.prod(chunks) * itemsize < min_bytes <= math.prod(shape) * itemsize:
        chunks = _reach_min(shape, chunks, itemsize, min_bytes, max_bytes)
        return tuple(chunks)
    # Avoid a sliver at the end of a dim: a slightly smaller chunk that divides the dim
    # (or leaves at least half a chunk) is as good and saves a near-empty task.
    for d in range(ndim):
        c = _without_sliver(shape[d], chunks[d])
        if c != chunks[d]:
            trial = chunks.copy()
            trial[d] = c
            if math.prod(trial) * itemsize >= min(min_bytes, math.prod(chunks) * itemsize):
                chunks = trial
    return tuple(chunks)


def _reach_min(shape, chunks, itemsize, min_bytes, max_bytes) -> list[int]:
    """Grow one dim's chunk until the chunk holds ``min_bytes``, giving up evenness.

    Used when no even division lands in ``[min_bytes, max_bytes]``: a ragged last
    chunk is better than a chunk below the minimum.

    >>> _reach_min((1000003,), [500002], 1, 600000, 700000)
    [600000]
    """
    best = list(chunks)
    for d in sorted(range(len(shape)), key=lambda d: math.prod(chunks) // chunks[d]):
        grain = math.prod(chunks) // chunks[d] * itemsize  # bytes per unit along d
        low = min(shape[d], math.ceil(min_bytes / grain))
        if not (min_bytes <= low * grain <= max_bytes):
            continue
        high = min(shape[d], int(max_bytes // grain), low + 1000)
        # Prefer a length in range that leaves no sliver at the end of the dim.
        best[d] = next(
            (c for c in range(low, high + 1)
             if shape[d] % c == 0 or shape[d] % c >= c / 2),
            low,
        )
        return best
    return best


def _without_sliver(n: int, c: int) -> int:
    """The largest chunk in ``[0.8 c, c]`` whose last block along ``n`` is not a sliver.

    >>> _without_sliver(1551, 51)  # 51 leaves a last block of 21, 49 one of 32
    49
    >>> _without_sliver(1000, 100)
    100
    """
    if c >= n or n % c == 0 or n % c >= c / 2:
        return c
    for candidate in range(c - 1, max(1, math.ceil(0.8 * c)) - 1, -1):
        if n % candidate == 0 or n % candidate >= candidate / 2:
            return candidate
    return c


def _next_blocks(n: int, blocks: int, direction: int) -> int:
    """The next block count along a dim of ``n`` that changes the chunk size."""
    size = math.ceil(n / blocks)
    while 1 <= blocks + direction <= n:
        blocks += direction
        if math.ceil(n / blocks) != size:
            return blocks
    return blocks
