"""The record of one measured task, and its codecs.

A record travels as a plain tuple while tasks run (building a tuple costs the least
of anything in the per-task path); this module alone knows its field order
(:func:`local_record`, the ``R_*`` indices). When a compute ends its tuples become
a :class:`RecordBatch` of columns, as do the records a distributed scheduler sends
back (:func:`batch_from_cluster`), so one fold serves both.
"""

from __future__ import annotations

import math

import numpy as np

MiB = 2**20

__all__ = [
    "RECORD_DTYPE", "RecordBatch", "local_record", "batch_from_records",
    "batch_from_cluster", "max_overlap", "record_failed", "cluster_record",
    "cluster_failed", "single", "fields",
]



# Record layout: plain tuples keep the per-task cost near a microsecond. Only this
# module reads them by position; the hot path builds them with local_record. The
# numeric fields come first, in RECORD_DTYPE's order, so that a compute's tuples
# become columns in one pass of NumPy's C code.
(
    R_T0, R_T1, R_RSS0, R_RSS1, R_NBYTES, R_LOGICAL, R_WORKER, R_TAG, R_OUT, R_FAILED,
    R_MEM, R_MEMBYTES, R_KEY, R_SHAPE, R_DTYPE,
) = range(15)
#: R_NBYTES is the memory the output holds (``dask.sizeof``); R_LOGICAL its logical size
#: (``.nbytes``: a broadcast view of one element holds 8 bytes but is a chunk of many).
#: R_MEM identifies the memory behind the output (a view's base array; 0 when unknown)
#: and R_MEMBYTES is its size: a small slice keeps its whole base alive.


def local_record(key, t0, t1, rss0, rss1, nbytes, shape, dtype, worker, tag, out, failed,
                 logical, mem, membytes) -> tuple:
    """One task's record as the hot path keeps it (a plain tuple, see the ``R_*`` order).

    ``t0``/``t1`` are ``perf_counter`` seconds, ``rss0``/``rss1`` process memory in
    bytes, ``worker`` the thread ident (or process id), ``tag`` the index of the
    task's set of profiles and ``out`` whether the compute returns its output.
    """
    return (t0, t1, rss0, rss1, nbytes, logical, worker, tag, out, failed, mem, membytes,
            key, shape, dtype)


def record_failed(record: tuple) -> bool:
    """Whether the task of a :func:`local_record` raised."""
    return record[R_FAILED]


def cluster_record(key, t0, t1, nbytes: int, worker: str, thread: int, profiles: tuple,
                   failed: bool) -> tuple:
    """One task's record as the distributed scheduler keeps it until it is drained.

    ``t0``/``t1`` come from the worker's ``startstops`` (seconds), ``profiles`` are
    the ids of the profiles the task works for.
    """
    return (key, t0, t1, nbytes, worker, thread, profiles, failed)


def cluster_failed(record: tuple) -> bool:
    """Whether the task of a :func:`cluster_record` failed."""
    return record[7]


#: Numeric columns of a RecordBatch.
RECORD_DTYPE = np.dtype(
    [
        ("t0", "f8"), ("t1", "f8"), ("rss0", "f8"), ("rss1", "f8"),
        ("nbytes", "i8"), ("logical", "i8"), ("worker", "i8"), ("tag", "i8"),
        ("out", "?"), ("failed", "?"), ("mem", "i8"), ("membytes", "i8"),
    ]
)


