"""Step 2: run identically in BOTH trees.  python replay.py <history.jsonl> <out.json>

Imports the shared history into a fresh store, fixes the machine calibrations, and
prints recommendations and predictions for every stored workload, plus direct
ChunkSizeRecommender calls on a ChunkProfiler filled with literal metrics.
"""
import dataclasses, json, math, os, sys, tempfile, warnings
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import dask
import dask.array.adaptive_chunking as ac
from dask.array.core import normalize_chunks
from workloads import WORKLOADS, MEMORY_LIMITS, base

src, out_path = sys.argv[1], sys.argv[2]
print("module:", ac.__file__, file=sys.stderr)

# -- fixed calibrations --------------------------------------------------------
try:
    from dask.array._adaptive_chunking import calibration as calmod  # new tree
    tree = "new"
except ImportError:
    from dask.array._adaptive_chunking import instrument as calmod  # old tree
    tree = "old"
CALLS = {"fault": 0, "blas": 0}
CAL = {"fault": 2e-10, "blas": (1, 1.0)}


def _fault():
    CALLS["fault"] += 1
    return CAL["fault"]


def _blas():
    CALLS["blas"] += 1
    return CAL["blas"]


calmod.fault_seconds_per_byte = _fault
calmod.blas_profile = _blas
# make sure no real measurement happened / can happen
assert getattr(calmod, "_fault_cost", None) is None and getattr(calmod, "_blas", None) is None, \
    "calibration already measured"
print("tree:", tree, "calibration module:", calmod.__name__, file=sys.stderr)


