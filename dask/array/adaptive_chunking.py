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

The public face (the spec's names: docstrings, validation, delegation); the private
package ``dask.array._adaptive_chunking`` does the work (``docs/design.md`` maps it).
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

import dask
from dask.array._adaptive_chunking import auto_rechunk as _auto_rechunk
from dask.array._adaptive_chunking import cluster_client as _cluster
from dask.array._adaptive_chunking import config as _config
from dask.array._adaptive_chunking import expressions as _expressions
from dask.array._adaptive_chunking import hook as _hook
from dask.array._adaptive_chunking import memory as _memory
from dask.array._adaptive_chunking import peaks as _peaks
from dask.array._adaptive_chunking import planning as _planning
from dask.array._adaptive_chunking import records as _records
from dask.array._adaptive_chunking import shapes as _shapes
from dask.array._adaptive_chunking import views as _views
from dask.array._adaptive_chunking import xarray as _xarray
from dask.array._adaptive_chunking.advisor import (Advisor, RecommenderPort, fit_observations,
                                                   workers_for)
from dask.array._adaptive_chunking.aggregate import Aggregate
from dask.array._adaptive_chunking.errors import AdaptiveChunkingWarning
from dask.array._adaptive_chunking.graph import Downstream
from dask.array._adaptive_chunking.history_service import HistoryService
from dask.array._adaptive_chunking.profiles import ProfileRegistry, unavailable
from dask.array._adaptive_chunking.progress import ProfileProgressBar
from dask.array._adaptive_chunking.recommendation import (
    SATURATION_KEY,  # noqa: F401 (the distributed setting's name, as before)
    DatasetRecommendation,
    Recommendation,
)
from dask.array._adaptive_chunking.recorder import ComputeRecorder, deferred

__all__ = [
    "ChunkMemoryMetric", "MemoryPressure", "ChunkProfiler", "ChunkSizeRecommender",
    "AdaptiveChunkingEngine", "AdaptiveChunkingWarning", "Recommendation",
    "DatasetRecommendation", "get_adaptive_engine", "enable_adaptive_chunking",
    "disable_adaptive_chunking", "reset_adaptive_engine", "memory_limit", "ProfileProgressBar",
]

MiB = 2**20
_PREFIX = _config.PREFIX
_read = _config.setting  # one validated setting, for the spec classes' own reads

_config.register_defaults()


def memory_limit() -> int:
    """The memory this process may use, in bytes.

    ``array.adaptive-chunking.memory-limit`` if set, else the smaller of physical
    memory and the cgroup limit of this process (containers, Kubernetes, Slurm).

    >>> import dask
    >>> with dask.config.set({"array.adaptive-chunking.memory-limit": "2GiB"}):
    ...     memory_limit()
    2147483648
    """
    return _memory.memory_limit(_read("memory-limit"))


def _finite(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in [low, high], or a TypeError/ValueError naming it."""
    largest = sys.float_info.max  # the range check of config.number, without infinities
    return _config.number(name, value, low=max(low, -largest), high=min(high, largest))


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
        total, used = _memory.usage(_read("memory-limit"))
        return cls(
            available_mb=(total - used) / MiB,
            used_mb=used / MiB,
            percent_used=100.0 * used / total if total else 0.0,
            total_mb=total / MiB,
        )

    def to_dict(self) -> dict[str, float]:
        """The snapshot as a plain dictionary."""
        return asdict(self)


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
        if max_records is not None:  # 1.0 records is one record, and counts as an int
            max_records = _config.count("max_records", max_records, low=0)
        if not isinstance(enabled, (bool, np.bool_)):
            raise TypeError(f"enabled must be True or False, got {enabled!r}")
        self._aggregate = Aggregate(max_records, enabled=bool(enabled))

    @classmethod
    def _over(cls, aggregate: Aggregate) -> ChunkProfiler:
        """The public face of an aggregate the engine holds (a profile's)."""
        face = cls.__new__(cls)
        face._aggregate = aggregate
        return face

    @classmethod
    def from_observations(cls, observations) -> ChunkProfiler:
        """A profiler of per-compute summaries only (``model.Observation``), e.g.
        stored computes or several pilots pooled: what a recommendation learns from.

        >>> ChunkProfiler.from_observations([]).observations()
        []
        """
        face = cls()
        for o in observations:
            face._aggregate.add_compute(o)
        return face

    @property
    def enabled(self) -> bool:
        """Whether measurements are recorded."""
        return self._aggregate.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._aggregate_now().enabled = bool(value)

    @property
    def max_records(self) -> int:
        """Size of the raw-record sample (config ``max-records`` unless given).

        An engine holding many profiles may lower it to keep them all within
        ``array.adaptive-chunking.max-memory``.
        """
        return self._aggregate_now().cap(_read("max-records"))

    def clear(self) -> None:
        """Forget every measurement."""
        self._aggregate_now().clear()

    def __len__(self) -> int:
        return len(self._aggregate_now())

    def _aggregate_now(self) -> Aggregate:
        deferred.settle()  # the computes that returned are folded in
        return self._aggregate

    def record_chunk(self, metric: ChunkMemoryMetric) -> None:
        """Add the measurement of one chunk."""
        if not isinstance(metric, ChunkMemoryMetric):
            raise TypeError(
                f"record_chunk expects a ChunkMemoryMetric, got {type(metric).__name__}"
            )
        if self.enabled:
            self._aggregate.add_batch(_records.single(
                metric.chunk_key, metric.chunk_shape, metric.dtype_size, metric.start_time,
                metric.compute_time_ms / 1e3, metric.memory_peak_before_mb * MiB,
                metric.memory_peak_after_mb * MiB, metric.estimated_bytes,
                metric.output_bytes, metric.worker, metric.failed), _read("max-records"),
                                      given=metric)

    @property
    def metrics(self) -> list[ChunkMemoryMetric]:
        """The sampled raw records (all of them while fewer than ``max_records``)."""
        return [r.given if r.given is not None else ChunkMemoryMetric(**_records.fields(r))
                for r in self._aggregate_now().sample()]

    def observations(self) -> list:
        """Per-compute summaries (``model.Observation``); synthesized from the chunk
        aggregates if none."""
        return self._aggregate_now().observations()

    def get_stats(self) -> dict[str, Any]:
        """Aggregate statistics; sizes in MiB, times in seconds or milliseconds.

        >>> ChunkProfiler().get_stats()["total_chunks"]
        0
        """
        return _views.Readable(self._aggregate_now().stats())

    def __repr__(self) -> str:
        s = self.get_stats()
        return (
            f"<ChunkProfiler chunks={s['total_chunks']} computes={s['computes']} "
            f"peak={s['peak_memory_mb']:.1f} MiB enabled={self.enabled}>"
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
        self.plan_settings()  # validate what was given now, not at first use

    def plan_settings(self, settings: _config.Settings | None = None
                      ) -> _planning.PlanSettings:
        """The settings a recommendation uses: those given, else ``settings`` (a
        snapshot of the config; taken now when None), each validated."""
        values = {}
        for name, given in self._given.items():
            key = name.replace("_", "-")
            if given is None:
                values[name] = (getattr(settings, name) if settings is not None
                                else _read(key))
            else:
                values[name] = _config.RULES[key](key, given)
        if values["max_chunk_bytes"] is not None and (
                values["max_chunk_bytes"] < values["min_chunk_bytes"]):
            raise ValueError(
                f"max_chunk_bytes ({values['max_chunk_bytes']}) is smaller than "
                f"min_chunk_bytes ({values['min_chunk_bytes']}); raise max-chunk-bytes or "
                "lower min-chunk-bytes"
            )
        return _planning.PlanSettings(**values, default_chunk_bytes=_auto_rechunk.dask_default())

    def memory_budget(self, limit: int | None = None) -> int:
        """Bytes a computation may reach at its peak: limit x percent x safety factor."""
        s = self.plan_settings()
        limit = _config.nbytes_setting("limit", limit, allow_none=True)
        if limit is None:
            limit = s.memory_limit or _memory.memory_limit(None)
        return s.budget(limit)

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
        downstream: Downstream | None = None,
        cluster: Mapping[str, Mapping[str, int]] | None = None,
        worker_saturation: float | None = None,
        warn: bool = True,
        reach: float | None = _planning.PlanSettings.reach, evidence: bool = True,
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
            Warn when no chunking fits the budget (``fits_budget`` says it anyway).
        reach : float or None
            How many times a measured chunk size the chunks may be, unless the
            budget forces them further (None: no limit).
        evidence : bool
            Weigh the choice against what was measured (False or no reach: a probe's).
        """
        if not isinstance(profiler, ChunkProfiler):
            raise TypeError(
                f"profiler must be a ChunkProfiler, got {type(profiler).__name__}"
            )
        shape = _shapes.validate_shape(array_shape)
        storage_chunks, concurrency, current_chunks = _planning.checked_arguments(
            shape, dtype_size, num_dimensions, storage_chunks, concurrency, current_chunks,
            downstream, worker_saturation)
        s = replace(self.plan_settings(), reach=reach, evidence=evidence and reach is not None)
        fit = fit_observations(profiler.observations())
        workers = workers_for(cluster, fit, current_chunks)
        rec = _planning.plan(fit, shape, int(dtype_size), s,
            limit=s.memory_limit or workers.memory_limit or _memory.memory_limit(None),
            current_chunks=current_chunks, concurrency=concurrency,
            storage_chunks=storage_chunks, downstream=downstream, workers=workers,
            worker_saturation=worker_saturation,
        )
        if rec is not None and not rec.fits_budget and warn:
            warnings.warn(_planning.budget_warning(rec, s), AdaptiveChunkingWarning,
                          stacklevel=3)
        return rec

    def _setting(name: str, doc: str):  # noqa: N805 - builds properties below
        def fget(self):
            return getattr(self.plan_settings(), name)

        def fset(self, value):
            old = self._given[name]
            self._given[name] = value
            try:
                self.plan_settings()
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
        s = self.plan_settings()
        return (
            f"ChunkSizeRecommender(target_memory_percent={s.target_memory_percent:g}, "
            f"min_chunk_bytes={s.min_chunk_bytes}, max_chunk_bytes={s.max_chunk_bytes}, "
            f"safety_factor={s.safety_factor:g})"
        )


class AdaptiveChunkingEngine:
    """Profile array computes and recommend chunk sizes.

    The engine instruments the tasks of every compute that contains a profiled
    array (or of every array compute while enabled) through Dask's
    ``array_optimize`` hook, so plain ``compute()`` calls on the synchronous,
    threaded and processes schedulers (and on a ``dask.distributed`` cluster) fill
    the profiles.

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

    def __init__(self, profiler: ChunkProfiler | None = None,
                 recommender: ChunkSizeRecommender | None = None,
                 profile_chunks: bool | None = None):
        self.profiler = profiler if profiler is not None else ChunkProfiler()
        self.recommender = recommender if recommender is not None else ChunkSizeRecommender()
        self._profiles = ProfileRegistry()
        self._history = HistoryService()
        # The collaborators call back through a weak reference: a dropped engine is
        # freed at once (no cycle to wait for) and its recorder stops profiling.
        engine = weakref.ref(self)
        self._advisor = Advisor(self._profiles, self._history, lambda: RecommenderPort(
            engine().recommender, ChunkProfiler._over))
        self._recorder = ComputeRecorder(
            self._profiles, lambda: getattr(engine(), "profiler", _GONE)._aggregate,
            self._history, lambda settings: _auto_rechunk.sync(
                settings, engine()._advisor.auto_target) if engine() is not None else None)
        self._xarray = _xarray.XarrayAdapter(
            self._profiles, self._advisor, lambda *a: engine()._start(*a),
            lambda *a: engine()._get_profile(*a))
        self.profile_chunks = profile_chunks
        _hook.runtime.recorders.add(self._recorder)

    # -- settings ---------------------------------------------------------

    @property
    def profile_chunks(self) -> bool:
        """Whether per-chunk metrics are recorded (config ``profile`` when unset)."""
        return _config.flag("profile", self._recorder.profile_chunks)

    @profile_chunks.setter
    def profile_chunks(self, value: bool) -> None:
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"profile_chunks must be True or False, got {value!r}")
        deferred.settle()  # computes that returned are folded as they were profiled
        self._recorder.profile_chunks = value

    @property
    def enabled(self) -> bool:
        """Whether every array compute is profiled (config ``enabled``)."""
        return _config.flag("enabled")

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
        settings = _config.snapshot()  # a bad setting fails here, not inside a compute
        if _xarray.is_xarray(array):
            return self._xarray.profile(array, settings)
        return self._start(array, settings).id

    def _start(self, array, settings: _config.Settings):
        from dask.array.core import Array

        if not isinstance(array, Array):
            raise TypeError(
                f"profile_array expects a dask.array.Array (or an xarray object backed by "
                f"Dask), got {type(array).__name__}; wrap NumPy data with "
                "dask.array.from_array(data, chunks=...)"
            )
        if len(self._profiles) >= settings.max_profiles:
            deferred.settle()  # the oldest profile's computes are stored before it goes
        state = self._profiles.add(array, settings.max_profiles)
        self._profiles.bound_memory(self.profiler._aggregate, settings.max_memory,
                                    settings.max_records)
        _hook.install()
        _cluster.prepare(settings)
        return state

    def remove_profile(self, profile_id: str) -> None:
        """Stop profiling and forget ``profile_id`` (a Dataset's: all its variables')."""
        deferred.settle()  # its computes that returned are stored first
        self._profiles.remove(profile_id)

    @property
    def profile_ids(self) -> list[str]:
        """Ids of the profiles kept, oldest first."""
        return self._profiles.ids()

    def get_profile(self, profile_id: str) -> dict[str, Any]:
        """The profile of one array: its measurements and a recommended chunking.

        Keys: ``array_shape``, ``array_dtype``, ``current_chunks`` (those of the
        newest compute, which may be of a result of :meth:`apply_recommendation`),
        ``execution_time_s`` (wall time of the profiled computes),
        ``profiler_stats`` (:meth:`ChunkProfiler.get_stats`),
        ``recommended_chunks`` (None until a compute was profiled), ``status``
        (pending, running, complete, failed or incomplete), ``recommendation``
        (the explanation), ``current_prediction`` (the model's figures for the
        current chunks, against the measured ``last_compute``) and more. For an
        xarray object, ``dims`` and ``recommended_chunks_by_dim``; a Dataset's
        profile holds its variables' profiles under ``variables`` and the chunks
        by dimension for ``Dataset.chunk`` under ``recommended_chunks``.

        The dict shows itself as a short summary in a terminal and as a table
        in a notebook; ``dict(profile)`` is the plain dict.
        """
        settings = _config.snapshot(strict=False)
        self._recorder.drain(settings)
        members = self._profiles.group(profile_id)
        if members is not None:
            return self._xarray.dataset_profile(profile_id, members, settings)
        return self._get_profile(profile_id, settings)

    def _get_profile(self, profile_id: str, settings: _config.Settings) -> dict[str, Any]:
        state = self._profiles.get(profile_id)
        rec = self._advisor.for_profile(state, settings)
        current = None if rec is None else self._advisor.at_current(state, rec.model,
                                                                      settings)
        return _views.profile_of(state, rec, current,
                                 None if rec is not None else unavailable(state))

    def get_profiler(self, profile_id: str) -> ChunkProfiler:
        """The :class:`ChunkProfiler` of one profile (its sampled ``metrics`` and more)."""
        return ChunkProfiler._over(self._profiles.get(profile_id).aggregate)

    def plot_profile(self, profile_id: str, filename=None):
        """Pictures of a profile: per-task time and memory, process memory, and the
        predicted time and peak against chunk size. ``filename`` ``.html`` is drawn
        by bokeh, ``.png``/``.svg``/``.pdf`` by matplotlib (returned: the layout or
        Figure); see ``dask.array._adaptive_chunking.plots.plot_profile``.
        """
        from dask.array._adaptive_chunking import plots

        return plots.plot_profile(self, profile_id, filename)

    def visualize(self, profile_id: str, filename="adaptive-chunking.svg", **kwargs):
        """The profiled array's task graph (or ``collection=``'s), tasks coloured by
        the memory measured for them, drawn by ``dask.visualize`` (graphviz). See
        ``dask.array._adaptive_chunking.plots.visualize``.
        """
        from dask.array._adaptive_chunking import plots

        return plots.visualize(self, profile_id, filename,
                               profiled=lambda: self._profiles.get(profile_id).array(),
                               **kwargs)

    # -- recommendations ----------------------------------------------------

    def recommend(self, array, profile_id: str | None = None, *, workload=None,
                  probe: bool | float = False) -> Recommendation:
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
        workload : dask collection or list of them, or str, optional
            What will be computed from ``array``. Its graph says what the later
            operations want (a rechunk to rows, an FFT axis, a transpose), at this
            array's size; by default the profiled computes tell. A string is the
            signature of a stored workload (a history row's ``signature``): the
            recommendation then comes from its stored computes. A function of the
            array (``lambda a: a.mean(axis=0)``) stands for the collection it returns.
        probe : bool or float
            Before recommending chunks far from the measured sizes, run
            ``workload`` (a function) at them on a sample of the array. A number
            is the time budget in seconds (True: 1 s, or a tenth of the predicted
            compute if longer); ``rec.probes`` says what ran and what it cost.

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

        A ``DataArray``'s recommendation also has chunks by dimension name
        (``rec.chunks_by_dim``); a ``Dataset`` gets a ``DatasetRecommendation``
        (one size per dimension, for ``Dataset.chunk``). Arrays read from Zarr,
        HDF5 or netCDF get whole multiples of the stored chunks.
        """
        _expressions.check_supported(array, "recommend")
        settings = _config.snapshot()
        self._recorder.drain(settings)
        if _xarray.is_xarray(array):
            return self._xarray.recommend(array, profile_id, settings, workload)
        return self._advisor.recommendation(
            array, profile_id, settings, workload, probe=probe,
            run_profiled=functools.partial(_hook.profiled_run, self._profiles, self._recorder))

    def predict(self, array, chunks, profile_id: str | None = None, *, workload=None
                ) -> dict[str, Any]:
        """Predicted time, tasks and peak memory of computing ``array`` in ``chunks``.

        ``chunks`` is anything ``array.rechunk`` accepts; ``profile_id`` and
        ``workload`` as in :meth:`recommend` (``workload`` alone: from its history).
        The keys are the recommendation's (``predicted_peak_memory_mb``,
        ``predicted_time_s``...). From a cluster's profile the peak is one
        worker's, with the ``worker-saturation`` for these chunks
        (``scheduler_config``) and the peak with queuing off
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
            array, chunks, profile_id = self._xarray.predict_args(array, chunks, profile_id)
        settings = _config.snapshot()
        self._recorder.drain(settings)
        return _views.Readable(self._advisor.predict(array, chunks, profile_id, settings, workload))

    def apply_recommendation(self, array, recommendation=None):
        """Rechunk ``array`` to ``recommendation``: chunks, a profile id, or None.

        With a profile id, the chunks that profile recommends for ``array`` (which
        may be another size than the profiled array, see :meth:`recommend`); with
        None, those of the newest profile of this same array, or, while
        ``auto-rechunk`` is on and none profiled it, those the history recommends
        from the newest stored workload of its number of dimensions and dtype
        (logged at INFO). The values are unchanged; an array read straight from
        storage is read again at the new chunks. The profiles of ``array`` follow
        the result: its computes are measured at its chunks.

        An xarray ``DataArray`` or ``Dataset`` comes back as the same type, rechunked
        with its ``.chunk`` method (a Dataset's variables held in memory stay in
        memory); ``recommendation`` may then also be chunks by dimension name or a
        ``DatasetRecommendation``.
        """
        _expressions.check_supported(array, "apply_recommendation")
        if _xarray.is_xarray(array):
            return self._xarray.apply(array, recommendation, self._settings_now)
        return self._advisor.apply(array, recommendation, self._settings_now)

    def _settings_now(self) -> _config.Settings:
        """The settings, validated, with the profiles brought up to date."""
        settings = _config.snapshot()
        self._recorder.drain(settings)
        return settings

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

        It holds for the tasks the scheduler assigns next: apply it between
        computes (``RuntimeError`` while root tasks are queued), or give a new
        cluster ``dask.config.set(rec.scheduler_config)`` before it starts.
        """
        if isinstance(recommendation, str):  # a profile id: its recommendation now
            settings = _config.snapshot(strict=False)
            self._recorder.drain(settings)
            state = self._profiles.get(recommendation)
            recommendation = self._advisor.recommend_for(state, settings)
            if recommendation is None:
                raise ValueError(f"profile {state.id!r} has no recommendation yet: "
                                 f"{unavailable(state)}")
        return _cluster.apply_scheduler_config(recommendation, client)

    # -- history -------------------------------------------------------------

    def save_profile(self, profile_id: str) -> int:
        """Store the complete computes of a profile not stored yet; returns how many.

        Computes are stored as they end while ``history`` is on; this stores those
        made with it off (the newest 256 are kept). A row per compute: the
        workload's signature, the hardware's fingerprint, the array's shape, dtype
        and chunks, and the measurements. Failed computes are not stored.
        """
        return self._history.save(self._profiles.get(profile_id), self._settled())

    def load_history(self, signature: str | None = None, *, comparable: bool = False
                     ) -> list[dict[str, Any]]:
        """The stored computes, newest first: all, or those of one workload signature.

        With ``comparable=True`` only those measured on hardware comparable to what
        a compute started now would run on: the same scheduler kind, cores and
        threads, at any memory limit (the budget is recomputed for this one).
        """
        return self._history.load(signature, comparable, self._settled())

    def export_history(self, path) -> int:
        """Write the history database as JSON lines to ``path``; returns the rows written."""
        return self._history.store(self._settled()).export(path)

    def import_history(self, path) -> int:
        """Add the JSON lines of :meth:`export_history` to the history; returns the count."""
        return self._history.store(self._settled()).import_(path)

    def clear_history(self) -> int:
        """Delete every stored compute; returns how many there were."""
        return self._history.store(self._settled()).clear()

    @staticmethod
    def _settled() -> _config.Settings:  # the computes that returned are stored first
        return deferred.settle() or _config.snapshot(strict=False)

    # -- the engine itself -----------------------------------------------------

    def get_telemetry(self) -> dict[str, Any]:
        """Engine state: tracked arrays, memory pressure and aggregate statistics.

        ``held_memory_mb`` estimates what the profiles hold (kept under
        ``max-memory``). A dict that shows itself as a short summary in a terminal
        and as a table in a notebook.
        """
        settings = _config.snapshot()
        self._recorder.drain(settings)
        pressure = MemoryPressure.snapshot()
        workers = {addr: (MemoryPressure.of(used, limit or memory_limit()), nthreads)
                   for addr, used, limit, nthreads in _cluster.worker_memory()}
        return _views.telemetry_of(
            settings, self.profile_chunks, self._profiles, self._recorder, pressure,
            _memory.memory_limit(settings.memory_limit), self.recommender.memory_budget(),
            self._profiles.held_bytes(self.profiler._aggregate), self.profiler.get_stats(),
            workers)

    def close(self) -> None:
        """Forget every profile; stop instrumenting if no other engine needs it."""
        deferred.settle()
        self._profiles.clear()
        self._history.close()
        _hook.runtime.recorders.discard(self._recorder)

    def __repr__(self) -> str:
        return (
            f"<AdaptiveChunkingEngine profiles={len(self._profiles)} "
            f"computes={self._recorder.computes} enabled={self.enabled}>"
        )


_engine: AdaptiveChunkingEngine | None = None
_engine_lock = threading.Lock()
_GONE = ChunkProfiler()  # the aggregate a recorder sees once its engine is gone


def _global_parts() -> _hook.GlobalEngine:
    """Create the process-wide engine for the hook (a setting alone asked for it)."""
    get_adaptive_engine()
    return _hook.runtime.current


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
                _engine._recorder.is_global = True
                _hook.runtime.current = _hook.GlobalEngine(_engine._recorder,
                                                           _engine._advisor.auto_target)
            engine = _engine
    _hook.install()
    _hook.sync_auto_rechunk()
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
    settings = _config.snapshot()  # a bad setting fails here, before anything is set
    dask.config.set({f"{_PREFIX}.enabled": True} if auto_rechunk is None else {
        f"{_PREFIX}.enabled": True, f"{_PREFIX}.auto-rechunk": auto_rechunk})
    engine = get_adaptive_engine()
    _cluster.prepare(settings)
    return engine


def disable_adaptive_chunking() -> None:
    """Stop profiling computes that contain no profiled array, and stop auto-rechunk.

    Arrays registered with ``profile_array`` are still profiled until their
    profiles are removed. Sets ``array.adaptive-chunking.enabled`` and
    ``array.adaptive-chunking.auto-rechunk`` to False: Dask's own
    ``array.chunk-size`` is back.
    """
    dask.config.set({f"{_PREFIX}.enabled": False, f"{_PREFIX}.auto-rechunk": False})
    _hook.sync_auto_rechunk()


def reset_adaptive_engine() -> None:
    """Drop the global engine and give ``array_optimize`` back (for tests).

    The next :func:`get_adaptive_engine` call creates a fresh engine and installs
    the hook again. Config values are left as they are.
    """
    global _engine
    with _engine_lock:
        engine, _engine = _engine, None
        _hook.runtime.current = None
    if engine is not None:
        engine._recorder.is_global = False
        engine.close()
    _auto_rechunk.forget("the engine was reset")
    _hook.uninstall()
    _peaks.sampler.join()


_hook.runtime.factory = _global_parts
# Installed on import, so that setting ``array.adaptive-chunking.enabled`` (in code,
# YAML or the environment) is all it takes; with nothing to profile, the hook
# returns exactly what Dask's own optimization returns. Auto-rechunk set in YAML or
# the environment takes effect on import too.
_hook.install()
_hook.sync_auto_rechunk()


if __name__ == "__main__":  # python -m dask.array.adaptive_chunking
    from dask.array._adaptive_chunking.demo import main

    sys.exit(main())
