"""Profiling overhead: profiled vs unprofiled wall time of the same compute.

Workload: ``(x + 1).sum()`` on ``x = da.random.random((12500, 40000), chunks=(250, 500))``,
4,000 chunks of 1 MB (about 8,000 tasks after the tree reduction), threaded scheduler.
Runs alternate between unprofiled and profiled so that drift affects both alike;
the result is the median of the per-pair ratios. It also reports the engine's cost
per task, measured three ways: the end-to-end difference, the instrumented-task
wrapper in isolation, and the graph rewrite.

Run: ``python benchmarks/bench_overhead.py [--pairs 9]``; writes
``benchmarks/results/overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

from _util import machine, use_working_tree, write

use_working_tree()

from dask._task_spec import Task  # noqa: E402

import dask.array as da  # noqa: E402
from dask.array import adaptive_chunking as ac  # noqa: E402
from dask.array._adaptive_chunking import attribution  # noqa: E402
from dask.array._adaptive_chunking import peaks  # noqa: E402
from dask.array._adaptive_chunking import tasks  # noqa: E402


def workload():
    x = da.random.random((12500, 40000), chunks=(250, 500))
    return x, (x + 1).sum()


def timed(y) -> float:
    gc.collect()
    start = time.perf_counter()
    y.compute(scheduler="threads")
    return time.perf_counter() - start


class Sink:
    """A ComputeSink that keeps nothing: the cost of measuring alone."""

    def start(self, c):
        pass

    def register_failed(self, cid):
        pass

    def finish(self, c):
        pass

    def late(self, cid, r):
        pass

    def abandon(self, records, cid):
        pass


def wrapper_cost(n: int = 200_000) -> float:
    """Microseconds that measuring adds to one trivial task (MeasuredTask vs Task)."""

    node = Task("k", int, 1)
    collector = tasks.ComputeCollector(n * 10, Sink())
    measured = tasks.MeasuredTask.wrap(node, collector, collector.cid, os.getpid(), 0, False)
    best_plain = best_wrapped = float("inf")
    for _ in range(5):
        collector.records.clear()
        t = time.perf_counter()
        for _ in range(n):
            node()
        best_plain = min(best_plain, time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            measured()
        best_wrapped = min(best_wrapped, time.perf_counter() - t)
    peaks.untrack_peak(collector)
    return (best_wrapped - best_plain) / n * 1e6


def rewrite_cost() -> tuple[float, int]:
    """Microseconds per task to instrument the optimized graph of the workload."""
    from dask.array.optimization import optimize

    x, y = workload()
    dsk = optimize(y.__dask_graph__(), y.__dask_keys__())
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        out, collector = attribution.instrument(dsk, y.__dask_keys__(), None, Sink())
        best = min(best, time.perf_counter() - t)
        peaks.untrack_peak(collector)
        del out, collector
    return best / len(dsk) * 1e6, len(dsk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=9)
    args = parser.parse_args()

    ac.reset_adaptive_engine()
    engine = ac.get_adaptive_engine()
    x, y = workload()
    timed(y)  # warm up imports, thread pool and random generators
    plain, profiled, ratios = [], [], []
    tasks = 0
    for i in range(args.pairs):
        order = ("plain", "profiled") if i % 2 == 0 else ("profiled", "plain")
        times = {}
        for kind in order:
            if kind == "profiled":
                pid = engine.profile_array(x)
                times[kind] = timed(y)
                tasks = engine.get_profile(pid)["last_compute"]["tasks"]
                engine.remove_profile(pid)
            else:
                times[kind] = timed(y)
        plain.append(times["plain"])
        profiled.append(times["profiled"])
        ratios.append(times["profiled"] / times["plain"])
        print(f"pair {i}: plain {times['plain']:.3f}s profiled {times['profiled']:.3f}s "
              f"ratio {ratios[-1]:.3f}", flush=True)
    ac.reset_adaptive_engine()

    wrap_us = wrapper_cost()
    rewrite_us, graph_tasks = rewrite_cost()
    median_ratio = statistics.median(ratios)
    per_task_us = (statistics.median(profiled) - statistics.median(plain)) / tasks * 1e6
    data = {
        "workload": "(x + 1).sum(), x = random (12500, 40000), chunks (250, 500): 4000 x 1 MB",
        "scheduler": "threads",
        "pairs": args.pairs,
        "tasks_per_compute": tasks,
        "plain_s": plain,
        "profiled_s": profiled,
        "ratios": ratios,
        "median_ratio": median_ratio,
        "median_plain_s": statistics.median(plain),
        "median_profiled_s": statistics.median(profiled),
        "end_to_end_us_per_task": per_task_us,
        "wrapper_us_per_task": wrap_us,
        "graph_rewrite_us_per_task": rewrite_us,
        "graph_tasks": graph_tasks,
        "machine": machine(),
    }
    md = f"""# Profiling overhead

`python benchmarks/bench_overhead.py --pairs {args.pairs}` on {data['machine']['cpus']} CPUs,
dask {data['machine']['dask']}, numpy {data['machine']['numpy']}.

Workload: {data['workload']}; {tasks} instrumented tasks per compute, threaded scheduler,
unprofiled and profiled runs alternating.

| measure | value |
|---|---|
| median wall time, unprofiled | {data['median_plain_s']:.3f} s |
| median wall time, profiled | {data['median_profiled_s']:.3f} s |
| **median profiled / unprofiled ratio** | **{median_ratio:.3f}** (target <= 1.02) |
| engine cost per task, end to end | {per_task_us:.1f} us |
| instrumented-task wrapper alone | {wrap_us:.2f} us per task |
| graph rewrite | {rewrite_us:.2f} us per task |

Per-pair ratios: {', '.join(f'{r:.3f}' for r in ratios)}
"""
    write("overhead", data, md)


if __name__ == "__main__":
    main()
