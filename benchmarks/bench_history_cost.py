"""What history and auto-rechunk cost per profiled compute, by history size.

A small profiled compute (``(x + 1).sum()`` on 400 x 400 in 100 x 100 chunks, 16
tasks: small, so that the engine's own work shows) is timed with history on, with
auto-rechunk on as well, and with history off, after the history file was filled
with ``--rows`` stored computes of the same workload. With auto-rechunk on, every
compute stores a row, which changes the history and so makes the engine work out
its byte target again (reading the newest 200 stored computes of the workload and
recommending at up to five sizes). Also timed: ``engine.get_profile`` (its
recommendation pools the stored computes). Medians of ``--repeats`` computes,
each setting in turn.

Run: ``python benchmarks/bench_history_cost.py``; writes
``benchmarks/results/history-cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

from _util import machine, use_working_tree, write


def measure(rows: int, repeats: int) -> dict:
    import dask
    import dask.array as da
    from dask.array import adaptive_chunking as ac
    from dask.array._adaptive_chunking import config, history
    from dask.array._adaptive_chunking.history_service import HistoryService

    ac.reset_adaptive_engine()
    prefix = "array.adaptive-chunking"
    dask.config.set({f"{prefix}.history-path": f"{tempfile.mkdtemp()}/h.sqlite3",
                     f"{prefix}.history-max-rows": max(10000, 2 * rows)})
    engine = ac.get_adaptive_engine()
    x = da.random.random((400, 400), chunks=100)
    pid = engine.profile_array(x)
    (x + 1).sum().compute()
    (row,) = engine.load_history()
    obs = history.observation_from_json(row["data"]["observation"])
    HistoryService().store(config.snapshot()).add_many([
        dict(row, created=float(i), data={
            "observation": history.observation_to_json(
                dataclasses.replace(obs, n_tasks=obs.n_tasks + i % 5)),
            "profile": "earlier"})
        for i in range(rows)
    ])

    def timed(**settings) -> float:
        times = []
        with dask.config.set({f"{prefix}.{k}": v for k, v in settings.items()}):
            for _ in range(repeats):
                start = time.perf_counter()
                (x + 1).sum().compute()
                times.append(time.perf_counter() - start)
        ac.get_adaptive_engine()  # gives array.chunk-size back after auto-rechunk
        return statistics.median(times) * 1e3

    out = {"rows": rows}
    out["history_off_ms"] = timed(history=False)
    out["history_on_ms"] = timed()
    out["auto_rechunk_ms"] = timed(**{"auto-rechunk": True})
    out["history_off_again_ms"] = timed(history=False)
    start = time.perf_counter()
    engine.get_profile(pid)
    out["get_profile_ms"] = (time.perf_counter() - start) * 1e3
    ac.reset_adaptive_engine()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="0,100,1000,4000,10000")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    use_working_tree()
    results = []
    for rows in map(int, args.rows.split(",")):
        results.append(r := measure(rows, args.repeats))
        print(r, flush=True)
    lines = [
        "# What history and auto-rechunk cost per profiled compute",
        "",
        f"`python benchmarks/bench_history_cost.py --repeats {args.repeats}` on "
        f"{machine()['cpus']} CPUs. A 16-task profiled compute (`(x + 1).sum()`, 400 x 400 "
        "in 100 x 100 chunks), median wall time in ms, with the history file holding "
        "*rows* stored computes of the same workload.",
        "",
        "| rows | history off | history on | + auto-rechunk | history off again "
        "| get_profile |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['history_off_ms']:.1f} | {r['history_on_ms']:.1f} "
            f"| {r['auto_rechunk_ms']:.1f} | {r['history_off_again_ms']:.1f} "
            f"| {r['get_profile_ms']:.1f} |"
        )
    write("history-cost", {"machine": machine(), "repeats": args.repeats,
                           "results": results}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
