"""Adaptive, memory-aware chunk sizes for Dask arrays.

The engine profiles the tasks of ordinary ``compute()`` calls, learns how much
memory and time a workload needs per chunk byte, and recommends chunk sizes that
keep the predicted peak memory inside a budget while keeping scheduling overhead
low.

>>> import dask.array as da
>>> from dask.array.adaptive_chunking import get_adaptive_engine
>>> x = da.ones((2000, 2000), chunks=(100, 100))
>>> engine = get_adaptive_engine()
>>> pid = engine.profile_array(x)
>>> _ = x.sum().compute()
>>> profile = engine.get_profile(pid)
>>> profile["profiler_stats"]["total_chunks"] > 0
True
>>> engine.remove_profile(pid)

The module reads top to bottom: configuration, the memory limit and
:class:`MemoryPressure`, aggregation (:class:`ChunkMemoryMetric`,
:class:`ChunkProfiler`), the recommender, the engine and its ``array_optimize``
hook. Settings, measurement, graph analysis and the model's arithmetic live in the
private package ``dask.array._adaptive_chunking`` (``config``, ``instrument``,
``graph``, ``model``), and so do three parts of the engine, as mixins of its class:
how it folds what a compute measured into profiles (``recording``), how it uses its
history (``learning``), and its methods for xarray objects (``xarray``).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from dask.highlevelgraph import HighLevelGraph
from dask.utils import format_bytes, key_split

import dask
from dask.array._adaptive_chunking import cluster as _cluster
from dask.array._adaptive_chunking import config as _config
from dask.array._adaptive_chunking import expressions as _expressions
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import attribution as _attribution
from dask.array._adaptive_chunking import calibration as _calibration
from dask.array._adaptive_chunking import errors as _errors
from dask.array._adaptive_chunking import peaks as _peaks
from dask.array._adaptive_chunking import records as _records
from dask.array._adaptive_chunking import shapes as _shapes
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import views as _views
from dask.array._adaptive_chunking import xarray as _xarray
from dask.array._adaptive_chunking.errors import AdaptiveChunkingWarning
from dask.array._adaptive_chunking.memory import cgroup_memory, host_memory, process_rss
from dask.array._adaptive_chunking.learning import Learning as _Learning
from dask.array._adaptive_chunking.learning import _cluster_workers, _fingerprint  # noqa: F401
from dask.array._adaptive_chunking.progress import ProfileProgressBar
from dask.array._adaptive_chunking.recording import Recording as _Recording
from dask.array._adaptive_chunking.xarray import Labelled as _Labelled

__all__ = [
    "ChunkMemoryMetric",
    "MemoryPressure",
    "ChunkProfiler",
    "ChunkSizeRecommender",
    "AdaptiveChunkingEngine",
    "AdaptiveChunkingWarning",
    "get_adaptive_engine",
    "enable_adaptive_chunking",
    "disable_adaptive_chunking",
    "reset_adaptive_engine",
    "memory_limit",
    "ProfileProgressBar",
]

logger = logging.getLogger(__name__)

MiB = 2**20


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

_PREFIX = _config.PREFIX
_PEAK_METHODS = _config.PEAK_METHODS
#: The distributed setting that bounds the root tasks a worker holds at a time.
SATURATION_KEY = "distributed.scheduler.worker-saturation"
_number = _config.number
_nbytes_setting = _config.nbytes_setting
_get = _config.get
_flag = _config.flag
_read = _config.setting  # a setting, validated

_config.register_defaults()


# ---------------------------------------------------------------------------
# Measurement: the memory limit of this process
# ---------------------------------------------------------------------------

def memory_limit() -> int:
    """The memory this process may use, in bytes.

    ``array.adaptive-chunking.memory-limit`` if set, else the smaller of physical
    memory and the cgroup limit of this process (containers, Kubernetes, Slurm).

    >>> import dask
    >>> with dask.config.set({"array.adaptive-chunking.memory-limit": "2GiB"}):
    ...     memory_limit()
    2147483648
    """
    configured = _read("memory-limit")
    if configured is not None:
        return configured
    total, _ = host_memory()
    limit, _ = cgroup_memory()
    return min(total, limit) if limit else total


def _finite(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in [low, high], or a TypeError/ValueError naming it."""
    largest = sys.float_info.max  # the range check of config.number, without infinities
    return _number(name, value, low=max(low, -largest), high=min(high, largest))


@dataclass(frozen=True)
class MemoryPressure:
    """Memory state of this process's environment at one moment.

    Attributes are in MiB. ``total_mb`` is the limit the process lives under
    (see :func:`memory_limit`), ``used_mb`` what is in use against it and
    ``available_mb`` what is left.

    >>> p = MemoryPressure(available_mb=1024.0, used_mb=3072.0, percent_used=75.0)
    >>> p.is_pressure(70.0), p.is_pressure(80.0)
    (True, False)
    """

    available_mb: float
    used_mb: float
    percent_used: float
    total_mb: float = 0.0
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self):
        for name in ("available_mb", "used_mb", "percent_used", "total_mb", "timestamp"):
            _finite(name, getattr(self, name), low=0.0,
                    high=100.0 if name == "percent_used" else math.inf)

    def is_pressure(self, threshold: float | None = None) -> bool:
        """Whether more than ``threshold`` percent of memory is in use.

        ``threshold`` defaults to ``array.adaptive-chunking.pressure-threshold``.
        """
        threshold = _read("pressure-threshold", threshold)
        return self.percent_used > threshold

    @classmethod
    def of(cls, used_bytes: float, limit_bytes: float) -> MemoryPressure:
        """The pressure of ``used_bytes`` in use against ``limit_bytes`` (a worker's).

        >>> MemoryPressure.of(3 * 2**30, 4 * 2**30).percent_used
        75.0
        """
        limit = max(_finite("limit_bytes", limit_bytes), 1.0)
        used = min(max(_finite("used_bytes", used_bytes), 0.0), limit)
        return cls(
            available_mb=(limit - used) / MiB,
            used_mb=used / MiB,
            percent_used=100.0 * (used / limit),
            total_mb=limit / MiB,
        )

    @classmethod
    def snapshot(cls) -> MemoryPressure:
        """Measure now, honouring cgroup limits and ``memory-limit``.

        >>> p = MemoryPressure.snapshot()
        >>> 0 <= p.percent_used <= 100 and p.available_mb <= p.total_mb
        True
        """
        total, available = host_memory()
        used = total - available
        cg_limit, cg_usage = cgroup_memory()
        if cg_limit is not None and cg_limit < total:
            total = cg_limit
            used = cg_usage if cg_usage is not None else used
        configured = _read("memory-limit")
        if configured is not None:
            total = configured
            used = process_rss()
        used = min(used, total)
        return cls(
            available_mb=(total - used) / MiB,
            used_mb=used / MiB,
            percent_used=100.0 * used / total if total else 0.0,
            total_mb=total / MiB,
        )

    def to_dict(self) -> dict[str, float]:
        """The snapshot as a plain dictionary."""
        return asdict(self)


# ---------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------


_MAX_MB = 2.0**53  # finite, and still a float that counts whole bytes


@dataclass
class ChunkMemoryMetric:
    """Measurement of one executed chunk (one task).

    Parameters
    ----------
    chunk_key : hashable
        Task key, e.g. ``("random_sample-1a2b", 0, 0)``.
    chunk_shape : tuple of int
        Shape of the task's output (``()`` when it has none).
    element_count : int
        Elements in the output.
    dtype_size : int
        Bytes per element (0 when unknown).
    estimated_bytes : int
        Logical bytes of the output (elements x itemsize, ``.nbytes``).
    compute_time_ms : float
        Time the task spent computing in the worker, in milliseconds.
    memory_peak_before_mb, memory_peak_after_mb : float
        Resident memory of the worker process before and after the task, in MiB.
    worker : hashable, optional
        Thread ident (threaded) or process id (processes) that ran the task.
    start_time : float, optional
        ``time.perf_counter()`` when the task started.
    failed : bool, optional
        Whether the task raised.
    output_bytes : int, optional
        Memory the output holds as measured by ``dask.sizeof`` (smaller than
        ``estimated_bytes`` for broadcast views such as ``da.ones`` chunks).

    >>> m = ChunkMemoryMetric(("x", 0, 0), (100, 100), 10_000, 8, 80_000, 2.0,
    ...                       100.0, 100.5)
    >>> m.memory_delta_mb, round(m.throughput_mb_per_sec, 1)
    (0.5, 38.1)
    """

    chunk_key: Any
    chunk_shape: tuple
    element_count: int
    dtype_size: int
    estimated_bytes: int
    compute_time_ms: float
    memory_peak_before_mb: float
    memory_peak_after_mb: float
    worker: Any = None
    start_time: float = 0.0
    failed: bool = False
    output_bytes: int | None = None

    def __post_init__(self):
        def whole(name, value, high=2**63):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if not 0 <= value < high:
                raise ValueError(f"{name} must be in [0, {high:g}), got {value!r}")

        if not isinstance(self.chunk_shape, tuple):
            raise TypeError(f"chunk_shape must be a tuple of ints, got {self.chunk_shape!r}")
        for n in self.chunk_shape:
            whole("each of chunk_shape", n)
        whole("element_count", self.element_count)
        whole("dtype_size", self.dtype_size, high=2**31)  # NumPy's largest itemsize
        whole("estimated_bytes", self.estimated_bytes)
        if self.output_bytes is not None:
            whole("output_bytes", self.output_bytes)
        for name in ("compute_time_ms", "memory_peak_before_mb", "memory_peak_after_mb"):
            _finite(name, getattr(self, name), low=0.0, high=_MAX_MB)
        _finite("start_time", self.start_time, low=-_MAX_MB, high=_MAX_MB)
        if not isinstance(self.failed, (bool, np.bool_)):
            raise TypeError(f"failed must be True or False, got {self.failed!r}")

    @property
    def memory_delta_mb(self) -> float:
        """Growth of process memory across the task, in MiB (may be negative)."""
        return self.memory_peak_after_mb - self.memory_peak_before_mb

    @property
    def throughput_mb_per_sec(self) -> float:
        """Output MiB produced per second of compute (0.0 for an instant task)."""
        if self.compute_time_ms <= 0:
            return 0.0
        return (self.estimated_bytes / MiB) / (self.compute_time_ms / 1e3)


