"""The memory and time model behind chunk-size recommendations.

Everything here is a pure function of numbers and task keys: no clocks, no
``psutil``, no Dask config. Measurement (``dask.array.adaptive_chunking``) turns a
profiled compute into an :class:`Observation` (with :mod:`.summary` reducing its
task records); this module fits a
:class:`WorkloadModel` to observations, predicts peak memory and wall time for any
chunk size, chooses the chunk size with the best predicted time that fits a memory
budget, and turns a byte target into a chunk shape.

The model in two sentences. Memory: a compute holds the process baseline, the
results it returns, scheduler bookkeeping per task, the task outputs that wait for
their consumers (a fraction of the array, as replayed from the profile), and for
every task running at once a working set of ``amplification * chunk_bytes``. Time:
every task pays a serial scheduling overhead (task counts follow each layer's block
grid, so a matmul's ``n**3`` tasks are counted as such), the chunks are computed in
waves of ``concurrency`` at the measured rate per byte, and chunks at least
:data:`FRESH_PAGES_BYTES` large pay for fresh pages on every allocation.

All sizes are in bytes and all durations in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dask.array._adaptive_chunking.held import held_exponent, held_share

__all__ = [
    "Observation",
    "WorkloadModel",
    "Prediction",
    "Choice",
    "fit_workload",
    "held_share",
    "predict",
    "choose_chunk_bytes",
    "correction",
]

#: Scheduler bookkeeping per task (graph node, state dicts), in bytes.
GRAPH_BYTES_PER_TASK = 4096
#: Working set of one running task relative to its chunk when the profile cannot
#: show it: the chunk and one temporary or output of its size.
DEFAULT_AMPLIFICATION = 2.0
#: Bounds of the fitted amplification: a task holds at least its chunk, and a fit above
#: the upper bound says the measurement was dominated by something other than chunks.
MIN_AMPLIFICATION = 1.0
MAX_AMPLIFICATION = 32.0
#: A measured peak is trusted for the amplification only when the working set it
#: implies is at least this large (smaller ones drown in allocator noise).
VISIBLE_BYTES = 16 * 2**20
#: Scheduling overhead per task on Dask's local schedulers when it was not measured.
DEFAULT_OVERHEAD_SECONDS = 3e-4
#: Compute time per byte assumed for the work that grows with chunk size when every
#: profiled compute used one chunk size (one size cannot separate it from the fixed
#: cost of a task): about one pass of NumPy arithmetic over memory.
PRIOR_SECONDS_PER_BYTE = 5e-10
#: glibc serves allocations of at least this size (its largest dynamic mmap
#: threshold) with fresh pages every time, and each page faults on first touch.
FRESH_PAGES_BYTES = 32 * 2**20
#: Tasks start and end out of step, so the threads also finish out of step: on
#: average this many chunks' compute time is left with some threads idle at the end.
TAIL_CHUNKS = 0.5
#: What a task costs whatever its chunk (calling the function, setting up a random
#: generator, opening a file) is rarely more than this. With one measured chunk
#: size, a task's time beyond it is taken to grow with the chunk: reading and
#: decompressing a storage chunk is work per byte, not a fixed cost that larger
#: chunks would spread.
MAX_FIXED_SECONDS = 1e-3
#: How far from a measured chunk size a prediction is trusted: a chunk more than
#: this many times larger or smaller than every measured one is a guess (cache
#: and page effects, a library's different algorithm) until a compute or a probe
#: measures it.
REACH = 64.0
#: The relative uncertainty of a predicted time at a measured chunk size (the
#: spread of repeated computes on a busy machine), and what it grows by for every
#: doubling of the distance to the nearest measured size.
UNCERTAINTY = 0.10
UNCERTAINTY_PER_DOUBLING = 0.05
#: How far from a measured chunk size a measured memory below the model's still
#: counts: a task that used less than modelled says little of a chunk far larger.
FADE = 4.0
#: Calibration ratios (measured / modelled) are kept within these bounds: a model
#: further off than that is not rescued by scaling.
MIN_CORRECTION, MAX_CORRECTION = 0.1, 10.0
#: Candidate chunk sizes are spaced by this factor.
GRID_STEP = 2 ** 0.25
#: A candidate within this fraction of the best predicted time counts as equally fast;
#: among equally fast candidates the smallest (least memory) wins.
TIME_TOLERANCE = 0.02

#: When no chunking is predicted to fit the budget, peaks within this fraction of the
#: smallest predicted one are taken as equal (predicted peaks err by 15-30%), and the
#: fastest of them wins: the smallest peak alone took a 6000^2 matrix product under a
#: 600 MiB limit to 400^2 chunks (9.2 s, 637 MiB); this rule takes 700^2 (6.7 s, 701 MiB).
PEAK_TOLERANCE = 0.10


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
        Process memory in use when the compute started; what the allocator held
        free is left out, since the compute reuses it (see :func:`.memory.live_rss`).
    results_bytes : float
        Bytes of the results the compute returned.
    concurrency : int
        Largest number of tasks that ran at the same time.
    blocks : int, optional
        Number of chunks of the profiled array (default ``array_bytes / chunk_bytes``).
    terms : tuple of (str, int, float, float), optional
        Per operation: its name, tasks, how its task count grows with the number
        of chunks, and the compute seconds of those tasks (see :func:`.summary.task_terms`).
    held_bytes : float, optional
        Largest amount of task outputs waiting for their consumers at once.
    held_aligned_bytes : float, optional
        The same without the outputs only a downstream rechunk reads: what waits
        when the chunks already have the layout that rechunk wants (default
        ``held_bytes``).
    task_bytes : float, optional
        Largest output of one task.
    task_peak_bytes : float, optional
        The most memory one task allocated beyond its inputs (its output and
        temporaries), traced on a probe; 0 when not traced.
    processes : int, optional
        Worker processes the compute ran on; ``peak_bytes`` and ``baseline_bytes``
        are then one worker's (default 1: one process).
    free_bytes : float, optional
        What the C allocator held free when the compute started (resident, but not
        in use). The compute may have reused it without the process growing, so
        what it needed lies between ``peak_bytes - baseline_bytes - free_bytes``
        and ``peak_bytes - baseline_bytes`` (default 0: known exactly).
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
    blocks: int = 0
    terms: tuple[tuple[str, int, float, float], ...] = ()
    held_bytes: float = 0.0
    task_bytes: float = 0.0
    held_aligned_bytes: float | None = None
    processes: int = 1
    task_peak_bytes: float = 0.0
    free_bytes: float = 0.0

    @property
    def n_chunks(self) -> int:
        """Number of chunks of the profiled array (at least one)."""
        if self.blocks > 0:
            return self.blocks
        if self.chunk_bytes <= 0:
            return 1
        return max(1, round(self.array_bytes / self.chunk_bytes))


@dataclass(frozen=True)
class WorkloadModel:
    """How a workload uses memory and time per chunk byte.

    Attributes
    ----------
    tasks_per_chunk : float
        Tasks the workload runs per chunk of its input, where it was measured.
    seconds_per_byte : float
        Task compute time per input byte, in seconds.
    fixed_seconds : float
        Compute time every task pays whatever its size (function calls, setting up
        a random generator, ...), in seconds.
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
    task_terms : tuple of (float, float, float, float, float)
        ``(k, e, fixed, per_unit, g)`` per operation: over ``n`` chunks of ``c``
        bytes it runs ``k * n**e`` tasks of ``fixed + per_unit * c**g`` seconds
        each. An elementwise operation has ``e = g = 1``; a matmul's products,
        indexed by three block indices over a 2-d array, ``e = g = 1.5``
        (``n**1.5`` tasks of ``c**1.5`` work); summing those products ``e = 1.5``
        but ``g = 1``. Empty: ``tasks_per_chunk * n`` tasks of
        ``fixed_seconds + seconds_per_byte * c``.
    held_fraction : float
        Task outputs waiting for their consumers at once, as a fraction of the
        array's bytes.
    held_aligned_fraction : float
        The same when the chunks have the layout a downstream rechunk wants.
    held_blocks : int
        Chunks of the compute the held fractions were measured on.
    held_max : float
        The largest waiting share any profiled compute showed: a coarser grid
        than the profiled ones is not assumed to hold more than that.
    held_exponent : float
        How the waiting share ``h`` of the array changes with the number of chunks
        ``n``. While every profiled share is below the whole array, ``-ln(1 - h)``
        grows like ``n ** held_exponent`` (the share approaches the whole array on
        coarse grids and never passes it); otherwise ``h`` itself does (a matmul's
        partial products can add up to more than the array). About -0.5 when a
        band of chunks waits for its neighbours (``map_overlap``, a transpose): a
        smaller share of a finer grid; 0 for a fixed share.
    blas_threads : int
        Threads a contraction's block product uses inside BLAS; with more than one,
        a contraction keeps the cores busy even with fewer chunks than threads.
    blas_penalty : float
        How much slower block products run when several run at once, each with its
        BLAS threads (the cores are oversubscribed); 1 when they do not interfere.
    fault_seconds_per_byte : float
        Cost of touching a fresh page, per byte (paid by chunks of at least
        :data:`FRESH_PAGES_BYTES`).
    corrections : tuple of (float, float, float)
        ``(chunk_bytes, time_ratio, memory_ratio)`` per measured chunk size: what
        was measured over what the model says for that very chunking, for time and
        for the memory above the baseline. Predictions are scaled by them, so the
        model reproduces what it measured (see :func:`correction`).
    peaks : tuple of (float, float, float)
        ``(array_bytes, chunk_bytes, peak_bytes)``: the largest peak measured for each
        array size and chunk size.
    heap_reuse : float
        The share of the allocator's free heap that computes reused instead of
        growing the process (1: all of it, as a compute run again reuses the chunks
        it freed; 0: none, as when the free pieces are too small for a chunk), the
        least any profiled compute that started with a free heap showed (1 when none
        did; see :func:`heap_reuse`).
    """

    tasks_per_chunk: float
    seconds_per_byte: float
    overhead_seconds: float
    amplification: float
    results_fraction: float
    baseline_bytes: float
    concurrency: int
    observations: int
    task_terms: tuple[tuple[float, float, float, float, float], ...] = ()
    held_fraction: float = 0.0
    fault_seconds_per_byte: float = 0.0
    fixed_seconds: float = 0.0
    held_aligned_fraction: float = 0.0
    held_blocks: int = 1
    held_max: float = MAX_AMPLIFICATION
    held_exponent: float = 0.0
    blas_threads: int = 1
    blas_penalty: float = 1.0
    corrections: tuple[tuple[float, float, float], ...] = ()
    peaks: tuple[tuple[float, float, float], ...] = ()
    heap_reuse: float = 1.0

    @property
    def measured_bytes(self) -> tuple[float, ...]:
        """The chunk sizes the model was measured at, smallest first (empty: unknown)."""
        return tuple(c for c, _, _ in self.corrections)

    def distance(self, chunk_bytes: float) -> float:
        """How many times larger or smaller ``chunk_bytes`` is than the nearest
        measured chunk size (1: measured; ``inf`` when no size is known).

        >>> m = WorkloadModel(1, 0, 0, 2, 0, 0, 1, 1, corrections=((1e6, 1, 1), (4e6, 1, 1)))
        >>> m.distance(2e6), m.distance(32e6), m.distance(2.5e5)
        (1.0, 8.0, 4.0)
        """
        sizes = self.measured_bytes
        if not sizes or not chunk_bytes > 0:
            return math.inf
        if sizes[0] <= chunk_bytes <= sizes[-1]:
            return 1.0
        return max(sizes[0] / chunk_bytes, chunk_bytes / sizes[-1])

    def measured_peak(self, array_bytes: float, chunk_bytes: float) -> float | None:
        """The largest peak measured for an array of ``array_bytes`` in chunks of
        ``chunk_bytes`` (each within 7%), or None (a pilot's peak says nothing of
        the full array's).

        >>> m = WorkloadModel(1, 0, 0, 2, 0, 0, 1, 1, peaks=((1e9, 1e6, 3e8),))
        >>> m.measured_peak(1e9, 1.05e6), m.measured_peak(1e9, 2e6), m.measured_peak(4e9, 1e6)
        (300000000.0, None, None)
        """
        def near(a: float, b: float) -> bool:
            return a > 0 and b > 0 and abs(math.log(a / b)) <= 0.07

        return next((p for a, c, p in self.peaks
                     if near(array_bytes, a) and near(chunk_bytes, c)), None)

    def nearest(self, chunk_bytes: float) -> float:
        """How many times larger or smaller ``chunk_bytes`` is than the measured chunk
        size nearest to it, between measured sizes too (1: measured; ``inf`` when no
        size is known).

        >>> m = WorkloadModel(1, 0, 0, 2, 0, 0, 1, 1, corrections=((1e6, 1, 1), (64e6, 1, 1)))
        >>> m.nearest(4e6), m.distance(4e6)
        (4.0, 1.0)
        """
        sizes = self.measured_bytes
        if not sizes or not chunk_bytes > 0:
            return math.inf
        return min(max(c / chunk_bytes, chunk_bytes / c) for c in sizes)

    def uncertainty(self, chunk_bytes: float) -> float:
        """The relative uncertainty of a predicted time at ``chunk_bytes``: it grows
        with the distance to the nearest measured size, also between two of them (a
        prediction there interpolates how wrong the model was at each).

        >>> m = WorkloadModel(1, 0, 0, 2, 0, 0, 1, 1, corrections=((1e6, 1, 1),))
        >>> round(m.uncertainty(1e6), 2), round(m.uncertainty(8e6), 2)
        (0.1, 0.25)
        """
        d = self.nearest(chunk_bytes)
        if math.isinf(d):
            return 1.0
        return UNCERTAINTY + UNCERTAINTY_PER_DOUBLING * math.log2(d)

    def n_tasks(self, n_chunks: int) -> int:
        """Tasks of a compute over ``n_chunks`` chunks.

        >>> WorkloadModel(2.0, 0, 0, 2, 0, 0, 1, 1).n_tasks(100)
        200
        >>> terms = ((1.0, 1.5, 0.0, 0.0, 1.5), (3.0, 0.0, 0.0, 0.0, 0.0))
        >>> WorkloadModel(2.0, 0, 0, 2, 0, 0, 1, 1, task_terms=terms).n_tasks(100)
        1003
        """
        if not self.task_terms:
            return max(1, round(n_chunks * self.tasks_per_chunk))
        return max(1, round(sum(t[0] * n_chunks ** t[1] for t in self.task_terms)))

    def task_seconds(self, n_chunks: int, chunk_bytes: float) -> tuple[float, float, float]:
        """Compute seconds of all tasks over ``n_chunks`` chunks: total, fixed part, and
        the part spent in contractions (block products, see :func:`work_exponent`).

        >>> WorkloadModel(1.0, 1e-9, 0, 2, 0, 0, 1, 1, fixed_seconds=1e-3).task_seconds(10, 1e6)
        (0.02, 0.01, 0.0)
        """
        if not self.task_terms:
            tasks = n_chunks * self.tasks_per_chunk
            fixed = tasks * self.fixed_seconds
            return fixed + n_chunks * self.seconds_per_byte * chunk_bytes, fixed, 0.0
        total = fixed = contraction = 0.0
        for k, e, a, w, g in self.task_terms:
            tasks = k * n_chunks**e
            fixed += tasks * a
            total += tasks * (a + w * chunk_bytes**g)
            if g > 1:
                contraction += tasks * w * chunk_bytes**g
        return total, fixed, contraction


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
    chunk would be faster but exceeds the budget), ``"overhead"`` (smaller chunks
    would lose more than the overhead target to per-task overhead),
    ``"speed"`` (the predicted time is best here: smaller chunks pay more
    overhead, larger ones lose parallelism or pay for fresh pages),
    ``"parallelism"`` (larger chunks would leave threads idle),
    ``"min_chunk_bytes"``, ``"smallest"`` (no smaller chunking has the shape the
    chunks must have), ``"max_chunk_bytes"``, ``"array"`` (the whole array is
    one chunk) or ``"reach"`` (a size further from the measured ones is predicted
    faster, but is not measured). ``fits`` is False when no candidate fits the budget; the choice is
    then the fastest of those whose predicted peak is within :data:`PEAK_TOLERANCE` of
    the smallest.
    """

    chunk_bytes: float
    binding: str
    prediction: Prediction
    budget_bytes: float
    fits: bool
    #: The smallest predicted peak of any candidate, when none fits (else None).
    least_peak_bytes: float | None = None


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def fit_workload(
    observations: Sequence[Observation],
    fault_seconds_per_byte: float = 0.0,
    blas_threads: int = 1,
    blas_penalty: float = 1.0,
) -> WorkloadModel | None:
    """Fit a :class:`WorkloadModel` to profiled computes.

    Returns None when no observation carries data (no tasks or no bytes). Task
    counts and what waits come from the most finely chunked observation; costs
    and overhead from all of them. ``fault_seconds_per_byte``, ``blas_threads``
    and ``blas_penalty`` are properties of the machine (see :class:`WorkloadModel`).

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
    tasks_per_chunk = sum(o.n_tasks for o in usable) / sum(o.n_chunks for o in usable)
    fixed, seconds_per_byte = _split_task_time(usable)

    overheads = []
    measured_amp = []
    structural_amp = []
    # What waits depends on the block grid: take it from the most finely chunked compute.
    finest = max(usable, key=lambda o: o.n_chunks)
    held = finest.held_bytes / finest.array_bytes
    aligned = finest.held_bytes if finest.held_aligned_bytes is None else finest.held_aligned_bytes
    held_aligned = aligned / finest.array_bytes
    for o in usable:
        parallel = max(1, min(o.concurrency, o.n_chunks))
        if o.wall_seconds > 0:
            overheads.append(max(0.0, o.wall_seconds - o.task_seconds / parallel) / o.n_tasks)
        if o.chunk_bytes > 0:
            structural_amp.append(o.task_bytes / o.chunk_bytes)
        if o.peak_bytes > 0 and o.chunk_bytes > 0:
            working = (  # at least (the free heap may have been reused)
                o.peak_bytes
                - o.baseline_bytes
                - o.free_bytes
                - o.results_bytes
                - o.n_tasks * GRAPH_BYTES_PER_TASK
                - o.held_bytes
            )
            if working >= VISIBLE_BYTES and parallel * o.chunk_bytes * 4 >= VISIBLE_BYTES:
                measured_amp.append(working / (parallel * o.chunk_bytes))
    overhead = sum(overheads) / len(overheads) if overheads else DEFAULT_OVERHEAD_SECONDS
    # What a task held beyond its inputs, where a probe traced it: measured, so it
    # replaces the assumption when the process's memory could not show it.
    traced = [o.task_peak_bytes / o.chunk_bytes for o in usable
              if o.task_peak_bytes > 0 and o.chunk_bytes > 0]
    if measured_amp:
        amplification = max(measured_amp + traced)
    elif traced:
        amplification = max(traced + structural_amp)
    else:
        amplification = max([DEFAULT_AMPLIFICATION, *structural_amp])
    terms = _fit_terms(usable, fixed, seconds_per_byte)
    model = WorkloadModel(
        tasks_per_chunk=tasks_per_chunk,
        seconds_per_byte=seconds_per_byte,
        overhead_seconds=overhead,
        amplification=_clamp(amplification, MIN_AMPLIFICATION, MAX_AMPLIFICATION),
        results_fraction=max(o.results_bytes / o.array_bytes for o in usable),
        baseline_bytes=usable[-1].baseline_bytes,
        concurrency=concurrency,
        observations=len(usable),
        task_terms=terms,
        held_fraction=min(held, MAX_AMPLIFICATION),
        fault_seconds_per_byte=max(0.0, fault_seconds_per_byte),
        fixed_seconds=fixed,
        held_aligned_fraction=min(held_aligned, held, MAX_AMPLIFICATION),
        held_blocks=finest.n_chunks,
        held_max=max(o.held_bytes / o.array_bytes for o in usable),
        held_exponent=held_exponent(usable),
        blas_threads=max(1, int(blas_threads)),
        blas_penalty=max(1.0, float(blas_penalty)),
    )
    peaks: dict = {}
    for o in usable:
        if o.chunk_bytes > 0 and o.peak_bytes > 0:
            key = (round(math.log2(o.array_bytes) * 10), round(math.log2(o.chunk_bytes) * 10))
            a, c, p = peaks.get(key, (o.array_bytes, o.chunk_bytes, 0.0))
            peaks[key] = (a, c, max(p, o.peak_bytes))
    model = replace(model, corrections=_corrections(model, usable),
                    peaks=tuple(sorted(peaks.values())))
    return replace(model, heap_reuse=heap_reuse(model, usable))


#: A free heap smaller than this at a compute's start says nothing of its reuse.
VISIBLE_FREE_BYTES = 16 * 2**20


def heap_reuse(model: WorkloadModel, observations: Sequence[Observation]) -> float:
    """The share of the free heap the computes reused (see :attr:`WorkloadModel.heap_reuse`).

    A compute that started with ``free`` bytes of free heap and needed ``need``
    (as ``model`` predicts for it) peaks at ``max(resident, in_use + need)`` when it
    reuses all the free heap it can, and ``min(free, need)`` higher when it reuses
    none; where between its peak lies is its share.

    >>> m = WorkloadModel(1, 0, 0, 6.0, 0, 0, 1, 1)  # a running task holds 6 chunks
    >>> reran = Observation(1e9, 1e8, 10, 1, 1, peak_bytes=7e8, baseline_bytes=1e8,
    ...                     results_bytes=0, concurrency=1, free_bytes=4e8)
    >>> heap_reuse(m, [reran])  # 600 MB needed: the free 400 MB reused
    1.0
    >>> holes = replace(reran, peak_bytes=1.1e9)  # it all grew the process
    >>> round(heap_reuse(m, [holes]), 3)
    0.0
    """
    shares = []
    for o in observations:
        if o.free_bytes < VISIBLE_FREE_BYTES or not o.peak_bytes > 0 or not o.chunk_bytes > 0:
            continue
        p = predict(model, o.array_bytes, o.chunk_bytes, o.concurrency, o.baseline_bytes,
                    n_chunks=o.n_chunks, processes=o.processes)
        need = p.peak_bytes - o.baseline_bytes
        reusable = min(o.free_bytes, need)
        if reusable <= 0:
            continue
        lowest = max(o.baseline_bytes + o.free_bytes, o.baseline_bytes + need)
        shares.append(_clamp(1 - (o.peak_bytes - lowest) / reusable, 0.0, 1.0))
    return min(shares, default=1.0)


def _corrections(model: WorkloadModel, observations: Sequence[Observation]
                 ) -> tuple[tuple[float, float, float], ...]:
    """What was measured over what ``model`` predicts for the same chunking, per
    measured chunk size (see :attr:`WorkloadModel.corrections`).

    Computes at one chunk size (within 7%) are one point: the geometric mean of
    their time ratios, and the largest of their memory ratios (a budget must hold
    for the worst compute seen).
    """
    points: dict = {}
    for o in observations:
        if not o.chunk_bytes > 0:
            continue
        p = predict(model, o.array_bytes, o.chunk_bytes, o.concurrency, o.baseline_bytes,
                    n_chunks=o.n_chunks, processes=o.processes)
        times, memory = points.setdefault(round(math.log2(o.chunk_bytes) * 10), ([], []))
        if o.wall_seconds > 0 and p.seconds > 0:
            times.append((o.chunk_bytes, o.wall_seconds / p.seconds))
        above = p.peak_bytes - o.baseline_bytes
        if o.peak_bytes > o.baseline_bytes and above > 0:
            # What the compute needed is known between two bounds (see
            # Observation.free_bytes): the model is corrected only as far as it
            # falls outside them.
            grew = o.peak_bytes - o.baseline_bytes
            needed = _clamp(above, max(0.0, grew - o.free_bytes), grew)
            memory.append((o.chunk_bytes, needed / above))
        elif not times:
            times.append((o.chunk_bytes, 1.0))
    out = []
    for times, memory in points.values():
        sizes = [c for c, _ in times + memory]
        time_ratio = math.exp(sum(math.log(r) for _, r in times) / len(times)) if times else 1.0
        memory_ratio = max((r for _, r in memory), default=1.0)
        out.append((math.exp(sum(map(math.log, sizes)) / len(sizes)),
                    _clamp(time_ratio, MIN_CORRECTION, MAX_CORRECTION),
                    _clamp(memory_ratio, MIN_CORRECTION, MAX_CORRECTION)))
    return tuple(sorted(out))


def correction(model: WorkloadModel, chunk_bytes: float) -> tuple[float, float]:
    """The ``(time, memory)`` scale of a prediction at ``chunk_bytes``.

    Between measured chunk sizes the ratios are interpolated (in the logarithm of
    the size); beyond them the time ratio of the nearest size holds (a bias of the
    model, like its overhead estimate, stays), while a memory ratio below 1 fades
    back to the model's own figure within :data:`FADE` (a measurement that used
    less memory than modelled says nothing of a chunk that was not run; one that
    used more is kept).

    >>> m = WorkloadModel(1, 0, 0, 2, 0, 0, 1, 1,
    ...                   corrections=((1e6, 2.0, 0.5), (4e6, 1.0, 0.5)))
    >>> correction(m, 1e6), correction(m, 4e6)
    ((2.0, 0.5), (1.0, 0.5))
    >>> [round(r, 3) for r in correction(m, 2e6)]  # halfway, in the logarithm
    [1.414, 0.5]
    >>> correction(m, 32e6)  # 8x the largest measured: memory as modelled
    (1.0, 1.0)
    """
    points = model.corrections
    if not points or not chunk_bytes > 0:
        return 1.0, 1.0
    if chunk_bytes <= points[0][0] or chunk_bytes >= points[-1][0]:
        c, t, m = points[0] if chunk_bytes <= points[0][0] else points[-1]
        if m < 1:
            fade = max(0.0, 1 - abs(math.log(chunk_bytes / c)) / math.log(FADE))
            m = m ** fade
        return t, m
    for (c1, t1, m1), (c2, t2, m2) in zip(points, points[1:]):
        if c1 <= chunk_bytes <= c2:
            f = math.log(chunk_bytes / c1) / math.log(c2 / c1) if c2 > c1 else 0.0
            return t1 ** (1 - f) * t2 ** f, m1 ** (1 - f) * m2 ** f
    return 1.0, 1.0  # pragma: no cover - the points are sorted


#: Operations whose tasks do ``side**3`` work on ``side**2`` blocks (contractions).
CONTRACTIONS = frozenset({"matmul", "tensordot", "dot", "einsum"})


def work_exponent(op: str, e: float) -> float:
    """How the work of one task of ``op`` grows with the chunk's bytes.

    A contraction's block product grows like its iteration space, ``c**e``; any
    other task reads and writes chunk-sized data, ``c**min(e, 1)`` (a reduction's
    final step, ``e = 0``, combines a few small partial results).

    >>> work_exponent("matmul", 1.5), work_exponent("_chunk_sum", 1.5), work_exponent("sum", 0.0)
    (1.5, 1.0, 0.0)
    """
    return e if op in CONTRACTIONS else min(e, 1.0)


def _fit_terms(observations, fixed: float, per_byte: float) -> tuple:
    """Per operation ``(k, e, fixed, per_unit, g)`` (see :attr:`WorkloadModel.task_terms`).

    The task counts come from the observation with the most chunks. Where an
    operation was seen at two chunk sizes, the time per task at each gives its
    fixed cost and its cost per unit of ``chunk_bytes ** g`` (for a contraction, ``g``
    itself: BLAS is more efficient on larger blocks, so a product's time grows more
    slowly than its work); otherwise its time is split as the whole compute's is
    (:func:`_split_task_time`).
    """
    with_terms = [o for o in observations if o.terms]
    if not with_terms:
        return ()
    structure = max(with_terms, key=lambda o: o.n_chunks)
    n0 = structure.n_chunks
    # Per-task seconds of each operation at each chunk size it was seen at.
    seen: dict = {}
    for o in with_terms:
        for op, count, e, secs in o.terms:
            if count:
                seen.setdefault((op, e), {})[o.chunk_bytes] = secs / count
    terms = []
    for op, count, e, secs in structure.terms:
        g = work_exponent(op, e)
        times = seen.get((op, e), {})
        c0 = structure.chunk_bytes
        t0 = secs / count if count else 0.0
        a = w = None
        if len(times) >= 2 and g > 0:
            (c1, t1), (c2, t2) = min(times.items()), max(times.items())
            if op in CONTRACTIONS and t1 > 0 and t2 > 0 and c2 > c1:
                # BLAS gets faster on larger blocks: fit how a product's time grows
                # with its block (between streaming, 1, and its work, e).
                g = _clamp(math.log(t2 / t1) / math.log(c2 / c1), 1.0, e)
                a, w = 0.0, t2 / c2**g
            else:
                span = c2**g - c1**g
                if span > 0:
                    w = max(0.0, (t2 - t1) / span)
                    a = max(0.0, t1 - w * c1**g)
        if a is None:
            # One size: the share of this operation's time that grows with the chunk
            # is at most what the whole compute's split gives per byte of chunk.
            variable = (min(t0, max(per_byte * c0, t0 - MAX_FIXED_SECONDS))
                        if g > 0 and c0 > 0 else 0.0)
            a = t0 - variable
            w = variable / c0**g if variable else 0.0
        terms.append((count / n0**e, e, a, w, g))
    return tuple(terms)


def _split_task_time(observations: Sequence[Observation]) -> tuple[float, float]:
    """Split task compute time into a fixed cost per task and a cost per byte.

    ``task_seconds = fixed * n_tasks + per_byte * array_bytes`` is fitted by least
    squares when the observations used different chunk sizes; with one chunk size
    the per-byte cost is taken as :data:`PRIOR_SECONDS_PER_BYTE` (or less, if the
    measured time is less), the rest is fixed cost up to :data:`MAX_FIXED_SECONDS`
    per task, and any time beyond that is per byte too.

    One size, 20 tasks of 64 ms on 32 MB chunks (reading a stored chunk): almost
    all of it grows with the chunk.

    >>> fixed, per_byte = _split_task_time([Observation(6.4e8, 3.2e7, 20, 1.28, 0.7, 0, 0,
    ...                                                 0, 2)])
    >>> round(fixed * 1e3, 1), round(per_byte * 1e9, 2)  # ms per task, ns per byte
    (1.0, 1.97)

    >>> obs = [Observation(8e6, 8e4, 100, 0.058, 0.1, 0, 0, 0, 2),  # 100 chunks
    ...        Observation(8e6, 2e6, 4, 0.010, 0.01, 0, 0, 0, 2)]   # 4 chunks
    >>> fixed, per_byte = _split_task_time(obs)
    >>> round(fixed * 1e6), round(per_byte * 1e9, 2)  # us per task, ns per byte
    (500, 1.0)
    """
    sizes = {round(math.log2(o.chunk_bytes), 1) for o in observations if o.chunk_bytes > 0}
    total_s = sum(o.task_seconds for o in observations)
    total_b = sum(o.array_bytes for o in observations)
    total_t = sum(o.n_tasks for o in observations)
    if len(sizes) >= 2:
        # Weighted by 1/time so that short computes count as much as long ones.
        w = [1 / max(o.task_seconds, 1e-9) for o in observations]
        stt = sum(wi * o.n_tasks**2 for wi, o in zip(w, observations))
        sbb = sum(wi * o.array_bytes**2 for wi, o in zip(w, observations))
        stb = sum(wi * o.n_tasks * o.array_bytes for wi, o in zip(w, observations))
        sty = sum(wi * o.n_tasks * o.task_seconds for wi, o in zip(w, observations))
        sby = sum(wi * o.array_bytes * o.task_seconds for wi, o in zip(w, observations))
        det = stt * sbb - stb * stb
        if det > 0:
            fixed = (sty * sbb - sby * stb) / det
            per_byte = (sby * stt - sty * stb) / det
            if fixed >= 0 and per_byte >= 0:
                return fixed, per_byte
            if fixed < 0:
                return 0.0, total_s / total_b
            return total_s / total_t, 0.0
    per_byte = min(PRIOR_SECONDS_PER_BYTE, total_s / total_b)
    # A task's fixed cost is at most MAX_FIXED_SECONDS: the rest grows with the chunk.
    per_byte = max(per_byte, (total_s - MAX_FIXED_SECONDS * total_t) / total_b)
    return max(0.0, total_s - per_byte * total_b) / total_t, per_byte


def predict(
    model: WorkloadModel,
    array_bytes: float,
    chunk_bytes: float,
    concurrency: int | None = None,
    baseline_bytes: float | None = None,
    aligned: bool = False,
    n_chunks: int | None = None,
    processes: int = 1,
    resident_bytes: float = 0.0,
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
    aligned : bool, optional
        The chunks have the layout a downstream rechunk wants (see
        :attr:`WorkloadModel.held_aligned_fraction`).
    n_chunks : int, optional
        The number of chunks, when the chunking is known (a shape cannot always
        split an array into ``array_bytes / chunk_bytes`` chunks);
        ``chunk_bytes`` is then the largest chunk.
    processes : int, optional
        Worker processes sharing the compute (a distributed cluster): the peak is
        then that of one of them, running ``concurrency / processes`` tasks and
        holding its share of what waits; ``baseline_bytes`` is one process's.
    resident_bytes : float, optional
        The process's resident memory now, the allocator's free heap included
        (default 0: the process is not this one; see :func:`_peak`).

    >>> model = WorkloadModel(tasks_per_chunk=1.0, seconds_per_byte=1e-9,
    ...                       overhead_seconds=1e-3, amplification=2.0,
    ...                       results_fraction=0.0, baseline_bytes=0.0,
    ...                       concurrency=2, observations=1)
    >>> p = predict(model, array_bytes=1e9, chunk_bytes=1e8)
    >>> p.n_tasks, round(p.seconds, 3), p.peak_bytes > 4e8
    (10, 0.535, True)
    """
    if not chunk_bytes > 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")
    concurrency = model.concurrency if concurrency is None else max(1, int(concurrency))
    baseline = model.baseline_bytes if baseline_bytes is None else baseline_bytes
    chunk_bytes = min(chunk_bytes, max(array_bytes, 1.0))
    if n_chunks is None:
        n_chunks = math.ceil(array_bytes / chunk_bytes)
    n_chunks = max(1, int(n_chunks))
    n_tasks = model.n_tasks(n_chunks)
    parallel = min(concurrency, n_chunks)
    waves = math.ceil(n_chunks / parallel)
    # The tasks' compute runs `parallel` at a time; the last wave may be partial. A
    # contraction's block product also runs on BLAS's threads, so it keeps the cores
    # busy even when there are fewer chunks than threads.
    work, fixed, contraction = model.task_seconds(n_chunks, chunk_bytes)
    if chunk_bytes >= FRESH_PAGES_BYTES:
        work += n_chunks * model.fault_seconds_per_byte * model.amplification * chunk_bytes
    imbalance = waves * parallel / n_chunks
    rest = work - contraction
    if parallel > 1 and model.blas_threads > 1:
        # Products running at once, each on several BLAS threads, oversubscribe.
        contraction *= model.blas_penalty
    cores = min(max(concurrency, model.blas_threads), parallel * model.blas_threads)
    compute = rest / parallel * imbalance + contraction / cores
    if parallel > 1:
        compute += TAIL_CHUNKS * (rest / n_chunks) * (1 - 1 / parallel)
    overhead = n_tasks * model.overhead_seconds
    seconds = compute + overhead
    per_task = overhead + fixed / parallel * imbalance
    held = held_share(model, n_chunks, aligned)
    processes = max(1, int(processes))
    per_process = min(math.ceil(concurrency / processes), n_chunks)
    above = (
        (model.results_fraction * array_bytes + n_tasks * GRAPH_BYTES_PER_TASK
         if processes == 1 else 0.0)  # on a cluster the client holds those
        + held * array_bytes / processes
        + per_process * model.amplification * chunk_bytes
    )
    # Scaled to what the measured chunkings really took (see `correction`).
    time_ratio, memory_ratio = correction(model, chunk_bytes)
    return Prediction(
        chunk_bytes=chunk_bytes,
        n_chunks=n_chunks,
        n_tasks=n_tasks,
        seconds=seconds * time_ratio,
        peak_bytes=_peak(baseline, above * memory_ratio, resident_bytes, model.heap_reuse),
        overhead_fraction=per_task / seconds if seconds > 0 else 0.0,
    )


