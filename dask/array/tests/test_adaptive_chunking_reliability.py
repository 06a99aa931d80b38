"""Reliability: bounded memory however much is profiled, and concurrent profiling."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import numpy as np
import pytest

import dask
import dask.array as da
from dask.array import adaptive_chunking as ac
from dask.array._adaptive_chunking import config, folding, records
from dask.array._adaptive_chunking.aggregate import PROFILE_COST, Aggregate, Reservoir
from dask.array._adaptive_chunking.history_service import HistoryService
from dask.array._adaptive_chunking.profiles import ProfileRegistry
from dask.array._adaptive_chunking.recorder import ComputeRecorder

MiB = 2**20


def batch(n: int, start: int = 0, name: str = "x") -> records.RecordBatch:
    """``n`` records of 1 MB chunks, as the engine would fold them."""
    data = np.zeros(n, records.RECORD_DTYPE)
    data["t0"] = np.arange(n) * 1e-3
    data["t1"] = data["t0"] + 1e-3
    data["nbytes"] = data["logical"] = data["membytes"] = 10**6
    data["rss0"] = data["rss1"] = 100 * MiB
    keys = [(name, start + i) for i in range(n)]
    return records.RecordBatch(data, keys, [(125_000,)] * n, [np.dtype(float)] * n)


def test_reservoir_shrink_keeps_a_uniform_sample():
    r = Reservoir()
    r.add(batch(10_000), cap=10_000)
    exact = ac.ChunkMemoryMetric(("x", 3), (1,), 8, 8, 8, 1.0, 1.0, 1.0)
    r.given[3] = exact
    r.shrink(1_000)
    assert len(r) == len(r.data) == len(r.shapes) == len(r.dtypes) == 1_000
    index = np.array([k[1] for k in r.keys])
    assert (np.diff(index) > 0).all()  # distinct records, in their order
    # uniform: each tenth of the stream keeps about a tenth of the sample
    counts = np.bincount(index // 1_000, minlength=10)
    assert counts.min() > 60 and counts.max() < 140
    assert all(r.given[j] is exact for j in r.given)
    assert all(r.keys[j] == ("x", 3) for j in r.given)
    r.shrink(5_000)  # never grows
    assert len(r) == 1_000


def test_a_thinned_sample_stays_uniform_as_it_goes_on():
    r = Reservoir()
    r.add(batch(10_000), cap=10_000)
    r.shrink(1_000)
    r.add(batch(10_000, start=10_000), cap=10_000)  # room again: it must not refill
    assert len(r) == 1_000
    newer = sum(k[1] >= 10_000 for k in r.keys)
    assert 400 < newer < 600  # half the stream, half the sample


def held_bytes(engine) -> float:
    """What the engine estimates its profiles hold, as its telemetry reports it."""
    return engine.get_telemetry()["held_memory_mb"] * MiB


def test_max_memory_thins_the_samples(engine):
    ceiling = MiB
    with dask.config.set({"array.adaptive-chunking.max-memory": ceiling}):
        arrays = [da.random.random((200, 200), chunks=(20, 20)) + i for i in range(40)]
        ids = [engine.profile_array(a) for a in arrays]
        for a in arrays:
            for _ in range(3):
                a.sum().compute(scheduler="sync")
        assert held_bytes(engine) <= ceiling
        assert engine.profile_ids == ids  # the summaries fit: every profile is kept
        for pid in (ids[0], ids[-1]):
            stats = engine.get_profile(pid)["profiler_stats"]
            tasks = engine.get_profile(pid)["last_compute"]["tasks"]
            assert stats["total_chunks"] == 3 * tasks  # aggregates stay exact
            assert 0 < stats["sampled_records"] < stats["total_chunks"]  # thinned
        # held below the configured sample size to share the ceiling
        assert engine.get_profiler(ids[0]).max_records < config.setting("max-records")
        # a profile that saw few records keeps them all
        few = da.ones(10, chunks=5)
        pid = engine.profile_array(few)
        few.compute(scheduler="sync")
        stats = engine.get_profile(pid)["profiler_stats"]
        assert stats["sampled_records"] == stats["total_chunks"] > 0
        assert held_bytes(engine) <= ceiling


def test_no_ceiling_any_more_lifts_the_shares(engine):
    x = da.random.random((200, 200), chunks=(20, 20))
    pid = engine.profile_array(x)
    with dask.config.set({"array.adaptive-chunking.max-memory": 20_000}):
        x.sum().compute(scheduler="sync")
        assert engine.get_profiler(pid).max_records < config.setting("max-records")
    with dask.config.set({"array.adaptive-chunking.max-memory": None}):
        x.sum().compute(scheduler="sync")
        assert engine.get_profiler(pid).max_records == config.setting("max-records")
        assert engine.profiler.max_records == config.setting("max-records")


def test_summaries_beyond_half_the_ceiling_drop_the_oldest_profiles(engine, caplog):
    with dask.config.set({"array.adaptive-chunking.max-memory": "300KiB"}):
        arrays = [da.ones((100, 100), chunks=50) + i for i in range(30)]
        ids = [engine.profile_array(a) for a in arrays]
        with caplog.at_level("INFO", logger="dask.array.adaptive_chunking"):
            for a in arrays:
                for _ in range(20):
                    a.compute(scheduler="sync")
        assert held_bytes(engine) <= 300 * 2**10
        kept = engine.profile_ids
        assert 1 <= len(kept) < len(ids)
        assert kept == ids[len(ids) - len(kept):]  # the newest are kept
        assert engine.get_profile(kept[-1])["computes"] == 20
    assert f"profile {ids[0]} dropped" in caplog.text and "max-memory' limit" in caplog.text
    with pytest.raises(KeyError, match="max-memory"):
        engine.get_profile(ids[0])


def test_no_ceiling_keeps_every_profile(engine):
    with dask.config.set({"array.adaptive-chunking.max-memory": None}):
        ids = [engine.profile_array(da.ones(10, chunks=5) + i) for i in range(50)]
    assert engine.profile_ids == ids


def _engine_memory() -> int:
    """Traced memory allocated by the engine's own code (not Dask's caches)."""
    from dask.utils import key_split

    key_split.cache_clear()  # Dask's own cache of names (bounded: 100,000)
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*adaptive_chunking*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_thousands_of_profiled_arrays_stay_bounded(engine):
    """profile_array on 3,000 arrays (never computed) keeps ``max-profiles`` of them."""
    arrays = [da.ones((100, 100), chunks=10) + i for i in range(3_000)]
    gc.collect()
    tracemalloc.start()
    try:
        with dask.config.set({"array.adaptive-chunking.max-profiles": 200}):
            for a in arrays[:1_000]:
                engine.profile_array(a)
            after_1k = _engine_memory()
            for a in arrays[1_000:]:
                engine.profile_array(a)
            after_3k = _engine_memory()
    finally:
        tracemalloc.stop()
    assert len(engine.profile_ids) == 200
    # 2,000 more profiles leave the engine's memory where 1,000 did
    assert after_3k - after_1k < 2**14, (after_1k, after_3k)
    assert after_3k < 200 * PROFILE_COST


@pytest.mark.slow
def test_a_million_chunk_records_stay_under_the_ceiling():
    """1,000,000 records folded into 20 profiles keep the recorder under max-memory."""
    ceiling = 8 * MiB
    profiles, engine_wide = ProfileRegistry(), Aggregate()
    recorder = ComputeRecorder(profiles, lambda: engine_wide, HistoryService(),
                               lambda settings: None)
    with dask.config.set({"array.adaptive-chunking.max-memory": ceiling,
                          "array.adaptive-chunking.max-records": 100_000,
                          "array.adaptive-chunking.history": False}):
        settings = config.snapshot()
    states = [profiles.add(da.ones(1000, chunks=10) + i, settings.max_profiles)
              for i in range(20)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for step in range(100):
            state = states[step % 20]
            records = batch(10_000, start=step * 10_000, name=f"x-{step}")
            recorder.apply(folding.fold(records, [frozenset({state})], [state], "complete",
                                        peak=0, baseline=0), settings)
            del records
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    total = sum(s.aggregate.stats()["total_chunks"] for s in states)
    assert total == 1_000_000
    assert profiles.held_bytes(engine_wide) <= ceiling
    assert held <= ceiling, f"{held / MiB:.1f} MiB held for an {ceiling / MiB:.0f} MiB ceiling"


THREADS = 8


def hammer(jobs, rounds: int, timeout: float = 240) -> None:
    """Run each job ``rounds`` times in its own thread, all started together."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job):
        try:
            barrier.wait(timeout=60)
            for _ in range(rounds):
                job()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a profiled compute hung"
    assert not errors, errors


