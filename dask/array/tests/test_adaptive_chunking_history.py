"""The history store: permissions, concurrency, corrupt files, migration, exchange."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dask.array import adaptive_chunking as ac
from dask.array._adaptive_chunking import config, history
from dask.array._adaptive_chunking.advisor import Advisor
from dask.array._adaptive_chunking.history import HistoryStore
from dask.array._adaptive_chunking.history_service import HistoryService
from dask.array._adaptive_chunking.profiles import Profile, ProfileRegistry
from dask.array.adaptive_chunking import AdaptiveChunkingWarning

FP = '{"cores": 2}'


class Recommender:
    """A default recommender as the advisor meets it (the engine's, without an engine)."""

    def __init__(self):
        self.recommender = ac.ChunkSizeRecommender()
        self.plan_settings, self.memory_budget = (self.recommender.plan_settings,
                                                  self.recommender.memory_budget)

    def recommend(self, observations, shape, itemsize, **kwargs):
        profiler = ac.ChunkProfiler.from_observations(observations.observations())
        return self.recommender.recommend(profiler, shape, itemsize, **kwargs)


def advisor():
    """An advisor of its own over the configured history (what an engine's does)."""
    return Advisor(ProfileRegistry(), HistoryService(), Recommender)


def auto_target():
    """The byte target auto-rechunk takes from the history now, and why."""
    return advisor().auto_target(config.snapshot())


def add(store, i=0, signature="sig", fingerprint=FP):
    return store.add(signature=signature, fingerprint=fingerprint, shape=(100, 100),
                     dtype="float64", chunks=((50, 50), (100,)), data={"i": i, "x": [1.5]})


def test_rows_round_trip_as_plain_values(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    add(store, 1)
    add(store, 2, signature="other")
    rows = store.rows(signature="sig", fingerprint=FP)
    assert [r["data"] for r in rows] == [{"i": 1, "x": [1.5]}]
    assert rows[0]["shape"] == (100, 100) and rows[0]["chunks"] == ((50, 50), (100,))
    assert [r["data"]["i"] for r in store.rows()] == [2, 1]  # newest first
    store.close()
    # what is on disk is text: JSON and plain columns, nothing executable
    conn = sqlite3.connect(tmp_path / "h.sqlite3")
    types = {t for (t,) in conn.execute(
        "SELECT DISTINCT typeof(shape) || typeof(chunks) || typeof(data) FROM profiles")}
    assert types == {"texttexttext"}
    conn.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_created_readable_by_the_owner_only(tmp_path):
    path = tmp_path / "cache" / "dask" / "h.sqlite3"
    store = HistoryStore(path)
    add(store)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    store.close()


def test_wal_and_schema_version(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    add(store)
    conn = store._connect()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
    store.close()


def test_an_empty_file_of_version_0_is_migrated(tmp_path):
    path = tmp_path / "h.sqlite3"
    sqlite3.connect(path).close()  # a valid, empty database: version 0
    store = HistoryStore(path)
    add(store)
    assert len(store) == 1
    store.close()


def test_a_corrupt_file_is_moved_aside_and_reported(tmp_path):
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = HistoryStore(path)
    with pytest.warns(AdaptiveChunkingWarning) as record:
        add(store)
    (aside,) = tmp_path.glob("h.sqlite3.corrupt-*")
    message = str(record[0].message)
    assert str(path) in message and str(aside) in message
    assert aside.read_bytes().startswith(b"this is not a database")  # nothing lost
    assert len(store) == 1
    store.close()


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "h.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    store = HistoryStore(path)
    with pytest.raises(RuntimeError, match="newer version.*history-path"):
        add(store)
    assert not list(tmp_path.glob("h.sqlite3.corrupt-*"))  # the newer version's file
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 99
    store.close()


def test_a_locked_file_is_not_taken_for_a_corrupt_one(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    add(store)
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA user_version=0")  # makes the next open migrate: a write
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            HistoryStore(path, timeout=0.2).rows()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("h.sqlite3.corrupt-*"))
    assert len(HistoryStore(path)) == 1


def test_a_bad_stored_row_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    add(store, 1)
    add(store, 2)
    with sqlite3.connect(path) as conn:  # edited by hand
        conn.execute("UPDATE profiles SET dtype = 'nonsense' WHERE id = 1")
    with pytest.warns(AdaptiveChunkingWarning, match="row 1 .*not a valid profile.*nonsense"):
        assert [r["data"]["i"] for r in store.rows()] == [2]
    store.close()


def test_threads_sharing_a_store_lose_nothing(tmp_path):
    import threading

    store = HistoryStore(tmp_path / "h.sqlite3")
    errors = []

    def write(w):
        try:
            for i in range(50):
                add(store, i, signature=f"t{w}")
                store.rows(signature=f"t{w}", limit=5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [len(store.rows(signature=f"t{w}")) for w in range(4)] == [50] * 4
    store.close()


def test_rows_beyond_the_bound_are_pruned_oldest_first(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", max_rows=5)
    for i in range(12):
        add(store, i)
    assert [r["data"]["i"] for r in store.rows()] == [11, 10, 9, 8, 7]
    store.add_many([dict(created=float(i), signature="sig", fingerprint=FP, shape=(100, 100),
                         dtype="float64", chunks=((50, 50), (100,)), data={"i": i})
                    for i in range(12, 20)])  # one write
    assert [r["data"]["i"] for r in store.rows()] == [19, 18, 17, 16, 15]
    store.max_rows = 2  # lowered: the next write prunes down to it
    add(store, 20)
    assert [r["data"]["i"] for r in store.rows()] == [20, 19]
    store.clear()
    add(store, 21)  # ids go on growing after a clear
    assert [r["data"]["i"] for r in store.rows()] == [21]
    store.close()


def test_a_hole_cut_by_hand_never_leaves_more_rows_than_the_bound(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", max_rows=4)
    for i in range(4):
        add(store, i)
    with store._write() as conn:
        conn.execute("DELETE FROM profiles WHERE id = 3")  # row i=2, by hand
    for i in range(4, 7):
        add(store, i)
        assert len(store) <= 4
    assert [r["data"]["i"] for r in store.rows()][:3] == [6, 5, 4]
    store.close()


def test_export_import_and_clear(tmp_path):
    store = HistoryStore(tmp_path / "a.sqlite3")
    for i in range(3):
        add(store, i)
    assert store.export(tmp_path / "h.jsonl") == 3
    lines = (tmp_path / "h.jsonl").read_text().splitlines()
    assert [json.loads(line)["data"]["i"] for line in lines] == [0, 1, 2]
    other = HistoryStore(tmp_path / "b.sqlite3")
    assert other.import_(tmp_path / "h.jsonl") == 3
    assert [r["data"] for r in other.rows()] == [r["data"] for r in store.rows()]
    assert other.import_(tmp_path / "h.jsonl") == 0 and len(other) == 3  # not twice
    assert other.clear() == 3 and len(other) == 0
    store.close()
    other.close()


@pytest.mark.parametrize("bad, named", [
    ({"pickle": "no"}, "missing field"),
    ({"dtype": "nonsense"}, "nonsense"),
    ({"fingerprint": "f"}, "fingerprint"),
    ({"chunks": [1, 2]}, "chunks"),
    ({"created": float("nan")}, "created"),
    ({"data": {"observation": {"n_tasks": "lots"}}}, "n_tasks"),
])
def test_a_bad_import_line_is_named_and_adds_nothing(tmp_path, bad, named):
    good = {"created": 1.0, "signature": "s", "fingerprint": FP, "shape": [1],
            "dtype": "f8", "chunks": [[1]], "data": {}}
    line = json.dumps(bad if "pickle" in bad else {**good, **bad})
    (tmp_path / "h.jsonl").write_text(json.dumps(good) + "\n" + line + "\n")
    store = HistoryStore(tmp_path / "h.sqlite3")
    with pytest.raises(ValueError, match=f"line 2.*{named}"):
        store.import_(tmp_path / "h.jsonl")
    assert len(store) == 0
    store.close()


WRITER = """
import sys
from dask.array._adaptive_chunking.history import HistoryStore
store = HistoryStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.add(signature="w" + sys.argv[2], fingerprint="{}", shape=(10,), dtype="f8",
              chunks=((10,),), data={"i": i})
store.close()
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "h.sqlite3"
    assert len(HistoryStore(path)) == 0  # created before the writers race
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), "200"])
             for w in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = HistoryStore(path)
    assert len(store.rows(signature="w0")) == len(store.rows(signature="w1")) == 200
    store.close()


def test_default_path_follows_the_platform(monkeypatch, tmp_path):
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert history.default_path() == tmp_path / "dask" / "adaptive-chunking.sqlite3"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert history.default_path().parent == Path(os.path.expanduser("~/.cache/dask"))
    assert history.default_path().name == "adaptive-chunking.sqlite3"


SIGNATURE = """
import sys
import dask.array as da
from dask.array._adaptive_chunking.graph import signature
x = da.random.random((int(sys.argv[1]),) * 2, chunks=int(sys.argv[2]))
y = (x + x.T).mean(axis=0)
print(signature(y.__dask_graph__().layers, x.ndim, x.dtype))
"""


def test_signature_is_stable_across_processes_sizes_and_chunks():
    out = {
        subprocess.run([sys.executable, "-c", SIGNATURE, str(n), str(c)], check=True,
                       capture_output=True, text=True).stdout.strip()
        for n, c in [(5000, 500), (8000, 1000), (8000, 8000), (600, 37)]
    }
    assert len(out) == 1 and len(out.pop()) == 16


def test_signature_tells_workloads_apart():
    import dask.array as da
    from dask.array._adaptive_chunking.graph import signature

    def of(y, x):
        return signature(y.__dask_graph__().layers, x.ndim, x.dtype)

    x = da.random.random((2000, 2000), chunks=250)
    base = of((x + x.T).mean(axis=0), x)
    assert of((x * x.T).mean(axis=0), x) != base  # another operation
    assert of((x + x.T).sum(axis=0), x) != base
    f = x.astype("float32")
    assert of((f + f.T).mean(axis=0), f) != base  # another dtype
    # Dask adds or skips rechunks and matrix-product steps by the chunks: the same
    # expression keeps its id at every chunking
    assert of(x.rechunk((2000, 10)).sum(), x) == of(x.rechunk((2000, 1000)).sum(), x)
    for expression in (
        lambda a: (a @ a.T).sum(),
        lambda a: abs(da.fft.fft(a.rechunk({1: -1}), axis=1)).sum(),
        lambda a: (a + a.T).sum(),
        lambda a: a.dot(a).mean(),
    ):
        ids = {of(expression(a), a) for a in (
            x, x.rechunk(2000), x.rechunk((2000, 100)), x.rechunk((100, 2000))
        )}
        assert len(ids) == 1
    assert len({of((x @ x.T).sum(), x), of((x + x.T).sum(), x), of(x.dot(x).sum(), x)}) == 3


def test_observations_round_trip_through_json(engine):
    import dask.array as da

    x = da.random.random((400, 400), chunks=100)
    pid = engine.profile_array(x)
    (x + x.T).sum().compute()
    (obs,) = engine.get_profiler(pid).observations()
    stored = json.loads(json.dumps(history.observation_to_json(obs)))
    assert history.observation_from_json(stored) == obs
    with pytest.raises(ValueError, match="peak_bytes"):
        history.observation_from_json({**stored, "peak_bytes": "lots"})
    with pytest.raises(ValueError, match="unknown field"):
        history.observation_from_json({**stored, "__reduce__": 1})


def test_each_profiled_compute_is_stored_and_can_be_exchanged(engine, tmp_path):
    import dask
    import dask.array as da

    with dask.config.set({"array.adaptive-chunking.history-path": str(tmp_path / "h.db")}):
        x = da.random.random((400, 400), chunks=100)
        pid = engine.profile_array(x)
        (x + x.T).sum().compute()
        (x + x.T).sum().compute()
        rows = engine.load_history()
        assert len(rows) == 2 and {r["data"]["profile"] for r in rows} == {pid}
        assert rows[0]["shape"] == (400, 400) and rows[0]["chunks"] == x.chunks
        assert engine.load_history(rows[0]["signature"], comparable=True) == rows
        assert engine.save_profile(pid) == 0  # nothing new
        assert engine.export_history(tmp_path / "h.jsonl") == 2
        assert engine.clear_history() == 2 and engine.load_history() == []
        assert engine.import_history(tmp_path / "h.jsonl") == 2
        obs = history.observation_from_json(engine.load_history()[0]["data"]["observation"])
        assert obs == engine.get_profiler(pid).observations()[-1]
        with dask.config.set({"array.adaptive-chunking.history": False}):
            (x + x.T).sum().compute()
            assert len(engine.load_history()) == 2  # off: not stored
            assert engine.save_profile(pid) == 1  # on request: stored
        assert len(engine.load_history()) == 3


def test_each_stored_compute_names_its_operations(engine):
    import dask.array as da

    x = da.random.random((400, 400), chunks=100)
    engine.profile_array(x)
    (x + x.T).sum().compute()
    (x * 2).max().compute()
    newest, oldest = engine.load_history()
    # By name, as the signature's hash hides them: what made the array, what followed.
    assert oldest["data"]["operations"] == {"source": "random_sample",
                                            "applied": ["add", "sum", "transpose"]}
    assert newest["data"]["operations"] == {"source": "random_sample",
                                            "applied": ["chunk_max", "mul"]}


@pytest.mark.parametrize("operations", [
    ["add"], {"source": "random_sample"}, {"source": "", "applied": []},
    {"source": "ones", "applied": "add"}, {"source": "ones", "applied": [1]},
    {"source": "ones", "applied": [], "extra": 1},
])
def test_stored_operations_are_checked(tmp_path, operations):
    store = HistoryStore(tmp_path / "h.sqlite3")
    row = dict(created=1.0, signature="s", fingerprint=FP, shape=(4,), dtype="float64",
               chunks=((2, 2),), data={"operations": {"source": "ones", "applied": []}})
    store.add_many([row])
    with pytest.raises(ValueError, match="stored operations"):
        store.add_many([dict(row, data={"operations": operations})])
    with sqlite3.connect(tmp_path / "h.sqlite3") as conn:  # edited by hand
        conn.execute("UPDATE profiles SET data = ?", (json.dumps({"operations": operations}),))
    with pytest.warns(AdaptiveChunkingWarning, match="row 1 .*stored operations"):
        assert store.rows() == []
    store.close()


def test_rows_stored_without_operations_are_read_as_before(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    add(store, 1)  # data as stored before the operations were: no "operations"
    assert [r["data"] for r in store.rows()] == [{"i": 1, "x": [1.5]}]
    store.close()


FIRST = """
import dask.array as da
from dask.array.adaptive_chunking import get_adaptive_engine
engine = get_adaptive_engine()
for n in (800, 1200):
    x = da.random.random((n, n), chunks=100)
    engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
print(len(engine.load_history()))
"""

SECOND = """
import dask.array as da
from dask.array.adaptive_chunking import get_adaptive_engine
engine = get_adaptive_engine()
big = da.random.random((6000, 6000), chunks=100)
rec = engine.recommend(big, workload=(big + big.T).mean(axis=0))
print(rec.chunks[0], rec.chunks[1], rec.fits_budget)
"""


def test_a_second_process_recommends_from_the_first_ones_history(tmp_path):
    env = dict(os.environ, DASK_ARRAY__ADAPTIVE_CHUNKING__HISTORY_PATH=str(tmp_path / "h.db"))

    def run(code):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run(FIRST) == ["2"]
    rows, cols, fits = run(SECOND)  # no pilot in this process: only the history
    assert int(rows) > 100 and int(cols) > 100 and fits == "True"


def test_without_history_or_workload_the_error_names_the_fix(engine, tmp_path):
    import dask
    import dask.array as da

    with dask.config.set({"array.adaptive-chunking.history-path": str(tmp_path / "h.db")}):
        big = da.random.random((3000, 3000), chunks=100)
        with pytest.raises(ValueError, match="workload="):
            engine.recommend(big)
        with pytest.raises(ValueError, match="workload="):  # nothing stored for it yet
            engine.recommend(big, workload=big.sum())


@pytest.mark.parametrize("scheduler, kind", [
    ("sync", "sync"), ("threads", "threads"), ("processes", "processes"),
])
def test_the_fingerprint_names_the_scheduler_that_ran(engine, tmp_path, scheduler, kind):
    import dask
    import dask.array as da

    path = str(tmp_path / "h.db")
    with dask.config.set({"array.adaptive-chunking.history-path": path, "num_workers": 2}):
        x = da.ones((400, 400), chunks=100)
        engine.profile_array(x)
        (x + 1).sum().compute(scheduler=scheduler)
        (row,) = engine.load_history()
        here = json.loads(row["fingerprint"])
        assert here["scheduler"] == kind
        assert here["threads"] == (1 if kind == "sync" else 2)
        # comparable=True: to what a compute started now would use (threads by default)
        assert bool(engine.load_history(comparable=True)) == (kind == "threads")
        with dask.config.set(scheduler=scheduler):
            assert engine.load_history(comparable=True) == [row]


# -- auto-rechunk ---------------------------------------------------------------

def test_the_chunk_size_override_gives_back_exactly_what_was_there():
    import dask
    from dask.array._adaptive_chunking.auto_rechunk import ChunkSizeOverride

    before = dask.config.get("array.chunk-size")
    override = ChunkSizeOverride()
    assert override.restore("nothing applied") is False
    assert override.apply(2**20, "test") and dask.config.get("array.chunk-size") == 2**20
    assert not override.apply(2**20, "test")  # unchanged: no write, no log
    assert override.apply(2**21, "test") and dask.config.get("array.chunk-size") == 2**21
    with dask.config.set({"array.chunk-size": "7MiB"}):  # the user's block wins inside
        assert not override.apply(2**22, "test")
        assert dask.config.get("array.chunk-size") == "7MiB"
    assert dask.config.get("array.chunk-size") == 2**21  # the block gave ours back
    assert override.apply(2**22, "test")  # and it is ours to change again
    assert override.restore("test") and dask.config.get("array.chunk-size") == before

    # A value set by the user while applied is theirs: not overwritten, not restored
    override = ChunkSizeOverride()
    override.apply(2**20, "test")
    dask.config.set({"array.chunk-size": "3MiB"})
    try:
        assert not override.apply(2**23, "test")
        assert not override.restore("test") and dask.config.get("array.chunk-size") == "3MiB"
    finally:
        dask.config.set({"array.chunk-size": before})

    # Switched off inside the user's block: the engine's value, back when the block
    # ends, is given back at the next restore
    override = ChunkSizeOverride()
    override.apply(2**20, "test")
    with dask.config.set({"array.chunk-size": "64MiB"}):
        assert not override.restore("off inside a block")
    assert dask.config.get("array.chunk-size") == 2**20
    assert override.restore("again") and dask.config.get("array.chunk-size") == before

    # No key before: none after
    override = ChunkSizeOverride()
    section = dask.config.config["array"]
    saved = section.pop("chunk-size")
    try:
        override.apply(2**20, "test")
        override.restore("test")
        assert "chunk-size" not in section
    finally:
        section["chunk-size"] = saved


def _stored_workload(engine, n=1600, chunks=100):
    """History of one workload, profiled once at too-small chunks; its expression."""
    import dask.array as da

    x = da.random.random((n, n), chunks=chunks)
    engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    return lambda a: (a + a.T).mean(axis=0)


def test_auto_rechunk_gives_auto_chunking_the_learned_size_and_gives_it_back(engine,
                                                                             caplog):
    import logging

    import dask
    import dask.array as da
    from dask.array import adaptive_chunking as ac

    dask_default = dask.config.get("array.chunk-size")
    workload = _stored_workload(engine)
    x = da.random.random((4000, 4000), chunks=(100, 100))
    told = engine.recommend(x, workload=workload(x))  # from history only
    expected = told.array_chunk_size
    with caplog.at_level(logging.INFO, logger="dask.array.adaptive_chunking"):
        with dask.config.set({"array.adaptive-chunking.auto-rechunk": True}):
            ac.get_adaptive_engine()  # any engine call (or compute) applies it
            target = dask.config.get("array.chunk-size")
            auto = da.random.random((4000, 4000))  # chunks="auto"
            plain_auto = da.ones((4000, 4000), chunks="auto")
            ones = da.ones(5, chunks="auto").sum().compute()
        assert ones == 5
        assert dask.config.get("array.chunk-size") == target  # until the next sync
        ac.get_adaptive_engine()
    assert dask.config.get("array.chunk-size") == dask_default  # exactly Dask's again
    assert target != dask_default
    rec = auto_target()
    assert rec is not None and rec[0] == target
    # Learned from a 1600^2 run, the target is what a large array of that workload
    # gets, not the small one's split for its threads
    pilot_size = da.random.random((1600, 1600), chunks=100)
    small = engine.recommend(pilot_size, workload=workload(pilot_size))
    assert expected / 2 <= target, told.reason
    # From the current chunks the user may be told a step of whole doublings (when
    # the full move is inside the model's doubt net of the rechunk); fresh arrays
    # pay no rechunk, so their target may go further.
    assert target <= expected * 2 or told.binding == "step", told.reason
    assert target >= small.array_chunk_size / 2  # not a small array's split for threads
    assert auto.chunks == plain_auto.chunks != da.ones((4000, 4000)).chunks
    assert max(auto.chunks[0]) * max(auto.chunks[1]) * 8 <= target
    messages = [r.getMessage() for r in caplog.records]
    assert any("auto-rechunk set array.chunk-size" in m and "newest workload" in m
               for m in messages), messages
    assert any("auto-rechunk is off" in m for m in messages), messages


def test_auto_rechunk_without_history_leaves_dask_alone(engine, caplog):
    import logging

    import dask
    import dask.array as da

    before = dask.config.get("array.chunk-size")
    with caplog.at_level(logging.INFO, logger="dask.array.adaptive_chunking"):
        with dask.config.set({"array.adaptive-chunking.auto-rechunk": True}):
            assert da.ones(10, chunks=5).sum().compute() == 10
            assert dask.config.get("array.chunk-size") == before
    assert any("no stored compute from comparable hardware" in r.getMessage()
               for r in caplog.records)
    with dask.config.set({"array.adaptive-chunking.auto-rechunk": "maybe"}):
        with pytest.warns(UserWarning, match="auto-rechunk"):
            assert da.ones(10, chunks=5).sum().compute() == 10  # the compute still runs
    assert dask.config.get("array.chunk-size") == before


def test_enable_and_disable_switch_auto_rechunk(engine):
    import dask
    from dask.array import adaptive_chunking as ac

    before = dask.config.get("array.chunk-size")
    _stored_workload(engine)
    try:
        ac.enable_adaptive_chunking(auto_rechunk=True)
        assert dask.config.get("array.adaptive-chunking.auto-rechunk") is True
        assert dask.config.get("array.chunk-size") != before
    finally:
        ac.disable_adaptive_chunking()
    assert dask.config.get("array.chunk-size") == before
    assert dask.config.get("array.adaptive-chunking.auto-rechunk") is False
    with pytest.raises(TypeError, match="auto-rechunk"):
        ac.enable_adaptive_chunking(auto_rechunk="sometimes")


def test_apply_recommendation_without_a_profile_uses_the_history_with_auto_rechunk(
        engine, caplog):
    import logging

    import dask
    import dask.array as da

    workload = _stored_workload(engine)
    big = da.random.random((5000, 5000), chunks=(100, 100))
    with pytest.raises(ValueError, match="workload="):  # off: it does not guess
        engine.apply_recommendation(big)
    with pytest.raises(ValueError, match="workload="):  # and recommend never does
        engine.recommend(big)
    with dask.config.set({"array.adaptive-chunking.auto-rechunk": True}):
        with caplog.at_level(logging.INFO, logger="dask.array.adaptive_chunking"):
            applied = engine.apply_recommendation(big)  # no profile of big, no workload
        other = da.ones((50, 50, 50), chunks=10, dtype="int32")  # nothing of its kind
        with pytest.raises(ValueError, match="workload="):
            engine.apply_recommendation(other)
    rec = engine.recommend(big, workload=workload(big))
    assert tuple(max(c) for c in applied.chunks) == rec.chunks != (100, 100)
    assert any("newest workload of its kind" in r.getMessage() for r in caplog.records)
    from dask.array import adaptive_chunking as ac

    ac.get_adaptive_engine()  # the next sync gives Dask's array.chunk-size back


FIRST_AUTO = """
import dask.array as da
from dask.array.adaptive_chunking import get_adaptive_engine
engine = get_adaptive_engine()
x = da.random.random((2000, 2000), chunks=100)  # far too small chunks
pid = engine.profile_array(x)
(x + x.T).mean(axis=0).compute()
print(len(engine.load_history()))
"""

SECOND_AUTO = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import dask, dask.array as da
default = da.random.random((8000, 8000)).chunks
from dask.array.adaptive_chunking import get_adaptive_engine  # auto-rechunk from the env
x = da.random.random((8000, 8000))
engine = get_adaptive_engine()
work = (x + x.T).mean(axis=0)
rec = engine.recommend(x, workload=work)
from dask.array._adaptive_chunking import config
from dask.array._adaptive_chunking.advisor import Advisor
from dask.array._adaptive_chunking.history_service import HistoryService
from dask.array._adaptive_chunking.profiles import ProfileRegistry
from dask.array.adaptive_chunking import ChunkProfiler, ChunkSizeRecommender

class Recommender:  # the default recommender, as the advisor meets it
    plan_settings = ChunkSizeRecommender().plan_settings
    memory_budget = ChunkSizeRecommender().memory_budget
    def recommend(self, observations, shape, itemsize, **kwargs):
        return ChunkSizeRecommender().recommend(
            ChunkProfiler.from_observations(observations.observations()), shape, itemsize,
            **kwargs)

target = Advisor(ProfileRegistry(), HistoryService(), Recommender).auto_target(
    config.snapshot())
learned = engine.predict(x, x.chunks, workload=work)
print(dask.config.get("array.chunk-size"), target[0], rec.array_chunk_size,
      x.chunks == default, learned["fits_budget"],
      engine.predict(x, default, workload=work)["fits_budget"])
print(learned, rec, target, file=sys.stderr)  # what a failed assertion shows
"""


def test_a_second_process_gets_auto_chunks_from_the_first_ones_history(tmp_path):
    # 2 GiB: a budget the learned chunks fit with room to spare even when a loaded
    # machine makes the first compute measure more memory; Dask's 128 MiB do not.
    env = dict(os.environ, DASK_ARRAY__ADAPTIVE_CHUNKING__HISTORY_PATH=str(tmp_path / "h.db"),
               DASK_ARRAY__ADAPTIVE_CHUNKING__MEMORY_LIMIT="2GiB")

    def run(code, **more):
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, **more),
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout.split(), out.stderr

    assert run(FIRST_AUTO)[0] == ["1"]
    (size, target, recommended, unchanged, fits, default_fits), log = run(
        SECOND_AUTO, DASK_ARRAY__ADAPTIVE_CHUNKING__AUTO_RECHUNK="True")
    assert int(size) == int(target)  # the history's recommendation, through Dask
    assert int(recommended) / 2 <= int(size) <= 2 * int(recommended)
    assert "auto-rechunk set array.chunk-size" in log
    # Dask's 128 MiB chunks would not fit this machine's budget; the learned ones do
    assert unchanged == "False" and fits == "True" and default_fits == "False", log[-3000:]
    (size, _, _, unchanged, *_), _ = run(SECOND_AUTO)  # off: exactly Dask's own chunks
    assert size == "128MiB" and unchanged == "True"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_the_engines_own_history_file_is_private_and_holds_plain_values(engine, tmp_path):
    import sqlite3
    import stat

    import dask
    import dask.array as da

    path = tmp_path / "new" / "dir" / "h.sqlite3"
    with dask.config.set({"array.adaptive-chunking.history-path": str(path)}):
        x = da.random.random((400, 400), chunks=100)
        engine.profile_array(x)
        (x + 1).sum().compute()
        assert len(engine.load_history()) == 1
        hostile = "x' OR '1'='1'; DROP TABLE profiles; --"
        assert engine.load_history(hostile) == []  # a parameter, not SQL
        assert len(engine.load_history()) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (path.parent, path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    with sqlite3.connect(path) as conn:  # no pickles, no blobs: text and numbers only
        kinds = {k for row in conn.execute(
            "SELECT typeof(id), typeof(created), typeof(signature), typeof(fingerprint), "
            "typeof(shape), typeof(dtype), typeof(chunks), typeof(data) FROM profiles"
        ) for k in row}
        data = conn.execute("SELECT data FROM profiles").fetchone()[0]
    assert kinds <= {"integer", "real", "text"}
    assert json.loads(data)["observation"]["n_tasks"] > 0


def test_only_complete_computes_are_stored_each_under_its_own_workload(engine):
    import dask.array as da

    x = da.random.random((400, 400), chunks=100)
    pid = engine.profile_array(x)

    def boom(block):
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        x.map_blocks(boom, dtype=float).sum().compute()
    (x + 1).sum().compute()
    (x * x.T).mean().compute()
    rows = engine.load_history()
    assert len(rows) == 2  # the failed compute is not stored
    of = engine.get_profile(pid)  # noqa: F841  (the profile itself kept all three)
    from dask.array._adaptive_chunking.graph import signature

    def sig(y):
        return signature(y.__dask_graph__().layers, 2, x.dtype)

    assert [r["signature"] for r in rows] == [sig((x * x.T).mean()), sig((x + 1).sum())]


def test_a_bad_memory_limit_still_completes_the_profile(engine):
    import dask
    import dask.array as da

    x = da.random.random((400, 400), chunks=100)
    pid = engine.profile_array(x)
    with dask.config.set({"array.adaptive-chunking.memory-limit": "lots"}):
        (x + 1).sum().compute()
    # Warned once per process (maybe already), when the profile is next read.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdaptiveChunkingWarning)
        assert engine.get_profile(pid)["status"] == "complete"
    assert engine.load_history() == []  # not described, so not stored


def test_an_executor_is_stored_and_found_with_its_own_threads(engine):
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import dask.array as da

    with ThreadPoolExecutor(5) as pool, dask.config.set(scheduler=pool):
        x = da.ones((400, 400), chunks=100)
        engine.profile_array(x)
        (x + 1).sum().compute()
        (row,) = engine.load_history()
        assert json.loads(row["fingerprint"])["threads"] == 5
        assert engine.load_history(comparable=True) == [row]


def test_a_long_history_does_not_crowd_out_the_profiles_own_computes(engine):
    import dataclasses

    import dask.array as da

    x = da.random.random((400, 400), chunks=100)
    pid = engine.profile_array(x)
    (x + 1).sum().compute()
    (row,) = engine.load_history()
    obs = history.observation_from_json(row["data"]["observation"])
    store = HistoryService().store(config.snapshot())  # the engine's file, opened anew
    store.add_many([dict(row, created=float(i), data={
        "observation": history.observation_to_json(dataclasses.replace(obs, n_tasks=1000 + i)),
        "profile": "elsewhere"}) for i in range(400)])
    y = da.random.random((400, 400), chunks=100)
    pid2 = engine.profile_array(y)
    (y + 1).sum().compute()
    own = engine.get_profiler(pid2).observations()[-1]
    # what the advisor pools for that profile: the stored computes of its workload
    # on this hardware, then its own
    (mine,) = [r for r in engine.load_history() if r["data"].get("profile") == pid2]
    state = Profile(pid2, y)
    state.signature, state.fingerprint, state.computes = (
        mine["signature"], mine["fingerprint"], 1)
    state.aggregate.add_compute(own)
    pooled = advisor().pool([state], config.snapshot()).observations()
    assert pooled[-1] == own  # the profile's own, kept
    stored = [o.n_tasks for o in pooled[:-1]]
    assert stored == sorted(stored) and max(stored) == 1399  # the newest stored, in order
    assert engine.get_profile(pid)["status"] == "complete"
