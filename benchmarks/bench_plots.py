"""Cost of the pictures: ``engine.plot_profile`` and ``engine.visualize``.

The profile is ``(x + x.T).sum()`` with x a 2000 x 2000 array in 20 x 20 chunks:
10,000 chunks, about 23,000 tasks, of which the profile keeps its sample of 10,000
records (``max-records``). ``plot_profile`` is timed without a file (the bokeh
layout), to HTML (bokeh, inlined JavaScript) and to PNG (matplotlib), best of
``--repeats`` after one warm-up call (the first call also imports bokeh or
matplotlib: reported apart). ``visualize`` draws x's graph at 100, 1,000 and
10,000 chunks (one call each: graphviz's layout dominates; the part spent in the
``dot`` program is reported apart). ``--quick`` leaves out the 10,000-chunk graph
(about two minutes).

Run: ``python benchmarks/bench_plots.py [--repeats 3] [--quick]``; writes
``benchmarks/results/plots.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _util import machine, use_working_tree, write

use_working_tree()

import dask.dot  # noqa: E402

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from dask.array import adaptive_chunking as ac  # noqa: E402
from dask.array._adaptive_chunking import plots  # noqa: E402

SHAPE = (2000, 2000)
GRAPHS = [200, 63, 20]  # chunk sides: 100, 1,024 and 10,000 chunks


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def best_of(f, repeats: int) -> float:
    return min(timed(f) for _ in range(repeats))


def profiled(engine, side: int):
    x = da.random.random(SHAPE, chunks=side)
    pid = engine.profile_array(x)
    (x + x.T).sum().compute()
    return x, pid


def time_plot_profile(engine, pid, out: Path, repeats: int) -> list[dict]:
    rows = []
    cases = [("data only (`plots.profile_data`)", lambda: plots.profile_data(engine, pid)),
             ("bokeh layout, no file", lambda: engine.plot_profile(pid)),
             ("HTML (bokeh, INLINE resources)",
              lambda: engine.plot_profile(pid, filename=out / "profile.html")),
             ("PNG (matplotlib)", lambda: engine.plot_profile(pid, filename=out / "profile.png"))]
    for name, f in cases:
        first = timed(f)
        best = best_of(f, repeats)
        rows.append({"case": name, "first_ms": first * 1e3, "best_ms": best * 1e3})
        print(rows[-1], flush=True)
    return rows


def time_visualize(engine, side: int, out: Path) -> dict:
    x, pid = profiled(engine, side)
    spent = []
    original = dask.dot.graphviz_to_file

    def graphviz_to_file(g, filename, format):
        t = time.perf_counter()
        try:
            return original(g, filename, format)
        finally:
            spent.append(time.perf_counter() - t)

    dask.dot.graphviz_to_file = graphviz_to_file
    try:
        total = timed(lambda: engine.visualize(pid, filename=out / f"graph-{side}.svg"))
    finally:
        dask.dot.graphviz_to_file = original
    row = {"chunks": x.npartitions, "total_s": total, "dot_s": sum(spent),
           "svg_bytes": (out / f"graph-{side}.svg").stat().st_size}
    engine.remove_profile(pid)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-chunk graph")
    args = parser.parse_args()
    with dask.config.set({"array.adaptive-chunking.history": False}), \
            tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        engine = ac.AdaptiveChunkingEngine()
        x, pid = profiled(engine, 20)
        stats = engine.get_profile(pid)["profiler_stats"]
        plot_rows = time_plot_profile(engine, pid, out, args.repeats)
        sizes = {s: (out / f"profile{s}").stat().st_size for s in (".html", ".png")}
        engine.remove_profile(pid)
        graph_rows = [time_visualize(engine, side, out)
                      for side in (GRAPHS[:-1] if args.quick else GRAPHS)]
        engine.close()
    m = machine()
    md = ["# Cost of the pictures", "",
          f"`python benchmarks/bench_plots.py --repeats {args.repeats}"
          f"{' --quick' if args.quick else ''}` on {m['cpus']} CPUs, dask {m['dask']}.", "",
          f"## `engine.plot_profile`: (x + x.T).sum(), x {SHAPE} in 20 x 20 chunks", "",
          f"{stats['total_chunks']:,} tasks recorded, {stats['sampled_records']:,} sampled "
          "(the records drawn). Best of "
          f"{args.repeats} calls after a first one (the first bokeh and the first "
          "matplotlib call also import the library). "
          f"HTML file {sizes['.html'] / 2**20:.1f} MiB (bokeh's JavaScript inlined), "
          f"PNG {sizes['.png'] / 1e3:.0f} kB. Target: under about 1 s.", "",
          "| output | first call | best |", "|---|---|---|"]
    md += [f"| {r['case']} | {r['first_ms']:.0f} ms | {r['best_ms']:.0f} ms |"
           for r in plot_rows]
    md += ["", "## `engine.visualize`: x's graph (optimized), tasks coloured", "",
           "One call each; graphviz's layout (the `dot` program) takes nearly all of it "
           "and grows faster than the graph.", "",
           "| chunks of x (tasks drawn) | visualize | of which `dot` | SVG |",
           "|---|---|---|---|"]
    md += [f"| {r['chunks']:,} | {r['total_s'] * 1e3:,.0f} ms | {r['dot_s'] * 1e3:,.0f} ms | "
           f"{r['svg_bytes'] / 1e3:,.0f} kB |" for r in graph_rows]
    write("plots", {"machine": m, "profile_stats": stats, "plot_profile": plot_rows,
                    "file_bytes": sizes, "visualize": graph_rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
