"""Recommendations from history alone, and auto-rechunk, against the oracle.

For each workload of ``workloads.py`` and each setting (threaded; threaded with a
600 MiB memory limit), every step in a fresh Python process sharing one history
file per workload and setting:

1. two earlier runs: the workload at two smaller sizes, each profiled at its own
   chunking (1000 x 1000 at 100 x 100 chunks, then 2000 x 2000 at 250 x 250) and
   stored in the history, as a user's earlier sessions would;
2. history only: a new process builds the full size (starting at 100 x 100 chunks)
   and asks ``engine.recommend(x, workload=expression)`` with no pilot and no
   profile of it; the recommended chunks are timed;
3. auto-rechunk: a new process with ``auto-rechunk`` on builds the full size with
   ``chunks="auto"``: Dask's own auto-chunking, given the history's byte target;
4. the oracle: the fastest point of ``bench_recommend``'s grid (Dask's auto-chunking
   at 1..128 MiB targets; in the budget setting the fastest within the limit),
   timed again now, alternating with steps 2 and 3, so that all three share the
   machine's state; Dask's default (128 MiB) is timed too.

Each timing is the median of ``--repeats`` computes after one untimed compute.
The grid comes from ``results/recommend-grid.json`` (run ``bench_recommend.py``
first). Run: ``python benchmarks/bench_history.py`` (about 10 minutes on 2 cores);
writes ``benchmarks/results/history.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from _util import RESULTS, in_fresh_process, machine, write
from bench_recommend import LIMIT_BYTES, SETTINGS, _gmean, _median, _peak
from workloads import WORKLOADS, MiB

EARLIER_RUNS = [((1000, 1000), (100, 100)), ((2000, 2000), (250, 250))]
START_CHUNKS = (100, 100)
TARGET = 1.15  # the bound: within 15% of the oracle's time


def child(spec: dict) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    return in_fresh_process(__file__, spec)


def run_child(spec: dict) -> dict:
    import logging
    import warnings

    from _util import use_working_tree

    use_working_tree()
    import dask

    config = {f"array.adaptive-chunking.{k}": v for k, v in spec["config"].items()}
    dask.config.set(config)  # before the engine's module is imported: as a YAML file would
    from workloads import build, run

    from dask.array import adaptive_chunking as ac

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    engine = ac.get_adaptive_engine()
    kind = spec["kind"]
    if kind == "earlier":
        x, y = build(spec["workload"], tuple(spec["chunks"]), tuple(spec["shape"]))
        engine.profile_array(x)
        y.compute(scheduler="threads")
        return {"stored": len(engine.load_history())}
    if kind == "grid":
        return run(spec["workload"], "auto", scheduler="threads", repeats=spec["repeats"],
                   chunk_size=f"{spec['mib']}MiB")
    if kind == "auto":
        out = run(spec["workload"], "auto", scheduler="threads", repeats=spec["repeats"])
        out["chunk_size"] = dask.config.get("array.chunk-size")
        return out
    # kind == "history": no pilot, no profile of this array: the history alone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x0, y0 = build(spec["workload"], START_CHUNKS)
        assert not engine.profile_ids
        rec = engine.recommend(x0, workload=y0)
    del x0, y0
    out = run(spec["workload"], rec.chunks, scheduler="threads", repeats=spec["repeats"],
              chunk_size=rec.array_chunk_size)
    out.update(recommendation=rec.to_dict(),
               warnings=[str(w.message) for w in caught
                         if issubclass(w.category, ac.AdaptiveChunkingWarning)])
    return out


def oracle_mib(grid: dict, name: str, limit: int | None) -> int:
    """The fastest grid point of ``name`` (within ``limit`` when one fits)."""
    points = grid[name]
    fits = {m: r for m, r in points.items() if limit is None or _peak(r) <= limit}
    pool = fits or points
    return int(min(pool, key=lambda m: _median(pool[m])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--settings", default="threads,budget")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return

    grid = json.loads((RESULTS / "recommend-grid.json").read_text())["threads"]
    results = {}
    for setting in args.settings.split(","):
        cfg = SETTINGS[setting]
        limit = LIMIT_BYTES if cfg["memory_limit"] else None
        config = {}
        if cfg["memory_limit"]:
            config.update({"memory-limit": cfg["memory_limit"],
                           "target-memory-percent": cfg["target_percent"]})
        rows = results[setting] = {}
        for name in args.workloads.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                base = {"workload": name, "repeats": args.repeats,
                        "config": dict(config, **{"history-path": f"{tmp}/h.sqlite3"})}
                for shape, chunks in EARLIER_RUNS:
                    child(dict(base, kind="earlier", shape=shape, chunks=chunks))
                best = oracle_mib(grid, name, limit)
                oracle = child(dict(base, kind="grid", mib=best))
                rec = child(dict(base, kind="history"))
                auto = child(dict(base, kind="auto",
                                  config=dict(base["config"], **{"auto-rechunk": True})))
                default = child(dict(base, kind="grid", mib=128))
            rows[name] = row = {
                "oracle_mib": best, "oracle": oracle, "history": rec, "auto": auto,
                "default": default,
                "history_vs_oracle": _median(rec) / _median(oracle),
                "auto_vs_oracle": _median(auto) / _median(oracle),
                "default_vs_oracle": _median(default) / _median(oracle),
                "history_fits": limit is None or _peak(rec) <= limit,
                "auto_fits": limit is None or _peak(auto) <= limit,
                "default_fits": limit is None or _peak(default) <= limit,
            }
            print(f"{setting} {name}: oracle {best} MiB {_median(oracle):.2f}s | history "
                  f"{rec['chunksize']} {_median(rec):.2f}s ({row['history_vs_oracle']:.2f}) "
                  f"| auto {auto['chunksize']} {_median(auto):.2f}s "
                  f"({row['auto_vs_oracle']:.2f}) | default {_median(default):.2f}s",
                  flush=True)
    data = {"machine": machine(), "repeats": args.repeats, "earlier_runs": EARLIER_RUNS,
            "results": results}
    write("history", data, markdown(results, args))


def markdown(results: dict, args) -> str:
    lines = [
        "# Recommendations from history alone, and auto-rechunk",
        "",
        f"`python benchmarks/bench_history.py --repeats {args.repeats}` on "
        f"{machine()['cpus']} CPUs. Each workload's history holds two earlier runs at "
        "smaller sizes (1000x1000 at 100x100 chunks, 2000x2000 at 250x250), each in its "
        "own process. *history*: a new process recommends for the full size with no "
        "pilot (`engine.recommend(x, workload=...)`); *auto*: a new process with "
        "`auto-rechunk` on creates the array with `chunks=\"auto\"`; *oracle*: the "
        "fastest point of the recommender benchmark's grid (within the limit in the "
        "budget setting), re-timed in this run; *default*: Dask's 128 MiB. Times are "
        "medians of the repeats (s), peaks the resident high-water mark (MiB).",
        "",
    ]
    for setting, rows in results.items():
        title = "threads" if setting == "threads" else "budget (memory limit 600 MiB)"
        worst = max(rows, key=lambda n: rows[n]["history_vs_oracle"])
        history_gmean = _gmean(r["history_vs_oracle"] for r in rows.values())
        lines += [
            f"## Setting: {title}",
            "",
            f"History / oracle: geometric mean **{history_gmean:.3f}**, "
            f"worst **{rows[worst]['history_vs_oracle']:.2f}** ({worst}); within "
            f"{TARGET:.2f} on {sum(r['history_vs_oracle'] <= TARGET for r in rows.values())} "
            f"of {len(rows)}. Auto-rechunk / oracle: geometric mean "
            f"**{_gmean(r['auto_vs_oracle'] for r in rows.values()):.3f}**. Default / "
            f"oracle: **{_gmean(r['default_vs_oracle'] for r in rows.values()):.3f}**.",
            "",
            "| workload | oracle (MiB) s | history chunks | history s | history/oracle "
            "| auto chunk-size | auto chunks | auto s | auto/oracle | default s "
            "| history peak | auto peak | default peak |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            h, a, d, o = r["history"], r["auto"], r["default"], r["oracle"]
            size = a["chunk_size"]
            size = f"{size / MiB:.1f} MiB" if isinstance(size, int) else size
            lines.append(
                f"| {name} | {_median(o):.2f} ({r['oracle_mib']}) | {tuple(h['chunksize'])} "
                f"| {_median(h):.2f} | {r['history_vs_oracle']:.2f} | {size} "
                f"| {tuple(a['chunksize'])} | {_median(a):.2f} | {r['auto_vs_oracle']:.2f} "
                f"| {_median(d):.2f} | {_peak(h) / MiB:.0f} | {_peak(a) / MiB:.0f} "
                f"| {_peak(d) / MiB:.0f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
