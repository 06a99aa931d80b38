"""Recommended chunks against dask's auto chunks, the best fixed target and an oracle.

For each workload of ``workloads.py`` and each setting (threaded, threaded with a
600 MiB memory limit, synchronous) this measures, every run in a fresh process and
each the median of ``--repeats`` computes:

- the grid: square chunks from Dask's own auto-chunking at byte targets
  1, 2, 4, ..., 128 MiB (``array.chunk-size``; 128 MiB is Dask's default, so the
  128 MiB point *is* ``chunks="auto"``);
- the oracle: the fastest grid point (in the budget setting, the fastest whose peak
  stays inside the limit);
- the best fixed target: the one grid size with the best geometric-mean ratio to the
  oracle across the workloads;
- the recommendation: a pilot (the same expression on a 1000 x 1000 instance,
  profiled at 100 x 100 and at 250 x 250 chunks: two sizes separate a task's fixed
  cost from its cost per byte) recommends chunks for the full array that starts at
  100 x 100 (``engine.recommend(x, pilot_ids, workload=expression)``), which is
  then built with them and timed. The pilot's cost (both pilot computes and the
  recommendation) is recorded.

The grid is the same computation in the threaded and budget settings (the limit
only changes what the recommender is told), so it is run once for both.

Run: ``python benchmarks/bench_recommend.py`` (about 25 minutes on 2 cores); writes
``benchmarks/results/recommend.{json,md}``. ``--reuse-grid`` keeps the grid points
of the last run (``results/recommend-grid.json``; an interrupted grid resumes) and
re-measures the recommendations.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from _util import RESULTS, in_fresh_process, machine, write
from workloads import WORKLOADS, MiB

GRID_MIB = [1, 2, 4, 8, 16, 32, 64, 128]
PILOT_SHAPE = (1000, 1000)
PILOT_CHUNKS = [(100, 100), (250, 250)]
START_CHUNKS = (100, 100)
LIMIT = "600MiB"
LIMIT_BYTES = 600 * MiB
#: In the budget setting the 600 MiB limit is the compute's own hard ceiling, so the
#: recommender may aim at all of it (target-memory-percent 100) with the default 20%
#: safety margin; with the default 50% target it would aim at 240 MiB.
SETTINGS = {
    "threads": {"scheduler": "threads", "memory_limit": None},
    "budget": {"scheduler": "threads", "memory_limit": LIMIT, "target_percent": 100},
    "sync": {"scheduler": "sync", "memory_limit": None},
}


def child(spec: dict) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    return in_fresh_process(__file__, spec)


def run_child(spec: dict) -> dict:
    """Inside the fresh process: one grid point or one pilot + recommended run."""
    import warnings

    from _util import use_working_tree

    use_working_tree()
    import time

    from workloads import build, run

    import dask

    if spec["kind"] == "grid":
        return run(spec["workload"], "auto", scheduler=spec["scheduler"],
                   repeats=spec["repeats"], chunk_size=f"{spec['mib']}MiB")

    from dask.array import adaptive_chunking as ac

    # Only the pilots are evidence: a history left by other runs must not count.
    config = {"array.adaptive-chunking.history": False}
    if spec["memory_limit"]:
        config["array.adaptive-chunking.memory-limit"] = spec["memory_limit"]
    if spec.get("target_percent"):
        config["array.adaptive-chunking.target-memory-percent"] = spec["target_percent"]
    with dask.config.set(config), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Warm up the thread pool and code paths as run() does for every timed run,
        # so that the pilot's cost is comparable with the runs it is compared with.
        build(spec["workload"], (100, 100), (200, 200))[1].compute(scheduler=spec["scheduler"])
        engine = ac.get_adaptive_engine()
        start = time.perf_counter()
        pids = []
        for chunks in PILOT_CHUNKS:
            xp, yp = build(spec["workload"], chunks, PILOT_SHAPE)
            pids.append(engine.profile_array(xp))
            yp.compute(scheduler=spec["scheduler"])
        pilot_s = time.perf_counter() - start
        # The user's starting point: the full workload at 100 x 100 chunks (built, not
        # computed; Dask's cost of building it is not counted as pilot cost).
        x0, y0 = build(spec["workload"], START_CHUNKS)
        start = time.perf_counter()
        rec = engine.recommend(x0, pids, workload=y0)
        pilot_s += time.perf_counter() - start
        del x0, y0, xp, yp
        out = run(spec["workload"], rec.chunks, scheduler=spec["scheduler"],
                  repeats=spec["repeats"], chunk_size=rec.array_chunk_size)
    out.update(
        pilot_s=pilot_s,
        recommendation=rec.to_dict(),
        warnings=[str(w.message) for w in caught
                  if issubclass(w.category, ac.AdaptiveChunkingWarning)],
    )
    return out


def _median(r: dict) -> float:
    return statistics.median(r["times"])


def _peak(r: dict) -> float:
    return statistics.median(r["peaks"])


def _gmean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def measure_grid(grid: dict, workloads, repeats, schedulers, path: Path) -> dict:
    """Fill in the grid points ``grid`` lacks, saving after each one."""
    for sched in schedulers:
        for name in workloads:
            for mib in GRID_MIB:
                points = grid.setdefault(sched, {}).setdefault(name, {})
                if str(mib) in points:
                    continue
                spec = {"kind": "grid", "workload": name, "mib": mib,
                        "scheduler": sched, "repeats": repeats}
                points[str(mib)] = r = child(spec)
                path.write_text(json.dumps(grid, indent=1) + "\n")
                print(f"grid {sched} {name} {mib:>3} MiB {r['chunksize']} "
                      f"{_median(r):.2f}s {_peak(r) / MiB:.0f} MiB", flush=True)
    return grid


def analyse(setting, grid, recs, limit, fixed=None) -> dict:
    """Oracle, fixed target and ratios of one setting.

    The fixed target is the grid size with the best geometric-mean ratio to the
    oracle across the workloads; pass ``fixed`` to use the one chosen in another
    setting (a user sets ``array.chunk-size`` once).
    """
    names = list(recs)
    oracle = {}
    for name in names:
        points = grid[name]
        fits = {m: r for m, r in points.items() if limit is None or _peak(r) <= limit}
        pool = fits or points
        best = min(pool, key=lambda m: _median(pool[m]))
        oracle[name] = {"mib": int(best), "time": _median(pool[best]),
                        "peak": _peak(pool[best]), "fits": bool(fits)}

    def ratio_of(mib):
        return {n: _median(grid[n][str(mib)]) / oracle[n]["time"] for n in names}

    if fixed is None:
        fixed = min(GRID_MIB, key=lambda m: _gmean(ratio_of(m).values()))
    rows = {}
    for name in names:
        rec, auto, fx = recs[name], grid[name]["128"], grid[name][str(fixed)]
        rows[name] = {
            "oracle": oracle[name],
            "recommended": {"time": _median(rec), "peak": _peak(rec),
                            "chunksize": rec["chunksize"], "chunk_mib": rec["chunk_mib"],
                            "predicted_peak": rec["recommendation"]["predicted_peak_memory_mb"]
                            * MiB,
                            "binding": rec["recommendation"]["binding_constraint"],
                            "pilot_s": rec["pilot_s"], "warnings": rec["warnings"],
                            "times": rec["times"], "peaks": rec["peaks"],
                            "recommendation": rec["recommendation"]},
            "auto": {"time": _median(auto), "peak": _peak(auto), "chunksize": auto["chunksize"]},
            "fixed": {"time": _median(fx), "peak": _peak(fx), "chunksize": fx["chunksize"],
                      "fits": limit is None or _peak(fx) <= limit},
        }
        r = rows[name]
        r["rec_vs_oracle"] = r["recommended"]["time"] / oracle[name]["time"]
        r["rec_vs_fixed"] = r["recommended"]["time"] / r["fixed"]["time"]
        r["rec_vs_auto"] = r["recommended"]["time"] / r["auto"]["time"]
        r["peak_error"] = (r["recommended"]["predicted_peak"] / r["recommended"]["peak"]) - 1
        r["pilot_plus_rec_vs_auto"] = (
            (r["recommended"]["pilot_s"] + r["recommended"]["time"]) / r["auto"]["time"]
        )
    for r in rows.values():
        r["rec_fits"] = limit is None or r["recommended"]["peak"] <= limit
    return {"setting": setting, "fixed_mib": fixed, "limit": limit, "rows": rows,
            "gmean_rec_vs_oracle": _gmean(r["rec_vs_oracle"] for r in rows.values()),
            "gmean_rec_vs_fixed": _gmean(r["rec_vs_fixed"] for r in rows.values())}


def verdicts(results: list[dict]) -> list[tuple[str, bool, str]]:
    """The issue's targets, each with whether it is met and the numbers behind it."""
    out = []
    for res in results:
        rows, name = res["rows"], res["setting"]
        worst = max(rows, key=lambda n: rows[n]["rec_vs_oracle"])
        out.append((f"{name}: recommended <= 1.15 x oracle on every workload",
                    rows[worst]["rec_vs_oracle"] <= 1.15,
                    f"worst {worst} {rows[worst]['rec_vs_oracle']:.2f}"))
        out.append((f"{name}: geometric mean <= 1.10 x oracle",
                    res["gmean_rec_vs_oracle"] <= 1.10, f"{res['gmean_rec_vs_oracle']:.3f}"))
        # Slower than the fixed target counts as worse unless the fixed target broke
        # the memory limit and the recommendation did not.
        worse = {n: r["rec_vs_fixed"] for n, r in rows.items()
                 if r["rec_vs_fixed"] > 1.05 and not (r["rec_fits"] and not r["fixed"]["fits"])}
        excused = [n for n, r in rows.items()
                   if r["rec_vs_fixed"] > 1.05 and n not in worse]
        out.append((f"{name}: never more than 5% worse than the fixed {res['fixed_mib']} MiB",
                    not worse,
                    (", ".join(f"{n} {v:.2f}" for n, v in worse.items()) or "none worse")
                    + (f"; slower but inside the limit the fixed target breaks: "
                       f"{', '.join(excused)}" if excused else "")))
        if name != "threads":
            better = [n for n, r in rows.items()
                      if r["rec_vs_fixed"] < 1 or (r["rec_fits"] and not r["fixed"]["fits"])]
            out.append((f"{name}: better than the fixed target (faster, or inside the limit "
                        "where it is not)", res["gmean_rec_vs_fixed"] < 1,
                        f"geometric mean {res['gmean_rec_vs_fixed']:.3f}; better on "
                        f"{', '.join(better) or 'none'}"))
        if res["limit"]:
            bad = [n for n, r in rows.items()
                   if (r["oracle"]["fits"] and not r["rec_fits"])
                   or (not r["oracle"]["fits"] and not r["recommended"]["warnings"])]
            out.append((f"{name}: peak within the limit wherever a grid point fits, a "
                        "warning where none does", not bad,
                        f"failing: {', '.join(bad) or 'none'}"))
        off = {n: r["peak_error"] for n, r in rows.items() if abs(r["peak_error"]) > 0.20}
        out.append((f"{name}: predicted peak within 20% of measured", not off,
                    ", ".join(f"{n} {e:+.0%}" for n, e in off.items()) or "all"))
        cheap = [n for n, r in rows.items() if r["pilot_plus_rec_vs_auto"] < 1]
        out.append((f"{name}: pilot + recommended run < one run with auto chunks on >= 4 of 6",
                    len(cheap) >= 4, f"{len(cheap)}: {', '.join(cheap)}"))
    return out


