"""``python -m dask.array.adaptive_chunking``: profile, recommend, apply, compare.

The demo builds a real workload with chunks far too small, profiles one compute of
it, prints the profile and the recommendation, rebuilds the workload with the
recommended chunks and reports the measured difference in wall time and peak
memory.
"""

from __future__ import annotations

import pprint
import sys
import time

from dask.array._adaptive_chunking import expressions as _expressions
from dask.array._adaptive_chunking import views as _views

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


def _progress(show: bool, client=None):
    """A progress bar with memory for local computes (a cluster's comes with the
    compute, :func:`progress.compute_on_cluster`)."""
    import contextlib

    from dask.array._adaptive_chunking.progress import ProfileProgressBar

    if not show or client is not None:
        return contextlib.nullcontext()
    return ProfileProgressBar(out=sys.stderr)


def _computer(collection, client, show: bool):
    """What computes ``collection``: its own compute(), or the cluster's with progress."""
    if client is None:
        return collection.compute
    from dask.array._adaptive_chunking.progress import compute_on_cluster

    return lambda: compute_on_cluster(collection, client, show)


def run_demo(
    size: int = 6000,
    chunk: int = 100,
    scheduler: str | None = "threads",
    out=None,
    progress: bool = False,
    client=None,
) -> dict:
    """Profile ``(x + x.T).mean(axis=0)`` on a ``size``-square array in ``chunk`` chunks.

    ``scheduler`` None uses Dask's default (a distributed client, if one is the
    default); ``client``, a ``distributed.Client``, computes on its cluster;
    ``progress`` shows a progress bar while computing (stderr). Returns a
    dictionary with the before/after wall times (seconds), peak memory (MiB) and
    the chunks used; also prints a report to ``out`` (stdout by default).
    """
    import dask
    import dask.array as da
    from dask.array.adaptive_chunking import get_adaptive_engine

    _expressions.require_classic_arrays("the demo")
    out = out or sys.stdout
    engine = get_adaptive_engine()

    def workload(chunks):
        x = da.random.random((size, size), chunks=chunks)
        return x, (x + x.T).mean(axis=0)

    where = scheduler or ("default" if client is None else client.scheduler.address)
    print(f"Workload: (x + x.T).mean(axis=0), x = random {size}x{size} float64 "
          f"({size * size * 8 / 2**20:.0f} MiB), scheduler={where!r}",
          file=out)
    x, y = workload((chunk, chunk))
    print(f"Before: chunks ({chunk}, {chunk}), {x.npartitions} chunks", file=out)
    settings = {} if scheduler is None else {"scheduler": scheduler}
    with dask.config.set(settings), _progress(progress, client):
        before_s, profile = _measure(_computer(y, client, progress), engine, x)
    print(f"\n{_views.profile_text(profile)}", file=out)
    print("Per-chunk statistics:", file=out)
    pprint.pprint(profile["profiler_stats"], stream=out, sort_dicts=False, width=100)
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
    with dask.config.set(settings), _progress(progress, client):
        after_s, after = _measure(_computer(y2, client, progress), engine, x2)
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
    """``python -m dask.array.adaptive_chunking``: the ``dask adaptive-chunking``
    commands; with no command, the demo. Returns the exit status."""
    from dask.array._adaptive_chunking.cli import main as cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("--") and argv[0] not in ("--help", "-h"):
        argv = ["demo", *argv]
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
