"""Fixtures shared by the adaptive chunking tests: a clean engine and clean globals."""

from __future__ import annotations

import pytest
from dask.callbacks import Callback

import dask


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
