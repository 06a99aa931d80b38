"""The thread-safe aggregate behind :class:`~dask.array.adaptive_chunking.ChunkProfiler`.

Counts, sums and extremes are exact and cost O(1) per record; raw records are kept
only as a uniform random sample (:class:`Reservoir`, Algorithm R), so memory stays
bounded however many tasks are recorded; per-compute summaries
(:class:`~.model.Observation`) keep the newest 256. The engine may hold the sample
below its configured size (:meth:`Aggregate.set_limit`) to keep all profiles within
``max-memory``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking.records import RECORD_DTYPE, RecordBatch

__all__ = [
    "RECORD_COST", "OBSERVATION_COST", "OBSERVATION_TERM_COST", "PROFILE_COST",
    "Reservoir", "SampledRecord", "Aggregate", "observation_cost",
]

MiB = 2**20

#: Estimated memory of one sampled record (its row, key and list slots) and of one
#: per-compute observation; ``benchmarks/bench_memory.py`` checks them.
RECORD_COST = 256
OBSERVATION_COST = 1000
OBSERVATION_TERM_COST = 300
#: Estimated memory of one profile before it holds records or observations.
PROFILE_COST = 4096
#: Per-compute summaries an aggregate keeps (the newest).
MAX_OBSERVATIONS = 256


def observation_cost(o: _model.Observation) -> int:
    """Estimated bytes one observation holds (its terms dominate for long graphs)."""
    return OBSERVATION_COST + OBSERVATION_TERM_COST * len(o.terms or ())


class SampledRecord(NamedTuple):
    """One record of the sample: its numeric row (``RECORD_DTYPE``), key, output shape
    and dtype, and the object it was given as, if any (``ChunkProfiler.record_chunk``
    keeps the user's metric exactly)."""

    row: np.void
    key: Any
    shape: Any
    dtype: Any
    given: Any


class Reservoir:
    """A uniform random sample of at most ``cap`` records, kept as columns."""

    def __init__(self) -> None:
        self.data = np.empty(0, RECORD_DTYPE)
        self.keys: list = []
        self.shapes: list = []
        self.dtypes: list = []
        self.seen = 0
        self._rng: np.random.Generator | None = None
        self.given: dict[int, Any] = {}  # slot -> the exact object it was given as

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def rng(self) -> np.random.Generator:
        """The sample's random numbers, made when first needed: a generator takes more
        memory than an empty profile, and most profiles never thin their sample."""
        if self._rng is None:
            self._rng = np.random.default_rng(0)
        return self._rng

    def add(self, batch: RecordBatch, cap: int) -> None:
        """Algorithm R over the stream: each record seen is kept with chance cap/seen.

        A sample that was thinned (or filled under a lower cap) keeps its size: to
        grow it again would favour the newest records.
        """
        if self.seen > len(self.keys):
            cap = min(cap, len(self.keys))
        n = len(batch)
        room = max(0, min(cap - len(self.keys), n))
        if room:
            self._append(batch, room, cap)
        if room < n and cap > 0:
            seen = self.seen + np.arange(room + 1, n + 1)
            slots = (self.rng.random(n - room) * seen).astype(np.int64)
            for i in np.flatnonzero(slots < cap):
                j, src = int(slots[i]), room + int(i)
                self.data[j] = batch.data[src]
                self.keys[j] = batch.keys[src]
                self.shapes[j] = batch.shapes[src]
                self.dtypes[j] = batch.dtypes[src]
                self.given.pop(j, None)
        self.seen += n

    def _append(self, batch: RecordBatch, room: int, cap: int) -> None:
        size = len(self.keys)
        if size + room > len(self.data):  # grow geometrically, never past cap
            grown = np.empty(min(cap, max(2 * len(self.data), size + room, 16)), RECORD_DTYPE)
            grown[:size] = self.data[:size]
            self.data = grown
        self.data[size:size + room] = batch.data[:room]
        self.keys.extend(batch.keys[:room])
        self.shapes.extend(batch.shapes[:room])
        self.dtypes.extend(batch.dtypes[:room])

    def shrink(self, cap: int) -> None:
        """Keep a uniform random ``cap`` of the records: still a uniform sample."""
        n = len(self.keys)
        if n <= cap:
            return
        keep = np.sort(self.rng.choice(n, cap, replace=False))
        self.data = self.data[keep]
        self.keys = [self.keys[i] for i in keep]
        self.shapes = [self.shapes[i] for i in keep]
        self.dtypes = [self.dtypes[i] for i in keep]
        old = self.given
        self.given = {j: old[int(i)] for j, i in enumerate(keep) if int(i) in old}

    def records(self) -> Iterator[SampledRecord]:
        """The sampled records, in slot order."""
        for i, (k, sh, dt) in enumerate(zip(self.keys, self.shapes, self.dtypes)):
            yield SampledRecord(self.data[i], k, sh, dt, self.given.get(i))


class Aggregate:
    """Exact statistics, a bounded sample of records and the per-compute summaries.

    Parameters
    ----------
    max_records : int, optional
        Size of the record sample; None: the caller's setting (``max-records``),
        passed with each batch.

    >>> a = Aggregate()
    >>> a.stats()["total_chunks"]
    0
    """

    def __init__(self, max_records: int | None = None, enabled: bool = True) -> None:
        self.max_records = max_records
        self.enabled = enabled
        self.limit: int | None = None  # the engine's share of ``max-memory``
        self._lock = threading.RLock()
        self.clear()

    def cap(self, configured: int) -> int:
        """The sample's size now: ``max_records`` (or ``configured``) within the limit."""
        cap = configured if self.max_records is None else self.max_records
        return cap if self.limit is None else min(cap, self.limit)

    def clear(self) -> None:
        """Forget every measurement."""
        with self._lock:
            self._count = 0
            self._failed = 0
            self._bytes = 0
            self._seconds = 0.0
            self._min_bytes: int | None = None
            self._max_bytes = 0
            self._peak = 0.0
            self._min_rss: float | None = None
            self._reservoir = Reservoir()
            self._observations: deque[_model.Observation] = deque(maxlen=MAX_OBSERVATIONS)
            self._summary_bytes = 0  # estimated memory of the observations kept
            self._computes = 0
            self._wall = 0.0

    def __len__(self) -> int:
        return self._count

    @property
    def seen(self) -> int:
        """Records seen by the sample (kept or not)."""
        return self._reservoir.seen

    @property
    def sampled(self) -> int:
        return len(self._reservoir)

    @property
    def summary_bytes(self) -> int:
        """Estimated memory of the per-compute summaries kept."""
        return self._summary_bytes

    def held_bytes(self) -> int:
        """Estimated memory of the sample and the summaries."""
        return len(self._reservoir) * RECORD_COST + self._summary_bytes

    def set_limit(self, cap: int | None) -> None:
        """Hold the sample to at most ``cap`` records (None: no limit), thinning it now."""
        with self._lock:
            self.limit = cap
            if cap is not None and len(self._reservoir) > cap:
                self._reservoir.shrink(cap)

    def add_batch(self, batch: RecordBatch, max_records: int, given: Any = None) -> None:
        """Add a compute's records at once, O(1) per record (nothing when disabled).

        ``given`` (one record only) is the object the record was given as, kept with
        it while it stays in the sample.
        """
        if not self.enabled or not len(batch):
            return
        with self._lock:
            cap = self.cap(max_records)
            slot = len(self._reservoir) if len(self._reservoir) < cap else None
            self._add(batch, cap)
            if given is not None and slot is not None and slot < len(self._reservoir):
                self._reservoir.given[slot] = given

    def _add(self, batch: RecordBatch, cap: int) -> None:
        d = batch.data
        logical = d["logical"]
        self._count += len(d)
        self._bytes += int(logical.sum(dtype=np.float64))  # no int64 wrap-around
        self._seconds += float((d["t1"] - d["t0"]).sum())
        self._failed += int(d["failed"].sum())
        low = int(logical.min())
        self._min_bytes = low if self._min_bytes is None else min(self._min_bytes, low)
        self._max_bytes = max(self._max_bytes, int(logical.max()))
        self._peak = max(self._peak, float(d["rss1"].max()), float(d["rss0"].max()))
        low_rss = float(d["rss0"].min())
        self._min_rss = low_rss if self._min_rss is None else min(self._min_rss, low_rss)
        self._reservoir.add(batch, cap)

    def add_compute(self, observation: _model.Observation) -> None:
        """Add the per-compute summary of one profiled compute."""
        with self._lock:
            obs = self._observations
            if len(obs) == obs.maxlen:
                self._summary_bytes -= observation_cost(obs[0])
            obs.append(observation)
            self._summary_bytes += observation_cost(observation)
            self._computes += 1
            self._wall += observation.wall_seconds
            self._peak = max(self._peak, observation.peak_bytes)

    def sample(self) -> list[SampledRecord]:
        """The sampled records (all of them while fewer than the sample's size)."""
        with self._lock:
            return list(self._reservoir.records())

    def observations(self) -> list[_model.Observation]:
        """Per-compute summaries; synthesized from the record aggregates if none."""
        with self._lock:
            if self._observations:
                return list(self._observations)
            if not self._count:
                return []
            return [_model.Observation(
                array_bytes=self._bytes, chunk_bytes=self._bytes / self._count,
                n_tasks=self._count, task_seconds=self._seconds, wall_seconds=0.0,
                peak_bytes=self._peak, baseline_bytes=self._min_rss or 0.0,
                results_bytes=0.0, concurrency=1,
            )]

    def stats(self) -> dict[str, Any]:
        """Aggregate statistics; sizes in MiB, times in seconds or milliseconds."""
        with self._lock:
            n = self._count
            return {
                "total_chunks": n,
                "failed_chunks": self._failed,
                "avg_chunk_size_mb": self._bytes / n / MiB if n else 0.0,
                "min_chunk_size_mb": (self._min_bytes or 0) / MiB,
                "max_chunk_size_mb": self._max_bytes / MiB,
                "total_data_mb": self._bytes / MiB,
                "total_compute_time_s": self._seconds,
                "avg_compute_time_ms": self._seconds / n * 1e3 if n else 0.0,
                "peak_memory_mb": self._peak / MiB,
                "avg_throughput_mb_per_sec": (
                    # below a picosecond no time was measured (the rate would overflow)
                    self._bytes / MiB / self._seconds if self._seconds > 1e-12 else 0.0
                ),
                "computes": self._computes,
                "wall_time_s": self._wall,
                "sampled_records": len(self._reservoir),
            }


def pooled(observations: list[_model.Observation]) -> Aggregate:
    """An aggregate of ``observations`` alone (pilots of one workload, stored computes).

    >>> pooled([]).observations()
    []
    """
    out = Aggregate()
    for o in observations:
        out.add_compute(o)
    return out
