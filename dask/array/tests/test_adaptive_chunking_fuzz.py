"""Hypothesis fuzz of every public entry point of ``dask.array.adaptive_chunking``.

The requirement (issue 7): bad input -- zero-length and 0-d arrays, unknown (NaN)
chunks, object and structured dtypes, shapes of 10**12 elements, non-integer or
negative sizes, invalid config values (wrong type, out of range, unknown key
spelling) -- gives a ValueError/TypeError naming the value and the fix, or a correct
result; never a hang, a silent wrong recommendation or a crash inside the user's
compute.

Every property here therefore accepts exactly two outcomes for a call: a sane result,
or a ``ValueError``/``TypeError`` (``KeyError`` for an unknown profile id) whose
message names the bad value, the parameter or the config key it was given as. Any
other exception, a result that differs from the same compute without the engine, an
unexpected engine warning, or a call that does not return within its time limit
(``SIGALRM``, so the hanging loop itself is interrupted) fails the property.

Every property counts the examples it tried; the totals are written to the terminal
at the end of the module (``adaptive chunking fuzz: N examples``). Shrinking is off so
that a hang found by a property costs one time limit, not one per shrink step: the
failing example is the first one found (the findings give minimal repros).

The history entry points (issue 5: ``save_profile``, ``load_history``,
``export_history``, ``import_history``, ``clear_history``, predictions from the
history, auto-rechunk and its ``array.chunk-size`` override) are fuzzed at the end
of the module. There a filesystem problem (a missing file, a directory) may also be
an ``OSError`` naming the path, and a rejected call must not lose a stored row. Every
path they are given is inside a temporary directory.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import dask
import dask.array as da
from dask.array import adaptive_chunking as ac
from dask.array._adaptive_chunking import history as hist
from dask.array._adaptive_chunking.config import ChunkSizeOverride
from dask.array._adaptive_chunking.history import HistoryStore
from dask.array._adaptive_chunking.model import Observation
from dask.array.adaptive_chunking import (
    AdaptiveChunkingWarning,
    ChunkMemoryMetric,
    ChunkProfiler,
    ChunkSizeRecommender,
    MemoryPressure,
)

MiB = 2**20
PREFIX = "array.adaptive-chunking"
SATURATION_KEY = "distributed.scheduler.worker-saturation"
STRUCT = np.dtype([("a", "i4"), ("b", "f8", (2,))])

# ---------------------------------------------------------------------------
# Harness: example counting, time limits, outcome checks
# ---------------------------------------------------------------------------

EXAMPLES: collections.Counter = collections.Counter()


def fuzz(n: int):
    """Deterministic settings with an example budget (the file runs in < 60 s)."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )


def tried(name: str) -> None:
    EXAMPLES[name] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_examples(request):
    yield
    total = sum(EXAMPLES.values())
    lines = [f"adaptive chunking fuzz: {total} examples tried"]
    lines += [f"    {n:5d}  {name}" for name, n in sorted(EXAMPLES.items())]
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover - plugins disabled
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():  # shown even when every test passed
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


class Hang(BaseException):
    """A call did not return in time (BaseException: no ``except Exception`` eats it)."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Interrupt the main thread with :class:`Hang` after ``seconds``."""
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        yield
        return

    def handler(signum, frame):
        raise Hang(f"{what} did not return within {seconds:g} s (hang)")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Outcome:
    """What one call did: its result or exception, and the warnings it issued."""

    def __init__(self, what: str):
        self.what = what
        self.result: Any = None
        self.error: BaseException | None = None
        self.warnings: list[warnings.WarningMessage] = []

    @property
    def ok(self) -> bool:
        return self.error is None

    def engine_errors(self) -> list[str]:
        """Messages of warnings saying that the engine failed (a lost profile)."""
        return [str(w.message) for w in self.warnings
                if issubclass(w.category, AdaptiveChunkingWarning)
                and "could not" in str(w.message)]

    def __repr__(self) -> str:
        if self.ok:
            return f"{self.what} -> {self.result!r:.200}"
        return f"{self.what} raised {type(self.error).__name__}: {self.error}"


def call(what: str, fn, *args, seconds: float = 10.0, **kwargs) -> Outcome:
    """Run ``fn`` under a time limit, recording warnings; a hang fails at once."""
    out = Outcome(what)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            with time_limit(seconds, what):
                out.result = fn(*args, **kwargs)
        except Hang as e:
            pytest.fail(str(e))
        except Exception as e:  # noqa: BLE001 - every failure is an outcome
            out.error = e
    out.warnings = list(record)
    return out


def spellings(value) -> list[str]:
    """Ways a message may name ``value``."""
    out = []
    try:
        r = repr(value)
    except Exception:  # noqa: BLE001 # pragma: no cover - a broken __repr__
        r = ""
    if 2 <= len(r) <= 300:
        out.append(r)
    if isinstance(value, (str, int, float, np.number)) and not isinstance(value, bool):
        s = str(value)
        if 2 <= len(s) <= 300:
            out.append(s)
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        out.append(str(float(value)))
    return out


def mentions(message: str, names=(), values=()) -> bool:
    for n in names:
        for form in {n, n.replace("-", "_"), n.replace("_", "-")}:
            if form and form in message:
                return True
    return any(s in message for v in values for s in spellings(v))


def expect_rejection(out: Outcome, names=(), values=(), allowed=(ValueError, TypeError)):
    """``out`` must be an allowed exception whose message names the bad input."""
    assert not out.ok, f"bad input accepted silently: {out!r}"
    assert isinstance(out.error, allowed), (
        f"{out.what} raised {type(out.error).__name__}, not one of "
        f"{[a.__name__ for a in allowed]}: {out.error}"
    )
    message = str(out.error.args[0]) if isinstance(out.error, KeyError) else str(out.error)
    assert mentions(message, names, values), (
        f"{out.what}: the message does not name the bad value ({list(names)} / "
        f"{[repr(v)[:60] for v in values]}): {message}"
    )


def expect_clean_error(out: Outcome, names=(), values=(), allowed=(ValueError, TypeError)):
    """If ``out`` failed, it failed with an allowed, self-explaining exception."""
    if not out.ok:
        expect_rejection(out, names, values, allowed)


def expect_no_engine_error(out: Outcome) -> None:
    assert not out.engine_errors(), f"{out.what}: engine failed: {out.engine_errors()}"


def is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def finite_real(v) -> bool:
    try:
        return is_real(v) and math.isfinite(v)
    except OverflowError:  # an int beyond any float: not a finite real number
        return False


