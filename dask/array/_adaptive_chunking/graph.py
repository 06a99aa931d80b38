"""What a task graph says about the chunks a profiled array should have.

Two questions are answered from Dask's high-level graph, without running anything:

- :func:`downstream`: what the operations applied to an array want from its
  chunks. A rechunk or an FFT that needs a dimension in one chunk wants it whole
  from the start (the rechunk then only merges, or disappears); a transpose, a
  matmul or a tensordot pairs chunk ``(i, j)`` with ``(j, i)`` and wants square
  chunks, so a dimension that happens to be whole now should not stay whole.
- :func:`storage_chunks`: the chunks (or Zarr v3 shards) of the storage an array
  was read from (Zarr, HDF5, anything with a ``chunks`` attribute given to
  ``da.from_array``), which chunk boundaries should respect; a probe reads its
  sample from :func:`storage_source` at the candidate chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dask.utils import key_split

__all__ = ["Downstream", "downstream", "whole_lineage", "storage_source", "storage_chunks",
           "signature"]

#: Operations that pair blocks across the diagonal and favour square chunks.
SQUARE_OPS = frozenset({"transpose", "matmul", "tensordot", "dot", "einsum", "swapaxes"})
#: Operations that need the dimensions they work along in one chunk.
WHOLE_AXIS_OPS = ("rechunk", "fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2",
                  "fftn", "ifft2", "ifftn", "rfft2", "rfftn", "irfft2", "irfftn")


@dataclass(frozen=True)
class Downstream:
    """What the operations after an array want from its chunks.

    Attributes
    ----------
    whole_dims : frozenset of int
        Dimensions that a downstream rechunk or FFT puts in one chunk.
    square : bool
        A downstream transpose, matmul or tensordot pairs blocks across the diagonal.
    ops : tuple of str
        Names of the downstream operations (for the recommendation's explanation).
    """

    whole_dims: frozenset = frozenset()
    square: bool = False
    ops: tuple = field(default=())

    @classmethod
    def merge(cls, hints) -> Downstream:
        """All of ``hints`` together: every whole dimension, square if any is.

        >>> Downstream.merge([Downstream(frozenset({1}), False, ("sum",)),
        ...                   Downstream(frozenset(), True, ("transpose",))])
        Downstream(whole_dims=frozenset({1}), square=True, ops=('sum', 'transpose'))
        """
        hints = list(hints)
        return cls(
            frozenset().union(*(h.whole_dims for h in hints)),
            any(h.square for h in hints),
            tuple(sorted(set().union(*(h.ops for h in hints)))),
        )


def _dependents(dependencies: Mapping[str, Iterable[str]], name: str) -> set:
    reverse: dict = {}
    for layer, deps in dependencies.items():
        for d in deps:
            reverse.setdefault(d, []).append(layer)
    seen: set = set()
    stack = [name]
    while stack:
        for d in reverse.get(stack.pop(), ()):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


def downstream(hlg, name: str, shape: tuple) -> Downstream:
    """What the layers of ``hlg`` that depend on layer ``name`` want from its chunks.

    ``shape`` is the array's shape; a rechunk or FFT counts only where its output
    has this same shape (a later rechunk of a reduced array says nothing about
    this one).

    >>> import dask.array as da
    >>> x = da.ones((10000, 10000), chunks=1000)
    >>> y = x.rechunk({0: "auto", 1: -1}).sum()
    >>> downstream(y.dask, x.name, x.shape)
    Downstream(whole_dims=frozenset({1}), square=False, ops=('rechunk-merge', 'sum'))
    >>> downstream((x @ x.T).dask, x.name, x.shape).square
    True
    """
    whole: set = set()
    ops: set = set()
    layers = hlg.layers
    for layer in _dependents(hlg.dependencies, name):
        op = key_split(layer)
        if op.startswith("finalize"):
            continue  # Dask's step that joins the results
        ops.add(op)
        if not op.startswith(WHOLE_AXIS_OPS):
            continue
        info = getattr(layers.get(layer), "collection_annotations", None) or {}
        chunks, out_shape = info.get("chunks"), info.get("shape")
        if chunks is None or out_shape is None or tuple(out_shape) != tuple(shape):
            continue
        whole.update(d for d, c in enumerate(chunks) if len(c) == 1 and shape[d] > 1)
    square = any(op in SQUARE_OPS for op in ops)
    if square and len(set(shape)) < len(shape):
        # A transpose of a square array has the same shape: which of the array's
        # dimensions a later rechunk keeps whole cannot be told from shapes.
        whole = set()
    main = sorted(op for op in ops if not op.endswith(("-partial", "-aggregate")))
    return Downstream(frozenset(whole), square, tuple(main))


def whole_lineage(dependencies: Mapping[str, Iterable[str]], name: str) -> bool:
    """Whether every layer of a graph is ``name``, an ancestor or a descendant of it.

    Then every task of the compute works for that array, and attributing tasks
    one by one can be skipped.

    >>> whole_lineage({"a": set(), "b": {"a"}, "c": set()}, "b")
    False
    >>> whole_lineage({"a": set(), "b": {"a"}}, "b")
    True
    """
    seen = {name} | _dependents(dependencies, name)
    stack = [name]
    while stack:
        for d in dependencies.get(stack.pop(), ()):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return len(seen) >= len(dependencies)


def _unit(value, ndim: int) -> tuple[int, ...] | None:
    """The storage unit of ``value``: a Zarr v3 array's shards, or its chunks."""
    for attr in ("shards", "chunks"):  # a shard is written whole: it is the unit
        unit = getattr(value, attr, None)
        if (
            isinstance(unit, tuple)
            and len(unit) == ndim
            and all(isinstance(c, int) and c > 0 for c in unit)
        ):
            return unit
    return None


def storage_source(array):
    """The chunked storage object ``array`` reads directly with ``da.from_array``.

    ``from_array`` keeps its source in the graph under an ``original-`` key; only
    a source the array itself reads counts, because through other layers (a
    transpose, a slice) the storage's chunks need not line up with the array's
    dimensions. None when there is no such source or it carries no chunks.

    >>> import numpy as np, dask.array as da
    >>> class Stored(np.ndarray):
    ...     chunks = (10, 50)
    >>> source = np.zeros((100, 100)).view(Stored)
    >>> storage_source(da.from_array(source, chunks=(20, 100))).chunks
    (10, 50)
    >>> storage_source(da.ones((10, 10))) is None
    True
    """
    graph = array.dask
    direct = graph.dependencies.get(array.name, set())
    for name, layer in graph.layers.items():
        if not str(name).startswith(("original-", "array-original-")) or name not in direct:
            continue
        try:
            values = list(layer.values())
        except Exception:
            continue
        for value in values:
            value = getattr(value, "value", value)  # a task-spec DataNode
            if _unit(value, array.ndim) is not None:
                return value
    return None


def rereadable(array):
    """The storage ``array`` reads whole and directly, or None: then reading it
    again at other chunks (``da.from_array(source, chunks=...)``) gives the same
    values without reading each stored chunk once per old chunk, as a rechunk of
    ``array`` would."""
    source = storage_source(array)
    whole = source is not None and tuple(getattr(source, "shape", ())) == tuple(array.shape)
    return source if whole and getattr(source, "dtype", None) == array.dtype else None


def storage_chunks(array) -> tuple[int, ...] | None:
    """The storage unit ``array`` was read in: the chunks of its Zarr or HDF5 source.

    A sharded Zarr v3 array's unit is its shard, as for ``da.from_array``: chunks
    that split a shard make every write of one touch the whole shard (and writes
    from parallel tasks to one shard race).

    >>> import numpy as np, dask.array as da
    >>> class Stored(np.ndarray):
    ...     chunks = (10, 50)
    >>> x = da.from_array(np.zeros((100, 100)).view(Stored), chunks=(20, 100))
    >>> storage_chunks(x)
    (10, 50)
    >>> class Sharded(Stored):
    ...     shards = (20, 100)
    >>> storage_chunks(da.from_array(np.zeros((100, 100)).view(Sharded), chunks=(20, 100)))
    (20, 100)
    >>> storage_chunks(da.ones((10, 10))) is None
    True
    """
    source = storage_source(array)
    return None if source is None else _unit(source, array.ndim)


def _operation(layer: str) -> str | None:
    """A layer's operation, as the same expression names it at any size or chunking."""
    op = key_split(layer)
    if op.endswith("-partial"):  # the depth of a tree reduction follows the chunk count
        return None
    if op.startswith("finalize-"):  # Dask's step that joins a compute's results
        return None
    if op.startswith("rechunk-"):
        # Whether Dask rechunks at all follows the chunks: it aligns the inputs of
        # an elementwise operation only where they differ, and skips a rechunk to
        # chunks the array already has.
        return None
    return op


#: Steps of a matrix product that Dask takes or not depending on how many chunks
#: the contracted axis has (several: sum the partial products; one: drop an axis).
_MATMUL_STEPS = frozenset({"chunk_sum", "chunk_sum-aggregate", "getitem"})


def signature(layers: Iterable[str], ndim: int, dtype) -> str:
    """An id of a workload, the same in every process and at every size and chunking.

    Built from the operations of the expression's layers (names without their
    random tokens), the array's number of dimensions and its dtype. Steps whose
    presence follows the chunks are left out: the levels of a tree reduction,
    rechunks (Dask adds or skips them by the chunks, so an explicit rechunk does
    not tell workloads apart either) and the summing or axis dropping steps of a
    matrix product. A different operation gives a different id.

    >>> import dask.array as da
    >>> small = da.random.random((500, 500), chunks=100)
    >>> big = da.random.random((8000, 8000), chunks=1000)
    >>> s = lambda x: signature(x.__dask_graph__().layers, x.ndim, x.dtype)
    >>> s((small + small.T).sum()) == s((big + big.T).sum())
    True
    >>> s((small + small.T).sum()) == s((small * small.T).sum())
    False
    """
    import hashlib
    import json

    import numpy as np

    ops = {op for op in map(_operation, layers) if op}
    if "matmul" in ops:
        ops -= _MATMUL_STEPS
    ops = sorted(ops)
    text = json.dumps({"ops": ops, "ndim": int(ndim), "dtype": np.dtype(dtype).str})
    return hashlib.sha256(text.encode()).hexdigest()[:16]