def _peak(in_use: float, need: float, resident: float, reuse: float) -> float:
    """The peak of a compute that needs ``need`` bytes, from ``in_use`` bytes in use
    and ``resident`` bytes resident (0: not this process), reusing the share ``reuse``
    of the free heap between them (see :func:`heap_reuse`).

    The free heap the compute leaves alone grows the process. A free heap larger
    than the compute needs keeps the process's resident memory above this figure,
    whatever the chunks: that is not counted, so that no chunking is said not to fit
    for memory the allocator would reuse.

    >>> MiB = 2**20
    >>> [_peak(100 * MiB, 600 * MiB, 500 * MiB, r) / MiB for r in (1.0, 0.0)]
    [700.0, 1100.0]
    """
    free = max(0.0, resident - in_use)
    return in_use + need + (1 - reuse) * min(free, max(0.0, need))


def _candidates(low: float, high: float) -> list[float]:
    if not 0 < low <= high:
        raise ValueError(
            f"chunk size bounds must satisfy 0 < min_chunk_bytes <= max_chunk_bytes, got "
            f"{low!r} and {high!r}"
        )
    sizes = []
    size = low
    while size < high * (1 - 1e-9):  # a step that lands on `high` is `high`
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
    aligned: bool = False,
    realize=None,
    processes: int = 1,
    reach: float | None = REACH,
    resident_bytes: float = 0.0,
) -> Choice:
    """Choose the chunk size, in bytes, for an array of ``array_bytes``.

    Candidates are spaced by :data:`GRID_STEP` in ``[min_chunk_bytes,
    max_chunk_bytes]``. Among those whose predicted peak fits ``budget_bytes``, the
    ones within :data:`TIME_TOLERANCE` of the fastest are equally good; of those,
    take the smallest whose overhead fraction is at most ``overhead_target`` (the
    smallest of all, if none is). When nothing fits, take the fastest size whose
    predicted peak is within :data:`PEAK_TOLERANCE` of the smallest. Only candidates
    within ``reach`` times a measured chunk size (:meth:`WorkloadModel.distance`) are
    taken while one of them fits the budget (or the nearest that fit, when none is
    that near): a faster size
    further out is a guess, and the choice is then bound by ``"reach"`` (None: no
    limit). ``resident_bytes`` is as :func:`predict` takes it. ``realize`` maps a candidate size to the chunking a
    shape can really have, ``(largest chunk bytes, number of chunks, aligned)``;
    each candidate is then predicted as that chunking. The returned ``chunk_bytes`` is
    the candidate (give it to :func:`chunk_shape` as the target).

    >>> model = WorkloadModel(tasks_per_chunk=1.0, seconds_per_byte=1e-9,
    ...                       overhead_seconds=3e-4, amplification=3.0,
    ...                       results_fraction=0.0, baseline_bytes=1e8,
    ...                       concurrency=2, observations=1)
    >>> c = choose_chunk_bytes(model, 3.2e9, budget_bytes=1e9, min_chunk_bytes=2**20,
    ...                        max_chunk_bytes=3.2e9, overhead_target=0.1)
    >>> c.fits, c.binding, round(c.chunk_bytes / 2**20, 1)  # MiB
    (True, 'speed', 16.0)
    """
    if not array_bytes > 0:
        raise ValueError(f"array_bytes must be positive, got {array_bytes!r}")
    high = min(max_chunk_bytes, array_bytes)
    low = min(min_chunk_bytes, high)
    grid = _candidates(low, high)
    targets: dict = {}  # prediction -> the candidate size it was made for
    preds = []
    seen: set = set()
    for c in grid:
        size, n, layout = realize(c) if realize is not None else (c, None, aligned)
        if (size, n, layout) in seen:
            continue
        seen.add((size, n, layout))
        p = predict(model, array_bytes, size, concurrency, baseline_bytes, layout, n,
                    processes, resident_bytes)
        targets[id(p)] = c
        preds.append(p)
    fitting = [p for p in preds if p.peak_bytes <= budget_bytes]
    if not fitting:
        least = min(p.peak_bytes for p in preds)
        level = [p for p in preds if p.peak_bytes <= least + abs(least) * PEAK_TOLERANCE]
        best = min(level, key=lambda p: (p.seconds, p.peak_bytes))
        return Choice(targets[id(best)], "memory", best, budget_bytes, False, least)
    # The budget may force a size far from the measured ones; speed alone may not.
    # When no chunking a shape can have is within reach, the nearest ones are.
    dist = {id(p): model.distance(p.chunk_bytes) for p in fitting}
    limit = math.inf if reach is None else max(reach, min(dist.values())) * (1 + 1e-9)
    near = [p for p in fitting if dist[id(p)] <= limit]
    far = [p for p in fitting if p not in near]

    fastest = min(p.seconds for p in near)
    # abs(): a fit from odd records may predict below zero, and the fastest stays in.
    fast = [p for p in near if p.seconds <= fastest + abs(fastest) * TIME_TOLERANCE]
    cheap = [p for p in fast if p.overhead_fraction <= overhead_target]
    chosen = min(cheap or fast, key=lambda p: p.chunk_bytes)

    # Name the constraint that decided the size.
    i = next(k for k, p in enumerate(preds) if p is chosen)
    larger, smaller = preds[i + 1:], preds[:i]
    conc = concurrency or model.concurrency
    if chosen.n_chunks == 1:
        binding = "array"
    elif any(p.seconds < chosen.seconds * (1 - TIME_TOLERANCE) for p in far):
        binding = "reach"
    elif any(p.peak_bytes > budget_bytes and p.seconds < chosen.seconds * (1 - TIME_TOLERANCE)
             for p in larger):
        binding = "memory"
    elif not larger:
        binding = "max_chunk_bytes"
    elif not smaller:
        # Below the smallest chunking a shape can have (whole storage chunks, whole
        # dimensions) there is nothing to choose; only a bound at it binds.
        binding = "min_chunk_bytes" if chosen.chunk_bytes <= low * (1 + 1e-9) else "smallest"
    elif cheap and smaller[-1] in fast and smaller[-1].overhead_fraction > overhead_target:
        binding = "overhead"
    elif chosen.n_chunks <= 4 * conc and larger[0].seconds > chosen.seconds:
        binding = "parallelism"
    else:
        binding = "speed"
    return Choice(targets[id(chosen)], binding, chosen, budget_bytes, True)
