"""What :func:`.plots.plot_profile` draws: the panels, described once, and the two
backends that draw that description.

:func:`figure_panels` turns :func:`.plots.profile_data` into rows of :class:`Panel`
(titles, axis labels and ranges, and the :class:`Series` each draws, with their
legend entries): a pure function, so what a picture shows is tested without
drawing it. :func:`draw_bokeh` and :func:`draw_matplotlib` follow it mark for mark,
so the HTML page and the image show the same things. The axes are the data's
(:func:`axis_range`, :func:`log_ticks`): the memory budget stretches the peak axis
only when it lies near the peaks, and is otherwise named (:func:`peak_axis`).
Legends sit below their panels, clear of the data.

Sizes are in MiB and times in seconds on the axes, as their labels say.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from dask.array._adaptive_chunking import views as _views

__all__ = [
    "TITLES",
    "AxisRange",
    "axis_range",
    "log_ticks",
    "peak_axis",
    "prediction_axes",
    "Series",
    "Panel",
    "figure_panels",
    "legend_columns",
    "draw_bokeh",
    "draw_matplotlib",
]

MiB = 2**20

#: Panel titles (also how the tests find the panels in a written file).
TITLES = {
    "time": "Time per task by output size",
    "durations": "Time per task over the profiled computes",
    "timeline": "Process memory during the profiled computes",
    "predicted_time": "Wall time by chunk size: predicted and measured",
    "predicted_peak": "Peak memory by chunk size: predicted and measured",
}

#: Colours of the operations in the task panels: matplotlib's tab10 without its red
#: (failed tasks, the memory budget) and its grey (the other operations).
OPERATION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                     "#17becf", "#bcbd22")
OTHER_COLOUR, RED = "#7f7f7f", "#d62728"

#: Data spanning more than this factor get a logarithmic axis.
LOG_SPAN = 10.0
#: A memory budget within this factor of the peaks is drawn, the axis stretched to
#: it; farther off it would squash the curve to a few pixels, so it is only named.
BUDGET_REACH = 2.0


class AxisRange(NamedTuple):
    """An axis's span in its panel's units, and whether it is logarithmic."""

    low: float
    high: float
    log: bool


def axis_range(values: Iterable[float], log: bool | None = None, pad: float = 0.06
               ) -> AxisRange | None:
    """A range holding every finite value (every positive one on a log axis), padded.

    ``log`` None: logarithmic when the values are positive and span more than
    :data:`LOG_SPAN` times. A linear range of values that are all at least 0
    starts at 0 or above. None when there is no value to hold.

    >>> axis_range([1.0, 3.0, float("nan")])
    AxisRange(low=0.88, high=3.12, log=False)
    >>> r = axis_range([0.5, 200.0])
    >>> r.log, r.low < 0.5, r.high > 200
    (True, True, True)
    """
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if log is None:
        log = bool(v.size and v.min() > 0 and v.max() > LOG_SPAN * v.min())
    if log:
        v = v[v > 0]
    if not v.size:
        return None
    low, high = float(v.min()), float(v.max())
    if log:
        factor = max(1.05, (high / low) ** pad)
        return AxisRange(low / factor, high * factor, True)
    # A floor on the margin, so that a nearly flat series (a process of 11 GiB whose
    # memory moves by 1 MiB) is drawn flat rather than its noise stretched to fill the
    # panel with ticks at 0.05 MiB.
    margin = (max((high - low) * pad, abs(high) * 0.02) if high > low else abs(high) * 0.1
              ) or 1.0
    return AxisRange(max(low - margin, 0.0) if low >= 0 else low - margin, high + margin,
                     False)


def log_ticks(low: float, high: float, most: int = 7) -> list[float]:
    """Round values (1, 2 or 5, else 1 or 3, else 1 times a power of ten) in ``[low,
    high]`` for a log axis: the finest that give at most ``most`` ticks (only every
    second or third decade when even the decades are too many). Empty when fewer
    than two fit: the plotting library's own ticks are better then.

    >>> log_ticks(0.03, 150), log_ticks(60, 700), log_ticks(120, 180)
    ([0.1, 1.0, 10.0, 100.0], [100.0, 200.0, 500.0], [])
    """
    if not 0 < low < high:
        return []
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in ((1, 2, 5), (1, 3), (1,)):
        ticks = [t for t in (float(f"{s * 10.0**e:.3g}") for e in decades for s in subs)
                 if low <= t <= high]
        if len(ticks) <= most:
            break
    ticks = ticks[::max(1, math.ceil(len(ticks) / most))]
    return ticks if len(ticks) >= 2 else []


def peak_axis(peaks_mib: Iterable[float], budget_mib: float
              ) -> tuple[AxisRange | None, str, bool]:
    """The peak-memory panel's axis, the memory budget's label, and whether it is drawn.

    The axis holds the peaks (MiB). A budget within :data:`BUDGET_REACH` of them
    stretches the axis and is drawn as a line; one farther off is only named, with
    where it lies, so that the curve keeps a readable axis.

    >>> peak_axis([80.0, 300.0], 9642.1)[1:]
    ('memory budget 9.42 GiB (above this range)', False)
    >>> r, label, drawn = peak_axis([80.0, 300.0], 400.0)
    >>> label, drawn, r.high > 400
    ('memory budget 400.00 MiB', True, True)
    """
    peaks = [float(p) for p in peaks_mib if np.isfinite(p)]
    label = f"memory budget {_views.size_text(budget_mib * MiB)}"
    if not peaks:
        return axis_range([budget_mib]), label, True
    if min(peaks) / BUDGET_REACH <= budget_mib <= max(peaks) * BUDGET_REACH:
        return axis_range(peaks + [budget_mib], log=axis_range(peaks).log), label, True
    where = "above" if budget_mib > max(peaks) else "below"
    return axis_range(peaks), f"{label} ({where} this range)", False



def prediction_axes(data: dict[str, Any]) -> tuple[dict[str, AxisRange | None], str, bool]:
    """The predicted panels' axes (chunk size and peak in MiB, time in seconds), which
    hold the curve, the current and recommended points and the measured ones."""
    curve, measured = data["curve"], data["measured"]
    marks = [data["current"], data["recommended"]]

    def values(name: str) -> np.ndarray:
        return np.concatenate([curve[name], measured[name], [m[name] for m in marks]])

    peak, label, drawn = peak_axis(values("peak_bytes") / MiB, data["budget_bytes"] / MiB)
    ranges = {"chunk_mib": axis_range(values("chunk_bytes") / MiB, log=True),
              "time_s": axis_range(values("seconds")), "peak_mib": peak}
    return ranges, label, drawn


class Series(NamedTuple):
    """One thing a panel draws, as both backends draw it.

    ``kind`` is "line" (through the points), "points" (markers) or "vline" (a
    vertical rule at ``x``); ``label`` its legend entry (None: none); ``size`` the
    line width or marker size in points; ``tips`` per-point columns for bokeh's
    hover tool.
    """

    kind: str
    x: Any
    y: Any = None
    label: str | None = None
    colour: str = OPERATION_COLOURS[0]
    style: str = "solid"  # or "dashed", "dotted"
    marker: str = "circle"  # or "diamond", "triangle", "inverted_triangle", "x"
    size: float = 2.0
    alpha: float = 1.0
    tips: Mapping[str, Any] | None = None


class Panel(NamedTuple):
    """One panel: its :data:`TITLES` key, axis labels and ranges (None: the plotting
    library's own, linear), what it draws, its legend's columns (0: no legend), a
    note written on it and whether it spans the figure's width."""

    key: str
    xlabel: str
    ylabel: str
    series: list[Series]
    x_range: AxisRange | None = None
    y_range: AxisRange | None = None
    legend_cols: int = 2
    note: str = ""
    wide: bool = False


def figure_panels(data: dict[str, Any]) -> list[list[Panel]]:
    """The rows of panels :func:`.plots.plot_profile` draws from
    :func:`.plots.profile_data`: the two task panels, the memory timeline, and the
    predicted panels when the profile has a model."""
    rows = [_task_panels(data), [_timeline_panel(data)]]
    if data["curve"] is not None:
        rows.append(_prediction_panels(data))
    return rows


def _task_panels(data: dict[str, Any]) -> list[Panel]:
    """Time per task by output size and over the computes, coloured by operation (the
    most frequent ones; the rest "other"), failed tasks as red crosses."""
    tasks = data["tasks"]
    ops = np.array(tasks["operation"], dtype=object)
    names, counts = np.unique(ops, return_counts=True) if ops.size else ([], [])
    named = [names[i] for i in np.argsort(-np.asarray(counts), kind="stable")]
    groups = [(name, ops == name, colour) for name, colour in zip(named, OPERATION_COLOURS)]
    if len(named) > len(OPERATION_COLOURS):
        groups.append(("other", ~np.isin(ops, named[:len(OPERATION_COLOURS)]), OTHER_COLOUR))
    failed = tasks["failed"]
    groups = [(n, m & ~failed, c) for n, m, c in groups] + [("failed", failed, RED)]
    tips = {"key": np.array(tasks["key"], dtype=object), "operation": ops,
            **{k: tasks[k] for k in ("start_s", "output_mib", "time_ms")}}

    def scatter(x: str, legend: bool) -> list[Series]:
        return [Series("points", tasks[x][m], tasks["time_ms"][m], name if legend else None,
                       colour, marker="x" if name == "failed" else "circle", size=4,
                       alpha=1.0 if name == "failed" else 0.5,
                       tips={k: v[m] for k, v in tips.items()})
                for name, m, colour in groups if m.any()]

    # Task times and outputs often span decades (a 1 ms add, an 80 ms first call):
    # a log axis keeps the bulk of the tasks off the floor of the panel.
    note, ms = "" if data["sampled"] else "no per-task records", axis_range(tasks["time_ms"])
    return [Panel("time", "output (MiB)", "compute time (ms)", scatter("output_mib", False),
                  axis_range(tasks["output_mib"]), ms, legend_cols=0, note=note),
            Panel("durations", "task start (s since the first task)", "compute time (ms)",
                  scatter("start_s", True), None, ms, legend_cols=3, note=note)]


def _timeline_panel(data: dict[str, Any]) -> Panel:
    """The tasks' memory readings over the computes, and the measured peak across them."""
    t = data["timeline"]
    series = [Series("line", t["seconds"], t["memory_mib"], "tasks' readings", size=1.5)]
    if data["measured_peak_bytes"]:
        peak = data["measured_peak_bytes"] / MiB
        end = float(t["seconds"].max()) if t["seconds"].size else 1.0
        label = f"measured peak {_views.size_text(data['measured_peak_bytes'])}"
        series.append(Series("line", [0.0, end], [peak, peak], label, RED, "dashed",
                             size=1.5))
    values = np.concatenate([np.asarray(s.y, dtype=float) for s in series])
    return Panel("timeline", "time since the first task (s)", "process memory (MiB)", series,
                 None, axis_range(values, log=False),
                 note="" if data["sampled"] else "no per-task records", wide=True)


def _prediction_panels(data: dict[str, Any]) -> list[Panel]:
    """Predicted and measured wall time and peak memory by chunk size, with the current
    and recommended chunk sizes marked and the memory budget drawn or named."""
    curve, measured, ranges = data["curve"], data["measured"], data["ranges"]
    time, peak = [], []
    # Drawn in this order (the measured points on top, smaller than the marks, so that a
    # measurement at the current chunk size leaves its mark showing) and listed in it,
    # column by column: the long labels (the chunkings, the budget) share a column.
    for name, colour in (("current", OTHER_COLOUR), ("recommended", OPERATION_COLOURS[2])):
        mib = data[name]["chunk_bytes"] / MiB
        time.append(Series("vline", mib, colour=colour, style="dotted", size=1.0))
        peak.append(time[-1])
    for name, colour in (("current", OTHER_COLOUR), ("recommended", OPERATION_COLOURS[2])):
        point = data[name]
        mib = point["chunk_bytes"] / MiB
        label = f"{name} {point['chunks']}: {_views.size_text(point['chunk_bytes'])}"
        time.append(Series("points", [mib], [point["seconds"]], label, colour, size=10))
        peak.append(Series("points", [mib], [point["peak_bytes"] / MiB], label, colour, size=10))
    if data["budget_drawn"]:
        wide, budget = ranges["chunk_mib"], data["budget_bytes"] / MiB
        peak.append(Series("line", [wide.low, wide.high], [budget, budget],
                           data["budget_label"], RED, "dashed", size=1.5))
    else:  # a marker with no point: the legend entry that names the budget
        marker = "triangle" if "above" in data["budget_label"] else "inverted_triangle"
        peak.append(Series("points", [np.nan], [np.nan], data["budget_label"], RED,
                           marker=marker, size=7))
    x = curve["chunk_bytes"] / MiB
    time.append(Series("line", x, curve["seconds"], "predicted"))
    peak.append(Series("line", x, curve["peak_bytes"] / MiB, data["predicted_peak_label"]))
    for panel, y in ((time, measured["seconds"]), (peak, measured["peak_bytes"] / MiB)):
        seen = np.isfinite(y)
        if seen.any():
            panel.append(Series("points", measured["chunk_bytes"][seen] / MiB, y[seen],
                                "measured", "#000000", marker="diamond", size=6))
    return [Panel("predicted_time", "chunk size (MiB)", "wall time (s)", time,
                  ranges["chunk_mib"], ranges["time_s"]),
            Panel("predicted_peak", "chunk size (MiB)", "peak memory (MiB)", peak,
                  ranges["chunk_mib"], ranges["peak_mib"])]


#: About how many characters of 8 pt legend text, with each entry's symbol, fit below
#: a half-width panel; a full-width one holds twice as many.
LEGEND_CHARS = 76


def legend_columns(panel: Panel) -> int:
    """The columns of a panel's legend (0: none): at most ``legend_cols``, fewer when
    its labels, filled in column by column as both backends do, would not fit in
    :data:`LEGEND_CHARS`."""
    labels = list(dict.fromkeys(s.label for s in panel.series if s.label))
    if not labels or not panel.legend_cols:
        return 0
    chars = LEGEND_CHARS * (2 if panel.wide else 1)
    for cols in range(min(panel.legend_cols, len(labels)), 1, -1):
        rows = math.ceil(len(labels) / cols)
        if sum(max(map(len, labels[i:i + rows])) + 8
               for i in range(0, len(labels), rows)) <= chars:
            return cols
    return 1


def _legend_rows(panel: Panel) -> int:
    cols = legend_columns(panel)
    return math.ceil(len({s.label for s in panel.series if s.label}) / cols) if cols else 0


def _tick_text(value: float) -> str:
    return f"{value:g}"


#: bokeh's panels, in screen pixels; a legend row below a panel adds its height.
BOKEH_WIDTH, BOKEH_HEIGHT, BOKEH_LEGEND_ROW = 560, 300, 22


def draw_bokeh(data: dict[str, Any]):
    """The bokeh layout of :func:`figure_panels`: a title, then a row of figures per row."""
    from bokeh.layouts import column, row
    from bokeh.models import Div

    title = f"<b>{html.escape(data['title'])}</b>" + (
        f"<br><i>{html.escape(data['note'])}</i>" if data["note"] else "")
    rows = [row(*[_bokeh_panel(p, max(map(_legend_rows, panels))) for p in panels])
            for panels in figure_panels(data)]
    return column(Div(text=title), *rows)


def _bokeh_panel(panel: Panel, legend_rows: int):
    from bokeh.models import FixedTicker, HoverTool, Label, Legend, Range1d, Span
    from bokeh.plotting import figure

    axes = {}
    for name, r in (("x", panel.x_range), ("y", panel.y_range)):
        if r is not None:
            axes[f"{name}_axis_type"] = "log" if r.log else "linear"
            axes[f"{name}_range"] = Range1d(r.low, r.high)
    p = figure(title=TITLES[panel.key], x_axis_label=panel.xlabel, y_axis_label=panel.ylabel,
               width=BOKEH_WIDTH * (2 if panel.wide else 1),
               height=BOKEH_HEIGHT + (BOKEH_LEGEND_ROW * legend_rows + 16 if legend_rows else 0),
               tools="pan,wheel_zoom,box_zoom,reset,save", **axes)
    if _legend_rows(panel):
        # Added first, below the plot, so that every glyph's legend_label joins it.
        p.add_layout(Legend(ncols=legend_columns(panel), label_text_font_size="8pt",
                            location="center", border_line_alpha=0, spacing=4,
                            padding=4), "below")
    hovered = []
    for s in panel.series:
        label = {"legend_label": s.label} if s.label else {}
        if s.kind == "vline":
            p.add_layout(Span(location=s.x, dimension="height", line_color=s.colour,
                              line_dash=s.style, line_width=s.size))
        elif s.kind == "line":
            p.line(np.asarray(s.x), np.asarray(s.y), line_color=s.colour, line_dash=s.style,
                   line_width=s.size, **label)
        else:  # bokeh sizes markers in pixels, matplotlib in points
            points = p.scatter(np.asarray(s.x), np.asarray(s.y), marker=s.marker,
                               size=s.size * 1.4, color=s.colour, alpha=s.alpha, **label)
            if s.tips:
                points.data_source.data.update(s.tips)
                hovered.append(points)
    if hovered:
        p.add_tools(HoverTool(renderers=hovered, tooltips=[
            ("key", "@key"), ("operation", "@operation"), ("output", "@output_mib{0.000} MiB"),
            ("time", "@time_ms{0.00} ms"), ("start", "@start_s{0.000} s")]))
    for axis, r in ((p.xaxis, panel.x_range), (p.yaxis, panel.y_range)):
        ticks = log_ticks(r.low, r.high) if r is not None and r.log else []
        if ticks:
            axis.ticker = FixedTicker(ticks=ticks, minor_ticks=[])
            axis.major_label_overrides = {t: _tick_text(t) for t in ticks}
    if panel.note:
        p.add_layout(Label(x=10, y=10, x_units="screen", y_units="screen", text=panel.note,
                           text_font_size="9pt", text_color=OTHER_COLOUR))
    return p


#: matplotlib's layout, in inches: the figure's width, each panel's plotting area,
#: the room above it (title) and below it (ticks, label), a legend row.
MPL_WIDTH, MPL_AXES, MPL_ABOVE, MPL_BELOW, MPL_LEGEND_ROW = 11.0, 2.6, 0.4, 0.55, 0.19
_MPL_MARKERS = {"circle": "o", "diamond": "D", "triangle": "^", "inverted_triangle": "v",
                "x": "x"}


def draw_matplotlib(data: dict[str, Any]):
    """The matplotlib figure of :func:`figure_panels`, 11 inches wide, each row as tall
    as its panels and the legends below them need."""
    import textwrap

    from matplotlib.figure import Figure

    rows = figure_panels(data)
    legends = [max(map(_legend_rows, panels)) for panels in rows]
    below = [MPL_BELOW + (MPL_LEGEND_ROW * n + 0.15 if n else 0) for n in legends]
    title = "\n".join([data["title"], *textwrap.wrap(data["note"], 150)])
    top = 0.35 + 0.17 * title.count("\n")
    height = top + sum(MPL_ABOVE + MPL_AXES + b for b in below)
    # Placed by hand: a constrained layout takes longer than drawing 10,000 points.
    fig = Figure(figsize=(MPL_WIDTH, height))
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    y = height - top
    placed = []
    for panels, space in zip(rows, below):
        y -= MPL_ABOVE + MPL_AXES
        for i, panel in enumerate(panels):
            width = (MPL_WIDTH if panel.wide else MPL_WIDTH / 2) - 1.1
            left = 0.8 + i * MPL_WIDTH / 2
            ax = fig.add_axes((left / MPL_WIDTH, y / height, width / MPL_WIDTH,
                               MPL_AXES / height))
            _matplotlib_panel(ax, panel)
            placed.append((ax, i * MPL_WIDTH / 2))
        y -= space
    _fit_tick_labels(fig, placed)
    return fig


def _fit_tick_labels(fig, placed) -> None:
    """Narrow each panel from the left until its y-axis labels fit in its column.

    How wide they are depends on the data (``10250`` against ``0.1``), and only a
    renderer knows it; measuring the axes' own text takes a few milliseconds, unlike
    a constrained layout, which measures every artist."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    inch = fig.bbox.width / MPL_WIDTH
    for ax, column in placed:
        short = (column + 0.05) * inch - ax.yaxis.get_tightbbox(renderer).x0
        if short > 0:
            box = ax.get_position()
            shift = short / fig.bbox.width
            ax.set_position((box.x0 + shift, box.y0, box.width - shift, box.height))


def _matplotlib_panel(ax, panel: Panel) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    # Each series above the one before, as bokeh draws them (matplotlib's own order
    # puts every line above every marker).
    for z, s in enumerate(panel.series, start=2):
        if s.kind == "vline":
            ax.axvline(s.x, color=s.colour, ls=s.style, lw=s.size, zorder=z)
        elif s.kind == "line":
            ax.plot(s.x, s.y, color=s.colour, ls=s.style, lw=s.size, label=s.label, zorder=z)
        else:
            ax.scatter(s.x, s.y, s=s.size**2, c=s.colour, marker=_MPL_MARKERS[s.marker],
                       alpha=s.alpha, label=s.label, linewidths=1 if s.marker == "x" else 0,
                       zorder=z)
    ax.set(title=TITLES[panel.key], xlabel=panel.xlabel, ylabel=panel.ylabel)
    for axis, r, scale, limits in ((ax.xaxis, panel.x_range, ax.set_xscale, ax.set_xlim),
                                   (ax.yaxis, panel.y_range, ax.set_yscale, ax.set_ylim)):
        if r is None or not r.log:  # the values themselves: an offset shows 1,324.5 as 0.5
            axis.get_major_formatter().set_useOffset(False)
        if r is None:
            continue
        scale("log" if r.log else "linear")
        limits(r.low, r.high)
        ticks = log_ticks(r.low, r.high) if r.log else []
        if ticks:
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_minor_locator(NullLocator())
            axis.set_major_formatter(FuncFormatter(lambda v, _: _tick_text(v)))
    if panel.note:
        ax.text(0.02, 0.04, panel.note, transform=ax.transAxes, fontsize=9, color=OTHER_COLOUR)
    if _legend_rows(panel):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -MPL_BELOW / MPL_AXES),
                  ncol=legend_columns(panel), fontsize=8, frameon=False, borderaxespad=0,
                  handletextpad=0.4, columnspacing=1.5)
