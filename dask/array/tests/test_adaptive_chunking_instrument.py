"""Measurement internals: cgroup limits, process memory, peak tracking, records."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import dask
import dask.array as da
from dask.array._adaptive_chunking import attribution, errors, memory, peaks, tasks
from dask.array._adaptive_chunking.memory import cgroup_memory, process_rss
from dask.array._adaptive_chunking.records import batch_from_records, local_record, max_overlap

GiB = 2**30


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class Sink:
    """A ComputeSink that keeps the records of the compute it hears of."""

    def __init__(self):
        self.records = []

    def start(self, collector):
        pass

    def register_failed(self, cid):
        pass

    def finish(self, collector):
        self.records = list(collector.records)

    def late(self, cid, record):
        pass

    def abandon(self, records, cid):
        pass


def test_cgroup_v2_own_limit_and_usage(tmp_path):
    write(tmp_path / "kubepods" / "pod1" / "memory.max", str(2 * GiB))
    write(tmp_path / "kubepods" / "pod1" / "memory.current", str(GiB))
    write(tmp_path / "kubepods" / "pod1" / "memory.stat", "anon 1\ninactive_file 1048576\n")
    limit, usage = cgroup_memory("0::/kubepods/pod1\n", root=tmp_path)
    assert limit == 2 * GiB
    assert usage == GiB - 2**20  # inactive page cache is reclaimable


def test_cgroup_v2_parent_limit_is_tighter(tmp_path):
    write(tmp_path / "slurm" / "memory.max", str(GiB))
    write(tmp_path / "slurm" / "job1" / "memory.max", "max")
    limit, _ = cgroup_memory("0::/slurm/job1\n", root=tmp_path)
    assert limit == GiB


def test_cgroup_v1(tmp_path):
    base = tmp_path / "memory" / "docker" / "abc"
    write(base / "memory.limit_in_bytes", str(512 * 2**20))
    write(base / "memory.usage_in_bytes", str(100 * 2**20))
    write(base / "memory.stat", "total_inactive_file 0\n")
    text = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n"
    assert cgroup_memory(text, root=tmp_path) == (512 * 2**20, 100 * 2**20)


def test_cgroup_unlimited_and_missing(tmp_path):
    base = tmp_path / "memory" / "x"
    write(base / "memory.limit_in_bytes", "9223372036854771712")  # "no limit" in v1
    assert cgroup_memory("4:memory:/x\n", root=tmp_path) == (None, None)
    assert cgroup_memory("garbage", root=tmp_path) == (None, None)


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Fallback warnings are given once per process: start this test with none given."""
    monkeypatch.setattr(errors, "_warned", set())


def fallback_warnings(record):
    from dask.array.adaptive_chunking import AdaptiveChunkingWarning

    return [w for w in record if issubclass(w.category, AdaptiveChunkingWarning)]


def test_unreadable_cgroup_file_warns_once_and_falls_back(tmp_path, fresh_warnings):
    (tmp_path / "pod" / "memory.max").mkdir(parents=True)  # reading it fails: EISDIR
    write(tmp_path / "memory.max", str(GiB))
    with pytest.warns() as record:
        assert cgroup_memory("0::/pod\n", root=tmp_path) == (GiB, None)
        assert cgroup_memory("0::/pod\n", root=tmp_path) == (GiB, None)
    (w,) = fallback_warnings(record)
    assert "memory.max" in str(w.message) and "memory-limit" in str(w.message)


