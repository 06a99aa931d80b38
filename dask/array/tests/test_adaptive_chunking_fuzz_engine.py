"""Hypothesis fuzz of the engine's entry points (``profile_array``, ``get_profile``,
``get_profiler``, ``remove_profile``, ``recommend``, ``predict``,
``apply_recommendation``, ``apply_scheduler_config``) with lazily defined arrays of
every kind (the array zoo).

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import dask.array as da
from dask.array.adaptive_chunking import ChunkProfiler

from adaptive_chunking_fuzz_harness import (
    SATURATION_KEY,
    ZOO_NAMES,
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    call,
    check_finite_numbers,
    check_recommendation,
    expect_clean_error,
    expect_rejection,
    fuzz,
    known,
    only_budget_warnings,
    pilot_of,
    same_result,
    tried,
    zoo,
)


# ---------------------------------------------------------------------------
# The engine's entry points, with lazily defined arrays of every kind
# ---------------------------------------------------------------------------


NOT_ARRAYS = [np.ones(3), [1, 2], None, "x", 5]


@fuzz(120)
@given(obj=st.one_of(st.sampled_from(ZOO_NAMES), st.sampled_from(range(len(NOT_ARRAYS)))),
       pid=st.sampled_from(["own", "nope", None, 5, ["own"], ("own",), {}, b"x", "", 1.5]))
def test_engine_profile_get_remove(engine, obj, pid):
    """profile_array, get_profile, get_profiler, remove_profile: any input, no crash."""
    tried("engine profile/get/remove")
    array = zoo()[obj] if isinstance(obj, str) else NOT_ARRAYS[obj]
    made = call("profile_array", engine.profile_array, array, seconds=10)
    if isinstance(obj, int):
        expect_rejection(made, names=("dask.array.Array", "from_array"))
        own = None
    else:
        assert made.ok, repr(made)
        own = made.result
        assert isinstance(own, str) and own in engine.profile_ids
        profile = call("get_profile", engine.get_profile, own)
        assert profile.ok, repr(profile)
        assert profile.result["status"] == "pending"
        assert profile.result["recommended_chunks"] is None
        assert profile.result["recommendation_unavailable"]
        assert tuple(profile.result["array_shape"]) == tuple(array.shape) or not known(array)
    if pid == "own" or pid == ["own"] or pid == ("own",):
        pid = own if pid == "own" else type(pid)([own])
    valid = isinstance(pid, str) and pid in engine.profile_ids
    for what, fn in (("get_profile", engine.get_profile),
                     ("get_profiler", engine.get_profiler),
                     ("remove_profile", engine.remove_profile)):
        out = call(what, fn, pid)
        if valid:
            assert out.ok, repr(out)
            if what == "get_profiler":
                assert isinstance(out.result, ChunkProfiler)
        else:
            expect_rejection(out, names=("no profile",), values=(pid,),
                             allowed=(KeyError, TypeError, ValueError))
    if valid:
        assert pid not in engine.profile_ids
        gone = call("get_profile(removed)", engine.get_profile, pid)
        expect_rejection(gone, values=(pid,), allowed=(KeyError,))
    tele = call("get_telemetry", engine.get_telemetry)
    assert tele.ok, repr(tele)


PROFILE_IDS = ["pilot", None, ["pilot"], [], "nope", 5, ["pilot", "nope"], {}]
WORKLOADS = ["none", "derived", "unrelated", "empty-list", "lots", 5, "mixed"]


def resolve_pid(pid, pilot_id):
    if pid == "pilot":
        return pilot_id
    if isinstance(pid, list):
        return [pilot_id if p == "pilot" else p for p in pid]
    return pid


def make_workload(kind, array):
    other = da.ones(5, chunks=5)
    return {
        "none": None, "derived": (array + 0) if array.dtype.kind in "fiucb" else array[...],
        "unrelated": other.sum(), "empty-list": [], "lots": "lots", 5: 5,
        "mixed": [array[...], other],
    }[kind]


def pid_verdict(pid, pilot_id, engine, array) -> str:
    """'good', 'unknown' (KeyError), or 'bad' (ValueError/TypeError)."""
    if pid is None:
        return "bad"  # the array itself was never computed under a profile
    ids = pid if isinstance(pid, (list, tuple)) else [pid]
    if not ids:
        return "bad"
    if all(isinstance(i, str) and i in engine.profile_ids for i in ids):
        return "good"
    return "unknown"


@fuzz(150)
@given(name=st.sampled_from(ZOO_NAMES + ["not-an-array"]), pid=st.sampled_from(PROFILE_IDS),
       workload=st.sampled_from(WORKLOADS))
def test_engine_recommend(engine, name, pid, workload):
    """engine.recommend(array, profile_id, workload=): valid chunks or an error by name."""
    tried("engine.recommend")
    _, pilot_id = pilot_of(engine)
    array = np.ones(3) if name == "not-an-array" else zoo()[name]
    pid = resolve_pid(pid, pilot_id)
    wl = None if name == "not-an-array" else make_workload(workload, array)
    out = call("recommend", engine.recommend, array, pid, workload=wl, seconds=20)
    only_budget_warnings(out)
    if name == "not-an-array":
        expect_rejection(out, names=("dask.array.Array",))
        return
    if not known(array):
        expect_rejection(out, names=("NaN", "compute_chunk_sizes"))
        return
    verdict = pid_verdict(pid, pilot_id, engine, array)
    if verdict == "unknown":
        expect_rejection(out, names=("no profile",), values=(pid,),
                         allowed=(KeyError, ValueError, TypeError))
        return
    bad_workload = workload in ("unrelated", "empty-list", "lots", 5, "mixed")
    if verdict == "bad":  # no profile: the history of a given workload may stand in
        expect_rejection(out, names=("profile_id", "profile_array", "profile id")
                         + (("workload",) if bad_workload else ()))
        return
    if bad_workload:
        expect_rejection(out, names=("workload",))
        return
    if math.prod(array.shape) == 0:
        expect_clean_error(out, names=("empty", "no elements", "zero"),
                           values=(array.shape,))
    else:
        assert out.ok, repr(out)
    if out.ok:
        check_recommendation(out.result, array.shape, max(1, array.dtype.itemsize))


def chunk_choices(array):
    shape = array.shape
    choices = [array.chunks, "auto", "lots", 0, -2, math.nan, 2.5, None, "1e400",
               (1,) * (len(shape) + 1), -1]
    if math.prod(shape) <= 10**6:
        choices += [1, (2,) * len(shape)]
    else:  # bounded block counts: normalize_chunks is O(blocks) in Dask itself
        choices += [tuple(max(1, n // 100) for n in shape)]
    return choices


@fuzz(150)
@given(name=st.sampled_from(ZOO_NAMES), data=st.data(),
       pid=st.sampled_from(["pilot", None, ["pilot"], "nope"]))
def test_engine_predict(engine, name, data, pid):
    """engine.predict(array, chunks, profile_id): sane predictions or an error by name."""
    tried("engine.predict")
    _, pilot_id = pilot_of(engine)
    array = zoo()[name]
    chunks = data.draw(st.sampled_from(chunk_choices(array)), label="chunks")
    pid = resolve_pid(pid, pilot_id)
    out = call("predict", engine.predict, array, chunks, pid, seconds=20)
    if not known(array):
        expect_rejection(out, names=("NaN", "compute_chunk_sizes"))
        return
    verdict = pid_verdict(pid, pilot_id, engine, array)
    if verdict != "good":
        expect_rejection(out, names=("no profile", "profile_array", "profile"), values=(pid,),
                         allowed=(KeyError, ValueError, TypeError))
        return
    from dask.array.core import normalize_chunks

    try:
        normalize_chunks(chunks, array.shape, dtype=array.dtype)
        chunks_ok = True
    except Exception:  # noqa: BLE001 - Dask itself rejects them
        chunks_ok = False
    if not chunks_ok:
        expect_rejection(out, names=("chunks",), values=(chunks,))
        return
    if math.prod(array.shape) == 0:
        expect_clean_error(out, names=("empty", "no elements", "zero"), values=(array.shape,))
    else:
        assert out.ok, repr(out)
    if out.ok:
        p = out.result
        check_finite_numbers(p, "predict()")
        assert p["predicted_tasks"] >= 1
        assert p["predicted_peak_memory_mb"] >= 0 and p["predicted_time_s"] >= 0
        assert len(p["chunks"]) == array.ndim


SMALL_ZOO = [n for n in ZOO_NAMES if not n.startswith("huge")]


@fuzz(150)
@given(name=st.sampled_from(SMALL_ZOO + ["not-an-array"]),
       rec=st.sampled_from(["none", "pilot", ["pilot"], "recommendation", "chunks", "auto",
                            "lots", 5, -1, math.nan, 2.5, ["pilot", "nope"], (0,), "nope"]))
def test_engine_apply_recommendation(engine, name, rec):
    """apply_recommendation(array, rec): a rechunked array with the same values, or an error.

    Not with the 10**12-element arrays: there the rechunk graph Dask itself builds takes
    minutes (``da.zeros((10**6, 10**6)).rechunk(400)``), with or without the engine.
    """
    tried("engine.apply_recommendation")
    px, pilot_id = pilot_of(engine)
    array = np.ones(3) if name == "not-an-array" else zoo()[name]
    given_rec = {
        "none": None,
        "pilot": pilot_id,
        "recommendation": engine.recommend(px, pilot_id),
        "chunks": (getattr(array, "chunks", None) if name != "not-an-array" else (1,)),
    }.get(rec if isinstance(rec, str) else "", rec)
    if isinstance(rec, list):
        given_rec = [pilot_id if r == "pilot" else r for r in rec]
    out = call("apply_recommendation", engine.apply_recommendation, array, given_rec,
               seconds=20)
    only_budget_warnings(out)
    if name == "not-an-array":
        expect_rejection(out, names=("dask.array.Array",))
        return
    if not out.ok:
        expect_rejection(out, names=("chunks", "profile", "NaN", "compute_chunk_sizes",
                                     "empty", "shape"),
                         values=(given_rec,), allowed=(ValueError, TypeError, KeyError))
        if isinstance(out.error, KeyError):
            assert rec in ("nope", ["pilot", "nope"])
        return
    y = out.result
    assert isinstance(y, da.Array) and y.dtype == array.dtype
    assert y.shape == array.shape or not known(array)
    if known(array) and math.prod(array.shape) <= 10**5:
        expected = array.compute(scheduler="sync")
        got = y.compute(scheduler="sync")
        assert same_result(got, expected)
    # the things that are not a chunking must not be accepted
    if array.ndim:
        assert rec not in ("lots", "nope", ["pilot", "nope"]), f"accepted {rec!r}"


@fuzz(80)
@given(
    rec=st.sampled_from(["recommendation", "pilot", "nope", None, 5, {}, "dict-1", "dict-inf",
                         "dict-lots", "dict-nan", "dict-neg", "dict-np-int", "dict-np-float",
                         "dict-other"]),
    client=st.sampled_from([None, "lots", 5]),
)
def test_engine_apply_scheduler_config_without_cluster(engine, rec, client):
    """apply_scheduler_config without a cluster: always a clear error, never anything else."""
    tried("engine.apply_scheduler_config")
    px, pilot_id = pilot_of(engine)
    value = {
        "dict-1": 1.0, "dict-inf": "inf", "dict-lots": "lots", "dict-nan": math.nan,
        "dict-neg": -1, "dict-np-int": np.int64(2), "dict-np-float": np.float32(1.5),
    }
    given_rec = {
        "recommendation": engine.recommend(px, pilot_id), "pilot": pilot_id,
    }.get(rec, rec) if isinstance(rec, str) else rec
    if isinstance(rec, str) and rec in value:
        given_rec = {SATURATION_KEY: value[rec]}
    if rec == "dict-other":
        given_rec = {"distributed.scheduler.other": 1}
    out = call("apply_scheduler_config", engine.apply_scheduler_config, given_rec,
               client=client)
    assert not out.ok, f"applied scheduler settings without a cluster: {out!r}"
    good_value = rec in ("dict-1", "dict-inf", "dict-np-int", "dict-np-float")
    if rec == "nope":
        expect_rejection(out, values=("nope",), allowed=(KeyError,))
    elif good_value:
        # the settings are fine: only the missing (or wrong) client is the problem
        expect_rejection(out, names=("client",), values=(client,))
    else:
        expect_rejection(out, names=("scheduler", "recommendation", "client", SATURATION_KEY),
                         values=(given_rec,))
