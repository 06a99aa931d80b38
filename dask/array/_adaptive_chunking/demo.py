"""``python -m dask.array.adaptive_chunking``: profile, recommend, apply, compare.

The demo builds a real workload with chunks far too small, profiles one compute of
it, prints the profile and the recommendation, rebuilds the workload with the
recommended chunks and reports the measured difference in wall time and peak
memory.
"""

from __future__ import annotations

import math
import sys
import time

from dask.array._adaptive_chunking import expressions as _expressions
from dask.array._adaptive_chunking import shapes as _shapes
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
    """Profile ``(x + x.T).mean(axis=0)`` on a ``size``-square array in ``chunk`` chunks,
    recommend chunks, compute again in them and compare.

    ``scheduler`` None uses Dask's default (a distributed client, if one is the
    default); ``client``, a ``distributed.Client``, computes on its cluster;
    ``progress`` shows a progress bar while computing (stderr). Returns a
    dictionary with the before/after times of the ``compute()`` calls (seconds),
    peak memory (MiB) and the chunks used; also prints the story to ``out`` (stdout
    by default).
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

    def say(*lines: str) -> None:
        print(*lines, sep="\n", file=out, flush=True)

    where = scheduler or ("default" if client is None else client.scheduler.address)
    x, y = workload((chunk, chunk))
    say("Workload: (x + x.T).mean(axis=0), x = da.random.random"
        f"(({size}, {size})), float64, {_views.size_text(x.nbytes)}; "
        f"scheduler={where!r}", "",
        f"1. Compute with chunks {x.chunksize}: "
        f"{_views.count_text(x.npartitions, 'chunk')} of "
        f"{_views.size_text(math.prod(x.chunksize) * x.dtype.itemsize)}, profiled")
    settings = {} if scheduler is None else {"scheduler": scheduler}
    with dask.config.set(settings), _progress(progress, client):
        before_s, profile = _measure(_computer(y, client, progress), engine, x)
    say(*_indent(_measured_text(profile, before_s, x.npartitions)))
    rec = profile["recommendation"]
    if rec is None:
        say("", f"No recommendation could be made: {profile['recommendation_unavailable']}")
        return {"before_s": before_s, "recommended_chunks": None}
    chunks = tuple(rec["chunks"])
    say("", f"2. Recommended chunks: {chunks}", *_indent(_recommendation_lines(profile)))
    # Build the workload again with the recommended chunks, as a user would for data
    # created or read in chunks (engine.apply_recommendation rechunks an existing array).
    x2, y2 = workload(chunks)
    say("", f"3. Compute again with chunks {chunks}: "
        f"{_views.count_text(x2.npartitions, 'chunk')} of "
        f"{_views.size_text(rec['chunk_size_mb'] * 2**20)}")
    with dask.config.set(settings), _progress(progress, client):
        after_s, after = _measure(_computer(y2, client, progress), engine, x2)
    say(*_indent(_effect_lines(profile, after, before_s, after_s)))
    return {
        "before_s": before_s,
        "after_s": after_s,
        "before_peak_mb": profile["last_compute"]["peak_memory_mb"],
        "after_peak_mb": after["last_compute"]["peak_memory_mb"],
        "recommended_chunks": chunks,
    }


def _indent(lines: list[str], width: int = 88) -> list[str]:
    """Lines indented under a step's heading, long ones wrapped."""
    import textwrap

    out = []
    for line in lines:
        out += textwrap.wrap(line, width, initial_indent="   ", subsequent_indent="     ")
    return out


