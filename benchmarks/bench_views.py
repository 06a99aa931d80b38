"""What the user-facing surface costs: views, xarray, the progress bar, the command line.

Times, each the median of ``--repeats`` runs:

- ``get_profile`` of a 10,000-task profile (it recommends, and predicts the current
  chunks), and the text and HTML views of the profile, the recommendation and the
  telemetry;
- xarray: ``profile_array``, ``recommend`` and ``apply_recommendation`` of a Dataset
  of ``--variables`` variables;
- a 10,000-task compute with no progress bar, Dask's ``ProgressBar`` and
  ``ProfileProgressBar``;
- in a new process each time: importing ``dask.array`` (for reference: with xarray
  installed, Dask imports it, and pandas and SciPy), importing the module,
  ``dask adaptive-chunking --help`` and ``dask adaptive-chunking config``.

Run: ``python benchmarks/bench_views.py``; writes ``benchmarks/results/views.{json,md}``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _util import ROOT, machine, use_working_tree, write


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def views(repeats: int) -> dict:
    import dask.array as da
    from dask.array import adaptive_chunking as ac

    engine = ac.get_adaptive_engine()
    x = da.random.random((2000, 2000), chunks=20)  # 10,000 chunks
    pid = engine.profile_array(x)
    (x + 1).sum().compute()
    profile = engine.get_profile(pid)
    rec = engine.recommend(x, pid)
    telemetry = engine.get_telemetry()
    out = {
        "tasks": profile["profiler_stats"]["total_chunks"],
        "get_profile_ms": median_ms(lambda: engine.get_profile(pid), repeats),
        "profile_text_ms": median_ms(lambda: repr(profile), repeats),
        "profile_html_ms": median_ms(profile._repr_html_, repeats),
        "recommendation_text_ms": median_ms(lambda: repr(rec), repeats),
        "recommendation_html_ms": median_ms(rec._repr_html_, repeats),
        "telemetry_ms": median_ms(engine.get_telemetry, repeats),
        "telemetry_html_ms": median_ms(telemetry._repr_html_, repeats),
    }
    engine.remove_profile(pid)
    return out


def xarray_costs(variables: int, repeats: int) -> dict:
    import numpy as np
    import xarray as xr

    from dask.array import adaptive_chunking as ac

    engine = ac.get_adaptive_engine()
    rng = np.random.default_rng(0)
    ds = xr.Dataset({
        f"v{i}": (("time", "y", "x"), rng.random((24, 100, 100))) for i in range(variables)
    }).chunk({"time": 1, "y": 50, "x": 50})
    gid = engine.profile_array(ds)
    start = time.perf_counter()
    (ds - ds.mean("time")).std("time").compute()
    compute_ms = (time.perf_counter() - start) * 1e3
    out = {
        "variables": variables,
        "profile_array_ms": median_ms(lambda: engine.remove_profile(engine.profile_array(ds)),
                                      repeats),
        "compute_ms": compute_ms,
        "get_profile_ms": median_ms(lambda: engine.get_profile(gid), repeats),
        "recommend_ms": median_ms(lambda: engine.recommend(ds, gid), repeats),
        "apply_ms": median_ms(lambda: engine.apply_recommendation(ds, gid), repeats),
    }
    engine.remove_profile(gid)
    return out


def progress_costs(repeats: int) -> dict:
    from dask.diagnostics import ProgressBar

    import dask.array as da
    from dask.array.adaptive_chunking import ProfileProgressBar, get_adaptive_engine

    engine = get_adaptive_engine()
    x = da.random.random((2000, 2000), chunks=20)
    pid = engine.profile_array(x)
    y = (x + 1).sum()

    def with_bar(bar):
        def run():
            with bar(out=io.StringIO()):
                y.compute()
        return run

    out = {
        "no_bar_ms": median_ms(y.compute, repeats),
        "progressbar_ms": median_ms(with_bar(ProgressBar), repeats),
        "profileprogressbar_ms": median_ms(with_bar(ProfileProgressBar), repeats),
    }
    engine.remove_profile(pid)
    return out


def cli_costs(repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools" / "overlay"))
    import_code = "import dask.array.adaptive_chunking"
    cli = "from dask.array._adaptive_chunking.cli import main; import sys; sys.exit(main({}))"

    def run(code):
        return lambda: subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                      capture_output=True)

    return {
        "python_ms": median_ms(run("pass"), repeats),
        "dask_array_ms": median_ms(run("import dask.array"), repeats),
        "import_ms": median_ms(run(import_code), repeats),
        "help_ms": median_ms(run(cli.format("['--help']")), repeats),
        "config_ms": median_ms(run(cli.format("['config']")), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--variables", type=int, default=10)
    args = parser.parse_args()
    use_working_tree()
    import dask

    dask.config.set({"array.adaptive-chunking.history-path":
                     f"{tempfile.mkdtemp()}/h.sqlite3"})
    result = {
        "views": views(args.repeats),
        "xarray": xarray_costs(args.variables, args.repeats),
        "progress": progress_costs(args.repeats),
        "cli": cli_costs(args.repeats),
    }
    print(result, flush=True)
    v, x, p, c = result["views"], result["xarray"], result["progress"], result["cli"]
    lines = [
        "# What the user-facing surface costs",
        "",
        f"`python benchmarks/bench_views.py --repeats {args.repeats}` on {machine()['cpus']} "
        "CPUs; medians in ms.",
        "",
        f"## Views of a {v['tasks']:,}-task profile",
        "",
        "| get_profile | profile text | profile HTML | recommendation text | "
        "recommendation HTML | get_telemetry | telemetry HTML |",
        "|---|---|---|---|---|---|---|",
        f"| {v['get_profile_ms']:.1f} | {v['profile_text_ms']:.2f} | "
        f"{v['profile_html_ms']:.2f} | {v['recommendation_text_ms']:.3f} | "
        f"{v['recommendation_html_ms']:.2f} | {v['telemetry_ms']:.1f} | "
        f"{v['telemetry_html_ms']:.2f} |",
        "",
        f"## xarray: a Dataset of {x['variables']} variables (24 x 100 x 100 each, "
        "in 1 x 50 x 50 chunks)",
        "",
        "| profile_array | its anomaly compute | get_profile | recommend | "
        "apply_recommendation |",
        "|---|---|---|---|---|",
        f"| {x['profile_array_ms']:.1f} | {x['compute_ms']:.0f} | {x['get_profile_ms']:.1f} "
        f"| {x['recommend_ms']:.1f} | {x['apply_ms']:.1f} |",
        "",
        "## Progress bars on a 10,000-task profiled compute",
        "",
        "| no bar | Dask's ProgressBar | ProfileProgressBar |",
        "|---|---|---|",
        f"| {p['no_bar_ms']:.0f} | {p['progressbar_ms']:.0f} | "
        f"{p['profileprogressbar_ms']:.0f} |",
        "",
        "## Command line, each in a new process",
        "",
        "| python -c pass | import dask.array | import the module | --help | config |",
        "|---|---|---|---|---|",
        f"| {c['python_ms']:.0f} | {c['dask_array_ms']:.0f} | {c['import_ms']:.0f} "
        f"| {c['help_ms']:.0f} | {c['config_ms']:.0f} |",
        "",
    ]
    write("views", {"machine": machine(), "repeats": args.repeats, **result},
          "\n".join(lines))


if __name__ == "__main__":
    main()
