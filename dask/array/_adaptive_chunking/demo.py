"""``python -m dask.array.adaptive_chunking``: profile, recommend, apply, compare.

The demo builds a real workload with chunks far too small, profiles one compute of
it, prints the profile and the recommendation, rebuilds the workload with the
recommended chunks and reports the measured difference in wall time and peak
memory.
"""

from __future__ import annotations

import argparse
import pprint
import sys
import time

__all__ = ["main", "run_demo"]


def _measure(fn, engine, array) -> tuple[float, dict]:
    """Run ``fn()`` with ``array`` profiled; return wall seconds and the profile."""
    pid = engine.profile_array(array)
    try:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        return elapsed, engine.get_profile(pid)
    finally:
        engine.remove_profile(pid)


def run_demo(
    size: int = 6000,
    chunk: int = 100,
    scheduler: str = "threads",
    out=None,
) -> dict:
    """Profile ``(x + x.T).mean(axis=0)`` on a ``size``-square array in ``chunk`` chunks.

    Returns a dictionary with the before/after wall times (seconds), peak memory
    (MiB) and the chunks used; also prints a report to ``out`` (stdout by default).
    """
    import dask
    import dask.array as da
    from dask.array.adaptive_chunking import get_adaptive_engine

    out = out or sys.stdout
    engine = get_adaptive_engine()

    def workload(chunks):
        x = da.random.random((size, size), chunks=chunks)
        return x, (x + x.T).mean(axis=0)

    print(f"Workload: (x + x.T).mean(axis=0), x = random {size}x{size} float64 "
          f"({size * size * 8 / 2**20:.0f} MiB), scheduler={scheduler!r}", file=out)
    x, y = workload((chunk, chunk))
    print(f"Before: chunks ({chunk}, {chunk}), {x.npartitions} chunks", file=out)
    with dask.config.set(scheduler=scheduler):
        before_s, profile = _measure(y.compute, engine, x)
    print("\nProfile:", file=out)
    pprint.pprint({k: v for k, v in profile.items() if k != "current_chunks"},
                  stream=out, sort_dicts=False, width=100)
    rec = profile["recommended_chunks"]
    if rec is None:
        print("\nNo recommendation could be made.", file=out)
        return {"before_s": before_s, "recommended_chunks": None}
    reason = profile["recommendation"]
    print(f"\nRecommended chunks: {rec} ({reason['chunk_size_mb']:.1f} MiB per chunk; "
          f"decided by {reason['binding_constraint']}; predicted peak "
          f"{reason['predicted_peak_memory_mb']:.0f} MiB of a "
          f"{reason['memory_budget_mb']:.0f} MiB budget)", file=out)
    print(f"Why: {reason['reason']}", file=out)
    # Build the workload again with the recommended chunks, as a user would for data
    # created or read in chunks (engine.apply_recommendation rechunks an existing array).
    x2, y2 = workload(rec)
    with dask.config.set(scheduler=scheduler):
        after_s, after = _measure(y2.compute, engine, x2)
    before_peak = profile["last_compute"]["peak_memory_mb"]
    after_peak = after["last_compute"]["peak_memory_mb"]
    print("\nMeasured effect of applying it:", file=out)
    print(f"  wall time   {before_s:8.2f} s -> {after_s:8.2f} s "
          f"({before_s / after_s:.1f}x faster)", file=out)
    print(f"  peak memory {before_peak:8.0f} MiB -> {after_peak:8.0f} MiB", file=out)
    print(f"  tasks       {profile['last_compute']['tasks']:8d}   -> "
          f"{after['last_compute']['tasks']:8d}", file=out)
    return {
        "before_s": before_s,
        "after_s": after_s,
        "before_peak_mb": before_peak,
        "after_peak_mb": after_peak,
        "recommended_chunks": rec,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m dask.array.adaptive_chunking",
        description="Profile a workload started with too-small chunks, recommend "
        "chunks, apply them and compare.",
    )
    parser.add_argument("--size", type=int, default=6000, help="side of the square array")
    parser.add_argument("--chunk", type=int, default=100, help="side of the starting chunks")
    parser.add_argument(
        "--scheduler", default="threads", choices=["threads", "sync", "processes"]
    )
    args = parser.parse_args(argv)
    if args.size < 1 or args.chunk < 1:
        parser.error("--size and --chunk must be positive integers")
    run_demo(args.size, args.chunk, args.scheduler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