def _measured_text(profile: dict, seconds: float, chunks: int) -> list[str]:
    """What the profiled compute measured: the call, its tasks, its peak."""
    stats, last = profile["profiler_stats"], profile["last_compute"]
    tasks = last.get("tasks", stats["total_chunks"])
    why = (f" (more than the {chunks:,} chunks: making x, adding x.T and the mean each "
           "have tasks of their own)" if tasks > chunks else "")
    return [
        f"compute() took {_views.duration_text(seconds)}. Its "
        f"{_views.count_text(tasks, 'task')}{why} ran for "
        f"{_views.duration_text(last.get('wall_time_s', 0.0))} from the first to the last, "
        f"{_views.duration_text(stats['total_compute_time_s'])} of task time in all "
        f"({_views.duration_text(stats['avg_compute_time_ms'] / 1e3)} each on average, up "
        f"to {last.get('concurrency', 1)} at once); the rest of the call is building and "
        "scheduling the graph.",
        f"Peak memory {_views.size_text(last.get('peak_memory_mb', 0.0) * 2**20)} (the "
        "process's, as the profile measured it from the tasks' readings).",
    ]


def _recommendation_lines(profile: dict) -> list[str]:
    """The recommendation: its size, why, what it is predicted to do, how sure."""
    rec, now = profile["recommendation"], profile["current_prediction"] or {}
    mib = 2**20
    blocks = _shapes.blocks(profile["array_shape"], rec["chunks"])
    lines = [
        f"{_views.count_text(blocks, 'chunk')} of {_views.size_text(rec['chunk_size_mb'] * mib)}"
        f" ({_views.count_text(rec['predicted_tasks'], 'task')}), decided by "
        f"{rec['binding_constraint']}.",
        f"Why: {rec['reason']}.",
        f"Predicted: {_views.duration_text(rec['predicted_time_s'])} from the first task "
        f"to the last (the model gives {_views.duration_text(now.get('predicted_time_s', 0.0))}"
        f" for the current chunks, where "
        f"{_views.duration_text(profile['last_compute'].get('wall_time_s', 0.0))} was "
        f"measured), peak {_views.size_text(rec['predicted_peak_memory_mb'] * mib)} of "
        f"a {_views.size_text(rec['memory_budget_mb'] * mib)} memory budget"
        + ("." if rec["fits_budget"] else " (over the budget)."),
    ]
    if rec.get("evidence"):
        lines.append(f"Evidence: {rec['evidence']}.")
    return lines


def _effect_lines(before: dict, after: dict, before_s: float, after_s: float) -> list[str]:
    """The same quantities before and after, and where the peak stands."""
    mib = 2**20
    rec = before["recommendation"]
    b, a = before["last_compute"], after["last_compute"]
    peaks = (b.get("peak_memory_mb", 0.0), a.get("peak_memory_mb", 0.0))
    budget = rec["memory_budget_mb"]
    spans = (b.get("wall_time_s", 0.0), a.get("wall_time_s", 0.0))
    rows = [  # the predictions are for the after column, to check them against
        ("", "before", "after", ""),
        ("compute() call", _views.duration_text(before_s), _views.duration_text(after_s),
         f"{before_s / after_s:.1f}x faster" if after_s < before_s
         else f"{after_s / before_s:.1f}x slower"),
        ("first task to last", _views.duration_text(spans[0]), _views.duration_text(spans[1]),
         f"predicted {_views.duration_text(rec['predicted_time_s'])}"),
        ("tasks", f"{b.get('tasks', 0):,}", f"{a.get('tasks', 0):,}",
         f"predicted {rec['predicted_tasks']:,}"),
        ("peak memory", _views.size_text(peaks[0] * mib), _views.size_text(peaks[1] * mib),
         f"predicted {_views.size_text(rec['predicted_peak_memory_mb'] * mib)}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    inside = max(peaks) <= budget
    verdict = (
        f"Both peaks are inside the {_views.size_text(budget * mib)} memory budget "
        f"({max(peaks) / budget:.0%} of it at most)" if inside else
        f"A peak went over the {_views.size_text(budget * mib)} memory budget"
    ) + (": the larger chunks hold more data at once." if peaks[1] > peaks[0]
         and rec["chunk_size_mb"] > before["profiler_stats"]["max_chunk_size_mb"] else ".")
    return [*table, verdict]


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
