"""Chunk geometry: from a byte target to a chunk shape, and chunks checked for a shape.

Pure functions of shapes, itemsizes and byte bounds, as ``dask/array/rechunk.py``
keeps its planners: no config, clocks or memory readings. :func:`chunk_shape`
turns a size into a shape (whole dimensions kept whole, storage chunks kept
whole, no sliver at the end of a dimension); :func:`validate_shape`,
:func:`check_chunks` and :func:`normalized` check what users pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["chunk_shape", "aligned_to", "validate_shape", "check_chunks", "normalized",
           "largest", "blocks", "sample_shape"]


def chunk_shape(
    shape: Sequence[int],
    itemsize: int,
    target_bytes: float,
    *,
    whole_dims: Sequence[int] = (),
    min_bytes: float = 0,
    max_bytes: float = math.inf,
    multiple_of: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Turn a byte target into a chunk shape for an array of ``shape``.

    Dimensions in ``whole_dims`` stay whole when the bounds allow; the others share
    the remaining elements as evenly as possible. Every dimension is then divided
    evenly (``ceil(n / blocks)`` per block, so no sliver chunk is left over) and
    the result kept within ``[min_bytes, max_bytes]`` where the array allows.
    With ``multiple_of`` (the chunks of the storage the array is read from) every
    chunk is a whole number of storage chunks along each dimension.

    >>> chunk_shape((10000, 10000), 8, 32 * 2**20)
    (2000, 2000)
    >>> chunk_shape((10000, 10000), 8, 32 * 2**20, whole_dims=[1])
    (417, 10000)
    >>> chunk_shape((100, 7), 8, 2**30)
    (100, 7)
    >>> chunk_shape((10000, 10000), 8, 32 * 2**20, multiple_of=(256, 300))
    (2048, 2100)
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim == 0:
        return ()
    if any(s == 0 for s in shape):
        return tuple(max(s, 1) if s else 0 for s in shape)
    if multiple_of is not None and len(multiple_of) == ndim:
        unit = [max(1, min(int(m), s)) for m, s in zip(multiple_of, shape)]
        if any(u > 1 for u in unit):
            # Chunk the grid of storage chunks, then scale back to elements.
            coarse = [math.ceil(s / u) for s, u in zip(shape, unit)]
            grain = max(1, int(itemsize)) * math.prod(unit)
            blocks = chunk_shape(coarse, grain, target_bytes, whole_dims=whole_dims,
                                 min_bytes=min_bytes, max_bytes=max_bytes)
            return tuple(min(s, b * u) for s, b, u in zip(shape, blocks, unit))
    itemsize = max(1, int(itemsize))
    sides = _even_sides(shape, itemsize, target_bytes, whole_dims, max_bytes)
    blocks = [max(1, min(shape[d], round(shape[d] / sides[d]))) for d in range(ndim)]
    chunks = _within_bounds(shape, itemsize, blocks, min_bytes, max_bytes)
    if math.prod(chunks) * itemsize < min_bytes <= math.prod(shape) * itemsize:
        return tuple(_reach_min(shape, chunks, itemsize, min_bytes, max_bytes))
    # Avoid a sliver at the end of a dim: a slightly smaller chunk that divides the dim
    # (or leaves at least half a chunk) is as good and saves a near-empty task.
    for d in range(ndim):
        c = _without_sliver(shape[d], chunks[d])
        if c != chunks[d]:
            trial = chunks.copy()
            trial[d] = c
            if math.prod(trial) * itemsize >= min(min_bytes, math.prod(chunks) * itemsize):
                chunks = trial
    return tuple(chunks)


def _even_sides(shape: tuple[int, ...], itemsize: int, target_bytes: float,
                whole_dims: Sequence[int], max_bytes: float) -> list[float]:
    """The chunk side per dimension that shares ``target_bytes`` out evenly.

    Dimensions in ``whole_dims`` keep their length (unless that alone exceeds
    ``max_bytes``); the others are water-filled: a dimension shorter than the equal
    side stays whole and leaves its share to the rest.

    >>> _even_sides((10, 1000), 1, 1000, (), 10**9)
    [10, 100.0]
    """
    ndim = len(shape)
    target = max(1.0, float(target_bytes)) / itemsize  # in elements
    whole = {d % ndim for d in whole_dims}
    fixed = math.prod(shape[d] for d in whole)
    if fixed * itemsize > max_bytes:
        whole = set()
        fixed = 1
    free = sorted((d for d in range(ndim) if d not in whole), key=lambda d: shape[d])
    sides: list[float] = [float(s) for s in shape]
    remaining = max(1.0, target / fixed)
    for i, d in enumerate(free):
        side = remaining ** (1 / (len(free) - i))
        if shape[d] <= side:
            sides[d] = shape[d]
            remaining /= shape[d]
        else:
            sides[d] = side
            remaining /= side
    return sides


def _within_bounds(shape: tuple[int, ...], itemsize: int, blocks: list[int],
                   min_bytes: float, max_bytes: float) -> list[int]:
    """Chunk lengths from ``blocks`` per dimension, split further while a chunk is
    over ``max_bytes`` and merged while under ``min_bytes`` (where the shape allows).

    >>> _within_bounds((1000,), 8, [100], 800, 4000)  # 80-byte chunks grow to 800
    [100]
    """
    ndim = len(shape)

    def chunks_of(blocks: list[int]) -> list[int]:
        return [math.ceil(shape[d] / blocks[d]) for d in range(ndim)]

    def nbytes(blocks: list[int]) -> int:
        return math.prod(chunks_of(blocks)) * itemsize

    for _ in range(64 * ndim):
        size = nbytes(blocks)
        if size > max_bytes:
            d = max(
                (d for d in range(ndim) if blocks[d] < shape[d]),
                key=lambda d: math.ceil(shape[d] / blocks[d]),
                default=None,
            )
            if d is None:
                break
            blocks[d] = _next_blocks(shape[d], blocks[d], +1)
        elif size < min_bytes:
            d = min(
                (d for d in range(ndim) if blocks[d] > 1),
                key=lambda d: math.ceil(shape[d] / blocks[d]),
                default=None,
            )
            if d is None:
                break
            trial = blocks.copy()
            trial[d] = _next_blocks(shape[d], blocks[d], -1)
            if nbytes(trial) > max_bytes:
                break
            blocks = trial
        else:
            break
    return chunks_of(blocks)


def _reach_min(shape, chunks, itemsize, min_bytes, max_bytes) -> list[int]:
    """Grow one dim's chunk until the chunk holds ``min_bytes``, giving up evenness.

    Used when no even division lands in ``[min_bytes, max_bytes]``: a ragged last
    chunk is better than a chunk below the minimum.

    >>> _reach_min((1000003,), [500002], 1, 600000, 700000)
    [600000]
    """
    best = list(chunks)
    for d in sorted(range(len(shape)), key=lambda d: math.prod(chunks) // chunks[d]):
        grain = math.prod(chunks) // chunks[d] * itemsize  # bytes per unit along d
        low = min(shape[d], math.ceil(min_bytes / grain))
        if not (min_bytes <= low * grain <= max_bytes):
            continue
        high = min(shape[d], int(max_bytes // grain), low + 1000)
        # Prefer a length in range that leaves no sliver at the end of the dim.
        best[d] = next(
            (c for c in range(low, high + 1)
             if shape[d] % c == 0 or shape[d] % c >= c / 2),
            low,
        )
        return best
    return best


def _without_sliver(n: int, c: int) -> int:
    """The largest chunk in ``[0.8 c, c]`` whose last block along ``n`` is not a sliver.

    >>> _without_sliver(1551, 51)  # 51 leaves a last block of 21, 49 one of 32
    49
    >>> _without_sliver(1000, 100)
    100
    """
    if c >= n or n % c == 0 or n % c >= c / 2:
        return c
    for candidate in range(c - 1, max(1, math.ceil(0.8 * c)) - 1, -1):
        if n % candidate == 0 or n % candidate >= candidate / 2:
            return candidate
    return c


def _next_blocks(n: int, blocks: int, direction: int) -> int:
    """The next block count along a dim of ``n`` that changes the chunk size.

    Arithmetic, not a walk: a walk takes about ``n / size**2`` steps, hours for a
    dimension of 10**12 elements split into chunks of a few elements.

    >>> _next_blocks(10, 3, +1), _next_blocks(10, 3, -1)  # sizes 4 -> 3 and 4 -> 5
    (4, 2)
    """
    size = -(-n // blocks)
    if direction > 0:
        return blocks if size <= 1 else -(-n // (size - 1))
    return max(-(-n // size) - 1, 1)


def validate_shape(shape: Any, name: str = "array_shape") -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints, or a TypeError/ValueError naming it.

    >>> validate_shape(5), validate_shape([2, 3])
    ((5,), (2, 3))
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, float) and math.isnan(s):
            raise ValueError(
                f"{name} {tuple(shape)!r} has unknown (NaN) sizes; call "
                "array.compute_chunk_sizes() first"
            )
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"{name} must contain ints, got {s!r} in {tuple(shape)!r}")
        if s < 0:
            raise ValueError(f"{name} must not contain negative sizes, got {tuple(shape)!r}")
        out.append(int(s))
    return tuple(out)


def check_chunks(chunks, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """``chunks`` in Dask's normal form (one tuple of lengths per dimension), checked.

    >>> check_chunks([[2, 2], [3]], (4, 3))
    ((2, 2), (3,))
    """
    bad = not isinstance(chunks, (tuple, list)) or len(chunks) != len(shape) or any(
        not isinstance(c, (tuple, list)) or any(
            isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 for n in c
        ) for c in chunks
    )
    if bad or any(sum(c) != n for c, n in zip(chunks, shape)):
        raise ValueError(
            f"current_chunks {chunks!r} are not chunks of shape {shape!r}: pass one tuple "
            "of non-negative lengths per dimension, summing to its length (array.chunks)"
        )
    return tuple(tuple(int(n) for n in c) for c in chunks)


def normalized(array, chunks) -> tuple[tuple[int, ...], ...]:
    """``chunks`` for ``array`` in Dask's normal form, or a ValueError saying why not.

    A dict by axis changes only the axes it names, as ``array.rechunk`` does.
    """
    from dask.array.core import normalize_chunks

    if isinstance(chunks, Mapping):
        given = {}
        for axis, size in chunks.items():
            if (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))
                    or not -array.ndim <= axis < array.ndim):
                raise ValueError(
                    f"chunks {chunks!r} names axis {axis!r}, which an array of {array.ndim} "
                    f"dimensions does not have; use axes 0 to {array.ndim - 1}"
                )
            given[int(axis) % array.ndim] = size
        chunks = tuple(given.get(i, c) for i, c in enumerate(array.chunks))
    try:
        return normalize_chunks(chunks, array.shape, dtype=array.dtype)
    except Exception as e:
        raise ValueError(
            f"invalid chunks {chunks!r} for an array of shape {array.shape}: {e}"
        ) from e


def aligned_to(chunk: Sequence[int], shape: Sequence[int], unit: Sequence[int]
               ) -> tuple[int, ...]:
    """``chunk`` moved, along each dimension, to the nearest whole multiple of
    ``unit`` when larger, or to the nearest whole divisor of it when smaller.

    A rechunk from ``unit`` chunks to aligned ones only merges blocks (or only splits
    them): no task cuts one block between two new chunks. Rechunking 100 x 100 chunks
    of a 4000 x 4000 transpose to 400 x 400 took 0.73 s, to 364 x 364 0.99 s.

    >>> aligned_to((364, 364), (4000, 4000), (100, 100))
    (400, 400)
    >>> aligned_to((30, 4000), (4000, 4000), (100, 4000))
    (25, 4000)
    """
    out = []
    for c, n, u in zip(chunk, shape, unit):
        if c >= n or u >= n or u <= 1:
            out.append(c)
        elif c >= u:
            out.append(min(n, u * max(1, round(c / u))))
        else:
            small = [d for d in range(1, math.isqrt(u) + 1) if u % d == 0]
            out.append(min(small + [u // d for d in small],
                           key=lambda d: abs(math.log(d / c))))
    return tuple(out)


def blocks(shape: Sequence[int], chunk: Sequence[int]) -> int:
    """How many chunks of at most ``chunk`` cover ``shape``.

    >>> blocks((6000, 6000), (1000, 1000)), blocks((10,), (3,))
    (36, 4)
    """
    return math.prod(-(-int(n) // int(c)) for n, c in zip(shape, chunk))


def largest(chunks) -> tuple[int, ...]:
    """The largest chunk length along each dimension of Dask's normal-form chunks.

    >>> largest(((100, 100, 50), (30,)))
    (100, 30)
    """
    return tuple(max(c, default=0) for c in chunks)


def sample_shape(shape: Sequence[int], chunks: Sequence[int], blocks: int) -> tuple[int, ...]:
    """The shape of a corner of an array of ``shape`` holding about ``blocks`` chunks
    of ``chunks``, for a probe that runs the workload on a sample.

    Dimensions that are one chunk stay whole (a tall-skinny QR needs its columns
    whole); the others keep the same number of chunks each, so a square array
    stays square (``x + x.T`` still adds).

    >>> sample_shape((400_000, 100), (10_000, 100), 4)
    (40000, 100)
    >>> sample_shape((8000, 8000), (1000, 1000), 4)
    (2000, 2000)
    >>> sample_shape((100, 100), (60, 60), 16)  # no more than the array
    (100, 100)
    """
    split = [d for d, (n, c) in enumerate(zip(shape, chunks)) if 0 < c < n]
    out = [int(n) for n in shape]
    if not split:
        return tuple(out)
    per = max(1, math.ceil(max(1, blocks) ** (1 / len(split)) - 1e-9))
    for d in split:
        out[d] = min(out[d], per * int(chunks[d]))
    return tuple(out)
