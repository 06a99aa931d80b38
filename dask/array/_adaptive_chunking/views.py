"""How the engine's results look in a notebook and a terminal (no Dask config here).

Pure functions of plain values: ``*_text`` for ``repr`` and ``*_html`` for
Jupyter's ``_repr_html_``, laid out like a Dask array's own HTML repr (a table
beside pictures of the chunks, drawn by ``dask.array.svg``). :class:`Profile` and
:class:`Telemetry` are the dicts ``get_profile`` and ``get_telemetry`` return,
with those two views.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from dask.array._adaptive_chunking import shapes as _shapes

__all__ = [
    "Profile",
    "Readable",
    "Telemetry",
    "chunk_stats",
    "count_text",
    "duration_text",
    "size_text",
    "dataset_html",
    "dict_text",
    "dataset_text",
    "profile_html",
    "recommendation_html",
    "recommendation_text",
    "telemetry_html",
]

MiB = 2**20


def size_text(nbytes: float) -> str:
    """Bytes as Dask writes them (``dask.utils.format_bytes``).

    >>> size_text(8e6), size_text(2**20 * 9642.1)
    ('7.63 MiB', '9.42 GiB')
    """
    from dask.utils import format_bytes

    return format_bytes(int(nbytes))


def duration_text(seconds: float) -> str:
    """Seconds with three significant digits, in ms or us below a tenth of a second.

    >>> duration_text(3.1624), duration_text(0.0412), duration_text(4.2e-4)
    ('3.16 s', '41.2 ms', '420 us')
    """
    s = abs(seconds)
    if s >= 0.1 or s == 0:
        return f"{seconds:.3g} s" if s < 1000 else f"{seconds:,.0f} s"
    if s >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def count_text(n: int, noun: str) -> str:
    """``n`` things with a thousands separator: ``count_text(8340, "task")`` is
    ``'8,340 tasks'``."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


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

    if not shape or chunk is None or 0 in shape or not _known(shape + tuple(chunk)):
        return ""
    try:
        return svg(_blocks(shape, chunk), size=120)
    except (NotImplementedError, ValueError, TypeError, ZeroDivisionError):
        return ""


def _known(sizes: tuple) -> bool:
    """Whether every size is a number (Dask writes an unknown one as NaN)."""
    return not any(isinstance(n, float) and math.isnan(n) for n in sizes)


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
        f"<Recommendation chunks={_chunks_text(rec)} ({size_text(rec.chunk_bytes)}) by "
        f"{rec.binding}: peak {size_text(rec.predicted_peak_bytes)} of a "
        f"{size_text(rec.memory_budget_bytes)} budget{fits}, "
        f"{duration_text(rec.predicted_seconds)}, "
        f"{rec.predicted_tasks:,} tasks>"
    )


def recommendation_html(rec: Any) -> str:
    """An HTML table of the recommendation beside its current and recommended chunks."""
    shape = tuple(getattr(rec, "shape", ()) or ())
    current = getattr(rec, "current_chunks", None)
    rows = [
        ("Recommended chunks", _chunks_text(rec) + _blocks_text(shape, rec.chunks,
                                                                rec.chunk_bytes)),
        ("Current chunks", "" if current is None
         else str(tuple(current)) + _blocks_text(shape, current)),
        ("Decided by", rec.binding),
        ("Why", rec.reason),
        ("Predicted peak memory", f"{size_text(rec.predicted_peak_bytes)} of a "
         f"{size_text(rec.memory_budget_bytes)} budget"
         + ("" if rec.fits_budget else " (over the budget)")),
        ("Predicted time", f"{duration_text(rec.predicted_seconds)}, "
                           f"{rec.predicted_tasks:,} tasks, "
         f"{rec.concurrency} at once"),
        ("array.chunk-size", f"{size_text(rec.array_chunk_size)} "
                             f"({rec.array_chunk_size:,} bytes)"),
    ]
    if getattr(rec, "carried", ""):
        rows.append(("Carried over", rec.carried))
    if getattr(rec, "scheduler_config", None):
        rows.append(("Scheduler", ", ".join(f"{k} = {v}" for k, v in
                                            rec.scheduler_config.items())))
    return _beside(_table(rows), _pictures(shape, current, tuple(rec.chunks)))


