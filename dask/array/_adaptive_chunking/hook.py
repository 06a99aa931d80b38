"""The ``array_optimize`` hook, and which engines it serves.

Dask calls ``array_optimize`` in the thread that computes, with the graph before
optimization: the one place that knows which profiled arrays a compute holds (see
``shared/notes``: global callbacks miss concurrent computes). The hook takes one
settings snapshot per compute, keeps auto-rechunk in step, asks each engine's
recorder for a plan (the process-wide engine's first), runs Dask's own optimization
and lets the chosen recorder instrument the result. Pickled for a distributed
scheduler it becomes the scheduler-side optimizer, or Dask's plain optimization.

The process-wide engine lives in the public module; it registers its parts here
(:data:`runtime`), and a factory to create it when a setting alone asks for
profiling, so this package never imports the public module.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import NamedTuple

import dask
from dask.array._adaptive_chunking import auto_rechunk as _auto_rechunk
from dask.array._adaptive_chunking import cluster_client as _cluster
from dask.array._adaptive_chunking import config as _config
from dask.array._adaptive_chunking.errors import warn_engine_error
from dask.array._adaptive_chunking.recorder import ComputeRecorder, deferred

__all__ = [
    "GlobalEngine", "Runtime", "runtime", "ProfilingOptimizer", "install", "uninstall",
    "installed", "sync_auto_rechunk", "profiled_run",
]

_MISSING = object()


class GlobalEngine(NamedTuple):
    """What the hook needs of the process-wide engine."""

    recorder: ComputeRecorder
    auto_target: Callable[[_config.Settings], tuple[int, str] | None]


class Runtime:
    """The recorders of every live engine, and the process-wide engine's parts."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.recorders: weakref.WeakSet[ComputeRecorder] = weakref.WeakSet()
        self.current: GlobalEngine | None = None
        #: Creates the process-wide engine (set by the public module) and returns its parts.
        self.factory: Callable[[], GlobalEngine] | None = None

    def ordered(self) -> list[ComputeRecorder]:
        """Every live recorder, the process-wide engine's first."""
        return sorted(list(self.recorders), key=lambda r: not r.is_global)

    def global_engine(self) -> GlobalEngine | None:
        """The process-wide engine's parts, created if there is none yet."""
        current = self.current
        if current is None and self.factory is not None:
            current = self.factory()
        return current


runtime = Runtime()


def sync_auto_rechunk(settings: _config.Settings | None = None, wait: bool = True) -> None:
    """Make ``array.chunk-size`` follow ``auto-rechunk`` with the process-wide engine's
    target; with no such engine yet and auto-rechunk on, creating it syncs. With
    ``wait``, the target counts every compute that has returned (their folds are
    waited for); a compute's own hook does not wait for the one before."""
    try:
        settings = settings or _config.snapshot(strict=False)
        on = settings.auto_rechunk
    except (TypeError, ValueError) as e:  # a misspelled key, a bad auto-rechunk value
        _auto_rechunk.warn_not_applied(e)
        return
    if wait and on:
        deferred.settle()
    current = runtime.current
    if current is None and on:
        runtime.global_engine()  # creating it syncs
        return
    _auto_rechunk.sync(settings, current.auto_target if current is not None
                       else lambda s: None)


class ProfilingOptimizer:
    """The ``array_optimize`` function the engine installs.

    It runs the optimization Dask would run without it (Dask's own, or the function
    configured before, with Dask's rule that a falsy value means no optimization),
    then lets one recorder instrument the result: the first whose engine profiles an
    array of this graph (the process-wide engine first), else the process-wide
    engine's when it is enabled. With nothing to profile it returns the optimized
    graph untouched.
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

    def _choose(self, dsk, keys):
        settings = _config.snapshot(strict=False)  # a bad setting fails where it is read
        sync_auto_rechunk(settings, wait=False)
        plans = []
        for recorder in runtime.ordered():
            plan = recorder.plan(dsk, keys, settings)
            if plan is not None:
                plans.append((recorder, plan))
        if not plans and runtime.current is None and settings.enabled:
            recorder = runtime.global_engine().recorder  # enabled by config alone
            plan = recorder.plan(dsk, keys, settings)
            if plan is not None:
                plans.append((recorder, plan))
        return next((p for p in plans if p[1].states), plans[0] if plans else None)

    def __call__(self, dsk, keys, **kwargs):
        chosen = None
        try:
            chosen = self._choose(dsk, keys)
        except Exception as e:
            warn_engine_error(e)
        out = self.base()(dsk, keys, **kwargs)
        if chosen is not None:
            recorder, plan = chosen
            try:
                out = recorder.instrument(out, keys, plan)
            except Exception as e:
                warn_engine_error(e)
                for state in plan.states:  # say why, where the profile is read
                    state.error = f"{type(e).__name__}: {e}"
        return out

    def __reduce__(self):
        base = self.base()
        try:
            remote = self._remote(base)
            if remote is not None:
                return remote.__reduce__()
        except Exception as e:  # profiling must never break the compute
            warn_engine_error(e)
        return _plain_optimizer, (base,)

    @staticmethod
    def _remote(base):
        """The scheduler-side optimizer for a compute on a cluster, if it is profiled."""
        client = _cluster.client_for_compute()
        current = runtime.current
        recorder = current.recorder if current is not None else next(
            iter(runtime.recorders), None)
        if client is None or recorder is None:
            return None
        settings = _config.snapshot(strict=False)
        named, shapes = recorder.profiles.remote_names()
        everything = recorder.is_global and settings.enabled
        if not (named or everything):
            return None
        # No blocking call here: distributed pickles under a client lock.
        if not _cluster.plugin_ready(client, _cluster.record_cap(settings)):
            return None
        remote, cid = _cluster.snapshot(base, named, everything, shapes)
        recorder.sent(cid, client)
        return remote


def _plain_optimizer(base):
    return base


_lock = threading.Lock()


def install() -> None:
    """Make the engine's optimizer Dask's ``array_optimize`` (idempotent)."""
    with _lock:
        current = dask.config.config.get("array_optimize", _MISSING)
        if isinstance(current, ProfilingOptimizer):
            return
        dask.config.set(array_optimize=ProfilingOptimizer(current))


def uninstall() -> None:
    """Give ``array_optimize`` back the value it had before the engine."""
    with _lock:
        current = dask.config.config.get("array_optimize", _MISSING)
        if not isinstance(current, ProfilingOptimizer):
            return
        if current.previous is _MISSING:
            dask.config.config.pop("array_optimize", None)
        else:
            dask.config.set(array_optimize=current.previous)


def profiled_run(profiles, recorder: ComputeRecorder, sample, collection) -> list:
    """Compute ``collection`` with ``sample`` profiled (a probe): the observations
    that compute made. The sample's profile is temporary and does not count
    against ``max-profiles``."""
    settings = _config.snapshot()
    state = profiles.add(sample, settings.max_profiles + 1)
    state.sample = True
    was_installed = installed()
    install()
    try:
        dask.compute(collection)
        recorder.drain(settings)
        return state.aggregate.observations()
    finally:
        profiles.remove(state.id)
        if not was_installed:
            uninstall()


def installed() -> bool:
    """Whether the engine's optimizer is Dask's ``array_optimize`` now."""
    return isinstance(dask.config.config.get("array_optimize"), ProfilingOptimizer)
