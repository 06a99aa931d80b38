"""The memory and time model behind chunk-size recommendations.

Everything here is a pure function of numbers and task keys: no clocks, no
``psutil``, no Dask config. Measurement (``dask.array.adaptive_chunking``) turns a
profiled compute into an :class:`Observation` (with :func:`task_terms` and
:func:`replay_memory` summarizing its task records); this module fits a
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
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = [
    "Observation",
    "WorkloadModel",
    "Prediction",
    "Choice",
    "task_terms",
    "replay_memory",
    "fit_workload",
    "held_share",
    "predict",
    "choose_chunk_bytes",
    "Saturation",
    "worker_saturation",
    "water_level",
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
#: Candidate chunk sizes are spaced by this factor.
GRID_STEP = 2 ** 0.25
#: A candidate within this fraction of the best predicted time counts as equally fast;
#: among equally fast candidates the smallest (least memory) wins.
TIME_TOLERANCE = 0.02


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
    blocks : int, optional
        Number of chunks of the profiled array (default ``array_bytes / chunk_bytes``).
    terms : tuple of (str, int, float, float), optional
        Per operation: its name, tasks, how its task count grows with the number
        of chunks, and the compute seconds of those tasks (see :func:`task_terms`).
    held_bytes : float, optional
        Largest amount of task outputs waiting for their consumers at once.
    held_aligned_bytes : float, optional
        The same without the outputs only a downstream rechunk reads: what waits
        when the chunks already have the layout that rechunk wants (default
        ``held_bytes``).
    task_bytes : float, optional
        Largest output of one task.
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
    ``"min_chunk_bytes"``, ``"max_chunk_bytes"`` or ``"array"`` (the whole array is
    one chunk). ``fits`` is False when no candidate fits the budget; the choice is
    then the one with the smallest predicted peak.
    """

    chunk_bytes: float
    binding: str
    prediction: Prediction
    budget_bytes: float
    fits: bool


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def task_terms(
    keys: Sequence[Hashable],
    ndim: int,
    seconds: Sequence[float] | None = None,
    ops: dict | None = None,
) -> tuple[tuple[str, int, float, float], ...]:
    """How the tasks of a compute scale with the number of chunks, per operation.

    Tasks are grouped by layer (the name in their key). A layer whose keys vary
    along ``d`` block indices grows like ``n ** (d / ndim)`` when an array split
    along ``ndim`` dimensions gets ``n`` chunks: an elementwise layer like ``n``, a
    reduction's final step not at all, and a matmul's partial products (indexed
    by ``i, k, j``) like ``n ** 1.5``. Layers of the same operation and exponent
    are then merged (a tree reduction has several). Returns, per operation,
    ``(name, tasks, exponent, seconds)`` with the summed task ``seconds``. ``ops``
    names the operation of keys whose layer name hides it (a fused task).

    >>> keys = [("add-1", i, j) for i in range(4) for j in range(4)] + [("sum-2",)]
    >>> task_terms(keys, 2)
    (('add', 16, 1.0, 0.0), ('sum', 1, 0.0, 0.0))
    >>> mm = [("matmul-3", i, k, j) for i in range(3) for k in range(3) for j in range(3)]
    >>> task_terms(mm, 2, [0.5] * 27)
    (('matmul', 27, 1.5, 13.5),)
    """
    from dask.utils import key_split

    ops = ops or {}
    layers: dict = {}
    for pos, key in enumerate(keys):
        if isinstance(key, tuple) and key:
            name, index = key[0], key[1:]
        else:
            name, index = key, ()
        entry = layers.get(name)
        if entry is None:
            entry = layers[name] = [0, 0.0, [], ops.get(key)]
        entry[0] += 1
        if seconds is not None:
            entry[1] += float(seconds[pos])
        seen = entry[2]
        if len(seen) < len(index):
            seen.extend(set() for _ in range(len(index) - len(seen)))
        for s, i in zip(seen, index):
            s.add(i)
    ndim = max(1, ndim)
    ops: dict = {}
    for name, (count, secs, seen, op) in layers.items():
        e = sum(len(s) > 1 for s in seen) / ndim
        op = op or key_split(name)
        entry = ops.setdefault((op, e), [0, 0.0])
        entry[0] += count
        entry[1] += secs
    return tuple((op, count, e, secs) for (op, e), (count, secs) in ops.items())


