"""Hypothesis fuzz of the ``ChunkSizeRecommender`` settings: the constructor, the
property setters and ``memory_budget(limit)``.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dask.array import adaptive_chunking as ac
from dask.array.adaptive_chunking import ChunkSizeRecommender

from adaptive_chunking_fuzz_harness import (
    MiB,
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    anything_numeric,
    as_bytes,
    call,
    expect_clean_error,
    expect_rejection,
    finite_real,
    fuzz,
    is_int,
    nbytes_verdict,
    percent_ok,
    tried,
)


# ---------------------------------------------------------------------------
# ChunkSizeRecommender: settings, properties, memory_budget
# ---------------------------------------------------------------------------


RECOMMENDER_PARAMS = {
    # name: (config key, verdict); None reads the config key (documented), so is good
    "target_memory_percent": (
        "target-memory-percent",
        lambda v: v is None or percent_ok(v, 0, 100, low_open=True)),
    "min_chunk_bytes": ("min-chunk-bytes", lambda v: nbytes_verdict(v, True) == "good"),
    "max_chunk_bytes": ("max-chunk-bytes", lambda v: nbytes_verdict(v, True) == "good"),
    "safety_factor": (
        "safety-factor", lambda v: v is None or percent_ok(v, 0, 1, low_open=True)),
    "overhead_target": (
        "overhead-target",
        lambda v: v is None or percent_ok(v, 0, 1, low_open=True, high_open=True)),
    "memory_limit": ("memory-limit", lambda v: nbytes_verdict(v, True) == "good"),
}
byte_values = st.one_of(
    st.integers(1, 2**40), st.sampled_from(["512MiB", "1 GiB", "2GB", "1e400", "-5MiB",
                                            "0.5B", "lots", "12 parsecs", 2.0, 1e300,
                                            2**1100, 10**30]),
    anything_numeric,
)
param_values = {
    "target_memory_percent": st.one_of(st.floats(0, 150), anything_numeric),
    "min_chunk_bytes": byte_values,
    "max_chunk_bytes": st.one_of(st.none(), byte_values),
    "safety_factor": st.one_of(st.floats(0, 2), anything_numeric),
    "overhead_target": st.one_of(st.floats(0, 1.5), anything_numeric),
    "memory_limit": st.one_of(st.none(), byte_values),
}


@fuzz(300)
@given(
    kwargs=st.dictionaries(st.sampled_from(sorted(RECOMMENDER_PARAMS)), st.none(),
                           max_size=3).flatmap(
        lambda d: st.fixed_dictionaries({k: param_values[k] for k in d})),
    limit=st.one_of(st.none(), st.integers(1, 2**45), anything_numeric),
)
def test_recommender_settings(kwargs, limit):
    """ChunkSizeRecommender(**settings) and memory_budget(limit): validated by name."""
    tried("ChunkSizeRecommender settings")
    made = call("ChunkSizeRecommender(...)", ChunkSizeRecommender, **kwargs)
    bad = [k for k, v in kwargs.items() if not RECOMMENDER_PARAMS[k][1](v)]
    lo, hi = kwargs.get("min_chunk_bytes") or MiB, kwargs.get("max_chunk_bytes")
    crossed = (not bad and hi is not None and as_bytes(hi) < as_bytes(lo))
    if bad:
        expect_rejection(made, names=bad + [RECOMMENDER_PARAMS[k][0] for k in bad],
                         values=[kwargs[k] for k in bad])
        return
    if crossed:
        expect_rejection(made, names=("max_chunk_bytes", "min_chunk_bytes"))
        return
    assert made.ok, repr(made)
    r = made.result
    budget = call("memory_budget", r.memory_budget, limit)
    whole = finite_real(limit) and limit >= 1 and limit == int(limit) and not is_int(limit)
    if whole:  # 2.0 bytes: a float, but a whole number of bytes
        expect_clean_error(budget, names=("limit",), values=(limit,))
    elif limit is None or (is_int(limit) and 1 <= limit < 2**63):
        assert budget.ok, repr(budget)
        b = budget.result
        assert is_int(b) and b >= 0, b
        base = limit if limit is not None else (as_bytes(kwargs.get("memory_limit"))
                                                or ac.memory_limit())
        assert b <= base, f"budget {b} above the limit {base}"
    else:
        expect_rejection(budget, names=("limit",), values=(limit,))
    # Every property reads back what was given (normalized to bytes) and repr works.
    for name, v in kwargs.items():
        got = getattr(r, name)
        if v is None:
            continue
        if name in ("min_chunk_bytes", "max_chunk_bytes", "memory_limit"):
            assert got == as_bytes(v), (name, v, got)
        else:
            assert got == float(v), (name, v, got)
    assert "ChunkSizeRecommender(" in repr(r)


@fuzz(200)
@given(name=st.sampled_from(sorted(RECOMMENDER_PARAMS)), data=st.data())
def test_recommender_property_setters(name, data):
    """Setting a property to a bad value raises, names it, and keeps the old value."""
    tried("ChunkSizeRecommender setters")
    r = ChunkSizeRecommender(min_chunk_bytes=MiB, max_chunk_bytes=None, memory_limit="8GiB")
    before = getattr(r, name)
    value = data.draw(param_values[name])
    out = call(f"{name} = ...", setattr, r, name, value)
    good = RECOMMENDER_PARAMS[name][1](value)
    if good and name == "max_chunk_bytes" and value is not None and as_bytes(value) < MiB:
        good = False  # below min_chunk_bytes
    if not good:
        expect_rejection(out, names=(name, RECOMMENDER_PARAMS[name][0]), values=(value,))
        assert getattr(r, name) == before
    else:
        assert out.ok, repr(out)