def _blocks_text(shape: tuple[int, ...], chunk: Any, nbytes: float | None = None) -> str:
    """``': 400 chunks'`` (``' of 7.63 MiB'`` with ``nbytes``) for ``chunk``-sized blocks
    of ``shape``, so two chunkings whose pictures look alike still read apart.

    >>> _blocks_text((20000, 20000), (800, 800), 5_120_000)
    ': 625 chunks of 4.88 MiB'
    """
    if not shape or chunk is None or not _known(tuple(shape) + tuple(chunk)) or 0 in chunk:
        return "" if nbytes is None else f" ({size_text(nbytes)})"
    size = "" if nbytes is None else f" of {size_text(nbytes)}"
    return f": {count_text(_shapes.blocks(shape, chunk), 'chunk')}{size}"


def _chunks_text(rec: Any) -> str:
    """The chunks, by dimension name when the recommendation is for xarray data."""
    return _by_dim(getattr(rec, "dims", None), tuple(rec.chunks))


#: Cell styles: notebooks style tables their own way, and a plain page not at all.
_CELL = "border: 1px solid #d0d0d0; padding: 3px 8px; text-align: left; vertical-align: top"
_HEAD = _CELL + "; background: #f3f3f3; font-weight: bold"
#: Text cells wrap at this width, so a long reason does not push the pictures away.
_TEXT_WIDTH = "34em"


def _table(rows: list[tuple[str, Any]], header: tuple[str, ...] = ()) -> str:
    """An HTML table of (label, value, ...) rows with borders, every text escaped;
    empty values left out."""
    head = "".join(f"<th style='{_HEAD}'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><th style='{_HEAD}'>{html.escape(str(row[0]))}</th>"
        + "".join(f"<td style='{_CELL}; max-width: {_TEXT_WIDTH}'>{html.escape(str(v))}</td>"
                  for v in row[1:])
        + "</tr>"
        for row in rows if any(v != "" for v in row[1:])
    )
    return (f"<table style='border-collapse: collapse; margin: 0 0 8px 0'>"
            f"{'<tr>' + head + '</tr>' if head else ''}{body}</table>")


def _pictures(shape: tuple[int, ...], current: tuple[int, ...] | None,
              recommended: tuple[int, ...] | None) -> str:
    """The current and recommended chunks drawn side by side ('' when none can be)."""
    if not shape or not _known(tuple(shape)) or not math.prod(shape):
        return ""
    drawn = [(label, _svg(shape, chunks)) for label, chunks in
             (("now", current), ("recommended", recommended)) if chunks is not None]
    cells = "".join(f"<td style='vertical-align: top; text-align: center; padding: 0 6px'>"
                    f"<div>{label}</div>{picture}</td>" for label, picture in drawn if picture)
    return f"<td style='vertical-align: top'><table><tr>{cells}</tr></table></td>" if cells else ""


def _beside(table: str, pictures: str) -> str:
    """Tables with the pictures right beside them, as Dask lays out an array's repr."""
    return (f"<table style='width: auto'><tr><td style='vertical-align: top'>{table}</td>"
            f"{pictures}</tr></table>")


def _largest(chunks: Any) -> tuple | None:
    """The chunk shape (largest block per dimension) of Dask's normal-form chunks;
    NaN where the sizes are unknown."""
    if not chunks:
        return None
    out = []
    for blocks in chunks:
        if not _known(tuple(blocks)):
            out.append(math.nan)
        else:
            out.append(int(max(blocks, default=0)))
    return tuple(out)