def check_each_profile_got_its_own_tasks(engine, arrays, pids, rounds, expected):
    for a, pid, (result, tasks) in zip(arrays, pids, expected):
        p = engine.get_profile(pid)
        assert p["status"] == "complete", p["status"]
        assert p["computes"] == rounds
        assert p["profiler_stats"]["total_chunks"] == rounds * tasks
        assert p["profiler_stats"]["failed_chunks"] == 0


def test_eight_threads_many_rounds_on_the_threaded_scheduler(engine):
    rounds = 20
    arrays = [da.random.random((200 + 40 * i, 300), chunks=(40, 50)) for i in range(THREADS)]
    # what one compute of each measures alone
    expected = []
    for a in arrays:
        pid = engine.profile_array(a)
        result = a.T.dot(a).sum().compute(scheduler="threads")
        expected.append((result, engine.get_profile(pid)["last_compute"]["tasks"]))
        engine.remove_profile(pid)
    pids = [engine.profile_array(a) for a in arrays]
    results: dict[int, list] = {i: [] for i in range(THREADS)}

    def job(i):
        return lambda: results[i].append(
            arrays[i].T.dot(arrays[i]).sum().compute(scheduler="threads")
        )

    hammer([job(i) for i in range(THREADS)], rounds)
    for i, (result, _) in enumerate(expected):
        assert len(results[i]) == rounds
        np.testing.assert_allclose(results[i], result)
    check_each_profile_got_its_own_tasks(engine, arrays, pids, rounds, expected)
    total = sum(rounds * tasks for _, tasks in expected)
    assert engine.profiler.get_stats()["total_chunks"] == total + sum(t for _, t in expected)


