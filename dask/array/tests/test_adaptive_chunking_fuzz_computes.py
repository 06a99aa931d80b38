"""Hypothesis fuzz of computes of profiled arrays: 0-d, zero-length, NaN chunks,
object, structured...; the result is unchanged and the profile truthful.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import dask
import dask.array as da
from dask.array import adaptive_chunking as ac

from adaptive_chunking_fuzz_harness import (
    PREFIX,
    STRUCT,
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    call,
    check_chunking,
    check_finite_numbers,
    check_recommendation,
    expect_clean_error,
    expect_no_engine_error,
    expect_rejection,
    fresh_engine,
    fuzz,
    known,
    only_budget_warnings,
    same_result,
    tried,
)


# ---------------------------------------------------------------------------
# Computes of profiled arrays: 0-d, zero-length, NaN chunks, object, structured...
# ---------------------------------------------------------------------------

DTYPES = ["f8", "i2", "?", "c16", "O", STRUCT, "U3", "M8[s]"]


def numpy_data(shape, dtype) -> np.ndarray:
    n = math.prod(shape)
    base = np.arange(n).reshape(shape)
    dtype = np.dtype(dtype)
    if dtype.kind == "O":
        flat = [i if i % 3 else f"s{i}" for i in range(n)]
        out = np.empty(n, dtype=object)
        out[:] = flat
        return out.reshape(shape)
    if dtype == STRUCT:
        out = np.zeros(shape, dtype=STRUCT)
        out["a"] = base
        out["b"] = base[..., None] * 0.5
        return out
    return base.astype(dtype)


@st.composite
def computes(draw):
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, max(1, n))) for n in shape)
    dtype = draw(st.sampled_from(DTYPES))
    source = draw(st.sampled_from(["from_array", "map_blocks", "ones"]))
    op = draw(st.sampled_from(["identity", "bool-index", "transpose", "reverse", "rechunk",
                               "sum", "concatenate"]))
    target = draw(st.sampled_from(["input", "result"]))
    scheduler = draw(st.sampled_from(["sync", "threads"]))
    return shape, chunks, dtype, source, op, target, scheduler


def build(shape, chunks, dtype, source, op):
    data = numpy_data(shape, dtype)
    if source == "ones":
        x = da.ones(shape, dtype=dtype, chunks=chunks or ())
    elif source == "from_array":
        x = da.from_array(data, chunks=chunks or ())
    else:
        x = da.from_array(data, chunks=chunks or ()).map_blocks(np.copy, dtype=data.dtype)
    if op == "bool-index" and x.ndim:
        mask = da.from_array(np.arange(shape[0]) % 2 == 0, chunks=x.chunks[0])
        mask = mask.map_blocks(np.copy, dtype=bool)
        y = x[mask]
    elif op == "transpose":
        y = x.T
    elif op == "reverse" and x.ndim:
        y = x[::-1]
    elif op == "rechunk":
        y = x.rechunk(1 if x.ndim else ())
    elif op == "sum" and np.dtype(dtype).kind in "fiubc":
        y = x.sum(axis=0 if x.ndim else None)
    elif op == "concatenate" and x.ndim:
        y = da.concatenate([x, x], axis=0)
    else:
        y = x
    return x, y


def profiled_compute(case):
    """Plain result, then the same compute with the array profiled (fresh engine)."""
    shape, chunks, dtype, source, op, target, scheduler = case
    engine = fresh_engine()
    x, y = build(shape, chunks, dtype, source, op)
    plain = call("plain compute", y.compute, scheduler=scheduler)
    assert plain.ok, f"the plain compute itself fails: {plain!r}"
    profiled = x if target == "input" else y
    made = call("profile_array", engine.profile_array, profiled)
    assert made.ok, repr(made)
    out = call("profiled compute", y.compute, scheduler=scheduler, seconds=20)
    return engine, x, y, profiled, made.result, plain, out


@fuzz(220)
@given(case=computes())
def test_compute_of_profiled_array_is_unchanged(engine, case):
    """A profiled compute returns exactly what the plain compute returns, with no engine error."""
    tried("profiled compute result")
    engine, _, _, _, _, plain, out = profiled_compute(case)
    assert out.ok, f"the profiled compute raised: {out!r}"
    assert same_result(out.result, plain.result), (
        f"profiled compute returned {out.result!r}, plain compute {plain.result!r}")
    expect_no_engine_error(out)
    tele = call("get_telemetry", engine.get_telemetry)
    assert tele.ok, repr(tele)


@fuzz(120)
@given(case=computes())
def test_profile_after_compute_is_truthful(engine, case):
    """After a compute of a profiled array, get_profile says it was computed, truthfully."""
    tried("profile after compute")
    engine, _, _, profiled, pid, _, out = profiled_compute(case)
    assert out.ok, repr(out)
    prof = call("get_profile", engine.get_profile, pid)
    assert prof.ok, repr(prof)
    p = prof.result
    assert p["status"] != "pending", (
        f"the profiled array was computed, yet its profile is still pending: "
        f"{p['recommendation_unavailable']!r} (stats {p['profiler_stats']})")
    assert p["computes"] >= 1
    why = p["recommendation_unavailable"] or ""
    if "recorded no tasks" in why:
        assert p["profiler_stats"]["total_chunks"] == 0, (
            f"get_profile says {why!r} but it recorded "
            f"{p['profiler_stats']['total_chunks']} tasks")
    if p["recommended_chunks"] is not None and known(profiled):
        check_chunking(p["recommended_chunks"], profiled.shape)
    check_finite_numbers(p["profiler_stats"], "profiler_stats")


@fuzz(120)
@given(case=computes())
def test_recommend_predict_apply_after_compute(engine, case):
    """recommend / predict / apply_recommendation on a computed profile: valid or a named error."""
    tried("recommend after compute")
    engine, _, _, profiled, pid, _, out = profiled_compute(case)
    assert out.ok, repr(out)
    if engine.get_profile(pid)["status"] == "pending":
        return  # not profiled at all: test_profile_after_compute_is_truthful
    size = math.prod(profiled.shape) if known(profiled) else None
    rec = call("recommend", engine.recommend, profiled)
    pred = call("predict", engine.predict, profiled, profiled.chunks)
    applied = call("apply_recommendation", engine.apply_recommendation, profiled)
    ran_nothing = engine.get_profile(pid)["profiler_stats"]["total_chunks"] == 0
    for o in (rec, pred, applied):
        only_budget_warnings(o)
        if ran_nothing and size:  # data in memory: nothing measured here to learn from,
            # unless the history holds other computes of the same workload
            expect_clean_error(o, names=("in memory", "profile an expression"))
        elif size is None:
            expect_rejection(o, names=("NaN", "compute_chunk_sizes"))
        elif size == 0:
            expect_clean_error(o, names=("empty", "no elements", "zero"),
                               values=(profiled.shape,))
        else:
            assert o.ok, repr(o)
    if rec.ok:
        check_recommendation(rec.result, profiled.shape, max(1, profiled.dtype.itemsize))
    if pred.ok:
        check_finite_numbers(pred.result, "predict()")
    if applied.ok:
        z = applied.result
        assert z.shape == profiled.shape and z.dtype == profiled.dtype
        expected = profiled.compute(scheduler="sync")
        assert same_result(z.compute(scheduler="sync"), expected)


@fuzz(3)
@given(case=computes())
def test_compute_with_processes_scheduler_is_unchanged(engine, case):
    """The same on the processes scheduler (few examples: each one pays for a pool)."""
    tried("profiled compute (processes)")
    case = case[:-1] + ("processes",)
    _, _, _, _, _, plain, out = profiled_compute(case)
    assert out.ok, f"the profiled compute raised: {out!r}"
    assert same_result(out.result, plain.result)
    expect_no_engine_error(out)


@fuzz(40)
@given(case=computes())
def test_enable_adaptive_chunking_compute_is_unchanged(engine, case):
    """enable_adaptive_chunking(): every compute is profiled, and returns the same."""
    tried("enable_adaptive_chunking")
    shape, chunks, dtype, source, op, _, scheduler = case
    _, y = build(shape, chunks, dtype, source, op)
    plain = y.compute(scheduler=scheduler)
    with dask.config.set({f"{PREFIX}.enabled": False}):
        en = call("enable_adaptive_chunking", ac.enable_adaptive_chunking)
        assert en.ok and en.result.enabled, repr(en)
        out = call("compute", y.compute, scheduler=scheduler)
        tele = call("get_telemetry", en.result.get_telemetry)
        dis = call("disable_adaptive_chunking", ac.disable_adaptive_chunking)
        assert dis.ok and not en.result.enabled, repr(dis)
    assert out.ok, repr(out)
    assert same_result(out.result, plain)
    expect_no_engine_error(out)
    assert tele.ok, repr(tele)
    check_finite_numbers(tele.result["profiler_stats"], "telemetry profiler_stats")
