"""Are recommendations never worse than doing nothing, on workloads the model was not
tuned on?

For each workload a user's first compute is profiled at the workload's start chunks
(what the user had), then the engine recommends in three ways:

* ``one-shot``: from that one compute (``engine.recommend(x, pid, workload=f)``);
* ``probe``: the same with ``probe=True`` (short computes on samples first);
* ``two-round``: compute at the one-shot chunks, profiled, and recommend again;
* ``three-round``: compute at the two-round chunks (when they moved), profiled, and
  recommend once more: a loop that has settled keeps them.

Every chunking (the start chunks, Dask's ``"auto"``, the three recommendations and
a grid of alternatives) is then timed with the engine off, ``--repeats`` rounds in
which every distinct chunking runs once, in a shuffled order (the machine's noise hits all
of them alike). A chunking's time is its median; the spread is its
interquartile range over the median.

Workloads: Zarr stores on local disk, built here: coarse chunks of 30 MiB and fine
ones of 0.8 MiB reduced along the first axis, a sharded Zarr v3 store (0.8 MiB chunks
in 6 MiB shards) with an anomaly, and the coarse store opened with xarray's
``open_zarr`` (an anomaly of a DataArray); tall-skinny ``qr``, ``svd`` and ``lstsq``;
and an in-memory ``(x + x.T).mean(axis=0)``.

Settings (``--setting``), each in its own results file:

* ``threads``: Dask's threaded scheduler (``trust.{json,md}``);
* ``sync``: the synchronous scheduler (``trust-sync``);
* ``budget``: threaded, with ``memory-limit`` 1 GiB and ``target-memory-percent``
  100, so the budget is 819 MiB, and a recommendation must fit the limit where some
  grid point does (``trust-budget``);
* ``distributed``: a ``LocalCluster(n_workers=2, threads_per_worker=1,
  processes=True, memory_limit="2GiB")``, profiled through the cluster; peak is the
  larger of the two workers' high-water marks (``trust-distributed``).

A chunking's peak is the process's resident high-water mark in one more compute
after the timed ones, started from the memory in use: the C allocator's free heap
is handed back first (``malloc_trim``), so the peak is not what the chunking timed
before it left resident.

Run alone on a quiet machine::

    python benchmarks/bench_trust.py            # all workloads, 5 rounds
    python benchmarks/bench_trust.py --repeats 3 --only qr
    python benchmarks/bench_trust.py --setting distributed --repeats 3

Results go to ``benchmarks/results/trust[-setting].{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _util import in_fresh_process, machine, use_working_tree, write

MiB = 2**20
LABELS = ("one-shot", "probe", "two-round", "three-round")
SETTINGS = ("threads", "sync", "budget", "distributed")
#: The budget setting's limit, and the cluster's workers.
LIMIT = 2**30
WORKER_LIMIT = "2GiB"


def _zarr_sum(a):
    return a.mean(axis=0)


def _qr(a):
    import dask.array as da

    q, r = da.linalg.qr(a)
    return q.sum(axis=0), r


def _transpose(a):
    return (a + a.T).mean(axis=0)


def _anomaly(a):
    return (a - a.mean(axis=0)).std(axis=0)


def _svd(a):
    import dask.array as da

    u, s, v = da.linalg.svd(a)
    return u.sum(axis=0), s, v


def _lstsq(a):
    import dask.array as da

    x, residuals, rank, s = da.linalg.lstsq(a, a.sum(axis=1))
    return x, residuals


#: The sharded store's shards, and the xarray store's dimension names.
SHARDS = (20, 200, 200)
DIMS = ("time", "y", "x")

#: name -> (kind, shape, start chunks, store chunks or None, workload, grid, text)
WORKLOADS = {
    "zarr-coarse": ("zarr", (400, 400, 400), (100, 200, 200), (100, 200, 200), _zarr_sum,
                    [(50, 200, 200), (100, 400, 400), (200, 400, 400), (400, 400, 400)],
                    "from_zarr(store of (100, 200, 200) chunks).mean(axis=0)"),
    "zarr-fine": ("zarr", (400, 400, 400), (10, 100, 100), (10, 100, 100), _zarr_sum,
                  [(20, 200, 200), (40, 200, 200), (40, 400, 400), (100, 400, 400),
                   (200, 400, 400)],
                  "from_zarr(store of (10, 100, 100) chunks).mean(axis=0)"),
    "zarr-sharded": ("zarr3", (400, 400, 400), (10, 100, 100), (10, 100, 100), _anomaly,
                     [(20, 200, 200), (40, 200, 200), (40, 400, 400), (80, 400, 400),
                      (200, 400, 400)],
                     "anomaly of from_zarr(v3 store of (10, 100, 100) chunks in "
                     "(20, 200, 200) shards)"),
    "xarray-coarse": ("xarray", (400, 400, 400), (100, 200, 200), (100, 200, 200),
                      _anomaly,
                      [(50, 200, 200), (100, 400, 400), (200, 400, 400), (400, 200, 200)],
                      "anomaly of xr.open_zarr(store of (100, 200, 200) chunks).v"),
    "qr": ("random", (4_000_000, 16), (50_000, 16), None, _qr,
           [(12_500, 16), (25_000, 16), (100_000, 16), (250_000, 16), (500_000, 16),
            (1_000_000, 16)],
           "q, r = da.linalg.qr(random((4e6, 16))); (q.sum(axis=0), r)"),
    "svd": ("random", (2_000_000, 16), (25_000, 16), None, _svd,
            [(12_500, 16), (50_000, 16), (125_000, 16), (250_000, 16), (500_000, 16)],
            "u, s, v = da.linalg.svd(random((2e6, 16))); (u.sum(axis=0), s, v)"),
    "lstsq": ("random", (2_000_000, 16), (25_000, 16), None, _lstsq,
              [(12_500, 16), (50_000, 16), (125_000, 16), (250_000, 16), (500_000, 16)],
              "da.linalg.lstsq(a, a.sum(axis=1)) on random((2e6, 16))"),
    "transpose": ("random", (8000, 8000), (250, 250), None, _transpose,
                  [(500, 500), (1000, 1000), (2000, 2000), (4000, 4000)],
                  "(x + x.T).mean(axis=0) on random((8000, 8000))"),
}


def make(spec: dict, chunks):
    """The workload's input array in ``chunks`` (a tuple, or "auto")."""
    import dask.array as da

    kind, shape, *_ = WORKLOADS[spec["name"]]
    if kind in ("zarr", "zarr3"):
        return da.from_zarr(spec["store"], chunks=chunks)
    if kind == "xarray":
        import xarray as xr

        by_dim = "auto" if chunks == "auto" else dict(zip(DIMS, chunks))
        return xr.open_zarr(spec["store"], chunks=by_dim, consolidated=False)["v"]
    if chunks == "auto":
        chunks = {0: "auto", 1: -1} if len(shape) == 2 and shape[1] < 100 else "auto"
    return da.random.random(shape, chunks=chunks)