def _metric_from_row(row, key, shape, dtype) -> ChunkMemoryMetric:
    """A :class:`ChunkMemoryMetric` from one row of a ``RecordBatch``."""
    if isinstance(shape, tuple) and all(isinstance(n, (int, np.integer)) for n in shape):
        shape = tuple(int(n) for n in shape)
        elements = math.prod(shape)
    else:
        shape, elements = (), 0
    itemsize = getattr(dtype, "itemsize", 0)
    return ChunkMemoryMetric(
        chunk_key=key,
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


def _batch_from_metric(m: ChunkMemoryMetric) -> _records.RecordBatch:
    data = np.zeros(1, _records.RECORD_DTYPE)
    t1 = m.start_time + m.compute_time_ms / 1e3
    data[0] = (
        m.start_time, t1, m.memory_peak_before_mb * MiB, m.memory_peak_after_mb * MiB,
        m.output_bytes if m.output_bytes is not None else m.estimated_bytes,
        m.estimated_bytes,
        m.worker & 0x7FFFFFFFFFFFFFFF if isinstance(m.worker, (int, np.integer)) else 0,
        0, False, m.failed,
        0, 0,
    )
    dtype = np.dtype(f"V{m.dtype_size}") if m.dtype_size else None
    return _records.RecordBatch(data, [m.chunk_key], [m.chunk_shape], [dtype])


#: Estimated memory of one sampled chunk record (its row, key and list slots) and
#: of one per-compute observation; ``benchmarks/bench_memory.py`` checks them.
RECORD_COST = 256
OBSERVATION_COST = 1000
OBSERVATION_TERM_COST = 300
#: Estimated memory of one profile before it holds records or observations.
PROFILE_COST = 4096


def _observation_cost(o: _model.Observation) -> int:
    return OBSERVATION_COST + OBSERVATION_TERM_COST * len(o.terms or ())


class _Reservoir:
    """A uniform random sample of at most ``cap`` records, kept as columns."""

    def __init__(self) -> None:
        self.data = np.empty(0, _records.RECORD_DTYPE)
        self.keys: list = []
        self.shapes: list = []
        self.dtypes: list = []
        self.seen = 0
        self.rng = np.random.default_rng(0)
        self.metrics: dict[int, ChunkMemoryMetric] = {}  # exact objects given

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, batch: _records.RecordBatch, cap: int) -> None:
        """Algorithm R over the stream: each record seen is kept with chance cap/seen.

        A sample that was thinned (or filled under a lower cap) keeps its size: to
        grow it again would favour the newest records.
        """
        if self.seen > len(self.keys):
            cap = min(cap, len(self.keys))
        n = len(batch)
        room = max(0, min(cap - len(self.keys), n))
        if room:
            size = len(self.keys)
            if size + room > len(self.data):  # grow geometrically, never past cap
                grown = np.empty(min(cap, max(2 * len(self.data), size + room, 16)),
                                 _records.RECORD_DTYPE)
                grown[:size] = self.data[:size]
                self.data = grown
            self.data[size:size + room] = batch.data[:room]
            self.keys.extend(batch.keys[:room])
            self.shapes.extend(batch.shapes[:room])
            self.dtypes.extend(batch.dtypes[:room])
        if room < n and cap > 0:
            seen = self.seen + np.arange(room + 1, n + 1)
            slots = (self.rng.random(n - room) * seen).astype(np.int64)
            for i in np.flatnonzero(slots < cap):
                j, src = int(slots[i]), room + int(i)
                self.data[j] = batch.data[src]
                self.keys[j] = batch.keys[src]
                self.shapes[j] = batch.shapes[src]
                self.dtypes[j] = batch.dtypes[src]
                self.metrics.pop(j, None)
        self.seen += n

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
        old = self.metrics
        self.metrics = {j: old[int(i)] for j, i in enumerate(keep) if int(i) in old}

    def to_metrics(self) -> list[ChunkMemoryMetric]:
        return [
            self.metrics.get(i) or _metric_from_row(self.data[i], k, sh, dt)
            for i, (k, sh, dt) in enumerate(zip(self.keys, self.shapes, self.dtypes))
        ]


class ChunkProfiler:
    """Thread-safe aggregate of chunk measurements.

    Aggregates (counts, sums, extremes) are exact and cost O(1) per chunk; raw
    :class:`ChunkMemoryMetric` records are kept only as a uniform random sample of
    at most ``max_records`` (``array.adaptive-chunking.max-records``), so memory
    stays bounded however many chunks are recorded.

    Parameters
    ----------
    enabled : bool
        When False, :meth:`record_chunk` ignores what it is given.
    max_records : int, optional
        Size of the raw-record sample; read from config when None.

    >>> p = ChunkProfiler()
    >>> p.record_chunk(ChunkMemoryMetric(("x", 0), (1000,), 1000, 8, 8000, 1.0, 50.0, 50.0))
    >>> p.get_stats()["total_chunks"]
    1
    """

    def __init__(self, enabled: bool = True, max_records: int | None = None):
        if max_records is not None:
            _config.count("max_records", max_records, low=0)
        if not isinstance(enabled, (bool, np.bool_)):
            raise TypeError(f"enabled must be True or False, got {enabled!r}")
        self.enabled = bool(enabled)
        self._max_records = max_records
        self._limit: int | None = None  # the engine's share of ``max-memory``
        self._lock = threading.RLock()
        self.clear()

    @property
    def max_records(self) -> int:
        """Size of the raw-record sample (config ``max-records`` unless given).

        An engine holding many profiles may lower it to keep them all within
        ``array.adaptive-chunking.max-memory``.
        """
        cap = _read("max-records", self._max_records)
        return cap if self._limit is None else min(cap, self._limit)

    def _held_bytes(self) -> int:
        """An estimate of the memory this profiler's samples and summaries hold."""
        return len(self._reservoir) * RECORD_COST + self._summary_bytes

    def _set_limit(self, cap: int | None) -> None:
        with self._lock:
            self._limit = cap
            if cap is not None and len(self._reservoir) > cap:
                self._reservoir.shrink(cap)

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
            self._reservoir = _Reservoir()
            self._observations: deque[_model.Observation] = deque(maxlen=256)
            self._summary_bytes = 0  # estimated memory of the observations kept
            self._computes = 0
            self._wall = 0.0

    def __len__(self) -> int:
        return self._count

    def record_chunk(self, metric: ChunkMemoryMetric) -> None:
        """Add the measurement of one chunk."""
        if not isinstance(metric, ChunkMemoryMetric):
            raise TypeError(
                f"record_chunk expects a ChunkMemoryMetric, got {type(metric).__name__}"
            )
        if not self.enabled:
            return
        batch = _batch_from_metric(metric)
        with self._lock:
            slot = len(self._reservoir) if len(self._reservoir) < self.max_records else None
            self._add_batch(batch)
            if slot is not None and slot < len(self._reservoir):
                self._reservoir.metrics[slot] = metric

    def _record_batch(self, batch: _records.RecordBatch) -> None:
        """Add the records of a compute at once (the engine's path), O(1) per record."""
        if not self.enabled or not len(batch):
            return
        with self._lock:
            self._add_batch(batch)

    def _add_batch(self, batch: _records.RecordBatch) -> None:
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
        self._reservoir.add(batch, self.max_records)

    def _record_compute(self, observation: _model.Observation) -> None:
        """Add the per-compute summary of one profiled compute."""
        with self._lock:
            obs = self._observations
            if len(obs) == obs.maxlen:
                self._summary_bytes -= _observation_cost(obs[0])
            obs.append(observation)
            self._summary_bytes += _observation_cost(observation)
            self._computes += 1
            self._wall += observation.wall_seconds
            self._peak = max(self._peak, observation.peak_bytes)

    @property
    def metrics(self) -> list[ChunkMemoryMetric]:
        """The sampled raw records (all of them while fewer than ``max_records``)."""
        with self._lock:
            return self._reservoir.to_metrics()

    def observations(self) -> list[_model.Observation]:
        """Per-compute summaries; synthesized from the chunk aggregates if none."""
        with self._lock:
            if self._observations:
                return list(self._observations)
            if not self._count:
                return []
            avg = self._bytes / self._count
            return [
                _model.Observation(
                    array_bytes=self._bytes,
                    chunk_bytes=avg,
                    n_tasks=self._count,
                    task_seconds=self._seconds,
                    wall_seconds=0.0,
                    peak_bytes=self._peak,
                    baseline_bytes=self._min_rss or 0.0,
                    results_bytes=0.0,
                    concurrency=1,
                )
            ]

    def get_stats(self) -> dict[str, Any]:
        """Aggregate statistics; sizes in MiB, times in seconds or milliseconds.

        >>> ChunkProfiler().get_stats()["total_chunks"]
        0
        """
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
                    self._bytes / MiB / self._seconds if self._seconds > 0 else 0.0
                ),
                "computes": self._computes,
                "wall_time_s": self._wall,
                "sampled_records": len(self._reservoir),
            }

    def __repr__(self) -> str:
        s = self.get_stats()
        return (
            f"<ChunkProfiler chunks={s['total_chunks']} computes={s['computes']} "
            f"peak={s['peak_memory_mb']:.1f} MiB enabled={self.enabled}>"
        )


