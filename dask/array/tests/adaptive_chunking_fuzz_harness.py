"""The shared harness of the Hypothesis fuzz of ``dask.array.adaptive_chunking``.

The fuzz tests live in ``test_adaptive_chunking_fuzz_<subject>.py`` (metric, memory
pressure, profiler, recommender settings, recommend, engine, computes, config) and in
``test_adaptive_chunking_history_fuzz.py``. This module is not a test module: the
tests directory's ``conftest.py`` puts its directory on ``sys.path`` (the tests run in
``--import-mode=importlib``) and keeps it out of the collection. It holds what the fuzz
modules share: the ``fuzz(n)`` settings, example counting and the report fixture each
module imports, time limits, ``Outcome`` and the checks on it, the value strategies,
the array zoo, the pilot profiles and the verdicts more than one subject uses.

The requirement (issue 7): bad input -- zero-length and 0-d arrays, unknown (NaN)
chunks, object and structured dtypes, shapes of 10**12 elements, non-integer or
negative sizes, invalid config values (wrong type, out of range, unknown key
spelling) -- gives a ValueError/TypeError naming the value and the fix, or a correct
result; never a hang, a silent wrong recommendation or a crash inside the user's
compute.

Every fuzz property therefore accepts exactly two outcomes for a call: a sane result,
or a ``ValueError``/``TypeError`` (``KeyError`` for an unknown profile id) whose
message names the bad value, the parameter or the config key it was given as. Any
other exception, a result that differs from the same compute without the engine, an
unexpected engine warning, or a call that does not return within its time limit
(``SIGALRM``, so the hanging loop itself is interrupted) fails the property.

Every property counts the examples it tried; the totals are written to the terminal
at the end of each fuzz module (``adaptive chunking fuzz: N examples tried
(module)``). Shrinking is off so that a hang found by a property costs one time limit,
not one per shrink step: the failing example is the first one found (the findings
give minimal repros).
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import signal
import threading
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

import dask.array as da
from dask.array import adaptive_chunking as ac
from dask.array.adaptive_chunking import AdaptiveChunkingWarning, ChunkMemoryMetric, ChunkProfiler

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
    """At the end of each fuzz module (each imports this fixture): the examples it tried."""
    before = EXAMPLES.copy()
    yield
    here = EXAMPLES - before
    total = sum(here.values())
    module = request.module.__name__.rpartition(".")[2]
    lines = [f"adaptive chunking fuzz: {total} examples tried ({module})"]
    lines += [f"    {n:5d}  {name}" for name, n in sorted(here.items())]
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
# The array zoo: lazily defined arrays of every kind, and one pilot per engine
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


def known(array) -> bool:
    return not any(math.isnan(s) for s in array.shape)


_PILOTS: dict[int, tuple] = {}


def pilot_of(engine):
    """One measured pilot per engine (a test's examples share the fixture's engine)."""
    key = id(engine)
    if key not in _PILOTS or _PILOTS[key][1] not in engine.profile_ids:
        _PILOTS[key] = computed_pilot(engine)
    return _PILOTS[key]


# ---------------------------------------------------------------------------
# Verdicts shared by the settings and the config properties
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


def as_bytes(v):
    from dask.utils import parse_bytes

    return None if v is None else int(parse_bytes(v) if isinstance(v, str) else v)


FLAG_OK = ("true", "false", "1", "0", "yes", "no", "on", "off", "")


def flag_verdict(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "good"
    if isinstance(v, str):
        return "good" if v.strip().lower() in FLAG_OK else "bad"
    if is_int(v):
        return "good" if v in (0, 1) else "either"  # 2: truthy, if not a bool
    return "bad"


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def working_directory(path):
    """``contextlib.chdir`` of Python 3.11, for 3.10."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
