"""How the engine's results look in a notebook and a terminal (no Dask config here).

Pure functions of plain values: :func:`recommendation_text` for ``repr`` and
:func:`recommendation_html` for Jupyter's ``_repr_html_``, laid out like a Dask
array's own HTML repr (a table beside pictures of the chunks, drawn by
``dask.array.svg``).
"""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["recommendation_html", "recommendation_text"]

MiB = 2**20


def _size(nbytes: float) -> str:
    from dask.utils import format_bytes

    return format_bytes(int(nbytes))


def _blocks(shape: tuple[int, ...], chunk: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Dask's normal-form chunks of ``shape`` cut in ``chunk``-sized blocks."""
    out = []
    for n, c in zip(shape, chunk):
        c = max(1, int(c))
        out.append(tuple([c] * (n // c) + ([n % c] if n % c else [])) or (0,))
    return tuple(out)


def _svg(shape: tuple[int, ...], chunk: tuple[int, ...] | None) -> str:
    """A picture of ``shape`` in ``chunk`` blocks, or '' where Dask draws none."""
    from dask.array.svg import svg

    if not shape or chunk is None or 0 in shape:
        return ""
    try:
        return svg(_blocks(shape, chunk), size=120)
    except (NotImplementedError, ValueError, ZeroDivisionError):
        return ""


def recommendation_text(rec: Any) -> str:
    """One line: the chunks, their size, what decided them and what is predicted.

    >>> from types import SimpleNamespace as R
    >>> print(recommendation_text(R(chunks=(1500, 1500), chunk_bytes=18_000_000,
    ...     binding="speed", fits_budget=True, predicted_peak_bytes=2.6e8,
    ...     memory_budget_bytes=2**30, predicted_seconds=1.26, predicted_tasks=155)))
    ... # doctest: +NORMALIZE_WHITESPACE
    <Recommendation chunks=(1500, 1500) (17.17 MiB) by speed: peak 247.96 MiB of a
    1.00 GiB budget, 1.26 s, 155 tasks>
    """
    fits = "" if rec.fits_budget else " (over the budget)"
    return (
        f"<Recommendation chunks={tuple(rec.chunks)} ({_size(rec.chunk_bytes)}) by "
        f"{rec.binding}: peak {_size(rec.predicted_peak_bytes)} of a "
        f"{_size(rec.memory_budget_bytes)} budget{fits}, {rec.predicted_seconds:.2f} s, "
        f"{rec.predicted_tasks} tasks>"
    )


def recommendation_html(rec: Any) -> str:
    """An HTML table of the recommendation beside its current and recommended chunks."""
    shape = tuple(getattr(rec, "shape", ()) or ())
    current = getattr(rec, "current_chunks", None)
    rows = [
        ("Recommended chunks", f"{tuple(rec.chunks)} ({_size(rec.chunk_bytes)} each)"),
        ("Current chunks", "" if current is None else str(tuple(current))),
        ("Decided by", rec.binding),
        ("Why", rec.reason),
        ("Predicted peak memory", f"{_size(rec.predicted_peak_bytes)} of a "
         f"{_size(rec.memory_budget_bytes)} budget"
         + ("" if rec.fits_budget else " (over the budget)")),
        ("Predicted time", f"{rec.predicted_seconds:.2f} s, {rec.predicted_tasks:,} tasks, "
         f"{rec.concurrency} at once"),
        ("array.chunk-size", str(rec.array_chunk_size)),
    ]
    if getattr(rec, "scheduler_config", None):
        rows.append(("Scheduler", ", ".join(f"{k} = {v}" for k, v in
                                            rec.scheduler_config.items())))
    table = "".join(
        f"<tr><th style='text-align: left'>{html.escape(k)}</th>"
        f"<td style='text-align: left'>{html.escape(str(v))}</td></tr>"
        for k, v in rows if v != ""
    )
    pictures = ""
    if shape and math.prod(shape):
        now, then = _svg(shape, current), _svg(shape, tuple(rec.chunks))
        if then:
            pictures = (
                "<td style='vertical-align: top'>"
                + (f"<div>now</div>{now}" if now else "")
                + f"<div>recommended</div>{then}</td>"
            )
    return (
        "<table><tr><td style='vertical-align: top'>"
        f"<table>{table}</table></td>{pictures}</tr></table>"
    )