def check_chunking(chunks, shape) -> None:
    """``chunks`` (one length per dimension) is a valid chunking of ``shape``."""
    from dask.array.core import normalize_chunks

    assert isinstance(chunks, tuple) and len(chunks) == len(shape), (chunks, shape)
    for c, n in zip(chunks, shape):
        assert is_int(c), f"chunk length {c!r} is not an int: {chunks}"
        if n == 0:
            assert c in (0, 1), (chunks, shape)
        else:
            assert 1 <= c <= n, f"chunk length {c} outside [1, {n}]: {chunks} for {shape}"
    if math.prod(-(-n // max(c, 1)) for c, n in zip(chunks, shape)) <= 10**6:
        normalized = normalize_chunks(chunks, shape)  # O(blocks): only when cheap
        assert tuple(map(sum, normalized)) == tuple(shape)


def check_finite_numbers(d: dict, what: str) -> None:
    for k, v in d.items():
        if is_real(v):
            assert math.isfinite(v), f"{what}[{k!r}] is {v!r}"


def check_recommendation(rec, shape, itemsize) -> None:
    assert isinstance(rec, ac.Recommendation), rec
    check_chunking(rec.chunks, shape)
    assert rec.chunk_bytes == math.prod(rec.chunks) * itemsize or math.prod(shape) == 0
    assert rec.concurrency >= 1, f"concurrency {rec.concurrency}"
    assert rec.predicted_tasks >= 1
    for name in ("predicted_peak_bytes", "predicted_seconds", "memory_budget_bytes"):
        v = getattr(rec, name)
        assert math.isfinite(v) and v >= 0, f"{name} = {v!r}"
    assert rec.fits_budget == (rec.predicted_peak_bytes <= rec.memory_budget_bytes)
    check_finite_numbers(rec.to_dict(), "recommendation")


def only_budget_warnings(out: Outcome) -> None:
    """The only engine warning a recommendation may give is the 'nothing fits' one."""
    for w in out.warnings:
        if issubclass(w.category, AdaptiveChunkingWarning):
            assert "memory budget" in str(w.message), f"{out.what}: {w.message}"


def same_result(a, b) -> bool:
    """Whether two compute results are identical (dtype, shape and every byte)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.hasobject:
            return a.tolist() == b.tolist()
        return a.tobytes() == b.tobytes()
    return a == b


def metric(i: int = 0, nbytes: int = 80_000, ms: float = 0.3, rss_mb: float = 10.0):
    return ChunkMemoryMetric(("x", i), (nbytes // 8,), nbytes // 8, 8, nbytes, ms,
                             rss_mb, rss_mb)


def measured_profiler() -> ChunkProfiler:
    p = ChunkProfiler()
    for i in range(50):
        p.record_chunk(metric(i))
    return p


PILOT = measured_profiler()


def fresh_engine():
    ac.reset_adaptive_engine()
    return ac.get_adaptive_engine()


def computed_pilot(engine):
    """A profile measured on a small random array: (array, profile id)."""
    x = da.random.default_rng(0).random((400, 400), chunks=(100, 100))
    pid = engine.profile_array(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdaptiveChunkingWarning)
        (x + 1).sum().compute(scheduler="sync")
    return x, pid


# ---------------------------------------------------------------------------
# Values: good, bad and in between
# ---------------------------------------------------------------------------

JUNK = [
    "lots", "", None, True, False, [1], {"a": 1}, (), math.nan, math.inf, -math.inf,
    np.float64("nan"), 10**400,
]
junk = st.sampled_from(JUNK)
huge_ints = st.sampled_from([2**63, 2**64, 10**30, 10**400])
some_ints = st.one_of(st.integers(-5, 10**7), huge_ints)
some_floats = st.one_of(
    st.floats(-1e3, 1e7, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 2.5, -0.5]),
)
anything_numeric = st.one_of(some_ints, some_floats, junk,
                             st.sampled_from([np.int64(7), np.float32(2.5), np.int8(-3)]))


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


# ---------------------------------------------------------------------------
# ChunkSizeRecommender: settings, properties, memory_budget
# ---------------------------------------------------------------------------

def percent_ok(v, low, high, low_open=False, high_open=False) -> bool:
    if not finite_real(v):
        return False
    try:
        v = float(v)
    except OverflowError:  # 10**400: out of any range
        return False
    return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)


def nbytes_verdict(v, allow_none: bool) -> str:
    from dask.utils import parse_bytes

    if v is None:
        return "good" if allow_none else "bad"
    if isinstance(v, str):
        if not v.strip():
            return "bad"  # parse_bytes reads '' as 1 byte: no size was given
        try:
            n = parse_bytes(v)
        except (ValueError, TypeError):
            return "bad"
        except OverflowError:
            return "bad"  # "1e400": not a size
        return "good" if 1 <= n < 2**63 else "bad"
    if is_int(v):  # sizes live in int64 columns: 2**63 bytes and more are rejected
        return "good" if 1 <= v < 2**63 else "bad"
    if is_real(v) and math.isfinite(v) and 1 <= v < 2**63 and v == int(v):
        return "good"
    return "bad"


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


def as_bytes(v):
    from dask.utils import parse_bytes

    return None if v is None else int(parse_bytes(v) if isinstance(v, str) else v)


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


# ---------------------------------------------------------------------------
# ChunkSizeRecommender.recommend / recommend_chunk_size
# ---------------------------------------------------------------------------

shape_dims = st.one_of(st.integers(0, 5000), st.sampled_from([10**6, 10**12, 1]))
good_shapes = st.one_of(
    st.lists(shape_dims, max_size=4).map(tuple).filter(lambda s: math.prod(s) <= 10**13),
    st.sampled_from([(10**12,), (10**9,), (10**12, 1), (10**6, 10**6)]),  # 10**12 elements
)
bad_shapes = st.sampled_from([
    (100, -1), (100, 1.5), (100, math.nan), (True, 3), "abc", None, 5.0, (np.float32(3),),
    ("10",), {"a": 1},
])


def good_cluster(draw):
    n = draw(st.integers(1, 3))
    return {
        f"tcp://w{i}": {
            "nthreads": draw(st.integers(1, 8)),
            "memory_limit": draw(st.sampled_from([0, 2**30, 4 * 2**30])),
            "baseline": draw(st.sampled_from([0, 50 * MiB])),
        }
        for i in range(n)
    }


BAD_CLUSTERS = [
    "lots", 5, {"a": 5}, {"a": {"nthreads": "lots"}}, {"a": {"nthreads": -1}},
    {"a": {"nthreads": 2, "memory_limit": "lots"}}, {"a": {"nthreads": 2.5}},
    {"a": {"nthreads": 2, "memory_limit": -(2**30)}},
    {"a": {"nthreads": 2, "memory_limit": math.nan}},
]


@st.composite
def recommend_inputs(draw, bad_ok=True):
    """(kwargs, bad): the arguments of recommend() and which of them are bad."""
    bad = []
    shape = draw(st.one_of(good_shapes, bad_shapes) if draw(st.booleans()) else good_shapes)
    shape_ok = isinstance(shape, tuple) and all(is_int(s) and s >= 0 for s in shape)
    if not shape_ok:
        bad.append("array_shape")
    itemsize = draw(st.one_of(st.sampled_from([1, 2, 8, 16, 24, 2**20]),
                              st.sampled_from([0, -8, 8.0, "8", None, True, np.int64(4)])))
    if not (is_int(itemsize) and itemsize >= 1):
        bad.append("dtype_size")
    kwargs = {"array_shape": shape, "dtype_size": itemsize}
    ndim = len(shape) if shape_ok else None
    if draw(st.booleans()):
        nd = draw(st.one_of(st.just(ndim), st.integers(-1, 5), st.sampled_from(["2", 2.0])))
        kwargs["num_dimensions"] = nd
        if nd is not None and not (is_int(nd) and nd == ndim):
            bad.append("num_dimensions")
    if draw(st.booleans()):
        c = draw(st.one_of(st.none(), st.integers(0, 64),
                           st.sampled_from([-3, 2.5, math.nan, math.inf, "lots", [2]])))
        kwargs["concurrency"] = c
        if c is not None and not (is_int(c) and c >= 0):
            bad.append("concurrency")
    if draw(st.booleans()) and shape_ok:
        sc = draw(st.one_of(
            st.tuples(*[st.integers(1, 500) for _ in shape]),
            st.sampled_from([(0,) * len(shape), (-1,) * len(shape), "lots", (5,) * 7,
                             tuple([2.5] * len(shape))]),
        ))
        kwargs["storage_chunks"] = sc
        if not (isinstance(sc, tuple) and len(sc) == len(shape)
                and all(is_int(c) and c >= 1 for c in sc)):
            bad.append("storage_chunks")
    if draw(st.booleans()) and shape_ok:
        from dask.array.core import normalize_chunks

        if all(n <= 5000 for n in shape) and draw(st.booleans()):
            cc = normalize_chunks(tuple(max(1, n // draw(st.integers(1, 4))) for n in shape),
                                  shape)
        else:
            cc = draw(st.sampled_from(["lots", 5, ((1,),) * (len(shape) + 1),
                                       tuple((math.nan,) for _ in shape)]))
            if cc != () or shape != ():  # () are the chunks of a 0-d array
                bad.append("current_chunks")
        kwargs["current_chunks"] = cc
    if draw(st.booleans()):
        if draw(st.booleans()):
            cl = good_cluster(draw)
        else:
            cl = draw(st.sampled_from(BAD_CLUSTERS))
            bad.append("cluster")
        kwargs["cluster"] = cl
        if draw(st.booleans()):
            ws = draw(st.sampled_from([None, 1.0, 1.1, math.inf, "lots", math.nan, -1, 0]))
            kwargs["worker_saturation"] = ws
            if ws is not None and not (finite_real(ws) and ws > 0 or ws == math.inf):
                bad.append("worker_saturation")
    if draw(st.booleans()):
        from dask.array._adaptive_chunking.graph import Downstream

        ds = draw(st.sampled_from(["good", "lots", 5]))
        if ds == "good":
            ds = Downstream(frozenset({0}), False, ("rechunk",))
        else:
            bad.append("downstream")
        kwargs["downstream"] = ds
    return kwargs, bad


recommend_settings = {
    "min_b": st.sampled_from([1, 100, MiB, 64 * MiB]),
    "max_b": st.sampled_from([None, 15, 100, 1000, MiB, 256 * MiB]),
    "limit": st.sampled_from(["64MiB", "1GiB", "16GiB", "1TiB"]),
}


@fuzz(200)
@given(inputs=recommend_inputs().filter(lambda i: i[1]), **recommend_settings)
def test_recommend_rejects_bad_inputs_by_name(inputs, min_b, max_b, limit):
    """recommend(...) with some bad argument: a ValueError/TypeError naming it."""
    tried("ChunkSizeRecommender.recommend (bad input)")
    check_recommend(inputs, min_b, max_b, limit)


@fuzz(200)
@given(inputs=recommend_inputs().filter(lambda i: not i[1]), **recommend_settings)
def test_recommend_good_inputs(inputs, min_b, max_b, limit):
    """recommend(...) with good arguments: a valid chunking within the bounds, in time."""
    tried("ChunkSizeRecommender.recommend (good input)")
    check_recommend(inputs, min_b, max_b, limit)


def check_recommend(inputs, min_b, max_b, limit):
    kwargs, bad = inputs
    if max_b is not None and max_b < min_b:
        min_b, max_b = max_b, min_b
    r = ChunkSizeRecommender(min_chunk_bytes=min_b, max_chunk_bytes=max_b, memory_limit=limit)
    out = call("recommend", r.recommend, PILOT, **kwargs, seconds=5)
    if bad:
        expect_rejection(out, names=bad, values=[kwargs[b] for b in bad])
        return
    assert out.ok, repr(out)
    only_budget_warnings(out)
    rec = out.result
    shape, itemsize = kwargs["array_shape"], int(kwargs["dtype_size"])
    check_recommendation(rec, shape, itemsize)
    if not rec.fits_budget:
        assert out.warnings, "nothing fits the budget, and no warning said so"
    array_bytes = math.prod(shape) * itemsize
    plain = not any(k in kwargs for k in ("current_chunks", "storage_chunks", "downstream"))
    if plain and array_bytes and max_b is not None and max_b >= itemsize:
        assert rec.chunk_bytes <= max_b, f"chunk of {rec.chunk_bytes} B above max {max_b}"
    if plain and array_bytes and rec.fits_budget:
        assert rec.chunk_bytes <= rec.memory_budget_bytes or rec.chunk_bytes == itemsize
    # recommend_chunk_size agrees with recommend
    same = call("recommend_chunk_size", r.recommend_chunk_size, PILOT, shape, itemsize,
                kwargs.get("num_dimensions"), seconds=5)
    if not kwargs.keys() - {"array_shape", "dtype_size", "num_dimensions"}:
        assert same.ok and same.result == rec.chunks, repr(same)


# ---------------------------------------------------------------------------
# The engine's entry points, with lazily defined arrays of every kind
# ---------------------------------------------------------------------------


def zoo() -> dict[str, Any]:
    """Arrays of every kind the requirement names (none of them is computed here)."""
    rng = da.random.default_rng(1)
    x1 = rng.random(100, chunks=25)
    x2 = rng.random((60, 4), chunks=(15, 4))
    return {
        "float-2d": rng.random((300, 200), chunks=(100, 50)),
        "0-d": da.ones((), dtype="f8"),
        "0-d-from_array": da.from_array(np.float64(3.0)),
        "zero-length": da.zeros((0, 7), chunks=(3, 3)),
        "zero-length-1d": da.ones(0, chunks=5),
        "nan-chunks": x1[x1 > 0.5],
        "nan-chunks-2d": x2[x2[:, 0] > 0.5],
        "object": da.arange(12, chunks=5).astype(object),
        "structured": da.zeros(10, dtype=STRUCT, chunks=4),
        "unicode": da.from_array(np.array(["ab", "c", "", "xyz"]), chunks=3),
        "huge-2d": da.zeros((10**6, 10**6)),
        "huge-1d": da.ones(10**12, chunks=10**8),
        "huge-3d-int8": da.zeros((10**4,) * 3, dtype="i1"),
        "huge-object": da.zeros((10**6, 10**6), dtype=object, chunks=(10**4, 10**4)),
        "huge-structured": da.zeros((10**6, 10**6), dtype=STRUCT, chunks=(5000, 5000)),
    }


ZOO_NAMES = sorted(zoo())
NOT_ARRAYS = [np.ones(3), [1, 2], None, "x", 5]


def known(array) -> bool:
    return not any(math.isnan(s) for s in array.shape)


_PILOTS: dict[int, tuple] = {}


def pilot_of(engine):
    """One measured pilot per engine (a test's examples share the fixture's engine)."""
    key = id(engine)
    if key not in _PILOTS or _PILOTS[key][1] not in engine.profile_ids:
        _PILOTS[key] = computed_pilot(engine)
    return _PILOTS[key]


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


# ---------------------------------------------------------------------------
# Config: every key of adaptive-chunking.yaml with bad values, and unknown keys
# ---------------------------------------------------------------------------

FLAG_OK = ("true", "false", "1", "0", "yes", "no", "on", "off", "")


def flag_verdict(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "good"
    if isinstance(v, str):
        return "good" if v.strip().lower() in FLAG_OK else "bad"
    if is_int(v):
        return "good" if v in (0, 1) else "either"  # 2: truthy, if not a bool
    return "bad"


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


@contextlib.contextmanager
def working_directory(path):
    """``contextlib.chdir`` of Python 3.11, for 3.10."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


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


# ---------------------------------------------------------------------------
# History (issue 5): import/export of JSON lines, the engine's history entry
# points, predictions from the history, auto-rechunk and array.chunk-size
# ---------------------------------------------------------------------------

COLUMNS = ("created", "signature", "fingerprint", "shape", "dtype", "chunks", "data")
HERE_FP = hist.fingerprint(cores=2, threads=2, memory_limit=2**30, scheduler="threads")
FOREIGN_FP = hist.fingerprint(cores=1, threads=1, memory_limit=1, scheduler="elsewhere")
HUGE = 2**1024  # an int beyond any float
REQUIRED_OBSERVATION = [f.name for f in dataclasses.fields(Observation)
                        if f.default is dataclasses.MISSING]


def canonical(row) -> dict:
    """A stored profile as export_history writes it: the columns only, ``created``
    a float (the column is REAL), shape and chunks lists."""
    return {"created": float(row["created"]), "signature": row["signature"],
            "fingerprint": row["fingerprint"], "shape": list(row["shape"]),
            "dtype": row["dtype"], "chunks": [list(c) for c in row["chunks"]],
            "data": row["data"]}


def row_key(row) -> str:
    """Rows stored as the same text are one profile (an import adds it once)."""
    return json.dumps(canonical(row))


def write_lines(path, lines, newline="\n") -> None:
    """A JSON-lines file of ``lines`` (str, or bytes for undecodable ones)."""
    nl = newline.encode()
    with open(path, "wb") as f:
        f.writelines((line if isinstance(line, bytes) else line.encode("utf-8")) + nl
                     for line in lines)


def read_export(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def store_rows(store) -> list[dict]:
    return [canonical(r) for r in store.rows()]


def engine_rows(engine) -> list[dict]:
    return [canonical(r) for r in engine.load_history()]


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
finite_numbers = st.one_of(st.integers(0, 2**40), st.floats(0, 1e12))


@st.composite
def stored_observations(draw) -> dict:
    """An observation as observation_to_json writes it (finite numbers)."""
    obs = {name: draw(finite_numbers) for name in REQUIRED_OBSERVATION}
    for name in ("n_tasks", "concurrency"):
        obs[name] = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        obs["blocks"] = draw(st.integers(0, 10**6))
        obs["terms"] = draw(st.lists(st.tuples(st.text(max_size=5), st.integers(0, 100),
                                               st.floats(0, 2), st.floats(0, 10)),
                                     max_size=3).map(lambda ts: [list(t) for t in ts]))
        obs["held_bytes"] = draw(st.floats(0, 1e9))
        obs["task_bytes"] = draw(st.floats(0, 1e9))
        obs["held_aligned_bytes"] = draw(st.one_of(st.none(), st.floats(0, 1e9)))
    return obs


@st.composite
def chunkings(draw):
    """(shape, chunks) of a stored profile: empty, small and astronomically long dims."""
    shape, chunks = [], []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["small", "small", "zero", "huge"]))
        if kind == "zero":
            shape.append(0)
            chunks.append(draw(st.sampled_from([[], [0]])))
        elif kind == "huge":  # a length well typed but beyond int64: stored as given
            n = draw(st.sampled_from([2**63, 10**30, 10**400]))
            shape.append(n)
            chunks.append([n])
        else:
            parts = draw(st.lists(st.integers(1, 20), min_size=1, max_size=4))
            shape.append(sum(parts))
            chunks.append(parts)
    return shape, chunks


GOOD_DTYPES = ["f8", "float64", "<i4", ">f8", "U3", "S5", "O", "M8[s]", "c16", "bool",
               "i4,f8", "(2,)f8", "V8", "int8"]


@st.composite
def good_rows(draw) -> dict:
    """A line export_history could have written (and a few extra keys it ignores)."""
    shape, chunks = draw(chunkings())
    data = draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k != "observation"),
                                json_values, max_size=3))
    if draw(st.booleans()):
        data["observation"] = draw(stored_observations())
    row = {
        "created": draw(st.one_of(st.floats(0, 1e12), st.integers(0, 2**62))),
        "signature": draw(st.one_of(st.text(min_size=1, max_size=8),
                                    st.sampled_from(["sig", "w" * 300, "' OR 1=1 --"]))),
        "fingerprint": draw(st.one_of(
            st.sampled_from([HERE_FP, FOREIGN_FP, "{}"]),
            st.dictionaries(st.text(max_size=5), json_values, max_size=3).map(json.dumps))),
        "shape": shape, "dtype": draw(st.sampled_from(GOOD_DTYPES)), "chunks": chunks,
        "data": data,
    }
    if draw(st.integers(0, 4)) == 0:
        row[draw(st.sampled_from(["id", "extra"]))] = draw(json_scalars)
    return row