def replay_memory(
    keys: Sequence[Hashable],
    t0: Sequence[float],
    t1: Sequence[float],
    nbytes: Sequence[float],
    is_output: Sequence[bool],
    dependencies: dict,
    skip: set | frozenset = frozenset(),
    *,
    mem: Sequence[int] | None = None,
    mem_bytes: Sequence[float] | None = None,
) -> tuple[float, float]:
    """Replay a compute's task outputs over time: what waited, and the largest output.

    A task's output lives from the task's end until its last consumer ends (the
    end of the compute for results): it waits for, or is being read by, its
    consumers. Returns the largest total of such outputs alive at once and the
    largest single output, in bytes. ``dependencies`` maps a key to the keys it
    reads; keys outside ``keys`` are ignored, and so are the outputs of the tasks
    in ``skip`` when adding up what waits.

    ``mem`` and ``mem_bytes`` name the memory behind each output and its size: a
    slice of a chunk is a view that keeps the whole chunk alive, so outputs that
    share memory count once, at the memory's size, for as long as any of them
    lives. Only memory some task of the compute produced counts so: a view of data
    the graph already held (``da.from_array`` of a NumPy array) counts at its own
    size, and ``mem`` 0 means unknown (its own memory).

    >>> keys = ["a", "b", "c"]
    >>> deps = {"c": {"a", "b"}}
    >>> replay_memory(keys, [0, 1, 2], [1, 2, 3], [10, 20, 5], [False, False, True], deps)
    (30.0, 20.0)

    Two small views of one 100-byte chunk, read until times 3 and 4:

    >>> keys = ["x", "v1", "v2", "s1", "s2"]
    >>> deps = {"v1": ["x"], "v2": ["x"], "s1": ["v1"], "s2": ["v2"]}
    >>> replay_memory(keys, [0, 1, 1, 2, 3], [1, 2, 2, 3, 4], [100, 10, 10, 0, 0],
    ...               [False, False, False, True, True], deps,
    ...               mem=[7, 7, 7, 8, 9], mem_bytes=[100, 100, 100, 0, 0])
    (100.0, 100.0)
    """
    n = len(keys)
    if n == 0:
        return 0.0, 0.0
    index = {k: i for i, k in enumerate(keys)}
    end = [float(v) for v in t1]
    stop = max(end)
    for i, key in enumerate(keys):
        for d in dependencies.get(key, ()):
            j = index.get(d)
            if j is not None and t1[i] > end[j]:
                end[j] = float(t1[i])
        if is_output[i]:
            end[i] = stop
    if mem is None or mem_bytes is None:
        mem, mem_bytes = [0] * n, nbytes
    # Memory a task produced: an output that is its own base.
    produced = {int(mem[i]) for i in range(n) if mem[i] and mem_bytes[i] == nbytes[i]}
    # Lifetimes per piece of memory: overlapping lifetimes of outputs that share it
    # are one lifetime (ids of freed memory can be reused later).
    spans: dict = {}
    for i in range(n):
        if int(mem[i]) in produced:
            ident, size = int(mem[i]), max(float(nbytes[i]), float(mem_bytes[i]))
        else:
            ident, size = ("own", i), float(nbytes[i])
        if end[i] > t1[i] and size and keys[i] not in skip:
            spans.setdefault(ident, []).append((float(t1[i]), end[i], size))
    events = []
    for group in spans.values():
        group.sort()
        start, stop_, size = group[0]
        for a, b, sz in group[1:]:
            if a <= stop_:
                stop_, size = max(stop_, b), max(size, sz)
            else:
                events += [(start, size), (stop_, -size)]
                start, stop_, size = a, b, sz
        events += [(start, size), (stop_, -size)]
    events.sort(key=lambda e: (e[0], e[1]))  # releases before allocations at a tie
    held = peak = 0.0
    for _, delta in events:
        held += delta
        peak = max(peak, held)
    return float(peak), float(max(nbytes))


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
            working = (
                o.peak_bytes
                - o.baseline_bytes
                - o.results_bytes
                - o.n_tasks * GRAPH_BYTES_PER_TASK
                - o.held_bytes
            )
            if working >= VISIBLE_BYTES and parallel * o.chunk_bytes * 4 >= VISIBLE_BYTES:
                measured_amp.append(working / (parallel * o.chunk_bytes))
    overhead = sum(overheads) / len(overheads) if overheads else DEFAULT_OVERHEAD_SECONDS
    if measured_amp:
        amplification = max(measured_amp)
    else:
        amplification = max([DEFAULT_AMPLIFICATION, *structural_amp])
    terms = _fit_terms(usable, fixed, seconds_per_byte)
    return WorkloadModel(
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
        held_exponent=_held_exponent(usable),
        blas_threads=max(1, int(blas_threads)),
        blas_penalty=max(1.0, float(blas_penalty)),
    )


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
            variable = min(t0, per_byte * c0) if g > 0 and c0 > 0 else 0.0
            a = t0 - variable
            w = variable / c0**g if variable else 0.0
        terms.append((count / n0**e, e, a, w, g))
    return tuple(terms)


