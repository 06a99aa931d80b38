"""Render what a notebook user sees, in a real browser, to PNG.

A small real workload is profiled; its profile, recommendation and telemetry views
(``_repr_html_``) are written as HTML pages and the bokeh ``plot_profile`` page
beside them, and headless Chromium takes a picture of each. The pictures are for
looking at (is the table beside its picture? are the numbers readable?) and the
docs show them (``docs/images/``, committed: the docs build runs without a browser).

Chromium is a system package (``apt-get install chromium`` on Debian); the plot page
needs the ``plot`` extra (Pillow, which matplotlib brings, trims the pictures). Nothing is stored in the history. Usage::

    python tools/render_views.py [output directory]   # default docs/images

Pages are laid out at 1400 px wide, as a wide notebook is, so that a view that
spreads out on a wide page shows it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: A page as plain as a notebook's output cell: the views bring their own styles.
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: sans-serif; font-size: 13px; margin: 16px; }}</style>
</head><body>{body}</body></html>
"""


def use_working_tree() -> None:
    """Import ``dask.array.adaptive_chunking`` from this checkout, as the tests do."""
    overlay = str(ROOT / "tools" / "overlay")
    if overlay not in sys.path:
        sys.path.insert(0, overlay)
    import dask_overlay_dev

    dask_overlay_dev.install()


def browser() -> str:
    """The path of a Chromium-family browser, or exit saying how to get one."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("render_views: no Chromium found; install it (apt-get install chromium)")


def screenshot(chrome: str, page: Path, png: Path, width: int, height: int) -> None:
    """A picture of ``page`` at ``width`` x ``height`` px; JavaScript (bokeh) gets time
    to draw."""
    subprocess.run(
        [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={width},{height}", "--virtual-time-budget=10000",
         f"--screenshot={png}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )


def trim(png: Path, margin: int = 12) -> None:
    """Cut the empty page around a picture (the window is larger than any view)."""
    from PIL import Image, ImageChops

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box:
        left, top, right, bottom = box
        rgb.crop((max(0, left - margin), max(0, top - margin),
                  min(rgb.width, right + margin), min(rgb.height, bottom + margin))
                 ).save(png)


def views(out: Path) -> dict[str, tuple[str, tuple[int, int]]]:
    """The HTML of each view of a small profiled workload, by picture name, with the
    size of its picture; writes the bokeh plot's page to ``out``."""
    import dask
    import dask.array as da
    from dask.array.adaptive_chunking import AdaptiveChunkingEngine

    pages: dict[str, tuple[str, tuple[int, int]]] = {}
    with dask.config.set({"array.adaptive-chunking.history": False}):
        engine = AdaptiveChunkingEngine()
        try:
            x = da.random.random((4000, 4000), chunks=(100, 100))
            pid = engine.profile_array(x)
            (x + x.T).mean(axis=0).compute()
            profile = engine.get_profile(pid)
            pages["profile"] = (profile._repr_html_(), (1400, 520))
            rec = engine.recommend(da.random.random((20000, 20000), chunks=(100, 100)), pid)
            pages["recommendation"] = (rec._repr_html_(), (1400, 420))
            pages["telemetry"] = (engine.get_telemetry()._repr_html_(), (1400, 360))
            try:
                engine.plot_profile(pid, filename=out / "plot_profile.html")
            except ImportError as e:
                print(f"render_views: the plot is left out: {e}", file=sys.stderr)
        finally:
            engine.close()
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    chrome = browser()
    use_working_tree()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (body, (width, height)) in views(tmp).items():
            page = tmp / f"{name}.html"
            page.write_text(PAGE.format(title=name, body=body), encoding="utf-8")
            screenshot(chrome, page, args.out / f"view-{name}.png", width, height)
            trim(args.out / f"view-{name}.png")
            print(args.out / f"view-{name}.png")
        plot = tmp / "plot_profile.html"
        if plot.exists():
            screenshot(chrome, plot, args.out / "plot-profile-bokeh.png", 1400, 1600)
            trim(args.out / "plot-profile-bokeh.png")
            print(args.out / "plot-profile-bokeh.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
