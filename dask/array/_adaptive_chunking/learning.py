"""The engine's history, as the engine uses it (the database itself is ``history.py``).

A mixin of :class:`~dask.array.adaptive_chunking.AdaptiveChunkingEngine`: storing
finished computes, reading back the stored computes of a workload measured on
comparable hardware (pooled into recommendations, or standing in for a profile when
there is none), auto-rechunk's byte target, and the history's public methods. Also
the hardware fingerprint of a compute: the scheduler that runs it, its threads and
the memory it may use.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.system import CPU_COUNT as _CPU_COUNT

import dask
from dask.array._adaptive_chunking import cluster as _cluster
from dask.array._adaptive_chunking import config as _config
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import errors as _errors
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import public as _ac

if TYPE_CHECKING:
    from dask.array.adaptive_chunking import _Profile

__all__ = ["Learning"]

logger = logging.getLogger("dask.array.adaptive_chunking")
_PREFIX = _config.PREFIX
_read = _config.setting
_flag = _config.flag
MiB = 2**20

#: Newest stored computes searched for one on comparable hardware.
_NEWEST_SCAN = 200
#: Stored computes of one workload a recommendation learns from (the newest).
_STORED_ROWS = 200
#: Array sizes (times the stored one) at which auto-rechunk's target is looked for.
_PLATEAU_FACTORS = (1, 4, 16, 64, 256)


def _scheduler_kind() -> tuple[str, int]:
    """The kind of scheduler an array compute started now would use, and how many
    tasks it runs at once (0 on a cluster: its workers say)."""
    import functools
    import sys

    import dask.local
    import dask.multiprocessing
    from dask.base import get_scheduler

    try:
        get = get_scheduler()
    except Exception:  # an asynchronous client: Dask would refuse or fall back
        get = None
    if get is dask.local.get_sync:
        return "sync", 1
    if get is dask.multiprocessing.get:
        return "processes", _local_threads()
    if isinstance(get, functools.partial) and get.func is dask.local.get_async:
        return "threads", int(get.args[1])  # an executor: its own pool
    if "distributed" in sys.modules:
        from distributed import Client

        if isinstance(getattr(get, "__self__", None), Client):
            return "distributed", 0
    return "threads", _local_threads()  # dask.array's default


def _local_threads() -> int:
    """How many tasks the threaded or processes scheduler runs at once (config)."""
    pool = dask.config.get("pool", None)
    return int(dask.config.get("num_workers", None)
               or getattr(pool, "_max_workers", None) or _CPU_COUNT)


def _fingerprint(kind: str | None = None, workers: Mapping | None = None) -> str:
    """The hardware a compute runs on, as stored with it in the history.

    ``kind`` is the kind of scheduler that ran it (default: the one a compute
    started now would use); its thread count is the one that scheduler would use
    now (an executor's pool, ``num_workers``, or the CPU count). On a cluster,
    ``workers`` describes it (address -> ``nthreads``, ``memory_limit``; default:
    the current client's) and its workers count as the cores.
    """
    from dask.array._adaptive_chunking import history

    now, threads = _scheduler_kind()
    kind = kind or now
    if kind != now:
        threads = 1 if kind == "sync" else _local_threads()
    if kind == "distributed":
        if workers is None:
            workers = _cluster_workers()
        limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
        return history.fingerprint(
            cores=len(workers), threads=sum(int(w.get("nthreads") or 0)
                                            for w in workers.values()),
            memory_limit=min(limits, default=0), scheduler=kind,
        )
    return history.fingerprint(cores=_CPU_COUNT, threads=threads,
                               memory_limit=_ac.memory_limit(), scheduler=kind)


def _comparable(history, stored: str, here: str) -> bool:
    """``history.comparable``; a fingerprint that does not parse is not comparable."""
    try:
        return history.comparable(stored, here)
    except (ValueError, TypeError, AttributeError):
        return False


def _dtype_text(dtype) -> str:
    """A dtype as text NumPy reads back: its name where that is exact, else its
    type string (a structured dtype keeps its size, not its fields)."""
    dtype = np.dtype(dtype)
    try:
        if dtype.fields is None and np.dtype(dtype.name) == dtype:
            return dtype.name
    except TypeError:  # 'str96', 'bytes8': names NumPy does not read back
        pass
    return dtype.str


def _cluster_workers(client=None) -> dict[str, dict]:
    """The workers of ``client`` (default: the client a compute started now would use)."""
    client = client if client is not None else _cluster.client_for_compute()
    if client is None:
        return {}
    try:
        return dict(client.scheduler_info()["workers"])
    except Exception as e:  # a closed client, a lost scheduler
        logger.debug("adaptive chunking could not read the workers: %s", e)
        return {}


class Learning:
    """The engine's side of its history (see the module's docstring)."""

    def _stored(self, states: list[_Profile]) -> list[_model.Observation]:
        """What the history holds of these profiles' workloads, measured on comparable
        hardware by other computes (other profiles, other processes): the newest
        :data:`_STORED_ROWS` of each workload, oldest first."""
        wanted = {(s.signature, s.fingerprint or _fingerprint()) for s in states if s.signature}
        if not wanted or not _flag("history"):
            return []
        from dask.array._adaptive_chunking import history

        mine = {s.id for s in states}
        theirs = 256 * sum(1 for s in states if s.computes)  # rows they may have stored
        out = []
        try:
            for signature, here in wanted:
                rows = [r for r in self._rows(signature, here, limit=_STORED_ROWS + theirs)
                        if r["data"].get("profile") not in mine][:_STORED_ROWS]
                out += [history.observation_from_json(r["data"]["observation"])
                        for r in reversed(rows) if "observation" in r["data"]]
        except Exception as e:  # an unreadable history: recommend from the profiles alone
            _errors.warn_once("history-read", "adaptive chunking could not read its history "
                             f"({type(e).__name__}: {e}); recommending from this process's "
                             "profiles only")
            return []
        return out

    def _from_history(self, array, workload) -> list[_Profile]:
        """A stand-in profile of ``array`` made of the stored computes of ``workload``."""
        expression = workload if workload is not None else array
        expressions = expression if isinstance(expression, (list, tuple)) else [expression]
        for e in expressions:
            if not callable(getattr(e, "__dask_graph__", None)):
                raise TypeError(
                    f"workload must be a dask collection or a list of them (what will be "
                    f"computed from the array), got {e!r}"
                )
        layers = [n for e in expressions for n in e.__dask_graph__().layers]
        return self._stand_in(array, _graph.signature(layers, array.ndim, array.dtype))

    def _stand_in(self, array, signature: str, fingerprint: str | None = None
                  ) -> list[_Profile]:
        """A profile of ``array`` made of the stored computes of a workload signature
        on hardware comparable to ``fingerprint`` (default: where a compute started
        now would run); empty when there are none."""
        state = _ac._Profile("history", array)
        state.signature = signature
        state.fingerprint = fingerprint or _fingerprint()
        observations = self._stored([state])
        state.signature = None  # its observations are the stored ones: not pooled again
        for observation in observations:
            state.profiler._record_compute(observation)
        state.computes = len(observations)
        if state.computes and json.loads(state.fingerprint)["scheduler"] == "distributed":
            state.workers = _cluster_workers()  # the budget of the workers, not of here
        return [state] if state.computes else []

    def _newest_workload(self, ndim: int | None = None, dtype=None,
                         fingerprint: str | None = None) -> dict[str, Any] | None:
        """The newest stored compute on comparable hardware (of ``ndim`` and ``dtype``
        when given), or None."""
        if not _flag("history"):
            return None
        rows = self._rows(None, fingerprint or _fingerprint(),
                          limit=1 if ndim is None else _NEWEST_SCAN)
        return next((r for r in rows if ndim is None or (
            len(r["shape"]) == ndim and np.dtype(r["dtype"]) == np.dtype(dtype)
        )), None)

    def _auto_target(self) -> tuple[int, str] | None:
        """The byte target auto-rechunk gives Dask's auto-chunking, and why; None
        without comparable history.

        Learned from the newest workload stored on comparable hardware, from every
        stored compute of it. The target is a largest chunk size, for arrays of any
        size: the recommendation for that workload at its stored size, and at
        sizes growing 4-fold from it while the recommended chunks still grow (a
        small array is split for its threads, a large one is not limited by its
        size) and still fit the budget. Cached until the history or the settings
        change.
        """
        if not _flag("history"):
            return None
        store, here = self._store(), _fingerprint()
        key = (str(store.path), store.generation(), here, repr(dask.config.get(_PREFIX)))
        cached = self._target
        if cached is not None and cached[0] == key:
            return cached[1]
        target = None
        row = self._newest_workload(fingerprint=here)
        if row is not None:
            target = self._plateau(row, here)
        self._target = (key, target)
        return target

    def _plateau(self, row: dict[str, Any], here: str) -> tuple[int, str] | None:
        """The recommended chunk bytes of a stored workload once its size stops mattering."""
        import dask.array as da

        shape, dtype = tuple(row["shape"]), np.dtype(row["dtype"])
        block = tuple(max(1, max(c, default=1)) for c in row["chunks"])
        states = self._stand_in(da.empty(shape, dtype=dtype, chunks=block), row["signature"],
                                here)
        if not states:
            return None
        best, scale = None, 1
        for factor in _PLATEAU_FACTORS:
            grown = tuple(max(1, round(n * factor ** (1 / max(1, len(shape))))) for n in shape)
            stand_in = da.empty(grown, dtype=dtype, chunks=block)
            rec = self._recommend(states, stand_in, warn=False)  # not fitting: stop here
            if rec is None or rec.model is None or (best is not None and not rec.fits_budget):
                break
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

    def _store(self):
        """The history database of ``history-path`` (opened once per path)."""
        from dask.array._adaptive_chunking import history

        path = _read("history-path") or str(history.default_path())
        with self._lock:
            store = self._stores.get(path)
            if store is None:
                store = self._stores[path] = history.HistoryStore(path)
            store.max_rows = _read("history-max-rows")
        return store

    def save_profile(self, profile_id: str) -> int:
        """Store the complete computes of a profile not stored yet; returns how many.

        Done after each profiled compute while ``array.adaptive-chunking.history`` is
        on; call it to store a profile's computes made with it off (the newest 256
        are kept until then). Each compute is one row: the workload's signature and
        the hardware fingerprint of that compute, the array's shape, dtype and
        chunks, and what the compute measured (JSON). Failed and interrupted
        computes are not stored.
        """
        from dask.array._adaptive_chunking import history

        with self._lock:
            state = self._state(profile_id)
            claimed = list(state.unsaved)
            state.unsaved.clear()
        if not claimed:
            return 0
        records = [
            dict(created=time.time(), signature=signature, fingerprint=fingerprint,
                 shape=state.shape, dtype=_dtype_text(state.dtype), chunks=state.chunks,
                 data={"observation": history.observation_to_json(obs), "profile": state.id})
            for obs, signature, fingerprint in claimed
        ]
        try:
            self._store().add_many(records)
        except BaseException:
            with self._lock:  # not stored: keep them for the next attempt
                state.unsaved.extendleft(reversed(claimed))
            raise
        return len(claimed)

    def load_history(self, signature: str | None = None, *, comparable: bool = False
                     ) -> list[dict[str, Any]]:
        """The stored computes, newest first: all, or those of one workload signature.

        With ``comparable=True`` only those measured on hardware comparable to what
        a compute started now would run on: the same scheduler kind, cores and
        threads, and a memory limit within 25%.
        """
        if signature is not None and not isinstance(signature, str):
            raise TypeError(f"signature must be a workload signature (a string, as in a stored "
                            f"row's 'signature') or None, got {signature!r}")
        if not isinstance(comparable, (bool, np.bool_)):
            raise TypeError(f"comparable must be True or False, got {comparable!r}")
        return self._rows(signature, _fingerprint() if comparable else None)

    def _rows(self, signature: str | None, here: str | None, limit: int | None = None
              ) -> list[dict[str, Any]]:
        """The stored computes of ``signature`` (the newest ``limit``); only those
        comparable to ``here``."""
        from dask.array._adaptive_chunking import history

        store = self._store()
        hardware = None
        if here is not None:  # a few distinct fingerprints: compared before rows are read
            hardware = [f for f in store.fingerprints(signature)
                        if _comparable(history, f, here)]
        return store.rows(signature=signature, fingerprint=hardware, limit=limit)

    def export_history(self, path) -> int:
        """Write the history database as JSON lines to ``path``; returns the rows written."""
        return self._store().export(path)

    def import_history(self, path) -> int:
        """Add the JSON lines of :meth:`export_history` to the history; returns the count."""
        return self._store().import_(path)

    def clear_history(self) -> int:
        """Delete every stored compute; returns how many there were."""
        return self._store().clear()
