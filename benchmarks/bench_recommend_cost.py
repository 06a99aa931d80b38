"""Cost of one recommendation, with 1,000 to 1,000,000 chunk records in the profile.

A real profile (a pilot of ``(x + 1).sum()`` at two chunk sizes) is padded with
synthetic chunk records, then ``ChunkSizeRecommender.recommend`` and
``engine.recommend`` are timed (best of 200 calls, after one warm-up call that
also measures this machine's page-fault cost once). The model works on one summary
per compute, so the cost should not grow with the records.

Run: ``python benchmarks/bench_recommend_cost.py``; writes
``benchmarks/results/recommend-cost.{json,md}``.
"""

from __future__ import annotations

import time

from _util import machine, use_working_tree, write

use_working_tree()

import dask.array as da  # noqa: E402
from dask.array import adaptive_chunking as ac  # noqa: E402

RECORDS = [1_000, 100_000, 1_000_000]


def pad(profiler, n: int) -> None:
    """Record ``n`` more 80 kB chunks into ``profiler`` through its public
    ``record_chunk`` (a few seconds per million)."""
    start = len(profiler)
    for i in range(n):
        profiler.record_chunk(ac.ChunkMemoryMetric(
            ("pad", start + i), (100, 100), 10_000, 8, 80_000, 0.05, 0.0, 0.0,
            start_time=(start + i) * 1e-4))


def best_of(f, repeats: int = 200) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    engine = ac.AdaptiveChunkingEngine()
    ids = []
    for chunks in [(100, 100), (250, 250)]:
        x = da.random.random((1000, 1000), chunks=chunks)
        ids.append(engine.profile_array(x))
        (x + 1).sum().compute()
    profiler = engine.get_profiler(ids[0])
    full = da.random.random((20000, 20000), chunks=(100, 100))
    recommender = engine.recommender
    rows = []
    have = len(profiler)
    for n in RECORDS:
        pad(profiler, n - have)
        have = n
        recommender.recommend(profiler, full.shape, 8)  # warm-up
        direct = best_of(lambda: recommender.recommend(profiler, full.shape, 8))
        via_engine = best_of(lambda: engine.recommend(full, ids))
        rows.append({"records": n, "recorded": len(profiler),
                     "recommender_ms": direct * 1e3, "engine_ms": via_engine * 1e3})
        print(rows[-1], flush=True)
    engine.close()
    md = ["# Cost of a recommendation", "",
          f"`python benchmarks/bench_recommend_cost.py` on {machine()['cpus']} CPUs, "
          f"dask {machine()['dask']}. Best of 200 calls; target: under 1 ms with "
          "100,000 records.", "",
          "| chunk records in the profile | `ChunkSizeRecommender.recommend` | "
          "`engine.recommend(array, pilots)` |", "|---|---|---|"]
    md += [f"| {r['records']:,} | {r['recommender_ms']:.3f} ms | {r['engine_ms']:.3f} ms |"
           for r in rows]
    write("recommend-cost", {"machine": machine(), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