class RecordBatch:
    """Task records as columns: a structured array plus keys, shapes and dtypes.

    Columns keep a compute's records out of the garbage collector's way: a tuple
    per task would add thousands of tracked objects, and the extra collections of
    a large graph's heap cost more than the measurement itself.
    """

    __slots__ = ("data", "keys", "shapes", "dtypes")

    def __init__(self, data: np.ndarray, keys: list, shapes: list, dtypes: list):
        self.data, self.keys, self.shapes, self.dtypes = data, keys, shapes, dtypes

    def __len__(self) -> int:
        return len(self.data)

    def take(self, index) -> RecordBatch:
        """The records selected by an index array or boolean mask."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return RecordBatch(
            self.data[index],
            [self.keys[i] for i in index],
            [self.shapes[i] for i in index],
            [self.dtypes[i] for i in index],
        )


_MASK = 0x7FFFFFFFFFFFFFFF  # ids and idents above 2**63 (never on 64-bit Linux) fit i8


def batch_from_records(records: list[tuple]) -> RecordBatch:
    """Turn record tuples (see the ``R_*`` indices) into a :class:`RecordBatch`.

    >>> b = batch_from_records([local_record(("x", 0), 0.0, 0.5, 0, 0, 80, (10,), None,
    ...                                      1, 0, True, False, 80, 0, 80)])
    >>> b.keys, b.shapes, float(b.data["t1"][0]), bool(b.data["out"][0])
    ([('x', 0)], [(10,)], 0.5, True)
    """
    if not records:
        return RecordBatch(np.empty(0, RECORD_DTYPE), [], [], [])
    # Transposed in C, then a column at a time: 3.0 against 5.8 ms for 5,359
    # records as one tuple per row (NumPy converts each field of each row alike).
    columns = list(zip(*records))
    data = np.empty(len(records), RECORD_DTYPE)
    for i, name in enumerate(RECORD_DTYPE.names):
        try:
            data[name] = columns[i]
        except OverflowError:  # an id or ident above 2**63
            data[name] = [v & _MASK for v in columns[i]]
    shapes: dict = {}  # one tuple per distinct shape, not one per record
    return RecordBatch(
        data,
        list(columns[R_KEY]),
        [shapes.setdefault(s, s) if type(s) is tuple else s for s in columns[R_SHAPE]],
        list(columns[R_DTYPE]),
    )


def max_overlap(t0: np.ndarray, t1: np.ndarray) -> int:
    """Largest number of ``[t0, t1]`` intervals that overlap at one time.

    >>> max_overlap(np.array([0.0, 1.0, 2.0]), np.array([1.5, 3.0, 4.0]))
    2
    """
    if len(t0) == 0:
        return 0
    starts = np.sort(t0)
    stops = np.sort(t1)
    running = np.arange(1, len(starts) + 1) - np.searchsorted(stops, starts, side="right")
    return int(running.max())


def batch_from_cluster(records: list[tuple], outputs: set, as_key=lambda k: k
                       ) -> tuple[RecordBatch, list[tuple]]:
    """A :class:`RecordBatch` of :func:`cluster_record` tuples, and each tag's profile ids.

    A cluster reports neither memory around a task nor shapes: those columns are
    zero, and the output's bytes stand for its logical and held size. ``outputs``
    are the keys the compute returns; ``as_key`` turns the keys messages carry
    (lists for tuples) back into Dask's.
    """
    groups: dict[tuple, int] = {}
    tuples = []
    for key, t0, t1, nbytes, worker, thread, profiles, failed in records:
        key = as_key(key)
        tag = groups.setdefault(tuple(profiles), len(groups))
        tuples.append(local_record(
            key, t0, t1, 0, 0, nbytes, None, None, hash((worker, thread)) & _MASK, tag,
            key in outputs, failed, nbytes, 0, nbytes,
        ))
    return batch_from_records(tuples), list(groups)


def single(key, shape, itemsize: int, t0: float, seconds: float, rss0: float, rss1: float,
           logical: int, nbytes: int | None, worker, failed: bool) -> RecordBatch:
    """A batch of one record given field by field (``ChunkProfiler.record_chunk``).

    ``nbytes`` (the memory the output holds) defaults to ``logical``; a worker that
    is no int counts as 0; the dtype is only known by its ``itemsize``.

    >>> b = single("k", (10,), 8, 0.0, 0.5, 0.0, 0.0, 80, None, None, False)
    >>> float(b.data["t1"][0]), int(b.data["nbytes"][0])
    (0.5, 80)
    """
    data = np.zeros(1, RECORD_DTYPE)
    row = data[0]
    # As Python floats: a NumPy float32 of seconds would round the sum to float32.
    row["t0"], row["t1"] = float(t0), float(t0) + float(seconds)
    row["rss0"], row["rss1"] = rss0, rss1
    row["nbytes"] = logical if nbytes is None else nbytes
    row["logical"] = logical
    row["worker"] = worker & 0x7FFFFFFFFFFFFFFF if isinstance(worker, (int, np.integer)) else 0
    row["failed"] = failed
    dtype = np.dtype(f"V{itemsize}") if itemsize else None
    return RecordBatch(data, [key], [shape], [dtype])


def fields(sampled) -> dict:
    """The fields of ``ChunkMemoryMetric`` for one sampled record (``aggregate.SampledRecord``):
    times in milliseconds, memory in MiB, sizes in bytes."""
    row, shape = sampled.row, sampled.shape
    if isinstance(shape, tuple) and all(isinstance(n, (int, np.integer)) for n in shape):
        shape = tuple(int(n) for n in shape)
        elements = math.prod(shape)
    else:
        shape, elements = (), 0
    itemsize = getattr(sampled.dtype, "itemsize", 0)
    return dict(
        chunk_key=sampled.key,
        chunk_shape=shape,
        element_count=elements,
        dtype_size=int(itemsize) if isinstance(itemsize, (int, np.integer)) else 0,
        estimated_bytes=int(row["logical"]),
        output_bytes=int(row["nbytes"]),
        compute_time_ms=max(0.0, float(row["t1"] - row["t0"]) * 1e3),
        memory_peak_before_mb=float(row["rss0"]) / MiB,
        memory_peak_after_mb=float(row["rss1"]) / MiB,
        worker=int(row["worker"]),
        start_time=float(row["t0"]),
        failed=bool(row["failed"]),
    )
