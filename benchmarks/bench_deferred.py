"""What folding after the result is handed back saves a profiled compute's wall time.

The same profiled compute (``profile_array`` on each new array, threaded scheduler,
history on) with the engine's deferred work as shipped (a background thread folds,
applies and stores the compute after it returns) and run inline by the compute's
last task, as before; interleaved pairs, the order alternating. Ratio = deferred /
inline wall time of one pair.

Run alone: ``python benchmarks/bench_deferred.py [--pairs 21]`` (about 5 minutes);
writes ``benchmarks/results/deferred.{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time

from _util import machine, use_working_tree, write

COMPUTES = {
    "transpose": ((6000, 6000), 250, "(x + x.T).mean(axis=0), 576 chunks"),
    "large": ((12500, 40000), (250, 500), "(x + 1).sum(), 4,000 chunks of 1 MB"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=21)
    args = parser.parse_args()
    use_working_tree()
    import dask
    import dask.array as da
    from dask.array import adaptive_chunking as ac
    from dask.array._adaptive_chunking import recorder

    dask.config.set({"array.adaptive-chunking.history-path":
                     tempfile.mkdtemp() + "/history.sqlite3"})
    engine = ac.get_adaptive_engine()
    submit = recorder.deferred.submit
    results = {}
    for name, (shape, chunks, _) in COMPUTES.items():
        def once(defer: bool) -> float:
            recorder.deferred.submit = submit if defer else (lambda job: job())
            try:
                gc.collect()
                x = da.random.random(shape, chunks=chunks)
                y = (x + x.T).mean(axis=0) if name == "transpose" else (x + 1).sum()
                pid = engine.profile_array(x)
                began = time.perf_counter()
                dask.compute(y, scheduler="threads")
                wall = time.perf_counter() - began
                recorder.deferred.settle()
                engine.remove_profile(pid)
                return wall
            finally:
                recorder.deferred.submit = submit

        for _ in range(2):
            once(True), once(False)
        ratios = []
        for i in range(args.pairs):
            if i % 2 == 0:
                deferred, inline = once(True), once(False)
            else:
                inline, deferred = once(False), once(True)
            ratios.append(deferred / inline)
        q = statistics.quantiles(ratios, n=4)
        results[name] = {"ratios": ratios, "median": statistics.median(ratios),
                         "q1": q[0], "q3": q[2]}
    lines = ["# Folding after the result is handed back", "",
             f"`python benchmarks/bench_deferred.py --pairs {args.pairs}`: deferred / "
             "inline wall time of the same profiled compute, median (quartiles) over "
             "interleaved pairs.", "", "| compute | deferred / inline |", "|---|---|"]
    for name, r in results.items():
        lines.append(f"| {COMPUTES[name][2]} | **{r['median']:.3f}** "
                     f"({r['q1']:.3f}-{r['q3']:.3f}) |")
    write("deferred", {"machine": machine(), "pairs": args.pairs, "results": results},
          "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
