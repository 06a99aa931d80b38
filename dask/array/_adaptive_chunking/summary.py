"""What a profiled compute's task records say, reduced to a few numbers.

Two pure reductions feed an :class:`.model.Observation`: how the tasks of each
operation scale with the number of chunks (:func:`task_terms`), and how many task
outputs waited for their consumers at once (:func:`replay_memory`). They read keys,
times and sizes only, so they run the same on a local record or one a cluster
worker sent.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

__all__ = ["task_terms", "replay_memory"]


def task_terms(
    keys: Sequence[Hashable],
    ndim: int,
    seconds: Sequence[float] | None = None,
    ops: dict | Callable[[Hashable], str | None] | None = None,
) -> tuple[tuple[str, int, float, float], ...]:
    """How the tasks of a compute scale with the number of chunks, per operation.

    Tasks are grouped by layer (the name in their key). A layer whose keys vary
    along ``d`` block indices grows like ``n ** (d / ndim)`` when an array split
    along ``ndim`` dimensions gets ``n`` chunks: an elementwise layer like ``n``, a
    reduction's final step not at all, and a matmul's partial products (indexed
    by ``i, k, j``) like ``n ** 1.5``. Layers of the same operation and exponent
    are then merged (a tree reduction has several). Returns, per operation,
    ``(name, tasks, exponent, seconds)`` with the summed task ``seconds``. ``ops``
    names the operation of keys whose layer name hides it (a fused task): a dict,
    or a function of a key returning the name or None. A layer's first key names
    its operation, so a function is called once a layer.

    >>> keys = [("add-1", i, j) for i in range(4) for j in range(4)] + [("sum-2",)]
    >>> task_terms(keys, 2)
    (('add', 16, 1.0, 0.0), ('sum', 1, 0.0, 0.0))
    >>> mm = [("matmul-3", i, k, j) for i in range(3) for k in range(3) for j in range(3)]
    >>> task_terms(mm, 2, [0.5] * 27)
    (('matmul', 27, 1.5, 13.5),)
    """
    from dask.utils import key_split

    op_of = ops if callable(ops) else (ops or {}).get
    layers: dict = {}  # name -> positions of its keys: one pass, then a layer at a time
    for pos, key in enumerate(keys):
        name = key[0] if isinstance(key, tuple) and key else key
        group = layers.get(name)
        if group is None:
            group = layers[name] = []
        group.append(pos)
    if seconds is not None:
        seconds = np.asarray(seconds, dtype=float)
    ndim = max(1, ndim)
    merged: dict = {}
    for name, positions in layers.items():
        indexed = [p for p in positions if isinstance(keys[p], tuple)]
        width = max((len(keys[p]) for p in indexed), default=1)
        # The positions of the keys' block index whose values vary (compared one
        # position at a time, not an index tuple per key: thousands of tuples
        # would wake the garbage collector).
        varying = sum(_varies(keys, indexed, d) for d in range(1, width))
        e = varying / ndim
        op = op_of(keys[positions[0]]) or key_split(name)
        entry = merged.setdefault((op, e), [0, 0.0])
        entry[0] += len(positions)
        if seconds is not None:
            entry[1] += float(seconds[positions].sum())
    return tuple((op, count, e, secs) for (op, e), (count, secs) in merged.items())


def _varies(keys: Sequence, positions: list[int], d: int) -> bool:
    """Whether the keys at ``positions`` that have a position ``d`` differ there
    (stops at the first that differs: block indices usually vary at once)."""
    values = (keys[p][d] for p in positions if len(keys[p]) > d)
    first = next(values, None)
    return any(v != first for v in values)


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
    # In NumPy, as columns: this runs after every profiled compute (3.4 us a task
    # as a Python loop over tasks and their spans).
    t1 = np.asarray(t1, dtype=float)
    nbytes = np.asarray(nbytes, dtype=float)
    position = {k: i for i, k in enumerate(keys)}.get
    reads = [dependencies.get(key, ()) for key in keys]
    # The edges as two int arrays (flat comprehensions, no tuple per edge for the
    # garbage collector to track); -1 marks a key outside ``keys``.
    read = np.array([position(d, -1) for deps in reads for d in deps], dtype=np.intp)
    reader = np.repeat(np.arange(n), np.fromiter(map(len, reads), dtype=np.intp, count=n))
    end = t1.copy()  # when the last reader of each output ends
    if len(read):
        inside = read >= 0
        np.maximum.at(end, read[inside], t1[reader[inside]])
    end[np.asarray(is_output, dtype=bool)] = t1.max()
    if mem is None or mem_bytes is None:
        ident, size = np.arange(n), nbytes  # each output its own memory
    else:
        mem = np.asarray(mem, dtype=np.int64)
        mem_bytes = np.asarray(mem_bytes, dtype=float)
        # Memory a task produced: an output that is its own base.
        produced = np.unique(mem[(mem != 0) & (mem_bytes == nbytes)])
        shared = np.isin(mem, produced) & (mem != 0)
        size = np.where(shared, np.maximum(nbytes, mem_bytes), nbytes)
        # Shared memory numbered 0..k-1, every other output a number of its own.
        codes = np.unique(np.where(shared, mem, 0), return_inverse=True)[1].reshape(-1)
        ident = np.where(shared, codes, codes.max() + 1 + np.arange(n))
    keep = (end > t1) & (size > 0)
    if skip:
        keep &= np.fromiter((k not in skip for k in keys), dtype=bool, count=n)
    return _peak_of_spans(ident[keep], t1[keep], end[keep], size[keep]), float(nbytes.max())


def _peak_of_spans(ident: np.ndarray, start: np.ndarray, stop: np.ndarray,
                   size: np.ndarray) -> float:
    """The largest total ``size`` alive at once; spans of one ``ident`` that overlap
    are one span of their largest size (ids of freed memory can be reused later).

    >>> ids, sizes = np.array([1, 1, 2]), np.array([10.0, 20.0, 5.0])
    >>> _peak_of_spans(ids, np.array([0.0, 1.0, 1.5]), np.array([2.0, 3.0, 4.0]), sizes)
    25.0
    """
    if not len(ident):
        return 0.0
    order = np.lexsort((start, ident))
    ident, start, stop, size = ident[order], start[order], stop[order], size[order]
    # Shift each ident's times past the one before, so that one running maximum of
    # the stops merges overlapping spans without crossing from one ident to the next.
    origin = start.min()
    group = np.cumsum(np.r_[0, ident[1:] != ident[:-1]])
    shift = group * (stop.max() - origin + 1.0)
    a, b = start - origin + shift, stop - origin + shift
    reach = np.maximum.accumulate(b)
    first = np.flatnonzero(np.r_[True, a[1:] > reach[:-1]])  # spans that begin a merge
    span_start = start[first]
    span_stop = np.maximum.reduceat(stop, first)
    span_size = np.maximum.reduceat(size, first)
    times = np.concatenate([span_start, span_stop])
    deltas = np.concatenate([span_size, -span_size])
    held = np.cumsum(deltas[np.lexsort((deltas, times))])  # releases first at a tie
    return float(max(0.0, held.max()))