def distinct_new(rows, known: set) -> list[dict]:
    """The canonical rows an import of ``rows`` adds to a history holding ``known``."""
    out = []
    for r in rows:
        key = row_key(r)
        if key not in known:
            known.add(key)
            out.append(canonical(r))
    return out


@fuzz(40)
@given(rows=st.lists(good_rows(), max_size=5), blanks=st.lists(st.integers(0, 6), max_size=2),
       twice=st.booleans(), newline=st.sampled_from(["\n", "\r\n"]))
def test_history_import_good_files_round_trip(rows, blanks, twice, newline):
    """HistoryStore.import_ of a good JSON-lines file adds each distinct row once, and
    export/import round-trips exactly (same rows, same bytes, nothing read back lost)."""
    tried("history import (good file)")
    lines = [json.dumps(r) for r in rows]
    if twice and lines:
        lines.append(lines[0])  # the same profile twice: stored once
    for at in blanks:
        lines.insert(min(at, len(lines)), " " * at)  # blank lines are skipped
    expected = distinct_new(rows, set())
    with tempfile.TemporaryDirectory() as where:
        where = Path(where)
        write_lines(where / "in.jsonl", lines, newline)
        a, b = HistoryStore(where / "a.sqlite3"), HistoryStore(where / "b.sqlite3")
        try:
            out = call("import_", a.import_, where / "in.jsonl")
            assert out.ok, repr(out)
            assert out.result == len(expected), (out.result, len(expected))
            read = call("rows", store_rows, a)
            assert read.ok and not read.warnings, (read, [str(w.message) for w in read.warnings])
            assert read.result == expected[::-1], "the rows read back differ from the file's"
            exported = call("export", a.export, where / "out.jsonl")
            assert exported.ok and exported.result == len(expected), repr(exported)
            back = read_export(where / "out.jsonl")
            assert back == expected
            assert all(tuple(line) == COLUMNS for line in back), "export writes the columns"
            again = call("import_ (again)", a.import_, where / "out.jsonl")
            assert again.ok and again.result == 0 and len(a) == len(expected), repr(again)
            other = call("import_ (other)", b.import_, where / "out.jsonl")
            assert other.ok and other.result == len(expected), repr(other)
            b.export(where / "out2.jsonl")
            assert (where / "out2.jsonl").read_bytes() == (where / "out.jsonl").read_bytes()
            assert store_rows(b) == store_rows(a)
        finally:
            a.close()
            b.close()


