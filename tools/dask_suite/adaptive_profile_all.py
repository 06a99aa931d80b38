"""A pytest plugin: profile every array compute of the session with the engine.

Loaded by ``tools/dask_suite/diff.py`` (``-p adaptive_profile_all``) when it runs
Dask's own test suite with the engine enabled. It sets
``array.adaptive-chunking.enabled`` before the tests import anything, and at the end
of the session writes how many computes the engine profiled, so that a run which
silently profiled nothing cannot pass for a profiled one.
"""

from __future__ import annotations

import json
import os

import dask


def pytest_configure(config):
    dask.config.set({"array.adaptive-chunking.enabled": True})
    from dask.array import adaptive_chunking  # noqa: F401 - installs the array_optimize hook


def pytest_sessionfinish(session, exitstatus):
    from dask.array import adaptive_chunking as ac

    telemetry = ac.get_adaptive_engine().get_telemetry()
    out = os.environ.get("ADAPTIVE_PROFILE_ALL_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump({"computes_profiled": telemetry["computes_profiled"],
                       "chunks": telemetry["profiler_stats"]["total_chunks"]}, f)
