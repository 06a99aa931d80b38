"""Hypothesis fuzz of the config: every key of adaptive-chunking.yaml with bad values,
unknown key spellings, and the sampler under any sample-interval.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import math
import tempfile
import threading

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import dask
import dask.array as da
from dask.array import adaptive_chunking as ac
from dask.array.adaptive_chunking import ChunkProfiler, ChunkSizeRecommender, MemoryPressure

from adaptive_chunking_fuzz_harness import (
    PILOT,
    PREFIX,
    MiB,
    Outcome,
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    as_bytes,
    call,
    expect_no_engine_error,
    expect_rejection,
    finite_real,
    flag_verdict,
    fresh_engine,
    fuzz,
    is_int,
    metric,
    nbytes_verdict,
    only_budget_warnings,
    percent_ok,
    same_result,
    tried,
    working_directory,
)


# ---------------------------------------------------------------------------
# Config: every key of adaptive-chunking.yaml with bad values, and unknown keys
# ---------------------------------------------------------------------------


def int_verdict(low):
    def verdict(v) -> str:
        if is_int(v):
            return "good" if v >= low else "bad"
        if finite_real(v) and v == int(v) and v >= low:
            return "either"  # 3.0
        return "bad"  # non-integer counts (2.5 records), NaN, inf, strings

    return verdict


def duration_verdict(v) -> str:
    from dask.utils import parse_timedelta

    if isinstance(v, str):
        try:
            s = parse_timedelta(v, default="s")
        except Exception:  # noqa: BLE001 - unparsable: bad
            return "bad"
    elif finite_real(v):
        s = v
    else:
        return "bad"
    if s is None or s < 0:
        return "bad"
    return "good" if s < 1e6 else "either"  # a week-long sampling interval


def range_verdict(low, high, **kw):
    return lambda v: "good" if percent_ok(v, low, high, **kw) else "bad"


def bytes_verdict(allow_none, low=1, high=2**40):
    def verdict(v) -> str:
        if nbytes_verdict(v, allow_none) == "bad":
            return "bad"
        if v is None:
            return "good"
        n = as_bytes(v)
        if n < low:
            return "bad"
        return "good" if n <= high else "either"  # absurdly large but well typed

    return verdict


CONFIG_KEYS = {
    "enabled": flag_verdict,
    "profile": flag_verdict,
    "auto-rechunk": flag_verdict,
    "target-memory-percent": range_verdict(0, 100, low_open=True),
    "min-chunk-bytes": bytes_verdict(False),
    # below the default min-chunk-bytes (1 MiB) a max is a contradiction: bad
    "max-chunk-bytes": bytes_verdict(True, low=MiB),
    "safety-factor": range_verdict(0, 1, low_open=True),
    "memory-limit": bytes_verdict(True, high=2**60),
    "overhead-target": range_verdict(0, 1, low_open=True, high_open=True),
    "pressure-threshold": range_verdict(0, 100),
    "max-records": int_verdict(0),
    "max-profiles": int_verdict(1),
    "peak-method": lambda v: (
        "good" if isinstance(v, str) and v in ("auto", "high-water-mark", "sampler")
        else "bad"),
    "sample-interval": duration_verdict,
}
CONFIG_VALUES = st.one_of(
    st.sampled_from([
        True, False, "true", "off", "lots", "", None, [1], {"a": 1}, math.nan, math.inf,
        -math.inf, -1, 0, 1, 2, 2.5, 0.5, 50, 150, 1e300, 10**400, 2**1100, "1GiB", "2 MiB",
        "1e400", "-5MiB", "10ms", "1s", "auto", "sampler", "high-water-mark", "fast",
        np.float64("nan"), np.int64(3),
    ]),
    st.integers(-10, 10**10),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _config_files():
    from pathlib import Path

    import yaml

    import dask.array._adaptive_chunking as pkg

    here = Path(pkg.__file__).parent
    with open(here / "adaptive-chunking.yaml") as f:
        defaults = yaml.safe_load(f)["array"]["adaptive-chunking"]
    with open(here / "adaptive-chunking-schema.yaml") as f:
        schema = yaml.safe_load(f)["properties"]["array"]["properties"]["adaptive-chunking"]
    return defaults, schema["properties"]


def schema_verdict(spec: dict):
    """A verdict from the key's JSON schema, for keys without a hand-written one."""
    types = spec.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "enum" in spec:
        return lambda v: "good" if v in spec["enum"] and isinstance(v, str) else "bad"
    if types == ["boolean"]:
        return flag_verdict
    if set(types) <= {"number", "integer"}:
        low = spec.get("exclusiveMinimum", spec.get("minimum", -math.inf))
        high = spec.get("exclusiveMaximum", spec.get("maximum", math.inf))
        rng = range_verdict(low, high, low_open="exclusiveMinimum" in spec,
                            high_open="exclusiveMaximum" in spec)
        if types == ["integer"]:
            return lambda v: int_verdict(low)(v) if rng(v) == "good" or is_int(v) else "bad"
        return rng
    if "string" in types and "integer" in types:  # a size in bytes
        return bytes_verdict("null" in types)
    if "string" in types and "number" in types:  # a duration
        return duration_verdict
    if set(types) == {"string", "null"}:  # a file path
        return lambda v: "good" if v is None or (isinstance(v, str) and v.strip()) else "bad"
    return lambda v: "either"


