"""Hypothesis fuzz of ``MemoryPressure``: ``of(used, limit)``, its fields and
``is_pressure(threshold)``.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from dask.array.adaptive_chunking import MemoryPressure

from adaptive_chunking_fuzz_harness import (
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    anything_numeric,
    call,
    check_finite_numbers,
    expect_clean_error,
    expect_rejection,
    finite_real,
    fuzz,
    is_real,
    tried,
)


# ---------------------------------------------------------------------------
# MemoryPressure
# ---------------------------------------------------------------------------


@fuzz(200)
@given(used=anything_numeric, limit=anything_numeric)
def test_memory_pressure_of(used, limit):
    """MemoryPressure.of(used, limit): a sane pressure, or an error naming the value."""
    tried("MemoryPressure.of")
    out = call("MemoryPressure.of", MemoryPressure.of, used, limit)
    good = finite_real(used) and finite_real(limit) and used >= 0 and limit > 0
    absurd = (is_real(used) and is_real(limit) and not good
              and not any(isinstance(v, float) and math.isnan(v) for v in (used, limit)))
    if good or absurd:
        expect_clean_error(out, names=("used_bytes", "limit_bytes"), values=(used, limit))
    else:
        expect_rejection(out, names=("used_bytes", "limit_bytes"), values=(used, limit))
    if out.ok:
        p = out.result
        d = p.to_dict()
        check_finite_numbers(d, f"MemoryPressure.of({used!r}, {limit!r})")
        assert 0 <= p.percent_used <= 100, p
        assert 0 <= p.used_mb <= p.total_mb and p.available_mb >= 0, p


@fuzz(200)
@given(
    fields=st.fixed_dictionaries({
        "available_mb": st.one_of(st.floats(0, 1e6), anything_numeric),
        "used_mb": st.one_of(st.floats(0, 1e6), anything_numeric),
        "percent_used": st.one_of(st.floats(0, 100), anything_numeric),
        "total_mb": st.one_of(st.floats(0, 1e6), anything_numeric),
    }),
    threshold=st.one_of(st.none(), st.floats(0, 100), anything_numeric),
)
def test_memory_pressure_fields_and_threshold(fields, threshold):
    """MemoryPressure(...).is_pressure(t): a bool that is right, or an error naming the value."""
    tried("MemoryPressure.is_pressure")
    made = call("MemoryPressure(...)", MemoryPressure, **fields)
    bad_fields = [k for k, v in fields.items() if not finite_real(v) or v < 0
                  or (k == "percent_used" and v > 100)]
    if not made.ok:
        expect_rejection(made, names=bad_fields or list(fields), values=fields.values())
        return
    out = call("is_pressure", made.result.is_pressure, threshold)
    bad_threshold = threshold is not None and not (finite_real(threshold)
                                                   and 0 <= threshold <= 100)
    if bad_fields or bad_threshold:
        names = bad_fields + (["threshold", "pressure-threshold"] if bad_threshold else [])
        values = [fields[k] for k in bad_fields] + ([threshold] if bad_threshold else [])
        expect_rejection(out, names=names, values=values)
    else:
        assert out.ok, repr(out)
        t = 80.0 if threshold is None else float(threshold)
        assert out.result is (fields["percent_used"] > t)
