"""Profiling overhead: what leaving the engine on costs each compute.

Three computes, each built and computed the same way with and without the engine
(graph construction is inside the timed region of both, since a user pays it):

* ``small``: ``(x + 1).sum()`` on ``random((1000, 1000), chunks=250)``, 16 chunks;
* ``transpose``: ``(x + x.T).mean(axis=0)`` on ``random((6000, 6000), chunks=250)``,
  576 chunks;
* ``large``: ``(x + 1).sum()`` on ``random((12500, 40000), chunks=(250, 500))``,
  4,000 chunks of 1 MB.

Two modes: ``enabled`` (``enable_adaptive_chunking()``: every compute profiled for
the engine's aggregate) and ``profile_array`` (each new array registered with
``engine.profile_array`` before its compute, the spec's pattern, and removed after).
"Plain" is Dask with the engine's optimizer uninstalled. History is on, in a
temporary file, as it is by default.

Each compute runs in ``--pairs`` interleaved plain/profiled pairs in one process
(the order alternates, so that drift hits both alike), on the threaded scheduler.
Wall time ends when the compute returns; CPU time is the process's (every thread),
and for a profiled compute it runs until the engine has also finished what it does
after the result is handed back, so deferred work is counted. Ratios are per pair;
the tables give their median and quartiles.

Also measured:

* a loop of ``--loop`` tiny computes (4 chunks) profiled against the same loop plain,
  in alternating blocks of 50;
* ``--fresh`` fresh processes, each timing the small and transpose computes in 11
  pairs per mode (start-up and first computes included as a user meets them);
* the breakdown: the engine's steps timed inside 30 profiled computes of each size
  (the hook and its plan, the graph rewrite, peak tracking, folding, applying the
  fold, the history write, auto-rechunk's follow-up, ``profile_array``), and the
  measured-task code alone per task.

Run alone on a quiet machine: ``python benchmarks/bench_overhead.py`` (about 15
minutes); writes ``benchmarks/results/overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _util import in_fresh_process, machine, use_working_tree, write

COMPUTES = {
    "small": ("(x + 1).sum(), x = random (1000, 1000), chunks 250: 16 chunks",
              ((1000, 1000), 250), "sum"),
    "transpose": ("(x + x.T).mean(axis=0), x = random (6000, 6000), chunks 250: 576 chunks",
                  ((6000, 6000), 250), "transpose"),
    "large": ("(x + 1).sum(), x = random (12500, 40000), chunks (250, 500): 4,000 x 1 MB",
              ((12500, 40000), (250, 500)), "sum"),
}
TINY = ((200, 200), 100)
MODES = ("enabled", "profile_array")
BLOCK = 50


def build(spec):
    import dask.array as da

    (shape, chunks), kind = spec
    x = da.random.random(shape, chunks=chunks)
    return x, ((x + 1).sum() if kind == "sum" else (x + x.T).mean(axis=0))


class Runner:
    """Runs one compute plain or profiled, in one of the two modes."""

    def __init__(self, history: str):
        import dask
        from dask.array import adaptive_chunking as ac

        dask.config.set({"array.adaptive-chunking.history-path": history,
                         "array.adaptive-chunking.history": True})
        self.ac = ac
        self.engine = ac.get_adaptive_engine()
        self.tasks = 0

    def settle(self) -> None:
        """Wait until the engine has finished what it does after a compute."""
        self.engine._recorder.drain()

    def switch(self, mode: str | None) -> None:
        """``None``: plain Dask (the optimizer uninstalled); else profile in ``mode``."""
        import dask
        from dask.array._adaptive_chunking import hook

        if mode is None:
            hook.uninstall()
            dask.config.set({"array.adaptive-chunking.enabled": False})
        else:
            hook.install()
            dask.config.set({"array.adaptive-chunking.enabled": mode == "enabled"})

    def once(self, spec, mode: str | None) -> tuple[float, float]:
        """Wall and CPU seconds of one compute, built inside the timed region."""
        import dask

        self.switch(mode)
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        x, y = build(spec)
        pid = self.engine.profile_array(x) if mode == "profile_array" else None
        dask.compute(y, scheduler="threads")
        wall = time.perf_counter() - wall0
        if mode is not None:
            self.settle()
        cpu = time.process_time() - cpu0
        if pid is not None:
            self.tasks = self.engine.get_profile(pid)["last_compute"]["tasks"]
            self.engine.remove_profile(pid)
        return wall, cpu


def summary(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2]}


def pairs(runner: Runner, spec, mode: str, n: int) -> dict:
    """``n`` interleaved plain/profiled pairs after two warm-up computes of each."""
    for _ in range(2):
        runner.once(spec, None)
        runner.once(spec, mode)
    out = {"plain_wall": [], "plain_cpu": [], "profiled_wall": [], "profiled_cpu": []}
    for i in range(n):
        order = (None, mode) if i % 2 == 0 else (mode, None)
        for m in order:
            wall, cpu = runner.once(spec, m)
            kind = "plain" if m is None else "profiled"
            out[f"{kind}_wall"].append(wall)
            out[f"{kind}_cpu"].append(cpu)
    for what in ("wall", "cpu"):
        ratios = [p / q for p, q in zip(out[f"profiled_{what}"], out[f"plain_{what}"])]
        diffs = [(p - q) * 1e3 for p, q in zip(out[f"profiled_{what}"], out[f"plain_{what}"])]
        out[f"{what}_ratio"] = summary(ratios)
        out[f"{what}_diff_ms"] = summary(diffs)
    out["plain_wall_s"] = statistics.median(out["plain_wall"])
    return out


def loop(runner: Runner, n: int) -> dict:
    """``n`` tiny computes plain and ``n`` profiled (everything: ``enabled``), in
    alternating blocks of :data:`BLOCK`."""
    spec = (TINY, "sum")
    totals = {None: [0.0, 0.0], "enabled": [0.0, 0.0]}
    block_ratios = []
    for b in range(max(1, n // BLOCK)):
        walls = {}
        for m in ((None, "enabled") if b % 2 == 0 else ("enabled", None)):
            w = 0.0
            for _ in range(BLOCK):
                wall, cpu = runner.once(spec, m)
                totals[m][0] += wall
                totals[m][1] += cpu
                w += wall
            walls[m] = w
        block_ratios.append(walls["enabled"] / walls[None])
    return {"computes": max(1, n // BLOCK) * BLOCK,
            "plain_wall_s": totals[None][0], "profiled_wall_s": totals["enabled"][0],
            "plain_cpu_s": totals[None][1], "profiled_cpu_s": totals["enabled"][1],
            "wall_ratio": totals["enabled"][0] / totals[None][0],
            "cpu_ratio": totals["enabled"][1] / totals[None][1],
            "block_ratio": summary(block_ratios)}


# -- the breakdown ------------------------------------------------------------------


class Timers:
    """Wraps functions so that the CPU time of the thread running them accumulates
    by name (for the breakdown): wall time would count the moments a step waits for
    the GIL while other threads run tasks."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo = []

    def wrap(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.thread_time() - t
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def undo(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


STEPS = [
    # (module, owner attribute path, function, name)
    ("hook", "ProfilingOptimizer", "_choose", "hook: settings, auto-rechunk sync, plan"),
    ("recorder", "ComputeRecorder", "instrument", "graph rewrite (instrument)"),
    ("peaks", None, "track_peak", "peak tracking: start"),
    ("peaks", None, "untrack_peak", "peak tracking: stop"),
    ("recorder", None, "fold", "folding the records"),
    ("recorder", "ComputeRecorder", "apply", "applying the fold (with history write)"),
    ("history_service", "HistoryService", "save", "history write"),
    ("recorder", "ComputeRecorder", "finish", "compute finished (fold, apply)"),
]


def breakdown(runner: Runner, computes: int) -> dict:
    """Milliseconds per compute in each step, over ``computes`` profiled computes
    of each size (``profile_array`` mode)."""
    import importlib

    import dask

    out = {}
    for name, (_, spec, kind) in COMPUTES.items():
        spec = (spec, kind)
        timers = Timers()
        for module, owner, attr, label in STEPS:
            mod = importlib.import_module(f"dask.array._adaptive_chunking.{module}")
            target = getattr(mod, owner) if owner else mod
            timers.wrap(target, attr, label)
        timers.wrap(runner.engine, "profile_array", "profile_array")
        runner.switch("profile_array")
        try:
            for _ in range(computes):
                x, y = build(spec)
                pid = runner.engine.profile_array(x)
                dask.compute(y, scheduler="threads")
                runner.settle()
                runner.engine.remove_profile(pid)
        finally:
            timers.undo()
            del runner.engine.profile_array  # the instance attribute the wrap set
        out[name] = {label: timers.seconds.get(label, 0.0) / computes * 1e3
                     for label in [s[3] for s in STEPS] + ["profile_array"]}
    return out


class Sink:
    """A ComputeSink that keeps nothing: the cost of measuring alone."""

    def start(self, c):
        pass

    def register_failed(self, cid):
        pass

    def finish(self, c):
        pass

    def late(self, cid, r):
        pass

    def abandon(self, records, cid):
        pass


def wrapper_cost(n: int = 200_000) -> float:
    """Microseconds that measuring adds to one trivial task (MeasuredTask vs Task)."""
    from dask._task_spec import Task

    from dask.array._adaptive_chunking import peaks, tasks

    node = Task("k", int, 1)
    collector = tasks.ComputeCollector(n * 10, Sink())
    measured = tasks.MeasuredTask.wrap(node, collector, collector.cid, os.getpid(), 0, False)
    best_plain = best_wrapped = float("inf")
    for _ in range(5):
        collector.records.clear()
        t = time.perf_counter()
        for _ in range(n):
            node()
        best_plain = min(best_plain, time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            measured()
        best_wrapped = min(best_wrapped, time.perf_counter() - t)
    peaks.untrack_peak(collector)
    return (best_wrapped - best_plain) / n * 1e6


# -- processes ------------------------------------------------------------------------


def measure(args) -> dict:
    use_working_tree()
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(str(Path(tmp) / "history.sqlite3"))
        results: dict = {"pairs": {}, "tasks": {}}
        for name in args.computes:
            _, spec, kind = COMPUTES[name]
            for mode in MODES:
                print(f"{name} / {mode} ...", file=sys.stderr, flush=True)
                results["pairs"][f"{name}/{mode}"] = pairs(runner, (spec, kind), mode,
                                                           args.pairs)
                if mode == "profile_array":
                    results["tasks"][name] = runner.tasks
        if args.loop:
            print("loop ...", file=sys.stderr, flush=True)
            results["loop"] = loop(runner, args.loop)
        if args.breakdown:
            print("breakdown ...", file=sys.stderr, flush=True)
            results["breakdown"] = breakdown(runner, args.breakdown)
            results["wrapper_us"] = wrapper_cost()
        runner.switch(None)
    return results


def per_task(res: dict, mode: str, what: str = "wall") -> tuple[float, float]:
    """The fixed cost per compute (ms) and the cost per task (us), from the median
    differences of the small and large computes (a line through two points)."""
    small = res["pairs"][f"small/{mode}"][f"{what}_diff_ms"]["median"]
    large = res["pairs"][f"large/{mode}"][f"{what}_diff_ms"]["median"]
    ts, tl = res["tasks"]["small"], res["tasks"]["large"]
    slope = (large - small) / max(1, tl - ts)  # ms per task
    return small - slope * ts, slope * 1e3


def markdown(res: dict, args) -> str:
    m = machine()
    lines = ["# Profiling overhead", "",
             f"`python benchmarks/bench_overhead.py --pairs {args.pairs} --loop {args.loop} "
             f"--fresh {args.fresh}` on {m['cpus']} CPUs, dask {m['dask']}, numpy "
             f"{m['numpy']}. Threaded scheduler, history on; plain is Dask with the "
             "engine's optimizer uninstalled. Ratio = profiled / plain of one pair; "
             "median (quartiles) over the pairs.", "",
             "| compute | tasks | mode | plain wall | wall ratio | CPU ratio | "
             "wall cost per compute | CPU cost per compute |",
             "|---|---|---|---|---|---|---|---|"]
    for name in args.computes:
        for mode in MODES:
            p = res["pairs"][f"{name}/{mode}"]
            w, c = p["wall_ratio"], p["cpu_ratio"]
            dw, dc = p["wall_diff_ms"], p["cpu_diff_ms"]
            lines.append(
                f"| {name} | {res['tasks'].get(name, '')} | {mode} | "
                f"{p['plain_wall_s'] * 1e3:.1f} ms | "
                f"**{w['median']:.3f}** ({w['q1']:.3f}-{w['q3']:.3f}) | "
                f"**{c['median']:.3f}** ({c['q1']:.3f}-{c['q3']:.3f}) | "
                f"{dw['median']:.1f} ms ({dw['q1']:.1f} to {dw['q3']:.1f}) | "
                f"{dc['median']:.1f} ms ({dc['q1']:.1f} to {dc['q3']:.1f}) |")
    lines.append("")
    if {"small", "large"} <= set(args.computes):
        lines += ["Fixed cost per compute and cost per task, from the small and large "
                  "computes' median differences:", "",
                  "| mode | fixed (wall) | per task (wall) | fixed (CPU) | per task (CPU) |",
                  "|---|---|---|---|---|"]
        for mode in MODES:
            fw, tw = per_task(res, mode, "wall")
            fc, tc = per_task(res, mode, "cpu")
            lines.append(f"| {mode} | {fw:.2f} ms | {tw:.2f} us | {fc:.2f} ms | "
                         f"{tc:.2f} us |")
        lines.append("")
    if "loop" in res:
        lp = res["loop"]
        b = lp["block_ratio"]
        lines += [f"**Loop**: {lp['computes']} tiny computes (4 chunks) each way: plain "
                  f"{lp['plain_wall_s']:.2f} s, profiled {lp['profiled_wall_s']:.2f} s: "
                  f"wall **{lp['wall_ratio']:.3f}**, CPU **{lp['cpu_ratio']:.3f}** (blocks "
                  f"of {BLOCK}: median {b['median']:.3f}, quartiles {b['q1']:.3f}-"
                  f"{b['q3']:.3f}).", ""]
    if res.get("fresh"):
        lines += ["**Fresh processes** (11 pairs each): median wall ratio per process", "",
                  "| compute / mode | per process |", "|---|---|"]
        for key in res["fresh"][0]["pairs"]:
            per = [f["pairs"][key]["wall_ratio"]["median"] for f in res["fresh"]]
            lines.append(f"| {key} | " + ", ".join(f"{r:.3f}" for r in per) + " |")
        lines.append("")
    if "breakdown" in res:
        names = list(res["breakdown"])
        lines += ["**Breakdown** (CPU ms per compute of the thread running each step, "
                  "mean of the profiled computes; steps "
                  "nest: the fold and the history write are inside \"compute finished\", "
                  "the history write inside applying):", "",
                  "| step | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for label in res["breakdown"][names[0]]:
            lines.append(f"| {label} | " + " | ".join(
                f"{res['breakdown'][n][label]:.2f}" for n in names) + " |")
        lines += ["", f"The measured-task code alone: {res['wrapper_us']:.2f} us per task.",
                  ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=31)
    parser.add_argument("--loop", type=int, default=1000)
    parser.add_argument("--fresh", type=int, default=5)
    parser.add_argument("--breakdown", type=int, default=30)
    parser.add_argument("--computes", nargs="*", default=list(COMPUTES))
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        args = argparse.Namespace(**spec)
        print(json.dumps(measure(args)))
        return
    res = measure(args)
    res["fresh"] = []
    for i in range(args.fresh):
        print(f"fresh process {i + 1} ...", file=sys.stderr, flush=True)
        res["fresh"].append(in_fresh_process(__file__, {
            "pairs": 11, "loop": 0, "breakdown": 0, "computes": ["small", "transpose"]}))
    write("overhead", {"machine": machine(), "args": vars(args), **res}, markdown(res, args))


if __name__ == "__main__":
    main()