def prepare_store(spec: dict) -> None:
    import numpy as np
    import zarr

    kind, shape, _, store_chunks, *_ = WORKLOADS[spec["name"]]
    rng = np.random.default_rng(0)
    if kind == "xarray":
        import xarray as xr

        data = xr.Dataset({"v": (DIMS, rng.random(shape))})
        data.to_zarr(spec["store"], mode="w", consolidated=False,
                     encoding={"v": {"chunks": store_chunks}})
        return
    if kind == "zarr3":
        z = zarr.create_array(spec["store"], shape=shape, chunks=store_chunks,
                              shards=SHARDS, dtype="f8", overwrite=True)
        z[:] = rng.random(shape)
        return
    z = zarr.open_array(spec["store"], mode="w", shape=shape, chunks=store_chunks,
                        dtype="f8")
    for i in range(0, shape[0], store_chunks[0]):
        z[i:i + store_chunks[0]] = rng.random((min(store_chunks[0], shape[0] - i),)
                                              + shape[1:])


def _chunks_of(rec) -> list[int]:
    return [int(c) for c in rec.chunks]


def recommend(spec: dict, peak: Peak) -> dict:
    """The user's first compute, profiled, and the three recommendations.

    Each recommendation is made after the allocator's free heap is handed back,
    so that it predicts from the memory in use, as the peaks are measured."""
    import dask
    from dask.array import adaptive_chunking as ac

    _, _, start, _, f, *_ = WORKLOADS[spec["name"]]
    with dask.config.set({"array.adaptive-chunking.history-path": spec["history"]}):
        engine = ac.get_adaptive_engine()
        x = make(spec, start)
        pid = engine.profile_array(x)
        began = time.perf_counter()
        dask.compute(f(x))
        first = time.perf_counter() - began
        peak.trim()
        began = time.perf_counter()
        one = engine.recommend(x, pid, workload=f)
        one_s = time.perf_counter() - began
        peak.trim()
        began = time.perf_counter()
        probed = engine.recommend(x, pid, workload=f, probe=True)
        probe_s = time.perf_counter() - began
        y = make(spec, one.chunks)
        pid2 = engine.profile_array(y)
        dask.compute(f(y))
        peak.trim()
        two = three = engine.recommend(x, [pid, pid2], workload=f)
        if tuple(two.chunks) != tuple(one.chunks):  # it moved: measure there, ask again
            z = make(spec, two.chunks)
            pid3 = engine.profile_array(z)
            dask.compute(f(z))
            peak.trim()
            three = engine.recommend(x, [pid, pid2, pid3], workload=f)
        ac.disable_adaptive_chunking()
    out = {"first_compute_s": first, "recommend_s": one_s, "probe_recommend_s": probe_s}
    for label, rec in zip(LABELS, (one, probed, two, three)):
        out[label] = {"chunks": _chunks_of(rec), "binding": rec.binding,
                      "evidence": rec.evidence, "predicted_s": rec.predicted_seconds,
                      "predicted_peak": rec.predicted_peak_bytes,
                      "fits_budget": rec.fits_budget,
                      "probes": len(rec.probes), "probe_note": rec.probe_note}
    return out


