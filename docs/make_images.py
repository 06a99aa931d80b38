"""Draw the user guide's pictures from a small real workload.

Writes ``profile.png`` (``engine.plot_profile`` of ``(x + x.T).sum()``
on a 2000 x 2000 array in 100 x 100 chunks) and ``graph.svg``
(``engine.visualize`` of the same expression on 400 x 400 in 100 x 100 chunks,
small enough to read). Needs the ``plot`` extra; takes a few seconds. Nothing is
stored in the history.

``graph.svg`` needs Graphviz's ``dot`` program, a system package that a fresh machine
may not have, and the site must still build there. So the page includes
``graph.md``, written here: the picture when ``dot`` is installed, otherwise a note
that it is left out and why (and no ``graph.svg``, so an older one is not shown).

The docs build runs it (``docs/conf.py``) into ``docs/_generated``; by hand:
``python docs/make_images.py [output directory]`` (default ``docs/_generated``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# `docs/notebook.md` includes `_generated/graph.md`, whose paths are relative to that page.
GRAPH_PICTURE = (
    "![The graph of (x + x.T).sum(), tasks coloured by their output]"
    "(_generated/graph.svg)\n"
)
GRAPH_MISSING = """:::{note}
The picture of the graph is left out: this site was built on a machine without
Graphviz's `dot` program, which `engine.visualize` needs.
:::
"""


def use_working_tree() -> None:
    """Import ``dask.array.adaptive_chunking`` from this checkout, as the tests do."""
    overlay = str(ROOT / "tools" / "overlay")
    if overlay not in sys.path:
        sys.path.insert(0, overlay)
    import dask_overlay_dev

    dask_overlay_dev.install()


def main(out: Path) -> list[Path]:
    use_working_tree()
    import dask
    import dask.array as da
    from dask.array.adaptive_chunking import AdaptiveChunkingEngine

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with dask.config.set({"array.adaptive-chunking.history": False}):
        engine = AdaptiveChunkingEngine()
        try:
            x = da.random.random((2000, 2000), chunks=(100, 100))
            pid = engine.profile_array(x)
            (x + x.T).sum().compute()
            engine.plot_profile(pid, filename=out / "profile.png")
            written.append(out / "profile.png")

            graph = out / "graph.svg"
            if shutil.which("dot") is None:
                graph.unlink(missing_ok=True)
                (out / "graph.md").write_text(GRAPH_MISSING)
            else:
                small = da.random.random((400, 400), chunks=(100, 100))
                pid = engine.profile_array(small)
                expr = (small + small.T).sum()
                expr.compute()
                engine.visualize(pid, filename=graph, collection=expr)
                written.append(graph)
                (out / "graph.md").write_text(GRAPH_PICTURE)
        finally:
            engine.close()
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "_generated"
    for path in main(target):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
