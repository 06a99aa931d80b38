"""The advisor: which measurements decide for an array, and what they recommend.

The :class:`Advisor` picks the profiles (and the stored computes of their workloads)
that speak for an array, fits the cost model to them, and asks the pure planner
(``planning.plan``) for a chunking; it also predicts any other chunking and finds
the byte target auto-rechunk gives Dask. It reads no config itself: each call gets
the engine's settings snapshot, and the recommender's settings come from the
recommender the engine gives it (:class:`Recommender`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
from dask.highlevelgraph import HighLevelGraph

import dask
from dask.array._adaptive_chunking import calibration as _calibration
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import history as _history
from dask.array._adaptive_chunking import memory as _memory
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import planning as _planning
from dask.array._adaptive_chunking import probe as _probe
from dask.array._adaptive_chunking import shapes as _shapes
from dask.array._adaptive_chunking.aggregate import Aggregate, pooled
from dask.array._adaptive_chunking.config import PREFIX, Settings
from dask.array._adaptive_chunking.history_service import HistoryService, fingerprint
from dask.array._adaptive_chunking.profiles import Profile, ProfileRegistry, unavailable
from dask.array._adaptive_chunking.recommendation import Recommendation, scheduler_config

__all__ = ["Recommender", "RecommenderPort", "Advisor", "fit_observations", "hints_for",
           "downstream_of", "workers_for", "carried_for"]

logger = logging.getLogger("dask.array.adaptive_chunking")
MiB = 2**20

#: A probe may take this long by default, or this share of the compute's predicted
#: time when that is longer.
PROBE_SECONDS = 1.0
PROBE_SHARE = 0.1
#: Array sizes (times the stored one) at which auto-rechunk's target is looked for.
PLATEAU_FACTORS = (1, 4, 16, 64, 256)


def fit_observations(observations: Sequence[_model.Observation]
                     ) -> _model.WorkloadModel | None:
    """Fit the model, with this machine's page-fault cost and (for contractions) BLAS."""
    contracts = any(t[0] in _model.CONTRACTIONS for o in observations for t in o.terms)
    threads, penalty = _calibration.blas_profile() if contracts else (1, 1.0)
    return _model.fit_workload(
        observations, _calibration.fault_seconds_per_byte(), threads, penalty
    )


def workers_for(cluster, fit: _model.WorkloadModel | None, chunks=None
                ) -> _planning.Workers:
    """The workers a plan is for: a cluster's, or this process, whose memory in use
    now (grown since it was profiled, or larger in a pilot's history) is the
    baseline, and whose resident memory now (the allocator's free heap included)
    tells how much free heap a compute may reuse.

    ``chunks`` are the array's chunks now (Dask's normal form). Their graph
    is part of this process's memory now, and the prediction counts the graph of
    the chunks it predicts, so the current one is taken out (about 130 MiB for
    40,000 chunks of ``da.random.random``), never below what the profile held.
    """
    if cluster or fit is None:
        return _planning.Workers.of(cluster)
    blocks = math.prod(len(c) for c in chunks) if chunks else 0
    graph = blocks * fit.tasks_per_chunk * _model.GRAPH_BYTES_PER_TASK
    return _planning.Workers(baseline=max(fit.baseline_bytes, _memory.in_use_now() - graph),
                             resident=max(0, _memory.resident_now() - graph))


def hints_for(states: list[Profile], shape: tuple) -> _graph.Downstream:
    """What the profiled computes said the later operations want, for ``shape``.

    Hints of every profile are merged. Whole dimensions only carry over to an array
    of the profiled arrays' number of dimensions, and not when they are all of them
    (a small pilot rechunked to "auto" fits in one chunk, which says nothing about
    the full array: pass ``workload=`` for that).
    """
    merged = _graph.Downstream.merge(
        s.downstream if len(s.shape) == len(shape)
        else _graph.Downstream(frozenset(), s.downstream.square, s.downstream.ops)
        for s in states
    )
    if len(merged.whole_dims) >= len(shape):
        merged = _graph.Downstream(frozenset(), merged.square, merged.ops)
    return merged


