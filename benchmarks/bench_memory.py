"""Bounded memory: what the engine holds after profiling 1,000,000 chunk records.

Two parts.

1. **Records folded into profiles** (the engine's own path from a finished compute,
   without running the tasks): 1,000,000 records in batches of 10,000 spread over
   N profiles, for several ``array.adaptive-chunking.max-memory`` ceilings and
   without one. Memory is traced exactly (``tracemalloc``: everything allocated and
   still alive afterwards, keys included), and compared with the ceiling and with
   the recorder's own estimate (``ProfileRegistry.held_bytes``).
2. **Real computes**: a profiled ``x.sum()`` with 102,400 chunks, computed 10 times
   on the threaded scheduler (over 1,000,000 task records), with the default
   ceiling. Reports the engine's estimate, the sampled records, and the process's
   resident memory after each compute.
3. **Nothing left behind per compute**: 30 more computes of a profiled array once
   its samples are full, under ``tracemalloc``; the memory still allocated afterwards by
   the engine's code, and by all code.

Run: ``python benchmarks/bench_memory.py [--quick] [--part 3]``; writes
``benchmarks/results/memory.{json,md}`` (``--part 3`` adds part 3 to the results
already written).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from _util import machine, use_working_tree, write

use_working_tree()

import numpy as np  # noqa: E402

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from dask.array import adaptive_chunking as ac  # noqa: E402
from dask.array._adaptive_chunking import config, folding, memory, records  # noqa: E402
from dask.array._adaptive_chunking.aggregate import Aggregate  # noqa: E402
from dask.array._adaptive_chunking.history_service import HistoryService  # noqa: E402
from dask.array._adaptive_chunking.profiles import ProfileRegistry  # noqa: E402
from dask.array._adaptive_chunking.recorder import ComputeRecorder  # noqa: E402

MiB = 2**20
RECORDS = 1_000_000
BATCH = 10_000


def batch(n: int, start: int, name: str) -> records.RecordBatch:
    data = np.zeros(n, records.RECORD_DTYPE)
    data["t0"] = np.arange(n) * 1e-3
    data["t1"] = data["t0"] + 1e-3
    data["nbytes"] = data["logical"] = data["membytes"] = 10**6
    data["rss0"] = data["rss1"] = 100 * MiB
    keys = [(name, start + i, 0) for i in range(n)]  # a 2-d chunk's key, as Dask's
    return records.RecordBatch(data, keys, [(250, 500)] * n, [np.dtype(float)] * n)


def folded(ceiling, n_profiles: int) -> dict:
    """Fold the records into profiles through the recorder, as a finished compute is."""
    profiles, engine_wide = ProfileRegistry(), Aggregate()
    recorder = ComputeRecorder(profiles, lambda: engine_wide, HistoryService(),
                               lambda settings: None)
    with dask.config.set({"array.adaptive-chunking.max-memory": ceiling,
                          "array.adaptive-chunking.history": False}):
        settings = config.snapshot()
    states = [profiles.add(da.ones(1000, chunks=10) + i, settings.max_profiles)
              for i in range(n_profiles)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for step in range(RECORDS // BATCH):
        state = states[step % n_profiles]
        if not profiles.knows(state.id):  # dropped by the ceiling: fold into the newest
            state = profiles.all()[-1]
        records = batch(BATCH, step * BATCH, f"x-{step}")
        recorder.apply(folding.fold(records, [frozenset({state})], [state], "complete",
                                    peak=0, baseline=0), settings)
        del records
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    kept = profiles.all()
    out = {
        "ceiling_mib": None if ceiling is None else ceiling / MiB,
        "profiles": n_profiles,
        "profiles_kept": len(kept),
        "records": engine_wide.stats()["total_chunks"],
        "sampled_records": sum(s.aggregate.sampled for s in kept) + engine_wide.sampled,
        "held_mib": held / MiB,
        "estimate_mib": profiles.held_bytes(engine_wide) / MiB,
    }
    print(out)
    return out


def computed(computes: int) -> dict:
    ac.reset_adaptive_engine()
    engine = ac.get_adaptive_engine()
    x = da.random.random((3200, 3200), chunks=(10, 10))
    pid = engine.profile_array(x)
    rows = []
    for i in range(computes):
        start = time.perf_counter()
        x.sum().compute(scheduler="threads")
        seconds = time.perf_counter() - start
        gc.collect()
        stats = engine.get_profile(pid)["profiler_stats"]
        rows.append({
            "compute": i + 1,
            "seconds": seconds,
            "records": stats["total_chunks"],
            "sampled_records": stats["sampled_records"],
            "estimate_mib": engine.get_telemetry()["held_memory_mb"],
            "rss_mib": memory.process_rss() / MiB,
        })
        print(rows[-1])
    ac.reset_adaptive_engine()
    return {"chunks": x.npartitions, "rows": rows}


def left_behind(computes: int = 30) -> dict:
    ac.reset_adaptive_engine()
    engine = ac.get_adaptive_engine()
    x = da.random.random((300, 300), chunks=(10, 10))
    pid = engine.profile_array(x)
    warm = 0
    while engine.get_profile(pid)["profiler_stats"]["sampled_records"] < \
            engine.get_profiler(pid).max_records:  # the samples are full: they stop growing
        x.sum().compute(scheduler="threads")
        warm += 1
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(computes):
        x.sum().compute(scheduler="threads")
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ours = [tracemalloc.Filter(True, "*adaptive_chunking*")]
    engine_bytes = sum(d.size_diff for d in after.filter_traces(ours).compare_to(
        before.filter_traces(ours), "filename"))
    all_bytes = sum(d.size_diff for d in after.compare_to(before, "filename"))
    out = {"computes": computes, "warm_up": warm, "chunks": x.npartitions,
           "engine_kib": engine_bytes / 1024, "all_kib": all_bytes / 1024}
    ac.reset_adaptive_engine()
    print(out)
    return out


def markdown(data: dict) -> str:
    part1, part2, part3 = data["folded"], data.get("computed"), data.get("left_behind")
    md = ["# Bounded memory: 1,000,000 chunk records", "",
          "From `benchmarks/bench_memory.py`. Part 1: 1,000,000 records folded into N "
          "profiles by the engine's own path; memory traced exactly (`tracemalloc`, "
          "everything still alive afterwards).", "",
          "| max-memory | profiles | kept | records | sampled | held MiB | estimate MiB "
          "|", "|---|---|---|---|---|---|---|"]
    for r in part1:
        ceiling = "none" if r["ceiling_mib"] is None else f"{r['ceiling_mib']:.0f} MiB"
        md.append(f"| {ceiling} | {r['profiles']} | {r['profiles_kept']} | {r['records']:,} "
                  f"| {r['sampled_records']:,} | {r['held_mib']:.1f} | {r['estimate_mib']:.1f} |")
    if part2:
        md += ["", f"Part 2: a profiled `x.sum()` over {part2['chunks']:,} chunks, computed "
               "10 times (threaded scheduler, default 64 MiB ceiling).", "",
               "| compute | s | records | sampled | estimate MiB | RSS MiB |",
               "|---|---|---|---|---|---|"]
        for r in part2["rows"]:
            md.append(f"| {r['compute']} | {r['seconds']:.1f} | {r['records']:,} "
                      f"| {r['sampled_records']:,} | {r['estimate_mib']:.1f} "
                      f"| {r['rss_mib']:.0f} |")
    if part3:
        md += ["", f"Part 3: {part3['computes']} more computes of a profiled array "
               f"({part3['chunks']:,} chunks) after {part3['warm_up']} that filled its "
               "samples (10,000 records): memory still "
               f"allocated afterwards by the engine's code {part3['engine_kib']:.1f} KiB, "
               f"by all code {part3['all_kib']:.1f} KiB."]
    return "\n".join(md) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="parts 1 and 3 only")
    parser.add_argument("--part", type=int, choices=[3],
                        help="run part 3 only, added to the results already written")
    args = parser.parse_args()
    if args.part == 3:
        import json

        from _util import RESULTS

        data = json.loads((RESULTS / "memory.json").read_text())
        data["left_behind"] = left_behind()
        write("memory", data, markdown(data))
        return
    cases = [(8 * MiB, 20), (64 * MiB, 20), (64 * MiB, 1000), (None, 20), (None, 1000)]
    part1 = [folded(c, n) for c, n in cases]
    part2 = None if args.quick else computed(10)
    data = {"machine": machine(), "record_cost": ac.RECORD_COST, "folded": part1,
            "computed": part2, "left_behind": left_behind()}
    write("memory", data, markdown(data))


if __name__ == "__main__":
    main()