def _held_exponent(observations: Sequence[Observation]) -> float:
    """How the waiting share of the array scales with the number of chunks.

    Fitted from the two observations with the most different numbers of chunks
    (both with something waiting), in the form :attr:`WorkloadModel.held_exponent`
    describes; 0 with fewer, and clamped to [-1, 0.5].

    >>> a = Observation(8e6, 8e4, 100, 1, 1, 0, 0, 0, 2, blocks=100, held_bytes=4e5)
    >>> b = Observation(8e6, 5e5, 16, 1, 1, 0, 0, 0, 2, blocks=16, held_bytes=1e6)
    >>> round(_held_exponent([a, b]), 2)  # -ln(1 - h): 0.051 at 100 chunks, 0.134 at 16
    -0.52
    """
    seen = [o for o in observations if o.held_bytes > 0 and o.n_chunks > 1]
    if len(seen) < 2:
        return 0.0
    lo, hi = min(seen, key=lambda o: o.n_chunks), max(seen, key=lambda o: o.n_chunks)
    if hi.n_chunks <= lo.n_chunks:
        return 0.0
    h_lo, h_hi = lo.held_bytes / lo.array_bytes, hi.held_bytes / hi.array_bytes
    if _saturating(observations):
        ratio = math.log1p(-h_hi) / math.log1p(-h_lo)
    else:
        ratio = h_hi / h_lo
    return _clamp(math.log(ratio) / math.log(hi.n_chunks / lo.n_chunks), -1.0, 0.5)


def _saturating(observations: Sequence[Observation]) -> bool:
    """Whether every waiting share seen is below the whole array (see held_exponent)."""
    return all(o.held_bytes < 0.999 * o.array_bytes for o in observations)


def held_share(model: WorkloadModel, n_chunks: int, aligned: bool = False) -> float:
    """The share of the array that waits for other tasks, for ``n_chunks`` chunks.

    >>> m = WorkloadModel(1, 0, 0, 2, 0, 0, 2, 2, held_fraction=0.5, held_blocks=100,
    ...                   held_max=0.8, held_exponent=-0.5)
    >>> [round(held_share(m, n), 2) for n in (1, 25, 100, 400)]
    [0.0, 0.72, 0.49, 0.29]
    """
    n_chunks = max(1, n_chunks)
    held = model.held_aligned_fraction if aligned else model.held_fraction
    if model.held_exponent and held > 0:
        scale = (n_chunks / max(1, model.held_blocks)) ** model.held_exponent
        if held < 0.999 and model.held_max < 0.999:
            held = min(1 - (1 - held) ** scale, max(held, model.held_max))
        else:
            held = min(held * scale, max(held, model.held_max))
    # Data waits for other chunks' tasks; with one chunk there is nothing to wait for.
    return held * (1 - 1 / n_chunks)