def downstream_of(array, workload) -> _graph.Downstream | None:
    """What the operations of ``workload`` applied to ``array`` want (None: no
    workload, or a stored workload's signature, whose graph is not here)."""
    if workload is None or isinstance(workload, str):
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


def _identity(o: _model.Observation) -> tuple:
    """What tells one compute's observation from another's (a stored copy loses
    nothing of these)."""
    return (o.array_bytes, o.chunk_bytes, o.n_tasks, round(o.task_seconds, 9))


def _check_probe(probe, function, run_profiled) -> None:
    if isinstance(probe, bool):
        pass
    elif not isinstance(probe, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"probe must be True, False or a time budget in seconds, got {probe!r}")
    elif not 0 < probe < math.inf:
        raise ValueError(f"probe's time budget must be a number of seconds > 0, got {probe!r}")
    if function is None:
        raise ValueError(
            "probe needs the workload as a function of the array, to run it on "
            "samples: pass e.g. workload=lambda a: a.mean(axis=0)")
    if run_profiled is None:
        raise ValueError("probing needs an engine to profile the samples with")


def _cluster_of(states: list[Profile]) -> dict | None:
    """The workers of the newest of ``states`` profiled on a cluster, if any."""
    return next((s.workers for s in reversed(states) if s.workers), None)


def carried_for(states: list[Profile], here: str) -> tuple[str, int | None]:
    """What the newest of ``states`` carries over to the hardware ``here`` (a
    fingerprint), in words ('' when alike, or on a cluster, where the workers
    decide), and the tasks at once to plan for (None: as measured). A profile
    measured with other threads keeps its time and memory per chunk byte; how many
    tasks run at once is here's."""
    stored = states[-1].fingerprint
    if not stored or _cluster_of(states):
        return "", None
    try:
        note = _history.carried_over(stored, here)
        threads = json.loads(here)["threads"]
        changed = threads != json.loads(stored)["threads"]
    except (ValueError, TypeError, KeyError, AttributeError):
        return "", None
    return (note or ""), (int(threads) if note and changed else None)


def _check_array(array, what: str) -> None:
    from dask.array.core import Array

    if not isinstance(array, Array):
        raise TypeError(f"{what} expects a dask.array.Array, got {type(array).__name__}")
    if any(math.isnan(s) for s in array.shape):
        raise ValueError(
            f"the array's shape {array.shape} has unknown (NaN) sizes; call "
            "array.compute_chunk_sizes() first"
        )


class Recommender(Protocol):
    """What the advisor asks of the engine's recommender (``ChunkSizeRecommender``):
    a subclass that plans otherwise is honoured everywhere the engine recommends."""

    def plan_settings(self, settings: Settings | None = None) -> _planning.PlanSettings:
        """The recommender's settings under the config snapshot ``settings``."""

    def recommend(self, observations: Aggregate, shape: tuple, itemsize: int,
                  **kwargs) -> Recommendation | None:
        """``ChunkSizeRecommender.recommend`` for the measurements ``observations``."""

    def memory_budget(self, limit: int | None = None) -> int:
        """Bytes a compute may reach at its peak under ``limit``."""


class RecommenderPort:
    """A ``ChunkSizeRecommender`` as the advisor meets it: the measurements handed
    over as the profiler its ``recommend`` takes (``face`` makes one of an aggregate),
    so a subclass that recommends otherwise is honoured by the engine."""

    __slots__ = ("recommender", "face")

    def __init__(self, recommender, face: Callable[[Aggregate], Any]) -> None:
        self.recommender, self.face = recommender, face

    def plan_settings(self, settings: Settings | None = None) -> _planning.PlanSettings:
        return self.recommender.plan_settings(settings)

    def recommend(self, observations: Aggregate, shape: tuple, itemsize: int, **kwargs):
        return self.recommender.recommend(self.face(observations), shape, itemsize, **kwargs)

    def memory_budget(self, limit: int | None = None) -> int:
        return self.recommender.memory_budget(limit)


