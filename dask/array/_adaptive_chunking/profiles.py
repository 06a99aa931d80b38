"""Profiles and the registry that keeps them (ids, Dataset groups, the memory bound).

A :class:`Profile` is everything the engine knows about one profiled array; the
:class:`ProfileRegistry` owns all of them behind one lock: lookups by id and by
array name, the groups of a Dataset's variables, and the limits ``max-profiles``
and ``max-memory`` (the oldest profiles go first; samples are thinned to share
what is left).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, NamedTuple

from dask.utils import key_split

from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking.aggregate import PROFILE_COST, RECORD_COST, Aggregate
from dask.array._adaptive_chunking.config import PREFIX

__all__ = ["UnsavedCompute", "Profile", "ProfileRegistry", "unavailable", "water_level"]

logger = logging.getLogger("dask.array.adaptive_chunking")

#: Rechunks by apply_recommendation a profile follows (the newest); older ones are
#: computed as expressions of the profiled array, at its own chunks.
MAX_VARIANTS = 8

#: A Dataset's status is the first of these that one of its variables has.
_STATUS_ORDER = ("failed", "running", "incomplete", "pending", "dropped", "complete")


class UnsavedCompute(NamedTuple):
    """A complete compute of a profile, kept until the history stores it."""

    observation: _model.Observation
    signature: str  # the workload's
    fingerprint: str  # the hardware's


class Profile:
    """Everything the engine knows about one profiled array."""

    __slots__ = (
        "id", "name", "shape", "dtype", "chunks", "nbytes", "chunk_bytes", "created",
        "aggregate", "status", "error", "computes", "wall_seconds", "last", "downstream",
        "storage", "split_dims", "workers", "saturation", "signature", "unsaved",
        "fingerprint", "dims", "array", "sample", "own_chunks", "variants",
    )

    def __init__(self, profile_id: str, array) -> None:
        self.id = profile_id
        self.array = weakref.ref(array)  # its graph, for visualize(), while it lives
        self.name = array.name
        self.shape = array.shape
        self.dtype = array.dtype
        known = not any(math.isnan(s) for s in array.shape)
        self.nbytes = int(array.nbytes) if known else 0
        self.own_chunks = array.chunks
        self.run_at(array.chunks)
        # The array rechunked by apply_recommendation, by name: a compute of one of
        # them is this same workload at other chunks (the closed loop of profile,
        # apply, compute), newest last.
        self.variants: dict[str, tuple] = {}
        self.created = time.time()
        self.aggregate = Aggregate()
        self.status = "pending"
        self.error: str | None = None
        self.computes = 0
        self.wall_seconds = 0.0
        self.last: dict[str, Any] = {}
        self.downstream = _graph.Downstream()
        self.storage = _graph.storage_chunks(array)
        self.workers: dict[str, dict[str, int]] = {}  # on a cluster: memory per worker
        self.saturation: float | None = None  # on a cluster: the scheduler's setting
        self.signature: str | None = None  # the workload of its last compute
        self.unsaved: deque[UnsavedCompute] = deque(maxlen=256)  # not stored yet
        self.fingerprint: str | None = None  # the hardware and scheduler it ran on
        self.dims: tuple | None = None  # dimension names, when profiled as xarray data
        self.sample = False  # a probe's sample: kept out of the engine-wide profiler

    @classmethod
    def stand_in(cls, array, observations: list[_model.Observation], fingerprint: str
                 ) -> Profile:
        """A profile of ``array`` made of stored computes (no compute of its own)."""
        state = cls("history", array)
        state.fingerprint = fingerprint
        for observation in observations:
            state.aggregate.add_compute(observation)
        state.computes = len(observations)
        return state

    @property
    def unknown_shape(self) -> bool:
        return any(math.isnan(s) for s in self.shape)

    def run_at(self, chunks: tuple) -> None:
        """Take ``chunks`` as the profile's chunks: those its newest compute ran at,
        which its chunk statistics describe and its next recommendation starts from."""
        self.chunks = chunks
        nchunks = math.prod(len(c) for c in chunks) if chunks else 1
        self.chunk_bytes = self.nbytes / max(1, nchunks)
        self.split_dims = sum(len(c) > 1 for c in chunks)

    def chunks_in(self, layers) -> tuple[str, tuple]:
        """The name and chunks of the array of this profile that a compute of the
        graph ``layers`` works at: the newest of its rechunks by apply_recommendation
        among them (the profiled array is then only their input), else its own."""
        name = next((n for n in reversed(self.variants) if n in layers), self.name)
        return name, self.variants.get(name, self.own_chunks)


def unavailable(state: Profile) -> str:
    """Why a profile has no recommendation, in a sentence a user can act on."""
    if state.unknown_shape:
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


class ProfileRegistry:
    """The profiles of one engine, by id and by array name, and Dataset groups.

    Methods that read or change the profiles take the registry's lock; :attr:`lock`
    is for callers that change several profiles at once (a compute's fold).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._profiles: OrderedDict[str, Profile] = OrderedDict()
        self._by_name: dict[str, list[Profile]] = {}
        self._groups: OrderedDict[str, dict] = OrderedDict()  # Dataset id -> {var: id}

    def __len__(self) -> int:
        return len(self._profiles)

    def add(self, array, max_profiles: int) -> Profile:
        """A new profile of ``array``; the oldest beyond ``max_profiles`` are dropped."""
        pid = f"{key_split(array.name)}-{uuid.uuid4().hex[:8]}"
        state = Profile(pid, array)
        with self.lock:
            self._profiles[pid] = state
            self._name(array.name, state)
            while len(self._profiles) > max_profiles:
                self.drop(next(iter(self._profiles)), "max-profiles")
        return state

    def add_variant(self, state: Profile, array) -> None:
        """``array``, a rechunk of the array ``state`` profiles, joins that profile:
        its computes are measured at its chunks (see :meth:`Profile.chunks_in`).
        The newest :data:`MAX_VARIANTS` are kept."""
        with self.lock:
            if array.name == state.name or state.id not in self._profiles:
                return
            state.variants.pop(array.name, None)
            state.variants[array.name] = array.chunks
            self._name(array.name, state)
            while len(state.variants) > MAX_VARIANTS:
                oldest = next(iter(state.variants))
                del state.variants[oldest]
                self._unname(oldest, state)

    def _name(self, name: str, state: Profile) -> None:
        same = self._by_name.setdefault(name, [])
        if state not in same:
            same.append(state)

    def _unname(self, name: str, state: Profile) -> None:
        same = self._by_name.get(name, [])
        if state in same:
            same.remove(state)
        if not same:
            self._by_name.pop(name, None)

    def add_group(self, members: dict, max_profiles: int) -> str:
        """A Dataset's id for its variables' profile ids (``{name: id}``)."""
        gid = f"dataset-{uuid.uuid4().hex[:8]}"
        with self.lock:
            for old in [g for g, m in self._groups.items()
                        if not any(pid in self._profiles for pid in m.values())]:
                del self._groups[old]  # every variable's profile was dropped
            self._groups[gid] = members
            while len(self._groups) > max_profiles:
                self._groups.popitem(last=False)
        return gid

    def drop(self, profile_id: str, why: str | None = None) -> None:
        """Forget one profile (``why``: the limit that dropped it, logged)."""
        if why is not None:
            logger.info("adaptive chunking: profile %s dropped, the oldest beyond the "
                        "'%s.%s' limit", profile_id, PREFIX, why)
        with self.lock:
            state = self._profiles.pop(profile_id)
            for name in (state.name, *state.variants):
                self._unname(name, state)

    def remove(self, profile_id: str) -> None:
        """Forget ``profile_id``: one profile, or all of a Dataset group's."""
        with self.lock:
            members = self._groups.pop(profile_id, None) if isinstance(profile_id, str) \
                else None
            if members is not None:
                for pid in members.values():
                    if pid in self._profiles:
                        self.drop(pid)
                return
            self.get(profile_id)
            self.drop(profile_id)

    def clear(self) -> None:
        with self.lock:
            self._profiles.clear()
            self._by_name.clear()
            self._groups.clear()

    def ids(self) -> list[str]:
        """Ids of the profiles kept, oldest first."""
        with self.lock:
            return list(self._profiles)

    def all(self) -> list[Profile]:
        with self.lock:
            return list(self._profiles.values())

    def by_id(self) -> dict[str, Profile]:
        with self.lock:
            return dict(self._profiles)

    def get(self, profile_id: str) -> Profile:
        """The profile of ``profile_id``, or a KeyError saying where ids come from."""
        with self.lock:
            try:
                return self._profiles[profile_id]
            except (KeyError, TypeError):
                pass
            if isinstance(profile_id, str) and profile_id in self._groups:
                raise KeyError(
                    f"{profile_id!r} is the profile of a Dataset; this needs one "
                    f"variable's: {self._groups[profile_id]}"
                )
            raise KeyError(
                f"no profile with id {profile_id!r}; ids come from profile_array(), and "
                f"the oldest profiles are dropped beyond '{PREFIX}.max-profiles' or "
                f"'{PREFIX}.max-memory'; newest known ids: {list(self._profiles)[-5:]}"
            )

    def knows(self, profile_id) -> bool:
        """Whether ``profile_id`` is a profile's or a Dataset group's id."""
        with self.lock:
            return profile_id in self._profiles or profile_id in self._groups

    def group(self, profile_id) -> dict | None:
        """The ``{variable: id}`` of a Dataset group id, else None."""
        if not isinstance(profile_id, str):
            return None
        with self.lock:
            members = self._groups.get(profile_id)
            return None if members is None else dict(members)

    def named(self, name: str) -> list[Profile]:
        """The profiles of the array called ``name``, oldest first."""
        with self.lock:
            return list(self._by_name.get(name, ()))

    def in_graph(self, layers) -> dict[str, list[Profile]]:
        """The profiles of each profiled array name among ``layers``."""
        if not self._by_name:  # read without the lock: the common case is no profile
            return {}
        with self.lock:
            return {n: list(self._by_name[n]) for n in layers if n in self._by_name}

    def remote_names(self) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple]]:
        """Per profiled array name: its profile ids, and its shape (what a cluster needs)."""
        with self.lock:
            named = {n: tuple(s.id for s in states) for n, states in self._by_name.items()}
            shapes = {n: states[0].shape for n, states in self._by_name.items() if states}
        return named, shapes

    def ended_empty(self, states, status: str) -> None:
        """``states`` took part in a compute that ended (``status``) with no task run."""
        with self.lock:
            for state in states:
                state.status = status
                state.computes += 1
                state.last = {"status": status, "tasks": 0}

    def group_status(self, statuses: list[str], dropped: bool) -> str:
        """A Dataset's status: the most telling of its variables'."""
        statuses = statuses + ["dropped"] * dropped
        return next((s for s in _STATUS_ORDER if s in statuses), "dropped")

    def held_bytes(self, engine_aggregate: Aggregate) -> int:
        """An estimate of the memory the profiles (and the engine's aggregate) hold."""
        with self.lock:
            return engine_aggregate.held_bytes() + sum(
                PROFILE_COST + s.aggregate.held_bytes() for s in self._profiles.values()
            )

    def bound_memory(self, engine_aggregate: Aggregate, ceiling: int | None,
                     max_records: int) -> None:
        """Keep the profiles' samples and summaries within ``ceiling`` bytes.

        Summaries (per-compute observations, at most 256 per profile) and the
        profiles themselves may take half of the ceiling: beyond it the oldest
        profiles are dropped. The rest is shared by the record samples, which are
        thinned (they stay uniform samples; aggregates stay exact): a profile that
        has seen few records keeps them all, and the others share what is left
        equally (:func:`water_level`). No ceiling: no sample is held back.
        """
        with self.lock:
            states = list(self._profiles.values())
            aggregates = [s.aggregate for s in states] + [engine_aggregate]
            if ceiling is None:
                for a in aggregates:
                    if a.limit is not None:
                        a.set_limit(None)
                return
            fixed = engine_aggregate.summary_bytes + sum(
                PROFILE_COST + s.aggregate.summary_bytes for s in states)
            while fixed > ceiling / 2 and len(states) > 1:
                oldest = states.pop(0)
                fixed -= PROFILE_COST + oldest.aggregate.summary_bytes
                self.drop(oldest.id, "max-memory")
            aggregates = [s.aggregate for s in states] + [engine_aggregate]
            budget = max(0, int((ceiling - fixed) // RECORD_COST))
            cap = water_level([min(a.seen, max_records) for a in aggregates], budget)
            for a in aggregates:
                if a.limit != cap:
                    a.set_limit(cap)


def water_level(demands: Sequence[int], budget: int) -> int | None:
    """The largest per-holder cap that fits ``budget`` items among ``demands``.

    Each holder keeps ``min(demand, cap)`` items. Holders that want less than an
    equal share keep all they want; the rest share what is left equally. None when
    every demand fits (no cap is needed).

    >>> water_level([10, 10, 1000], 300)  # the two small ones keep theirs
    280
    >>> water_level([10, 10], 300) is None
    True
    >>> water_level([500, 500, 500], 300)
    100
    """
    if sum(demands) <= budget:
        return None
    remaining, n = budget, len(demands)
    for i, demand in enumerate(sorted(demands)):
        share = remaining // (n - i)
        if demand > share:
            return share
        remaining -= demand
    return None  # pragma: no cover - the sum exceeds the budget: a demand exceeds its share
