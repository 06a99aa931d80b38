"""How results look in a notebook (``_repr_html_``) and a terminal (``repr``)."""

from __future__ import annotations

import html.parser
import math

import pytest

import dask.array as da


class _Checked(html.parser.HTMLParser):
    """Collects the tags and text of an HTML fragment, and whether tags balance."""

    VOID = {"br", "img", "rect", "line", "polygon", "path", "circle", "text"}

    def __init__(self):
        super().__init__()
        self.stack, self.text, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag not in self.VOID:
            assert self.stack and self.stack.pop() == tag, (tag, self.stack)

    def handle_data(self, data):
        self.text.append(data)


def _recommendation(engine):
    x = da.random.random((2000, 2000), chunks=100)
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    return x, engine.recommend(da.random.random((8000, 8000), chunks=100), pid)


def test_a_recommendation_reads_as_one_line(engine):
    _, rec = _recommendation(engine)
    text = repr(rec)
    assert text.startswith("<Recommendation chunks=") and "\n" not in text
    assert str(rec.chunks) in text and rec.binding in text and "budget" in text
    assert rec.shape == (8000, 8000) and rec.current_chunks == (100, 100)


def test_a_recommendation_in_a_notebook_shows_both_chunkings(engine):
    _, rec = _recommendation(engine)
    page = rec._repr_html_()
    parsed = _Checked()
    parsed.feed(page)
    parsed.close()
    assert not parsed.stack  # every tag closed
    text = " ".join(parsed.text)
    for label in ("Recommended chunks", "Current chunks", "Decided by", "Why",
                  "Predicted peak memory", "now", "recommended"):
        assert label in text, label
    assert parsed.tags.count("svg") == 2  # the current and the recommended chunks
    assert str(rec.chunks) in text and "(100, 100)" in text


def test_text_in_the_page_is_escaped():
    from types import SimpleNamespace

    from dask.array._adaptive_chunking.views import recommendation_html

    rec = SimpleNamespace(
        chunks=(10,), chunk_bytes=80, binding="speed", reason="<script>x</script>",
        fits_budget=False, predicted_peak_bytes=1e9, memory_budget_bytes=1e8,
        predicted_seconds=1.0, predicted_tasks=3, concurrency=1, array_chunk_size=80,
        scheduler_config={}, shape=(30,), current_chunks=None,
    )
    page = recommendation_html(rec)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "over the budget" in page


def _parsed(page):
    parsed = _Checked()
    parsed.feed(page)
    parsed.close()
    assert not parsed.stack  # every tag closed
    return parsed, " ".join(parsed.text)


def test_a_profile_sets_measured_against_predicted(engine):
    x = da.random.random((2000, 2000), chunks=100)
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    profile = engine.get_profile(pid)
    now = profile["current_prediction"]
    assert now["chunks"] == (100, 100) and now["predicted_tasks"] > 0
    assert now["predicted_peak_memory_mb"] > 0 and now["predicted_time_s"] > 0

    parsed, text = _parsed(profile._repr_html_())
    for label in ("Current chunks", "Recommended chunks", "Decided by", "Why",
                  "measured (last compute)", "predicted now", "predicted recommended",
                  "Peak memory", "Memory budget", "now", "recommended"):
        assert label in text, label
    assert parsed.tags.count("svg") == 2
    assert profile["recommendation"]["binding_constraint"] in text

    text = repr(profile)  # one key per line, the long chunk tuples cut short
    assert text.startswith("{\n  'profile_id': ") and text.endswith("\n}")
    assert "'current_chunks': ((100, 100, 100, ..., 100), (100, 100, 100, ..., 100))," in text
    assert len(text.splitlines()) < 100 and dict(profile) == profile
    assert "recommended_chunks" in str(profile)  # print() shows the dict, as the spec's


def test_a_profile_with_no_compute_says_why(engine):
    x = da.ones((100, 100), chunks=10)
    profile = engine.get_profile(engine.profile_array(x))
    _, text = _parsed(profile._repr_html_())
    assert "no compute of this array has been profiled yet" in text
    assert profile["current_prediction"] is None


def test_telemetry_in_a_notebook_and_a_terminal(engine):
    x = da.ones((100, 100), chunks=10)
    pid = engine.profile_array(x)
    x.sum().compute()
    telemetry = engine.get_telemetry()
    _, text = _parsed(telemetry._repr_html_())
    for label in ("Computes profiled", "Memory used", "Memory budget", "Tasks measured", pid,
                  "complete"):
        assert label in text, label
    assert repr(telemetry).startswith("{\n  'enabled': ")
    assert telemetry["tracked_arrays"] == 1  # still a dict