def _split_task_time(observations: Sequence[Observation]) -> tuple[float, float]:
    """Split task compute time into a fixed cost per task and a cost per byte.

    ``task_seconds = fixed * n_tasks + per_byte * array_bytes`` is fitted by least
    squares when the observations used different chunk sizes; with one chunk size
    the per-byte cost is taken as :data:`PRIOR_SECONDS_PER_BYTE` (or less, if the
    measured time is less) and the rest is fixed cost.

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
    peak = (
        baseline
        + (model.results_fraction * array_bytes + n_tasks * GRAPH_BYTES_PER_TASK
           if processes == 1 else 0.0)  # on a cluster the client holds those
        + held * array_bytes / processes
        + per_process * model.amplification * chunk_bytes
    )
    return Prediction(
        chunk_bytes=chunk_bytes,
        n_chunks=n_chunks,
        n_tasks=n_tasks,
        seconds=seconds,
        peak_bytes=peak,
        overhead_fraction=per_task / seconds if seconds > 0 else 0.0,
    )


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
) -> Choice:
    """Choose the chunk size, in bytes, for an array of ``array_bytes``.

    Candidates are spaced by :data:`GRID_STEP` in ``[min_chunk_bytes,
    max_chunk_bytes]``. Among those whose predicted peak fits ``budget_bytes``, the
    ones within :data:`TIME_TOLERANCE` of the fastest are equally good; of those,
    take the smallest whose overhead fraction is at most ``overhead_target`` (the
    smallest of all, if none is). When nothing fits, take the size with the
    smallest predicted peak. ``realize`` maps a candidate size to the chunking a
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
                    processes)
        targets[id(p)] = c
        preds.append(p)
    fitting = [p for p in preds if p.peak_bytes <= budget_bytes]
    if not fitting:
        best = min(preds, key=lambda p: p.peak_bytes)
        return Choice(targets[id(best)], "memory", best, budget_bytes, False)

    fastest = min(p.seconds for p in fitting)
    fast = [p for p in fitting if p.seconds <= fastest * (1 + TIME_TOLERANCE)]
    cheap = [p for p in fast if p.overhead_fraction <= overhead_target]
    chosen = min(cheap or fast, key=lambda p: p.chunk_bytes)

    # Name the constraint that decided the size.
    i = next(k for k, p in enumerate(preds) if p is chosen)
    larger, smaller = preds[i + 1:], preds[:i]
    conc = concurrency or model.concurrency
    if chosen.n_chunks == 1:
        binding = "array"
    elif any(p.peak_bytes > budget_bytes and p.seconds < chosen.seconds * (1 - TIME_TOLERANCE)
             for p in larger):
        binding = "memory"
    elif not larger:
        binding = "max_chunk_bytes"
    elif not smaller:
        binding = "min_chunk_bytes"
    elif cheap and smaller[-1] in fast and smaller[-1].overhead_fraction > overhead_target:
        binding = "overhead"
    elif chosen.n_chunks <= 4 * conc and larger[0].seconds > chosen.seconds:
        binding = "parallelism"
    else:
        binding = "speed"
    return Choice(targets[id(chosen)], binding, chosen, budget_bytes, True)


@dataclass(frozen=True)
class Saturation:
    """The ``distributed.scheduler.worker-saturation`` to run a chunking with, and why.

    On a ``dask.distributed`` cluster with queuing off (saturation ``inf``) every
    root task (a task that creates a chunk) is sent to a worker at once, and a worker
    may create chunks faster than their consumers, which wait for data from other
    workers, use them. With a finite saturation ``s`` the scheduler sends a worker
    a root task only while fewer than ``ceil(s * nthreads)`` tasks are processing
    there. ``value`` is the largest setting
    whose predicted peak fits the budget (``inf`` when even every root output of a
    worker fits, or when no output waits for other tasks, so queuing would only add
    round trips). ``reason`` is ``"nothing-waits"``, ``"fits"`` or ``"memory"``;
    ``peak_bytes`` is one worker's predicted peak with ``value`` and
    ``unqueued_peak_bytes`` its upper bound with queuing off.
    """

    value: float
    reason: str
    peak_bytes: float
    unqueued_peak_bytes: float


