"""Progress of long profiled computes, the way ``dask.diagnostics`` shows progress.

:class:`ProfileProgressBar` is Dask's own :class:`~dask.diagnostics.ProgressBar` (a
scheduler callback, used as a context manager or registered globally, for the local
schedulers) that also shows the process memory now and the peak so far, the number
the profile's memory budget is about. It writes a line redrawn with ``\\r``, which
both a terminal and a Jupyter notebook's output area show as one updating line.

On a ``dask.distributed`` cluster, progress is distributed's own:
``distributed.progress(futures)`` (a widget in a notebook, a text bar in a
terminal) and the dashboard; :func:`compute_on_cluster` uses it.
"""

from __future__ import annotations

import sys
from typing import Any

from dask.diagnostics import ProgressBar

from dask.array._adaptive_chunking.memory import process_rss

__all__ = ["ProfileProgressBar", "compute_on_cluster"]


class ProfileProgressBar(ProgressBar):
    """Dask's progress bar, with the process memory now and at its peak.

    Parameters are those of :class:`dask.diagnostics.ProgressBar` (``minimum``,
    ``width``, ``dt``, ``out``).

    Examples
    --------
    >>> import io
    >>> import dask.array as da
    >>> out = io.StringIO()
    >>> with ProfileProgressBar(out=out):
    ...     _ = da.ones((100, 100), chunks=10).sum().compute()
    >>> "100% Completed" in out.getvalue() and "peak" in out.getvalue()
    True
    """

    def _start(self, dsk):
        self._peak = process_rss()
        super()._start(dsk)

    # A stream closed under the bar (a notebook's, a pipe's) ends the drawing, never
    # the compute: Dask's own bar would raise from these two.
    def _pretask(self, key, dsk, state):
        try:
            super()._pretask(key, dsk, state)
        except ValueError:
            self._state = state

    def _finish(self, dsk, state, errored):
        try:
            super()._finish(dsk, state, errored)
        except ValueError:
            pass

    def _draw_bar(self, frac: float, elapsed: float) -> None:
        from dask.utils import format_bytes, format_time

        now = process_rss()
        self._peak = max(getattr(self, "_peak", 0), now)
        bar = "#" * int(self._width * frac)
        msg = (
            f"\r[{bar:<{self._width}}] | {int(100 * frac)}% Completed | "
            f"{format_time(elapsed)} | memory {format_bytes(now)}, peak "
            f"{format_bytes(self._peak)}"
        )
        # pad over the rest of a longer line drawn before ("876.75 us" -> "1.2 s")
        width = max(len(msg), getattr(self, "_drawn", 0))
        self._drawn = width
        msg = msg.ljust(width)
        if self._file is not None:
            try:
                self._file.write(msg)
                self._file.flush()
            except ValueError:  # the stream was closed under us
                pass


def compute_on_cluster(collection: Any, client: Any, show: bool = True, out=None) -> Any:
    """Compute ``collection`` on ``client``'s cluster, showing distributed's progress bar.

    The bar goes to ``out`` (default stderr) in a terminal; in a notebook,
    distributed shows its widget. Returns the computed result.
    """
    import contextlib

    future = client.compute(collection)
    if show:
        from distributed import progress

        with contextlib.redirect_stdout(out or sys.stderr):
            progress(future)  # a text bar blocks until the future is done
    return future.result()
