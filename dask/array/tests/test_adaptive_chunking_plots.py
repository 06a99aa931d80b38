"""Pictures of a profile: ``engine.plot_profile`` and ``engine.visualize``."""

from __future__ import annotations

import gc
import shutil
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import dask.array as da
from dask.array._adaptive_chunking import plots
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
    assert p["growth_mib"][0] == 1.0 and np.isnan(p["growth_mib"][1])  # 0: no reading
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