def timed(spec: dict, chunkings: dict, repeats: int, peak: Peak) -> tuple[dict, dict]:
    """Each chunking's wall times and peaks, ``repeats`` shuffled rounds after a
    warm-up."""
    import dask

    f = WORKLOADS[spec["name"]][4]
    # A chunking several labels share is timed once: equal chunks, equal times. Dask's
    # auto chunks count as the chunk shape they come to, when that is the same array.
    def blocks(a):
        return getattr(a, "data", a).chunks

    auto = make(spec, "auto")
    as_tuple = tuple(int(c) for c in getattr(auto, "data", auto).chunksize)
    auto_key = as_tuple if blocks(make(spec, as_tuple)) == blocks(auto) else "auto"

    def key_of(c):
        return auto_key if c == "auto" else tuple(c)

    built = {}
    for c in chunkings.values():
        if key_of(c) not in built:
            built[key_of(c)] = f(make(spec, key_of(c)))
    for y in built.values():  # warm-up: thread pool, heap, the store's page cache
        dask.compute(y)
    times: dict = {key: [] for key in built}
    peaks: dict = {key: [] for key in built}
    order = list(built)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for key in order:
            gc.collect()
            began = time.perf_counter()
            dask.compute(built[key])
            times[key].append(time.perf_counter() - began)
    # Peaks in a pass of their own, each from the memory in use: a chunking timed
    # after a coarser one starts with that one's freed chunks resident, and its
    # high-water mark would be theirs (trimming before a timed compute would make it
    # fault in fresh pages, which a user's next compute does not).
    for key in order:
        gc.collect()
        peak.trim()
        peak.reset()
        dask.compute(built[key])
        peaks[key].append(peak.read())
    return ({label: times[key_of(c)] for label, c in chunkings.items()},
            {label: peaks[key_of(c)] for label, c in chunkings.items()})


class Peak:
    """The compute's peak memory: this process's high-water mark, or on a cluster the
    largest of its workers'."""

    def __init__(self, client=None):
        self.client = client

    def reset(self) -> None:
        import workloads

        if self.client is None:
            workloads._reset_hwm()
        else:
            self.client.run(workloads._reset_hwm)

    def trim(self) -> None:
        import workloads

        if self.client is None:
            workloads._trim_heap()
        else:
            self.client.run(workloads._trim_heap)

    def read(self) -> int:
        import workloads

        if self.client is None:
            return workloads._read_hwm()
        return max(self.client.run(workloads._read_hwm).values())