# -- a bad line: ValueError naming it, nothing added --------------------------------

WRONG_TYPES = {
    "created": ["1.0", True, [], {}],
    "signature": [5, True, [], {}, "", 1.5],
    "fingerprint": [5, True, [], {}, 1.5],
    "shape": ["ab", 5, {}, True, [1.5], [True], [[1]], ["1"]],
    "chunks": ["ab", 5, {}, True, [1], [["1"]], [[1.5]]],
    "dtype": [True, 5, 1.5, [1], {"a": 1}],
    "data": [[], "x", 5, True, 1.5],
}
NOT_JSON = ["{", "nope", "{'created': 1}", "[1,", "NaN NaN", "{} {}", "\x00", "undefined",
            '{"created": 1.0,}', "\ufeff{}"]
UNKNOWN_DTYPES = ["nonsense", "f9", "i3", "", " f8", "float64 ", "M8[xx]", "U-1", "f8\x00",
                  "float128x"]
BAD_FINGERPRINTS = ["f", "", "{", "{'a': 1}", "[]", "5", "null", '"x"', "true", "NaN",
                    "[1, 2]", "{}}", " "]
DEEP = 100_000


def not_json_text(t: str) -> bool:
    if "\n" in t or "\r" in t or not t.strip():
        return False
    try:
        json.loads(t)
    except ValueError:
        return True
    return False


def with_observation(draw, row: dict) -> dict:
    row = json.loads(json.dumps(row))
    row["data"]["observation"] = draw(stored_observations())
    return row


