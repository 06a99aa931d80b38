"""What waits between tasks: the share of the array held by task outputs waiting for
their consumers, and how it changes with the number of chunks.

Pure functions of the observations and the fitted model (see
:class:`.model.WorkloadModel`'s ``held_*`` attributes); the model imports them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dask.array._adaptive_chunking.model import Observation, WorkloadModel

__all__ = ["held_exponent", "saturating", "held_share"]


def held_exponent(observations: Sequence[Observation]) -> float:
    """How the waiting share of the array scales with the number of chunks.

    Fitted from the two observations with the most different numbers of chunks
    (both with something waiting), in the form :attr:`WorkloadModel.held_exponent`
    describes; 0 with fewer, and clamped to [-1, 0.5].

    >>> from dask.array._adaptive_chunking.model import Observation, WorkloadModel
    >>> a = Observation(8e6, 8e4, 100, 1, 1, 0, 0, 0, 2, blocks=100, held_bytes=4e5)
    >>> b = Observation(8e6, 5e5, 16, 1, 1, 0, 0, 0, 2, blocks=16, held_bytes=1e6)
    >>> round(held_exponent([a, b]), 2)  # -ln(1 - h): 0.051 at 100 chunks, 0.134 at 16
    -0.52
    """
    seen = [o for o in observations if o.held_bytes > 0 and o.n_chunks > 1]
    if len(seen) < 2:
        return 0.0
    lo, hi = min(seen, key=lambda o: o.n_chunks), max(seen, key=lambda o: o.n_chunks)
    if hi.n_chunks <= lo.n_chunks:
        return 0.0
    h_lo, h_hi = lo.held_bytes / lo.array_bytes, hi.held_bytes / hi.array_bytes
    if saturating(observations):
        ratio = math.log1p(-h_hi) / math.log1p(-h_lo)
    else:
        ratio = h_hi / h_lo
    return max(-1.0, min(0.5, math.log(ratio) / math.log(hi.n_chunks / lo.n_chunks)))


def saturating(observations: Sequence[Observation]) -> bool:
    """Whether every waiting share seen is below the whole array (see held_exponent)."""
    return all(o.held_bytes < 0.999 * o.array_bytes for o in observations)


def held_share(model: WorkloadModel, n_chunks: int, aligned: bool = False) -> float:
    """The share of the array that waits for other tasks, for ``n_chunks`` chunks.

    >>> from dask.array._adaptive_chunking.model import WorkloadModel
    >>> m = WorkloadModel(1, 0, 0, 2, 0, 0, 2, 2, held_fraction=0.5, held_blocks=100,
    ...                   held_max=0.8, held_exponent=-0.5)
    >>> [round(held_share(m, n), 2) for n in (1, 25, 100, 400)]
    [0.0, 0.72, 0.49, 0.29]

    Measured on one grid only (100 chunks, a tenth waiting), coarser grids hold as
    many chunks, finer ones the same share:

    >>> one = WorkloadModel(1, 0, 0, 2, 0, 0, 2, 2, held_fraction=0.1, held_blocks=100,
    ...                     corrections=((1e6, 1, 1),))
    >>> [round(held_share(one, n), 2) for n in (10, 100, 400)]
    [0.59, 0.1, 0.1]
    """
    n_chunks = max(1, n_chunks)
    held = model.held_aligned_fraction if aligned else model.held_fraction
    if model.held_exponent and held > 0:
        scale = (n_chunks / max(1, model.held_blocks)) ** model.held_exponent
        if held < 0.999 and model.held_max < 0.999:
            held = min(1 - (1 - held) ** scale, max(held, model.held_max))
        else:
            held = min(held * scale, max(held, model.held_max))
    elif 0 < held < 0.999 and n_chunks < model.held_blocks and len(model.measured_bytes) < 2:
        # One grid measured says how many chunks wait, not how that changes. On a
        # coarser grid as many chunks are taken to wait, each larger (an anomaly's
        # column of chunks waiting for its mean is as many chunks, of more bytes):
        # the share grows, towards the whole array. Measured 1.6x more held than a
        # constant share predicted at 8x larger Zarr chunks.
        held = 1 - (1 - held) ** (model.held_blocks / n_chunks)
    # Data waits for other chunks' tasks; with one chunk there is nothing to wait for.
    return held * (1 - 1 / n_chunks)
