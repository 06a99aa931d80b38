"""How many root tasks a ``dask.distributed`` worker may hold ahead of its threads.

A cluster setting rather than a chunk size: with queuing off a worker can create
chunks faster than their consumers use them, so a chunking that fits one machine's
budget can still run a worker out of memory. This module sizes
``distributed.scheduler.worker-saturation`` from the fitted model (pure functions,
like :mod:`.model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dask.array._adaptive_chunking import model as _model

__all__ = ["Saturation", "worker_saturation"]


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
    model: _model.WorkloadModel,
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

    >>> from dask.array._adaptive_chunking.model import WorkloadModel
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
    pred = _model.predict(model, array_bytes, chunk_bytes, threads * workers, baseline_bytes,
                   aligned=aligned, n_chunks=n_chunks, processes=workers)
    running = min(threads, math.ceil(n_chunks / workers))
    spare = max(0, math.ceil(n_chunks / workers) - running)  # roots that could run ahead
    per_root = chunk_bytes * (1 + model.amplification)  # the chunk, and what it feeds
    unqueued = pred.peak_bytes + spare * per_root
    if _model.held_share(model, n_chunks, aligned) * n_chunks < 1:
        return Saturation(math.inf, "nothing-waits", pred.peak_bytes, pred.peak_bytes)
    if unqueued <= budget_bytes:
        return Saturation(math.inf, "fits", unqueued, unqueued)
    ahead = max(0, int((budget_bytes - pred.peak_bytes) // per_root))
    ahead = min(ahead, spare)
    return Saturation((threads + ahead) / threads, "memory",
                      pred.peak_bytes + ahead * per_root, unqueued)