def _mib(value: float | None) -> str:
    return "" if value is None else size_text(value * MiB)


# -- profile ------------------------------------------------------------------


def _by_dim(dims: Any, chunks: Any) -> str:
    """Chunks as ``{time: 10, x: 50}`` for named dimensions, else as a tuple."""
    if chunks is None:
        return ""
    if dims is not None:
        return "{" + ", ".join(f"{d}: {n}" for d, n in zip(dims, chunks)) + "}"
    return str(tuple(chunks))


def profile_html(p: Mapping[str, Any]) -> str:
    """A table of the profile beside pictures of its current and recommended chunks:
    measured against predicted memory and time, and the binding constraint."""
    if "variables" in p:
        return _dataset_profile_html(p)
    dims = p.get("dims")
    stats, last = p.get("profiler_stats") or {}, p.get("last_compute") or {}
    now, rec = p.get("current_prediction") or {}, p.get("recommendation") or {}
    current = _largest(p.get("current_chunks"))
    shape = tuple(p["array_shape"])
    computes = count_text(p.get("computes", 0), "compute")
    rows: list[tuple[str, Any]] = [
        ("Profile", f"{p['profile_id']} ({p['status']}, {computes})"),
        ("Array", f"{tuple(p['array_shape'])} {p['array_dtype']}"),
        ("Current chunks", _by_dim(dims, current) + _blocks_text(shape, current)),
        ("Recommended chunks", _by_dim(dims, rec.get("chunks")) + (
            _blocks_text(shape, rec["chunks"], rec["chunk_size_mb"] * MiB) if rec else "")),
        ("Decided by", rec.get("binding_constraint", "")),
        ("Why", rec.get("reason") or p.get("recommendation_unavailable") or ""),
        ("Error", p.get("error") or ""),
    ]
    table = _table(rows)
    if stats.get("total_chunks"):
        compare = [
            ("Peak memory", _mib(last.get("peak_memory_mb")),
             _mib(now.get("predicted_peak_memory_mb")),
             _mib(rec.get("predicted_peak_memory_mb"))),
            ("Time, first task to last", duration_text(last.get("wall_time_s", 0.0)),
             duration_text(now["predicted_time_s"]) if now else "",
             duration_text(rec["predicted_time_s"]) if rec else ""),
            ("Tasks", f"{last.get('tasks', 0):,}", f"{now.get('predicted_tasks', 0):,}"
             if now else "", f"{rec['predicted_tasks']:,}" if rec else ""),
            ("Memory budget", "", "", _mib(rec.get("memory_budget_mb"))),
        ]
        table += _table(compare, ("", "measured (last compute)", "predicted now",
                                  "predicted recommended"))
    recommended = tuple(rec["chunks"]) if rec else None
    return _beside(table, _pictures(tuple(p["array_shape"]), current, recommended))


def _dataset_profile_html(p: Mapping[str, Any]) -> str:
    rows = [
        (name, v["status"], v["computes"],
         _by_dim(v.get("dims"), _largest(v.get("current_chunks"))),
         _by_dim(v.get("dims"), (v.get("recommendation") or {}).get("chunks"))
         or v.get("recommendation_unavailable") or "")
        for name, v in p["variables"].items()
    ]
    merged = p.get("recommended_chunks")
    return (
        f"<div><b>Profile {html.escape(p['profile_id'])}</b> ({html.escape(p['status'])})"
        "</div>" + _table(rows, ("variable", "status", "computes", "current chunks",
                                 "recommended"))
        + _table([("Chunks for Dataset.chunk", "" if merged is None else merged)])
    )


# -- Dataset recommendation ---------------------------------------------------------


