"""Public API of dask.array.adaptive_chunking and profiling through ordinary compute()
on the local schedulers (the spec's usage examples: test_adaptive_chunking_spec_examples.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from dask.array.core import normalize_chunks
from hypothesis import given, settings
from hypothesis import strategies as st

import dask
import dask.array as da
from dask.array.adaptive_chunking import (
    AdaptiveChunkingEngine,
    AdaptiveChunkingWarning,
    ChunkMemoryMetric,
    ChunkProfiler,
    ChunkSizeRecommender,
    MemoryPressure,
    disable_adaptive_chunking,
    enable_adaptive_chunking,
    get_adaptive_engine,
    memory_limit,
    reset_adaptive_engine,
)

MiB = 2**20


def metric(i=0, nbytes=80_000, ms=1.0, before=100.0, after=100.5, shape=(100, 100)):
    return ChunkMemoryMetric(
        chunk_key=("x", i, 0),
        chunk_shape=shape,
        element_count=math.prod(shape),
        dtype_size=8,
        estimated_bytes=nbytes,
        compute_time_ms=ms,
        memory_peak_before_mb=before,
        memory_peak_after_mb=after,
    )


# ---------------------------------------------------------------------------
# ChunkMemoryMetric, MemoryPressure, ChunkProfiler
# ---------------------------------------------------------------------------


def test_metric_derived_properties():
    m = metric(nbytes=2 * MiB, ms=500.0, before=100.0, after=130.0)
    assert m.memory_delta_mb == 30.0
    assert m.throughput_mb_per_sec == pytest.approx(4.0)
    assert metric(ms=0.0).throughput_mb_per_sec == 0.0


@pytest.mark.parametrize(
    "field, value, exc, match",
    [
        ("element_count", -1, ValueError, r"element_count must be in \[0, "),
        ("estimated_bytes", 1.5, TypeError, "estimated_bytes must be an int"),
        ("compute_time_ms", float("nan"), ValueError, "compute_time_ms"),
        ("chunk_shape", [1, 2], TypeError, "chunk_shape must be a tuple"),
    ],
)
def test_metric_rejects_bad_values(field, value, exc, match):
    kwargs = dict(
        chunk_key="k", chunk_shape=(1,), element_count=1, dtype_size=8,
        estimated_bytes=8, compute_time_ms=1.0, memory_peak_before_mb=1.0,
        memory_peak_after_mb=1.0,
    )
    kwargs[field] = value
    with pytest.raises(exc, match=match):
        ChunkMemoryMetric(**kwargs)


def test_memory_pressure_snapshot_and_threshold():
    p = MemoryPressure.snapshot()
    assert p.total_mb > 0
    assert p.available_mb + p.used_mb == pytest.approx(p.total_mb)
    assert p.is_pressure(0.0) == (p.percent_used > 0)
    assert not p.is_pressure(100.0)
    with dask.config.set({"array.adaptive-chunking.pressure-threshold": 0.0}):
        assert p.is_pressure() == (p.percent_used > 0)
    with pytest.raises(ValueError, match="pressure-threshold"):
        p.is_pressure(150)


def test_memory_pressure_honours_cgroup_limit(monkeypatch):
    # a 64 GiB host whose process lives in a 2 GiB cgroup using 1 GiB
    host = (64 * 2**30, 60 * 2**30)
    monkeypatch.setattr("dask.array._adaptive_chunking.memory.host_memory", lambda: host)
    monkeypatch.setattr("dask.array._adaptive_chunking.memory.cgroup_memory",
                        lambda: (2 * 2**30, 2**30))
    p = MemoryPressure.snapshot()
    assert p.total_mb == 2048
    assert p.used_mb == 1024 and p.percent_used == 50.0
    assert memory_limit() == 2 * 2**30


def test_memory_limit_config():
    with dask.config.set({"array.adaptive-chunking.memory-limit": "600MiB"}):
        assert memory_limit() == 600 * MiB
        assert MemoryPressure.snapshot().total_mb == 600
    with dask.config.set({"array.adaptive-chunking.memory-limit": "lots"}):
        with pytest.raises(ValueError, match="memory-limit .* '512MiB'"):
            memory_limit()
    with dask.config.set({"array.adaptive-chunking.memory-limit": -5}):
        with pytest.raises(ValueError, match="positive whole number of bytes"):
            memory_limit()


def test_profiler_aggregates():
    p = ChunkProfiler()
    for i in range(10):
        p.record_chunk(metric(i, nbytes=MiB * (i + 1), ms=10.0, after=200.0 + i))
    s = p.get_stats()
    assert s["total_chunks"] == 10
    assert s["avg_chunk_size_mb"] == pytest.approx(5.5)
    assert s["min_chunk_size_mb"] == 1 and s["max_chunk_size_mb"] == 10
    assert s["peak_memory_mb"] == pytest.approx(209.0)
    assert s["avg_throughput_mb_per_sec"] == pytest.approx(55 / 0.1)
    assert len(p) == 10 and len(p.metrics) == 10
    p.clear()
    assert p.get_stats()["total_chunks"] == 0 and p.metrics == []


def test_profiler_disabled_ignores_records():
    p = ChunkProfiler(enabled=False)
    p.record_chunk(metric())
    assert p.get_stats()["total_chunks"] == 0
    with pytest.raises(TypeError, match="ChunkMemoryMetric"):
        ChunkProfiler().record_chunk({"chunk_key": 1})


def test_profiler_bounded_sample_exact_aggregates():
    p = ChunkProfiler(max_records=50)
    for i in range(5000):
        p.record_chunk(metric(i, nbytes=1000))
    s = p.get_stats()
    assert s["total_chunks"] == 5000
    assert s["total_data_mb"] == pytest.approx(5000 * 1000 / MiB)
    assert s["sampled_records"] == 50
    keys = {m.chunk_key[1] for m in p.metrics}
    assert len(keys) == 50 and max(keys) > 50  # a sample of the whole stream
    with dask.config.set({"array.adaptive-chunking.max-records": 5}):
        q = ChunkProfiler()
        for i in range(20):
            q.record_chunk(metric(i))
        assert len(q.metrics) == 5


def test_profiler_thread_safe():
    p = ChunkProfiler(max_records=100)

    def work(t):
        for i in range(2000):
            p.record_chunk(metric(i, nbytes=t + 1))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = p.get_stats()
    assert s["total_chunks"] == 16000
    assert s["total_data_mb"] * MiB == pytest.approx(2000 * sum(range(1, 9)))


# ---------------------------------------------------------------------------
# ChunkSizeRecommender
# ---------------------------------------------------------------------------


def profiled(n=200, nbytes=80_000, ms=0.3, rss_mb=10.0):
    p = ChunkProfiler()
    for i in range(n):
        p.record_chunk(metric(i, nbytes=nbytes, ms=ms, before=rss_mb, after=rss_mb))
    return p


def test_recommender_defaults_from_config():
    r = ChunkSizeRecommender()
    with dask.config.set({
        "array.adaptive-chunking.target-memory-percent": 25.0,
        "array.adaptive-chunking.safety-factor": 0.5,
        "array.adaptive-chunking.memory-limit": "8GiB",
    }):
        assert r.memory_budget() == int(8 * 2**30 * 0.25 * 0.5)
    assert "target_memory_percent=50" in repr(r)


def test_recommender_no_data_returns_none():
    assert ChunkSizeRecommender().recommend_chunk_size(ChunkProfiler(), (100, 100), 8) is None


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"target_memory_percent": 0}, ValueError, r"target-memory-percent must be in \(0, 100\]"),
        ({"target_memory_percent": 150}, ValueError, "target-memory-percent"),
        ({"target_memory_percent": "50"}, TypeError, "must be a number"),
        ({"safety_factor": 1.5}, ValueError, r"safety-factor must be in \(0, 1\]"),
        ({"min_chunk_bytes": -1}, ValueError, "positive whole number of bytes"),
        ({"min_chunk_bytes": 2**20, "max_chunk_bytes": 2**10}, ValueError,
         "max_chunk_bytes .* smaller than min_chunk_bytes"),
        ({"overhead_target": 1.0}, ValueError, "overhead-target"),
        ({"memory_limit": "much"}, ValueError, "memory-limit"),
    ],
)
def test_recommender_invalid_settings(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ChunkSizeRecommender(**kwargs)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        (((100, -1), 8), ValueError, "negative"),
        (((100, 1.5), 8), TypeError, "must contain ints"),
        (((100, float("nan")), 8), ValueError, "compute_chunk_sizes"),
        (("abc", 8), TypeError, "tuple of ints"),
        (((100, 100), 0), ValueError, "dtype_size must be at least 1"),
        (((100, 100), 8.0), TypeError, "dtype_size must be an int"),
    ],
)
def test_recommender_invalid_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        ChunkSizeRecommender().recommend_chunk_size(profiled(), *args)


def test_recommender_num_dimensions_mismatch():
    with pytest.raises(ValueError, match="num_dimensions=3 does not match"):
        ChunkSizeRecommender().recommend_chunk_size(profiled(), (10, 10), 8, num_dimensions=3)
    with pytest.raises(TypeError, match="ChunkProfiler"):
        ChunkSizeRecommender().recommend_chunk_size(None, (10, 10), 8)


def test_recommender_respects_tight_budget():
    from dask.array._adaptive_chunking.memory import process_rss

    # This process's memory is the baseline: a budget 100 MiB above it.
    limit = int((process_rss() + 100 * 2**20) / 0.4)
    r = ChunkSizeRecommender(memory_limit=limit, min_chunk_bytes=2**20)
    rec = r.recommend(profiled(), (20000, 20000), 8)
    assert rec.fits_budget
    assert rec.predicted_peak_bytes <= r.memory_budget()
    assert math.prod(rec.chunks) * 8 <= r.memory_budget()


def test_recommender_warns_when_nothing_fits():
    p = ChunkProfiler()
    p.record_chunk(metric(before=500.0, after=500.0))  # a 500 MiB baseline
    r = ChunkSizeRecommender(memory_limit="100MiB")
    with pytest.warns(AdaptiveChunkingWarning, match="memory budget.*memory-limit"):
        rec = r.recommend(p, (20000, 20000), 8)
    assert not rec.fits_budget and rec.binding == "memory"
    assert rec.reason.startswith("no chunk size is predicted to fit the memory budget")
    assert "within 10% of the smallest" in rec.reason


shapes = st.lists(st.integers(0, 50_000), min_size=1, max_size=4).map(tuple)


@settings(max_examples=200, deadline=None)
@given(
    shape=shapes,
    itemsize=st.sampled_from([1, 2, 4, 8, 16]),
    min_bytes=st.integers(1, 64 * MiB),
    max_bytes=st.one_of(st.none(), st.integers(1, 4096 * MiB)),
    limit=st.integers(16 * MiB, 64 * 2**30),
)
def test_recommender_invariants(shape, itemsize, min_bytes, max_bytes, limit):
    if max_bytes is not None and max_bytes < min_bytes:
        min_bytes, max_bytes = max_bytes, min_bytes
    r = ChunkSizeRecommender(min_chunk_bytes=min_bytes, max_chunk_bytes=max_bytes,
                             memory_limit=limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdaptiveChunkingWarning)
        chunks = r.recommend_chunk_size(PROFILED, shape, itemsize)
    assert len(chunks) == len(shape)
    normalized = normalize_chunks(chunks, shape)
    assert tuple(map(sum, normalized)) == shape
    nbytes = math.prod(chunks) * itemsize
    array_bytes = math.prod(shape) * itemsize
    upper = max_bytes or r.memory_budget()
    if array_bytes:
        assert nbytes <= max(upper, itemsize)
        if array_bytes >= min_bytes and upper >= 2 * min_bytes:
            assert nbytes >= min_bytes
    # every dimension divided evenly: no sliver block at the end (unless tight bounds
    # leave no other choice)
    if upper >= 4 * min_bytes:
        for c in normalized:
            if len(c) > 1 and c[0] >= 2 * len(c):
                assert c[-1] >= c[0] / 2, c


PROFILED = profiled()


# ---------------------------------------------------------------------------
# Engine: profiling through compute() on the local schedulers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_profile_array_compute_all_schedulers(engine, scheduler):
    x = da.random.random((400, 300), chunks=(100, 100))
    pid = engine.profile_array(x)
    assert engine.get_profile(pid)["status"] == "pending"
    result = x.compute(scheduler=scheduler)
    profile = engine.get_profile(pid)
    assert result.shape == (400, 300)
    assert profile["status"] == "complete"
    stats = profile["profiler_stats"]
    assert stats["total_chunks"] == x.npartitions == 12
    assert stats["avg_chunk_size_mb"] == pytest.approx(100 * 100 * 8 / MiB)
    last = profile["last_compute"]
    assert last["results_memory_mb"] == pytest.approx(x.nbytes / MiB, rel=0.01)
    assert last["peak_memory_mb"] >= last["baseline_memory_mb"] > 0
    metrics = engine.get_profiler(pid).metrics
    assert {m.chunk_shape for m in metrics} == {(100, 100)}
    assert all(m.dtype_size == 8 and m.compute_time_ms >= 0 for m in metrics)
    if scheduler == "processes":
        assert {m.worker for m in metrics}.isdisjoint({os.getpid()})


def test_expression_and_fused_keys_are_attributed(engine):
    x = da.random.random((1000, 1000), chunks=(100, 100))
    pid = engine.profile_array(x)
    (x * 2).sum().compute()
    stats = engine.get_profile(pid)["profiler_stats"]
    # x's keys are fused away, yet every task of the compute belongs to x
    assert stats["total_chunks"] >= x.npartitions
    assert engine.get_profile(pid)["recommended_chunks"] is not None


def test_compute_together_attributes_each_array(engine):
    x = da.random.random((600, 600), chunks=(100, 100))  # 36 chunks
    y = da.ones((800, 800), chunks=(200, 200))  # 16 chunks
    px, py = engine.profile_array(x), engine.profile_array(y)
    dask.compute(x, y)
    assert engine.get_profile(px)["profiler_stats"]["total_chunks"] == 36
    assert engine.get_profile(py)["profiler_stats"]["total_chunks"] == 16
    assert engine.profiler.get_stats()["total_chunks"] == 52


def test_unprofiled_compute_is_not_instrumented(engine):
    x = da.ones((100, 100), chunks=50)
    engine.profile_array(x)
    da.zeros((100, 100), chunks=50).sum().compute()
    assert engine.profiler.get_stats()["total_chunks"] == 0


def computes_at_once(jobs, rounds):
    """Run each job ``rounds`` times, one thread per job, all starting together."""
    barrier = threading.Barrier(len(jobs))
    errors = []

    def run(job):
        try:
            barrier.wait(timeout=30)
            for _ in range(rounds):
                job()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)


def test_concurrent_computes_in_threads(engine):
    arrays = [da.random.random((500 + 100 * i, 400), chunks=(100, 100)) for i in range(4)]
    pids = [engine.profile_array(a) for a in arrays]
    computes_at_once([lambda a=a: a.sum().compute(scheduler="threads") for a in arrays], 3)
    for pid, a in zip(pids, arrays):
        p = engine.get_profile(pid)
        assert p["computes"] == 3
        # blockwise sum: one fused task per chunk plus the tree reduction
        single = da.random.random(a.shape, chunks=(100, 100))
        q = engine.profile_array(single)
        single.sum().compute(scheduler="sync")
        per_compute = engine.get_profile(q)["profiler_stats"]["total_chunks"]
        assert p["profiler_stats"]["total_chunks"] == 3 * per_compute


def test_enable_profiles_every_compute_and_disable_restores(engine):
    optimize_before = dask.config.get("array_optimize", None)
    enable_adaptive_chunking()
    try:
        assert get_adaptive_engine().enabled
        da.ones((400, 400), chunks=100).sum().compute()
        da.arange(1000, chunks=100).cumsum(axis=0).compute(scheduler="sync")
        assert engine.get_telemetry()["computes_profiled"] == 2
    finally:
        disable_adaptive_chunking()
    assert dask.config.get("array_optimize", None) is optimize_before
    da.ones((400, 400), chunks=100).sum().compute()
    assert engine.get_telemetry()["computes_profiled"] == 2


def test_env_var_enables_engine(tmp_path):
    code = (
        "import dask.array as da\n"
        "from dask.array.adaptive_chunking import get_adaptive_engine\n"
        "e = get_adaptive_engine()\n"
        "da.ones((100, 100), chunks=10).sum().compute()\n"
        "print(e.enabled, e.get_telemetry()['computes_profiled'])\n"
    )
    env = dict(os.environ, DASK_ARRAY__ADAPTIVE_CHUNKING__ENABLED="True")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1"]


def test_failing_task_marks_profile_failed(engine):
    x = da.ones((400, 400), chunks=100)

    def boom(b, block_info=None):
        if block_info[0]["chunk-location"] == (2, 2):
            raise ZeroDivisionError("bad block")
        return b

    y = x.map_blocks(boom, dtype=x.dtype)
    pid = engine.profile_array(y)
    with pytest.raises(ZeroDivisionError, match="bad block"):
        y.compute(scheduler="sync")
    p = engine.get_profile(pid)
    assert p["status"] == "failed"
    assert p["profiler_stats"]["failed_chunks"] == 1
    assert "raised ZeroDivisionError: bad block" in p["error"]
    assert p["profiler_stats"]["total_chunks"] >= 1  # partial stats are kept
    # the engine stays usable
    z = da.ones(10, chunks=5)
    pz = engine.profile_array(z)
    z.compute()
    assert engine.get_profile(pz)["status"] == "complete"


def _no_engine_thread_left():
    from dask.array._adaptive_chunking import peaks

    for _ in range(200):  # the sampler thread exits on its next tick
        if not any(t.name == "adaptive-chunking-sampler" for t in threading.enumerate()):
            break
        threading.Event().wait(0.01)
    assert not peaks.high_water_mark.active
    assert not any(t.name == "adaptive-chunking-sampler" for t in threading.enumerate())


@pytest.mark.parametrize("where", ["in a task (sync)", "in the scheduler (threads)"])
def test_keyboard_interrupt_leaves_the_engine_usable(engine, where):
    import _thread
    import gc
    import signal
    import time

    x = da.ones((400, 400), chunks=100)
    first = threading.Event()

    def interrupt(b, block_info=None):
        if block_info[0]["chunk-location"] == (1, 1) and not first.is_set():
            first.set()
            if where.endswith("(sync)"):
                raise KeyboardInterrupt  # Ctrl-C lands while the task runs
            # Ctrl-C lands while the scheduler waits. A real SIGINT wakes the main
            # thread from its wait at once; interrupt_main() only sets a flag that the
            # main thread reads when it next runs, and all three were lost in one CI run.
            if hasattr(signal, "pthread_kill"):
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            else:  # pragma: no cover - Windows
                _thread.interrupt_main()
        time.sleep(0.02)
        return b

    # What is tested is the engine after an interrupt, so one that lands suffices.
    # Python's own handler turns SIGINT into KeyboardInterrupt, whatever ran before.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for attempt in range(3):
            first.clear()
            y = x.map_blocks(interrupt, dtype=x.dtype, name=f"interrupt-{attempt}")
            pid = engine.profile_array(y)
            try:
                y.compute(scheduler="sync" if where.endswith("(sync)") else "threads")
            except KeyboardInterrupt:
                break
            engine.remove_profile(pid)
        else:
            pytest.fail("no interrupt reached the compute in 3 attempts")
    finally:
        signal.signal(signal.SIGINT, handler)
    deadline = time.monotonic() + 10
    while True:  # the dropped graph is collected; tasks already running finish
        gc.collect()
        p = engine.get_profile(pid)
        if p["status"] == "incomplete" or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert p["status"] == "incomplete" and p["computes"] == 1
    assert 1 <= p["profiler_stats"]["total_chunks"] < y.npartitions
    if where.endswith("(sync)"):
        assert "interrupted (KeyboardInterrupt" in p["error"]
    _no_engine_thread_left()
    # the engine goes on: the same array, computed again, completes
    assert (y.compute(scheduler="threads") == 1).all()
    p = engine.get_profile(pid)
    assert p["status"] == "complete" and p["computes"] == 2
    _no_engine_thread_left()


def test_failing_task_in_child_process(engine):
    def _raise_in_child(block):  # a local function is pickled by value
        raise ZeroDivisionError("raised in a child process")

    x = da.ones((200, 200), chunks=100)
    y = x.map_blocks(_raise_in_child, dtype=x.dtype)
    pid = engine.profile_array(y)
    with pytest.raises(ZeroDivisionError):
        y.compute(scheduler="processes")
    assert engine.get_profile(pid)["status"] == "failed"


def test_engine_error_never_breaks_compute(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("engine bug")

    # the fold of a finished compute (a pure function the recorder calls) fails
    monkeypatch.setattr("dask.array._adaptive_chunking.recorder.fold", broken)
    x = da.arange(100, chunks=10)
    pid = engine.profile_array(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdaptiveChunkingWarning)  # not in the compute
        assert x.sum().compute() == 4950
    # The fold runs after the result is handed back; reading the profile reports it.
    with pytest.warns(AdaptiveChunkingWarning, match="engine bug"):
        engine.get_profile(pid)


def test_planner_error_never_breaks_compute(engine, monkeypatch):
    from dask.array._adaptive_chunking.recorder import ComputeRecorder

    monkeypatch.setattr(ComputeRecorder, "plan", lambda *a: 1 / 0)
    x = da.arange(100, chunks=10)
    engine.profile_array(x)
    with pytest.warns(AdaptiveChunkingWarning, match="ZeroDivisionError"):
        assert x.sum().compute() == 4950


def test_nested_compute_is_not_counted_twice(engine):
    inner = da.ones(100, chunks=10)

    def f(block):
        return block + inner.sum().compute(scheduler="sync")

    x = da.ones(40, chunks=10)
    y = x.map_blocks(f, dtype=float)
    pid = engine.profile_array(y)
    pinner = engine.profile_array(inner)
    assert (y.compute(scheduler="threads") == 101).all()
    # the outer tasks include the nested computes' time: those are not measured again
    assert engine.get_profile(pid)["profiler_stats"]["total_chunks"] == y.npartitions
    assert engine.get_profile(pinner)["profiler_stats"]["total_chunks"] == 0


def test_optimized_but_never_run_changes_nothing(engine):
    import gc

    x = da.ones((300, 300), chunks=100)
    pid = engine.profile_array(x)
    dsk = x.__dask_optimize__(x.__dask_graph__(), x.__dask_keys__())  # never executed
    assert len(dsk) == 9
    del dsk
    gc.collect()
    p = engine.get_profile(pid)
    assert p["status"] == "pending" and p["computes"] == 0


def test_interrupted_compute_marks_incomplete(engine):
    import gc

    x = da.ones((300, 300), chunks=100)
    pid = engine.profile_array(x)
    dsk = x.__dask_optimize__(x.__dask_graph__(), x.__dask_keys__())
    # Run two of the nine tasks, as a compute interrupted early would have.
    started = [t for t in dsk.values() if type(t).__name__ == "MeasuredTask"][:2]
    for task in started:
        assert not task.dependencies
        task({})
    assert engine.get_profile(pid)["status"] == "running"
    del dsk, started, task
    gc.collect()
    p = engine.get_profile(pid)
    assert p["status"] == "incomplete"
    assert p["computes"] == 1 and p["profiler_stats"]["total_chunks"] == 2


def test_apply_recommendation(engine):
    x = da.random.random((1200, 1000), chunks=(100, 100))
    pid = engine.profile_array(x)
    x.sum().compute()
    rec = engine.get_profile(pid)["recommended_chunks"]
    y = engine.apply_recommendation(x, rec)
    assert y.chunks == normalize_chunks(rec, x.shape)
    np.testing.assert_array_equal(y.compute(), x.compute())
    # without explicit chunks: the newest profile of this array
    rec = engine.get_profile(pid)["recommended_chunks"]
    assert engine.apply_recommendation(x).chunks == normalize_chunks(rec, x.shape)
    assert engine.apply_recommendation(x, pid).chunks == normalize_chunks(rec, x.shape)


@pytest.mark.parametrize(
    "chunks, match", [((0, 5), "invalid chunks"), ((10, 10, 10), "invalid chunks"),
                      ("lots", "invalid chunks")]
)
def test_apply_recommendation_rejects_invalid(engine, chunks, match):
    with pytest.raises(ValueError, match=match):
        engine.apply_recommendation(da.ones((100, 100), chunks=10), chunks)


def test_apply_recommendation_without_profile(engine):
    with pytest.raises(ValueError, match="profile it with profile_array"):
        engine.apply_recommendation(da.ones(10, chunks=5))
    with pytest.raises(TypeError, match="dask.array.Array"):
        engine.apply_recommendation(np.ones(10), (5,))


def test_profile_array_rejects_non_arrays(engine):
    with pytest.raises(TypeError, match="from_array"):
        engine.profile_array(np.ones(10))


def test_get_profile_unknown_id(engine):
    with pytest.raises(KeyError, match="no profile with id 'nope'"):
        engine.get_profile("nope")


def test_profiles_expire(engine):
    with dask.config.set({"array.adaptive-chunking.max-profiles": 3}):
        ids = [engine.profile_array(da.ones(10, chunks=5) + i) for i in range(5)]
    assert engine.profile_ids == ids[-3:]


def test_telemetry_keys(engine):
    x = da.ones(10, chunks=5)
    engine.profile_array(x)
    t = engine.get_telemetry()
    assert t["tracked_arrays"] == 1
    assert {"available_mb", "used_mb", "percent_used"} <= t["memory_pressure"].keys()
    assert t["memory_budget_mb"] < t["memory_limit_mb"]


def test_profile_chunks_off_keeps_compute_summary(engine):
    engine.profile_chunks = False
    x = da.ones((200, 200), chunks=100)
    pid = engine.profile_array(x)
    x.compute()
    p = engine.get_profile(pid)
    assert p["profiler_stats"]["total_chunks"] == 0
    assert p["computes"] == 1 and p["last_compute"]["tasks"] == 4
    with pytest.raises(TypeError, match="True or False"):
        engine.profile_chunks = "yes"


def test_singleton_and_reset(engine):
    assert get_adaptive_engine() is engine
    reset_adaptive_engine()
    fresh = get_adaptive_engine()
    assert fresh is not engine and isinstance(fresh, AdaptiveChunkingEngine)


def test_previous_array_optimize_is_chained(engine):
    calls = []

    def mine(dsk, keys, **kwargs):
        calls.append(1)
        from dask.array.optimization import optimize

        return optimize(dsk, keys, **kwargs)

    with dask.config.set(array_optimize=mine):
        x = da.ones(100, chunks=10)
        pid = engine.profile_array(x)
        assert x.sum().compute() == 100
        assert calls and engine.get_profile(pid)["status"] == "complete"
        engine.remove_profile(pid)
        reset_adaptive_engine()
        assert dask.config.get("array_optimize") is mine


def test_demo_runs(capsys):
    from dask.array._adaptive_chunking.demo import main

    assert main(["--size", "1500", "--chunk", "100", "--scheduler", "sync"]) == 0
    out = capsys.readouterr().out
    assert "Recommended chunks" in out and "compute() call" in out
    # One story: each number once, in one format, the before/after as one quantity
    assert out.count("Why:") == 1 and "budget" in out.splitlines()[-2] + out.splitlines()[-1]
    assert "_mb" not in out and "{" not in out  # no raw dict printed
    assert "225 chunks of 78.12 kiB" in out  # 1500 / 100 = 15 chunks a side
    reset_adaptive_engine()


# ---------------------------------------------------------------------------
# Configuration files
# ---------------------------------------------------------------------------


def test_config_defaults_and_schema_agree():
    import yaml

    root = Path(__import__("dask.array.adaptive_chunking").array.adaptive_chunking.__file__).parent
    defaults = yaml.safe_load((root / "_adaptive_chunking" / "adaptive-chunking.yaml").read_text())
    schema = yaml.safe_load(
        (root / "_adaptive_chunking" / "adaptive-chunking-schema.yaml").read_text()
    )
    keys = list(defaults["array"]["adaptive-chunking"])
    props = schema["properties"]["array"]["properties"]["adaptive-chunking"]["properties"]
    assert keys == list(props)
    assert all(props[k].get("description") for k in keys)
    for key, value in defaults["array"]["adaptive-chunking"].items():
        if key == "history-path":  # the test session writes history to a file of its own
            continue
        assert dask.config.get(f"array.adaptive-chunking.{key}") == value


def test_misspelled_setting_is_named_with_the_fix(engine):
    x = da.ones(10, chunks=5)
    with dask.config.set({"array.adaptive-chunking.max-record": 5}):
        with pytest.raises(ValueError, match=r"'array.adaptive-chunking.max-record' "
                                             r"\(did you mean 'max-records'\?\)"):
            engine.profile_array(x)
        with pytest.raises(ValueError, match="max-record"):
            ChunkSizeRecommender().recommend_chunk_size((1000, 1000), np.float64)
    pid = engine.profile_array(x)
    with dask.config.set({"array.adaptive-chunking.memory_limt": "1GiB"}):
        # inside a compute the engine warns, and the compute is left alone
        with pytest.warns(AdaptiveChunkingWarning, match="did you mean 'memory-limit'"):
            assert x.sum().compute() == 10
    # both spellings of a real key are the same key
    with dask.config.set({"array.adaptive-chunking.max_records": 7}):
        assert engine.get_profiler(pid).max_records == 7


def test_settings_spelled_with_underscores_are_known(engine, monkeypatch):
    """YAML files and DASK_ARRAY__ADAPTIVE_CHUNKING__* variables may spell "_" for "-"."""
    monkeypatch.setitem(dask.config.config["array"], "adaptive_chunking",
                        {"max_records": 7})  # as an environment variable leaves it
    x = da.ones(10, chunks=5)
    engine.profile_array(x)  # no error: a known setting
    monkeypatch.setitem(dask.config.config["array"], "adaptive_chunking",
                        {"max_recrods": 7})
    with pytest.raises(ValueError, match="did you mean 'max-records'"):
        engine.profile_array(x)


def test_cluster_memory_limits_given_as_strings():
    rec = ChunkSizeRecommender().recommend(
        profiled(), (4000, 4000), 8,
        cluster={"a": {"nthreads": 2, "memory_limit": "16GiB"},
                 "b": {"nthreads": 2, "memory_limit": "4GiB"}},
    )
    assert rec.memory_limit_bytes == 4 * 2**30
    assert rec.to_dict()["memory_limit_mb"] == 4096


def test_config_schema_validates_defaults():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    import dask.array.adaptive_chunking as ac

    root = Path(ac.__file__).parent / "_adaptive_chunking"
    defaults = yaml.safe_load((root / "adaptive-chunking.yaml").read_text())
    schema = yaml.safe_load((root / "adaptive-chunking-schema.yaml").read_text())
    jsonschema.validate(defaults, schema)


def test_configuration_docs_are_current():
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, str(root / "tools" / "gen_config_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _overlap(b):
    return b * 2


OPERATIONS = {
    "transpose-add-mean": lambda x: (x[:120] + x[:120].T).mean(axis=0),
    "sum": lambda x: (x * 2).sum(),
    "map_overlap": lambda x: x.map_overlap(_overlap, depth=2, boundary="reflect").sum(),
    "qr": lambda x: da.linalg.qr(x.rechunk((120, 120)))[1],
    "rechunk": lambda x: x.rechunk((120, 30)),
    "slicing": lambda x: x[::3, 5:-5][10:, ::2].T,
    "matmul": lambda x: x @ x.T,
    "cumsum": lambda x: x.cumsum(axis=1),
    "argtopk": lambda x: da.argtopk(x.ravel(), 5),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_profiling_changes_no_result(engine, name, scheduler):
    rng = np.random.default_rng(0)
    data = rng.random((240, 120))
    x = da.from_array(data, chunks=(40, 30))
    expr = OPERATIONS[name](x)
    expected = expr.compute(scheduler=scheduler)
    pid = engine.profile_array(x)
    got = OPERATIONS[name](x).compute(scheduler=scheduler)
    np.testing.assert_array_equal(got, expected)
    p = engine.get_profile(pid)
    assert p["status"] == "complete" and p["profiler_stats"]["total_chunks"] > 0


def test_graph_optimized_twice_is_measured_once(engine):
    x = da.random.random((300, 300), chunks=100)
    pid = engine.profile_array(x)
    expected = x.sum().compute()
    one = engine.get_profile(pid)["profiler_stats"]["total_chunks"]
    (y,) = dask.optimize(x.sum())  # instruments the graph once ...
    assert y.compute() == pytest.approx(expected)  # ... and again here
    p = engine.get_profile(pid)
    assert p["status"] == "complete" and p["computes"] == 2
    assert p["profiler_stats"]["total_chunks"] == 2 * one  # no task counted twice


def test_unprofiled_array_in_same_compute_is_not_attributed(engine):
    x = da.random.random((400, 400), chunks=100)  # 16 chunks
    z = da.random.random((300, 300), chunks=100)  # 9 chunks, not profiled
    px = engine.profile_array(x)
    dask.compute(x, z)
    assert engine.get_profile(px)["profiler_stats"]["total_chunks"] == 16
    assert engine.profiler.get_stats()["total_chunks"] == 25


def test_fused_expressions_attributed_to_their_arrays(engine):
    x = da.random.random((600, 600), chunks=100)
    y = da.random.random((400, 400), chunks=100)
    px, py = engine.profile_array(x), engine.profile_array(y)
    (x * 2).sum().compute()
    alone_x = engine.get_profile(px)["profiler_stats"]["total_chunks"]
    (y + 1).sum().compute()
    alone_y = engine.get_profile(py)["profiler_stats"]["total_chunks"]
    dask.compute((x * 2).sum(), (y + 1).sum())
    assert engine.get_profile(px)["profiler_stats"]["total_chunks"] == 2 * alone_x
    assert engine.get_profile(py)["profiler_stats"]["total_chunks"] == 2 * alone_y


def test_config_key_alone_enables_profiling(engine):
    reset_adaptive_engine()  # no engine object exists; only the hook from the import
    from dask.array._adaptive_chunking import hook

    hook.install()
    with dask.config.set({"array.adaptive-chunking.enabled": True}):
        da.ones((200, 200), chunks=100).sum().compute()
    assert get_adaptive_engine().get_telemetry()["computes_profiled"] == 1


def test_recommendation_follows_settings(engine):
    x = da.random.random((2000, 2000), chunks=(100, 100))
    pid = engine.profile_array(x)
    x.sum().compute()
    roomy = engine.get_profile(pid)["recommended_chunks"]
    half = math.prod(roomy) * 8 // 2
    engine.recommender = ChunkSizeRecommender(max_chunk_bytes=half, min_chunk_bytes=2**16)
    tight = engine.get_profile(pid)["recommended_chunks"]
    assert math.prod(tight) * 8 <= half


def test_falsy_array_optimize_means_no_optimization(engine):
    with dask.config.set(array_optimize=False):
        from dask.array._adaptive_chunking import hook

        reset_adaptive_engine()
        hook.install()
        x = da.ones(10, chunks=5) + 1
        opt = x.__dask_optimize__(x.__dask_graph__(), x.__dask_keys__())
        assert opt is x.__dask_graph__() or len(opt) == len(x.__dask_graph__())
        hook.uninstall()
        assert dask.config.get("array_optimize") is False


@pytest.mark.parametrize("combine", ["stack", "concatenate"])
def test_combined_with_unprofiled_array(engine, combine):
    x = da.random.random((200, 200), chunks=100)  # 4 chunks
    y = da.random.random((200, 200), chunks=100) + 1
    px = engine.profile_array(x)
    getattr(da, combine)([x, y]).compute()
    total = engine.profiler.get_stats()["total_chunks"]
    mine = engine.get_profile(px)["profiler_stats"]["total_chunks"]
    assert mine == 4 and total == 8


def test_profile_without_own_tasks_gets_none(engine):
    x = da.random.random((300, 300), chunks=100).persist()  # in memory: no tasks
    z = da.random.random((300, 300), chunks=100)
    px = engine.profile_array(x)
    dask.compute(x, z)
    assert engine.get_profile(px)["profiler_stats"]["total_chunks"] == 0
    assert engine.profiler.get_stats()["total_chunks"] == 9


class _BadNbytes(np.ndarray):
    @property
    def nbytes(self):
        raise RuntimeError("no size for you")


def test_measurement_error_still_completes(engine):
    x = da.ones(40, chunks=10).map_blocks(lambda b: b.view(_BadNbytes), dtype=float)
    pid = engine.profile_array(x)
    assert x.sum().compute() == 40
    assert engine.get_profile(pid)["status"] == "complete"


def test_optimized_graph_tracks_nothing_until_run(engine):
    from dask.array._adaptive_chunking import peaks

    x = da.ones((300, 300), chunks=100)
    engine.profile_array(x)
    (y,) = dask.optimize(x)
    assert not peaks.high_water_mark.active
    assert peaks.sampler.last_rss is None
    assert y.compute().shape == (300, 300)
    assert not peaks.high_water_mark.active


def test_eight_threads_each_get_exactly_their_tasks(engine):
    """The lock-free record path under contention: nothing lost, nothing doubled."""
    arrays = [da.random.random((300 + 100 * i, 200), chunks=(50, 50)) for i in range(8)]
    pids = [engine.profile_array(a) for a in arrays]
    rounds = 5
    computes_at_once([lambda a=a: a.compute(scheduler="threads") for a in arrays], rounds)
    for pid, a in zip(pids, arrays):
        p = engine.get_profile(pid)
        assert p["status"] == "complete" and p["computes"] == rounds
        assert p["profiler_stats"]["total_chunks"] == rounds * a.npartitions
    assert engine.profiler.get_stats()["total_chunks"] == rounds * sum(
        a.npartitions for a in arrays
    )


def test_a_failed_threaded_compute_is_failed_when_the_error_arrives(engine):
    """Two tasks failing at once: whichever exception reaches the caller, the
    profile is already folded (it used to read ``running`` for a moment)."""

    def boom(block):
        raise RuntimeError("no good")

    for _ in range(25):
        z = da.ones((10, 10), chunks=5)
        pid = engine.profile_array(z)
        with pytest.raises(RuntimeError, match="no good"):
            z.map_blocks(boom, dtype=float).compute(scheduler="threads")
        profile = engine.get_profile(pid)
        assert (profile["status"], profile["computes"]) == ("failed", 1)
        engine.remove_profile(pid)


def test_a_dropped_engine_is_freed_and_stops_profiling(engine):
    """Its collaborators call back weakly: no reference cycle keeps it (or its
    recorder, which the hook knows) alive until the garbage collector runs."""
    import gc

    from dask.array._adaptive_chunking import hook

    x = da.ones(100, chunks=10)
    gc.disable()
    try:
        before = len(hook.runtime.recorders)
        other = AdaptiveChunkingEngine()
        other.profile_array(x)
        assert len(hook.runtime.recorders) == before + 1
        del other
        assert len(hook.runtime.recorders) == before
    finally:
        gc.enable()
    assert x.sum().compute() == 100