def bad_line(draw, kind: str, row: dict) -> str | bytes:
    """``row`` (a good one) made bad in the way ``kind`` says, as one line."""
    row = json.loads(json.dumps(row))  # a copy
    ndim = len(row["shape"])
    if kind == "random-json":
        return json.dumps(draw(json_values))
    if kind == "not-json":
        return draw(st.one_of(st.sampled_from(NOT_JSON),
                              st.text(min_size=1, max_size=10).filter(not_json_text)))
    if kind == "invalid-utf8":
        good = json.dumps(row).encode()
        at = draw(st.integers(0, len(good)))
        return good[:at] + draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80"])) \
            + good[at:]
    if kind == "missing-field":
        for name in draw(st.sets(st.sampled_from(COLUMNS), min_size=1)):
            del row[name]
    elif kind == "wrong-type":
        name = draw(st.sampled_from(sorted(WRONG_TYPES)))
        row[name] = draw(st.sampled_from(WRONG_TYPES[name]))
    elif kind == "null":
        row[draw(st.sampled_from([c for c in COLUMNS if c != "dtype"]))] = None
    elif kind == "dtype-not-a-string":
        row["dtype"] = draw(st.sampled_from([None, [], {}, {"names": ["a"], "formats": ["i4"]}]))
    elif kind == "nan":
        bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        where = draw(st.sampled_from(["created", "shape", "chunks", "observation"]))
        if where == "created":
            row["created"] = bad
        elif where == "shape":
            row["shape"] = row["shape"][:-1] + [bad] if ndim else [bad]
        elif where == "chunks":
            row["chunks"] = (row["chunks"][:-1] + [[bad]]) if ndim else [[bad]]
        else:
            row = with_observation(draw, row)
            row["data"]["observation"][draw(st.sampled_from(REQUIRED_OBSERVATION))] = bad
    elif kind == "nan-in-data":
        bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        row["data"][draw(st.sampled_from(["x", "nested"]))] = draw(
            st.sampled_from([bad, [1, bad], {"a": bad}]))
    elif kind == "huge-int":
        where = draw(st.sampled_from(["created", "observation", "terms"]))
        if where == "created":
            row["created"] = HUGE
        else:
            row = with_observation(draw, row)
            if where == "observation":
                row["data"]["observation"][draw(st.sampled_from(REQUIRED_OBSERVATION))] = HUGE
            else:
                row["data"]["observation"]["terms"] = [["op", 1, HUGE, 1.0]]
    elif kind == "unknown-dtype":
        row["dtype"] = draw(st.sampled_from(UNKNOWN_DTYPES))
    elif kind == "negative-lengths":
        if not ndim or draw(st.booleans()):
            n = -draw(st.integers(1, 5))
            row["shape"], row["chunks"] = row["shape"] + [n], row["chunks"] + [[n]]
        else:
            d = draw(st.integers(0, ndim - 1))
            k = draw(st.integers(1, 5))
            n = row["shape"][d]
            row["chunks"][d] = [n + k, -k]  # the right sum, a negative length
    elif kind == "mismatched-chunks":
        how = draw(st.sampled_from(["fewer", "more", "sum", "empty"]))
        if how == "fewer" and ndim:
            row["chunks"] = row["chunks"][:-1]
        elif how == "sum" and ndim:
            d = draw(st.integers(0, ndim - 1))
            row["chunks"][d] = row["chunks"][d] + [1]
        elif how == "empty" and any(row["shape"]):
            d = next(i for i, n in enumerate(row["shape"]) if n)
            row["chunks"][d] = []
        else:
            row["chunks"] = row["chunks"] + [[1]]
    elif kind == "bad-fingerprint":
        row["fingerprint"] = draw(st.sampled_from(BAD_FINGERPRINTS))
    elif kind == "deep-nesting":
        if draw(st.booleans()):
            return "[" * DEEP + "]" * DEEP
        row["fingerprint"] = "[" * DEEP + "]" * DEEP
    elif kind == "surrogate-text":
        text = draw(st.sampled_from(["\ud800", "a\udfff", "\udc80x"]))
        if draw(st.booleans()):
            row["signature"] = text
        else:
            row["fingerprint"] = json.dumps({"host": text}, ensure_ascii=False)
    elif kind == "bad-observation":
        row = with_observation(draw, row)
        how = draw(st.sampled_from(["not-a-dict", "incomplete", "unknown", "wrong-type",
                                    "terms"]))
        obs = row["data"]["observation"]
        if how == "not-a-dict":
            row["data"]["observation"] = draw(st.sampled_from([5, [], "x", None, True]))
        elif how == "incomplete":
            del obs[draw(st.sampled_from(REQUIRED_OBSERVATION))]
        elif how == "unknown":
            obs[draw(st.sampled_from(["__reduce__", "pickle", "x"]))] = 1
        elif how == "wrong-type":
            obs[draw(st.sampled_from(REQUIRED_OBSERVATION))] = draw(
                st.sampled_from(["lots", True, [], {}]))
        else:
            obs["terms"] = draw(st.sampled_from([5, "abc", [["a", "x", 1, 1]], [[1, 2, 3]],
                                                 None, [5], [["a", 1, "g", 1]]]))
    elif kind == "null-observation-field":
        row = with_observation(draw, row)
        row["data"]["observation"][draw(st.sampled_from(REQUIRED_OBSERVATION))] = None
    else:
        raise AssertionError(kind)
    return json.dumps(row)


BAD_LINE_KINDS = [
    "random-json", "not-json", "missing-field", "wrong-type", "null", "nan",
    "unknown-dtype", "negative-lengths", "mismatched-chunks", "bad-fingerprint",
    "bad-observation", "invalid-utf8", "dtype-not-a-string", "nan-in-data", "huge-int",
    "deep-nesting", "surrogate-text", "null-observation-field",
]


@pytest.mark.parametrize("kind", BAD_LINE_KINDS)
@fuzz(10)
@given(data=st.data())
def test_history_import_rejects_a_bad_line(kind, data):
    """A file with one bad line: ValueError naming that line; the store is unchanged."""
    tried(f"history import (bad line: {kind})")
    before_rows = data.draw(st.lists(good_rows(), max_size=2), label="stored")
    good = data.draw(st.lists(good_rows(), min_size=1, max_size=4), label="good lines")
    at = data.draw(st.integers(0, len(good)), label="bad line at")
    line = bad_line(data.draw, kind, good[min(at, len(good) - 1)])
    lines = [json.dumps(r) for r in good]
    lines.insert(at, line)
    if data.draw(st.booleans(), label="blank line first"):
        lines.insert(0, "")
        at += 1
    n = at + 1
    with tempfile.TemporaryDirectory() as where:
        where = Path(where)
        write_lines(where / "bad.jsonl", lines, data.draw(st.sampled_from(["\n", "\r\n"])))
        store = HistoryStore(where / "h.sqlite3")
        try:
            if before_rows:
                write_lines(where / "good.jsonl", [json.dumps(r) for r in before_rows])
                store.import_(where / "good.jsonl")
            before = store_rows(store)
            out = call("import_", store.import_, where / "bad.jsonl")
            if kind == "dtype-not-a-string" and out.ok:  # np.dtype(None) is float64...
                read = call("rows", store_rows, store)  # ...then it must read back
                assert read.ok and not read.warnings, (
                    f"an imported row is not read back: "
                    f"{[str(w.message)[:200] for w in read.warnings]} {read!r}")
                return
            expect_rejection(out, names=("line",), allowed=(ValueError,))
            assert re.search(rf"\bline {n}\b", str(out.error)), (
                f"the error does not name line {n}: {out.error}")
            after = call("rows", store_rows, store)
            assert after.ok and after.result == before, "a rejected import changed the store"
        finally:
            store.close()


# -- the engine's history entry points ------------------------------------------------


@fuzz(20)
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("import"), st.lists(good_rows(), min_size=1, max_size=3)),
    st.sampled_from([("export",), ("clear",), ("reimport",), ("load",), ("load-one",)]),
), max_size=6))
def test_history_engine_exchange_sequence(engine, ops):
    """import/export/clear/load_history in any order agree with a model of the rows."""
    tried("engine history sequence")
    assert call("clear_history", engine.clear_history).ok
    model: list[dict] = []
    exported: list[dict] | None = None
    with tempfile.TemporaryDirectory() as where:
        where = Path(where)
        for i, (op, *args) in enumerate(ops):
            if op == "import" or (op == "reimport" and exported is not None):
                rows = args[0] if op == "import" else exported
                path = where / f"in{i}.jsonl"
                write_lines(path, [json.dumps(r) for r in rows])
                new = distinct_new(rows, {row_key(r) for r in model})
                out = call("import_history", engine.import_history, path)
                assert out.ok and out.result == len(new), (repr(out), len(new))
                model += new
            elif op == "export":
                out = call("export_history", engine.export_history, where / f"out{i}.jsonl")
                assert out.ok and out.result == len(model), repr(out)
                exported = read_export(where / f"out{i}.jsonl")
                assert exported == model
            elif op == "clear":
                out = call("clear_history", engine.clear_history)
                assert out.ok and out.result == len(model), repr(out)
                model = []
            elif op == "load-one" and model:
                sig = model[0]["signature"]
                out = call("load_history(sig)", engine.load_history, sig)
                assert out.ok, repr(out)
                assert [canonical(r) for r in out.result] == [
                    r for r in model[::-1] if r["signature"] == sig]
            rows = call("load_history", engine_rows, engine)
            assert rows.ok and not rows.warnings, repr(rows)
            assert rows.result == model[::-1], f"after {op}: the history differs from the model"


def history_with_rows(engine, where: Path, rows) -> list[dict]:
    """Clear the history and import ``rows``; returns them as load_history gives them."""
    engine.clear_history()
    write_lines(where / "setup.jsonl", [json.dumps(r) for r in rows])
    engine.import_history(where / "setup.jsonl")
    return engine_rows(engine)