def dataset_text(rec: Any) -> str:
    """One line per variable under the chunks by dimension."""
    lines = [f"<DatasetRecommendation chunks={rec.chunks}"
             + ("" if rec.fits_budget else " (over the budget)") + ">"]
    lines += [f"  {name}: {recommendation_text(r)}" for name, r in rec.variables.items()]
    lines += [f"  {name}: none: {why}" for name, why in rec.unavailable.items()]
    return "\n".join(lines)


def dataset_html(rec: Any) -> str:
    """The chunks by dimension, and each variable's recommendation as a row."""
    rows = [
        (name, _chunks_text(r), r.binding, f"{size_text(r.predicted_peak_bytes)} of "
         f"{size_text(r.memory_budget_bytes)}", duration_text(r.predicted_seconds), r.reason)
        for name, r in rec.variables.items()
    ] + [(name, "none", "", "", "", why) for name, why in rec.unavailable.items()]
    return (
        _table([("Chunks for Dataset.chunk", rec.chunks)])
        + _table(rows, ("variable", "chunks", "decided by", "predicted peak",
                        "predicted time", "why"))
    )


# -- telemetry ---------------------------------------------------------------


def telemetry_html(t: Mapping[str, Any]) -> str:
    """The engine's state as tables: memory, profiles, workers."""
    mem, stats = t["memory_pressure"], t["profiler_stats"]
    rows = [
        ("Profiling", "every array compute" if t["enabled"] else "profiled arrays only"),
        ("Per-chunk metrics", "on" if t["profile_chunks"] else "off"),
        ("Computes profiled", t["computes_profiled"]),
        ("Memory used", f"{_mib(mem['used_mb'])} of {_mib(mem['total_mb'])} "
         f"({mem['percent_used']:.0f}%)" + (", under pressure" if t["under_pressure"] else "")),
        ("Memory budget", _mib(t["memory_budget_mb"])),
        ("Tasks measured", f"{stats['total_chunks']:,} ({_mib(stats['total_data_mb'])} of "
         f"output, peak {_mib(stats['peak_memory_mb'])})"),
    ]
    out = _table(rows)
    if t["profiles"]:
        out += _table(list(t["profiles"].items()), ("profile", "status"))
    if t.get("workers"):
        out += _table([(a, f"{_mib(w['used_mb'])} of {_mib(w['total_mb'])}",
                        w.get("nthreads", 0), "yes" if w.get("under_pressure") else "no")
                       for a, w in t["workers"].items()],
                      ("worker", "memory", "threads", "under pressure"))
    return out


def _short(value: Any) -> str:
    """``repr`` of a value, with long tuples cut to their ends and floats to 4 digits."""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return f"{value:.1f}" if 1e3 <= abs(value) < 1e12 else f"{value:.4g}"
    if isinstance(value, tuple):
        items = [_short(v) for v in value]
        if len(items) > 6:
            items = items[:3] + ["..."] + items[-1:]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool) and math.isfinite(value)


def _note(key: Any, value: Any, d: Mapping[str, Any]) -> str:
    """What a person needs beside a value: sizes in MiB written in their own unit,
    fractions as percentages, and which count a count is."""
    key = str(key)
    if key == "total_chunks" and _number(d.get("array_chunks")):
        return f"tasks measured; the array has {d['array_chunks']:,} chunks"
    if key == "tasks" and _number(value):
        return "tasks run"
    if key == "total_data_mb" and _number(value):
        return f"{size_text(value * MiB)} returned by the tasks, in all (not the array)"
    if key == "avg_throughput_mb_per_sec" and _number(value):
        return "what the tasks returned, per second of task time"
    if key.endswith("_mb"):
        if isinstance(value, list) and value and all(map(_number, value)):
            return ", ".join(size_text(v * MiB) for v in value)
        if _number(value) and value and not 1 <= value < 1024:
            return size_text(value * MiB)
    if (key.endswith("_bytes") or key == "array_chunk_size") and _number(value) and value:
        return size_text(value)
    if key.endswith("_fraction") and _number(value):
        return f"{value * 100:.2g}%"
    if key == "uncertainty" and _number(value):
        return f"+/-{value:.0%} in time"
    return ""