def child(spec: dict) -> dict:
    use_working_tree()
    import contextlib

    import dask

    setting = spec["setting"]
    config = {"array.adaptive-chunking.enabled": True}
    if setting == "sync":
        config["scheduler"] = "synchronous"
    if setting == "budget":
        config.update({"array.adaptive-chunking.memory-limit": LIMIT,
                       "array.adaptive-chunking.target-memory-percent": 100})
    dask.config.set(config)
    name = spec["name"]
    kind, _, start, _, _, grid, _ = WORKLOADS[name]
    if kind in ("zarr", "zarr3", "xarray"):
        prepare_store(spec)
    with contextlib.ExitStack() as stack:
        client = None
        if setting == "distributed":
            import cloudpickle
            import distributed
            import workloads

            # The workers may not find this directory's modules: send the readers whole.
            cloudpickle.register_pickle_by_value(workloads)
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True,
                memory_limit=WORKER_LIMIT, dashboard_address=None))
            client = stack.enter_context(distributed.Client(cluster))
        recs = recommend(spec, Peak(client))
        dask.config.set({"array.adaptive-chunking.enabled": False})
        chunkings = {"start": list(start), "auto": "auto"}
        chunkings.update({label: recs[label]["chunks"] for label in LABELS})
        chunkings.update({str(tuple(c)): list(c) for c in grid})
        auto = make(spec, "auto")
        recs["auto_chunks"] = [int(c) for c in getattr(auto, "data", auto).chunksize]
        recs["times"], recs["peaks"] = timed(spec, chunkings, spec["repeats"], Peak(client))
    recs["chunkings"] = chunkings
    return recs