FS_PATHS = ["new-file", "existing-file", "pathlib", "bytes", "relative", "directory",
            "missing-directory", "parent-is-a-file", "empty-string"]


def fs_path(kind: str, where: Path):
    """A path of ``kind`` inside ``where`` (relative ones are run from ``where``)."""
    existing = where / "existing.jsonl"
    return {
        "new-file": str(where / "new.jsonl"), "existing-file": str(existing),
        "pathlib": existing, "bytes": os.fsencode(existing), "relative": "existing.jsonl",
        "directory": str(where), "missing-directory": str(where / "no" / "such.jsonl"),
        "parent-is-a-file": str(existing / "x.jsonl"), "empty-string": "",
    }[kind]


@pytest.mark.parametrize("method", ["export_history", "import_history"])
@fuzz(20)
@given(kind=st.sampled_from(FS_PATHS), stored=st.lists(good_rows(), max_size=3),
       incoming=st.lists(good_rows(), min_size=1, max_size=3))
def test_history_path_arguments(engine, method, kind, stored, incoming):
    """export/import_history with any path: works, or an OSError/ValueError/TypeError
    naming the path; a rejected call loses no row and adds none."""
    tried(f"engine.{method} (paths)")
    with tempfile.TemporaryDirectory() as where:
        where = Path(where)
        before = history_with_rows(engine, where, stored)
        write_lines(where / "existing.jsonl", [json.dumps(r) for r in incoming])
        path = fs_path(kind, where)
        with working_directory(where):
            out = call(method, getattr(engine, method), path)
        works = kind in ("existing-file", "pathlib", "bytes", "relative") or (
            method == "export_history" and kind == "new-file")
        after = engine_rows(engine)
        if not works:
            expect_rejection(out, names=("path",), values=(path, os.fsdecode(path)),
                             allowed=(OSError, ValueError, TypeError))
            assert after == before, f"{method}({path!r}) was rejected, yet changed the history"
            return
        assert out.ok, repr(out)
        target = where / os.fsdecode(path)
        if method == "export_history":
            assert out.result == len(before) and after == before
            assert read_export(target) == before[::-1]
        else:
            new = distinct_new(incoming, {row_key(r) for r in before})
            assert out.result == len(new), (out.result, len(new))
            assert after == new[::-1] + before


WRONG_PATHS = [None, 1.5, [], {}, 10**30, -1, math.nan, object()]


@pytest.mark.parametrize("method", ["export_history", "import_history"])
@fuzz(10)
@given(path=st.sampled_from(WRONG_PATHS))
@example(path=1.5)
def test_history_path_of_the_wrong_type(engine, method, path):
    """A path that is no path: TypeError/ValueError naming the argument or the value."""
    tried(f"engine.{method} (wrong type)")
    with tempfile.TemporaryDirectory() as where:
        before = history_with_rows(engine, Path(where), [])
        with working_directory(where):
            out = call(method, getattr(engine, method), path)
    expect_rejection(out, names=("path",), values=(path,))
    assert engine_rows(engine) == before


@pytest.mark.parametrize("method", ["export_history", "import_history"])
@fuzz(5)
@given(stored=st.lists(good_rows(), max_size=2))
def test_history_int_path_is_not_a_file_descriptor(engine, method, stored):
    """An int path (here a descriptor this test owns) is rejected, not written through."""
    tried(f"engine.{method} (int path)")
    with tempfile.TemporaryDirectory() as where:
        where = Path(where)
        before = history_with_rows(engine, where, stored)
        write_lines(where / "fd.jsonl", [json.dumps(r) for r in stored])
        fd = os.open(where / "fd.jsonl", os.O_RDWR)
        inode = os.fstat(fd).st_ino
        try:
            out = call(method, getattr(engine, method), fd)
        finally:
            try:  # the number may have been reused (SQLite): close only our own file
                still_open = os.fstat(fd).st_ino == inode
            except OSError:
                still_open = False
            if still_open:
                os.close(fd)
    assert still_open, f"{method}({fd}) closed the caller's file descriptor {fd}"
    expect_rejection(out, names=("path",), values=(fd,))
    assert engine_rows(engine) == before


@fuzz(5)
@given(stored=st.lists(good_rows(), min_size=1, max_size=3))
def test_history_export_onto_the_history_file_keeps_the_rows(engine, stored):
    """Exporting onto the history database itself is refused, or loses nothing."""
    tried("engine.export_history (own file)")
    with tempfile.TemporaryDirectory() as where:
        before = history_with_rows(engine, Path(where), stored)
    own = str(engine._store().path)
    engine._store().close()  # as a new process finds it: all rows in the main file
    out = call("export_history", engine.export_history, own)
    if not out.ok:
        expect_rejection(out, names=("path", "history"), values=(own,),
                         allowed=(OSError, ValueError, TypeError))
    engine._store().close()
    after = call("load_history", engine_rows, engine)
    assert after.ok and not after.warnings, (repr(after),
                                             [str(w.message)[:200] for w in after.warnings])
    assert after.result == before, "rows were lost"


SIGNATURES = [None, "known", "nope", "", 5, 1.5, True, b"x", "\x00", "s" * 10_000,
              "' OR 1=1 --", "%", np.str_("known"), math.nan, 2**63 - 1]


@fuzz(20)
@given(signature=st.sampled_from(SIGNATURES), stored=st.lists(good_rows(), max_size=3))
def test_history_load_history_signature(engine, signature, stored):
    """load_history(signature): the rows of that signature (all for None), or an error
    naming it; never another exception, and the history is unchanged."""
    tried("engine.load_history (signature)")
    with tempfile.TemporaryDirectory() as where:
        before = history_with_rows(engine, Path(where), stored)
    if isinstance(signature, str) and signature == "known":
        signature = type(signature)(before[0]["signature"]) if before else "known"
    out = call("load_history", engine.load_history, signature)
    if signature is None:
        assert out.ok and [canonical(r) for r in out.result] == before, repr(out)
    elif isinstance(signature, str):
        assert out.ok, repr(out)
        assert [canonical(r) for r in out.result] == [
            r for r in before if r["signature"] == signature]
    elif not out.ok:
        expect_rejection(out, names=("signature",), values=(signature,))
    else:  # not a str: no stored signature (text) is it, unless as its text
        got = [canonical(r) for r in out.result]
        assert all(r in before for r in got)
    assert engine_rows(engine) == before


@fuzz(8)
@given(signature=st.sampled_from([[], {}, ["sig"], object(), "\ud800", 2**63, 10**30,
                                  -(2**63) - 1]))
@example(signature=[])
def test_history_load_history_signature_not_text(engine, signature):
    """A signature SQLite cannot take: ValueError/TypeError naming it."""
    tried("engine.load_history (signature not text)")
    with tempfile.TemporaryDirectory() as where:
        before = history_with_rows(engine, Path(where), [])
    out = call("load_history", engine.load_history, signature)
    expect_rejection(out, names=("signature",), values=(signature,))
    assert engine_rows(engine) == before


def flag_meaning(v):
    """True/False as this package reads a flag (config.flag_value), or None if it is none."""
    from dask.array._adaptive_chunking.config import flag_value

    try:
        return flag_value("x", v)
    except (TypeError, ValueError):
        return None


@fuzz(15)
@given(comparable=st.sampled_from([True, False, 0, 1, np.bool_(True), None, "no", "yes",
                                   "false", "", "lots", [], [0], 2, math.nan]))