def _long_text(text: str, column: int, width: int) -> str:
    """A long string as Python's implicit concatenation in parentheses, wrapped at
    ``width`` with its continuation lines at ``column``.

    >>> print(_long_text("a b c d e f", 2, 12))
    ('a b c '
       'd e f')
    """
    words = re.findall(r"\S+\s*", text)
    lines, line = [], ""
    for word in words:
        if line and column + len(line) + len(word) + 3 > width:
            lines.append(line)
            line = ""
        line += word
    lines.append(line)
    if len(lines) == 1:
        return repr(text)
    pad = "\n" + " " * (column + 1)
    return "(" + pad.join(repr(piece) for piece in lines) + ")"


def dict_text(d: Mapping[str, Any], indent: int = 0, width: int = 88) -> str:
    """A dict as it would print, one key per line where it is long or where a value
    needs a note (``# 9.42 GiB`` beside ``9642.1`` MiB), with the long tuples of
    Dask's chunks cut short (``(100, 100, 100, ..., 40)``) and floats to 4 digits;
    the values themselves stay exact.

    >>> print(dict_text({"chunks": ((10,) * 50, (20, 20)), "stats": {"peak_mb": 1 / 3},
    ...                  "name": "x"}, width=50))
    {
      'chunks': ((10, 10, 10, ..., 10), (20, 20)),
      'stats': {'peak_mb': 0.3333},  # 341.33 kiB
      'name': 'x',
    }
    >>> print(dict_text({"total_chunks": 14880, "array_chunks": 6400}))
    {
      'total_chunks': 14880,  # tasks measured; the array has 6,400 chunks
      'array_chunks': 6400,
    }
    """
    pad = " " * (indent + 2)
    inline = _short(dict(d))
    notes = {k: _note(k, v, d) for k, v in d.items()}
    if not d or (len(inline) + indent <= width and not any(notes.values())):
        return inline
    lines = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            text, note = _short(dict(v)), _inline_note(v)
            if len(pad) + len(repr(k)) + len(text) + 3 > width:
                text, note = dict_text(v, indent + 2, width), ""
        elif isinstance(v, str):
            text, note = _long_text(v, len(pad) + len(repr(k)) + 2, width), notes[k]
        else:
            text, note = _short(v), notes[k]
        lines.append(f"{pad}{k!r}: {text}," + (f"  # {note}" if note else ""))
    return "{\n" + "\n".join(lines) + "\n" + " " * indent + "}"


def _inline_note(d: Mapping[str, Any]) -> str:
    """The notes of a small dict printed on one line."""
    return "; ".join(n for n in (_note(k, v, d) for k, v in d.items()) if n)


class Readable(dict):
    """A dict that prints one key per line with its values in readable units
    (:func:`dict_text`); it is a plain dict in every other way."""

    __slots__ = ()

    def __repr__(self) -> str:
        return dict_text(self)


class _Shown(Readable):
    """A :class:`Readable` dict that shows itself as HTML in a notebook (``_html``)."""

    __slots__ = ()
    _html = staticmethod(lambda d: "")

    def _repr_html_(self) -> str:
        return self._html(self)


class Profile(_Shown):
    """The dict :meth:`get_profile` returns: it prints with long chunk tuples cut short,
    and shows a table beside pictures of its chunks in a notebook."""

    __slots__ = ()
    _html = staticmethod(profile_html)


class Telemetry(_Shown):
    """The dict :meth:`get_telemetry` returns: it prints one key per line, and shows
    tables in a notebook."""

    __slots__ = ()
    _html = staticmethod(telemetry_html)


