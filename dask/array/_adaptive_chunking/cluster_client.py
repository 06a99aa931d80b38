"""The client's half of profiling on a ``dask.distributed`` cluster.

On a cluster the engine's ``array_optimize`` hook is pickled on the client and runs
on the scheduler, and tasks run in the workers: nothing the local schedulers use
reaches the client. So when the hook is pickled (:func:`snapshot`) it takes a
compute id and the profiled array names with their profile ids to the scheduler's
optimizer; the scheduler's plugin records the annotated tasks
(``cluster_scheduler``), and the client drains them (:func:`drain`) when a profile
is read, decoding the graph facts that came along (:func:`graph_facts`).

``distributed`` is imported lazily: the module imports without it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from dask.array._adaptive_chunking.folding import GraphFacts
from dask.array._adaptive_chunking.graph import Downstream, signature

__all__ = [
    "PLUGIN_NAME", "ANNOTATION", "SUBMIT_GRACE", "client_for_compute", "snapshot",
    "ensure_plugin", "plugin_ready", "set_worker_saturation", "drain", "as_key",
    "cluster_workers", "graph_facts", "record_cap", "prepare", "worker_memory",
    "apply_scheduler_config",
]

logger = logging.getLogger("dask.array.adaptive_chunking")

PLUGIN_NAME = "adaptive-chunking"
ANNOTATION = "adaptive_chunking"
#: Computes kept on the scheduler waiting to be drained; older ones are dropped.
MAX_COMPUTES = 64
#: Seconds a compute may take from being sent (or optimized) to having its tasks on
#: the scheduler; until then, not finding them does not mean it is gone.
SUBMIT_GRACE = 5.0


def _scheduler():
    """The scheduler's half, imported once a cluster is in use (it needs distributed)."""
    from dask.array._adaptive_chunking import cluster_scheduler

    return cluster_scheduler


def as_key(key):
    """A task key as Dask spells it (messages from the scheduler may turn tuples into lists)."""
    if isinstance(key, list):
        return tuple(as_key(k) for k in key)
    return key


def client_for_compute():
    """The distributed client a compute started here uses, or None.

    The same choice as Dask's ``get_scheduler`` (``distributed.get_client``: the
    client of ``as_current``, else the newest), except inside a worker's task, whose
    computes are not the user's.
    """
    import sys

    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import Client, get_worker

        try:
            get_worker()
            return None
        except ValueError:
            pass
        client = Client.current(allow_global=True)
    except (ValueError, ImportError):
        return None
    # An asynchronous client's calls return coroutines the engine cannot wait for.
    return None if getattr(client, "asynchronous", False) else client


def snapshot(base, named: dict[str, tuple[str, ...]], everything: bool = False,
             shapes: dict[str, tuple[int, ...]] | None = None):
    """A :class:`RemoteOptimizer` for one compute, and its compute id."""
    cid = uuid.uuid4().hex
    return _scheduler().RemoteOptimizer(base, cid, named, everything, shapes), cid


def ensure_plugin(client, max_records: int) -> bool:
    """Register the profiling plugin on the client's scheduler (idempotent; blocking).

    Returns False, and profiles nothing there, when the scheduler cannot import
    this package (the optimizer sent to it would not unpickle). Settings are read
    on the client and travel with the plugin: the scheduler does not see the
    client's ``dask.config``. Never call this while distributed pickles a graph
    (it waits for the client's event loop, which may wait for the pickling).
    """
    state = getattr(client, "_adaptive_chunking_plugin", None)
    if state is False or (state is not None and state == max_records):
        return state is not False
    if isinstance(state, int):  # registered (idempotent): change its bound in place
        client.run_on_scheduler(_scheduler().set_record_cap, max_records)
        client._adaptive_chunking_plugin = max_records
        return True
    if not client.run_on_scheduler(_scheduler().importable):
        import warnings

        from dask.array._adaptive_chunking.errors import AdaptiveChunkingWarning

        client._adaptive_chunking_plugin = False
        warnings.warn(
            "the distributed scheduler cannot import dask.array.adaptive_chunking; "
            "computes on it are not profiled. Install this package where the "
            "scheduler runs",
            AdaptiveChunkingWarning,
            stacklevel=2,
        )
        return False
    client.register_plugin(_scheduler().ProfilingPlugin(max_records=max_records))
    client._adaptive_chunking_plugin = max_records
    return True