@example(comparable="no")
def test_history_load_history_comparable(engine, comparable):
    """comparable= is a flag: a value the package reads as one acts as that bool; any
    other value is rejected by name."""
    tried("engine.load_history (comparable)")
    here = json.loads(ac._fingerprint())
    here_fp = hist.fingerprint(**here)
    with tempfile.TemporaryDirectory() as where:
        rows = [{"created": float(i), "signature": "s", "fingerprint": fp, "shape": [1],
                 "dtype": "f8", "chunks": [[1]], "data": {}}
                for i, fp in enumerate([here_fp, FOREIGN_FP])]
        before = history_with_rows(engine, Path(where), rows)
    only_here = [canonical(r) for r in engine.load_history(comparable=True)]
    assert only_here == [r for r in before if r["fingerprint"] == here_fp]
    out = call("load_history", engine.load_history, comparable=comparable)
    meaning = False if comparable is None else flag_meaning(comparable)
    if meaning is None:
        expect_rejection(out, names=("comparable",), values=(comparable,))
    elif out.ok:
        got = [canonical(r) for r in out.result]
        assert got == (only_here if meaning else before), (
            f"comparable={comparable!r} acted as {not meaning}")
    else:
        expect_rejection(out, names=("comparable",), values=(comparable,))
    assert engine_rows(engine) == before


def small_profiled(engine, computes: int, history: bool):
    """A new profiled array computed ``computes`` times (history on or off)."""
    x = da.random.default_rng(5).random((40, 40), chunks=(20, 20))
    pid = engine.profile_array(x)
    with dask.config.set({f"{PREFIX}.history": history}):
        for _ in range(computes):
            (x + 1).sum().compute(scheduler="sync")
    return pid


@fuzz(20)
@given(pid=st.sampled_from(["own", "nope", "", None, 5, [], {}, b"x", 1.5, ["own"], 10**30,
                           math.nan]),
       computes=st.integers(0, 2), history=st.booleans())
def test_history_save_profile_arguments(engine, pid, computes, history):
    """save_profile(pid): stores the unsaved computes of a profile (once), or rejects an
    id by name (KeyError for an unknown id, as get_profile); the history keeps its rows."""
    tried("engine.save_profile")
    own = small_profiled(engine, computes, history)
    given_pid = own if pid == "own" else ([own] if pid == ["own"] else pid)
    before = engine_rows(engine)
    out = call("save_profile", engine.save_profile, given_pid)
    after = engine_rows(engine)
    if pid != "own":
        expect_rejection(out, names=("profile",), values=(given_pid,),
                         allowed=(KeyError, ValueError, TypeError))
        assert after == before
        return
    assert out.ok, repr(out)
    expected = 0 if history else computes
    assert out.result == expected, f"saved {out.result}, expected {expected}"
    assert after[len(after) - len(before):] == before and len(after) == len(before) + expected
    assert all(r["data"]["profile"] == own for r in after[:expected])
    again = call("save_profile (again)", engine.save_profile, own)
    assert again.ok and again.result == 0, repr(again)


# -- predictions from the history, without a profile ---------------------------------