def worker_saturation(
    model: WorkloadModel,
    array_bytes: float,
    chunk_bytes: float,
    *,
    budget_bytes: float,
    threads_per_worker: int,
    workers: int,
    n_chunks: int | None = None,
    baseline_bytes: float | None = None,
    aligned: bool = False,
) -> Saturation:
    """The worker saturation that keeps root tasks from outrunning a worker's memory.

    One worker's peak with queued roots is :func:`predict`'s (its running tasks, its
    share of what waits, its baseline) plus, for every root task it may hold beyond
    its threads, the finished chunk and what it lets run early: the outputs of its
    consumers and the copies that consumers on other workers fetch, taken as one
    task's working set (``amplification`` chunks; measured in a transpose on two
    workers: 2.7 chunks per root held ahead). With queuing off a worker may, at
    worst, create all of its ``n_chunks / workers`` chunks before their consumers
    run.

    >>> m = WorkloadModel(1, 1e-9, 1e-4, 2.0, 0.0, 0.0, 2, 2, held_fraction=0.5)
    >>> s = worker_saturation(m, 1e9, 1e7, budget_bytes=4e8, threads_per_worker=1,
    ...                       workers=2)
    >>> s.reason, s.value, s.peak_bytes <= 4e8 < s.unqueued_peak_bytes
    ('memory', 5.0, True)
    >>> worker_saturation(m, 1e9, 1e7, budget_bytes=4e9, threads_per_worker=1,
    ...                   workers=2).value
    inf
    """
    threads = max(1, int(threads_per_worker))
    workers = max(1, int(workers))
    chunk_bytes = min(chunk_bytes, max(array_bytes, 1.0))
    if n_chunks is None:
        n_chunks = math.ceil(array_bytes / chunk_bytes)
    n_chunks = max(1, int(n_chunks))
    pred = predict(model, array_bytes, chunk_bytes, threads * workers, baseline_bytes,
                   aligned=aligned, n_chunks=n_chunks, processes=workers)
    running = min(threads, math.ceil(n_chunks / workers))
    spare = max(0, math.ceil(n_chunks / workers) - running)  # roots that could run ahead
    per_root = chunk_bytes * (1 + model.amplification)  # the chunk, and what it feeds
    unqueued = pred.peak_bytes + spare * per_root
    if held_share(model, n_chunks, aligned) * n_chunks < 1:
        return Saturation(math.inf, "nothing-waits", pred.peak_bytes, pred.peak_bytes)
    if unqueued <= budget_bytes:
        return Saturation(math.inf, "fits", unqueued, unqueued)
    ahead = max(0, int((budget_bytes - pred.peak_bytes) // per_root))
    ahead = min(ahead, spare)
    return Saturation((threads + ahead) / threads, "memory",
                      pred.peak_bytes + ahead * per_root, unqueued)


def water_level(demands: Sequence[int], budget: int) -> int | None:
    """The largest per-holder cap that fits ``budget`` items among ``demands``.

    Each holder keeps ``min(demand, cap)`` items. Holders that want less than an
    equal share keep all they want; the rest share what is left equally. None when
    every demand fits (no cap is needed).

    >>> water_level([10, 10, 1000], 300)  # the two small ones keep theirs
    280
    >>> water_level([10, 10], 300) is None
    True
    >>> water_level([500, 500, 500], 300)
    100
    """
    if sum(demands) <= budget:
        return None
    remaining, n = budget, len(demands)
    for i, demand in enumerate(sorted(demands)):
        share = remaining // (n - i)
        if demand > share:
            return share
        remaining -= demand
    return None  # pragma: no cover - the sum exceeds the budget: a demand exceeds its share