def test_psutil_failing_falls_back_to_sysconf_then_assumes(monkeypatch, fresh_warnings):
    import psutil

    from dask.array.adaptive_chunking import memory_limit

    def broken():
        raise OSError("no /proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    with pytest.warns() as record:
        total, available = memory.host_memory()
        assert memory_limit() > 0
    (w,) = fallback_warnings(record)
    assert "no /proc/meminfo" in str(w.message) and "sysconf" in str(w.message)
    assert total == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 <= available <= total

    monkeypatch.setattr(errors, "_warned", set())
    monkeypatch.setattr(os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    with pytest.warns() as record:
        assert memory.host_memory() == (memory.ASSUMED_MEMORY,) * 2
        assert memory.host_memory() == (memory.ASSUMED_MEMORY,) * 2
    (w,) = fallback_warnings(record)
    assert "assuming 4 GiB" in str(w.message) and "memory-limit" in str(w.message)


def test_unreadable_process_memory_warns_once_and_computes(engine, monkeypatch,
                                                           fresh_warnings):
    import psutil

    def broken(*args, **kwargs):
        raise psutil.AccessDenied()

    monkeypatch.setattr(memory, "_statm_fd", -1)  # as if /proc/self/statm were gone
    monkeypatch.setattr(memory, "_forget_statm_fd", lambda: None)
    monkeypatch.setattr(psutil.Process, "memory_info", broken)
    x = da.random.random((400, 400), chunks=100)
    pid = engine.profile_array(x)
    with pytest.warns() as record:
        assert memory.process_rss() == 0
        for _ in range(3):
            np.testing.assert_array_equal(x.compute(scheduler="threads"), x.compute())
    (w,) = fallback_warnings(record)
    assert "cannot read process memory" in str(w.message)
    p = engine.get_profile(pid)
    assert p["status"] == "complete" and p["computes"] == 6


def test_process_rss_tracks_allocation():
    before = process_rss()
    block = np.ones(50 * 2**20 // 8)  # 50 MiB, touched
    after = process_rss()
    assert after - before > 40 * 2**20
    del block


def test_high_water_mark_or_sampler_catches_transient_peak():
    """A task that allocates 200 MB and frees it: the compute's peak must show it."""
    from dask.array.adaptive_chunking import get_adaptive_engine, reset_adaptive_engine

    reset_adaptive_engine()
    engine = get_adaptive_engine()

    def spike(block):
        tmp = np.ones(200 * 2**20 // 8)
        tmp.sort()
        return block + tmp[:1]

    x = da.zeros(4, chunks=2).map_blocks(spike, dtype=float)
    pid = engine.profile_array(x)
    x.compute(scheduler="sync")
    last = engine.get_profile(pid)["last_compute"]
    assert last["peak_memory_mb"] - last["baseline_memory_mb"] > 150
    reset_adaptive_engine()


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/status"),
                    reason="needs fork and /proc (Linux)")
def test_high_water_mark_read_in_a_forked_child_is_the_childs():
    """The status file is kept open: a forked child must read its own, not the parent's."""
    peaks._read_hwm()  # opened in this process
    pid = os.fork()
    if pid == 0:  # the child: make its peak differ from the parent's, then compare
        code = 1
        try:
            # The parent's files were closed at the fork, before their numbers could
            # name a file of the child's.
            assert peaks._proc.status == peaks._proc.clear == -1
            peaks.high_water_mark._reset()
            block = np.ones(100 * 2**20 // 8)
            with open("/proc/self/status", "rb") as f:
                line = next(x for x in f if x.startswith(b"VmHWM:"))
            own = int(line.split()[1]) * 1024
            code = 0 if abs(peaks._read_hwm() - own) < 8 * 2**20 else 1
            del block
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("method", ["sampler", "high-water-mark"])
def test_peak_methods(method):
    from dask.array.adaptive_chunking import get_adaptive_engine, reset_adaptive_engine

    reset_adaptive_engine()
    engine = get_adaptive_engine()
    x = da.ones((500, 500), chunks=100)
    pid = engine.profile_array(x)
    with dask.config.set({"array.adaptive-chunking.peak-method": method}):
        x.sum().compute()
    last = engine.get_profile(pid)["last_compute"]
    assert last["peak_memory_mb"] >= last["baseline_memory_mb"] > 0
    with dask.config.set({"array.adaptive-chunking.peak-method": "guess"}):
        with pytest.warns(Warning, match="peak-method"):
            assert x.sum().compute() == 250000
    reset_adaptive_engine()
    assert not peaks.high_water_mark.active


def test_records_to_batch():
    shape = (10, 10)
    records = [
        local_record(("x", i), 1.0 * i, 1.0 * i + 0.5, 10.0, 20.0, 800, tuple(shape),
                     np.dtype("f8"), 12345, 0, i == 2, False, 800, 99, 1600)
        for i in range(3)
    ]
    batch = batch_from_records(records)
    assert len(batch) == 3
    assert list(batch.data["t1"] - batch.data["t0"]) == [0.5] * 3
    assert list(batch.data["out"]) == [False, False, True]
    assert batch.shapes[0] is batch.shapes[2]  # one tuple per distinct shape
    assert list(batch.data["mem"]) == [99] * 3 and list(batch.data["membytes"]) == [1600] * 3
    sub = batch.take(batch.data["out"])
    assert sub.keys == [("x", 2)]
    assert len(batch_from_records([])) == 0


def test_views_record_the_memory_they_keep(engine):
    """A slice of a chunk keeps the whole chunk alive: its record says so."""
    import dask
    import dask.array as da

    from dask.array.optimization import optimize

    x = da.random.random((100, 100), chunks=50)
    # x's chunks are results; slices of more than half a chunk stay views of them.
    keys = [x[:30].__dask_keys__(), x.__dask_keys__()]
    graph = optimize(dask.base.collections_to_expr([x[:30], x]).__dask_graph__(), keys)
    sink = Sink()
    out, collector = attribution.instrument(graph, keys, None, sink)
    dask.get(out, keys)
    data = batch_from_records(sink.records).data
    views = data[data["nbytes"] == 30 * 50 * 8]
    chunks = data[data["nbytes"] == 50 * 50 * 8]
    assert len(views) and len(chunks)
    assert set(views["membytes"]) == {50 * 50 * 8}
    assert set(chunks["membytes"]) == {50 * 50 * 8}


def test_max_overlap():
    assert max_overlap(np.array([]), np.array([])) == 0
    assert max_overlap(np.array([0.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0])) == 3
    assert max_overlap(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == 1


def test_measured_task_copies_are_plain():
    """Task.copy()/substitute() of a measured task yield a task that runs unmeasured."""
    from dask._task_spec import Task


    out, collector = attribution.instrument({"a": Task("a", sum, [1, 2])}, ["a"],
                                           None, Sink())
    node = out["a"]
    assert type(node) is tasks.MeasuredTask
    assert node.copy()() == 3  # unmeasured copy still computes
    assert node.plain()() == 3
    peaks.untrack_peak(collector)
    del out, collector, node
    gc.collect()


def test_measured_task_equals_and_hashes_as_its_task():
    from dask._task_spec import Task


    task = Task("a", sum, [1, 2])
    out, collector = attribution.instrument({"a": task}, ["a"], None, Sink())
    node = out["a"]
    assert type(node) is tasks.MeasuredTask
    assert node == task and task == node and node == node.plain()
    assert hash(node) == hash(task)
    assert node != Task("a", sum, [1, 3])
    peaks.untrack_peak(collector)


def test_optimize_keeps_the_graph_type_and_layers(engine):
    """With profiling, ``__dask_optimize__`` gives back the layers Dask's does."""
    from dask.highlevelgraph import HighLevelGraph

    x = da.ones((300, 300), chunks=100)
    y = (x + 1).T
    with dask.config.set({"optimization.fuse.active": False}):
        plain = y.__dask_optimize__(y.__dask_graph__(), y.__dask_keys__())
        engine.profile_array(y)
        measured = y.__dask_optimize__(y.__dask_graph__(), y.__dask_keys__())
    assert isinstance(plain, HighLevelGraph) and isinstance(measured, HighLevelGraph)
    assert set(measured.layers) == set(plain.layers)
    assert measured.dependencies == plain.dependencies
    for name, layer in plain.layers.items():
        assert dict(measured.layers[name]) == dict(layer)
    kinds = {type(v).__name__ for v in measured.to_dict().values()}
    assert "MeasuredTask" in kinds
    # the measured graph still computes the same result
    np.testing.assert_array_equal(
        dask.get(measured.to_dict(), y.__dask_keys__()[0][0]),
        dask.get(plain.to_dict(), y.__dask_keys__()[0][0]),
    )


# -- work after the result is handed back -------------------------------------------


@pytest.fixture
def slow_fold(monkeypatch):
    """Folding waits until ``release`` is set; ``events`` says what happened when."""
    import threading

    from dask.array._adaptive_chunking import recorder

    real, events, release = recorder.fold, [], threading.Event()

    def held(*args, **kwargs):
        release.wait(5)
        events.append("folded")
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder, "fold", held)
    return events, release


def test_a_compute_returns_before_its_records_are_folded(engine, slow_fold):
    events, release = slow_fold
    x = da.ones((100, 100), chunks=50)
    pid = engine.profile_array(x)
    assert x.sum().compute() == 10_000
    events.append("returned")
    release.set()
    profile = engine.get_profile(pid)  # waits for the fold
    assert events == ["returned", "folded"]
    assert profile["status"] == "complete"
    assert profile["profiler_stats"]["computes"] == 1
    assert len(engine.load_history()) == 1  # stored too


def test_every_read_sees_the_computes_that_returned(engine, slow_fold):
    events, release = slow_fold
    with dask.config.set({"array.adaptive-chunking.enabled": True}):
        da.ones(100, chunks=10).sum().compute()
    events.append("returned")
    release.set()
    assert engine.profiler.get_stats()["computes"] == 1
    assert events == ["returned", "folded"]


def test_a_failed_compute_is_folded_before_its_error_is_raised(engine, slow_fold):
    events, release = slow_fold
    release.set()

    def boom(block):
        raise ZeroDivisionError("bad block")

    x = da.ones(100, chunks=10)
    y = x.map_blocks(boom, dtype=float)
    pid = engine.profile_array(y)
    with pytest.raises(ZeroDivisionError):
        y.compute()
    assert events == ["folded"]
    assert engine.get_profile(pid)["status"] == "failed"


def _fragmented_heap() -> list:
    """Live 64 KB blocks with 128 MB of freed ones between them: the heap cannot
    shrink, so the process keeps the freed memory resident."""
    blocks = [np.ones(8000) for _ in range(4000)]
    del blocks[::2]
    return blocks


def test_live_memory_leaves_out_what_the_allocator_keeps_free():
    if memory._mallinfo2 is None:
        pytest.skip("needs glibc's mallinfo2")
    blocks = _fragmented_heap()
    rss = memory.process_rss()
    assert memory.live_rss(rss) <= rss - 100 * 2**20
    assert memory.live_rss(rss) >= min(rss, memory._IMPORTED_RSS)
    # Free pages handed back to the system still count as free: the floor holds.
    assert memory.live_rss(rss, free=rss) == min(rss, memory._IMPORTED_RSS)
    del blocks


def test_a_slow_reading_of_the_free_heap_is_reused_for_a_while(monkeypatch):
    import time

    calls = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.002)  # reused for at least 0.002 / FREE_HEAP_SHARE = 0.2 s
        return 5

    monkeypatch.setattr(memory, "_malloc_free_bytes", slow)
    monkeypatch.setattr(memory, "_free_heap", [-np.inf, 0, 0])
    rss = 2**30
    assert memory.free_heap_bytes(rss) == 5
    assert memory.free_heap_bytes(rss + 2**20) == 5 and len(calls) == 1  # reused
    assert memory.free_heap_bytes(rss + 2**28) == 5 and len(calls) == 2  # grew: read
    memory._free_heap[0] = time.perf_counter() - 1  # the wait is over
    monkeypatch.setattr(memory, "_malloc_free_bytes", lambda: 7)
    assert memory.free_heap_bytes(rss) == 7


def test_a_computes_baseline_leaves_out_the_heap_it_can_reuse(engine):
    # After a compute, the chunks it freed stay resident in the heap; the next
    # compute reuses them. Counted in its baseline, they were counted twice: once
    # held, and again as the chunks that reuse them (a qr measured at 682 MiB was
    # predicted 1,066 MiB for its own chunks).
    if memory._mallinfo2 is None:
        pytest.skip("needs glibc's mallinfo2")
    blocks = _fragmented_heap()
    memory._free_heap[0] = -np.inf  # read at the compute's start, not reused
    x = da.ones((400, 400), chunks=100)
    pid = engine.profile_array(x)
    (x + 1).sum().compute()
    raw = engine.get_profile(pid)["last_compute"]["baseline_memory_mb"] * 2**20
    (observation,) = engine._profiles.get(pid).aggregate.observations()
    assert observation.baseline_bytes <= raw - 100 * 2**20
    assert observation.peak_bytes >= raw  # the peak is still the process's
    del blocks


def test_removing_a_profile_at_once_still_stores_its_compute(engine, slow_fold):
    _, release = slow_fold
    x = da.ones((100, 100), chunks=50)
    pid = engine.profile_array(x)
    x.sum().compute()
    release.set()
    engine.remove_profile(pid)
    assert len(engine.load_history()) == 1


def test_clearing_the_engine_profiler_clears_the_compute_that_returned(engine, slow_fold):
    _, release = slow_fold
    with dask.config.set({"array.adaptive-chunking.enabled": True}):
        da.ones(100, chunks=10).sum().compute()
    release.set()
    engine.profiler.clear()
    assert engine.profiler.get_stats()["computes"] == 0


def test_a_compute_is_stored_with_the_threads_it_ran_with(engine, slow_fold):
    import json

    _, release = slow_fold
    x = da.ones((400, 400), chunks=100)
    engine.profile_array(x)
    with dask.config.set(num_workers=1):
        (x + 1).sum().compute(scheduler="threads")
    release.set()
    (row,) = engine.load_history()
    assert json.loads(row["fingerprint"])["threads"] == 1


def _graph_of(collections, method="compute"):
    """The optimized graph and keys ``dask.compute``/``persist`` hand the scheduler."""
    from dask.array.optimization import optimize

    seen = []

    def capture(dsk, keys, **kwargs):
        out = optimize(dsk, keys, **kwargs)
        seen.append((out, keys))
        return out

    with dask.config.set({"array_optimize": capture, "scheduler": "sync"}):
        getattr(dask, method)(*collections)
    return seen[-1]


@pytest.mark.parametrize("case", ["delayed-finalize", "alias-read-and-requested",
                                  "alias-requested-last", "transpose", "two-arrays"])
def test_tasks_read_off_the_graph_as_the_walk_finds_them(case):
    """The one-pass reading of a culled graph gives what the walk from the keys gives."""
    from dask.core import flatten

    x = da.random.random((40, 40), chunks=10)
    a = x[:20]
    collections, method = {
        # A delayed of the array inside the graph: its finalize task is read by others.
        "delayed-finalize": ([x.map_blocks(lambda b, s: b + s, dask.delayed(np.sum)(x),
                                           dtype=float)], "compute"),
        "alias-read-and-requested": ([a, a + 1], "persist"),
        "alias-requested-last": ([a + 1, a], "persist"),
        "transpose": ([(x + x.T).mean(axis=0)], "compute"),
        "two-arrays": ([x.sum(), (x * 2).mean()], "compute"),
    }[case]
    dsk, keys = _graph_of(collections, method)
    flat, tasks, aliases, outputs = attribution.measured_tasks(dsk, keys)
    walked = attribution._walked(flat, list(flatten(keys)))
    assert (set(tasks), aliases, outputs) == (set(walked[1]), walked[2], walked[3])
    assert not any(attribution._is_finalize(k) for k in tasks)
    assert all(k not in aliases for k in outputs)  # an alias passes its target on


def _reduction_outputs():
    from dask.array.reductions import mean_chunk, moment_chunk

    x = np.random.default_rng(0).random((50, 40))
    return [
        mean_chunk(x, axis=(0,), keepdims=True),  # a dict with a broadcast count
        moment_chunk(x, axis=(1,), keepdims=True),
        {"s": x.T}, {str(i): x[i] for i in range(10)}, {}, {"a": x, 1: x},  # a non-str key
        (x, x[:3]), [x], (), tuple([x] * 11), [x, 3], (x, [x]), {"a": [x]},
        np.broadcast_to(1.0, (5, 5)), 7, "text",
        # broadcast along one axis, and empty along a broadcast axis
        (np.broadcast_to(x[:1], (50, 40)), np.broadcast_to(np.ones((1, 0)), (3, 0))),
        [np.broadcast_to(np.ones((0, 1)), (0, 4)), np.broadcast_to(x[:, :1], (50, 3))],
    ]


@pytest.mark.parametrize("result", _reduction_outputs(), ids=lambda r: type(r).__name__)
def test_output_bytes_is_dask_sizeof(result):
    from dask.sizeof import sizeof

    assert tasks.output_bytes(result) == sizeof(result)

