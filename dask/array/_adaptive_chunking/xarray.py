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
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DatasetRecommendation",
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

    xarray keeps them in the variable's ``encoding``: ``preferred_chunks`` (by
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
    """
    encoding = getattr(obj, "encoding", None) or {}
    dims = tuple(obj.dims)
    preferred = encoding.get("preferred_chunks")
    if isinstance(preferred, Mapping) and all(d in preferred for d in dims):
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


@dataclass(frozen=True)
class DatasetRecommendation:
    """Recommended chunks for a Dataset: one size per dimension, and why.

    ``chunks`` is what ``Dataset.chunk`` takes (:func:`merged_chunks` of the
    variables' recommendations); ``variables`` holds each variable's own
    :class:`~dask.array.adaptive_chunking.Recommendation` (its ``chunks_by_dim``),
    and ``unavailable`` the variables that got none, with the reason.
    """

    chunks: dict[Hashable, int]
    variables: dict[Hashable, Any]
    unavailable: dict[Hashable, str] = field(default_factory=dict)

    @property
    def fits_budget(self) -> bool:
        """Whether every variable's recommended chunks are predicted to fit."""
        return all(r.fits_budget for r in self.variables.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain values: the chunks by dimension, each variable's summary, what is missing."""
        return {
            "chunks": dict(self.chunks),
            "fits_budget": self.fits_budget,
            "variables": {name: r.to_dict() for name, r in self.variables.items()},
            "unavailable": dict(self.unavailable),
        }

    def __repr__(self) -> str:
        from dask.array._adaptive_chunking.views import dataset_text

        return dataset_text(self)

    def _repr_html_(self) -> str:
        from dask.array._adaptive_chunking.views import dataset_html

        return dataset_html(self)
