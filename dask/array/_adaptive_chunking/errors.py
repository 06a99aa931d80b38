"""The engine's warning, and how it reports a problem without breaking a compute.

Profiling must never change what a compute returns: an error inside the engine
becomes an :class:`AdaptiveChunkingWarning` (once per kind of fallback, or once per
failure), and the user's compute goes on.
"""

from __future__ import annotations

import contextlib
import threading
import warnings

__all__ = ["AdaptiveChunkingWarning", "warn", "holding", "warn_once", "warn_engine_error"]


class AdaptiveChunkingWarning(UserWarning):
    """Warning from the adaptive chunking engine (it never raises into a compute)."""


AdaptiveChunkingWarning.__module__ = "dask.array.adaptive_chunking"


_UNLIMITED = 2**60


_warned: set[str] = set()  # kinds of fallback already announced in this process
_held = threading.local()  # .into: where this thread's warnings wait, while holding


def warn(message: str, stacklevel: int = 2) -> None:
    """``warnings.warn`` an :class:`AdaptiveChunkingWarning`, or hold it while this
    thread does work a compute left for after it returned (:func:`holding`): the
    warning then reaches the user's thread with the next read of a profile, under
    the user's own warning filters."""
    into = getattr(_held, "into", None)
    if into is not None:
        into.append(message)
    else:
        warnings.warn(message, AdaptiveChunkingWarning, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def holding(into: list):
    """Hold this thread's engine warnings in ``into`` instead of warning."""
    _held.into = into
    try:
        yield into
    finally:
        _held.into = None


def warn_once(kind: str, message: str, stacklevel: int = 3) -> None:
    """Warn with ``message`` the first time a fallback of ``kind`` is taken."""
    if kind not in _warned:
        _warned.add(kind)
        warn(message, stacklevel=stacklevel)


def warn_engine_error(e: BaseException) -> None:
    warn(f"adaptive chunking could not record a profile ({type(e).__name__}: {e}); "
         "the computation itself is unaffected", stacklevel=3)
