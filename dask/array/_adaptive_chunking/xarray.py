"""xarray objects backed by Dask: chunks by dimension name (no Dask config here).

The engine accepts a ``DataArray`` or a ``Dataset`` wherever it accepts a Dask array
in :meth:`~dask.array.adaptive_chunking.AdaptiveChunkingEngine.profile_array`,
``recommend``, ``predict`` and ``apply_recommendation``. This module holds what that
needs and nothing of the engine: recognizing the objects, reading their Dask arrays
and the chunks of the store they were opened from, and merging the recommendations
of a Dataset's variables into the one size per dimension that ``Dataset.chunk``
takes.

xarray stays optional: nothing here imports it. An object is an xarray object only
if xarray is already imported (the caller made one); the engine works the same
where xarray is not installed at all.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking import shapes as _shapes
from dask.array._adaptive_chunking import views as _views
from dask.array._adaptive_chunking.recommendation import DatasetRecommendation, Recommendation

if TYPE_CHECKING:
    from dask.array._adaptive_chunking.advisor import Advisor
    from dask.array._adaptive_chunking.config import Settings
    from dask.array._adaptive_chunking.profiles import Profile, ProfileRegistry

__all__ = [
    "XarrayAdapter",
    "axis_chunks",
    "dask_data",
    "dask_variables",
    "is_dataset",
    "is_xarray",
    "merged_chunks",
    "storage_chunks",
]


def is_xarray(obj: Any) -> bool:
    """Whether ``obj`` is an xarray ``DataArray`` or ``Dataset``.

    >>> is_xarray([1, 2, 3])
    False
    """
    xr = sys.modules.get("xarray")
    return xr is not None and isinstance(obj, (xr.DataArray, xr.Dataset))


def is_dataset(obj: Any) -> bool:
    """Whether ``obj`` is an xarray ``Dataset``."""
    xr = sys.modules.get("xarray")
    return xr is not None and isinstance(obj, xr.Dataset)


def _label(obj: Any) -> str:
    name = getattr(obj, "name", None)
    return "a DataArray" if name is None else f"DataArray {name!r}"


def dask_data(obj: Any, what: str):
    """The Dask array inside the DataArray ``obj``, or a TypeError saying how to get one."""
    from dask.array.core import Array

    data = obj.data
    if not isinstance(data, Array):
        raise TypeError(
            f"{what} needs xarray data backed by Dask, but {_label(obj)} holds a "
            f"{type(data).__module__}.{type(data).__name__}; call .chunk() on it first, "
            "or open the file with chunks={} (xarray.open_dataset(..., chunks={}))"
        )
    return data


def dask_variables(ds: Any, what: str) -> dict[Hashable, Any]:
    """The data variables of the Dataset ``ds`` that Dask backs, by name.

    Variables held in memory (NumPy) are left out: there is nothing to chunk. A
    Dataset with none is a TypeError saying how to chunk it.
    """
    from dask.array.core import Array

    out = {name: ds[name] for name in ds.data_vars if isinstance(ds[name].data, Array)}
    if not out:
        raise TypeError(
            f"{what} needs a Dataset with variables backed by Dask, but none of "
            f"{list(ds.data_vars)} is; call .chunk() on it first, or open the file "
            "with chunks={} (xarray.open_dataset(..., chunks={}))"
        )
    return out


def storage_chunks(obj: Any, chunks: tuple[tuple[int, ...], ...]
                   ) -> tuple[int, ...] | None:
    """The chunks of the store a DataArray was opened from (Zarr, netCDF4/HDF5), if
    they still describe it.

    xarray keeps them in the variable's ``encoding``: ``shards`` for a sharded
    Zarr v3 array (the unit a write must not split), else ``preferred_chunks`` (by
    dimension) when the backend gives it, else ``chunks`` (by axis). The encoding
    survives indexing, so it is trusted only where the array's Dask ``chunks``
    still line up with it (:func:`aligned`): after ``isel(time=slice(5, None))`` the
    store's chunk boundaries no longer fall where the array's do. A storage chunk
    longer than the array is the array's length.

    >>> from types import SimpleNamespace as V
    >>> v = V(dims=("time", "x"), encoding={"preferred_chunks": {"time": 10, "x": 50}},
    ...       shape=(40, 100))
    >>> storage_chunks(v, ((10, 10, 10, 10), (100,)))
    (10, 50)
    >>> storage_chunks(v, ((5, 10, 10, 10, 5), (100,))) is None  # sliced by 5
    True
    >>> storage_chunks(V(dims=("x",), encoding={"chunks": (64,)}, shape=(40,)), ((20, 20),))
    (40,)
    >>> storage_chunks(V(dims=("x",), encoding={"chunks": (10,), "shards": (20,)},
    ...                  shape=(40,)), ((20, 20),))
    (20,)
    """
    encoding = getattr(obj, "encoding", None) or {}
    dims = tuple(obj.dims)
    preferred = encoding.get("preferred_chunks")
    shards = encoding.get("shards")
    if isinstance(shards, (tuple, list)) and len(shards) == len(dims):
        stored = tuple(shards)  # Zarr v3: a shard is written whole, so it is the unit
    elif isinstance(preferred, Mapping) and all(d in preferred for d in dims):
        stored = tuple(preferred[d] for d in dims)
    else:
        stored = encoding.get("chunks")
    if not (
        isinstance(stored, (tuple, list))
        and len(stored) == len(dims) == len(chunks)
        and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in stored)
    ):
        return None
    stored = tuple(max(1, min(int(c), int(n))) for c, n in zip(stored, obj.shape))
    if not all(aligned(c, blocks) for c, blocks in zip(stored, chunks)):
        return None
    return stored


def aligned(stored: int, blocks: tuple[int, ...]) -> bool:
    """Whether Dask ``blocks`` along one dimension line up with storage chunks of
    ``stored``: every block is a run of whole storage chunks, or the blocks cut
    every storage chunk into equal parts from the start.

    >>> aligned(10, (20, 20, 5)), aligned(10, (5, 5, 5, 5)), aligned(10, (5, 10, 10))
    (True, True, False)
    """
    if len(blocks) <= 1:
        return True
    inner = blocks[:-1]
    if all(b % stored == 0 for b in inner):
        return True
    first = blocks[0]
    return stored % first == 0 and all(b == first for b in inner)


def axis_chunks(dims: tuple[Hashable, ...], chunks: Any) -> Any:
    """``chunks`` keyed by dimension name turned into Dask's keys by axis number;
    anything else unchanged.

    >>> axis_chunks(("time", "x"), {"x": 100})
    {1: 100}
    >>> axis_chunks(("time", "x"), (10, 100))
    (10, 100)
    >>> axis_chunks(("time", "x"), {"y": 1})
    Traceback (most recent call last):
    ...
    ValueError: chunks names dimension 'y', which is not one of ('time', 'x')
    """
    if not isinstance(chunks, Mapping):
        return chunks
    out = {}
    for dim, size in chunks.items():
        if isinstance(dim, int) and not isinstance(dim, bool) and dim not in dims:
            out[dim] = size  # already an axis number
            continue
        if dim not in dims:
            raise ValueError(f"chunks names dimension {dim!r}, which is not one of {dims}")
        out[dims.index(dim)] = size
    return out


def merged_chunks(
    recommended: Mapping[Hashable, Mapping[Hashable, int]],
    sizes: Mapping[Hashable, int] | None = None,
    storage: Mapping[Hashable, Mapping[Hashable, int]] | None = None,
) -> dict[Hashable, int]:
    """One chunk size per dimension for a whole Dataset: the smallest any variable
    was recommended along it, kept to whole storage chunks.

    ``Dataset.chunk`` cuts every variable sharing a dimension the same way, so the
    variables must agree; the smallest size keeps each variable's chunks within
    what was recommended for it, so every predicted peak stays within the budget.
    Where variables were read from stores (``storage``, chunks by dimension), a
    dimension shorter than its length (``sizes``) is cut down to a multiple of
    the least common multiple of their storage chunks along it, when one fits.

    >>> merged_chunks({"t": {"time": 100, "x": 500}, "p": {"time": 50}})
    {'time': 50, 'x': 500}
    >>> merged_chunks({"a": {"time": 500}, "b": {"time": 420}}, {"time": 3000},
    ...               {"a": {"time": 100}, "b": {"time": 30}})
    {'time': 300}
    """
    out: dict[Hashable, int] = {}
    for by_dim in recommended.values():
        for dim, size in by_dim.items():
            out[dim] = min(out.get(dim, size), size)
    for dim, size in out.items():
        if sizes is not None and size >= sizes.get(dim, math.inf):
            continue  # whole: no storage chunk is split
        steps = [s[dim] for s in (storage or {}).values() if dim in s]
        step = math.lcm(*steps) if steps else 1
        if size >= step:
            out[dim] = size // step * step
    return out


class XarrayAdapter:
    """The engine's operations for xarray objects: they take the objects apart into
    Dask arrays, and put the answers back in terms of dimension names.

    Parameters
    ----------
    profiles : ProfileRegistry
    advisor : Advisor
    start : callable
        ``(dask array, settings) -> Profile``: how the engine starts a profile.
    profile_of : callable
        ``(profile id, settings) -> dict``: the engine's ``get_profile`` of one variable.
    """

    def __init__(self, profiles: ProfileRegistry, advisor: Advisor,
                 start: Callable[[Any, Settings], Profile],
                 profile_of: Callable[[str, Settings], dict]) -> None:
        self.profiles, self.advisor = profiles, advisor
        self.start, self.profile_of = start, profile_of

    def profile(self, obj, settings: Settings) -> str:
        """Profile a DataArray (one profile) or a Dataset (one per Dask-backed variable)."""
        if is_dataset(obj):
            members = {name: self.profile(var, settings)
                       for name, var in dask_variables(obj, "profile_array").items()}
            return self.profiles.add_group(members, settings.max_profiles)
        state = self.start(dask_data(obj, "profile_array"), settings)
        state.dims = tuple(obj.dims)
        state.storage = state.storage or storage_chunks(obj, state.chunks)
        return state.id

    def dataset_profile(self, gid: str, members: dict, settings: Settings) -> dict[str, Any]:
        """A Dataset's profile: each variable's, and the chunks by dimension."""
        variables, missing = {}, []
        for name, pid in members.items():
            try:
                variables[name] = self.profile_of(pid, settings)
            except KeyError:
                missing.append(name)  # dropped beyond max-profiles / max-memory
        by_dim = {n: p["recommended_chunks_by_dim"] for n, p in variables.items()
                  if p["recommended_chunks_by_dim"]}
        return _views.Profile({
            "profile_id": gid,
            "variables": variables,
            "dropped_variables": missing,
            "recommended_chunks": merged_chunks(by_dim) if by_dim else None,
            "status": self.profiles.group_status([p["status"] for p in variables.values()],
                                                 bool(missing)),
        })

    def member_ids(self, profile_id, name):
        """``profile_id`` with each Dataset id replaced by its variable ``name``'s id."""
        if profile_id is None:
            return None
        ids = list(profile_id) if isinstance(profile_id, (list, tuple)) else [profile_id]
        out = []
        for i in ids:
            members = self.profiles.group(i)
            if members is None:
                out.append(i)
            elif name in members:
                out.append(members[name])
            else:
                raise ValueError(
                    f"profile {i!r} (a Dataset's) has no variable named {name!r}, only "
                    f"{list(members)}; pass the id of a profile of that variable"
                )
        return out if isinstance(profile_id, (list, tuple)) else out[0]

    def recommend(self, obj, profile_id, settings: Settings, workload=None,
                  newest: bool = False, what: str = "recommend"):
        """A Recommendation for a DataArray, a DatasetRecommendation for a Dataset."""
        if is_dataset(obj):
            recs, unavailable = {}, {}
            for name, var in dask_variables(obj, what).items():
                try:
                    recs[name] = self.recommend(var, self.member_ids(profile_id, name),
                                                settings, workload, newest, what)
                except (ValueError, KeyError) as e:  # never computed, or dropped since
                    unavailable[name] = str(e).strip('"')
            if not recs:
                raise ValueError(
                    "no variable of the Dataset has a recommendation: "
                    + "; ".join(f"{n}: {why}" for n, why in unavailable.items())
                )
            merged = merged_chunks(
                {n: r.chunks_by_dim for n, r in recs.items()}, dict(obj.sizes),
                {n: dict(zip(r.dims, r.storage_chunks)) for n, r in recs.items()
                 if r.storage_chunks})
            return DatasetRecommendation(merged, recs, unavailable)
        data = dask_data(obj, what)
        storage = _graph.storage_chunks(data) or storage_chunks(obj, data.chunks)
        rec = self.advisor.recommendation(data, self.member_ids(profile_id, obj.name),
                                          settings, workload, newest, what, storage=storage)
        return replace(rec, dims=tuple(obj.dims))

    def predict_args(self, obj, chunks, profile_id) -> tuple[Any, Any, Any]:
        """A DataArray's Dask array, chunks by axis and profile id, for ``predict``."""
        if is_dataset(obj):
            raise TypeError("predict takes one array; pass one variable of the Dataset, "
                            "e.g. ds['name']")
        return (dask_data(obj, "predict"), axis_chunks(tuple(obj.dims), chunks),
                self.member_ids(profile_id, obj.name))

    def apply(self, obj, recommendation, settings_now: Callable[[], Settings]):
        """``obj`` rechunked to ``recommendation``, as the same xarray type
        (``settings_now`` as in ``Advisor.apply``)."""
        what = "apply_recommendation"
        chunks = recommendation
        data = None if is_dataset(obj) else dask_data(obj, what)
        probe = data if data is not None else next(
            iter(dask_variables(obj, what).values())).data
        if chunks is None or self.advisor.are_ids(chunks, probe):
            settings = settings_now()
            chunks = self.recommend(obj, chunks, settings,
                                    newest=chunks is None and settings.auto_rechunk, what=what)
        if isinstance(chunks, DatasetRecommendation):
            chunks = chunks.chunks
        elif isinstance(chunks, Recommendation):
            chunks = chunks.chunks_by_dim or chunks.chunks
        if is_dataset(obj):
            return self._apply_dataset(obj, chunks, what)
        dims = tuple(obj.dims)
        normalized = _shapes.normalized(data, axis_chunks(dims, chunks))
        if normalized == data.chunks:
            return obj
        return obj.chunk(dict(zip(dims, normalized)))

    @staticmethod
    def _apply_dataset(obj, chunks, what: str):
        if not isinstance(chunks, Mapping):
            raise TypeError(
                f"{what} for a Dataset takes chunks by dimension name (a dict such as "
                f"{dict(obj.sizes)}), a DatasetRecommendation or a profile id; got "
                f"{chunks!r}"
            )
        unknown = [d for d in chunks if d not in obj.dims]
        if unknown:
            raise ValueError(f"chunks names dimensions {unknown} that the Dataset does "
                             f"not have; its dimensions are {tuple(obj.dims)}")
        # Data variables held in memory stay there; everything else is recut as
        # Dataset.chunk does (Dask-backed coordinates included)
        lazy = dask_variables(obj, what)
        in_memory = [n for n in obj.data_vars if n not in lazy]
        return obj.chunk(dict(chunks)).assign({n: obj[n] for n in in_memory})