YAML_DEFAULTS, YAML_SCHEMA = _config_files()
CONFIG_KEYS.setdefault("max-memory", bytes_verdict(True))  # the raw-sample ceiling
for _key in YAML_DEFAULTS:
    CONFIG_KEYS.setdefault(_key, schema_verdict(YAML_SCHEMA.get(_key, {})))
FUZZED_KEYS = sorted(YAML_DEFAULTS)  # every key of adaptive-chunking.yaml, now


def test_config_verdicts_accept_the_defaults():
    """The oracle of every key calls its own default good (else it is no oracle)."""
    for key, value in YAML_DEFAULTS.items():
        assert CONFIG_KEYS[key](value) == "good", (key, value)


def run_entry_points(tag: str) -> list[Outcome]:
    """Every entry point that reads config, in a fresh engine; returns their outcomes."""
    outs = []
    outs.append(call("memory_limit", ac.memory_limit))
    outs.append(call("MemoryPressure.snapshot().is_pressure()",
                     lambda: MemoryPressure.snapshot().is_pressure()))
    outs.append(call("MemoryPressure.of().is_pressure()",
                     lambda: MemoryPressure.of(1, 2).is_pressure()))

    def profiler_use():
        p = ChunkProfiler()
        p.record_chunk(metric())
        return p.get_stats(), p.metrics

    outs.append(call("ChunkProfiler().record_chunk", profiler_use))

    def recommender_use():
        r = ChunkSizeRecommender()
        return r.memory_budget(), r.recommend(PILOT, (1000, 1000), 8), repr(r)

    outs.append(call("ChunkSizeRecommender().recommend", recommender_use))
    ac.reset_adaptive_engine()
    got = call("get_adaptive_engine", ac.get_adaptive_engine)
    outs.append(got)
    x = da.random.default_rng(3).random((200, 200), chunks=(50, 50))
    y = (x + 1).sum()
    if got.ok:
        engine = got.result
        made = call("profile_array", engine.profile_array, x)
        outs.append(made)
        outs.append(call("compute", y.compute, scheduler="threads"))
        if made.ok:
            outs.append(call("get_profile", engine.get_profile, made.result))
            outs.append(call("recommend", engine.recommend, x))
            outs.append(call("predict", engine.predict, x, (100, 100)))
            outs.append(call("apply_recommendation", engine.apply_recommendation, x))
        outs.append(call("get_telemetry", engine.get_telemetry))
    else:
        outs.append(call("compute", y.compute, scheduler="threads"))
    with dask.config.set({f"{PREFIX}.enabled": False}):
        outs.append(call("enable_adaptive_chunking", ac.enable_adaptive_chunking))
        outs.append(call("compute (enabled)", y.compute, scheduler="sync"))
        outs.append(call("disable_adaptive_chunking", ac.disable_adaptive_chunking))
    return outs


PLAIN_Y = None


def plain_y():
    global PLAIN_Y
    if PLAIN_Y is None:
        x = da.random.default_rng(3).random((200, 200), chunks=(50, 50))
        PLAIN_Y = (x + 1).sum().compute(scheduler="sync")
    return PLAIN_Y


def check_config_outcomes(outs, key, value, verdict: str):
    expected = plain_y()
    for o in outs:
        if o.what.startswith("compute"):
            assert o.ok, f"{key}={value!r}: the user's compute raised: {o!r}"
            assert same_result(o.result, expected), f"{key}={value!r}: {o.what} changed"
    errors = [o for o in outs if not o.ok]
    if verdict == "good":
        for o in outs:
            assert o.ok, f"valid {key}={value!r}: {o!r}"
            if o.what.startswith("compute"):
                expect_no_engine_error(o)
            else:
                only_budget_warnings(o)
        return
    if verdict == "either":  # absurd but well typed: errors, if any, name it
        for o in errors:
            expect_rejection(o, names=(key,), values=(value,))
        return
    # Wrong types and values: each error is a ValueError/TypeError naming the key or value
    for o in errors:
        expect_rejection(o, names=(key,), values=(value,))
    assert errors, (
        f"invalid {key}={value!r} was accepted by every entry point "
        f"(warnings: {[str(w.message)[:120] for o in outs for w in o.warnings][:3]})")