def _mib(b) -> str:
    return f"{b / MiB:.0f}"


def markdown(results: list[dict], args) -> str:
    lines = [
        "# Recommended chunks vs auto, the best fixed target and the oracle",
        "",
        f"`python benchmarks/bench_recommend.py --repeats {args.repeats}` on "
        f"{machine()['cpus']} CPUs, dask {machine()['dask']}, numpy {machine()['numpy']}. "
        "Times are the median of "
        f"{args.repeats} computes in a fresh process, after one untimed run of the same "
        "compute; peak is the process's resident "
        "high-water mark during the compute (MiB). In the budget setting the "
        "recommender is told `memory-limit: 600MiB` and `target-memory-percent: 100` "
        "(the limit is the compute's own ceiling; the default 0.8 safety factor "
        "stays), and the oracle is the fastest grid point whose peak is within "
        "600 MiB. The pilot profiles the same expression "
        f"on a {PILOT_SHAPE[0]}x{PILOT_SHAPE[1]} instance at "
        + " and ".join(f"{c[0]}x{c[1]}" for c in PILOT_CHUNKS)
        + " chunks and recommends for the full array, which starts at "
        f"{START_CHUNKS[0]}x{START_CHUNKS[1]}; the recommended run sets "
        "`array.chunk-size` to the recommendation's `array_chunk_size` (so that the "
        "`\"auto\"` rechunk of W4 agrees).",
        "",
    ]
    for res in results:
        limit = res["limit"]
        lines += [
            f"## Setting: {res['setting']}"
            + (f" (memory limit {_mib(limit)} MiB)" if limit else ""),
            "",
            f"Fixed target (the best on average in the threaded setting): "
            f"**{res['fixed_mib']} MiB**. Geometric mean of recommended / oracle: "
            f"**{res['gmean_rec_vs_oracle']:.3f}**; of recommended / fixed: "
            f"**{res['gmean_rec_vs_fixed']:.3f}**.",
            "",
            "| workload | recommended chunks | rec s | oracle (MiB) s | fixed s | auto s "
            "| rec/oracle | rec/fixed | rec/auto | rec peak | predicted peak | error "
            "| auto peak | fixed peak | pilot s | (pilot+rec)/auto | binding |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in res["rows"].items():
            rec = r["recommended"]
            o = r["oracle"]
            lines.append(
                f"| {name} | {tuple(rec['chunksize'])} | {rec['time']:.2f} "
                f"| {o['time']:.2f} ({o['mib']}{'' if o['fits'] else ', none fits'}) "
                f"| {r['fixed']['time']:.2f} | {r['auto']['time']:.2f} "
                f"| {r['rec_vs_oracle']:.2f} | {r['rec_vs_fixed']:.2f} | {r['rec_vs_auto']:.2f} "
                f"| {_mib(rec['peak'])} | {_mib(rec['predicted_peak'])} "
                f"| {r['peak_error']:+.0%} | {_mib(r['auto']['peak'])} "
                f"| {_mib(r['fixed']['peak'])} | {rec['pilot_s']:.2f} "
                f"| {r['pilot_plus_rec_vs_auto']:.2f} | {rec['binding']} |"
            )
        warned = {n: r["recommended"]["warnings"] for n, r in res["rows"].items()
                  if r["recommended"]["warnings"]}
        if warned:
            lines += ["", "Warnings:"]
            lines += [f"- {n}: {w[0]}" for n, w in warned.items()]
        lines.append("")
    lines += ["## Targets", "", "| target | met | numbers |", "|---|---|---|"]
    lines += [f"| {t} | {'yes' if ok else '**no**'} | {why} |" for t, ok, why in verdicts(results)]
    lines += ["", "Workloads:", ""]
    lines += [f"- {n}: `{d}` on {s[0]}x{s[1]}" for n, (s, _, d) in WORKLOADS.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--reuse-grid", action="store_true")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return

    names = args.workloads.split(",")
    settings = args.settings.split(",")
    grid_file = RESULTS / "recommend-grid.json"
    schedulers = sorted({SETTINGS[s]["scheduler"] for s in settings})
    RESULTS.mkdir(parents=True, exist_ok=True)
    grid = json.loads(grid_file.read_text()) if args.reuse_grid and grid_file.exists() else {}
    measure_grid(grid, names, args.repeats, schedulers, grid_file)

    results = []
    for setting in settings:
        cfg = SETTINGS[setting]
        recs = {}
        for name in names:
            spec = {"kind": "recommended", "workload": name, "repeats": args.repeats, **cfg}
            recs[name] = r = child(spec)
            print(f"rec {setting} {name} {r['chunksize']} {_median(r):.2f}s "
                  f"{_peak(r) / MiB:.0f} MiB (predicted "
                  f"{r['recommendation']['predicted_peak_memory_mb']:.0f}) "
                  f"pilot {r['pilot_s']:.2f}s {r['recommendation']['binding_constraint']}",
                  flush=True)
        limit = LIMIT_BYTES if cfg["memory_limit"] else None
        fixed = results[0]["fixed_mib"] if results else None  # chosen once, threaded
        results.append(analyse(setting, grid[cfg["scheduler"]], recs, limit, fixed))
    data = {"machine": machine(), "repeats": args.repeats, "grid_mib": GRID_MIB,
            "pilot_shape": PILOT_SHAPE, "results": results, "grid": grid}
    write("recommend", data, markdown(results, args))


if __name__ == "__main__":
    main()
