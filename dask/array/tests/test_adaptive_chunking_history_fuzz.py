"""Hypothesis fuzz of the history entry points.

The history entry points (issue 5: ``save_profile``, ``load_history``,
``export_history``, ``import_history``, ``clear_history``, predictions from the
history, auto-rechunk and its ``array.chunk-size`` override) are fuzzed here. There a
filesystem problem (a missing file, a directory) may also be an ``OSError`` naming
the path, and a rejected call must not lose a stored row. Every path they are given
is inside a temporary directory.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import dask
import dask.array as da
from dask.array import adaptive_chunking as ac
from dask.array._adaptive_chunking import history as hist
from dask.array._adaptive_chunking import config
from dask.array._adaptive_chunking.auto_rechunk import ChunkSizeOverride
from dask.array._adaptive_chunking.history_service import HistoryService, fingerprint
from dask.array._adaptive_chunking.history import HistoryStore
from dask.array._adaptive_chunking.model import Observation

from adaptive_chunking_fuzz_harness import (
    _PILOTS,
    PREFIX,
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    call,
    check_chunking,
    check_finite_numbers,
    check_recommendation,
    expect_clean_error,
    expect_no_engine_error,
    expect_rejection,
    flag_verdict,
    fuzz,
    only_budget_warnings,
    pilot_of,
    same_result,
    tried,
    working_directory,
)


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
    own = str(HistoryService().store(config.snapshot()).path)
    engine.close()  # its history file as a new process finds it: all rows in the main file
    out = call("export_history", engine.export_history, own)
    if not out.ok:
        expect_rejection(out, names=("path", "history"), values=(own,),
                         allowed=(OSError, ValueError, TypeError))
    engine.close()
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
    here = json.loads(fingerprint(config.snapshot()))
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