@pytest.mark.parametrize("key", FUZZED_KEYS)
@fuzz(12)
@given(value=CONFIG_VALUES)
@example(value=2.5)  # a non-integer, for every key (a count, a size, a flag...)
@example(value="lots")
def test_config_values(engine, key, value):
    """Each config key set to a fuzzed value: valid works, invalid is named by an error."""
    tried(f"config {key}")
    verdict = CONFIG_KEYS[key](value)
    plain_y()
    # A fuzzed history-path is a relative file name: keep it out of the working tree
    with tempfile.TemporaryDirectory() as where, working_directory(where):
        with dask.config.set({f"{PREFIX}.{key}": value}):
            outs = run_entry_points(key)
        fresh_engine()
    check_config_outcomes(outs, key, value, verdict)


TYPOS = {
    "memory-limt": "1GiB", "target-memory-percentage": 30, "max-chunk-byte": "64MiB",
    "enable": True, "peak_methods": "sampler", "safety": 0.5, "maxrecords": 10,
    "min-chunk-size": "1MiB", "memory_limits": "2GiB",
}


@fuzz(9)
@given(key=st.sampled_from(sorted(TYPOS)))
def test_config_unknown_key_spelling(engine, key):
    """A misspelled key under array.adaptive-chunking is reported, not silently ignored."""
    tried("config unknown key")
    value = TYPOS[key]
    plain_y()
    with dask.config.set({f"{PREFIX}.{key}": value}):
        outs = run_entry_points(key)
    fresh_engine()
    check_config_outcomes(outs, key, value, "bad")


@fuzz(12)
@given(interval=st.sampled_from([0, 0.001, "1ms", "10ms", 0.05, 1e9, 1e10, "1e10s", -1,
                                 math.nan, math.inf, "lots", None, [1]]))
def test_sampler_survives_any_sample_interval(engine, interval):
    """peak-method=sampler with any sample-interval: compute unchanged, no thread dies."""
    from dask.array._adaptive_chunking import peaks

    tried("sampler interval")
    died = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: died.append(args)
    try:
        x = da.random.default_rng(4).random((200, 200), chunks=(50, 50))
        plain = x.sum().compute(scheduler="sync")
        pid = engine.profile_array(x)  # an invalid interval would be refused here
        with dask.config.set({f"{PREFIX}.peak-method": "sampler",
                              f"{PREFIX}.sample-interval": interval}):
            out = call("compute", x.sum().compute, scheduler="threads")
            prof = call("get_profile", engine.get_profile, pid)
        peaks.sampler.join(timeout=2)
        thread = peaks.sampler._thread
        stuck = thread is not None and not thread.is_alive()
    finally:
        threading.excepthook = old_hook
        if peaks.sampler._thread is not None and not peaks.sampler._thread.is_alive():
            peaks.sampler._thread = None  # hygiene: let later tests sample again
    assert out.ok and same_result(out.result, plain), repr(out)
    assert prof.ok, repr(prof)
    assert not died, (
        f"sample-interval={interval!r}: the sampler thread died with "
        f"{died[0].exc_type.__name__}: {died[0].exc_value}")
    assert not stuck, f"sample-interval={interval!r}: a dead sampler thread is left in place"
    if duration_verdict(interval) != "bad":
        expect_no_engine_error(out)
        assert prof.result["status"] == "complete", prof.result["status"]
    # (how an invalid interval is reported: test_config_values[sample-interval])


def test_snapshot_is_not_reused_for_an_equal_value_of_another_type():
    """``0.0 == False``, but only the boolean is a valid flag: a snapshot taken with
    ``False`` must not stand for one with ``0.0``."""
    from dask.array._adaptive_chunking import config

    with dask.config.set({"array.adaptive-chunking.enabled": False}):
        assert config.snapshot().enabled is False
        with dask.config.set({"array.adaptive-chunking.enabled": 0.0}):
            with pytest.raises(TypeError, match="enabled"):
                config.snapshot()
        assert config.snapshot().enabled is False
