"""Run Dask's own array tests without and with the engine; diff the outcomes.

Usage::

    python tools/dask_suite/diff.py [MODULE ...] [--out DIR] [-- PYTEST ARGS]

MODULE defaults to ``dask.array.tests`` (the whole array suite shipped in the
installed ``dask``). Both runs use the same pytest command in a fresh process; the
second loads ``adaptive_profile_all`` (every array compute profiled by the working
tree's engine). Outcomes per test id come from JUnit XML. Prints the counts, every
test whose outcome differs, and how many computes the profiled run measured; exits
1 when any outcome differs or nothing was profiled.

A test whose outcome differs is run again, alone, both ways (``--confirm`` times,
default 2): a difference that does not come back in every re-run is reported as
flaky and does not fail the run, one that does is a real difference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OVERLAY = ROOT / "tools" / "overlay"


def outcomes(junit: Path) -> dict[str, str]:
    """Test id -> passed, failed, error, skipped (xfail counts as skipped)."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        tid = f"{case.get('classname')}::{case.get('name')}"
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = {"failure": "failed"}.get(child.tag, child.tag)
                break
        out[tid] = kind
    return out


def node_id(test: str) -> str:
    """``package.module[.Class]::name`` (JUnit's naming) -> a pytest node id."""
    dotted, name = test.split("::", 1)
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        spec = importlib.util.find_spec(".".join(parts[:cut]))
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            return "::".join([spec.origin, *parts[cut:], name])
    raise ValueError(f"cannot find the module of test {test!r}")


def confirm(differ: dict[str, tuple[str, str]], extra: list[str], out: Path,
            times: int) -> dict[str, tuple[str, str]]:
    """The differences that come back each time the test is run alone, both ways."""
    real = dict(differ)
    for i in range(times):
        if not real:
            break
        ids = [node_id(t) for t in real]
        run(ids, extra, out / f"plain-{i}.xml", False, out / "report-confirm.json",
            pyargs=False)
        run(ids, extra, out / f"profiled-{i}.xml", True, out / "report-confirm.json",
            pyargs=False)
        plain, prof = outcomes(out / f"plain-{i}.xml"), outcomes(out / f"profiled-{i}.xml")
        # Run by path, JUnit names the module without its package: match by suffix.
        def of(found, t):
            return next((v for k, v in found.items() if t == k or t.endswith("." + k)),
                        "absent")
        real = {t: ab for t, ab in real.items() if of(plain, t) != of(prof, t)}
    return real


def run(modules: list[str], extra: list[str], junit: Path, profiled: bool,
        report: Path, pyargs: bool = True) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(OVERLAY), str(HERE), env.get("PYTHONPATH")) if p
    )
    cmd = [sys.executable, "-m", "pytest", *(["--pyargs"] if pyargs else []), *modules, "-q",
           "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    if profiled:
        cmd += ["-p", "adaptive_profile_all"]
        env["ADAPTIVE_PROFILE_ALL_REPORT"] = str(report)
    start = time.perf_counter()
    # From a neutral directory: this repository's pytest settings are not Dask's.
    subprocess.run(cmd + extra, cwd=tempfile.gettempdir(), env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=["dask.array.tests"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--confirm", type=int, default=2,
                        help="re-runs of each differing test (default 2)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="dask-suite-"))
    out.mkdir(parents=True, exist_ok=True)
    base_s = run(args.modules, extra, out / "plain.xml", False, out / "report.json")
    prof_s = run(args.modules, extra, out / "profiled.xml", True, out / "report.json")
    plain, prof = outcomes(out / "plain.xml"), outcomes(out / "profiled.xml")
    report = json.loads((out / "report.json").read_text())
    differ = {t: (plain.get(t, "absent"), prof.get(t, "absent"))
              for t in set(plain) | set(prof) if plain.get(t) != prof.get(t)}
    print(f"plain:    {len(plain)} tests {dict(Counter(plain.values()))} in {base_s:.0f} s")
    print(f"profiled: {len(prof)} tests {dict(Counter(prof.values()))} in {prof_s:.0f} s")
    print(f"profiled computes: {report['computes_profiled']}, chunks: {report['chunks']}")
    real = confirm(differ, extra, out, args.confirm) if differ else {}
    print(f"outcomes that differ: {len(real)}"
          + (f" ({len(differ) - len(real)} more differed once: flaky)" if differ else ""))
    for t, (a, b) in sorted(differ.items()):
        print(f"  {t}: {a} -> {b}" + ("" if t in real else "  (flaky: not repeated)"))
    return 1 if real or not report["computes_profiled"] else 0


if __name__ == "__main__":
    sys.exit(main())
