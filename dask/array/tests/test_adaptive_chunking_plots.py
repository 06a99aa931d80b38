"""Pictures of a profile: ``engine.plot_profile`` and ``engine.visualize``."""

from __future__ import annotations

import gc
import shutil
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import dask
import dask.array as da
from dask.array._adaptive_chunking import plots
from dask.array._adaptive_chunking import profile_figure as pf
from dask.array.adaptive_chunking import ChunkMemoryMetric

MiB = 2**20
PNG = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's dot program is not installed (apt-get install graphviz)",
)


def profiled(engine, expr=lambda x: (x + 1).sum(), shape=(400, 400), chunks=100):
    x = da.random.random(shape, chunks=chunks)
    pid = engine.profile_array(x)
    y = expr(x)
    y.compute()
    return x, y, pid


def metric(key, start, ms, before, after, out=8_000, failed=False):
    return ChunkMemoryMetric(key, (10, 100), 1000, 8, 8_000, ms, before, after,
                             start_time=start, failed=failed, output_bytes=out)


# -- the figures' data --------------------------------------------------------


def test_task_points_are_in_start_order():
    ms = [metric(("a", 2), 7.5, 3.0, 100, 104), metric(("a", 0), 7.0, 1.0, 100, 101),
          metric(("a", 1), 7.25, 2.0, 0, 100, out=MiB, failed=True)]
    p = plots.task_points(ms)
    assert p["key"] == ["('a', 0)", "('a', 1)", "('a', 2)"]
    assert p["start_s"].tolist() == [0.0, 0.25, 0.5]
    assert p["time_ms"].tolist() == [1.0, 2.0, 3.0]
    assert p["output_mib"][1] == 1.0 and p["failed"].tolist() == [False, True, False]
    assert p["operation"] == ["a", "a", "a"] and "growth_mib" not in p
    assert plots.task_points([])["start_s"].size == 0


def test_memory_timeline_is_sorted_and_relative_to_the_first_start():
    ms = [metric(("a", 1), 12.0, 4000.0, 150, 170), metric(("a", 0), 10.0, 500.0, 100, 120)]
    t = plots.memory_timeline(ms)
    assert t["seconds"].tolist() == [0.0, 0.5, 2.0, 6.0]
    assert t["memory_mib"].tolist() == [100, 120, 150, 170]
    assert plots.memory_timeline([])["seconds"].size == 0


def test_timeline_of_a_real_compute(engine):
    _, _, pid = profiled(engine)
    t = plots.memory_timeline(engine.get_profiler(pid).metrics)
    assert t["seconds"].size > 0 and t["seconds"][0] >= 0.0
    assert np.all(np.diff(t["seconds"]) >= 0)
    assert np.all(t["memory_mib"] > 0)


