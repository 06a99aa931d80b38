"""Profiling on a real ``dask.distributed`` cluster (a LocalCluster in this process)."""

from __future__ import annotations

import json

import pytest

import dask
import dask.array as da

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as client:
        yield client


def test_plain_compute_fills_the_profile(engine, client):
    x = da.random.random((2000, 2000), chunks=500)
    pid = engine.profile_array(x)
    result = (x + 1).sum().compute()
    assert 5.9e6 < result < 6.1e6
    profile = engine.get_profile(pid)
    assert profile["status"] == "complete"
    stats = profile["profiler_stats"]
    assert stats["total_chunks"] == profile["last_compute"]["tasks"] > 16
    assert stats["total_compute_time_s"] > 0
    assert set(profile["workers"]) == set(client.scheduler_info()["workers"])
    for worker in profile["workers"].values():
        assert worker["nthreads"] == 1 and worker["memory_limit"] > 0
        assert worker["process"] > 0
    assert profile["recommended_chunks"] is not None


def test_two_arrays_in_one_compute_get_their_own_tasks(engine, client):
    x = da.random.random((2000, 2000), chunks=500)
    z = da.ones((1000, 1000), chunks=250)
    px, pz = engine.profile_array(x), engine.profile_array(z)
    dask.compute(x.sum(), z.mean())
    tx = engine.get_profile(px)["last_compute"]["tasks"]
    tz = engine.get_profile(pz)["last_compute"]["tasks"]
    assert tx >= 16 and tz >= 16
    assert engine.profiler.get_stats()["total_chunks"] >= tx + tz


def test_unprofiled_computes_are_untouched(engine, client):
    x = da.ones((100, 100), chunks=50)
    assert x.sum().compute() == 10000
    assert engine.profile_ids == []


def test_failing_task_marks_the_profile_failed(engine, client):
    x = da.random.random((1000, 1000), chunks=500)
    pid = engine.profile_array(x)

    def boom(block):
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError, match="boom"):
        x.map_blocks(boom, dtype=float).sum().compute()
    profile = engine.get_profile(pid)
    assert profile["status"] == "failed"
    assert "raised" in profile["error"]
    assert profile["profiler_stats"]["failed_chunks"] >= 1


def test_recommendation_follows_the_workers_memory(engine):
    """Two workers of 600 MiB never get bigger chunks than two of 4 GiB, same workload.

    (A worker starts near 165 MiB once xarray is installed: dask.array imports it.)
    """
    recs = {}
    for limit in ("600MiB", "4GiB"):
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, memory_limit=limit,
            dashboard_address=":0",
        ) as cluster, distributed.Client(cluster):
            x = da.random.random((2000, 2000), chunks=250)
            pid = engine.profile_array(x)
            (x + 1).sum().compute()
            full = da.random.random((40000, 40000), chunks=(1000, 1000))
            recs[limit] = engine.recommend(full, pid)
            profile = engine.get_profile(pid)
            assert len(profile["workers"]) == 2
            engine.remove_profile(pid)
    small, large = recs["600MiB"], recs["4GiB"]
    assert small.memory_limit_bytes == 600 * 2**20
    assert large.memory_limit_bytes == 4 * 2**30
    assert small.memory_budget_bytes < large.memory_budget_bytes
    assert small.predicted_peak_bytes <= small.memory_budget_bytes
    # The small workers' chunks are smaller, unless the fastest chunks (which
    # depend on the measured timings) already fit the small workers' budget, or the
    # big workers keep their current chunks because the gain of a change is inside
    # the uncertainty of that cluster's own measurements.
    if large.binding != "current":
        assert small.chunk_bytes <= large.chunk_bytes
    if small.chunk_bytes == large.chunk_bytes:
        assert large.predicted_peak_bytes <= small.memory_budget_bytes
    assert small.concurrency == large.concurrency == 2
    assert small.fits_budget and small.predicted_peak_bytes <= small.memory_budget_bytes


