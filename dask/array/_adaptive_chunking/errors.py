"""The engine's warning, and how it reports a problem without breaking a compute.

Profiling must never change what a compute returns: an error inside the engine
becomes an :class:`AdaptiveChunkingWarning` (once per kind of fallback, or once per
failure), and the user's compute goes on.
"""

from __future__ import annotations

import warnings

__all__ = ["AdaptiveChunkingWarning", "warn_once", "warn_engine_error"]


class AdaptiveChunkingWarning(UserWarning):
    """Warning from the adaptive chunking engine (it never raises into a compute)."""


AdaptiveChunkingWarning.__module__ = "dask.array.adaptive_chunking"


_UNLIMITED = 2**60


_warned: set[str] = set()  # kinds of fallback already announced in this process


def warn_once(kind: str, message: str, stacklevel: int = 3) -> None:
    """Warn with ``message`` the first time a fallback of ``kind`` is taken."""
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, AdaptiveChunkingWarning, stacklevel=stacklevel)




def warn_engine_error(e: BaseException) -> None:
    warnings.warn(
        f"adaptive chunking could not record a profile ({type(e).__name__}: {e}); "
        "the computation itself is unaffected",
        AdaptiveChunkingWarning,
        stacklevel=3,
    )
