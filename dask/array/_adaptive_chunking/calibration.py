"""Facts about this machine, measured once per process when a model first needs them.

The cost of touching fresh pages (:func:`fault_seconds_per_byte`) and how NumPy's
BLAS uses the cores (:func:`blas_profile`): rates that a profile measured at one
chunk size cannot show, but that change the time of other sizes.
"""

from __future__ import annotations

import os
import threading
from time import perf_counter

import numpy as np

__all__ = ["fault_seconds_per_byte", "blas_profile"]


_fault_cost: float | None = None
_calibrating = threading.Lock()  # one calibration at a time, each once per process


def fault_seconds_per_byte() -> float:
    """Seconds per byte to touch freshly mapped pages, measured once per process.

    Large NumPy arrays are served with fresh pages that fault on first touch; the
    difference between filling a fresh 32 MiB array and filling it again is that
    cost (median of three, about 15 ms in all).
    """
    global _fault_cost
    with _calibrating:
        if _fault_cost is None:
            _fault_cost = _measure_fault_cost()
    return _fault_cost


def _measure_fault_cost() -> float:
    n = 32 * 2**20
    costs = []
    for _ in range(3):
        t0 = perf_counter()
        a = np.empty(n // 8)
        a.fill(1.0)
        t1 = perf_counter()
        a.fill(2.0)
        t2 = perf_counter()
        del a
        costs.append(max(0.0, (t1 - t0) - (t2 - t1)) / n)
    return sorted(costs)[1]


_blas: tuple[int, float] | None = None


def blas_profile() -> tuple[int, float]:
    """How NumPy's BLAS uses the cores, measured once per process (about 0.2 s).

    Returns the cores one large matrix product keeps busy (process CPU time over
    wall time of two 1024 x 1024 products; 1 for a single-threaded BLAS) and how
    much slower two products run when started at once from two threads than one
    after the other: a multithreaded BLAS called from several threads
    oversubscribes the cores, which is why Dask's docs advise one BLAS thread per
    worker thread.
    """
    global _blas
    with _calibrating:
        if _blas is None:
            _blas = _measure_blas()
    return _blas


def _measure_blas() -> tuple[int, float]:
    from time import process_time

    a = np.ones((1024, 1024))
    a @ a  # warm up the thread pool
    cpu, wall = process_time(), perf_counter()
    for _ in range(2):
        a @ a
    cpu, wall = process_time() - cpu, perf_counter() - wall
    threads = max(1, min(os.cpu_count() or 1, round(cpu / wall))) if wall > 0 else 1

    def products():
        for _ in range(2):
            a @ a

    start = perf_counter()
    products()
    products()
    sequential = perf_counter() - start
    workers = [threading.Thread(target=products) for _ in range(2)]
    start = perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    concurrent = perf_counter() - start
    penalty = max(1.0, concurrent / sequential) if sequential > 0 else 1.0
    return threads, penalty
