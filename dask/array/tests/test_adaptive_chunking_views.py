"""How results look in a notebook (``_repr_html_``) and a terminal (``repr``)."""

from __future__ import annotations

import html.parser

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
