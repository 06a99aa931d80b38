"""Hypothesis fuzz of ``ChunkMemoryMetric``: every field, good, bad and absurd;
an accepted metric is recorded and recommended from.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from dask.array.adaptive_chunking import ChunkMemoryMetric, ChunkProfiler, ChunkSizeRecommender

from adaptive_chunking_fuzz_harness import (
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    anything_numeric,
    call,
    check_finite_numbers,
    check_recommendation,
    expect_clean_error,
    expect_rejection,
    finite_real,
    fuzz,
    is_int,
    junk,
    only_budget_warnings,
    some_floats,
    some_ints,
    tried,
)


# ---------------------------------------------------------------------------
# ChunkMemoryMetric
# ---------------------------------------------------------------------------

METRIC_FIELDS = {
    "chunk_key": st.sampled_from([("x", 0), "k", 5, ("x", 1, 2)]),
    "chunk_shape": st.one_of(
        st.lists(st.integers(0, 1000), max_size=3).map(tuple),
        st.sampled_from([(-1,), (2.5,), ("a",), (math.nan,), (True,), [10], "ab", None]),
    ),
    "element_count": anything_numeric,
    "dtype_size": anything_numeric,
    "estimated_bytes": anything_numeric,
    "compute_time_ms": anything_numeric,
    "memory_peak_before_mb": anything_numeric,
    "memory_peak_after_mb": anything_numeric,
    "worker": st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(max_size=3)),
    "start_time": st.one_of(some_floats, junk),
    "failed": st.one_of(st.booleans(), junk),
    "output_bytes": st.one_of(st.none(), some_ints, junk),
}
METRIC_GOOD = {
    "chunk_key": ("x", 0), "chunk_shape": (1000,), "element_count": 1000, "dtype_size": 8,
    "estimated_bytes": 8000, "compute_time_ms": 1.0, "memory_peak_before_mb": 50.0,
    "memory_peak_after_mb": 50.5, "worker": None, "start_time": 0.0, "failed": False,
    "output_bytes": None,
}


def metric_field_verdict(name: str, v) -> str:
    """'good', 'bad' or 'either' (absurd but well typed: an error or a sane result)."""
    if name == "chunk_key":
        return "good"
    if name == "chunk_shape":
        if isinstance(v, tuple) and all(is_int(s) and s >= 0 for s in v):
            return "good"
        return "bad"
    if name in ("element_count", "dtype_size", "estimated_bytes"):
        if not is_int(v) or v < 0:
            return "bad"
        return "good" if v < 2**53 else "either"
    if name in ("compute_time_ms", "memory_peak_before_mb", "memory_peak_after_mb"):
        if not finite_real(v) or v < 0:
            return "bad"
        return "good" if v < 1e15 else "either"
    if name == "worker":
        return "good"  # any hashable: a thread ident or a process id
    if name == "start_time":
        return "good" if finite_real(v) and abs(v) < 1e15 else "bad"
    if name == "failed":
        return "good" if isinstance(v, (bool, np.bool_)) else "bad"
    if name == "output_bytes":
        if v is None:
            return "good"
        if not is_int(v) or v < 0:
            return "bad"
        return "good" if v < 2**53 else "either"
    raise AssertionError(name)


@st.composite
def metric_kwargs(draw):
    """Good fields with a few fuzzed ones (so each bad field is seen on its own too)."""
    kwargs = dict(METRIC_GOOD)
    for name in draw(st.sets(st.sampled_from(sorted(METRIC_FIELDS)), min_size=1, max_size=3)):
        kwargs[name] = draw(METRIC_FIELDS[name])
    return kwargs


@fuzz(300)
@given(kwargs=metric_kwargs())
def test_metric_rejects_bad_fields_by_name(kwargs):
    """ChunkMemoryMetric(...): a bad field raises, naming it; good fields are accepted."""
    tried("metric construction")
    verdicts = {k: metric_field_verdict(k, v) for k, v in kwargs.items()}
    bad = [k for k, v in verdicts.items() if v == "bad"]
    odd = [k for k, v in verdicts.items() if v != "good"]
    out = call("ChunkMemoryMetric(...)", ChunkMemoryMetric, **kwargs)
    if bad:  # the message names a bad field, or an absurd one the check met first
        expect_rejection(out, names=odd, values=[kwargs[k] for k in odd])
    elif all(v == "good" for v in verdicts.values()):
        assert out.ok, repr(out)
    else:
        expect_clean_error(out, names=list(kwargs))


@fuzz(250)
@given(kwargs=metric_kwargs(), max_records=st.sampled_from([None, 0, 1, 5]))
# A fit that predicts below zero once left no candidate "fast" (min() of nothing).
@example(kwargs=dict(chunk_key=("x", 0), chunk_shape=(1000,), element_count=1000,
                     dtype_size=8, estimated_bytes=8000, compute_time_ms=np.float32(2.5),
                     memory_peak_before_mb=50.0, memory_peak_after_mb=50.5, worker=None,
                     start_time=5187525.70935193, failed=False, output_bytes=None),
         max_records=1)
def test_metric_accepted_is_recorded_and_recommended(kwargs, max_records):
    """A metric the constructor accepted is recorded; stats stay finite; recommend works."""
    tried("metric record/recommend")
    made = call("ChunkMemoryMetric(...)", ChunkMemoryMetric, **kwargs)
    if not made.ok:
        return  # the validation itself is the property above
    m = made.result
    p = ChunkProfiler(max_records=max_records)
    out = call("record_chunk", p.record_chunk, m)
    assert out.ok, f"a metric the constructor accepted cannot be recorded: {out!r} ({m})"
    stats = call("get_stats", p.get_stats)
    assert stats.ok, repr(stats)
    assert stats.result["total_chunks"] == 1
    check_finite_numbers(stats.result, "get_stats()")
    metrics = call("metrics", lambda: p.metrics)
    assert metrics.ok, repr(metrics)
    if max_records != 0:
        assert metrics.result == [m]
    r = ChunkSizeRecommender(memory_limit="4GiB")
    rec = call("recommend", r.recommend, p, (1000, 1000), 8)
    assert rec.ok, repr(rec)
    only_budget_warnings(rec)
    if rec.result is not None:
        check_recommendation(rec.result, (1000, 1000), 8)
