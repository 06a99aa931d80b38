"""The floor of the profiling overhead: what each layer of the per-task measurement costs.

``bench_overhead.py`` gives the engine's cost as a whole and its steps timed one by
one; this one takes the measured task apart to find what a cheaper measurement
could save. Each variant replaces part of the engine for one fresh process and
times the ``transpose`` and ``small`` computes of ``bench_overhead.py`` (with
``enable_adaptive_chunking()``, history on) in interleaved plain/profiled pairs:

* ``hook``: the optimizer hook runs and plans, the graph is left as it is;
* ``rewrite``: every task is replaced by a measured task whose call only runs the
  task (no clock, no record: the graph rewrite and the subclass's call);
* ``clock``: the measured task reads the clock around the task and records the
  times, with the nesting guard, and nothing else (what every task would cost if
  sizes and memory were read on a sample of tasks only);
* ``full``: the engine as it ships.

Each variant runs ``--rounds`` times, the variants' order reversed every round, so
drift over the run hits them alike. Run alone on a quiet machine:
``python benchmarks/bench_overhead_floor.py`` (about 13 minutes); writes
``benchmarks/results/overhead-floor.{json,md}`` (``--markdown`` remakes the
tables from the JSON alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from _util import RESULTS, in_fresh_process, machine, use_working_tree, write

VARIANTS = ("hook", "rewrite", "clock", "full")


def patch(variant: str) -> None:
    """Cut the engine down to ``variant`` (see the module docstring), in this process."""
    from dask._task_spec import Task
    from dask.array._adaptive_chunking import recorder, records, tasks

    if variant == "hook":
        recorder.ComputeRecorder.instrument = lambda self, dsk, keys, plan: dsk
    elif variant == "rewrite":
        tasks.MeasuredTask.__call__ = lambda self, values=(): Task.__call__(self, values)
    elif variant == "clock":
        from threading import get_ident
        from time import perf_counter

        in_task, record = tasks.in_task, records.local_record

        def clock(self, values=()):
            collector = self.collector
            if not collector.started:
                collector.start()
            depth = getattr(in_task, "depth", 0)
            in_task.depth = depth + 1
            t0 = perf_counter()
            result = Task.__call__(self, values)
            t1 = perf_counter()
            in_task.depth = depth
            collector.add(record(self.key, t0, t1, 0, 0, 0, None, None, get_ident(),
                                 self.tag, self.is_output, False, 0, 0, 0))
            return result

        tasks.MeasuredTask.__call__ = clock
    elif variant != "full":
        raise ValueError(f"unknown variant {variant!r}: pick one of {VARIANTS}")


def child(spec: dict) -> dict:
    """One variant's pairs, in this (fresh) process."""
    use_working_tree()
    import bench_overhead

    patch(spec["variant"])
    runner = bench_overhead.Runner(os.path.join(tempfile.mkdtemp(), "history.sqlite"))
    out = {}
    for name in spec["computes"]:
        res = bench_overhead.pairs(runner, bench_overhead.COMPUTES[name][1:], "enabled",
                                   spec["pairs"])
        out[name] = {k: res[k] for k in ("wall_ratio", "cpu_ratio", "wall_diff_ms",
                                          "cpu_diff_ms", "plain_wall_s")}
    return out


def markdown(res: dict, args) -> str:
    lines = [
        "# The floor of the profiling overhead",
        "",
        f"`python benchmarks/bench_overhead_floor.py --pairs {args.pairs} --rounds "
        f"{args.rounds}`: each variant in a fresh process, {args.pairs} interleaved "
        "plain/profiled pairs per compute, `enable_adaptive_chunking()`, threaded "
        "scheduler. Median ratio (quartiles) and median extra milliseconds, one line "
        "per round.",
        "",
        "| compute | variant | wall ratio | CPU ratio | extra wall ms | plain s |",
        "|---|---|---|---|---|---|",
        *rounds_table(res, args),
    ]
    lines += [
        "",
        "The median of the rounds' median wall ratios, and their range:",
        "",
        "| variant | " + " | ".join(args.computes) + " |",
        "|---|" + "---|" * len(args.computes),
    ]
    for variant in args.variants:
        cells = []
        for name in args.computes:
            medians = sorted(run[name]["wall_ratio"]["median"] for run in res[variant])
            cells.append(f"{statistics.median(medians):.3f} ({medians[0]:.3f}-{medians[-1]:.3f})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rounds_table(res: dict, args) -> list[str]:
    """One line per round and compute: its ratios' medians and quartiles."""
    lines = []
    for name in args.computes:
        for variant in args.variants:
            for run in res[variant]:
                r = run[name]
                w, c = r["wall_ratio"], r["cpu_ratio"]
                lines.append(
                    f"| {name} | {variant} | {w['median']:.3f} ({w['q1']:.3f}-{w['q3']:.3f})"
                    f" | {c['median']:.3f} ({c['q1']:.3f}-{c['q3']:.3f})"
                    f" | {r['wall_diff_ms']['median']:.1f} | {r['plain_wall_s']:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=31)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--computes", nargs="*", default=["transpose", "small"])
    parser.add_argument("--child")
    parser.add_argument("--markdown", action="store_true",
                        help="rewrite the .md file from the last run's .json, without running")
    args = parser.parse_args()
    if args.markdown:
        saved = json.loads((RESULTS / "overhead-floor.json").read_text())
        args = argparse.Namespace(**saved["args"])
        write("overhead-floor", saved, markdown(saved["variants"], args))
        return
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}: pick from {list(VARIANTS)}")
    res: dict = {v: [] for v in args.variants}
    for i in range(args.rounds):
        order = args.variants if i % 2 == 0 else args.variants[::-1]
        for variant in order:
            print(f"round {i + 1}: {variant} ...", file=sys.stderr, flush=True)
            res[variant].append(in_fresh_process(__file__, {
                "variant": variant, "pairs": args.pairs, "computes": args.computes}))
    write("overhead-floor", {"machine": machine(), "args": vars(args), "variants": res},
          markdown(res, args))


if __name__ == "__main__":
    main()