class Advisor:
    """Recommendations and predictions from an engine's profiles and history.

    Parameters
    ----------
    profiles : ProfileRegistry
    history : HistoryService
    recommender : callable
        Returns the engine's :class:`Recommender` now (a user may replace it).
    """

    def __init__(self, profiles: ProfileRegistry, history: HistoryService,
                 recommender: Callable[[], Recommender]) -> None:
        self.profiles = profiles
        self.history = history
        self.recommender = recommender
        self._target: tuple | None = None  # (cache key, auto-rechunk's target or None)

    # -- which measurements decide ----------------------------------------

    def pool(self, states: list[Profile], settings: Settings,
             extra: Sequence[_model.Observation] = ()) -> Aggregate:
        """The observations of ``states`` and the stored ones of their workloads, and
        ``extra`` ones (a probe's); the stored go in first, so that of the newest 256
        an aggregate keeps, the profiles' own are never the ones left out. A stored
        copy of an extra observation (a probe is saved like any compute) counts once.
        """
        stored = self.history.stored(states, settings)
        if extra:
            mine = {_identity(o) for o in extra}
            stored = [o for o in stored if _identity(o) not in mine]
        elif len(states) == 1 and not stored:
            return states[0].aggregate
        return pooled(stored + [o for s in states for o in s.aggregate.observations()]
                      + list(extra))

    def sources(self, array, profile_id, what: str, settings: Settings, workload=None,
                newest: bool = False) -> list[Profile]:
        """The profiles whose measurements decide for ``array``."""
        _check_array(array, what)
        if profile_id is not None:
            ids = list(profile_id) if isinstance(profile_id, (list, tuple)) else [profile_id]
            if not ids:
                raise ValueError("profile_id is an empty list; pass at least one profile id")
            states = [self.profiles.get(i) for i in ids]
            for i, state in zip(ids, states):
                if state.computes == 0:
                    raise ValueError(
                        f"profile {i!r} has no measurements yet; compute the profiled "
                        "array first"
                    )
            return states
        states = [s for s in self.profiles.named(array.name) if s.computes]
        if not states and isinstance(workload, str):  # a stored workload's signature
            states = self.history.stand_in(array, workload, settings)
        elif not states and workload is not None:
            states = self.history.from_workload(array, workload, settings)
        elif not states and newest:  # the newest workload of this kind run on this hardware
            states = self._newest(array, what, settings)
        if not states:
            raise ValueError(
                "no profile measured this array: profile it with profile_array() and "
                "compute it, or pass the profile_id of a pilot (the same workload on a "
                "smaller array), or pass workload= (what you will compute from it) to "
                "use the history of that workload"
            )
        return states[-1:]

    def _check_workload(self, workload, settings: Settings) -> None:
        """A string workload must be a stored workload's signature."""
        if isinstance(workload, str) and not self.history.rows(workload, None, settings,
                                                               limit=1):
            raise ValueError(
                f"workload {workload!r} is neither a dask collection nor the signature of "
                "a stored workload (a history row's 'signature'); pass the expression "
                "that will be computed from the array"
            )

    def _newest(self, array, what: str, settings: Settings) -> list[Profile]:
        row = self.history.newest_workload(settings, array.ndim, array.dtype)
        if row is None:
            return []
        logger.info(
            "adaptive chunking: %s for %s %s from the history of the newest workload of "
            "its kind run here (signature %s, stored for %s); pass workload= to name "
            "another", what, array.shape, array.dtype, row["signature"], tuple(row["shape"]),
        )
        return self.history.stand_in(array, row["signature"], settings)

    # -- recommending ------------------------------------------------------

    def recommend_for(self, states, settings: Settings, array=None, downstream=None, *,
                      warn: bool = True, storage: tuple[int, ...] | None = None,
                      extra: Sequence[_model.Observation] = (),
                      reach: float | None = _model.REACH, current: bool = True,
                      evidence: bool = True) -> Recommendation | None:
        """The recommendation for ``array`` (default: the profiled one), made now.

        ``states`` is one profile or a list of them (pilots of one workload at
        several chunk sizes), pooled with the stored computes of their workloads
        and the ``extra`` observations; ``reach`` and ``evidence`` as the recommender
        takes them.
        ``current=False`` plans for an array made fresh, with no chunks to keep or
        to align with.
        """
        states = states if isinstance(states, list) else [states]
        state = states[-1]
        if state.computes == 0 or state.unknown_shape:
            return None
        if array is None:
            shape, dtype, chunks, storage = state.shape, state.dtype, state.chunks, state.storage
        else:
            shape, dtype, chunks = array.shape, array.dtype, array.chunks
            storage = storage or _graph.storage_chunks(array)
        carried, threads = carried_for(states, fingerprint(settings))
        rec = self.recommender().recommend(
            self.pool(states, settings, extra), shape, max(1, dtype.itemsize),
            current_chunks=chunks if current else None, storage_chunks=storage,
            downstream=downstream if downstream is not None else hints_for(states, shape),
            cluster=_cluster_of(states),
            worker_saturation=next((s.saturation for s in reversed(states) if s.workers),
                                   None),
            warn=warn, **({} if reach == _model.REACH else {"reach": reach}),
            **({} if evidence else {"evidence": False}),
            **({} if threads is None else {"concurrency": threads}),
        )
        return rec if rec is None or not carried else replace(rec, carried=carried)

    def recommendation(self, array, profile_id, settings: Settings, workload=None,
                       newest: bool = False, what: str = "recommend", storage=None,
                       probe: bool | float = False, run_profiled=None) -> Recommendation:
        """:meth:`recommend_for` the profiles that decide for ``array``, or a ValueError.

        ``workload`` may be a function of the array (it is called on ``array`` for
        its graph); with ``probe`` it is run on samples (see :meth:`tuned`).
        """
        function = workload if callable(workload) and not dask.is_dask_collection(
            workload) else None
        if function is not None:
            workload = function(array)
        if probe is not False and probe is not None:
            _check_probe(probe, function, run_profiled)
        else:
            probe = False
        states = self.sources(array, profile_id, what, settings, workload, newest)
        self._check_workload(workload, settings)
        downstream = downstream_of(array, workload)
        if probe:
            rec = self.tuned(states, settings, array, downstream, storage, function, probe,
                             run_profiled)
        else:
            rec = self.recommend_for(states, settings, array, downstream, storage=storage)
        if rec is None:
            raise ValueError(
                f"profile {[s.id for s in states]} cannot recommend chunks: "
                f"{unavailable(states[-1])}"
            )
        return rec

    def tuned(self, states, settings: Settings, array, downstream, storage, function,
              probe: bool | float, run_profiled) -> Recommendation | None:
        """The recommendation after probing ``function`` at the best chunks that
        were not measured (``probe.tune``): ``probe`` is the time budget in
        seconds, or True for the larger of :data:`PROBE_SECONDS` and
        :data:`PROBE_SHARE` of the compute's predicted time."""
        def recommend(extra, reach, warn=False, evidence=True):
            return self.recommend_for(states, settings, array, downstream, warn=warn,
                                      storage=storage, extra=extra, reach=reach,
                                      evidence=evidence)

        first = recommend([], _model.REACH)
        if first is None or first.model is None:
            return first
        budget = (max(PROBE_SECONDS, PROBE_SHARE * first.predicted_seconds)
                  if probe is True else float(probe))
        blocks = _probe.SAMPLE_WAVES * max(1, first.concurrency)
        itemsize = max(1, array.dtype.itemsize)
        # A sample of an array made in memory is made first, at the chunks it has now:
        # at most what a measured compute took per byte, workload and all. Large
        # chunks make the sample most of the array, and on a cluster with small
        # chunks making it costs as much as the compute that was profiled.
        making = 0.0 if _probe.stored(array) else min(
            (o.wall_seconds / o.array_bytes
             for o in self.pool(states, settings).observations() if o.array_bytes > 0),
            default=0.0)

        def estimate(rec: Recommendation) -> float:
            shape = _shapes.sample_shape(array.shape, rec.chunks, blocks)
            n = math.prod(-(-s // max(1, c)) for s, c in zip(shape, rec.chunks))
            nbytes = math.prod(shape) * itemsize
            p = _model.predict(rec.model, nbytes, rec.chunk_bytes, rec.concurrency,
                               n_chunks=n)
            return p.seconds * (1 + 1 / n) + making * nbytes  # sample, traced task, making

        extra, runs, why = _probe.tune(
            lambda extra, reach: recommend(extra, reach, evidence=False),
            self._prober(states, settings, array, function, blocks, run_profiled),
            estimate, budget)
        # What a probe measured is trusted near it only: a sample's tasks are the
        # real ones, but its compute is not the whole array's.
        measured = any(r.error is None for r in runs)
        rec = recommend(extra, _probe.CLOSE if measured else _model.REACH, warn=True)
        spent = sum(r.seconds for r in runs)
        return None if rec is None else replace(
            rec, probes=runs, probe_note=f"{why}; {spent:.2g} s of a {budget:.2g} s budget")

    def _prober(self, states, settings: Settings, array, function, blocks: int,
                run_profiled) -> Callable:
        """``measure_at(chunks)`` for :func:`.probe.tune`. A sample of an array made in
        memory skips making it; the first probe also runs the same sample at the
        profiled chunks, whose cost against the profile's is what that skipped (its
        time is counted in the first probe's)."""
        itemsize = max(1, array.dtype.itemsize)
        current = _shapes.largest(array.chunks)
        here = math.prod(current) * itemsize
        profiled = [o for o in self.pool(states, settings).observations()
                    if abs(o.chunk_bytes - here) <= 0.01 * here and o.task_seconds > 0]
        per_byte: list[float] = []

        def measure_at(chunks):
            shape = _shapes.sample_shape(array.shape, chunks, blocks)
            spent = 0.0
            if not per_byte:
                per_byte.append(0.0)
                if profiled and not _probe.stored(array):
                    # Per byte, so a corner of a few waves of the old chunks is enough.
                    small = _shapes.sample_shape(array.shape, current, 8 * blocks)
                    reference, run = _probe.measure(array, function, current, blocks,
                                                    run_profiled, shape=small, trace=False)
                    spent = run.seconds
                    if reference:  # one compute: one observation
                        per_byte[0] = _probe.production_per_byte(profiled[-1], reference[0])
            observations, run = _probe.measure(array, function, chunks, blocks,
                                               run_profiled, shape=shape, per_byte=per_byte[0])
            return observations, replace(run, seconds=run.seconds + spent)

        return measure_at

    def for_profile(self, state: Profile, settings: Settings, warn: bool = True
                    ) -> Recommendation | None:
        """The recommendation of one profile for its own array (with its dimension names)."""
        rec = self.recommend_for(state, settings, warn=warn)
        if rec is not None and state.dims is not None:
            rec = replace(rec, dims=state.dims)
        return rec

    # -- predicting --------------------------------------------------------

    def predict(self, array, chunks, profile_id, settings: Settings, workload=None
                ) -> dict[str, Any]:
        """Predicted time, tasks and peak memory of ``array`` in ``chunks``."""
        states = self.sources(array, profile_id, "predict", settings, workload)
        self._check_workload(workload, settings)
        fit = fit_observations(self.pool(states, settings).observations())
        return self.predict_normalized(states, array, _shapes.normalized(array, chunks), fit,
                                       settings, workload)

    def predict_normalized(self, states, array, normalized, fit, settings: Settings,
                           workload=None) -> dict[str, Any]:
        """:meth:`predict` for Dask's normal-form chunks, with the model already fitted."""
        recommender = self.recommender()
        workers = workers_for(_cluster_of(states), fit, array.chunks)
        threads = carried_for(states, fingerprint(settings))[1]
        if fit is None and math.prod(array.shape) == 0:
            return {"chunks": _shapes.largest(normalized), "chunk_size_mb": 0.0,
                    "predicted_peak_memory_mb": 0.0, "predicted_time_s": 0.0,
                    "predicted_tasks": 0, "predicted_overhead_fraction": 0.0,
                    "fits_budget": True,
                    "memory_budget_mb": recommender.memory_budget() / MiB, "concurrency": 1}
        if fit is None:
            raise ValueError(
                f"profile {[s.id for s in states]} cannot predict: {unavailable(states[-1])}"
            )
        itemsize = max(1, array.dtype.itemsize)
        largest = _shapes.largest(normalized)
        chunk_bytes = max(1, math.prod(largest) * itemsize)
        array_bytes = max(1, math.prod(array.shape) * itemsize)
        hints = downstream_of(array, workload) or hints_for(states, array.shape)
        aligned = bool(hints.whole_dims) and all(len(normalized[d]) == 1
                                                 for d in hints.whole_dims)
        n_chunks = math.prod(len(c) for c in normalized)
        budget = recommender.memory_budget(
            None if recommender.plan_settings(settings).memory_limit else workers.memory_limit)
        pred = _model.predict(fit, array_bytes, chunk_bytes, workers.threads or threads,
                              workers.baseline, aligned=aligned, n_chunks=n_chunks,
                              processes=workers.processes, resident_bytes=workers.resident)
        out = {
            "chunks": largest,
            "chunk_size_mb": chunk_bytes / MiB,
            "predicted_peak_memory_mb": pred.peak_bytes / MiB,
            "predicted_time_s": pred.seconds,
            "predicted_tasks": pred.n_tasks,
            "predicted_overhead_fraction": pred.overhead_fraction,
            "fits_budget": _planning.fits(fit, pred, budget, array_bytes),
            "memory_budget_mb": budget / MiB,
            "concurrency": workers.threads or threads or fit.concurrency,
        }
        sat = workers.saturation(fit, array_bytes, chunk_bytes, budget=budget,
                                 n_chunks=n_chunks, aligned=aligned)
        if sat is not None:
            out.update({
                "scheduler_config": scheduler_config(sat),
                "predicted_queued_peak_memory_mb": sat.peak_bytes / MiB,
                "predicted_unqueued_peak_memory_mb": sat.unqueued_peak_bytes / MiB,
            })
        return out

    def at_current(self, state: Profile, fit, settings: Settings) -> dict[str, Any] | None:
        """What the model (``fit``, the recommendation's) predicts for the profiled
        array in its own chunks: set against the measured peak and time, it says how
        far to trust the model."""
        import dask.array as da

        if fit is None:
            return None
        stand_in = da.empty(state.shape, dtype=state.dtype, chunks=state.chunks)
        return self.predict_normalized([state], stand_in, state.chunks, fit, settings)

    # -- applying ----------------------------------------------------------

    def apply(self, array, recommendation, settings_now: Callable[[], Settings]):
        """``array`` rechunked to ``recommendation``: chunks, a Recommendation, profile
        ids, or None (the newest profile of this array, or with auto-rechunk on, the
        newest stored workload of its kind). ``settings_now`` gives the settings (and
        brings the profiles up to date) when a recommendation must be made."""
        from dask.array.core import Array

        if not isinstance(array, Array):
            raise TypeError(
                f"apply_recommendation expects a dask.array.Array (or an xarray object "
                f"backed by Dask), got {type(array).__name__}"
            )
        chunks = recommendation
        if chunks is None:
            settings = settings_now()
            chunks = self.recommendation(array, None, settings, newest=settings.auto_rechunk,
                                         what="apply_recommendation").chunks
        elif self.are_ids(chunks, array):
            chunks = self.recommendation(array, chunks, settings_now()).chunks
        if isinstance(chunks, Recommendation):
            chunks = chunks.chunks
        normalized = _shapes.normalized(array, chunks)
        if normalized == array.chunks:
            return array
        source = _graph.rereadable(array)
        if source is not None:  # read at the new chunks, not read at the old and merged
            import dask.array as da

            out = da.from_array(source, chunks=normalized)
        else:
            out = array.rechunk(normalized)
        for state in self.profiles.named(array.name):  # its computes measure these chunks
            self.profiles.add_variant(state, out)
        return out

    # -- arguments that may be profile ids ----------------------------------

    def are_ids(self, value, array) -> bool:
        """Whether ``value`` (an argument that may be chunks) is profile ids: known
        ones, or a string that is no chunk size, which then fails as an unknown id."""
        ids = value if isinstance(value, list) or (
            isinstance(value, tuple) and value and all(isinstance(i, str) for i in value)
        ) else [value]
        if not ids or not all(isinstance(i, str) for i in ids):
            return False
        if all(self.profiles.knows(i) for i in ids):
            return True
        if not isinstance(value, str):
            return False
        try:  # "auto" and "128 MiB" are chunks
            _shapes.normalized(array, value)
            return False
        except ValueError as e:
            try:
                self.profiles.get(value)
            except KeyError as unknown:
                raise ValueError(f"{e}; nor is it a profile id: {unknown.args[0]}") from None
            raise

    # -- auto-rechunk's target ---------------------------------------------

    def auto_target(self, settings: Settings) -> tuple[int, str] | None:
        """The byte target auto-rechunk gives Dask's auto-chunking, and why; None
        without comparable history.

        Learned from the newest workload stored on comparable hardware, from every
        stored compute of it. The target is a largest chunk size, for arrays of any
        size: the recommendation for that workload at its stored size, and at sizes
        growing 4-fold from it while the recommended chunks still grow (a small
        array is split for its threads, a large one is not limited by its size) and
        still fit the budget. Cached until the history or the settings change.
        """
        if not settings.history:
            return None
        store, here = self.history.store(settings), fingerprint(settings)
        key = (str(store.path), store.generation(), here, repr(dask.config.get(PREFIX)),
               self.recommender().plan_settings(settings))
        cached = self._target
        if cached is not None and cached[0] == key:
            return cached[1]
        target = None
        row = self.history.newest_workload(settings, hardware=here)
        if row is not None:
            target = self._plateau(row, here, settings)
        self._target = (key, target)
        return target

    def _plateau(self, row: dict[str, Any], here: str, settings: Settings
                 ) -> tuple[int, str] | None:
        """The recommended chunk bytes of a stored workload once its size stops mattering."""
        import dask.array as da

        shape, dtype = tuple(row["shape"]), np.dtype(row["dtype"])
        block = tuple(max(1, max(c, default=1)) for c in row["chunks"])
        states = self.history.stand_in(da.empty(shape, dtype=dtype, chunks=block),
                                       row["signature"], settings, here)
        if not states:
            return None
        best, scale = None, 1
        for factor in PLATEAU_FACTORS:
            grown = tuple(max(1, round(n * factor ** (1 / max(1, len(shape))))) for n in shape)
            stand_in = da.empty(grown, dtype=dtype, chunks=block)
            # A byte target for Dask's "auto" chunking: for arrays made fresh.
            rec = self.recommend_for(states, settings, stand_in, warn=False, current=False)
            if rec is None or rec.model is None or (best is not None and not rec.fits_budget):
                break  # not fitting: stop here
            grew = best is None or rec.chunk_bytes > 1.05 * best.chunk_bytes
            best, scale = rec, factor
            if not grew:
                break
        if best is None:
            return None
        return best.array_chunk_size, (
            f"recommended for the newest workload stored for this hardware (signature "
            f"{row['signature']}, {shape} {dtype}, {states[0].computes} stored computes)"
            + (f" at {scale}x that size, past which larger arrays get the same chunks"
               if scale > 1 else "")
            + f": chunks {best.chunks}, predicted peak {best.predicted_peak_bytes / MiB:.0f} "
            f"MiB of a {best.memory_budget_bytes / MiB:.0f} MiB budget"
        )
