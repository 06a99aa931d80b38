"""Recommended chunks and worker saturation on a 2-worker ``dask.distributed`` cluster.

The workloads of ``workloads.py`` on a ``LocalCluster(n_workers=2,
threads_per_worker=1, processes=True, memory_limit=2GiB)``, one fresh cluster (in a
fresh process) per workload. For each it measures, each the median of
``--repeats`` computes after one untimed compute:

- the grid: square chunks from Dask's auto-chunking at byte targets 1, 2, ..., 128
  MiB (``array.chunk-size``; 128 MiB is ``chunks="auto"``) with the scheduler's
  default ``worker-saturation`` (1.1);
- the oracle: the fastest grid point whose worker peak stays within the
  recommender's budget (2 GiB x 50% x 0.8 = 819 MiB per worker);
- the recommendation: a pilot on the cluster (the expression on 1000 x 1000 at
  100 x 100 and 250 x 250 chunks) recommends chunks for the full array and a
  ``worker-saturation``; the recommended chunks are timed with the default
  saturation, with queuing off (``inf``) and with the recommended saturation
  (set on the running scheduler with ``engine.apply_scheduler_config``);
- the ordering at small chunks: the 8 MiB grid point again with queuing off, the
  case where root tasks outrun their consumers the most.

Peak is the largest resident high-water mark of the two worker processes during
the compute (reset before each). Run: ``python benchmarks/bench_distributed.py``
(about 15 minutes on 2 cores); writes ``benchmarks/results/distributed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _util import RESULTS, ROOT, machine, write
from workloads import WORKLOADS, MiB

GRID_MIB = [1, 2, 4, 8, 16, 32, 64, 128]
PILOT_SHAPE = (1000, 1000)
PILOT_CHUNKS = [(100, 100), (250, 250)]
START_CHUNKS = (100, 100)
WORKER_LIMIT = "2GiB"
DEFAULT_SATURATION = 1.1
KEY = "distributed.scheduler.worker-saturation"


# Run in the workers through client.run: defined here (this script is pickled by
# value) rather than imported from workloads.py, which worker processes may not find.
def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _read_hwm() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(client, y, repeats: int) -> dict:
    """Wall times and worker peaks of ``repeats`` computes of ``y``, after one untimed."""
    import gc

    y.compute()
    times, peaks = [], []
    for _ in range(repeats):
        gc.collect()
        client.run(_reset_hwm)
        start = time.perf_counter()
        y.compute()
        times.append(time.perf_counter() - start)
        peaks.append(max(client.run(_read_hwm).values()))
    return {"times": times, "peaks": peaks,
            "time": statistics.median(times), "peak": statistics.median(peaks)}


def run_workload(name: str, repeats: int) -> dict:
    """Inside a fresh process: everything measured for one workload on a fresh cluster."""
    import warnings

    from _util import use_working_tree

    use_working_tree()
    import distributed
    from workloads import build

    import dask

    with dask.config.set({KEY: DEFAULT_SATURATION}), distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit=WORKER_LIMIT,
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:
        from dask.array import adaptive_chunking as ac

        def chunked(chunks, chunk_size):
            with dask.config.set({"array.chunk-size": chunk_size}):
                x, y = build(name, chunks)
            return x, y

        out: dict = {"grid": {}}
        for mib in GRID_MIB:
            x, y = chunked("auto", f"{mib}MiB")
            out["grid"][str(mib)] = dict(timed(client, y, repeats), chunksize=list(x.chunksize))
            print(f"{name} grid {mib:>3} MiB {x.chunksize} {out['grid'][str(mib)]['time']:.2f}s "
                  f"{out['grid'][str(mib)]['peak'] / MiB:.0f} MiB", file=sys.stderr, flush=True)
        engine = ac.get_adaptive_engine()
        x, y = chunked("auto", "8MiB")
        engine.apply_scheduler_config({KEY: "inf"})
        out["small_unqueued"] = dict(timed(client, y, repeats), chunksize=list(x.chunksize))
        engine.apply_scheduler_config({KEY: DEFAULT_SATURATION})

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build(name, (100, 100), (200, 200))[1].compute()  # warm the code paths
            start = time.perf_counter()
            pids = []
            for chunks in PILOT_CHUNKS:
                xp, yp = build(name, chunks, PILOT_SHAPE)
                pids.append(engine.profile_array(xp))
                yp.compute()
            x0, y0 = build(name, START_CHUNKS)
            rec = engine.recommend(x0, pids, workload=y0)
            pilot_s = time.perf_counter() - start
        for pid in pids:
            engine.remove_profile(pid)
        ac.reset_adaptive_engine()  # the timed runs are not profiled
        x, y = chunked(rec.chunks, rec.array_chunk_size)
        recommended = rec.scheduler_config[KEY]
        runs = {}
        for label, value in (("default", DEFAULT_SATURATION), ("unqueued", "inf"),
                             ("recommended", recommended)):
            ac.get_adaptive_engine().apply_scheduler_config({KEY: value})
            runs[label] = dict(timed(client, y, repeats), saturation=value)
            print(f"{name} rec {rec.chunks} saturation {value}: {runs[label]['time']:.2f}s "
                  f"{runs[label]['peak'] / MiB:.0f} MiB", file=sys.stderr, flush=True)
        ac.reset_adaptive_engine()
        out.update(
            recommended=dict(runs, chunksize=list(x.chunksize), pilot_s=pilot_s,
                             recommendation=rec.to_dict(),
                             warnings=[str(w.message) for w in caught
                                       if issubclass(w.category, ac.AdaptiveChunkingWarning)]),
            budget=rec.memory_budget_bytes,
        )
    return out


def child(name: str, repeats: int, ordering: bool = False) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", name,
         "--repeats", str(repeats)] + (["--ordering", name] if ordering else []),
        capture_output=True, text=True, cwd=ROOT,
    )
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines()
                             if line.startswith(name)))
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gmean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def analyse(results: dict) -> dict:
    rows = {}
    for name, r in results.items():
        budget = r["budget"]
        grid = r["grid"]
        fits = {m: g for m, g in grid.items() if g["peak"] <= budget}
        pool = fits or grid
        best = min(pool, key=lambda m: pool[m]["time"])
        rec = r["recommended"]
        chosen = rec["recommended"]
        rows[name] = {
            "oracle_mib": int(best), "oracle": pool[best], "oracle_fits": bool(fits),
            "auto": grid["128"], "rec": rec, "budget": budget,
            "rec_vs_oracle": chosen["time"] / pool[best]["time"],
            "rec_vs_auto": chosen["time"] / grid["128"]["time"],
            "rec_fits": chosen["peak"] <= budget,
            "peak_error": rec["recommendation"]["predicted_peak_memory_mb"] * MiB
            / chosen["peak"] - 1,
        }
    return {"rows": rows,
            "gmean_rec_vs_oracle": _gmean(r["rec_vs_oracle"] for r in rows.values()),
            "gmean_rec_vs_auto": _gmean(r["rec_vs_auto"] for r in rows.values())}


def _mib(b) -> str:
    return f"{b / MiB:.0f}"


def markdown(res: dict, args) -> str:
    import distributed

    m = machine()
    lines = [
        "# On a 2-worker dask.distributed cluster",
        "",
        f"`python benchmarks/bench_distributed.py --repeats {args.repeats}` on {m['cpus']} "
        f"CPUs, dask {m['dask']}, distributed {distributed.__version__}. "
        "`LocalCluster(n_workers=2, threads_per_worker=1, processes=True, "
        f"memory_limit={WORKER_LIMIT!r})`, a fresh one per workload. Times are the "
        f"median of {args.repeats} computes after one untimed compute; peaks are the "
        "largest worker's resident high-water mark (MiB). The budget is the "
        "recommender's, per worker: 2 GiB x 50% x 0.8 = 819 MiB. The oracle is the "
        "fastest grid point (1-128 MiB, default saturation 1.1) within it. Recommended "
        "chunks come from a pilot on the cluster (1000x1000 at 100x100 and 250x250).",
        "",
        f"Geometric mean of recommended / oracle: **{res['gmean_rec_vs_oracle']:.3f}**; "
        f"of recommended / auto: **{res['gmean_rec_vs_auto']:.3f}**.",
        "",
        "| workload | recommended chunks | rec s | oracle s (MiB) | auto s | rec/oracle "
        "| rec/auto | rec peak | predicted peak | auto peak | oracle peak | pilot s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        rec = r["rec"]
        chosen = rec["recommended"]
        lines.append(
            f"| {name} | {tuple(rec['chunksize'])} | {chosen['time']:.2f} "
            f"| {r['oracle']['time']:.2f} ({r['oracle_mib']}"
            f"{'' if r['oracle_fits'] else ', none fits'}) | {r['auto']['time']:.2f} "
            f"| {r['rec_vs_oracle']:.2f} | {r['rec_vs_auto']:.2f} | {_mib(chosen['peak'])} "
            f"| {rec['recommendation']['predicted_peak_memory_mb']:.0f} "
            f"| {_mib(r['auto']['peak'])} | {_mib(r['oracle']['peak'])} "
            f"| {rec['pilot_s']:.2f} |"
        )
    lines += [
        "",
        "## Task ordering: worker saturation",
        "",
        "The recommended chunks run with the scheduler's default saturation (1.1), with "
        "queuing off (`inf`) and with the recommended value; then the 8 MiB grid point "
        "with queuing off, against its default-saturation row above. Time s / worker "
        "peak MiB.",
        "",
        "| workload | recommended saturation | default 1.1 | inf | recommended "
        "| 8 MiB at 1.1 | 8 MiB at inf | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        rec = r["rec"]
        cells = [f"{rec[k]['time']:.2f} / {_mib(rec[k]['peak'])}"
                 for k in ("default", "unqueued", "recommended")]
        small = r.get("small"), r.get("small_unqueued")
        lines.append(
            f"| {name} | {rec['recommended']['saturation']} | " + " | ".join(cells)
            + f" | {small[0]['time']:.2f} / {_mib(small[0]['peak'])}"
            f" | {small[1]['time']:.2f} / {_mib(small[1]['peak'])}"
            f" | {rec['recommendation']['scheduler_reason']} |"
        )
    warned = {n: r["rec"]["warnings"] for n, r in res["rows"].items() if r["rec"]["warnings"]}
    if warned:
        lines += ["", "Warnings:"] + [f"- {n}: {w[0]}" for n, w in warned.items()]
    lines += ["", "Workloads:", ""]
    lines += [f"- {n}: `{d}` on {s[0]}x{s[1]}" for n, (s, _, d) in WORKLOADS.items()
              if n in res["rows"]]
    return "\n".join(lines) + "\n"


ORDERING_LIMIT = "640MiB"  # a budget of 640 MiB x 50% x 0.8 = 256 MiB per worker
ORDERING_MIB = 8


def ordering(name: str, repeats: int) -> dict:
    """Inside a fresh process: one fixed chunking at three saturations, on a tight budget.

    A pilot on the cluster, then ``engine.predict`` for the full array at the
    ``ORDERING_MIB`` grid chunks with ``memory-limit`` ``ORDERING_LIMIT`` gives the
    recommended ``worker-saturation`` for those chunks; the compute is timed with
    distributed's default (1.1), with queuing off and with the recommended value.
    """
    from _util import use_working_tree

    use_working_tree()
    import distributed
    from workloads import build

    import dask

    with dask.config.set({KEY: DEFAULT_SATURATION}), distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit=WORKER_LIMIT,
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:
        from dask.array import adaptive_chunking as ac

        engine = ac.get_adaptive_engine()
        build(name, (100, 100), (200, 200))[1].compute()
        pids = []
        for chunks in PILOT_CHUNKS:
            xp, yp = build(name, chunks, PILOT_SHAPE)
            pids.append(engine.profile_array(xp))
            yp.compute()
        with dask.config.set({"array.chunk-size": f"{ORDERING_MIB}MiB"}):
            x, y = build(name, "auto")
        with dask.config.set({"array.adaptive-chunking.memory-limit": ORDERING_LIMIT}):
            pred = engine.predict(x, x.chunks, pids)
        recommended = pred["scheduler_config"][KEY]
        ac.reset_adaptive_engine()
        runs = {}
        for label, value in (("default", DEFAULT_SATURATION), ("unqueued", "inf"),
                             ("recommended", recommended)):
            ac.get_adaptive_engine().apply_scheduler_config({KEY: value})
            runs[label] = dict(timed(client, y, repeats), saturation=value)
            print(f"{name} ordering {x.chunksize} saturation {value}: "
                  f"{runs[label]['time']:.2f}s {runs[label]['peak'] / MiB:.0f} MiB",
                  file=sys.stderr, flush=True)
        ac.reset_adaptive_engine()
    return {"chunksize": list(x.chunksize), "prediction": pred, "runs": runs}


def overhead(pairs: int) -> dict:
    """Profiled against unprofiled computes of ``bench_overhead``'s workload on the cluster.

    Each pair runs both, in alternating order; the profiled time includes reading
    the profile (which drains the records from the scheduler).
    """
    import gc

    from _util import use_working_tree

    use_working_tree()
    import distributed

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit=WORKER_LIMIT,
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster):
        import dask.array as da
        from dask.array import adaptive_chunking as ac

        x = da.random.random((12500, 40000), chunks=(250, 500))
        y = (x + 1).sum()
        tasks = len(y.__dask_graph__())

        def plain() -> float:
            ac.reset_adaptive_engine()
            gc.collect()
            start = time.perf_counter()
            y.compute()
            return time.perf_counter() - start

        def profiled() -> float:
            engine = ac.get_adaptive_engine()
            pid = engine.profile_array(x)
            gc.collect()
            start = time.perf_counter()
            y.compute()
            profile = engine.get_profile(pid)
            elapsed = time.perf_counter() - start
            assert profile["status"] == "complete", profile["status"]
            ac.reset_adaptive_engine()
            return elapsed

        plain(), profiled()  # warm up both paths
        rows = []
        for i in range(pairs):
            if i % 2:
                b, a = profiled(), plain()
            else:
                a, b = plain(), profiled()
            rows.append((a, b))
            print(f"pair {i}: {a:.2f}s {b:.2f}s {b / a:.3f}", file=sys.stderr, flush=True)
    ratios = [b / a for a, b in rows]
    return {"tasks": tasks, "pairs": rows, "median_ratio": statistics.median(ratios),
            "median_plain": statistics.median(a for a, _ in rows),
            "median_profiled": statistics.median(b for _, b in rows)}


def ordering_markdown(res: dict, args) -> str:
    lines = [
        "# Task ordering on a tight budget: worker saturation",
        "",
        f"`python benchmarks/bench_distributed.py --ordering {args.ordering} --repeats "
        f"{args.repeats}`: the cluster of `bench_distributed.py`; the workload at its "
        f"{ORDERING_MIB} MiB grid chunks, with the recommender told "
        f"`memory-limit: {ORDERING_LIMIT}` (a budget of 256 MiB per worker). "
        "`engine.predict(x, x.chunks, pilot_ids)` from the cluster pilot gives the "
        "worker saturation for these chunks; each row is the median of "
        f"{args.repeats} computes: time s / largest worker peak MiB.",
        "",
        "| workload | chunks | recommended saturation | predicted peak queued / unqueued "
        "| default 1.1 | inf | recommended |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        p, runs = r["prediction"], r["runs"]
        cells = [f"{runs[k]['time']:.2f} / {_mib(runs[k]['peak'])}"
                 for k in ("default", "unqueued", "recommended")]
        lines.append(
            f"| {name} | {tuple(r['chunksize'])} | {runs['recommended']['saturation']} "
            f"| {p['predicted_queued_peak_memory_mb']:.0f} / "
            f"{p['predicted_unqueued_peak_memory_mb']:.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--child")
    parser.add_argument("--keep-others", action="store_true",
                        help="keep the last run's results of the workloads not measured")
    parser.add_argument("--ordering", metavar="WORKLOADS",
                        help="the worker-saturation experiment on these workloads instead")
    parser.add_argument("--overhead", type=int, metavar="PAIRS",
                        help="measure profiling overhead on the cluster instead")
    args = parser.parse_args()
    if args.overhead:
        res = overhead(args.overhead)
        import distributed

        md = (
            "# Profiling overhead on a 2-worker dask.distributed cluster\n\n"
            f"`python benchmarks/bench_distributed.py --overhead {args.overhead}`: "
            "`(x + 1).sum()` on `da.random.random((12500, 40000), chunks=(250, 500))` "
            f"({res['tasks']} tasks) on `LocalCluster(n_workers=2, threads_per_worker=1, "
            f"processes=True)`, distributed {distributed.__version__}; pairs of an "
            "unprofiled and a profiled compute (which includes reading the profile) in "
            "alternating order.\n\n"
            f"| measure | value |\n|---|---|\n"
            f"| median unprofiled | {res['median_plain']:.2f} s |\n"
            f"| median profiled | {res['median_profiled']:.2f} s |\n"
            f"| median ratio ({args.overhead} pairs) | {res['median_ratio']:.3f} |\n\n"
            "Pairs (unprofiled s, profiled s): "
            + ", ".join(f"({a:.2f}, {b:.2f})" for a, b in res["pairs"]) + "\n"
        )
        write("distributed-overhead", dict(res, machine=machine()), md)
        return
    if args.child:
        fn = ordering if args.ordering else run_workload
        print(json.dumps(fn(args.child, args.repeats)))
        return
    if args.ordering:
        names = args.ordering.split(",")
        res = {n: child(n, args.repeats, ordering=True) for n in names}
        write("distributed-ordering", {"machine": machine(), "limit": ORDERING_LIMIT,
                                       "results": res}, ordering_markdown(res, args))
        return
    previous = RESULTS / "distributed.json"
    results = (json.loads(previous.read_text())["results"]
               if args.keep_others and previous.exists() else {})
    for name in args.workloads.split(","):
        results[name] = child(name, args.repeats)
    results = {n: results[n] for n in WORKLOADS if n in results}
    res = analyse(results)
    for name, r in res["rows"].items():
        r["small"] = results[name]["grid"]["8"]
        r["small_unqueued"] = results[name]["small_unqueued"]
    import distributed

    info = dict(machine(), distributed=distributed.__version__)
    data = {"machine": info, "repeats": args.repeats, "grid_mib": GRID_MIB,
            "results": results, "analysis": res}
    write("distributed", data, markdown(res, args))


if __name__ == "__main__":
    main()
