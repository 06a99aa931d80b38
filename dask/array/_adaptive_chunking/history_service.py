"""How the engine uses its history (the database itself is ``history.py``).

The :class:`HistoryService` stores finished computes, reads back the stored
computes of a workload measured on comparable hardware (pooled into
recommendations, or standing in for a profile when there is none), and offers the
history's public operations. :func:`fingerprint` describes the hardware a compute
runs on: the scheduler, its threads and the memory it may use.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from dask.system import CPU_COUNT

import dask
from dask.array._adaptive_chunking import cluster_client as _cluster
from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import history as _history
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking.config import Settings
from dask.array._adaptive_chunking.errors import warn_once
from dask.array._adaptive_chunking.memory import memory_limit
from dask.array._adaptive_chunking.profiles import Profile

__all__ = ["HistoryService", "fingerprint", "plannable", "scheduler_kind", "dtype_text",
           "operations"]

logger = logging.getLogger("dask.array.adaptive_chunking")

#: Newest stored computes searched for one on comparable hardware.
NEWEST_SCAN = 200
#: Stored computes of one workload a recommendation learns from (the newest).
STORED_ROWS = 200


def scheduler_kind() -> tuple[str, int]:
    """The kind of scheduler an array compute started now would use, and how many
    tasks it runs at once (0 on a cluster: its workers say)."""
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
        return "processes", local_threads()
    if isinstance(get, functools.partial) and get.func is dask.local.get_async:
        return "threads", int(get.args[1])  # an executor: its own pool
    if "distributed" in sys.modules:
        from distributed import Client

        if isinstance(getattr(get, "__self__", None), Client):
            return "distributed", 0
    return "threads", local_threads()  # dask.array's default


def local_threads() -> int:
    """How many tasks the threaded or processes scheduler runs at once (config)."""
    pool = dask.config.get("pool", None)
    return int(dask.config.get("num_workers", None)
               or getattr(pool, "_max_workers", None) or CPU_COUNT)


#: Seconds a discovered memory limit is reused: reading the cgroup and host files
#: took about a millisecond, paid for every compute stored.
LIMIT_SECONDS = 5.0
_limit: list = [-math.inf, 0]  # when it was read, and the limit


def _memory_limit(configured: int | None) -> int:
    if configured is not None:
        return configured
    read_at, limit = _limit
    now = time.monotonic()
    if now - read_at > LIMIT_SECONDS:
        limit = memory_limit(None)
        _limit[:] = [now, limit]
    return limit


def fingerprint(settings: Settings, kind: str | None = None,
                workers: Mapping | None = None, now: tuple[str, int] | None = None) -> str:
    """The hardware a compute runs on, as stored with it in the history.

    ``kind`` is the kind of scheduler that ran it (default: the one a compute
    started now would use); its thread count is the one that scheduler would use
    now (an executor's pool, ``num_workers``, or the CPU count). On a cluster,
    ``workers`` describes it (address -> ``nthreads``, ``memory_limit``; default:
    the current client's) and its workers count as the cores. ``now`` is
    :func:`scheduler_kind` as read when the compute ended, if it was.
    """
    now, threads = now or scheduler_kind()
    kind = kind or now
    if kind != now:
        threads = 1 if kind == "sync" else local_threads()
    if kind == "distributed":
        if workers is None:
            workers = _cluster.cluster_workers()
        limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
        return _history.fingerprint(
            cores=len(workers), threads=sum(int(w.get("nthreads") or 0)
                                            for w in workers.values()),
            memory_limit=min(limits, default=0), scheduler=kind,
        )
    return _history.fingerprint(cores=CPU_COUNT, threads=threads,
                                memory_limit=_memory_limit(settings.memory_limit),
                                scheduler=kind)


def _comparable(stored: str, here: str) -> bool:
    """``history.comparable``; a fingerprint that does not parse is not comparable."""
    try:
        return _history.comparable(stored, here)
    except (ValueError, TypeError, AttributeError):
        return False


def _carries(stored: str, here: str) -> bool:
    """Whether ``history.carried_over`` plans for ``here`` from ``stored``; a
    fingerprint that does not parse does not."""
    try:
        return _history.carried_over(stored, here) is not None
    except (ValueError, TypeError, AttributeError):
        return False


def plannable(rows: list[dict[str, Any]], here: str) -> list[dict[str, Any]]:
    """Of stored ``rows`` (newest first), those a recommendation for the hardware
    ``here`` learns from, as :meth:`HistoryService.stand_in` chooses them: of each
    workload its computes on comparable hardware, else those on the newest hardware
    whose measurements carry over (another thread or core count).

    >>> f = lambda threads: _history.fingerprint(cores=2, threads=threads,
    ...                                          memory_limit=0, scheduler="threads")
    >>> rows = [dict(id=3, signature="a", fingerprint=f(4)),
    ...         dict(id=2, signature="a", fingerprint=f(1)),
    ...         dict(id=1, signature="b", fingerprint=f(8))]
    >>> [r["id"] for r in plannable(rows, f(1))]
    [2, 1]
    """
    workloads: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        workloads.setdefault(r["signature"], []).append(r)
    out = []
    for mine in workloads.values():
        exact = [r for r in mine if _comparable(r["fingerprint"], here)]
        carried = [r for r in mine if _carries(r["fingerprint"], here)]
        out += exact or [r for r in carried if r["fingerprint"] == carried[0]["fingerprint"]]
    return sorted(out, key=lambda r: r["id"], reverse=True)


def dtype_text(dtype) -> str:
    """A dtype as text NumPy reads back: its name where that is exact, else its
    type string (a structured dtype keeps its size, not its fields).

    >>> dtype_text("float32"), dtype_text("S8")
    ('float32', '|S8')
    """
    dtype = np.dtype(dtype)
    try:
        if dtype.fields is None and np.dtype(dtype.name) == dtype:
            return dtype.name
    except TypeError:  # 'str96', 'bytes8': names NumPy does not read back
        pass
    return dtype.str


def operations(state: Profile) -> dict[str, Any]:
    """What a profile's last compute did, as stored with it for people to read: the
    operation that made the array (``source``) and those applied to it (``applied``,
    by name, sorted; the steps of a tree reduction left out). The workload signature
    is a hash of such names; this keeps them readable.

    >>> import dask.array as da
    >>> x = da.ones((4, 4), chunks=2)
    >>> state = Profile("p", x)
    >>> state.downstream = _graph.downstream((x + x.T).sum().dask, x.name, x.shape)
    >>> operations(state)
    {'source': 'ones_like', 'applied': ['add', 'sum', 'transpose']}
    """
    from dask.utils import key_split

    return {"source": key_split(state.name), "applied": list(state.downstream.ops)}


class HistoryService:
    """The engine's history: one open store per ``history-path``, and its uses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, _history.HistoryStore] = {}

    def store(self, settings: Settings) -> _history.HistoryStore:
        """The history database of ``history-path`` (opened once per path)."""
        path = settings.history_path or str(_history.default_path())
        with self._lock:
            store = self._stores.get(path)
            if store is None:
                store = self._stores[path] = _history.HistoryStore(path)
            store.max_rows = settings.history_max_rows
        return store

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()

    def save(self, state: Profile, settings: Settings) -> int:
        """Store a profile's complete computes not stored yet; returns how many."""
        claimed = []
        while state.unsaved:  # one atomic pop at a time: a compute may append meanwhile
            try:
                claimed.append(state.unsaved.popleft())
            except IndexError:  # another save took the last one
                break
        if not claimed:
            return 0
        records = []
        for c in claimed:
            data = {"observation": _history.observation_to_json(c.observation),
                    "profile": state.id}
            # The downstream operations are those of the profile's last compute: they
            # name only the computes of that workload.
            if c.signature == state.signature:
                data["operations"] = operations(state)
            records.append(dict(
                created=time.time(), signature=c.signature, fingerprint=c.fingerprint,
                shape=state.shape, dtype=dtype_text(state.dtype), chunks=state.chunks,
                data=data))
        try:
            self.store(settings).add_many(records)
        except BaseException:
            state.unsaved.extendleft(reversed(claimed))  # not stored: try again later
            raise
        return len(claimed)

    def rows(self, signature: str | None, here: str | None, settings: Settings,
             limit: int | None = None) -> list[dict[str, Any]]:
        """The stored computes of ``signature`` (the newest ``limit``), newest first;
        only those comparable to the fingerprint ``here`` when given."""
        store = self.store(settings)
        hardware = None
        if here is not None:  # a few distinct fingerprints: compared before rows are read
            hardware = [f for f in store.fingerprints(signature) if _comparable(f, here)]
        return store.rows(signature=signature, fingerprint=hardware, limit=limit)

    def load(self, signature: str | None, comparable, settings: Settings
             ) -> list[dict[str, Any]]:
        """``engine.load_history``: the stored computes (of ``signature``), newest
        first; with ``comparable``, only those from hardware like this."""
        if signature is not None and not isinstance(signature, str):
            raise TypeError(f"signature must be a workload signature (a string, as in a stored "
                            f"row's 'signature') or None, got {signature!r}")
        if not isinstance(comparable, (bool, np.bool_)):
            raise TypeError(f"comparable must be True or False, got {comparable!r}")
        return self.rows(signature, fingerprint(settings) if comparable else None, settings)

    def stored(self, states: list[Profile], settings: Settings) -> list[_model.Observation]:
        """What the history holds of these profiles' workloads, measured on comparable
        hardware by other computes (other profiles, other processes): the newest
        :data:`STORED_ROWS` of each workload, oldest first."""
        if not any(s.signature for s in states) or not settings.history:
            return []
        wanted = {(s.signature, s.fingerprint or fingerprint(settings))
                  for s in states if s.signature}
        mine = {s.id for s in states}
        theirs = 256 * sum(1 for s in states if s.computes)  # rows they may have stored
        out = []
        try:
            for signature, here in wanted:
                rows = [r for r in self.rows(signature, here, settings,
                                             limit=STORED_ROWS + theirs)
                        if r["data"].get("profile") not in mine][:STORED_ROWS]
                out += [_history.observation_from_json(r["data"]["observation"])
                        for r in reversed(rows) if "observation" in r["data"]]
        except Exception as e:  # an unreadable history: recommend from the profiles alone
            warn_once("history-read", "adaptive chunking could not read its history "
                      f"({type(e).__name__}: {e}); recommending from this process's "
                      "profiles only")
            return []
        return out

    def carrying(self, signature: str, here: str, settings: Settings) -> str | None:
        """The fingerprint of the newest stored compute of ``signature`` that can plan
        for ``here`` (:func:`history.carried_over`), or None."""
        try:
            store = self.store(settings)
            fits = sorted(f for f in store.fingerprints(signature) if _carries(f, here))
            newest = store.rows(signature=signature, fingerprint=fits, limit=1)
        except Exception:  # unreadable: stored() warns of it, and nothing carries over
            return None
        return newest[0]["fingerprint"] if newest else None

    def stand_in(self, array, signature: str, settings: Settings,
                 hardware: str | None = None) -> list[Profile]:
        """A profile of ``array`` made of the stored computes of a workload signature
        on hardware comparable to ``hardware`` (default: where a compute started now
        would run), else on the newest hardware they carry over from (another thread
        or core count: the stand-in keeps that fingerprint, and the advisor says what
        it carried over); empty when there are none."""
        probe = Profile("history", array)
        probe.signature = signature
        probe.fingerprint = hardware or fingerprint(settings)
        observations = self.stored([probe], settings)
        if not observations and settings.history:
            probe.fingerprint = self.carrying(signature, probe.fingerprint, settings)
            observations = self.stored([probe], settings) if probe.fingerprint else []
        if not observations:
            return []
        state = Profile.stand_in(array, observations, probe.fingerprint)
        if json.loads(state.fingerprint)["scheduler"] == "distributed":
            state.workers = _cluster.cluster_workers()  # the workers' budget, not here's
        return [state]

    def from_workload(self, array, workload, settings: Settings) -> list[Profile]:
        """A stand-in profile of ``array`` made of the stored computes of ``workload``."""
        expressions = workload if isinstance(workload, (list, tuple)) else [workload]
        for e in expressions:
            if not callable(getattr(e, "__dask_graph__", None)):
                raise TypeError(
                    f"workload must be a dask collection or a list of them (what will be "
                    f"computed from the array), got {e!r}"
                )
        layers = [n for e in expressions for n in e.__dask_graph__().layers]
        return self.stand_in(array, _graph.signature(layers, array.ndim, array.dtype),
                             settings)

    def newest_workload(self, settings: Settings, ndim: int | None = None, dtype=None,
                        hardware: str | None = None) -> dict[str, Any] | None:
        """The newest stored compute on comparable hardware (of ``ndim`` and ``dtype``
        when given), or None."""
        if not settings.history:
            return None
        rows = self.rows(None, hardware or fingerprint(settings), settings,
                         limit=1 if ndim is None else NEWEST_SCAN)
        return next((r for r in rows if ndim is None or (
            len(r["shape"]) == ndim and np.dtype(r["dtype"]) == np.dtype(dtype)
        )), None)
