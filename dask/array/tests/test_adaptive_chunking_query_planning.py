"""Dask's array expressions (``array.query-planning``), which the engine does not support yet.

Dask decides on query planning once, when ``dask.array`` is first imported, so each
case runs in a child process started with ``DASK_ARRAY__QUERY_PLANNING=True``; the
children assert with pytest themselves and print ``ok`` at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from dask.array._adaptive_chunking import expressions
from dask.array._adaptive_chunking.expressions import (
    QueryPlanningNotSupportedError,
    check_supported,
    query_planning_enabled,
)

# What every message must say: what is unsupported, and what to set.
SAYS_WHAT_TO_SET = (
    r"adaptive chunking does not support array\.query-planning .* yet.*"
    r"set array\.query-planning to False before dask\.array is first imported.*"
    r"unset the DASK_ARRAY__QUERY_PLANNING"
)

PRELUDE = f"""
import re
import warnings

import pytest

SAYS = {SAYS_WHAT_TO_SET!r}
"""


def run_child(code: str = "", *args: str, query_planning: bool = True, env=None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` (or ``python args``) in a child process; the overlay and this
    session's history path come with the environment that conftest.py set."""
    child_env = {**os.environ, **(env or {})}
    if query_planning:
        child_env["DASK_ARRAY__QUERY_PLANNING"] = "True"
    else:
        child_env.pop("DASK_ARRAY__QUERY_PLANNING", None)
    argv = list(args) if args else ["-c", PRELUDE + textwrap.dedent(code)]
    return subprocess.run([sys.executable, *argv], env=child_env, capture_output=True,
                          text=True, timeout=timeout)


