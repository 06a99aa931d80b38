"""Helpers shared by the benchmarks: import the working tree's overlay, write results."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def use_working_tree() -> None:
    """Import ``dask.array.adaptive_chunking`` from this checkout, as the tests do."""
    overlay = str(ROOT / "tools" / "overlay")
    if overlay not in sys.path:
        sys.path.insert(0, overlay)
    import dask_overlay_dev

    dask_overlay_dev.install()


def machine() -> dict:
    import os

    import numpy

    import dask

    return {
        "python": platform.python_version(),
        "dask": dask.__version__,
        "numpy": numpy.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write(name: str, data: dict, markdown: str) -> None:
    """Write ``results/<name>.json`` and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


def in_fresh_process(script: str, spec: dict) -> dict:
    """Run ``script --child <spec as JSON>`` in a new Python; its last stdout line
    is the JSON result."""
    proc = subprocess.run(
        [sys.executable, str(Path(script).resolve()), "--child", json.dumps(spec)],
        capture_output=True, text=True, cwd=ROOT,
    )
    if proc.returncode:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