def chunk_stats(state: Any) -> dict[str, Any]:
    """A profile's ``profiler_stats``: the chunk sizes are the profiled array's
    chunks; what its tasks returned (a fused read-and-reduce task returns far less
    than the chunk it read) is under ``task_output_*``.

    >>> import numpy as np
    >>> from types import SimpleNamespace as S
    >>> from dask.array._adaptive_chunking.aggregate import Aggregate
    >>> s = S(aggregate=Aggregate(), chunks=((100, 100, 50), (250,)), unknown_shape=False,
    ...       dtype=np.dtype("f8"), nbytes=250 * 250 * 8)
    >>> stats = chunk_stats(s)
    >>> [round(stats[k], 3) for k in ("avg_chunk_size_mb", "min_chunk_size_mb",
    ...                               "max_chunk_size_mb")]
    [0.159, 0.095, 0.191]
    """
    stats = state.aggregate.stats()
    for kind in ("avg", "min", "max"):
        stats[f"task_output_{kind}_mb"] = stats[f"{kind}_chunk_size_mb"]
    chunks = state.chunks
    if chunks and not state.unknown_shape and all(chunks):
        itemsize = max(1, state.dtype.itemsize)
        blocks = math.prod(len(c) for c in chunks)
        stats["avg_chunk_size_mb"] = state.nbytes / max(1, blocks) / MiB
        stats["min_chunk_size_mb"] = math.prod(min(c) for c in chunks) * itemsize / MiB
        stats["max_chunk_size_mb"] = math.prod(max(c) for c in chunks) * itemsize / MiB
        # The array's chunk count beside the count of tasks, which is read as one.
        stats = {"total_chunks": stats.pop("total_chunks"), "array_chunks": blocks, **stats}
    return Readable(stats)


def profile_of(state: Any, rec: Any, current: dict | None, unavailable: str | None
               ) -> Profile:
    """The dict ``get_profile`` returns for one profile (``state``), with its
    recommendation ``rec`` (None: ``unavailable`` says why) and the prediction for
    its current chunks."""
    return Profile({
        "profile_id": state.id,
        "array_name": state.name,
        "array_shape": state.shape,
        "array_dtype": str(state.dtype),
        "current_chunks": state.chunks,
        "execution_time_s": state.wall_seconds,
        "profiler_stats": chunk_stats(state),
        "recommended_chunks": None if rec is None else rec.chunks,
        "recommendation_unavailable": unavailable if rec is None else None,
        "recommendation": None if rec is None else Readable(rec.to_dict()),
        "status": state.status,
        "error": state.error,
        "computes": state.computes,
        "last_compute": Readable(state.last),
        "workers": {w: dict(v) for w, v in state.workers.items()},
        "dims": state.dims,
        "recommended_chunks_by_dim": None if rec is None else rec.chunks_by_dim,
        "current_prediction": None if current is None else Readable(current),
    })


def telemetry_of(settings, profile_chunks: bool, profiles, recorder, pressure,
                 limit: int, budget: int, held: int, stats: dict, workers: dict
                 ) -> Telemetry:
    """The dict ``get_telemetry`` returns: the settings in force, the profiles and
    computes, the memory pressure (``pressure``, and each worker's as ``(pressure,
    threads)``), the limit, budget and held memory in bytes, the aggregate ``stats``."""
    return Telemetry({
        "enabled": settings.enabled,
        "profile_chunks": profile_chunks,
        "tracked_arrays": len(profiles),
        "profiles": {s.id: s.status for s in profiles.all()},
        "computes_profiled": recorder.computes,
        "memory_pressure": pressure.to_dict(),
        "under_pressure": pressure.is_pressure(settings.pressure_threshold),
        "memory_limit_mb": limit / MiB,
        "memory_budget_mb": budget / MiB,
        "held_memory_mb": held / MiB,
        "profiler_stats": stats,
        "recent_computes": list(recorder.recent)[-10:],
        "workers": {addr: dict(p.to_dict(), under_pressure=p.is_pressure(), nthreads=n)
                    for addr, (p, n) in workers.items()},
    })
