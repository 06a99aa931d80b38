"""Hypothesis fuzz of ``ChunkProfiler(max_records=, enabled=)``: validated, and the
sample stays bounded.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dask.array.adaptive_chunking import ChunkProfiler

from adaptive_chunking_fuzz_harness import (
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    anything_numeric,
    call,
    expect_rejection,
    finite_real,
    fuzz,
    is_int,
    metric,
    tried,
)


# ---------------------------------------------------------------------------
# ChunkProfiler
# ---------------------------------------------------------------------------


@fuzz(150)
@given(
    max_records=st.one_of(st.none(), st.integers(0, 20), anything_numeric),
    enabled=st.one_of(st.booleans(), st.sampled_from(["no", "yes", None, 0, 1, math.nan])),
    n=st.integers(0, 30),
)
def test_profiler_max_records_and_enabled(max_records, enabled, n):
    """ChunkProfiler(max_records=, enabled=): validated; the sample stays bounded."""
    tried("ChunkProfiler")
    made = call("ChunkProfiler(...)", ChunkProfiler, enabled=enabled, max_records=max_records)
    bad, either = [], False
    if max_records is not None and not (is_int(max_records) and max_records >= 0):
        if finite_real(max_records) and max_records >= 0 and max_records == int(max_records):
            either = True  # 3.0 records
        else:
            bad.append("max_records")
    if not isinstance(enabled, (bool, np.bool_)):
        if is_int(enabled) and enabled in (0, 1):
            either = True
        else:
            bad.append("enabled")  # "no" must not mean yes
    if either and not bad:
        if not made.ok:
            expect_rejection(made, names=("max_records", "max-records", "enabled"))
            return
        max_records = None if max_records is None else int(max_records)
        enabled = bool(enabled)
    if bad:
        expect_rejection(made, names=bad + ["max-records"],
                         values=[{"max_records": max_records, "enabled": enabled}[b]
                                 for b in bad])
        return
    assert made.ok, repr(made)
    p = made.result
    for i in range(n):
        out = call("record_chunk", p.record_chunk, metric(i))
        assert out.ok, repr(out)
    stats = call("get_stats", p.get_stats)
    assert stats.ok, repr(stats)
    assert stats.result["total_chunks"] == (n if enabled else 0)
    cap = 10_000 if max_records is None else max_records
    assert len(p.metrics) == min(cap, n if enabled else 0)
    assert p.max_records == cap
    wrong = call("record_chunk(wrong type)", p.record_chunk, {"chunk_key": 1})
    expect_rejection(wrong, names=("ChunkMemoryMetric",))


def test_a_whole_float_max_records_keeps_that_many():
    """Found by the fuzz test above: 1.0 passed validation, then broke the sample."""
    from dask.array.adaptive_chunking import ChunkProfiler

    p = ChunkProfiler(max_records=2.0)
    for i in range(5):
        p.record_chunk(metric(i))
    assert p.max_records == 2 and len(p.metrics) == 2