def assert_ok(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_the_child_really_uses_array_expressions():
    out = run_child("""
        import dask.array as da
        from dask.array._adaptive_chunking.expressions import (
            is_expression, query_planning_enabled)

        assert query_planning_enabled()
        assert is_expression(da.ones(4, chunks=2))
        assert not hasattr(da.ones(4, chunks=2), "npartitions")  # what the demo tripped on
        print("ok")
    """)
    assert_ok(out)


def test_entry_points_that_take_an_array_raise_a_clear_error():
    out = run_child("""
        import numpy as np

        import dask.array as da
        from dask.array.adaptive_chunking import AdaptiveChunkingWarning, get_adaptive_engine
        from dask.array._adaptive_chunking.expressions import QueryPlanningNotSupportedError

        warnings.simplefilter("error", AdaptiveChunkingWarning)  # none is expected here
        engine = get_adaptive_engine()
        x = da.ones((100, 100), chunks=10)
        calls = {
            "profile_array": lambda a: engine.profile_array(a),
            "recommend": lambda a: engine.recommend(a),
            "predict": lambda a: engine.predict(a, 50),
            "apply_recommendation": lambda a: engine.apply_recommendation(a, 50),
        }
        for name, call in calls.items():
            # Not a TypeError (x is a real Dask array) and not a ValueError (which
            # callers catch for "nothing measured yet"): a RuntimeError.
            with pytest.raises(QueryPlanningNotSupportedError,
                               match=re.escape(name) + ": " + SAYS) as info:
                call(x)
            assert isinstance(info.value, RuntimeError)
            assert not isinstance(info.value, (TypeError, ValueError, NotImplementedError))
        # NumPy data too: the usual advice (da.from_array) would make an expression.
        with pytest.raises(QueryPlanningNotSupportedError, match=SAYS):
            engine.profile_array(np.ones((4, 4)))
        print("ok")
    """)
    assert_ok(out)


def test_xarray_paths_raise_the_same_error():
    pytest.importorskip("xarray")
    out = run_child("""
        import xarray as xr

        import dask.array as da
        from dask.array.adaptive_chunking import get_adaptive_engine
        from dask.array._adaptive_chunking.expressions import QueryPlanningNotSupportedError

        engine = get_adaptive_engine()
        arr = xr.DataArray(da.ones((20, 20), chunks=5), dims=("y", "x"), name="v")
        ds = arr.to_dataset()
        for call in (lambda: engine.profile_array(arr), lambda: engine.profile_array(ds),
                     lambda: engine.recommend(arr), lambda: engine.recommend(ds),
                     lambda: engine.predict(arr, {"y": 10}),
                     lambda: engine.apply_recommendation(arr, {"y": 10}),
                     lambda: engine.apply_recommendation(ds)):
            with pytest.raises(QueryPlanningNotSupportedError, match=SAYS):
                call()
        print("ok")
    """)
    assert_ok(out)


def test_enable_adaptive_chunking_warns_once_that_nothing_is_profiled():
    out = run_child("""
        import dask.array as da
        from dask.array.adaptive_chunking import (
            AdaptiveChunkingWarning, disable_adaptive_chunking, enable_adaptive_chunking)

        with pytest.warns(AdaptiveChunkingWarning, match=SAYS) as record:
            engine = enable_adaptive_chunking()
        assert len(record) == 1
        assert "no compute will be profiled" in str(record[0].message)
        assert record[0].filename == "<string>"  # points at the caller
        with warnings.catch_warnings(record=True) as again:
            warnings.simplefilter("always")
            enable_adaptive_chunking()
            (da.ones(10, chunks=5) + 1).sum().compute()
        assert again == []  # once per process
        assert engine.get_telemetry()["computes_profiled"] == 0
        disable_adaptive_chunking()
        print("ok")
    """)
    assert_ok(out)


def test_auto_rechunk_is_skipped_with_one_plain_warning(tmp_path):
    history = {"DASK_ARRAY__ADAPTIVE_CHUNKING__HISTORY_PATH": str(tmp_path / "h.sqlite3")}
    # A stored workload, made without query planning: with one, auto-rechunk used to
    # build stand-in arrays and fail with an AttributeError.
    stored = run_child("""
        import dask.array as da
        from dask.array.adaptive_chunking import get_adaptive_engine

        engine = get_adaptive_engine()
        x = da.random.random((400, 400), chunks=50)
        pid = engine.profile_array(x)
        (x + 1).sum().compute(scheduler="sync")
        engine.save_profile(pid)
        assert engine.load_history()
        print("ok")
    """, query_planning=False, env=history)
    assert_ok(stored)
    out = run_child("""
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            import dask.array as da
            from dask.array.adaptive_chunking import get_adaptive_engine

            before = da.ones((2000, 2000), chunks="auto").chunks
            get_adaptive_engine()
            (da.ones((100, 100), chunks="auto") + 1).sum().compute()
        mine = [str(w.message) for w in record if type(w.message).__name__ ==
                "AdaptiveChunkingWarning"]
        assert len(mine) == 1, mine
        assert re.search(SAYS, mine[0]) and "auto-rechunk is skipped" in mine[0], mine[0]
        assert not any("could not apply auto-rechunk" in m for m in mine)
        print("ok")
    """, env={**history, "DASK_ARRAY__ADAPTIVE_CHUNKING__AUTO_RECHUNK": "True"})
    assert_ok(out)


@pytest.mark.parametrize("command", [
    ["--size", "100", "--chunk", "50"],  # the demo
    ["demo", "--size", "100", "--chunk", "50", "--scheduler", "sync"],
    ["recommend", "--shape", "1000,1000"],  # builds an array too
])
def test_demo_and_recommend_command_exit_with_one_line(command):
    out = run_child("", "-m", "dask.array.adaptive_chunking", *command)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: ")
    assert re.search(SAYS_WHAT_TO_SET, lines[0]), lines[0]


# -- in this process (query planning off) -------------------------------------


def test_off_here_and_decided_at_import(monkeypatch):
    import dask

    assert not query_planning_enabled()
    # dask.array decided at its import; a later setting changes nothing, and the
    # check says what is in effect (without Dask's RuntimeWarning about it).
    with dask.config.set({"array.query-planning": True}):
        assert not query_planning_enabled()
    # Before dask.array decides, the setting is read as Dask reads it.
    monkeypatch.setattr(sys.modules["dask.array"], "ARRAY_EXPR_ENABLED", None)
    for value, expected in [(True, True), (None, False), (False, False)]:
        with dask.config.set({"array.query-planning": value}):
            assert query_planning_enabled() is expected


def test_classic_arrays_and_other_objects_pass():
    import numpy as np

    import dask.array as da

    for obj in (da.ones((4, 4), chunks=2), np.ones(3), [1, 2], None):
        check_supported(obj, "profile_array")  # left to the entry point's own checks


class _Expression:  # stands in for an array expression made with query planning off
    __module__ = "dask.array._array_expr._collection"


class _DataArray:  # an xarray DataArray holding one, told apart by its module
    __module__ = "xarray.core.dataarray"

    def __init__(self, data):
        self.data = data


class _Dataset:
    __module__ = "xarray.core.dataset"

    def __init__(self, **data_vars):
        self.data_vars = data_vars


def test_an_expression_array_is_refused_even_with_query_planning_off():
    from dask.array.adaptive_chunking import AdaptiveChunkingEngine

    engine = AdaptiveChunkingEngine()
    try:
        with pytest.raises(QueryPlanningNotSupportedError,
                           match="recommend: " + SAYS_WHAT_TO_SET) as info:
            engine.recommend(_Expression())
        assert "got an array made by them" in str(info.value)
    finally:
        engine.close()
    for obj in (_DataArray(_Expression()), _Dataset(v=_DataArray(_Expression()))):
        with pytest.raises(QueryPlanningNotSupportedError, match=SAYS_WHAT_TO_SET):
            check_supported(obj, "profile_array")
    check_supported(_Dataset(v=_DataArray([1.0])), "profile_array")  # NumPy-backed: left


def test_not_supported_error_is_a_runtime_error():
    assert issubclass(QueryPlanningNotSupportedError, RuntimeError)
    assert not issubclass(QueryPlanningNotSupportedError, (TypeError, ValueError))
    assert expressions.__all__