def test_the_sweep_is_the_engines_prediction(engine):
    x, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    curve = data["curve"]
    assert np.all(np.diff(curve["chunk_bytes"]) > 0)
    # more chunks never mean fewer tasks
    assert np.all(np.diff(curve["tasks"]) <= 0)
    assert curve["chunk_bytes"][0] < data["current"]["chunk_bytes"]
    assert curve["chunk_bytes"][-1] == x.nbytes
    for i in (0, len(curve["chunks"]) // 2, -1):
        p = engine.predict(x, curve["chunks"][i], pid)
        assert curve["seconds"][i] == p["predicted_time_s"]
        assert curve["peak_bytes"][i] == pytest.approx(p["predicted_peak_memory_mb"] * MiB)


def test_current_recommended_and_budget_are_marked(engine):
    x, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    rec = engine.recommend(x, pid)
    now = engine.predict(x, x.chunks, pid)
    assert data["recommended"]["chunks"] == rec.chunks
    assert data["recommended"]["seconds"] == rec.predicted_seconds
    assert data["recommended"]["peak_bytes"] == rec.predicted_peak_bytes
    assert data["budget_bytes"] == rec.memory_budget_bytes
    assert data["current"]["chunks"] == (100, 100)
    assert data["current"]["chunk_bytes"] == 100 * 100 * 8
    assert data["current"]["seconds"] == now["predicted_time_s"]
    assert data["sampled"] == data["total_tasks"] == len(engine.get_profiler(pid).metrics)
    assert pid in data["title"] and "(100, 100)" in data["title"]


def test_prediction_curve_predicts_each_shape_once():
    calls = []

    def predict(chunks):
        calls.append(chunks)
        b = chunks[0] * 8
        return {"chunk_size_mb": b / MiB, "predicted_time_s": 1 / b,
                "predicted_peak_memory_mb": b / MiB, "predicted_tasks": 100 // chunks[0]}

    c = plots.prediction_curve(predict, (100,), 8, [8, 8, 80, 400, 800, 10**6])
    assert calls == [(1,), (10,), (50,), (100,)]
    assert c["chunks"] == calls and c["tasks"].tolist() == [100, 10, 2, 1]


def test_task_attributes_scale_onto_the_palette():
    ms = [metric(("add-1", 0), 0.0, 1.0, 100, 101, out=0),
          metric(("add-1", 1), 0.0, 9.0, 100, 100, out=MiB),
          metric(("add-1", 1), 1.0, 1.0, 100, 100, out=MiB // 2),  # sampled twice: max
          metric(("add-1", 2), 0.0, 1.0, 100, 100, out=MiB // 2)]
    a = plots.task_attributes(ms)
    fill = {k: v["fillcolor"] for k, v in a["function_attributes"].items()}
    assert fill[("add-1", 0)] == plots.PALETTE[0]
    assert fill[("add-1", 1)] == plots.PALETTE[-1]
    assert fill[("add-1", 2)] == plots.PALETTE[4]
    assert a["values"][("add-1", 1)] == 1.0 and a["high"] == 1.0
    assert a["function_attributes"][("add-1", 1)]["label"] == "add\\n1.00 MiB"
    assert a["function_attributes"][("add-1", 2)]["label"] == "add\\n512.00 kiB"
    assert "output 1.000 MiB" in a["function_attributes"][("add-1", 1)]["tooltip"]
    assert "9.00 ms" in a["function_attributes"][("add-1", 1)]["tooltip"]
    assert a["data_attributes"][("add-1", 1)]["fillcolor"] == plots.PALETTE[-1]
    t = plots.task_attributes(ms, "time")
    assert t["unit"] == "ms" and t["values"][("add-1", 1)] == 9.0
    g = plots.task_attributes(ms, "growth")
    assert g["values"][("add-1", 0)] == 1.0 and g["values"][("add-1", 2)] == 0.0
    with pytest.raises(ValueError, match="color_by='bytes' is not one of"):
        plots.task_attributes(ms, "bytes")


def test_match_keys_follows_fused_tasks():
    a, b, c, z = (f"{i}3b1abdcc9bcd54d412c240ecd620f72" for i in range(4))  # Dask's tokens
    x = f"random_sample-{a}"
    fused = (f"random_sample-sum-{b}", 0, 1)
    measured = [(x, 0, 0), fused, (f"sum-partial-{c}", 0, 0), f"finalize-{c}"]
    graph = [(x, 0, 0), (x, 0, 1), (x, 1, 1), (f"sum-partial-{c}", 0, 0),
             (f"sum-{z}", 0, 1), (f"random-{z}", 0, 1), f"finalize-{z}"]
    assert plots.match_keys(graph, measured) == {
        (x, 0, 0): ((x, 0, 0), False),
        (x, 0, 1): (fused, True),
        (f"sum-partial-{c}", 0, 0): ((f"sum-partial-{c}", 0, 0), False),
    }
    ms = [metric(k, 0.0, 1.0, 100, 101) for k in measured]
    attrs = plots.task_attributes(ms, graph_keys=graph)
    assert attrs["matched"] == 3 and attrs["fused"] == 1
    assert attrs["function_attributes"][(x, 0, 1)]["style"] == "filled,dashed"
    assert f"fused task {fused}" in attrs["function_attributes"][(x, 0, 1)]["tooltip"]


def test_measured_points_are_what_each_compute_measured(engine):
    x, y, pid = profiled(engine)
    (x * 2).sum().compute()  # a second compute of the same array
    observations = engine.get_profiler(pid).observations()
    m = plots.profile_data(engine, pid)["measured"]
    assert m["chunk_bytes"].tolist() == [100 * 100 * 8] * 2 == [o.chunk_bytes
                                                               for o in observations]
    assert m["seconds"].tolist() == [o.wall_seconds for o in observations]
    assert np.all(m["seconds"] > 0)
    assert m["peak_bytes"].tolist() == [o.peak_bytes for o in observations]


def test_measured_points_leave_out_what_was_not_measured():
    from dask.array._adaptive_chunking.model import Observation

    m = plots.measured_points([Observation(8e8, 8e4, 10, 3.0, 0.0, 2e8, 1e8, 0, 2),
                               Observation(8e8, 8e6, 1, 1.0, 0.5, 0.0, 1e8, 0, 2)])
    assert np.isnan(m["seconds"][0]) and m["seconds"][1] == 0.5
    assert m["peak_bytes"][0] == 2e8 and np.isnan(m["peak_bytes"][1])
    assert plots.measured_points([])["seconds"].size == 0


@pytest.mark.parametrize("values, log, low, high", [
    ([1.0, 3.0], False, 0.88, 3.12),
    ([0.0, 5.0], False, 0.0, 5.3),  # never below 0 for values that are not
    ([-1.0, 1.0], False, -1.12, 1.12),
    ([4.0], False, 3.6, 4.4),  # one value: 10% either side
    ([2.0, 200.0], True, 2.0 / 100**0.06, 200 * 100**0.06),
    ([0.0, 2.0, 200.0], False, 0.0, 212.0),  # a 0 keeps the axis linear
])
def test_axis_range(values, log, low, high):
    r = pf.axis_range(values + [np.nan])
    assert r.log is log
    assert (r.low, r.high) == pytest.approx((low, high))
    assert pf.axis_range([np.nan]) is None and pf.axis_range([]) is None
    assert pf.axis_range([-1.0, 2.0, 20.0], log=True).low < 2.0  # log: positive values


@pytest.mark.parametrize("low, high, ticks", [
    (0.03, 150, [0.1, 1, 10, 100]),
    (60, 700, [100, 200, 500]),
    (0.02, 0.7, [0.02, 0.05, 0.1, 0.2, 0.5]),
    (1e-3, 1e5, [1e-3, 1e-1, 10, 1e3, 1e5]),  # every other decade
    (120, 180, []),
])
def test_log_ticks(low, high, ticks):
    assert pf.log_ticks(low, high) == pytest.approx(ticks)


def test_peak_axis_draws_a_near_budget_and_names_a_far_one():
    peaks = [80.0, 150.0, 300.0]
    r, label, drawn = pf.peak_axis(peaks, 9642.1)
    assert (label, drawn) == ("memory budget 9.42 GiB (above this range)", False)
    assert r.low < 80 and 300 < r.high < 400  # the curve's axis, not the budget's
    r, label, drawn = pf.peak_axis(peaks, 500.0)
    assert (label, drawn) == ("memory budget 500.00 MiB", True) and r.high > 500
    r, label, drawn = pf.peak_axis(peaks, 20.0)
    assert (label, drawn) == ("memory budget 20.00 MiB (below this range)", False)
    assert r.low > 20
    r, label, drawn = pf.peak_axis(peaks, 50.0)
    assert drawn and r.low < 50


def test_the_predicted_axes_hold_the_curve_and_every_point(engine):
    x, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    curve, measured, ranges = data["curve"], data["measured"], data["ranges"]
    points = [data["current"], data["recommended"]]
    for key, name, scale in (("chunk_mib", "chunk_bytes", MiB), ("time_s", "seconds", 1),
                             ("peak_mib", "peak_bytes", MiB)):
        r = ranges[key]
        values = np.concatenate([curve[name], measured[name], [p[name] for p in points]])
        assert r.low < np.nanmin(values) / scale and np.nanmax(values) / scale < r.high, key
    assert ranges["chunk_mib"].log
    assert data["budget_label"].startswith("memory budget ")


def test_the_predicted_axes_hold_measured_points_off_the_curve():
    curve = {"chunk_bytes": np.array([1.0, 2.0, 4.0]) * MiB, "seconds": np.array([2.0, 1.5, 1.8]),
             "peak_bytes": np.array([100.0, 110.0, 130.0]) * MiB}
    point = {"chunk_bytes": 2.0 * MiB, "seconds": 1.5, "peak_bytes": 110.0 * MiB}
    measured = {"chunk_bytes": np.array([0.25, 2.0]) * MiB, "seconds": np.array([9.0, np.nan]),
                "peak_bytes": np.array([np.nan, 300.0 * MiB])}
    data = {"curve": curve, "measured": measured, "current": point, "recommended": point,
            "budget_bytes": 9642.0 * MiB}
    ranges, label, drawn = pf.prediction_axes(data)
    assert ranges["chunk_mib"].low < 0.25 and ranges["chunk_mib"].high > 4.0
    assert ranges["time_s"].low < 1.5 and ranges["time_s"].high > 9.0
    assert ranges["peak_mib"].low < 100.0 and 300.0 < ranges["peak_mib"].high < 9642.0
    assert not drawn and label == "memory budget 9.42 GiB (above this range)"


def panels_by_key(data):
    return {p.key: p for row in pf.figure_panels(data) for p in row}


def test_the_task_panels_show_each_tasks_time_by_operation():
    ms = [metric((f"op{9 if i >= 30 else i % 10}-1", i), i / 10, 1.0 + i, 100, 100,
                 out=(i + 1) * 1000, failed=i == 3) for i in range(35)]
    data = {"tasks": plots.task_points(ms), "sampled": 35, "curve": None,
            "timeline": plots.memory_timeline(ms), "measured_peak_bytes": 0.0}
    panels = panels_by_key(data)
    assert set(panels) == {"time", "durations", "timeline"}
    durations = panels["durations"]
    labels = [s.label for s in durations.series]
    assert labels[:8] == ["op9"] + [f"op{i}" for i in range(7)]  # the most frequent first
    assert labels[8:] == ["other", "failed"] and len(durations.series[8].x) == 6  # op7, op8
    assert sum(len(s.x) for s in durations.series) == 35
    xs = np.concatenate([s.x for s in durations.series])
    ys = np.concatenate([s.y for s in durations.series])
    assert sorted(zip(xs, ys)) == sorted(zip(data["tasks"]["start_s"], data["tasks"]["time_ms"]))
    failed = durations.series[-1]
    assert failed.colour == pf.RED and failed.x.tolist() == [pytest.approx(0.3)]
    assert durations.y_range.log and durations.y_range.low < 1.0 < 35.0 < durations.y_range.high
    assert panels["time"].legend_cols == 0  # the same colours, one legend
    assert np.concatenate([s.x for s in panels["time"].series]).size == 35


def test_the_predicted_panels_mark_the_measured_points(engine):
    _, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    panels = panels_by_key(data)
    for key, name in (("predicted_time", "seconds"), ("predicted_peak", "peak_bytes")):
        measured = [s for s in panels[key].series if s.label == "measured"]
        assert len(measured) == 1 and measured[0].marker == "diamond"
        scale = 1 if name == "seconds" else MiB
        assert measured[0].x.tolist() == [100 * 100 * 8 / MiB]
        assert measured[0].y.tolist() == pytest.approx((data["measured"][name] / scale).tolist())
        labels = [s.label for s in panels[key].series if s.label]
        assert any(label.startswith("current (100, 100): 78.12 kiB") for label in labels)
        assert sum(label.startswith("predicted") for label in labels) == 1
        assert len(labels) == len(set(labels))


def test_the_predicted_peaks_say_when_this_process_has_grown_since(engine, monkeypatch):
    # A prediction starts from the memory held now; the measured point from what was
    # held then. A grown notebook process must not read as a model that misses.
    _, _, pid = profiled(engine)
    then = engine.get_profiler(pid).observations()[-1].baseline_bytes
    monkeypatch.setattr(plots._memory, "in_use_now", lambda: then)
    assert plots.profile_data(engine, pid)["predicted_peak_label"] == "predicted"
    monkeypatch.setattr(plots._memory, "in_use_now", lambda: then + 500 * MiB)
    data = plots.profile_data(engine, pid)
    panels = panels_by_key(data)
    peak = [s.label for s in panels["predicted_peak"].series if s.kind == "line"]
    assert any(f"({plots._views.size_text(then)} then)" in (label or "") for label in peak)
    assert "predicted" in [s.label for s in panels["predicted_time"].series]
    fig = pf.draw_matplotlib(data)  # the longer label keeps its legend inside the figure
    renderer = _rendered(fig)
    for legend in (ax.get_legend() for ax in fig.axes if ax.get_legend() is not None):
        box = legend.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1


def _rendered(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def _bokeh_figures(layout):
    from bokeh.models import Plot

    return {p.title.text: p for p in layout.select({"type": Plot})}


def _bokeh_labels(p):
    return [item.label.value for legend in p.legend for item in legend.items]


def test_both_backends_draw_the_same_axes_and_legends(engine):
    _, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    panels = {pf.TITLES[p.key]: p for row in pf.figure_panels(data) for p in row}
    fig = pf.draw_matplotlib(data)
    axes = {ax.get_title(): ax for ax in fig.axes}
    figures = _bokeh_figures(pf.draw_bokeh(data))
    assert set(axes) == set(figures) == set(panels) == set(pf.TITLES.values())
    for title, panel in panels.items():
        ax, p = axes[title], figures[title]
        wanted = list(dict.fromkeys(s.label for s in panel.series if s.label))
        shown = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
        if panel.legend_cols:
            assert shown == _bokeh_labels(p) == wanted, title
        else:
            assert not shown and not _bokeh_labels(p), title
        for r, limits, bokeh_range in ((panel.x_range, ax.get_xlim(), p.x_range),
                                       (panel.y_range, ax.get_ylim(), p.y_range)):
            if r is not None:
                assert limits == pytest.approx((r.low, r.high)), title
                assert (bokeh_range.start, bokeh_range.end) == pytest.approx(limits), title
    peak = axes[pf.TITLES["predicted_peak"]]
    assert peak.get_yscale() == ("log" if data["ranges"]["peak_mib"].log else "linear")
    assert figures[pf.TITLES["predicted_time"]].x_scale.__class__.__name__ == "LogScale"


def test_the_measured_peak_has_a_line_in_both_legends(engine):
    _, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    peak = data["measured_peak_bytes"] / MiB
    title = pf.TITLES["timeline"]
    p = _bokeh_figures(pf.draw_bokeh(data))[title]
    item = [i for i in p.legend[0].items if i.label.value.startswith("measured peak")][0]
    line = item.renderers[0]
    assert type(line.glyph).__name__ == "Line" and line.glyph.line_dash == [6]  # dashed
    assert len(line.data_source.data["x"]) == 2  # drawn, so its legend entry shows it
    assert list(line.data_source.data["y"]) == pytest.approx([peak, peak])
    ax = {ax.get_title(): ax for ax in pf.draw_matplotlib(data).axes}[title]
    handles = [h for h in ax.get_legend().legend_handles if h.get_label().startswith("measured")]
    assert len(handles) == 1 and handles[0].get_linestyle() == "--"
    lines = [line for line in ax.get_lines() if line.get_label() == item.label.value]
    assert len(lines) == 1 and list(lines[0].get_ydata()) == pytest.approx([peak, peak])


def _with_budget(data, budget_bytes):
    data = dict(data, budget_bytes=budget_bytes)
    data["ranges"], data["budget_label"], data["budget_drawn"] = pf.prediction_axes(data)
    return data


def test_a_far_budget_is_named_and_a_near_one_drawn_in_both_backends(engine):
    _, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    top = max(np.nanmax(data["curve"]["peak_bytes"]), np.nanmax(data["measured"]["peak_bytes"]))
    title = pf.TITLES["predicted_peak"]
    for budget, drawn in ((top * 50, False), (top * 1.5, True)):
        d = _with_budget(data, budget)
        assert d["budget_drawn"] is drawn
        assert d["budget_label"].endswith("(above this range)") is not drawn
        ax = {ax.get_title(): ax for ax in pf.draw_matplotlib(d).axes}[title]
        p = _bokeh_figures(pf.draw_bokeh(d))[title]
        for labels in ([t.get_text() for t in ax.get_legend().get_texts()], _bokeh_labels(p)):
            assert d["budget_label"] in labels
        low, high = ax.get_ylim()
        assert bool(low < budget / MiB < high) is drawn
        assert high >= top / MiB and (p.y_range.start, p.y_range.end) == pytest.approx((low, high))
        lines = [line for line in ax.get_lines() if line.get_label() == d["budget_label"]]
        assert len(lines) == int(drawn)  # far: a legend entry, no line


def test_a_far_budget_from_the_settings(engine):
    with dask.config.set({"array.adaptive-chunking.memory-limit": "4 TiB"}):
        _, _, pid = profiled(engine)
        data = plots.profile_data(engine, pid)
    assert not data["budget_drawn"] and data["budget_label"].endswith("(above this range)")
    assert data["ranges"]["peak_mib"].high < data["budget_bytes"] / MiB


def test_legends_sit_below_the_data_and_inside_the_figure(engine):
    _, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    fig = pf.draw_matplotlib(data)
    renderer = _rendered(fig)
    frames = [ax.get_window_extent(renderer) for ax in fig.axes]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 4  # every panel but the first, which shares the second's colours
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(frame) for frame in frames)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0
    for ax in fig.axes:  # nothing cut: titles, tick labels and axis labels inside too
        box = ax.get_tightbbox(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1
        assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
    for p in _bokeh_figures(pf.draw_bokeh(data)).values():
        from bokeh.models import Legend

        assert not [r for r in p.center if isinstance(r, Legend)]
        assert len([r for r in p.below if isinstance(r, Legend)]) == len(p.legend)


def test_a_big_flat_process_memory_keeps_its_labels_readable_and_inside(engine):
    # After a long session the process holds many GiB and moves by a MiB or two:
    # five-digit ticks that must fit the margin, with no offset turning 20,180 into 0.5.
    _, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    data["timeline"]["memory_mib"] = data["timeline"]["memory_mib"] + 20_000.0
    data["measured_peak_bytes"] += 20_000 * 2**20
    fig = pf.draw_matplotlib(data)
    renderer = _rendered(fig)
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1
    timeline = next(ax for ax in fig.axes if ax.get_title() == pf.TITLES["timeline"])
    assert timeline.yaxis.get_offset_text().get_text() == ""
    ticks = [float(t.get_text()) for t in timeline.get_yticklabels() if t.get_text()]
    low, high = timeline.get_ylim()
    memory = data["timeline"]["memory_mib"]  # and the measured peak, drawn with it
    top = max(float(np.max(memory)), data["measured_peak_bytes"] / 2**20)
    assert float(np.min(memory)) - 1000 < low < high < top + 1000
    assert len(ticks) <= 12 and ticks == sorted(ticks)
    assert all(t == int(t) for t in ticks)  # whole MiB: not the noise stretched to fill it


@pytest.mark.parametrize("labels, most, columns", [
    (["a", "b", "c", "d"], 2, 2),
    (["predicted", "x" * 50, "measured", "y" * 40], 2, 1),  # two long labels side by side
    (["x" * 50, "y" * 40, "predicted", "measured"], 2, 2),  # the long ones share a column
    ([c * 20 for c in "abcdef"], 3, 2),
    ([], 2, 0),
])
def test_legend_columns_fit_the_panel(labels, most, columns):
    panel = pf.Panel("time", "", "", [pf.Series("line", [0], [0], label) for label in labels],
                     legend_cols=most)
    assert pf.legend_columns(panel) == columns
    assert pf.legend_columns(panel._replace(wide=True)) == min(len(labels), most)


# -- plot_profile -------------------------------------------------------------


def test_plot_profile_writes_a_self_contained_bokeh_page(engine, tmp_path):
    from bokeh.models import LayoutDOM

    _, _, pid = profiled(engine)
    path = tmp_path / "profile.html"
    figure = engine.plot_profile(pid, filename=path)
    assert isinstance(figure, LayoutDOM)
    text = path.read_text()
    assert '<script type="application/json"' in text  # bokeh's document JSON
    for title in plots.TITLES.values():
        assert title in text, title
    assert pid in text and "memory budget" in text and "recommended" in text
    assert "cdn.bokeh.org" not in text  # INLINE: opens without internet access


def test_plot_profile_writes_a_png(engine, tmp_path):
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    _, _, pid = profiled(engine)
    path = tmp_path / "profile.png"
    figure = engine.plot_profile(pid, filename=str(path))
    assert isinstance(figure, Figure)
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000
    image = imread(path)
    assert image.shape[1] == 1100 and image.shape[0] > 900 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # something is drawn
    titles = [ax.get_title() for ax in figure.axes]
    assert sorted(titles) == sorted(plots.TITLES.values())


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_profile_other_image_formats(engine, tmp_path, suffix, magic):
    _, _, pid = profiled(engine)
    path = tmp_path / f"profile{suffix.upper()}"  # the suffix's case does not matter
    engine.plot_profile(pid, filename=path)
    assert path.read_bytes().startswith(magic)


def test_plot_profile_without_a_file_returns_the_figure(engine, tmp_path, monkeypatch):
    from bokeh.models import LayoutDOM
    from matplotlib.figure import Figure

    _, _, pid = profiled(engine)
    assert isinstance(engine.plot_profile(pid), LayoutDOM)
    monkeypatch.setitem(sys.modules, "bokeh", None)  # bokeh missing: matplotlib
    assert isinstance(engine.plot_profile(pid), Figure)
    with pytest.raises(ImportError, match=r"needs bokeh: pip install bokeh .*\[plot\]"):
        engine.plot_profile(pid, filename=tmp_path / "p.html")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # neither
    with pytest.raises(ImportError, match=r"plot_profile needs bokeh: pip install bokeh"):
        engine.plot_profile(pid)
    assert not list(tmp_path.glob("p.*"))


def test_plot_profile_without_task_records(engine, tmp_path):
    engine.profile_chunks = False
    _, _, pid = profiled(engine)
    data = plots.profile_data(engine, pid)
    assert data["sampled"] == 0 and "no per-task records" in data["note"]
    assert data["curve"] is not None  # the per-compute summaries still fit the model
    engine.plot_profile(pid, filename=tmp_path / "p.html")
    engine.plot_profile(pid, filename=tmp_path / "p.png")
    assert "no per-task records" in (tmp_path / "p.html").read_text()


def test_plot_profile_errors(engine, tmp_path):
    x = da.ones((100, 100), chunks=50)
    pid = engine.profile_array(x)
    with pytest.raises(ValueError, match=r"'\.txt'.*\.html.*\.png, \.svg, \.pdf"):
        engine.plot_profile(pid, filename=tmp_path / "p.txt")
    with pytest.raises(ValueError, match=r"'\(none\)'"):
        engine.plot_profile(pid, filename=tmp_path / "p")
    with pytest.raises(ValueError, match="no computes yet: compute the profiled array"):
        engine.plot_profile(pid)
    with pytest.raises(KeyError, match="no profile with id 'nope'"):
        engine.plot_profile("nope", filename=tmp_path / "p.html")
    assert not list(tmp_path.iterdir())


# -- visualize ----------------------------------------------------------------


def _nodes(path):
    """(fill colours, texts and tooltips) of each node of a graphviz SVG."""
    root = ET.parse(path).getroot()
    out = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "node":
            continue
        fills = {e.get("fill") for e in g.iter() if e.tag in (f"{SVG}polygon", f"{SVG}ellipse")}
        texts = " ".join([t.text or "" for t in g.iter(f"{SVG}text")]
                         + [a.get(f"{XLINK}title") or "" for a in g.iter(f"{SVG}a")])
        out.append((fills, texts))
    return root, out


@needs_dot
def test_visualize_colours_the_measured_tasks(engine, tmp_path):
    x, y, pid = profiled(engine, lambda x: (x + x.T).sum())
    path = tmp_path / "graph.svg"
    engine.visualize(pid, filename=path)
    root, nodes = _nodes(path)
    assert len(nodes) == 2 * 16  # x's 16 tasks: a circle and a box each
    coloured = [(f, t) for f, t in nodes if f & set(plots.PALETTE)]
    assert len(coloured) == len(nodes)  # every chunk's task measured, itself or fused
    assert any("MiB" in t for _, t in coloured)
    assert all("MiB" not in t for f, t in nodes if not f & set(plots.PALETTE))
    legend = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "tasks matched" in legend and pid in legend
    # The computed expression's graph names the tasks as the profile recorded them.
    path2 = tmp_path / "expr.svg"
    engine.visualize(pid, filename=path2, collection=y, color_by="time", rankdir="LR")
    _, nodes2 = _nodes(path2)
    coloured2 = [(f, t) for f, t in nodes2 if f & set(plots.PALETTE)]
    assert len(coloured2) >= len(coloured)
    assert any(" ms" in t for _, t in coloured2)
    assert engine.get_profile(pid)["computes"] == 1  # drawing is no compute


@needs_dot
def test_visualize_shows_chunks_measured_inside_fused_tasks(engine, tmp_path):
    x, _, pid = profiled(engine, lambda x: (x + 1).sum())  # x's tasks all fused away
    path = tmp_path / "graph.svg"
    engine.visualize(pid, filename=str(path))
    root, nodes = _nodes(path)
    assert sum(bool(f & set(plots.PALETTE)) for f, _ in nodes) == 2 * 16
    assert "16 of 16 tasks matched (16 dashed" in " ".join(
        t.text or "" for t in root.iter(f"{SVG}text"))


@needs_dot
def test_visualize_errors(engine, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"  # the fixture's history lives in tmp_path
    tmp_path.mkdir()
    x = da.ones((100, 100), chunks=50)
    pid = engine.profile_array(x)
    with pytest.raises(ValueError, match="no computes yet"):
        engine.visualize(pid, filename=tmp_path / "g.svg")
    with pytest.raises(KeyError, match="no profile with id"):
        engine.visualize("nope", filename=tmp_path / "g.svg")
    (x + 1).sum().compute()
    del x
    gc.collect()
    with pytest.raises(ValueError, match="no longer exists: pass collection="):
        engine.visualize(pid, filename=tmp_path / "g.svg")
    with pytest.raises(TypeError, match="must be a dask collection"):
        engine.visualize(pid, filename=tmp_path / "g.svg", collection=[1, 2])
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"`dot` program.*apt-get install graphviz"):
        engine.visualize(pid, filename=tmp_path / "g.svg")
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match="pip install graphviz"):
        engine.visualize(pid, filename=tmp_path / "g.svg")
    assert not list(tmp_path.iterdir())