def summarize(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    median = statistics.median(times)
    return {"median": median, "spread": (q[2] - q[0]) / median}


def analyse(res: dict, limit: int | None) -> dict:
    """Each chunking's median time and peak; the best is the fastest whose peak stays
    within ``limit`` (the fastest of all when none does)."""
    stats = {label: summarize(t) for label, t in res["times"].items()}
    for label, s in stats.items():
        s["peak"] = statistics.median(res["peaks"][label])
        s["fits"] = limit is None or s["peak"] <= limit
    fitting = [k for k in stats if stats[k]["fits"]] or list(stats)
    best_label = min(fitting, key=lambda k: stats[k]["median"])
    best = stats[best_label]["median"]
    out = {"best": best_label, "stats": stats, "any_fits": any(s["fits"] for s in
                                                                   stats.values())}
    for label in LABELS:
        m = stats[label]["median"]
        out[label] = {"vs_best": m / best, "vs_start": m / stats["start"]["median"],
                      "vs_auto": m / stats["auto"]["median"],
                      "peak_error": res[label]["predicted_peak"] / stats[label]["peak"] - 1}
    return out


def markdown(results: dict, args) -> str:
    where = {"threads": "threaded scheduler",
             "sync": "synchronous scheduler",
             "budget": f"threaded scheduler, memory-limit {LIMIT // MiB} MiB with "
                       "target-memory-percent 100 (budget 80% of it); the best is the "
                       "fastest whose peak fits the limit",
             "distributed": "LocalCluster(n_workers=2, threads_per_worker=1, "
                            f"processes=True, memory_limit={WORKER_LIMIT!r}); peak is "
                            "the larger worker's"}[args.setting]
    lines = ["# Trust: recommendations on workloads the model was not tuned on"
             + ("" if args.setting == "threads" else f" ({args.setting})"), "",
             f"{args.repeats} shuffled rounds per chunking, {where}, engine off "
             "while timing; time = median, spread = interquartile range / median, peak = "
             "resident high-water mark of one more compute, started from the memory in "
             "use (the allocator's free heap handed back first).", ""]
    worst = 1.0
    for name, res in results.items():
        a = res["analysis"]
        lines += [f"## {name}: `{WORKLOADS[name][6]}`", "",
                  f"First compute (profiled) {res['first_compute_s']:.2f} s; recommend "
                  f"{res['recommend_s'] * 1e3:.0f} ms; with probe "
                  f"{res['probe_recommend_s']:.2f} s. Dask's auto chunks: "
                  f"{tuple(res['auto_chunks'])}.", "",
                  "| chunking | chunks | time (s) | spread | vs best | vs start | vs auto "
                  "| peak (MiB) |",
                  "|---|---|---|---|---|---|---|---|"]
        start = a["stats"]["start"]["median"]
        auto = a["stats"]["auto"]["median"]
        best = a["stats"][a["best"]]["median"]
        for label, s in sorted(a["stats"].items(), key=lambda kv: kv[1]["median"]):
            chunks = res["chunkings"][label]
            chunks = "auto" if chunks == "auto" else tuple(chunks)
            lines.append(f"| {label} | {chunks} | {s['median']:.3f} | {s['spread']:.0%} | "
                         f"{s['median'] / best:.2f} | {s['median'] / start:.2f} | "
                         f"{s['median'] / auto:.2f} | {s['peak'] / MiB:.0f}"
                         + ("" if s["fits"] else " (over)") + " |")
        lines.append("")
        for label in LABELS:
            r = res[label]
            lines.append(f"- {label}: {tuple(r['chunks'])} by {r['binding']}; "
                         f"{r['evidence']}" + (f"; {r['probe_note']}" if r["probe_note"]
                                               else "")
                         + f"; predicted peak {r['predicted_peak'] / MiB:.0f} MiB "
                           f"({a[label]['peak_error']:+.0%} of measured)")
            worst = max(worst, a[label]["vs_start"], a[label]["vs_auto"])
        lines.append("")
    lines += ["## Summary", "",
              "Each recommendation's time over the best of the grid, and over the faster of "
              "the start chunks and `chunks=\"auto\"` (doing nothing); probe cost is the "
              "probing recommend's time over the probed recommendation's run.", "",
              "| workload | one-shot / best | probe / best | two-round / best | "
              "three-round / best | third keeps | worst / doing nothing | probe cost | "
              "recommended peaks fit | worst peak error |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    ratios: dict = {label: [] for label in LABELS}
    for name, res in results.items():
        a = res["analysis"]
        row = [a[label]["vs_best"] for label in ratios]
        for label, r in zip(ratios, row):
            ratios[label].append(r)
        nothing = max(max(a[label]["vs_start"], a[label]["vs_auto"]) for label in ratios)
        cost = res["probe_recommend_s"] / a["stats"]["probe"]["median"]
        fit = all(a["stats"][label]["fits"] for label in ratios)
        fit = "yes" if fit else ("no" if a["any_fits"] else "none fits")
        error = max((a[label]["peak_error"] for label in ratios), key=abs)
        keeps = "yes" if res["three-round"]["chunks"] == res["two-round"]["chunks"] else "no"
        lines.append(f"| {name} | " + " | ".join(f"{r:.2f}" for r in row)
                     + f" | {keeps} | {nothing:.2f} | {cost:.0%} | {fit} | {error:+.0%} |")
    geo = [statistics.geometric_mean(v) for v in ratios.values()]
    lines += ["| geometric mean | " + " | ".join(f"{g:.2f}" for g in geo)
              + " | | | | | |", "",
              f"Worst recommendation against the faster of the start chunks and Dask's "
              f"auto chunks: {worst:.2f}x (1.00: never slower than doing nothing).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--setting", choices=SETTINGS, default="threads")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            spec = {"name": name, "repeats": args.repeats, "setting": args.setting,
                    "store": str(Path(tmp) / f"{name}.zarr"),
                    "history": str(Path(tmp) / f"{name}.sqlite3")}
            print(f"{name} ...", file=sys.stderr, flush=True)
            res = in_fresh_process(__file__, spec)
            res["analysis"] = analyse(res, LIMIT if args.setting == "budget" else None)
            results[name] = res
    write("trust" if args.setting == "threads" else f"trust-{args.setting}",
          {"machine": machine(), "repeats": args.repeats, "setting": args.setting,
           "results": results},
          markdown(results, args))


if __name__ == "__main__":
    main()
