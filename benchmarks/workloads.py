"""The recommender benchmark's workloads and the code that times one of them.

Every workload is float64 data from ``da.random.random(shape, chunks=c)`` and one
expression on it. :func:`run` builds a workload with some chunking, computes it
``repeats`` times and returns each run's wall time and peak resident memory (the
kernel's high-water mark, reset before each run), after one untimed run of the same
compute. ``bench_recommend.py`` calls it in a fresh process per measurement.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import dask
import dask.array as da

MiB = 2**20


def _w1(x):
    return (x + 1).sum()


def _w2(x):
    return (x + x.T).mean(axis=0)


def _w3(x):
    return (x @ x.T).sum()


def _w4(x):
    return x.rechunk({0: "auto", 1: -1}).sum()


def _double(b):
    return b * 2


def _w5(x):
    return x.map_overlap(_double, depth=2, boundary="reflect").sum()


def _w6(x):
    return (x * 2).sum()


#: name -> (full shape, expression, description)
WORKLOADS: dict[str, tuple[tuple[int, int], Callable, str]] = {
    "W1": ((20000, 20000), _w1, "(x + 1).sum()"),
    "W2": ((12000, 12000), _w2, "(x + x.T).mean(axis=0)"),
    "W3": ((6000, 6000), _w3, "(x @ x.T).sum()"),
    "W4": ((12000, 12000), _w4, 'x.rechunk({0: "auto", 1: -1}).sum()'),
    "W5": ((10000, 10000), _w5,
           'x.map_overlap(lambda b: b * 2, depth=2, boundary="reflect").sum()'),
    "W6": ((4000, 4000), _w6, "(x * 2).sum()"),
}


def _read_hwm() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _trim_heap() -> None:
    """Hand the C allocator's free heap back to the system (glibc), so that a
    compute's high-water mark starts from the memory in use, not from what the
    compute before it left resident."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def build(name: str, chunks, shape=None):
    """The workload ``name`` on random data of ``shape`` (default: its full shape)."""
    full, expr, _ = WORKLOADS[name]
    x = da.random.random(shape or full, chunks=chunks)
    return x, expr(x)


def run(name: str, chunks, *, scheduler: str, repeats: int, chunk_size=None) -> dict:
    """Time the workload; ``chunk_size`` sets ``array.chunk-size`` (for "auto")."""
    settings = {"array.chunk-size": chunk_size} if chunk_size else {}
    times, peaks = [], []
    with dask.config.set(settings):
        x, y = build(name, chunks)
        # One untimed run first: it starts the thread pool and grows the heap, whose
        # first-touch page faults otherwise make the first timed run an outlier.
        y.compute(scheduler=scheduler)
        for _ in range(repeats):
            gc.collect()
            _reset_hwm()
            start = time.perf_counter()
            y.compute(scheduler=scheduler)
            times.append(time.perf_counter() - start)
            peaks.append(_read_hwm())
    return {
        "chunks": [list(c[:1]) + ([len(c)] if len(c) > 1 else []) for c in x.chunks],
        "chunksize": list(x.chunksize),
        "chunk_mib": x.dtype.itemsize * _prod(x.chunksize) / MiB,
        "numblocks": list(x.numblocks),
        "times": times,
        "peaks": peaks,
    }


def _prod(xs) -> int:
    out = 1
    for v in xs:
        out *= v
    return out
