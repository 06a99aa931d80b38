"""Fixtures shared by the adaptive chunking tests: a clean engine and clean globals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dask.callbacks import Callback

import dask

# The fuzz modules import their shared harness (adaptive_chunking_fuzz_harness.py, not a
# test module) by name: in --import-mode=importlib pytest puts no test directory on
# sys.path, and ``dask.array.tests`` is the installed Dask's package, not this folder.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# Imported by the fuzz modules, never collected itself (not even for doctests).
collect_ignore = ["adaptive_chunking_fuzz_harness.py"]


@pytest.fixture
def engine(tmp_path):
    """The global engine, fresh, with a history of its own (no test learns from
    another's), and no hook or callback left behind afterwards."""
    from dask.array import adaptive_chunking as ac

    before = dict(dask.config.config.get("array", {}).get("adaptive-chunking", {}))
    chunk_size = dask.config.config.get("array", {}).get("chunk-size")
    ac.reset_adaptive_engine()
    assert "array_optimize" not in dask.config.config
    history = str(tmp_path / "history.sqlite3")
    with dask.config.set({"array.adaptive-chunking.history-path": history}):
        yield ac.get_adaptive_engine()
    ac.reset_adaptive_engine()
    assert "array_optimize" not in dask.config.config, "optimizer hook left installed"
    assert not Callback.active, "a callback was left registered"
    after = dict(dask.config.config.get("array", {}).get("adaptive-chunking", {}))
    assert after == before, "config left changed"
    assert dask.config.config.get("array", {}).get("chunk-size") == chunk_size, (
        "array.chunk-size left changed")


@pytest.fixture
def trim_heap():
    """A function handing the C allocator's free heap back to the system (glibc), so
    that a compute's high-water mark starts from the memory in use, as a prediction
    does, not from what earlier tests left resident."""
    import ctypes

    def trim() -> None:
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass

    return trim