def plugin_ready(client, max_records: int) -> bool:
    """Whether computes on ``client`` can be profiled now, without blocking.

    When nobody has registered the plugin on this client yet (a client started after
    ``profile_array``), a background thread does, and this compute runs unprofiled.
    """
    state = getattr(client, "_adaptive_chunking_plugin", None)
    if state is None:
        import threading

        client._adaptive_chunking_plugin = "registering"

        def register():
            try:
                ensure_plugin(client, max_records)
            except Exception:
                client._adaptive_chunking_plugin = None  # try again next time

        threading.Thread(target=register, name="adaptive-chunking-plugin",
                         daemon=True).start()
        return False
    return state is not False and state != "registering"


def set_worker_saturation(client, value: float) -> float:
    """Set the scheduler's worker saturation; returns the previous value."""
    return client.run_on_scheduler(_scheduler().set_saturation, value)


def drain(client, cids) -> dict[str, Any]:
    """Fetch (and, for finished computes, remove) the records of ``cids``."""
    return client.sync(client.scheduler.adaptive_chunking_drain, cids=list(cids))


def cluster_workers(client=None) -> dict[str, dict]:
    """The workers of ``client`` (default: the client a compute started now would use)."""
    client = client if client is not None else client_for_compute()
    if client is None:
        return {}
    try:
        return dict(client.scheduler_info()["workers"])
    except Exception as e:  # a closed client, a lost scheduler
        logger.debug("adaptive chunking could not read the workers: %s", e)
        return {}


def graph_facts(structure: dict[str, Any], involved) -> GraphFacts:
    """The graph facts a scheduler's optimizer sent with a compute's records.

    ``involved`` are the client's profiles the records belong to (their workload
    signatures come from the graph's layers).
    """
    layers, by_name = structure.get("layers"), structure["hints"]
    ran = {s: s.chunks_in(by_name if layers is None else set(layers)) for s in involved}
    hints = {}
    for state, (name, _) in ran.items():
        if name in by_name:
            whole, square, ops = by_name[name]
            hints[state] = Downstream(frozenset(whole), bool(square), tuple(ops))
    return GraphFacts(
        dependencies={as_key(k): [as_key(d) for d in ds]
                      for k, ds in structure["dependencies"]},
        fused={as_key(k): op for k, op in structure["fused"]},
        hints=hints,
        signatures={s: signature(layers, len(s.shape), s.dtype) for s in involved}
        if layers is not None else {},
        chunks={s: chunks for s, (_, chunks) in ran.items()},
    )


#: Estimated memory of one task record held by the scheduler plugin.
REMOTE_RECORD_COST = 400


def record_cap(settings) -> int:
    """Task records the scheduler keeps, all computes together, until drained.

    ``max-memory`` worth of them; without a ceiling, ``max-records`` x 100.
    """
    if settings.max_memory is not None:
        return max(settings.max_memory // REMOTE_RECORD_COST, 1)
    return max(settings.max_records, 1) * 100


def prepare(settings) -> None:
    """Register the plugin on the current distributed client's scheduler, if any.

    Called where blocking is safe (``profile_array``, ``enable_adaptive_chunking``),
    so that the next compute on the cluster is profiled.
    """
    try:
        client = client_for_compute()
        if client is not None:
            ensure_plugin(client, record_cap(settings))
    except Exception as e:  # profiling must never break the caller
        logger.debug("adaptive chunking could not prepare the cluster: %s", e)


def apply_scheduler_config(recommendation, client=None) -> dict[str, Any]:
    """Set a recommendation's ``scheduler_config`` (``{worker-saturation key: value}``,
    or the recommendation itself) on the running scheduler of ``client`` (default:
    the default client); returns the old settings."""
    import math

    import numpy as np

    from dask.array._adaptive_chunking.recommendation import SATURATION_KEY, Recommendation

    config = recommendation
    if isinstance(config, Recommendation):
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
    client = client or client_for_compute()
    if client is None:
        raise ValueError(
            "no dask.distributed client: start one, or pass client=, to apply "
            "scheduler settings"
        )
    old = set_worker_saturation(client, float(value))
    return {SATURATION_KEY: "inf" if math.isinf(old) else old}


def worker_memory(client=None) -> list[tuple[str, int, int, int]]:
    """``(address, memory in use, memory limit, threads)`` of each worker of the
    attached cluster (none without one); a limit of 0 is unknown."""
    return [(addr, int(w.get("metrics", {}).get("memory", 0) or 0),
             int(w.get("memory_limit") or 0), int(w.get("nthreads", 0) or 0))
            for addr, w in cluster_workers(client).items()]