def test_a_progress_bar_with_memory_during_a_profiled_compute(engine):
    import io

    from dask.array.adaptive_chunking import ProfileProgressBar

    out = io.StringIO()
    x = da.random.random((1000, 1000), chunks=100)
    pid = engine.profile_array(x)
    with ProfileProgressBar(out=out, dt=0.01):
        (x + x.T).sum().compute()
    text = out.getvalue()
    assert "100% Completed" in text and "| memory " in text and ", peak " in text
    assert engine.get_profile(pid)["profiler_stats"]["total_chunks"] > 100  # still profiled


def test_unknown_sizes_and_failures_show_without_error(engine):
    import numpy as np

    x = da.ones(100, chunks=10)
    y = x[x > 0]  # unknown (NaN) chunk sizes
    pid = engine.profile_array(y)
    (y + 1).sum().compute()
    profile = engine.get_profile(pid)
    assert "nan" in repr(profile)
    assert "unknown (NaN) sizes" in repr(profile)  # why there is no recommendation
    _parsed(profile._repr_html_())

    def boom(block):
        raise RuntimeError("no good")

    z = da.ones((10, 10), chunks=5)
    pid = engine.profile_array(z)
    with pytest.raises(RuntimeError):
        z.map_blocks(boom, dtype=float).compute()
    failed = engine.get_profile(pid)
    assert failed["status"] == "failed"
    _, text = _parsed(failed._repr_html_())
    assert "Error" in text and "no good" in text
    assert np.isnan(float("nan"))


def test_a_closed_stream_never_breaks_the_compute(engine):
    import io

    from dask.array.adaptive_chunking import ProfileProgressBar

    out = io.StringIO()
    x = da.ones((100, 100), chunks=10)

    def close_then_add(block):
        out.close()
        return block + 1

    with ProfileProgressBar(out=out, dt=0.001):
        assert x.map_blocks(close_then_add).sum().compute() == 20000


def test_printed_numbers_read_in_units_and_the_values_stay_exact(engine):
    x = da.random.random((2000, 2000), chunks=100)  # 400 chunks, more tasks
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    profile = engine.get_profile(pid)
    stats, rec = profile["profiler_stats"], profile["recommendation"]
    assert stats["array_chunks"] == 400 and stats["total_chunks"] > 400
    text = repr(stats)  # what print(profile["profiler_stats"]) shows
    assert (f"'total_chunks': {stats['total_chunks']},  # tasks measured; the array has "
            "400 chunks") in text
    assert "'avg_chunk_size_mb': 0.07629,  # 78.12 kiB" in text  # 4 digits, and its unit
    assert stats["avg_chunk_size_mb"] == 100 * 100 * 8 / 2**20  # the value is exact
    text = repr(rec)
    budget = rec["memory_budget_mb"]
    assert f"'memory_budget_mb': {budget:.1f},  # " in text and "GiB" in text
    assert repr(budget) not in text or budget == round(budget, 1)
    assert rec["chunk_size_mb"] == math.prod(rec["chunks"]) * 8 / 2**20
    code = [line.split("  # ")[0] for line in text.splitlines()]
    assert max(map(len, code)) <= 100  # the reason is wrapped, not one long line
    assert type(stats) is not dict and isinstance(stats, dict)  # still a dict to code


def test_the_printed_dict_reads_back_as_the_same_dict():
    import ast

    from dask.array._adaptive_chunking.views import Readable

    d = {"reason": "a long reason " * 12, "memory_budget_mb": 9642.5, "tasks": 3,
         "held_fraction": 0.25, "chunks": (10, 20), "nested": {"peak_mb": 0.5}}
    text = repr(Readable(d))
    assert "# 9.42 GiB" in text and "# 25%" in text and "# 512.00 kiB" in text
    assert ast.literal_eval(text) == d  # comments and wrapped strings are still Python


def test_notebook_tables_have_borders_and_sit_beside_their_pictures(engine):
    x, rec = _recommendation(engine)
    for page in (rec._repr_html_(),):
        parsed, text = _parsed(page)
        assert "border: 1px solid" in page and "border-collapse: collapse" in page
        assert "max-width: 34em" in page  # a long reason wraps instead of widening
        # One row: the table's cell, then the pictures' cell (as Dask's array repr)
        outer = page[:page.index("<td")]
        assert outer == "<table style='width: auto'><tr>"
        assert page.index("Why") < page.index("<svg")
    assert f"array.chunk-size {rec.array_chunk_size / 2**20:.2f} MiB (" in text
    assert f"({rec.array_chunk_size:,} bytes)" in text
    # Pictures of 6,400 and of 100 chunks can look alike: the counts tell them apart
    blocks = math.prod(-(-8000 // c) for c in rec.chunks)
    assert "(100, 100): 6,400 chunks" in text and f": {blocks:,} chunk" in text