def _working_keys(client, expr) -> set:
    """The keys of the tasks that do work when the cluster computes ``expr`` alone:
    not aliases, nor Dask's finalize step (it only joins results), nor the last task
    (fused with the finalize step, its key changes with each compute)."""
    import distributed
    from dask._task_spec import Alias

    dsk = dict(expr.__dask_optimize__(expr.__dask_graph__(), expr.__dask_keys__()))
    with distributed.get_task_stream(client) as stream:
        expr.compute()
    return {t["key"] for t in stream.data if not isinstance(dsk.get(t["key"]), Alias)
            and "finalize-hlgfinalizecompute" not in str(t["key"])}


def test_eight_threads_through_one_distributed_client(engine):
    """Each profile gets exactly the tasks the cluster ran for its computes.

    Computing the same array again at once may reuse results the scheduler still
    holds (it runs fewer tasks): the truth is distributed's own task stream.
    """
    distributed = pytest.importorskip("distributed")
    rounds = 8
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        arrays = [da.random.random((200 + 40 * i, 300), chunks=(40, 50))
                  for i in range(THREADS)]
        exprs = [(a + 1).sum() for a in arrays]
        keys = [_working_keys(client, e) for e in exprs]
        assert all(not (keys[i] & keys[j]) for i in range(THREADS) for j in range(i))
        expected = [e.compute() for e in exprs]
        pids = [engine.profile_array(a) for a in arrays]
        results: dict[int, list] = {i: [] for i in range(THREADS)}

        def job(i):
            def run():
                results[i].append(exprs[i].compute())
                if len(results[i]) % 3 == 0:  # read profiles while others compute
                    engine.get_profile(pids[(i + 1) % THREADS])
            return run

        with distributed.get_task_stream(client) as stream:
            hammer([job(i) for i in range(THREADS)], rounds)
        ran = [0] * THREADS
        for task in stream.data:
            for i in range(THREADS):
                if task["key"] in keys[i]:
                    ran[i] += 1
        for i in range(THREADS):
            np.testing.assert_allclose(results[i], [expected[i]] * rounds)
            p = engine.get_profile(pids[i])
            assert p["status"] == "complete" and p["computes"] == rounds
            assert p["profiler_stats"]["failed_chunks"] == 0
            # each compute also ran its last task, fused with Dask's finalize step
            assert p["profiler_stats"]["total_chunks"] == ran[i] + rounds