# ---------------------------------------------------------------------------
# Recommendation (the model's arithmetic is in _adaptive_chunking/model.py)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """A recommended chunking and the reasoning behind it.

    ``binding`` is the constraint that decided the size (see
    ``dask.array._adaptive_chunking.model.Choice``; ``"shape"`` when the shape rules
    moved it) and ``reason`` says it in a sentence; sizes are in bytes and times
    in seconds. ``array_chunk_size`` is the byte target to give Dask's own
    ``"auto"`` chunking (``array.chunk-size``) so that a rechunk to ``"auto"``
    inside the workload agrees with the recommendation.
    """

    chunks: tuple[int, ...]
    chunk_bytes: int
    binding: str
    fits_budget: bool
    memory_budget_bytes: int
    memory_limit_bytes: int
    predicted_peak_bytes: float
    predicted_seconds: float
    predicted_tasks: int
    concurrency: int
    model: _model.WorkloadModel | None  # None: an empty array, nothing measured
    reason: str = ""
    overhead_fraction: float = 0.0
    downstream: tuple[str, ...] = ()
    storage_chunks: tuple[int, ...] | None = None
    saturation: _model.Saturation | None = None
    scheduler_reason: str = ""
    shape: tuple[int, ...] = ()  # the array it is for
    current_chunks: tuple[int, ...] | None = None  # its chunk shape now, if known
    dims: tuple | None = None  # dimension names, for an xarray object

    @property
    def chunks_by_dim(self) -> dict | None:
        """The chunks keyed by dimension name (what ``DataArray.chunk`` takes), for a
        recommendation made for an xarray object; None for a Dask array."""
        return None if self.dims is None else dict(zip(self.dims, self.chunks))

    def __repr__(self) -> str:
        from dask.array._adaptive_chunking.views import recommendation_text

        return recommendation_text(self)

    def _repr_html_(self) -> str:
        from dask.array._adaptive_chunking.views import recommendation_html

        return recommendation_html(self)

    @property
    def scheduler_config(self) -> dict[str, float | str]:
        """Settings for a ``dask.distributed`` scheduler running these chunks.

        Empty unless the profile came from a cluster. ``"inf"`` (as distributed
        spells it in config) turns root-task queuing off.
        """
        return _scheduler_config(self.saturation)

    @property
    def array_chunk_size(self) -> int:
        """Bytes for ``array.chunk-size``: Dask's auto-chunking then picks this size."""
        return max(1, int(self.chunk_bytes))

    def to_dict(self) -> dict[str, Any]:
        """Plain-value summary (sizes in MiB) for profiles and telemetry."""
        return {
            "chunks": self.chunks,
            "chunks_by_dim": None if self.dims is None else {  # JSON keys are text
                str(d): n for d, n in self.chunks_by_dim.items()},
            "chunk_size_mb": self.chunk_bytes / MiB,
            "binding_constraint": self.binding,
            "reason": self.reason,
            "fits_budget": self.fits_budget,
            "memory_budget_mb": self.memory_budget_bytes / MiB,
            "memory_limit_mb": self.memory_limit_bytes / MiB,
            "predicted_peak_memory_mb": self.predicted_peak_bytes / MiB,
            "predicted_time_s": self.predicted_seconds,
            "predicted_tasks": self.predicted_tasks,
            "predicted_overhead_fraction": self.overhead_fraction,
            "concurrency": self.concurrency,
            "amplification": self.model.amplification if self.model else 0.0,
            "held_fraction": self.model.held_fraction if self.model else 0.0,
            "overhead_per_task_ms": self.model.overhead_seconds * 1e3 if self.model else 0.0,
            "array_chunk_size": self.array_chunk_size,
            "downstream_ops": list(self.downstream),
            "storage_chunks": self.storage_chunks,
            "scheduler_config": self.scheduler_config,
            "scheduler_reason": self.scheduler_reason,
        }


_REASONS = {
    "speed": "the fastest predicted size: smaller chunks pay more per-task overhead, "
             "larger ones leave threads idle or pay for fresh pages",
    "memory": "the largest size whose predicted peak fits the memory budget; larger "
              "chunks would be faster",
    "overhead": "the smallest size that keeps per-task overhead within the overhead "
                "target",
    "parallelism": "larger chunks would leave some of the {conc} threads idle",
    "min_chunk_bytes": "held up by min-chunk-bytes",
    "max_chunk_bytes": "held down by max-chunk-bytes",
    "array": "the whole array fits in one chunk",
    "shape": "the dimensions that should stay whole do not fit the chunk-size bounds "
             "whole; this is the nearest shape within them",
}


def _scheduler_config(saturation: _model.Saturation | None) -> dict[str, float | str]:
    """Distributed config for a saturation choice (``"inf"`` as distributed spells it)."""
    if saturation is None:
        return {}
    value = saturation.value
    return {SATURATION_KEY: "inf" if math.isinf(value) else round(value, 3)}


@dataclass(frozen=True)
class _Workers:
    """What a recommendation needs of a cluster's workers (all zero/None locally)."""

    threads: int = 0  # of the whole cluster
    most_threads: int = 0  # of one worker
    processes: int = 1
    baseline: float | None = None  # the largest worker's memory at its first task
    memory_limit: int | None = None  # the tightest worker's

    @classmethod
    def of(cls, cluster: Mapping[str, Mapping[str, int]] | None) -> _Workers:
        if cluster is not None:
            _check_cluster(cluster)
        workers = [w for w in (cluster or {}).values() if w.get("nthreads")]
        if not workers:
            return cls()

        def nbytes(w, name):  # bytes, or a size string such as "4GiB"
            return _nbytes_setting(name, w.get(name), allow_none=True) if w.get(name) else 0

        limits = [nbytes(w, "memory_limit") for w in workers if w.get("memory_limit")]
        return cls(
            threads=sum(int(w["nthreads"]) for w in workers),
            most_threads=max(int(w["nthreads"]) for w in workers),
            processes=len(workers),
            baseline=max(nbytes(w, "baseline") for w in workers),
            memory_limit=min(limits) if limits else None,
        )

    def saturation(self, fit, array_bytes, chunk_bytes, *, budget, n_chunks,
                   aligned) -> _model.Saturation | None:
        """The worker saturation for a chunking on these workers (None locally)."""
        if not self.threads:
            return None
        return _model.worker_saturation(
            fit, array_bytes, chunk_bytes, budget_bytes=budget,
            threads_per_worker=self.most_threads, workers=self.processes,
            n_chunks=n_chunks, baseline_bytes=self.baseline, aligned=aligned,
        )


def _check_cluster(cluster) -> None:
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
                _nbytes_setting(f"cluster[{address!r}][{name!r}]", value, allow_none=True)


def _saturation_reason(sat: _model.Saturation, budget: float, current) -> str:
    """Why a worker saturation was chosen, in a sentence."""
    value = "inf" if math.isinf(sat.value) else f"{sat.value:g}"
    if sat.reason == "nothing-waits":
        out = (f"worker-saturation {value}: no chunk waits for tasks on other workers, "
               "so queuing root tasks would only add round trips")
    elif sat.reason == "fits":
        out = (f"worker-saturation {value}: even if a worker created all its chunks "
               f"first it would stay within the budget ({format_bytes(sat.peak_bytes)} "
               f"of {format_bytes(budget)} predicted)")
    else:
        out = (f"worker-saturation {value}: with queuing off a worker could hold up to "
               f"{format_bytes(sat.unqueued_peak_bytes)} of chunks waiting for other "
               f"workers, over the budget of {format_bytes(budget)}; this keeps it at "
               f"{format_bytes(sat.peak_bytes)}")
    if current is not None:
        now = "inf" if math.isinf(current) else f"{current:g}"
        out += f" (the scheduler runs with {now})"
    return out


def _pooled(states) -> list[_model.Observation]:
    """The per-compute observations of several profiles (pilots of one workload)."""
    return [o for s in states for o in s.profiler.observations()]


def _fit(observations: Sequence[_model.Observation]) -> _model.WorkloadModel | None:
    """Fit the model, with this machine's page-fault cost and BLAS threads."""
    contracts = any(t[0] in _model.CONTRACTIONS for o in observations for t in o.terms)
    threads, penalty = _calibration.blas_profile() if contracts else (1, 1.0)
    return _model.fit_workload(
        observations, _calibration.fault_seconds_per_byte(), threads, penalty
    )


