"""The documentation site builds with warnings as errors and shows what it should.

Skipped unless the ``docs`` extra is installed (``pip install ".[docs]"``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("numpydoc")
pytest.importorskip("pydata_sphinx_theme")

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"
PAGES = ["index", "user-guide", "api", "configuration", "troubleshooting", "design",
         "benchmarks", "benchmark-results"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as CI builds it: ``python -m sphinx -W --keep-going -b html``."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr + build.stdout
    return out / "html"


def test_every_page_is_built_and_linked_from_the_landing_page(site):
    index = (site / "index.html").read_text()
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), page
        if page != "index":
            assert f'href="{page}.html"' in index, page


def test_api_page_documents_every_public_name(site):
    from dask.array import adaptive_chunking as ac

    api = (site / "api.html").read_text()
    for name in [*ac.__all__, "Recommendation"]:
        assert f'id="dask.array.adaptive_chunking.{name}"' in api, name
    for member in ["AdaptiveChunkingEngine.recommend", "AdaptiveChunkingEngine.predict",
                   "AdaptiveChunkingEngine.get_profile", "Recommendation.scheduler_config",
                   "ChunkSizeRecommender.recommend", "ChunkProfiler.get_stats"]:
        assert f'id="dask.array.adaptive_chunking.{member}"' in api, member


def test_configuration_page_lists_every_setting(site):
    schema = yaml.safe_load(
        (ROOT / "dask/array/_adaptive_chunking/adaptive-chunking-schema.yaml").read_text()
    )
    keys = schema["properties"]["array"]["properties"]["adaptive-chunking"]["properties"]
    page = (site / "configuration.html").read_text()
    assert "array.adaptive-chunking.memory-limit" in page
    for key in keys:
        assert f'<span class="pre">{key}</span>' in page, key


def test_benchmark_links_lead_to_the_included_results(site):
    benchmarks = (site / "benchmarks.html").read_text()
    results = (site / "benchmark-results.html").read_text()
    assert 'href="benchmark-results.html#results-overhead"' in benchmarks
    assert 'id="results-overhead"' in results
    assert "Fixed cost per compute and cost per task" in results  # the table itself


def test_notebook_page_shows_the_pictures_it_can_draw(site):
    # the profile is matplotlib's; the graph needs Graphviz's dot, and without it the
    # page says the picture is left out rather than the build failing
    page = (site / "notebook.html").read_text()
    assert 'src="_images/profile.png"' in page
    assert (site / "_images" / "profile.png").is_file()
    if shutil.which("dot") is None:
        assert 'src="_images/graph.svg"' not in page
        assert not (site / "_images" / "graph.svg").exists()
        assert "The picture of the graph is left out" in page
        assert '<div class="admonition note">' in page
    else:
        assert 'src="_images/graph.svg"' in page
        assert (site / "_images" / "graph.svg").is_file()
        assert "left out" not in page