def history_zoo(kind: str, size: int):
    rng = da.random.default_rng(size)
    if kind == "float-2d":
        return rng.random((size, size // 2 + 1), chunks=(max(1, size // 4), 50))
    if kind == "float-1d":
        return rng.random(size, chunks=max(1, size // 4))
    if kind == "int-3d":
        return da.ones((10, 10, size // 10 + 1), dtype="i4", chunks=5)
    if kind == "0-d":
        return rng.random(())
    if kind == "zero-length":
        return rng.random((0, 7), chunks=(5, 5))
    if kind == "nan-chunks":
        x = rng.random(size, chunks=max(1, size // 4))
        return x[x > 0.5]
    return np.ones((3, 3))  # not a dask array


HISTORY_ARRAYS = ["float-2d", "float-2d", "float-1d", "int-3d", "0-d", "zero-length",
                  "nan-chunks", "numpy"]


def make_history_workload(kind: str, y):
    if kind == "same":
        return (y + 1).sum()
    if kind == "list-same":
        return [(y + 1).sum()]
    if kind == "other":
        return (y * 2).max()
    if kind == "unrelated":
        return da.ones(5, chunks=5).sum()
    return {"none": None, "empty-list": [], "lots": "lots", "five": 5}[kind]


def checked_pilot(engine):
    """A pilot computed on the synchronous scheduler, stored in the history."""
    pilot = pilot_of(engine)
    if not engine.load_history():
        _PILOTS.pop(id(engine), None)
        pilot = pilot_of(engine)
    assert engine.load_history(), "the pilot's compute was not stored"
    return pilot


def history_error_names(kind: str):
    return {"numpy": ("dask.array.Array",), "nan-chunks": ("NaN", "compute_chunk_sizes")}.get(
        kind, ("workload", "profile", "chunks", "empty", "no elements", "zero"))


@fuzz(40)
@given(kind=st.sampled_from(HISTORY_ARRAYS), size=st.sampled_from([8, 60, 400, 2000]),
       workload=st.sampled_from(["same", "list-same", "other", "unrelated", "none",
                                 "empty-list", "lots", "five"]),
       chunks=st.sampled_from(["own", "auto", "block", 0, -1, "lots", math.nan, 2.5, None,
                               "too-many", 10**30, "1e400"]))
def test_history_predict_and_recommend_without_a_profile(engine, kind, size, workload,
                                                        chunks):
    """recommend/predict(x, workload=) for an array nobody profiled: from the history
    of that workload, or an error naming what is missing; the history is unchanged."""
    tried("engine.predict/recommend (history)")
    checked_pilot(engine)
    before = engine_rows(engine)
    y = history_zoo(kind, size)
    wl = make_history_workload(workload, y) if kind != "numpy" else None
    ndim = getattr(y, "ndim", 2)
    c = {"own": getattr(y, "chunks", None), "block": (size // 2 + 1,) * ndim,
         "too-many": (1,) * (ndim + 1)}.get(chunks, chunks) if isinstance(chunks, str) \
        else chunks
    with dask.config.set(scheduler="sync"):  # where the pilot's compute ran
        rec = call("recommend", engine.recommend, y, workload=wl, seconds=20)
        pred = call("predict", engine.predict, y, c, workload=wl, seconds=20)
    assert engine_rows(engine) == before, "a prediction changed the history"
    for o in (rec, pred):
        only_budget_warnings(o)
    names = history_error_names(kind)
    if kind in ("numpy", "nan-chunks"):
        expect_rejection(rec, names=names)
        expect_rejection(pred, names=names)
        return
    if workload in ("lots", "five"):
        expect_rejection(rec, names=("workload",), values=(wl,))
        expect_rejection(pred, names=("workload",), values=(wl,))
        return
    if workload == "none":  # no profile, no workload: recommend never guesses
        expect_rejection(rec, names=("workload=",))
        expect_rejection(pred, names=("workload=",))
        return
    must = kind == "float-2d" and workload in ("same", "list-same")
    if must:
        assert rec.ok, f"the history of this workload holds the pilot: {rec!r}"
    else:
        expect_clean_error(rec, names=names)
    if rec.ok:
        check_recommendation(rec.result, y.shape, max(1, y.dtype.itemsize))
    from dask.array.core import normalize_chunks

    try:
        normalize_chunks(c, y.shape, dtype=y.dtype)
        chunks_ok = True
    except Exception:  # noqa: BLE001 - Dask itself rejects them
        chunks_ok = False
    if rec.ok and not chunks_ok:
        expect_rejection(pred, names=("chunks",), values=(c,))
    elif must and chunks_ok:
        assert pred.ok, repr(pred)
    else:
        expect_clean_error(pred, names=names, values=(c,))
    if pred.ok:
        check_finite_numbers(pred.result, "predict()")
        assert len(pred.result["chunks"]) == y.ndim


@fuzz(30)
@given(kind=st.sampled_from(HISTORY_ARRAYS), size=st.sampled_from([8, 60, 400, 1000]),
       auto=st.sampled_from([True, True, "true", "yes", 1, "on", "maybe", 2, None, math.nan]))
def test_history_apply_recommendation_with_auto_rechunk(engine, kind, size, auto):
    """apply_recommendation(x) with auto-rechunk on and no profile of x: the chunks the
    history recommends for its kind (same values), or an error naming what is missing;
    off, it never guesses."""
    tried("engine.apply_recommendation (auto-rechunk)")
    checked_pilot(engine)
    before = engine_rows(engine)
    y = history_zoo(kind, size)
    chunk_size = dask.config.config.get("array", {}).get("chunk-size", "absent")
    with dask.config.set({f"{PREFIX}.auto-rechunk": auto, "scheduler": "sync"}):
        out = call("apply_recommendation", engine.apply_recommendation, y, seconds=20)
    with dask.config.set(scheduler="sync"):
        off = call("apply_recommendation (off)", engine.apply_recommendation, y)
    assert engine_rows(engine) == before, "apply_recommendation changed the history"
    assert dask.config.config.get("array", {}).get("chunk-size", "absent") == chunk_size
    only_budget_warnings(out)
    names = history_error_names(kind)
    if kind in ("numpy", "nan-chunks"):
        expect_rejection(out, names=names + ("auto-rechunk",))
        expect_rejection(off, names=names)
        return
    expect_rejection(off, names=("workload=",))  # off: no guess from other workloads
    if flag_verdict(auto) == "bad":  # None and NaN too
        expect_rejection(out, names=("auto-rechunk",), values=(auto,))
        return
    if flag_verdict(auto) == "either" and not out.ok:
        expect_rejection(out, names=("auto-rechunk",), values=(auto,))
        return
    if kind == "float-2d":  # the pilot is the newest (only) workload of its kind
        assert out.ok, repr(out)
    else:
        expect_clean_error(out, names=names + ("workload=",))
    if out.ok:
        z = out.result
        assert isinstance(z, da.Array) and z.shape == y.shape and z.dtype == y.dtype
        check_chunking(tuple(max(c, default=0) for c in z.chunks), y.shape)
        if math.prod(y.shape) <= 10**6:
            assert same_result(z.compute(scheduler="sync"), y.compute(scheduler="sync"))


def chunk_size_state():
    section = dask.config.config.get("array", {})
    return ("present", section["chunk-size"]) if "chunk-size" in section else ("absent",)


@fuzz(20)
@given(value=st.sampled_from([True, False, None, "yes", "no", "off", "", "maybe", 0, 1, 2,
                              math.nan, [], np.bool_(True), "True"]))
def test_history_enable_auto_rechunk(engine, value):
    """enable_adaptive_chunking(auto_rechunk=v): a flag sets auto-rechunk (True gives
    array.chunk-size the history's target), anything else is rejected by name and
    changes nothing; disable gives array.chunk-size back exactly."""
    tried("enable_adaptive_chunking(auto_rechunk=)")
    checked_pilot(engine)
    before = chunk_size_state()
    keys = {f"{PREFIX}.enabled": False, f"{PREFIX}.auto-rechunk": False, "scheduler": "sync"}
    with dask.config.set(keys):
        out = call("enable_adaptive_chunking", ac.enable_adaptive_chunking, auto_rechunk=value)
        verdict = "good" if value is None else flag_verdict(value)
        if verdict == "bad" or (verdict == "either" and not out.ok):
            expect_rejection(out, names=("auto-rechunk", "auto_rechunk"), values=(value,))
            assert dask.config.get(f"{PREFIX}.enabled") is False
            assert dask.config.get(f"{PREFIX}.auto-rechunk") is False
            assert chunk_size_state() == before
        else:
            assert out.ok, repr(out)
            expect_no_engine_error(out)
            assert out.result is ac.get_adaptive_engine() and out.result.enabled
            on = False if value is None else flag_meaning(value)
            assert bool(dask.config.get(f"{PREFIX}.auto-rechunk")) is on
            if on:
                now = chunk_size_state()
                assert now != before and isinstance(now[1], int) and now[1] >= 1, (
                    f"auto-rechunk on with a comparable history left {now}")
            else:
                assert chunk_size_state() == before
        dis = call("disable_adaptive_chunking", ac.disable_adaptive_chunking)
        assert dis.ok, repr(dis)
        assert chunk_size_state() == before, "array.chunk-size was not given back exactly"
    assert chunk_size_state() == before


# -- ChunkSizeOverride under the user's sets and blocks ---------------------------------

APPLIED = [2**20, 2**21, 3 * 2**20, 2**26]
USER_VALUES = ["7MiB", "64MiB", "128MiB", 5_000_000]  # never one the override writes
START = ["absent", "128MiB", "5MiB", 3_000_000]
_apply_op = st.tuples(st.just("apply"), st.sampled_from(APPLIED))
_enter_op = st.tuples(st.just("enter"), st.sampled_from(USER_VALUES))
override_ops = st.one_of(  # blocks and applies more often than the user's lasting sets
    _apply_op, _apply_op, st.just(("restore",)), _enter_op, _enter_op, st.just(("exit",)),
    st.just(("exit",)), st.tuples(st.just("set"), st.sampled_from(USER_VALUES)),
    st.just(("unset",)),
)
_ABSENT = ("absent",)


def _config_value():
    section = dask.config.config.get("array")
    if isinstance(section, dict) and "chunk-size" in section:
        return ("present", section["chunk-size"])
    return _ABSENT


def _put(value) -> None:
    if value == _ABSENT:
        dask.config.config.get("array", {}).pop("chunk-size", None)
    else:
        dask.config.set({"array.chunk-size": value[1]})


@fuzz(200)
@given(start=st.sampled_from(START), ops=st.lists(override_ops, max_size=14))
def test_chunk_size_override_gives_back_exactly(start, ops):
    """ChunkSizeOverride under apply/restore/user sets/config blocks: apply never writes
    over a value the user set; once it is restored array.chunk-size is what it would be
    without the override (exactly what it was, absent included, without user sets)."""
    tried("ChunkSizeOverride sequence")
    original = _config_value()
    blocks: list = []
    try:
        _put(_ABSENT if start == "absent" else ("present", start))
        begin = _config_value()
        shadow, shadow_stack = begin, []  # array.chunk-size had the override never run
        override = ChunkSizeOverride()
        active, applied = False, None  # the override's value is out (model)
        user_set = False
        for step, (op, *arg) in enumerate(ops):
            current = _config_value()
            what = f"step {step} {op}{tuple(arg)} in {ops}"
            if op == "apply":
                wrote = override.apply(arg[0], "fuzz")
                if active and current != ("present", applied):  # the user's value is in
                    assert not wrote and _config_value() == current, (
                        f"{what}: apply wrote over the user's {current}")
                    continue
                if wrote:
                    assert _config_value() == ("present", arg[0]), what
                    active, applied = True, arg[0]
                else:
                    assert active and applied == arg[0] and _config_value() == current, what
            elif op == "restore":
                gave_back = override.restore("fuzz")
                if not active:
                    assert not gave_back and _config_value() == current, what
                elif current != ("present", applied):
                    assert not gave_back and _config_value() == current, (
                        f"{what}: restore wrote over the user's {current}")
                else:
                    assert gave_back, f"{what}: its own value was in place, yet not restored"
                    active, applied = False, None
            elif op == "set":
                dask.config.set({"array.chunk-size": arg[0]})
                shadow, user_set = ("present", arg[0]), True
            elif op == "unset":
                dask.config.config.get("array", {}).pop("chunk-size", None)
                shadow, user_set = _ABSENT, True
            elif op == "enter":
                block = dask.config.set({"array.chunk-size": arg[0]})
                blocks.append(block)
                shadow_stack.append(shadow)
                shadow = ("present", arg[0])
            elif op == "exit" and blocks:
                blocks.pop().__exit__(None, None, None)
                shadow = shadow_stack.pop()
            if not active:
                assert _config_value() == shadow, (
                    f"{what}: nothing of the override is out, yet array.chunk-size is "
                    f"{_config_value()}, not {shadow}")
        while blocks:
            blocks.pop().__exit__(None, None, None)
            shadow = shadow_stack.pop()
        own_in_place = active and _config_value() == ("present", applied)
        gave_back = override.restore("the end")
        assert gave_back == own_in_place, (gave_back, own_in_place)
        # Its own value given back, or a value not its own in place (kept): either way
        # array.chunk-size is what it would be without the override...
        assert _config_value() == shadow, (
            f"after the final restore array.chunk-size is {_config_value()}, "
            f"not {shadow} ({ops})")
        if not user_set:  # ...which, without a set by the user, is where it started
            assert _config_value() == begin, (
                f"array.chunk-size is {_config_value()}, was {begin} ({ops})")
    finally:
        while blocks:
            with contextlib.suppress(Exception):
                blocks.pop().__exit__(None, None, None)
        _put(original)