def test_worker_killed_mid_compute(engine):
    """The user gets Dask's error; the profile ends incomplete with what arrived."""
    import time

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=":0") as cluster, \
            distributed.Client(cluster):
        x = da.random.random((1000, 1000), chunks=500)
        pid = engine.profile_array(x)
        with pytest.raises(distributed.KilledWorker):
            x.map_blocks(_die, dtype=float).sum().compute()
        deadline = time.monotonic() + 10
        while engine.get_profile(pid)["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)  # the client releases the failed compute's tasks asynchronously
        assert engine.get_profile(pid)["status"] in ("incomplete", "failed")
    # The engine goes on working (the killed workers' cluster is gone).
    y = da.ones((100, 100), chunks=50)
    py = engine.profile_array(y)
    assert y.sum().compute(scheduler="sync") == 10000
    assert engine.get_profile(py)["status"] == "complete"


def test_telemetry_reports_each_worker(engine, client):
    telemetry = engine.get_telemetry()
    workers = telemetry["workers"]
    assert set(workers) == set(client.scheduler_info()["workers"])
    for w in workers.values():
        assert 0 <= w["percent_used"] <= 100 and w["total_mb"] > 0 and w["nthreads"] == 1
    assert "available_mb" in telemetry["memory_pressure"]  # the local snapshot stays


def test_client_connected_by_address(engine, client):
    with distributed.Client(client.scheduler.address, set_as_default=True) as other:
        x = da.random.random((1000, 1000), chunks=250)
        pid = engine.profile_array(x)
        assert x.sum().compute() > 0
        assert engine.get_profile(pid)["status"] == "complete"
        assert other.status == "running"


def test_profiling_everything_on_a_cluster(engine, client):
    from dask.array.adaptive_chunking import disable_adaptive_chunking, enable_adaptive_chunking

    enable_adaptive_chunking()
    try:
        before = engine.get_telemetry()["computes_profiled"]
        x = da.ones((1000, 1000), chunks=250)
        assert x.sum().compute() == 1e6
        telemetry = engine.get_telemetry()
        assert telemetry["computes_profiled"] == before + 1
        assert telemetry["recent_computes"][-1]["tasks"] >= 16
    finally:
        disable_adaptive_chunking()


def test_scheduler_without_the_package_computes_unprofiled(engine, client, monkeypatch):
    from dask.array._adaptive_chunking import cluster_scheduler
    from dask.array.adaptive_chunking import AdaptiveChunkingWarning

    monkeypatch.setattr(cluster_scheduler, "importable", lambda dask_scheduler=None: False)
    monkeypatch.delattr(client, "_adaptive_chunking_plugin", raising=False)
    x = da.ones((1000, 1000), chunks=250)
    with pytest.warns(AdaptiveChunkingWarning, match="cannot import"):
        pid = engine.profile_array(x)  # checked where blocking on the scheduler is safe
    assert x.sum().compute() == 1e6
    assert engine.get_profile(pid)["status"] == "pending"
    monkeypatch.delattr(client, "_adaptive_chunking_plugin", raising=False)  # for later tests


def test_graph_structure_reaches_the_profile(engine, client):
    """What the local path learns from the graph also comes back from the scheduler."""
    x = da.random.random((2000, 2000), chunks=250)
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    rec = engine.get_profile(pid)["recommendation"]
    assert "transpose" in rec["downstream_ops"]
    assert rec["held_fraction"] > 0  # transposed pairs wait for each other
    (obs,) = engine.get_profiler(pid).observations()
    assert obs.blocks == 64 and obs.held_bytes > 0
    assert {op for op, *_ in obs.terms} >= {"random_sample", "mean_chunk"}
    assert obs.results_bytes == 2000 * 8  # the compute's output, as on a local scheduler
    chunks = engine.recommend(da.random.random((40000, 40000), chunks=1000), pid).chunks
    assert chunks[0] == chunks[1]  # square for the transpose


def _task_functions():
    """Functions for tasks on worker processes, which cannot import this test module.

    Made in a function, they are pickled by value.
    """

    def slow(block):
        import time

        time.sleep(0.1)
        return block

    def die(block):
        import os

        if block.size:  # a real chunk (not Dask's empty meta): the worker process dies
            os._exit(1)
        return block

    return slow, die


_slow, _die = _task_functions()


def test_recommended_worker_saturation(engine, client):
    """Data that waits for other workers gets a finite saturation; a plain sum, inf."""
    from dask.array.adaptive_chunking import SATURATION_KEY

    x = da.random.random((2000, 2000), chunks=250)
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    s = engine.profile_array(z := da.random.random((2000, 2000), chunks=250))
    (z + 1).sum().compute()
    big = da.random.random((20000, 20000), chunks=1000)
    # In-process workers report this test process's memory: budget 600 MiB above it.
    baseline = max(w["baseline"] for w in engine.get_profile(pid)["workers"].values())
    limit = int((baseline + 600 * 2**20) / 0.4)  # x 50% x 0.8
    with dask.config.set({"array.adaptive-chunking.memory-limit": limit}):
        waits, plain = engine.recommend(big, pid), engine.recommend(big, s)
    value = waits.scheduler_config[SATURATION_KEY]
    assert isinstance(value, float) and 1.0 <= value < 100
    assert waits.saturation.reason == "memory"
    assert waits.saturation.peak_bytes <= waits.memory_budget_bytes
    assert waits.saturation.unqueued_peak_bytes > waits.memory_budget_bytes
    assert "worker-saturation" in waits.scheduler_reason
    assert "the scheduler runs with" in waits.scheduler_reason
    assert plain.scheduler_config == {SATURATION_KEY: "inf"}
    assert engine.get_profile(pid)["recommendation"]["scheduler_config"]
    # The setting goes onto the running scheduler and back.
    old = engine.apply_scheduler_config(waits)
    now = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
    assert now == value
    assert x.map_blocks(_slow, dtype=float).sum().compute() > 0  # runs with it
    assert engine.apply_scheduler_config(old) == {SATURATION_KEY: value}
    restored = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
    assert restored == (float("inf") if old[SATURATION_KEY] == "inf" else old[SATURATION_KEY])


def test_predict_gives_the_saturation_for_given_chunks(engine, client):
    from dask.array.adaptive_chunking import SATURATION_KEY

    x = da.random.random((2000, 2000), chunks=250)
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    big = da.random.random((12000, 12000), chunks=1000)
    values = {}
    for limit in ("16GiB", "1GiB", "600MiB"):
        with dask.config.set({"array.adaptive-chunking.memory-limit": limit}):
            p = engine.predict(big, 1000, pid)
        assert p["concurrency"] == 2  # the cluster's threads
        assert p["predicted_queued_peak_memory_mb"] <= p["predicted_unqueued_peak_memory_mb"]
        values[limit] = p["scheduler_config"][SATURATION_KEY]
    assert values["16GiB"] == "inf"  # every chunk of a worker fits
    assert 1.0 <= values["600MiB"] <= values["1GiB"] < 1000


def test_scheduler_config_errors(engine, client):
    from dask.array.adaptive_chunking import SATURATION_KEY

    x = da.ones((100, 100), chunks=50)
    pid = engine.profile_array(x)
    x.sum().compute(scheduler="sync")
    local = engine.recommend(x, pid)
    assert local.scheduler_config == {} and local.to_dict()["scheduler_config"] == {}
    with pytest.raises(ValueError, match="not made from a compute on a dask.distributed"):
        engine.apply_scheduler_config(local)
    with pytest.raises(ValueError, match="not made from a compute on a dask.distributed"):
        engine.apply_scheduler_config(pid)
    with pytest.raises(TypeError, match="got int"):
        engine.apply_scheduler_config(3)
    with pytest.raises(ValueError, match="unknown scheduler setting"):
        engine.apply_scheduler_config({"distributed.scheduler.bogus": 1})
    with pytest.raises(ValueError, match="must be a number > 0 or 'inf', got -1"):
        engine.apply_scheduler_config({SATURATION_KEY: -1})


def test_client_closed_mid_compute(engine):
    """Closing the client during a compute: no hang, the profile ends incomplete."""
    import threading
    import time

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        x = da.random.random((1000, 1000), chunks=250)
        pid = engine.profile_array(x)
        assert x.sum().compute() > 0  # the plugin is registered before the timed compute
        timer = threading.Timer(0.3, client.close)
        timer.start()
        with pytest.raises(Exception):  # noqa: B017 - distributed's error on close varies
            x.map_blocks(_slow, dtype=float).sum().compute()
        timer.join()
        deadline = time.monotonic() + 10
        while engine.get_profile(pid)["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.get_profile(pid)["status"] == "incomplete"
    y = da.ones((100, 100), chunks=50)
    py = engine.profile_array(y)
    assert y.sum().compute(scheduler="sync") == 10000
    assert engine.get_profile(py)["status"] == "complete"


def test_worker_restart_mid_compute(engine):
    """Restarting the workers during a compute: no hang, then profiling goes on."""
    import time

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        x = da.random.random((1000, 1000), chunks=250)
        pid = engine.profile_array(x)
        assert x.sum().compute() > 0
        assert engine.get_profile(pid)["status"] == "complete"
        future = client.compute(x.map_blocks(_slow, dtype=float).sum())
        deadline = time.monotonic() + 10
        while engine.get_profile(pid)["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.02)  # the scheduler has the compute
        assert engine.get_profile(pid)["status"] == "running"
        time.sleep(0.3)
        client.restart()
        with pytest.raises(Exception):  # noqa: B017 - cancelled or killed, by version
            future.result(timeout=10)
        deadline = time.monotonic() + 15
        while engine.get_profile(pid)["computes"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        profile = engine.get_profile(pid)
        assert profile["computes"] == 2
        assert profile["status"] == "incomplete"
        assert profile["last_compute"]["tasks"] < 16 + 16 + 5  # not all its tasks ran
        y = da.random.random((1000, 1000), chunks=250)
        py = engine.profile_array(y)
        assert y.sum().compute() > 0
        assert engine.get_profile(py)["status"] == "complete"


def test_array_fused_away_is_still_profiled(engine, client):
    """An array whose layer fusion removes (an operation's output) gets every task."""
    x = abs(da.random.random((1000, 1000), chunks=250))
    pid = engine.profile_array(x)
    assert x.sum().compute() > 0
    profile = engine.get_profile(pid)
    assert profile["status"] == "complete"
    assert profile["profiler_stats"]["total_chunks"] >= 16


def test_unrelated_computes_leave_profiles_alone(engine, client):
    x = da.random.random((1000, 1000), chunks=250)
    pid = engine.profile_array(x)
    assert da.ones((100, 100), chunks=50).sum().compute() == 10000
    assert engine.get_profile(pid)["status"] == "pending"
    x.sum().compute()
    # Right after the compute, without reading the profile first.
    assert "distributed.scheduler.worker-saturation" in engine.apply_scheduler_config(pid)
    engine.apply_scheduler_config({"distributed.scheduler.worker-saturation": 1.1})


def test_first_profiled_compute_does_not_block_the_client(engine):
    """Nothing blocking runs while distributed pickles a graph (under its client lock)."""
    import threading
    import time

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        x = da.random.random((100, 100), chunks=50)
        engine.profile_array(x)
        future = client.submit(sum, [1, 2])
        future.result()
        client.loop.add_callback(time.sleep, 0.5)  # the event loop is busy a moment
        del future  # its release queues work for the loop that needs the client lock
        results = []
        thread = threading.Thread(target=lambda: results.append(x.sum().compute()),
                                  daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the compute hung"
        assert results and results[0] > 0


def test_the_scheduler_holds_records_within_max_memory(engine, client, caplog):
    from dask.array._adaptive_chunking.cluster_client import REMOTE_RECORD_COST

    def cap():
        return client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins["adaptive-chunking"].max_records
        )

    x = da.random.random((800, 800), chunks=100)  # 64 chunks, more tasks with the sum
    try:
        with dask.config.set({"array.adaptive-chunking.max-memory": 30 * REMOTE_RECORD_COST}):
            pid = engine.profile_array(x)  # applies the new bound on the scheduler
            assert cap() == 30
            with caplog.at_level("INFO", logger="dask.array.adaptive_chunking"):
                assert 0.45 < x.mean().compute() < 0.55
                p = engine.get_profile(pid)
        assert p["status"] == "complete"
        assert p["profiler_stats"]["total_chunks"] == 30
        assert "the scheduler kept 30 of the" in caplog.text
    finally:
        engine.profile_array(x)  # the default bound again, for the other tests
    assert cap() > 100_000
    pid = engine.profile_array(x)
    x.mean().compute()
    assert engine.get_profile(pid)["profiler_stats"]["total_chunks"] > 64


def test_the_same_compute_submitted_twice_at_once(engine, client):
    """The second compute shares its tasks with the first, still running: each task
    runs once and is counted once, and both computes finish."""
    import time

    from dask._task_spec import Alias

    x = da.random.random((800, 800), chunks=100)
    expr = (x + 1).sum()
    dsk = dict(expr.__dask_optimize__(expr.__dask_graph__(), expr.__dask_keys__()))
    pid = engine.profile_array(x)
    with distributed.get_task_stream(client) as stream:
        futures = [client.compute(expr), client.compute(expr)]
        results = client.gather(futures)
    assert results[0] == results[1]
    del futures
    ran = [t["key"] for t in stream.data if not isinstance(dsk.get(t["key"]), Alias)
           and distributed.utils.key_split(t["key"]) != "finalize-hlgfinalizecompute"]
    assert len(ran) < 2 * len(set(ran))  # most tasks ran once, for both computes
    for _ in range(100):  # the scheduler may settle the second a moment later
        p = engine.get_profile(pid)
        if p["computes"] == 2:
            break
        time.sleep(0.05)
    assert p["status"] == "complete" and p["computes"] == 2
    assert p["profiler_stats"]["total_chunks"] == len(ran)


def test_persisting_the_same_array_twice_completes(engine, client):
    """The second persist finds every task done or running: it has nothing left to run
    for itself, and its profile still ends complete (not incomplete after a wait)."""
    import time

    x = da.random.random((800, 800), chunks=100) + 1
    pid = engine.profile_array(x)
    first = client.persist(x)
    distributed.wait(first)  # every task is in memory when the second arrives
    second = client.persist(x)
    distributed.wait(second)
    start = time.monotonic()
    while time.monotonic() - start < 3:  # well under the 5 s grace for lost computes
        p = engine.get_profile(pid)
        if p["computes"] == 2:
            break
        time.sleep(0.05)
    assert p["computes"] == 2 and p["status"] == "complete", (p["computes"], p["status"])
    del first, second


def test_cluster_computes_are_stored_with_their_workload_and_cluster(engine, client,
                                                                      tmp_path):
    from dask.array._adaptive_chunking import graph as _graph

    path = str(tmp_path / "h.db")
    with dask.config.set({"array.adaptive-chunking.history-path": path}):
        x = da.random.random((1000, 1000), chunks=250)
        pid = engine.profile_array(x)
        (x + x.T).sum().compute()
        assert engine.get_profile(pid)["status"] == "complete"
        (row,) = engine.load_history()
        y = da.random.random((3000, 3000), chunks=500)
        expr = (y + y.T).sum()
        assert row["signature"] == _graph.signature(expr.__dask_graph__().layers, 2, y.dtype)
        fingerprint = json.loads(row["fingerprint"])
        assert fingerprint["scheduler"] == "distributed"
        assert fingerprint["cores"] == 2 and fingerprint["threads"] == 2  # 2 workers x 1
        # What a compute started now would run on: this cluster, so the row counts
        assert engine.load_history(row["signature"], comparable=True) == [row]
        rec = engine.recommend(y, workload=expr)  # no pilot: the cluster's history
        assert rec.fits_budget


def test_the_cli_demo_runs_on_a_scheduler_address_with_a_progress_bar(client):
    from click.testing import CliRunner

    from dask.array._adaptive_chunking.cli import adaptive_chunking

    address = client.scheduler.address
    result = CliRunner().invoke(adaptive_chunking, ["demo", "--size", "1500", "--chunk", "100",
                                                    "--scheduler", address])
    assert result.exit_code == 0, result.output
    assert f"scheduler='{address}'" in result.stdout
    assert "Recommended chunks: (" in result.stdout and "compute() call" in result.stdout
    assert " tasks (more than the 225 chunks" in result.stdout  # the cluster's tasks measured
    assert "100% Completed" in result.stderr  # distributed's own progress bar


def test_a_probe_holds_its_sample_on_the_workers(engine, client):
    """The corner of an array made in memory is kept on the cluster, not shipped back
    and forth inside each probe's graph; a probe through it measures as locally."""
    import numpy as np

    from dask.array._adaptive_chunking import probe

    x = da.random.random((800, 800), chunks=(100, 100))
    sample = probe.sample_of(x, (400, 400), blocks=2)
    assert sample.chunksize == (400, 400)
    held = dict(sample.__dask_graph__()).values()
    assert not any(isinstance(v, np.ndarray) for v in held)
    corner = tuple(slice(0, n) for n in sample.shape)
    np.testing.assert_array_equal(sample.compute(), x[corner].compute())
    pid = engine.profile_array(x)
    x.mean(axis=0).compute()
    rec = engine.recommend(x, pid, workload=lambda a: a.mean(axis=0), probe=30.0)
    assert rec.probes and all(r.error is None and r.tasks > 0 for r in rec.probes)
    assert all(r.task_peak_bytes > 0 for r in rec.probes)