class ChunkSizeRecommender:
    """Recommend chunk sizes from profiling data and a memory budget.

    Every setting left as None is read from ``array.adaptive-chunking.*`` each time
    a recommendation is made, so ``dask.config.set`` applies to existing
    recommenders.

    Parameters
    ----------
    target_memory_percent : float, optional
        Percent (0-100] of the memory limit a computation may reach at its predicted
        peak. Default 50.0 (config ``target-memory-percent``).
    min_chunk_bytes : int, optional
        Smallest chunk recommended, in bytes, unless the array is smaller.
        Default 1 MiB (``min-chunk-bytes``).
    max_chunk_bytes : int, optional
        Largest chunk recommended, in bytes. Default None: bounded by the memory
        budget alone (``max-chunk-bytes``).
    safety_factor : float, optional
        Margin (0-1] applied to the budget. Default 0.8 (``safety-factor``).
    overhead_target : float, optional
        Largest acceptable fraction of time spent on per-task overhead.
        Default 0.1 (``overhead-target``).
    memory_limit : int or str, optional
        Memory limit in bytes or as "2GiB"; default the limit this process lives
        under (``memory-limit``, cgroup-aware).

    Examples
    --------
    >>> r = ChunkSizeRecommender(target_memory_percent=50.0, safety_factor=0.8,
    ...                          memory_limit="10GiB")
    >>> r.memory_budget() == int(10 * 2**30 * 0.5 * 0.8)
    True
    >>> p = ChunkProfiler()
    >>> r.recommend_chunk_size(p, (10000, 10000), 8) is None  # no data yet
    True
    """

    def __init__(
        self,
        target_memory_percent: float | None = None,
        min_chunk_bytes: int | None = None,
        max_chunk_bytes: int | None = None,
        safety_factor: float | None = None,
        overhead_target: float | None = None,
        memory_limit: int | str | None = None,
    ):
        self._given = {
            "target_memory_percent": target_memory_percent,
            "min_chunk_bytes": min_chunk_bytes,
            "max_chunk_bytes": max_chunk_bytes,
            "safety_factor": safety_factor,
            "overhead_target": overhead_target,
            "memory_limit": memory_limit,
        }
        self._settings()  # validate what was given now, not at first use

    def _settings(self) -> dict[str, Any]:
        g = self._given
        s = {name: _read(name.replace("_", "-"), value) for name, value in g.items()}
        if s["max_chunk_bytes"] is not None and s["max_chunk_bytes"] < s["min_chunk_bytes"]:
            raise ValueError(
                f"max_chunk_bytes ({s['max_chunk_bytes']}) is smaller than min_chunk_bytes "
                f"({s['min_chunk_bytes']}); raise max-chunk-bytes or lower min-chunk-bytes"
            )
        return s

    def memory_budget(self, limit: int | None = None) -> int:
        """Bytes a computation may reach at its peak: limit x percent x safety factor."""
        s = self._settings()
        limit = _nbytes_setting("limit", limit, allow_none=True)
        if limit is None:
            limit = s["memory_limit"] or memory_limit()
        return int(limit * s["target_memory_percent"] / 100 * s["safety_factor"])

    def recommend_chunk_size(
        self,
        profiler: ChunkProfiler,
        array_shape: Sequence[int],
        dtype_size: int,
        num_dimensions: int | None = None,
    ) -> tuple[int, ...] | None:
        """Recommend a chunk shape for an array, or None without profiling data.

        Parameters
        ----------
        profiler : ChunkProfiler
            Measurements of the workload (a profile's or the engine's profiler).
        array_shape : tuple of int
            Shape of the array to chunk.
        dtype_size : int
            Bytes per element.
        num_dimensions : int, optional
            Must equal ``len(array_shape)`` when given.

        Returns
        -------
        tuple of int or None
            One chunk length per dimension, dividing each dimension evenly.
        """
        rec = self.recommend(profiler, array_shape, dtype_size, num_dimensions=num_dimensions)
        return None if rec is None else rec.chunks

    def recommend(
        self,
        profiler: ChunkProfiler,
        array_shape: Sequence[int],
        dtype_size: int,
        num_dimensions: int | None = None,
        *,
        current_chunks: Sequence[Sequence[int]] | None = None,
        concurrency: int | None = None,
        storage_chunks: Sequence[int] | None = None,
        downstream: _graph.Downstream | None = None,
        cluster: Mapping[str, Mapping[str, int]] | None = None,
        worker_saturation: float | None = None,
        warn: bool = True,
    ) -> Recommendation | None:
        """Like :meth:`recommend_chunk_size`, with the explanation.

        Parameters
        ----------
        current_chunks : tuple of tuples, optional
            The array's ``chunks``: dimensions that are whole now stay whole (unless
            a transpose or matmul downstream wants square chunks).
        concurrency : int, optional
            Tasks that run at once (default: as measured).
        storage_chunks : tuple of int, optional
            Chunks of the storage the array is read from; every recommended chunk
            is a whole number of them along each dimension.
        downstream : Downstream, optional
            What the operations applied to the array want (see
            ``dask.array._adaptive_chunking.graph.downstream``); the engine passes
            what it learned from the profiled computes.
        cluster : dict, optional
            The workers of a ``dask.distributed`` cluster (address -> ``nthreads``,
            ``memory_limit``, ``baseline`` bytes): the budget is then that of the
            tightest worker, the tasks at once the cluster's threads, and the peak
            that of one worker. The recommendation then also carries the
            scheduler's ``worker-saturation`` to run the chunks with
            (:attr:`Recommendation.scheduler_config`).
        worker_saturation : float, optional
            The cluster's current ``distributed.scheduler.worker-saturation``, for
            the explanation only.
        warn : bool
            Warn (:class:`AdaptiveChunkingWarning`) when no chunking fits the
            budget; the recommendation's ``fits_budget`` says it either way.
        """
        if not isinstance(profiler, ChunkProfiler):
            raise TypeError(
                f"profiler must be a ChunkProfiler, got {type(profiler).__name__}"
            )
        shape = _shapes.validate_shape(array_shape)
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
            _number("worker_saturation", worker_saturation, low=0, high=math.inf,
                    low_open=True)
        s = self._settings()
        workers = _Workers.of(cluster)
        fit = _fit(profiler.observations())
        limit = s["memory_limit"] or workers.memory_limit or memory_limit()
        budget = self.memory_budget(limit)
        itemsize = int(dtype_size)
        array_bytes = math.prod(shape) * itemsize
        if array_bytes == 0:  # nothing to learn or to chunk: no measurement needed
            conc = concurrency or workers.threads or (fit.concurrency if fit else 1)
            peak = _model.predict(fit, 1, 1, conc).peak_bytes if fit else 0.0
            return Recommendation(_shapes.chunk_shape(shape, itemsize, 1), 0, "array", True,
                                  budget, limit, peak, 0.0, 1, conc, fit,
                                  reason="the array is empty")
        if fit is None:
            return None
        conc = concurrency or workers.threads or fit.concurrency
        processes, baseline = workers.processes, workers.baseline
        downstream = downstream or _graph.Downstream()
        wanted = {d for d in downstream.whole_dims if 0 <= d < len(shape)}
        whole = set(wanted)
        if current_chunks is not None and not downstream.square and not whole:
            whole = {
                d for d, (n, c) in enumerate(zip(shape, current_chunks))
                if len(c) == 1 and n > 1
            }
        upper = max(s["max_chunk_bytes"] or budget, 1)
        lower = min(s["min_chunk_bytes"], upper)
        def shape_for(target: float) -> tuple[tuple[int, ...], int, int, bool]:
            chunks = _shapes.chunk_shape(
                shape, itemsize, target, whole_dims=sorted(whole),
                min_bytes=lower, max_bytes=upper, multiple_of=storage_chunks,
            )
            blocks = math.prod(-(-n // c) for n, c in zip(shape, chunks))
            # The layout a downstream rechunk wants: then what only it reads never waits.
            aligned = bool(wanted) and all(chunks[d] == shape[d] for d in wanted)
            return chunks, math.prod(chunks) * itemsize, blocks, aligned

        choice = _model.choose_chunk_bytes(
            fit,
            array_bytes,
            budget_bytes=budget,
            min_chunk_bytes=lower,
            max_chunk_bytes=upper,
            overhead_target=s["overhead_target"],
            concurrency=conc,
            baseline_bytes=baseline,
            realize=lambda target: shape_for(target)[1:],
            processes=processes,
        )
        chunks, chunk_bytes, blocks, aligned = shape_for(choice.chunk_bytes)
        pred = _model.predict(fit, array_bytes, chunk_bytes, conc, baseline, aligned=aligned,
                              n_chunks=blocks, processes=processes)
        fits = pred.peak_bytes <= budget
        binding = choice.binding
        if whole and any(chunks[d] != shape[d] for d in whole):
            binding = "shape"
        reason = _REASONS[binding].format(conc=conc)
        notes = []
        if downstream.whole_dims:
            notes.append(
                f"dimension(s) {sorted(downstream.whole_dims)} whole because a later "
                f"{'/'.join(o for o in downstream.ops if o.startswith(_graph.WHOLE_AXIS_OPS))}"
                " needs them in one chunk"
            )
        elif downstream.square:
            notes.append("square chunks for the transpose/matmul that follows")
        elif whole:
            notes.append(f"dimension(s) {sorted(whole)} kept whole as they were")
        if storage_chunks is not None:
            notes.append(f"multiples of the storage chunks {storage_chunks}")
        if notes:
            reason += "; " + "; ".join(notes)
        saturation = workers.saturation(fit, array_bytes, chunk_bytes, budget=budget,
                                        n_chunks=blocks, aligned=aligned)
        scheduler_reason = (
            "" if saturation is None
            else _saturation_reason(saturation, budget, worker_saturation)
        )
        if not fits and warn:
            warnings.warn(
                f"no chunking of this {shape} array fits the memory budget of "
                f"{format_bytes(budget)} ({s['target_memory_percent']:g}% x "
                f"{s['safety_factor']:g} of {format_bytes(limit)}); the smallest predicted "
                f"peak is {format_bytes(pred.peak_bytes)}. Raise "
                f"'{_PREFIX}.memory-limit' or '{_PREFIX}.target-memory-percent', or "
                "lower min-chunk-bytes",
                AdaptiveChunkingWarning,
                stacklevel=3,
            )
        return Recommendation(
            chunks=chunks,
            chunk_bytes=chunk_bytes,
            binding=binding,
            fits_budget=fits,
            memory_budget_bytes=budget,
            memory_limit_bytes=limit,
            predicted_peak_bytes=pred.peak_bytes,
            predicted_seconds=pred.seconds,
            predicted_tasks=pred.n_tasks,
            concurrency=conc,
            model=fit,
            reason=reason,
            overhead_fraction=pred.overhead_fraction,
            downstream=downstream.ops,
            storage_chunks=storage_chunks,
            saturation=saturation,
            scheduler_reason=scheduler_reason,
            shape=tuple(int(n) for n in shape),
            current_chunks=None if current_chunks is None else tuple(
                max(c, default=0) for c in current_chunks),
        )

    def _setting(name: str, doc: str):  # noqa: N805 - builds properties below
        def fget(self):
            return self._settings()[name]

        def fset(self, value):
            old = self._given[name]
            self._given[name] = value
            try:
                self._settings()
            except Exception:
                self._given[name] = old
                raise

        return property(fget, fset, doc=doc)

    target_memory_percent = _setting(
        "target_memory_percent", "Percent of the memory limit for the predicted peak."
    )
    min_chunk_bytes = _setting("min_chunk_bytes", "Smallest chunk recommended, in bytes.")
    max_chunk_bytes = _setting(
        "max_chunk_bytes", "Largest chunk recommended, in bytes (None: the budget decides)."
    )
    safety_factor = _setting("safety_factor", "Margin (0-1] applied to the budget.")
    overhead_target = _setting(
        "overhead_target", "Largest acceptable fraction of time spent on per-task overhead."
    )
    memory_limit = _setting(
        "memory_limit", "Configured memory limit in bytes (None: the process's real limit)."
    )
    del _setting

    def __repr__(self) -> str:
        s = self._settings()
        return (
            f"ChunkSizeRecommender(target_memory_percent={s['target_memory_percent']:g}, "
            f"min_chunk_bytes={s['min_chunk_bytes']}, max_chunk_bytes={s['max_chunk_bytes']}, "
            f"safety_factor={s['safety_factor']:g})"
        )


# ---------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------


class _Profile:
    """Everything the engine knows about one profiled array."""

    __slots__ = (
        "id", "name", "shape", "dtype", "chunks", "nbytes", "chunk_bytes", "created",
        "profiler", "status", "error", "computes", "wall_seconds", "last", "downstream",
        "storage", "split_dims", "workers", "saturation", "signature", "unsaved",
        "fingerprint", "dims", "array",
    )

    def __init__(self, profile_id: str, array) -> None:
        self.id = profile_id
        self.array = weakref.ref(array)  # its graph, for visualize(), while it lives
        self.name = array.name
        self.shape = array.shape
        self.dtype = array.dtype
        self.chunks = array.chunks
        known = not any(math.isnan(s) for s in array.shape)
        self.nbytes = int(array.nbytes) if known else 0
        nchunks = math.prod(len(c) for c in array.chunks) if array.chunks else 1
        self.chunk_bytes = self.nbytes / max(1, nchunks)
        self.created = time.time()
        self.profiler = ChunkProfiler()
        self.status = "pending"
        self.error: str | None = None
        self.computes = 0
        self.wall_seconds = 0.0
        self.last: dict[str, Any] = {}
        self.downstream = _graph.Downstream()
        self.storage = _graph.storage_chunks(array)
        self.split_dims = sum(len(c) > 1 for c in array.chunks)
        self.workers: dict[str, dict[str, int]] = {}  # on a cluster: memory per worker
        self.saturation: float | None = None  # on a cluster: the scheduler's setting
        self.signature: str | None = None  # the workload of its last local compute
        # (observation, signature, fingerprint) of complete computes not yet stored
        self.unsaved: deque[tuple] = deque(maxlen=256)
        self.fingerprint: str | None = None  # the hardware and scheduler it ran on
        self.dims: tuple | None = None  # dimension names, when profiled as xarray data


class _GraphFacts:
    """What a compute's graph says about its tasks, from a local collector or a cluster.

    Locally the ``collector`` answers from the graph it instrumented; from a
    distributed scheduler, ``dependencies`` (key -> keys it reads, aliases
    resolved) and ``fused`` (key -> contraction fused into it) came with the
    records. ``hints`` maps each profile to its :class:`~._graph.Downstream` and
    ``signatures`` to the workload signature of this compute.
    """

    __slots__ = ("dependencies", "fused", "hints", "collector", "signatures")

    def __init__(self, dependencies, fused, hints, collector=None, signatures=None) -> None:
        self.dependencies, self.fused = dependencies, fused
        self.hints, self.collector = hints, collector
        self.signatures = signatures or {}  # profile -> the workload of this compute

    def dependencies_of(self, keys) -> dict:
        if self.collector is not None:
            return _attribution.dependencies_of(self.collector, keys)
        deps = self.dependencies
        return {k: deps[k] for k in keys if k in deps}

    def fused_ops(self, keys) -> dict:
        if self.collector is not None:
            return _attribution.fused_ops(self.collector, keys, _model.CONTRACTIONS)
        fused = self.fused
        return {k: fused[k] for k in keys if k in fused}


class AdaptiveChunkingEngine(_Learning, _Recording, _Labelled):
    """Profile array computes and recommend chunk sizes.

    The engine instruments the tasks of every compute that contains a profiled
    array (or of every array compute while enabled) through Dask's
    ``array_optimize`` hook, so plain ``compute()`` calls on the synchronous,
    threaded and processes schedulers fill the profiles.

    Parameters
    ----------
    profiler : ChunkProfiler, optional
        Aggregate of every profiled compute; a new one by default.
    recommender : ChunkSizeRecommender, optional
        Recommender used for profiles; a config-driven one by default.
    profile_chunks : bool, optional
        Record per-chunk metrics; config ``array.adaptive-chunking.profile`` when
        None.

    Examples
    --------
    >>> import dask.array as da
    >>> engine = AdaptiveChunkingEngine()
    >>> x = da.ones((1000, 1000), chunks=(100, 100))
    >>> pid = engine.profile_array(x)
    >>> _ = x.compute()
    >>> engine.get_profile(pid)["profiler_stats"]["total_chunks"]
    100
    >>> engine.close()
    """

    def __init__(
        self,
        profiler: ChunkProfiler | None = None,
        recommender: ChunkSizeRecommender | None = None,
        profile_chunks: bool | None = None,
    ):
        self.profiler = profiler if profiler is not None else ChunkProfiler()
        self.recommender = recommender if recommender is not None else ChunkSizeRecommender()
        self._profile_chunks = profile_chunks
        self._lock = threading.RLock()
        self._profiles: OrderedDict[str, _Profile] = OrderedDict()
        self._by_name: dict[str, list[_Profile]] = {}
        self._groups: OrderedDict[str, dict] = OrderedDict()  # Dataset id -> {var: id}
        self._pending: dict[str, tuple[list[frozenset], set[_Profile]]] = {}
        self._failed_computes: OrderedDict[str, tuple] = OrderedDict()
        self._abandoned: deque[tuple] = deque()
        self._computes = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=100)
        self._stores: dict[str, Any] = {}  # history database path -> HistoryStore
        self._target: tuple | None = None  # (cache key, auto-rechunk's target or None)
        # Computes sent to a distributed scheduler: compute id -> (client, when sent).
        self._remote: OrderedDict[str, Any] = OrderedDict()
        _engines.add(self)

    # -- settings ---------------------------------------------------------

    @property
    def profile_chunks(self) -> bool:
        """Whether per-chunk metrics are recorded (config ``profile`` when unset)."""
        return _flag("profile", self._profile_chunks)

    @profile_chunks.setter
    def profile_chunks(self, value: bool) -> None:
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"profile_chunks must be True or False, got {value!r}")
        self._profile_chunks = value

    @property
    def enabled(self) -> bool:
        """Whether every array compute is profiled (config ``enabled``)."""
        return _flag("enabled")

    # -- profiles ---------------------------------------------------------

    def profile_array(self, array) -> str:
        """Start profiling ``array``; return the id for :meth:`get_profile`.

        Every later compute that contains ``array`` (alone, with other arrays,
        or as the input of a larger expression) adds to this profile.

        ``array`` may also be an xarray ``DataArray`` or ``Dataset`` backed by
        Dask. A DataArray's profile knows its dimension names; a Dataset's id
        stands for one profile per variable backed by Dask (``get_profile(id)
        ["variables"]``), and its recommendations give one chunk size per
        dimension.
        """
        _expressions.check_supported(array, "profile_array")
        if _xarray.is_xarray(array):
            return self._profile_xarray(array)
        return self._start_profile(array).id

    def _start_profile(self, array) -> _Profile:
        from dask.array.core import Array

        if not isinstance(array, Array):
            raise TypeError(
                f"profile_array expects a dask.array.Array (or an xarray object backed by "
                f"Dask), got {type(array).__name__}; wrap NumPy data with "
                "dask.array.from_array(data, chunks=...)"
            )
        _config.validate()  # a bad setting fails here, not silently inside a compute
        pid = f"{key_split(array.name)}-{uuid.uuid4().hex[:8]}"
        state = _Profile(pid, array)
        with self._lock:
            self._profiles[pid] = state
            self._by_name.setdefault(array.name, []).append(state)
            limit = _read("max-profiles")
            while len(self._profiles) > limit:
                self._drop(next(iter(self._profiles)), "max-profiles")
        self._bound_memory()
        _install_hook()
        _prepare_cluster()
        return state

    def _autosave(self, states, status: str) -> None:
        """Store a finished local compute's profiles while ``history`` is on."""
        if status != "complete" or not _flag("history"):
            return
        for state in states:
            try:
                self.save_profile(state.id)
            except KeyError:
                pass  # dropped meanwhile
            except Exception as e:  # a history problem never breaks the compute
                _errors.warn_once("history", "adaptive chunking could not store a profile "
                                 f"in its history ({type(e).__name__}: {e})")
        _sync_auto_rechunk(self)

    def _bound_memory(self) -> None:
        """Keep the profiles' samples and summaries within ``max-memory``.

        Summaries (per-compute observations, at most 256 per profile) and the
        profiles themselves may take half of the ceiling: beyond it the oldest
        profiles are dropped. The rest is shared equally by the raw-record samples,
        which are thinned (they stay uniform samples; aggregates stay exact): a
        profile that has seen few records keeps them all, and the others share
        what is left equally (:func:`model.water_level`).
        """
        ceiling = _read("max-memory")
        if ceiling is None:  # no ceiling (any more): no profile is held to a share
            with self._lock:
                for p in [s.profiler for s in self._profiles.values()] + [self.profiler]:
                    if p._limit is not None:
                        p._set_limit(None)
            return
        with self._lock:
            states = list(self._profiles.values())
            fixed = self.profiler._summary_bytes + sum(
                PROFILE_COST + s.profiler._summary_bytes for s in states
            )
            while fixed > ceiling / 2 and len(states) > 1:
                oldest = states.pop(0)
                fixed -= PROFILE_COST + oldest.profiler._summary_bytes
                self._drop(oldest.id, "max-memory")
            profilers = [s.profiler for s in states] + [self.profiler]
            budget = max(0, int((ceiling - fixed) // RECORD_COST))
            most = _read("max-records")
            cap = _model.water_level([min(p._reservoir.seen, most) for p in profilers],
                                     budget)
            for p in profilers:
                if p._limit != cap:
                    p._set_limit(cap)

    def _held_bytes(self) -> int:
        """An estimate of the memory the engine's profiles hold."""
        with self._lock:
            return self.profiler._held_bytes() + sum(
                PROFILE_COST + s.profiler._held_bytes() for s in self._profiles.values()
            )

    def _drop(self, profile_id: str, why: str | None = None) -> None:
        if why is not None:
            logger.info("adaptive chunking: profile %s dropped, the oldest beyond the "
                        "'%s.%s' limit", profile_id, _PREFIX, why)
        state = self._profiles.pop(profile_id)
        same = self._by_name.get(state.name, [])
        if state in same:
            same.remove(state)
        if not same:
            self._by_name.pop(state.name, None)

    def remove_profile(self, profile_id: str) -> None:
        """Stop profiling and forget ``profile_id`` (a Dataset's: all its variables')."""
        with self._lock:
            members = self._groups.pop(profile_id, None) if isinstance(profile_id, str) \
                else None
            if members is not None:
                for pid in members.values():
                    if pid in self._profiles:
                        self._drop(pid)
                return
            self._state(profile_id)
            self._drop(profile_id)

    @property
    def profile_ids(self) -> list[str]:
        """Ids of the profiles kept, oldest first."""
        with self._lock:
            return list(self._profiles)

    def _state(self, profile_id: str) -> _Profile:
        try:
            return self._profiles[profile_id]
        except (KeyError, TypeError):
            if isinstance(profile_id, str) and profile_id in self._groups:
                raise KeyError(
                    f"{profile_id!r} is the profile of a Dataset; this needs one "
                    f"variable's: {self._groups[profile_id]}"
                ) from None
            raise KeyError(
                f"no profile with id {profile_id!r}; ids come from profile_array(), and "
                f"the oldest profiles are dropped beyond '{_PREFIX}.max-profiles' or "
                f"'{_PREFIX}.max-memory'; newest known ids: {list(self._profiles)[-5:]}"
            ) from None

    def get_profile(self, profile_id: str) -> dict[str, Any]:
        """The profile of one array: its measurements and a recommended chunking.

        Keys: ``array_shape``, ``array_dtype``, ``current_chunks``,
        ``execution_time_s`` (wall time of the profiled computes),
        ``profiler_stats`` (:meth:`ChunkProfiler.get_stats`),
        ``recommended_chunks`` (None until a compute was profiled), ``status``
        (pending, running, complete, failed or incomplete), ``recommendation``
        (the explanation), ``current_prediction`` (what the model predicts for
        the array in its current chunks, to set against the measured
        ``last_compute``) and more. For an xarray object, ``dims`` and
        ``recommended_chunks_by_dim``; a Dataset's profile holds its variables'
        profiles under ``variables`` and the chunks by dimension for
        ``Dataset.chunk`` under ``recommended_chunks``.

        The dict shows itself as a short summary in a terminal and as a table
        in a notebook; ``dict(profile)`` is the plain dict.
        """
        self._drain()
        with self._lock:
            members = self._groups.get(profile_id) if isinstance(profile_id, str) else None
            state = None if members is not None else self._state(profile_id)
        if members is not None:
            return self._dataset_profile(profile_id, members)
        rec = self._recommend(state)
        if rec is not None and state.dims is not None:
            rec = replace(rec, dims=state.dims)
        return _views.Profile({
            "profile_id": state.id,
            "array_name": state.name,
            "array_shape": state.shape,
            "array_dtype": str(state.dtype),
            "current_chunks": state.chunks,
            "execution_time_s": state.wall_seconds,
            "profiler_stats": state.profiler.get_stats(),
            "recommended_chunks": None if rec is None else rec.chunks,
            "recommendation_unavailable": self._unavailable(state) if rec is None else None,
            "recommendation": None if rec is None else rec.to_dict(),
            "status": state.status,
            "error": state.error,
            "computes": state.computes,
            "last_compute": dict(state.last),
            "workers": {w: dict(v) for w, v in state.workers.items()},
            "dims": state.dims,
            "recommended_chunks_by_dim": None if rec is None else rec.chunks_by_dim,
            "current_prediction": None if rec is None else self._at_current(state, rec.model),
        })

    def _at_current(self, state: _Profile, fit) -> dict[str, Any] | None:
        """What the model (``fit``, the recommendation's) predicts for the profiled
        array in its own chunks: set against the measured peak and time, it says how
        far to trust the model."""
        import dask.array as da

        if fit is None:
            return None
        stand_in = da.empty(state.shape, dtype=state.dtype, chunks=state.chunks)
        return self._predict([state], stand_in, state.chunks, fit)

    def get_profiler(self, profile_id: str) -> ChunkProfiler:
        """The :class:`ChunkProfiler` of one profile (its sampled ``metrics`` and more)."""
        with self._lock:
            return self._state(profile_id).profiler

    def plot_profile(self, profile_id: str, filename=None):
        """Pictures of a profile: per-task time and memory, process memory over the
        computes, and predicted time and peak memory against chunk size.

        ``filename`` ending ``.html`` is written with bokeh, ``.png``, ``.svg`` or
        ``.pdf`` with matplotlib; returns the bokeh layout or matplotlib Figure. See
        ``dask.array._adaptive_chunking.plots.plot_profile``.
        """
        from dask.array._adaptive_chunking import plots

        return plots.plot_profile(self, profile_id, filename)

    def visualize(self, profile_id: str, filename="adaptive-chunking.svg", **kwargs):
        """The profiled array's task graph (or ``collection=``'s), tasks coloured by
        the memory measured for them, drawn by ``dask.visualize`` (graphviz). See
        ``dask.array._adaptive_chunking.plots.visualize``.
        """
        from dask.array._adaptive_chunking import plots

        return plots.visualize(self, profile_id, filename, **kwargs)

    @staticmethod
    def _unavailable(state: _Profile) -> str:
        if any(math.isnan(s) for s in state.shape):
            return (
                f"the array's shape {state.shape} has unknown (NaN) sizes; call "
                "array.compute_chunk_sizes() (or to_dask_array(lengths=True)) and profile "
                "the result"
            )
        if state.computes == 0:
            return ("no compute of this array has been profiled yet" + (
                f"; the last attempt was not profiled: {state.error}" if state.error else ""))
        return ("the profiled computes ran no task that works on this array: its chunks "
                "are data already in memory (da.from_array of a NumPy array, a persisted "
                "array); profile an expression computed from it")

    def _recommend(self, state, array=None, downstream=None, *, warn: bool = True,
                   storage: tuple[int, ...] | None = None) -> Recommendation | None:
        """The recommendation for ``array`` (default: the profiled one), made now.

        ``state`` is one profile or a list of them (pilots of one workload at
        several chunk sizes), whose measurements are pooled with the stored ones of
        their workloads (:meth:`_pool`).
        """
        states = state if isinstance(state, list) else [state]
        state = states[-1]
        if state.computes == 0 or any(math.isnan(s) for s in state.shape):
            return None
        if array is None:
            shape, dtype, chunks, storage = state.shape, state.dtype, state.chunks, state.storage
        else:
            shape, dtype, chunks = array.shape, array.dtype, array.chunks
            storage = storage or _graph.storage_chunks(array)
        profiler = self._pool(states)
        if downstream is None:
            downstream = self._hints(states, shape)
        return self.recommender.recommend(
            profiler,
            shape,
            max(1, dtype.itemsize),
            current_chunks=chunks,
            storage_chunks=storage,
            downstream=downstream,
            cluster=self._cluster_of(states),
            worker_saturation=next(
                (s.saturation for s in reversed(states) if s.workers), None
            ),
            warn=warn,
        )

    def _pool(self, states: list[_Profile]) -> ChunkProfiler:
        """A profiler holding the observations of ``states`` and the stored ones of
        their workloads; the stored go in first, so that of the newest 256 a
        profiler keeps, the profiles' own are never the ones left out."""
        stored = self._stored(states)
        if len(states) == 1 and not stored:
            return states[0].profiler
        profiler = ChunkProfiler()
        for observation in stored + _pooled(states):
            profiler._record_compute(observation)
        return profiler

    @staticmethod
    def _cluster_of(states: list[_Profile]) -> dict | None:
        """The workers of the newest of ``states`` profiled on a cluster, if any."""
        return next((s.workers for s in reversed(states) if s.workers), None)

    @staticmethod
    def _hints(states: list[_Profile], shape: tuple) -> _graph.Downstream:
        """What the profiled computes said the later operations want, for ``shape``.

        Hints of every profile are merged. Whole dimensions only carry over to an
        array of the profiled arrays' number of dimensions, and not when they are
        all of them (a small pilot rechunked to "auto" fits in one chunk, which says
        nothing about the full array: pass ``workload=`` for that).
        """
        merged = _graph.Downstream.merge(
            s.downstream if len(s.shape) == len(shape)
            else _graph.Downstream(frozenset(), s.downstream.square, s.downstream.ops)
            for s in states
        )
        if len(merged.whole_dims) >= len(shape):
            merged = _graph.Downstream(frozenset(), merged.square, merged.ops)
        return merged

    @staticmethod
    def _downstream_of(array, workload) -> _graph.Downstream | None:
        """What the operations of ``workload`` applied to ``array`` want."""
        if workload is None:
            return None
        if not isinstance(workload, (list, tuple)):
            workload = [workload]
        if not workload:
            raise ValueError(
                "workload is empty: pass the expression computed from the array, or "
                "leave workload out to use what the profiled computes showed"
            )
        found = []
        for collection in workload:
            if not dask.is_dask_collection(collection):
                raise TypeError(
                    f"workload must be a dask collection (or a list of them) computed "
                    f"from the array, got {type(collection).__name__}"
                )
            graph = collection.__dask_graph__()
            if not isinstance(graph, HighLevelGraph) or array.name not in graph.layers:
                raise ValueError(
                    "workload does not use this array: pass the expression that will be "
                    "computed from it, e.g. engine.recommend(x, pid, workload=(x + 1).sum())"
                )
            found.append(_graph.downstream(graph, array.name, array.shape))
        return _graph.Downstream.merge(found)

    def _source(self, array, profile_id, what: str, workload=None, newest: bool = False
                ) -> list[_Profile]:
        """The profiles whose measurements decide for ``array``."""
        from dask.array.core import Array

        if not isinstance(array, Array):
            raise TypeError(
                f"{what} expects a dask.array.Array, got {type(array).__name__}"
            )
        if any(math.isnan(s) for s in array.shape):
            raise ValueError(
                f"the array's shape {array.shape} has unknown (NaN) sizes; call "
                "array.compute_chunk_sizes() first"
            )
        if profile_id is not None:
            ids = list(profile_id) if isinstance(profile_id, (list, tuple)) else [profile_id]
            if not ids:
                raise ValueError("profile_id is an empty list; pass at least one profile id")
            with self._lock:
                states = [self._state(i) for i in ids]
            for i, state in zip(ids, states):
                if state.computes == 0:
                    raise ValueError(
                        f"profile {i!r} has no measurements yet; compute the profiled "
                        "array first"
                    )
            return states
        with self._lock:
            states = [s for s in self._by_name.get(array.name, []) if s.computes]
        if not states and workload is not None:
            states = self._from_history(array, workload)
        elif not states and newest:  # the newest workload of this kind run on this hardware
            row = self._newest_workload(array.ndim, array.dtype)
            if row is not None:
                states = self._stand_in(array, row["signature"])
                logger.info(
                    "adaptive chunking: %s for %s %s from the history of the newest "
                    "workload of its kind run here (signature %s, stored for %s); pass "
                    "workload= to name another", what, array.shape, array.dtype,
                    row["signature"], tuple(row["shape"]),
                )
        if not states:
            raise ValueError(
                "no profile measured this array: profile it with profile_array() and "
                "compute it, or pass the profile_id of a pilot (the same workload on a "
                "smaller array), or pass workload= (what you will compute from it) to "
                "use the history of that workload"
            )
        return states[-1:]

    def recommend(
        self, array, profile_id: str | None = None, *, workload=None
    ) -> Recommendation:
        """Recommend chunks for ``array`` from what a profile measured.

        Parameters
        ----------
        array : dask.array.Array
            The array to chunk. It may be larger or smaller than the profiled one:
            a pilot on a small instance of a workload recommends for the full size.
        profile_id : str or list of str, optional
            The profile to learn from; default the newest profile of ``array``
            itself that has been computed. Several ids pool their measurements:
            a pilot computed at two chunk sizes tells the fixed cost of a task
            from its cost per byte.
        workload : dask collection or list of them, optional
            What will be computed from ``array``. Its graph says what the later
            operations want (a rechunk to rows, an FFT axis, a transpose), at this
            array's size; by default the profiled computes tell.

        Returns
        -------
        Recommendation
            The chunks, the binding constraint and reason, and the predicted peak
            memory, tasks and time.

        Examples
        --------
        >>> import dask.array as da
        >>> engine = AdaptiveChunkingEngine()
        >>> pilot = da.random.random((1000, 1000), chunks=(100, 100))
        >>> pid = engine.profile_array(pilot)
        >>> _ = (pilot + 1).sum().compute()
        >>> full = da.random.random((20000, 20000), chunks=(100, 100))
        >>> rec = engine.recommend(full, pid)
        >>> rec.chunk_bytes > 100 * 100 * 8, rec.fits_budget
        (True, True)
        >>> engine.close()

        An xarray ``DataArray`` gets a recommendation that also gives its chunks by
        dimension name (``rec.chunks_by_dim``); a ``Dataset`` gets a
        ``DatasetRecommendation`` with one size per dimension for ``Dataset.chunk``
        and each variable's own recommendation. Data opened from Zarr or netCDF
        keeps chunks that are whole multiples of the store's chunks.
        """
        _expressions.check_supported(array, "recommend")
        if _xarray.is_xarray(array):
            return self._recommend_xarray(array, profile_id, workload)
        return self._recommendation(array, profile_id, workload)

    def _recommendation(self, array, profile_id, workload=None, newest: bool = False,
                        what: str = "recommend", storage=None) -> Recommendation:
        _config.validate()
        self._drain()
        states = self._source(array, profile_id, what, workload, newest)
        rec = self._recommend(states, array, self._downstream_of(array, workload),
                              storage=storage)
        if rec is None:
            raise ValueError(
                f"profile {[s.id for s in states]} cannot recommend chunks: "
                f"{self._unavailable(states[-1])}"
            )
        return rec

    def predict(self, array, chunks, profile_id: str | None = None, *, workload=None
                ) -> dict[str, Any]:
        """Predicted time, tasks and peak memory of computing ``array`` in ``chunks``.

        ``chunks`` is anything ``array.rechunk`` accepts; ``profile_id`` and
        ``workload`` as in :meth:`recommend` (with ``workload`` alone, the
        prediction comes from the history of that workload). The keys match the recommendation's
        (``predicted_peak_memory_mb``, ``predicted_time_s``, ``predicted_tasks``...).
        From a profile made on a ``dask.distributed`` cluster the peak is one
        worker's, and ``scheduler_config`` gives the ``worker-saturation`` for these
        chunks, with the worker's predicted peak with it
        (``predicted_queued_peak_memory_mb``) and with queuing off
        (``predicted_unqueued_peak_memory_mb``, an upper bound).

        >>> import dask.array as da
        >>> engine = AdaptiveChunkingEngine()
        >>> x = da.random.random((2000, 2000), chunks=(100, 100))
        >>> pid = engine.profile_array(x)
        >>> _ = x.sum().compute()
        >>> small, large = engine.predict(x, 100), engine.predict(x, 1000)
        >>> small["predicted_tasks"] > large["predicted_tasks"]
        True
        >>> engine.close()

        For an xarray ``DataArray``, ``chunks`` may be keyed by dimension name.
        """
        _expressions.check_supported(array, "predict")
        if _xarray.is_xarray(array):
            if _xarray.is_dataset(array):
                raise TypeError("predict takes one array; pass one variable of the Dataset, "
                                "e.g. ds['name']")
            chunks = _xarray.axis_chunks(tuple(array.dims), chunks)
            profile_id = self._member_ids(profile_id, array.name)
            array = _xarray.dask_data(array, "predict")
        _config.validate()
        self._drain()
        states = self._source(array, profile_id, "predict", workload)
        fit = _fit(self._pool(states).observations())  # as recommend() pools them
        return self._predict(states, array, _shapes.normalized(array, chunks), fit, workload)

    def _predict(self, states, array, normalized, fit, workload=None) -> dict[str, Any]:
        """:meth:`predict` for Dask's normal-form chunks, with the model already fitted."""
        if fit is None and math.prod(array.shape) == 0:
            return {"chunks": tuple(max(c, default=0) for c in normalized),
                    "chunk_size_mb": 0.0, "predicted_peak_memory_mb": 0.0,
                    "predicted_time_s": 0.0, "predicted_tasks": 0,
                    "predicted_overhead_fraction": 0.0, "fits_budget": True,
                    "memory_budget_mb": self.recommender.memory_budget() / MiB,
                    "concurrency": 1}
        if fit is None:
            raise ValueError(
                f"profile {[s.id for s in states]} cannot predict: "
                f"{self._unavailable(states[-1])}"
            )
        itemsize = max(1, array.dtype.itemsize)
        largest = tuple(max(c, default=0) for c in normalized)
        chunk_bytes = max(1, math.prod(largest) * itemsize)
        array_bytes = max(1, math.prod(array.shape) * itemsize)
        hints = self._downstream_of(array, workload) or self._hints(states, array.shape)
        whole = hints.whole_dims
        aligned = bool(whole) and all(len(normalized[d]) == 1 for d in whole)
        workers = _Workers.of(self._cluster_of(states))
        n_chunks = math.prod(len(c) for c in normalized)
        pred = _model.predict(fit, array_bytes, chunk_bytes, workers.threads or None,
                              workers.baseline, aligned=aligned, n_chunks=n_chunks,
                              processes=workers.processes)
        budget = self.recommender.memory_budget(
            None if self.recommender.memory_limit else workers.memory_limit
        )
        scheduler = {}
        sat = workers.saturation(fit, array_bytes, chunk_bytes, budget=budget,
                                 n_chunks=n_chunks, aligned=aligned)
        if sat is not None:
            scheduler = {
                "scheduler_config": _scheduler_config(sat),
                "predicted_queued_peak_memory_mb": sat.peak_bytes / MiB,
                "predicted_unqueued_peak_memory_mb": sat.unqueued_peak_bytes / MiB,
            }
        return {
            "chunks": largest,
            "chunk_size_mb": chunk_bytes / MiB,
            "predicted_peak_memory_mb": pred.peak_bytes / MiB,
            "predicted_time_s": pred.seconds,
            "predicted_tasks": pred.n_tasks,
            "predicted_overhead_fraction": pred.overhead_fraction,
            "fits_budget": pred.peak_bytes <= budget,
            "memory_budget_mb": budget / MiB,
            "concurrency": workers.threads or fit.concurrency,
            **scheduler,
        }

    def apply_recommendation(self, array, recommendation=None):
        """Rechunk ``array`` to ``recommendation``: chunks, a profile id, or None.

        With a profile id, the chunks that profile recommends for ``array`` (which
        may be another size than the profiled array, see :meth:`recommend`); with
        None, those of the newest profile of this same array, or, while
        ``auto-rechunk`` is on and none profiled it, those the history recommends
        from the newest stored workload of its number of dimensions and dtype
        (logged at INFO). The values are unchanged; only the chunking differs.

        An xarray ``DataArray`` or ``Dataset`` comes back as the same type, rechunked
        with its ``.chunk`` method (a Dataset's variables held in memory stay in
        memory); ``recommendation`` may then also be chunks by dimension name or a
        ``DatasetRecommendation``.
        """
        _expressions.check_supported(array, "apply_recommendation")
        from dask.array.core import Array

        if _xarray.is_xarray(array):
            return self._apply_xarray(array, recommendation)
        if not isinstance(array, Array):
            raise TypeError(
                f"apply_recommendation expects a dask.array.Array (or an xarray object "
                f"backed by Dask), got {type(array).__name__}"
            )
        chunks = recommendation
        if chunks is None:
            chunks = self._recommendation(array, None, newest=_flag("auto-rechunk"),
                                          what="apply_recommendation").chunks
        elif self._are_ids(chunks, array):
            chunks = self.recommend(array, chunks).chunks
        if isinstance(chunks, Recommendation):
            chunks = chunks.chunks
        normalized = _shapes.normalized(array, chunks)
        if normalized == array.chunks:
            return array
        return array.rechunk(normalized)

    def _are_ids(self, value, array) -> bool:
        """Whether ``value`` (an argument that may be chunks) is profile ids: known
        ones, or a string that is no chunk size, which :meth:`_state` then names as
        an unknown id."""
        ids = value if isinstance(value, list) or (
            isinstance(value, tuple) and value and all(isinstance(i, str) for i in value)
        ) else [value]
        if not ids or not all(isinstance(i, str) for i in ids):
            return False
        with self._lock:
            if all(i in self._profiles or i in self._groups for i in ids):
                return True
        if not isinstance(value, str):
            return False
        try:  # "auto" and "128 MiB" are chunks
            _shapes.normalized(array, value)
            return False
        except ValueError as e:
            try:
                self._state(value)
            except KeyError as unknown:
                raise ValueError(f"{e}; nor is it a profile id: {unknown.args[0]}") from None
            raise

    def apply_scheduler_config(self, recommendation, client=None) -> dict[str, Any]:
        """Set a recommendation's scheduler settings on a running distributed scheduler.

        Parameters
        ----------
        recommendation : Recommendation, str or dict
            A :class:`Recommendation`, a profile id (its current recommendation) or
            a ``scheduler_config`` dictionary, as in a profile's ``recommendation``.
        client : distributed.Client, optional
            Default: the default client.

        Returns
        -------
        dict
            The settings as they were, to restore them later with this method.

        The setting takes effect for the next tasks the scheduler assigns; apply it
        between computes (it raises ``RuntimeError`` while root tasks are queued).
        A new cluster takes it from ``dask.config.set(rec.scheduler_config)``
        made before it starts.
        """
        config = recommendation
        if isinstance(config, str):
            self._drain()
            with self._lock:
                state = self._state(config)
            rec = self._recommend(state)
            if rec is None:
                raise ValueError(
                    f"profile {config!r} has no recommendation yet: "
                    f"{self._unavailable(state)}"
                )
            config = rec.scheduler_config
        elif isinstance(config, Recommendation):
            config = config.scheduler_config
        if not isinstance(config, Mapping):
            raise TypeError(
                "recommendation must be a Recommendation, a profile id or a "
                f"scheduler_config dict, got {type(recommendation).__name__}"
            )
        unknown = set(config) - {SATURATION_KEY}
        if unknown:
            raise ValueError(
                f"unknown scheduler setting(s) {sorted(unknown)}; only {SATURATION_KEY!r} "
                "can be applied"
            )
        if not config:
            raise ValueError(
                "this recommendation has no scheduler settings: it was not made from a "
                "compute on a dask.distributed cluster"
            )
        value = config[SATURATION_KEY]
        value = math.inf if value == "inf" else value
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            value > 0
        ):
            raise ValueError(
                f"{SATURATION_KEY} must be a number > 0 or 'inf', got {config[SATURATION_KEY]!r}"
            )
        if client is not None and not callable(getattr(client, "run_on_scheduler", None)):
            raise TypeError(f"client must be a distributed.Client, got {client!r}")
        client = client or _cluster.client_for_compute()
        if client is None:
            raise ValueError(
                "no dask.distributed client: start one, or pass client=, to apply "
                "scheduler settings"
            )
        old = _cluster.set_worker_saturation(client, float(value))
        return {SATURATION_KEY: "inf" if math.isinf(old) else old}

    def get_telemetry(self) -> dict[str, Any]:
        """Engine state: tracked arrays, memory pressure and aggregate statistics.

        A dict that shows itself as a short summary in a terminal and as a table in a
        notebook.
        """
        _config.validate()
        self._drain()
        with self._lock:
            statuses = {pid: s.status for pid, s in self._profiles.items()}
            recent = list(self._recent)
        pressure = MemoryPressure.snapshot()
        return _views.Telemetry({
            "enabled": self.enabled,
            "profile_chunks": self.profile_chunks,
            "tracked_arrays": len(statuses),
            "profiles": statuses,
            "computes_profiled": self._computes,
            "memory_pressure": pressure.to_dict(),
            "under_pressure": pressure.is_pressure(),
            "memory_limit_mb": memory_limit() / MiB,
            "memory_budget_mb": self.recommender.memory_budget() / MiB,
            "profiler_stats": self.profiler.get_stats(),
            "recent_computes": recent[-10:],
            "workers": self._worker_pressure(),
        })

    @staticmethod
    def _worker_pressure() -> dict[str, dict[str, float]]:
        """Per-worker memory pressure of the attached distributed cluster, if any."""
        out = {}
        for addr, w in _cluster_workers().items():
            limit = w.get("memory_limit") or memory_limit()
            pressure = MemoryPressure.of(w.get("metrics", {}).get("memory", 0), limit)
            out[addr] = dict(pressure.to_dict(), under_pressure=pressure.is_pressure(),
                             nthreads=w.get("nthreads", 0))
        return out

    def close(self) -> None:
        """Forget every profile; stop instrumenting if no other engine needs it."""
        with self._lock:
            self._profiles.clear()
            self._by_name.clear()
            self._groups.clear()
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
        _engines.discard(self)

    def __repr__(self) -> str:
        return (
            f"<AdaptiveChunkingEngine profiles={len(self._profiles)} "
            f"computes={self._computes} enabled={self.enabled}>"
        )


# ---------------------------------------------------------------------------
# The array_optimize hook and the global engine
# ---------------------------------------------------------------------------

_engines: weakref.WeakSet[AdaptiveChunkingEngine] = weakref.WeakSet()
_engine: AdaptiveChunkingEngine | None = None
_engine_lock = threading.Lock()


_MISSING = object()



class _ProfilingOptimizer:
    """The ``array_optimize`` function the engine installs.

    It runs the optimization Dask would run without it (Dask's own, or the
    function configured before, with Dask's rule that a falsy value means no
    optimization), then lets one engine instrument the result: the first engine
    that profiles an array of this graph (the global engine first), else the global
    engine when it is enabled. With nothing to profile it returns the optimized
    graph untouched. Pickled (for a distributed scheduler) it becomes the plain
    optimization: measured tasks only make sense in this process.
    """

    def __init__(self, previous=_MISSING):
        self.previous = previous

    def base(self):
        """The optimization Dask would run without the engine."""
        from dask.array.optimization import optimize
        from dask.base import dont_optimize

        previous = self.previous
        if previous is _MISSING:
            return optimize
        if callable(previous):
            return previous
        return optimize if previous else dont_optimize

    def __call__(self, dsk, keys, **kwargs):
        chosen = None
        try:
            _sync_auto_rechunk()
            engines = sorted(list(_engines), key=lambda e: e is not _engine)
            plans = []
            for engine in engines:
                plan = engine._plan(dsk, keys)
                if plan is not None:
                    plans.append((engine, plan))
            if not plans and _engine is None and _flag("enabled"):
                engine = get_adaptive_engine()  # enabled by config alone
                plan = engine._plan(dsk, keys)
                if plan is not None:
                    plans.append((engine, plan))
            chosen = next((p for p in plans if p[1][0]), plans[0] if plans else None)
        except Exception as e:
            _errors.warn_engine_error(e)
        out = self.base()(dsk, keys, **kwargs)
        if chosen is not None:
            engine, plan = chosen
            try:
                out = engine._instrument(out, keys, plan)
            except Exception as e:
                _errors.warn_engine_error(e)
                for state in plan[0]:  # say why, where the profile is read
                    state.error = f"{type(e).__name__}: {e}"
        return out

    def __reduce__(self):
        base = self.base()
        try:
            client = _cluster.client_for_compute()
            engine = _engine if _engine is not None else next(iter(_engines), None)
            if client is not None and engine is not None:
                named, shapes = engine._remote_names()
                everything = engine is _engine and engine.enabled
                if named or everything:
                    # No blocking call here: distributed pickles under a client lock.
                    if not _cluster.plugin_ready(client, _remote_record_cap()):
                        return _plain_optimizer, (base,)
                    remote, cid = _cluster.snapshot(base, named, everything, shapes)
                    engine._sent(cid, client)
                    return remote.__reduce__()
        except Exception as e:  # profiling must never break the compute
            _errors.warn_engine_error(e)
        return _plain_optimizer, (base,)


#: Compute ids sent to clusters and not yet drained.
_MAX_REMOTE = 4096


def _plain_optimizer(base):
    return base


#: Estimated memory of one task record held by the scheduler plugin.
REMOTE_RECORD_COST = 400


def _remote_record_cap() -> int:
    """Task records the scheduler keeps, all computes together, until drained.

    ``max-memory`` worth of them; without a ceiling, ``max-records`` x 100.
    """
    ceiling = _read("max-memory")
    if ceiling is not None:
        return max(ceiling // REMOTE_RECORD_COST, 1)
    return max(_read("max-records"), 1) * 100


def _prepare_cluster() -> None:
    """Register the plugin on the current distributed client's scheduler, if any.

    Called where blocking is safe (``profile_array``, ``enable_adaptive_chunking``),
    so that the next compute on the cluster is profiled.
    """
    try:
        client = _cluster.client_for_compute()
        if client is not None:
            _cluster.ensure_plugin(client, _remote_record_cap())
    except Exception as e:  # profiling must never break the caller
        logger.debug("adaptive chunking could not prepare the cluster: %s", e)


def _install_hook() -> None:
    """Make the engine's optimizer Dask's ``array_optimize`` (idempotent)."""
    with _engine_lock:
        current = dask.config.config.get("array_optimize", _MISSING)
        if isinstance(current, _ProfilingOptimizer):
            return
        dask.config.set(array_optimize=_ProfilingOptimizer(current))


def _uninstall_hook() -> None:
    """Give ``array_optimize`` back the value it had before the engine."""
    with _engine_lock:
        current = dask.config.config.get("array_optimize", _MISSING)
        if not isinstance(current, _ProfilingOptimizer):
            return
        if current.previous is _MISSING:
            dask.config.config.pop("array_optimize", None)
        else:
            dask.config.set(array_optimize=current.previous)


#: ``array.chunk-size`` as auto-rechunk sets it, and what to give back.
_chunk_size = _config.ChunkSizeOverride()


def _sync_auto_rechunk(engine: AdaptiveChunkingEngine | None = None) -> None:
    """Make ``array.chunk-size`` follow ``array.adaptive-chunking.auto-rechunk``.

    While it is on, Dask's auto-chunking gets the byte target the history
    recommends (:meth:`AdaptiveChunkingEngine._auto_target`); when it is off, or
    nothing comparable is stored, Dask's own value is back. Run when the module is
    imported, by :func:`get_adaptive_engine`, at each array compute and after each
    stored compute. A problem (a bad setting, an unreadable history) becomes an
    :class:`AdaptiveChunkingWarning` each time, and ``array.chunk-size`` is left as
    it is.
    """
    try:
        if not _flag("auto-rechunk"):
            if _chunk_size.applied is not None:
                _chunk_size.restore(f"'{_PREFIX}.auto-rechunk' is false")
            return
        if _expressions.skip_auto_rechunk():
            return
        engine = engine if engine is not None else _engine
        if engine is None:
            engine = get_adaptive_engine()  # which syncs
            return
        target = engine._auto_target()
        if target is None:
            if _chunk_size.applied is not None:
                _chunk_size.restore("nothing comparable in the history")
            elif not _warned_no_history.is_set():
                _warned_no_history.set()
                logger.info("adaptive chunking: auto-rechunk is on, but there is no stored "
                            "compute from comparable hardware to learn from (or '%s.history' "
                            "is false); Dask's array.chunk-size stays until there is",
                            _PREFIX)
            return
        _chunk_size.apply(*target)
    except Exception as e:  # a bad setting or an unreadable history: say so, go on
        warnings.warn(f"adaptive chunking could not apply auto-rechunk ({type(e).__name__}: "
                      f"{e}); array.chunk-size is left as it is", AdaptiveChunkingWarning,
                      stacklevel=2)


_warned_no_history = threading.Event()


def get_adaptive_engine() -> AdaptiveChunkingEngine:
    """The process-wide engine, created on first use.

    >>> get_adaptive_engine() is get_adaptive_engine()
    True
    """
    global _engine
    engine = _engine
    if engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = AdaptiveChunkingEngine()
            engine = _engine
    _install_hook()
    _sync_auto_rechunk(engine)
    return engine


def enable_adaptive_chunking(auto_rechunk: bool | None = None) -> AdaptiveChunkingEngine:
    """Profile every array compute in this process; return the global engine.

    Sets ``array.adaptive-chunking.enabled`` to True (globally, as
    ``dask.config.set`` outside a ``with`` block does). With ``auto_rechunk``,
    also sets ``array.adaptive-chunking.auto-rechunk``: True gives arrays created
    with ``chunks="auto"`` the chunk size the history recommends for this hardware,
    from now on.

    >>> engine = enable_adaptive_chunking()
    >>> engine.enabled
    True
    >>> disable_adaptive_chunking()
    """
    _expressions.warn_unprofiled()
    if auto_rechunk is not None:
        auto_rechunk = _config.flag_value("auto-rechunk", auto_rechunk)
    _config.validate()
    settings = {f"{_PREFIX}.enabled": True}
    if auto_rechunk is not None:
        settings[f"{_PREFIX}.auto-rechunk"] = auto_rechunk
    dask.config.set(settings)
    engine = get_adaptive_engine()
    _prepare_cluster()
    return engine


def disable_adaptive_chunking() -> None:
    """Stop profiling computes that contain no profiled array, and stop auto-rechunk.

    Arrays registered with ``profile_array`` are still profiled until their
    profiles are removed. Sets ``array.adaptive-chunking.enabled`` and
    ``array.adaptive-chunking.auto-rechunk`` to False: Dask's own
    ``array.chunk-size`` is back.
    """
    dask.config.set({f"{_PREFIX}.enabled": False, f"{_PREFIX}.auto-rechunk": False})
    _sync_auto_rechunk()


def reset_adaptive_engine() -> None:
    """Drop the global engine and give ``array_optimize`` back (for tests).

    The next :func:`get_adaptive_engine` call creates a fresh engine and installs
    the hook again. Config values are left as they are.
    """
    global _engine
    with _engine_lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.close()
    _chunk_size.restore("the engine was reset")
    _warned_no_history.clear()
    _uninstall_hook()
    _peaks.sampler.join()


# Installed on import, so that setting ``array.adaptive-chunking.enabled`` (in code,
# YAML or the environment) is all it takes; with nothing to profile, the hook
# returns exactly what Dask's own optimization returns. Auto-rechunk set in YAML or
# the environment takes effect on import too.
_install_hook()
_sync_auto_rechunk()


if __name__ == "__main__":  # python -m dask.array.adaptive_chunking
    from dask.array._adaptive_chunking.demo import main

    sys.exit(main())