def plain(v):
    """JSON-able, tuples as lists, numpy scalars as Python numbers."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, frozenset, set)):
        seq = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v
        return [plain(x) for x in seq]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else repr(f)
    return v


def rec_out(rec):
    if rec is None:
        return None
    return {
        "chunks": plain(rec.chunks), "chunk_bytes": plain(rec.chunk_bytes),
        "binding": rec.binding, "reason": rec.reason,
        "predicted_peak_bytes": plain(rec.predicted_peak_bytes),
        "predicted_seconds": plain(rec.predicted_seconds),
        "predicted_tasks": plain(rec.predicted_tasks), "fits_budget": plain(rec.fits_budget),
        "to_dict": plain(rec.to_dict()),
        "model": plain(rec.model), "saturation": plain(rec.saturation),
        "shape": plain(rec.shape), "current_chunks": plain(rec.current_chunks),
        "repr": repr(rec),
    }


RESULTS = []


def run(case, fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            result = {"ok": fn()}
        except Exception as e:  # recorded, compared like a result
            result = {"error": f"{type(e).__name__}: {e}"}
    result["warnings"] = [f"{x.category.__name__}: {x.message}" for x in w]
    RESULTS.append({"case": case, **result})


def scaled(shape, factor):
    return tuple(max(1, round(n * factor ** (1 / len(shape)))) for n in shape)


SETTINGS = [(lim, pct) for lim in MEMORY_LIMITS for pct in (None, 20)]
CALIBRATIONS = [(2e-10, (1, 1.0)), (2e-10, (2, 1.25))]

tmp = tempfile.mkdtemp(prefix=f"equiv-{tree}-")
with dask.config.set({"array.adaptive-chunking.history-path": os.path.join(tmp, "h.sqlite3"),
                      "scheduler": "threads"}):
    engine = ac.AdaptiveChunkingEngine()
    assert engine.load_history() == []
    n = engine.import_history(src)
    RESULTS.append({"case": "import_history", "ok": n})
    rows = engine.load_history()
    RESULTS.append({"case": "history_signatures",
                    "ok": sorted([r["signature"], r["fingerprint"], list(r["shape"]), r["dtype"]]
                                 for r in rows)})

    # -- A. engine.recommend / engine.predict from the history --------------------
    for fault, blas in CALIBRATIONS:
        CAL["fault"], CAL["blas"] = fault, blas
        for name, (shape, chunkings, expr, dtype) in WORKLOADS.items():
            c0 = chunkings[0]
            for factor in (1, 4, 25):
                big_shape = scaled(shape, factor)
                for lim, pct in SETTINGS:
                    cfg = {"array.adaptive-chunking.memory-limit": lim}
                    if pct is not None:
                        cfg["array.adaptive-chunking.target-memory-percent"] = pct
                    tag = f"cal={fault},{blas}|{name}|x{factor}{big_shape}|lim={lim}|pct={pct}"
                    with dask.config.set(cfg):
                        big = base(big_shape, c0, dtype)
                        wl = expr(big)
                        run(f"recommend|{tag}",
                            lambda: rec_out(engine.recommend(big, workload=wl)))
                        two = tuple(min(n, 2 * c) for n, c in zip(big_shape, c0))
                        for ch in (c0, two, "auto", -1):
                            run(f"predict|{tag}|chunks={ch}",
                                lambda: plain(engine.predict(big, ch, workload=wl)))
        # empty arrays, for the paths without measurements
        for name, shp in (("std", (0, 1000)), ("cumsum_1d", (0,))):
            shape, chunkings, expr, dtype = WORKLOADS[name]
            big = base(shp, chunkings[0], dtype)
            wl = expr(big)
            tag = f"cal={fault},{blas}|{name}|empty{shp}"
            run(f"recommend|{tag}", lambda: rec_out(engine.recommend(big, workload=wl)))
            run(f"predict|{tag}", lambda: plain(engine.predict(big, chunkings[0], workload=wl)))
    engine.close()

    # -- B. ChunkSizeRecommender on a profiler of literal metrics ----------------------
    Metric = ac.ChunkMemoryMetric

    def literal_metrics():
        ms, t = [], 1000.0
        for side, count, ms_per, grow in ((100, 20, 0.8, 0.05), (250, 10, 4.5, 0.4),
                                          (500, 5, 17.0, 1.6)):
            for i in range(count):
                elems = side * side
                before = 150.0 + 0.25 * i
                ms.append(Metric(("random-abc", i // 4, i % 4), (side, side), elems, 8,
                                 elems * 8, ms_per + 0.01 * i, before, before + grow * (1 + i % 3),
                                 worker=1000 + i % 2, start_time=t,
                                 failed=(side == 250 and i == 7),
                                 output_bytes=None if i % 5 else elems * 8))
                t += ms_per / 1e3
        return ms

    profiler = ac.ChunkProfiler()
    for m in literal_metrics():
        profiler.record_chunk(m)
    small = ac.ChunkProfiler()
    small.record_chunk(Metric(("x", 0), (1000,), 1000, 8, 8000, 1.0, 50.0, 50.5))
    RESULTS.append({"case": "profiler_stats", "ok": plain(profiler.get_stats())})
    RESULTS.append({"case": "profiler_observations", "ok": plain(profiler.observations())})
    RESULTS.append({"case": "small_profiler_stats", "ok": plain(small.get_stats())})
    RESULTS.append({"case": "empty_profiler_recommend",
                    "ok": plain(ac.ChunkSizeRecommender(memory_limit="8GiB")
                                .recommend_chunk_size(ac.ChunkProfiler(), (1000, 1000), 8))})

    from dask.array._adaptive_chunking.graph import Downstream
    RECOMMENDERS = {
        "default8G": dict(memory_limit="8GiB"),
        "pct20_8G": dict(target_memory_percent=20, memory_limit="8GiB"),
        "min4M_2G": dict(min_chunk_bytes=4 * 2**20, memory_limit="2GiB"),
        "max16M": dict(max_chunk_bytes=16 * 2**20, memory_limit="8GiB"),
        "safety05_ovh005_1G": dict(safety_factor=0.5, overhead_target=0.05, memory_limit="1GiB"),
        "tiny_64M": dict(memory_limit="64MiB"),
        "machine": dict(),
    }
    SHAPES = [(1000, 1000), (10000, 10000), (50000, 2000), (10**6,), (10**8,),
              (200, 300, 400), (0, 10)]
    cluster = {"tcp://a:1": {"nthreads": 2, "memory_limit": 4 * 2**30, "baseline": 200 * 2**20},
               "tcp://b:1": {"nthreads": 4, "memory_limit": 3 * 2**30, "baseline": 300 * 2**20}}

    def variants(shape):
        v = {"plain": {}}
        if 0 in shape:
            return v
        cur = tuple(min(s, 1000) for s in shape[:-1]) + (shape[-1],)
        v["current_whole_last"] = {"current_chunks": normalize_chunks(cur, shape)}
        v["storage128"] = {"storage_chunks": tuple(min(s, 128) for s in shape)}
        v["conc4"] = {"concurrency": 4}
        v["down_whole_last"] = {"downstream": Downstream(frozenset({len(shape) - 1}), False,
                                                         ("sum",))}
        if len(shape) == 2:
            v["down_square"] = {"downstream": Downstream(frozenset(), True, ("transpose",))}
        v["cluster"] = {"cluster": cluster, "worker_saturation": 1.1}
        return v

    for rname, kw in RECOMMENDERS.items():
        r = ac.ChunkSizeRecommender(**kw)
        RESULTS.append({"case": f"budget|{rname}", "ok": r.memory_budget()})
        for prof_name, prof in (("literal", profiler), ("single", small)):
            for shape in SHAPES:
                for itemsize in (8, 4, 1):
                    tag = f"{rname}|{prof_name}|{shape}|itemsize={itemsize}"
                    run(f"recommend_chunk_size|{tag}",
                        lambda: plain(r.recommend_chunk_size(prof, shape, itemsize)))
                    for vname, vkw in variants(shape).items():
                        run(f"ChunkSizeRecommender.recommend|{tag}|{vname}",
                            lambda: rec_out(r.recommend(prof, shape, itemsize, **vkw)))
        with dask.config.set({"array.adaptive-chunking.target-memory-percent": 30,
                              "array.adaptive-chunking.safety-factor": 0.9}):
            run(f"ChunkSizeRecommender.recommend|{rname}|config30/0.9",
                lambda: rec_out(r.recommend(profiler, (20000, 20000), 8)))

RESULTS.append({"case": "calibration_calls_nonzero",
                "ok": {k: v > 0 for k, v in CALLS.items()}})
print("calibration calls:", CALLS, file=sys.stderr)
with open(out_path, "w") as f:
    json.dump(RESULTS, f, indent=0)
print("cases:", len(RESULTS), file=sys.stderr)
