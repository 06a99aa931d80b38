"""Auto-rechunk: ``array.chunk-size`` set to the learned byte target, and given back.

While ``array.adaptive-chunking.auto-rechunk`` is on, Dask's own auto-chunking
(``chunks="auto"``) gets the byte target the history recommends for this hardware;
when it is off, or nothing comparable is stored, Dask's value is back exactly as it
was. :class:`ChunkSizeOverride` does the writing and restoring; :func:`sync` decides.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import dask
from dask.array._adaptive_chunking import expressions as _expressions
from dask.array._adaptive_chunking.config import PREFIX, Settings
from dask.array._adaptive_chunking import errors as _errors

__all__ = ["ChunkSizeOverride", "override", "dask_default", "sync", "forget"]

_log = logging.getLogger("dask.array.adaptive_chunking")


_ABSENT = object()


class ChunkSizeOverride:
    """Dask's ``array.chunk-size`` while auto-rechunk sets it, and the value to give back.

    :meth:`apply` writes a byte target; :meth:`restore` gives back exactly what was
    there before (the same value, or no key where there was none). It writes only
    over its own value: one set by the user meanwhile (in code or by a
    ``dask.config.set`` block) is left alone, and is not overwritten on restore.
    Each change is logged at INFO with its reason.

    >>> override = ChunkSizeOverride()
    >>> before = dask.config.get("array.chunk-size")
    >>> override.apply(2**20, "an example")
    True
    >>> dask.config.get("array.chunk-size")
    1048576
    >>> override.restore("the example is over")
    True
    >>> dask.config.get("array.chunk-size") == before
    True
    """

    def __init__(self) -> None:
        self.saved: Any = _ABSENT  # what was there before the first apply
        self.applied: int | None = None  # what apply wrote last, while in effect
        self.yielded = False  # the user's value is in place of ours
        self.lock = threading.Lock()

    @staticmethod
    def _current() -> Any:
        section = dask.config.config.get("array")
        return section.get("chunk-size", _ABSENT) if isinstance(section, dict) else _ABSENT

    def apply(self, nbytes: int, reason: str) -> bool:
        """Set ``array.chunk-size`` to ``nbytes``; False if left as it is."""
        from dask.utils import format_bytes

        with self.lock:
            current = self._current()
            if self.applied is None:
                self.saved = current
            elif current != self.applied:
                if not self.yielded:
                    self.yielded = True
                    _log.info("adaptive chunking: array.chunk-size is %r, set outside the "
                              "engine; auto-rechunk leaves it", current)
                return False
            elif current == nbytes:
                return False
            dask.config.set({"array.chunk-size": int(nbytes)})
            self.applied, self.yielded = int(nbytes), False
            _log.info("adaptive chunking: auto-rechunk set array.chunk-size to %s (was %s): %s",
                      format_bytes(nbytes), _shown(current), reason)
            return True

    def restore(self, reason: str) -> bool:
        """Give back the value :meth:`apply` replaced; False if there is nothing to do.

        While a value set outside the engine is in place it stays, and the engine's
        value is given back by a later call once it is there again (a
        ``dask.config.set`` block that ends puts it back).
        """
        with self.lock:
            if self.applied is None:
                return False
            current, saved = self._current(), self.saved
            if current != self.applied:
                if not self.yielded:
                    self.yielded = True
                    _log.info("adaptive chunking: auto-rechunk is off (%s); array.chunk-size "
                              "%r was set outside the engine and stays", reason, current)
                return False
            self.applied, self.saved, self.yielded = None, _ABSENT, False
            if saved is _ABSENT:
                dask.config.config.get("array", {}).pop("chunk-size", None)
            else:
                dask.config.set({"array.chunk-size": saved})
            _log.info("adaptive chunking: auto-rechunk is off (%s); array.chunk-size is %s "
                      "again", reason, _shown(saved))
            return True


def _shown(value: Any) -> str:
    from dask.utils import format_bytes

    if value is _ABSENT:
        return "unset"
    return format_bytes(value) if isinstance(value, int) else repr(value)


#: ``array.chunk-size`` as auto-rechunk sets it, and what to give back.
override = ChunkSizeOverride()
_warned_no_history = threading.Event()


def dask_default() -> int | None:
    """The bytes Dask's ``"auto"`` chunks aim at as the user set them: ``array.chunk-size``
    without auto-rechunk's value in it (None: not a size).

    >>> with dask.config.set({"array.chunk-size": "64MiB"}):
    ...     dask_default()
    67108864
    """
    from dask.utils import parse_bytes

    with override.lock:
        current = override._current()
        if override.applied is not None and current == override.applied:
            current = override.saved
    if current is _ABSENT:
        current = dask.config.get("array.chunk-size", "128MiB")
    try:
        return int(parse_bytes(current))
    except (TypeError, ValueError):
        return None


def sync(settings: Settings, target: Callable[[Settings], tuple[int, str] | None]) -> None:
    """Make ``array.chunk-size`` follow the ``auto-rechunk`` setting.

    ``target`` gives the learned byte target and why (None: nothing comparable is
    stored). A problem (an unreadable history, a bad setting) becomes an
    :class:`AdaptiveChunkingWarning`, and ``array.chunk-size`` is left as it is.
    """
    try:
        if not settings.auto_rechunk:
            if override.applied is not None:
                override.restore(f"'{PREFIX}.auto-rechunk' is false")
            return
        if _expressions.skip_auto_rechunk():
            return
        found = target(settings)
        if found is None:
            if override.applied is not None:
                override.restore("nothing comparable in the history")
            elif not _warned_no_history.is_set():
                _warned_no_history.set()
                _log.info("adaptive chunking: auto-rechunk is on, but there is no stored "
                          "compute from comparable hardware to learn from (or '%s.history' "
                          "is false); Dask's array.chunk-size stays until there is", PREFIX)
            return
        override.apply(*found)
    except Exception as e:  # a bad setting or an unreadable history: say so, go on
        warn_not_applied(e)


def warn_not_applied(e: Exception) -> None:
    _errors.warn(f"adaptive chunking could not apply auto-rechunk ({type(e).__name__}: "
                 f"{e}); array.chunk-size is left as it is", stacklevel=3)


def forget(reason: str) -> None:
    """Give Dask's value back and forget what was announced (the engine is reset)."""
    override.restore(reason)
    _warned_no_history.clear()
