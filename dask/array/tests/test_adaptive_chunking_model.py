"""The recommendation model (pure functions) and the graph analysis, unit by unit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dask.array as da
from dask.array._adaptive_chunking import graph, model
from dask.array._adaptive_chunking.profiles import water_level
from dask.array._adaptive_chunking.saturation import worker_saturation
from dask.array._adaptive_chunking.shapes import chunk_shape
from dask.array._adaptive_chunking.summary import replay_memory, task_terms
from dask.array._adaptive_chunking.model import (
    FRESH_PAGES_BYTES,
    GRAPH_BYTES_PER_TASK,
    Observation,
    WorkloadModel,
    choose_chunk_bytes,
    fit_workload,
    predict,
)

MiB = 2**20
TOKEN = "1af781eecd184cd7f3cbf2e434aa3444"  # layer names end in a token


def simple_model(**kw) -> WorkloadModel:
    base = dict(
        tasks_per_chunk=1.0, seconds_per_byte=1e-9, overhead_seconds=1e-4,
        amplification=2.0, results_fraction=0.0, baseline_bytes=100 * MiB,
        concurrency=2, observations=1,
    )
    base.update(kw)
    return WorkloadModel(**base)


def obs(**kw) -> Observation:
    base = dict(
        array_bytes=8e6, chunk_bytes=8e4, n_tasks=100, task_seconds=0.05,
        wall_seconds=0.05, peak_bytes=0, baseline_bytes=1e8, results_bytes=0,
        concurrency=2,
    )
    base.update(kw)
    return Observation(**base)


# -- task terms ---------------------------------------------------------------


def test_task_terms_exponents_follow_block_indices():
    keys = (
        [("random-" + TOKEN[:-1] + "a", i, j) for i in range(4) for j in range(4)]
        + [("mean_chunk-" + TOKEN[:-1] + "b", 0, j) for j in range(4)]  # reduced along axis 0
        + [("matmul-" + TOKEN[:-1] + "c", i, k, j)
           for i in range(4) for k in range(4) for j in range(4)]
        + [("sum-aggregate-" + TOKEN[:-1] + "d",)]
    )
    terms = {t[0]: (t[1], t[2]) for t in task_terms(keys, 2)}
    assert terms == {
        "random": (16, 1.0),
        "mean_chunk": (4, 0.5),
        "matmul": (64, 1.5),
        "sum-aggregate": (1, 0.0),
    }


def test_task_terms_merge_layers_and_sum_seconds():
    keys = [("sum-partial-" + TOKEN[:-1] + "a", i, j) for i in range(2) for j in range(2)]
    keys += [("sum-partial-" + TOKEN[:-1] + "b", i, j) for i in range(3) for j in range(3)]
    (term,) = task_terms(keys, 2, seconds=[0.5] * len(keys))
    assert term == ("sum-partial", 13, 1.0, 6.5)


def test_task_terms_fused_op_names():
    keys = [("chunk_sum-" + TOKEN[:-1] + "a", i, k, j)
            for i in range(2) for k in range(2) for j in range(2)]
    (term,) = task_terms(keys, 2, ops={keys[0]: "matmul"})
    assert term[0] == "matmul"


@pytest.mark.parametrize(
    "op, e, expected",
    [("matmul", 1.5, 1.5), ("tensordot", 1.5, 1.5), ("chunk_sum", 1.5, 1.0),
     ("add", 1.0, 1.0), ("mean_agg", 0.5, 0.5), ("sum-aggregate", 0.0, 0.0)],
)
def test_work_exponent(op, e, expected):
    assert model.work_exponent(op, e) == expected



def _terms_by_loops(keys, ndim, seconds=None, ops=None):
    """``task_terms`` key by key, as it was written first: what the rewrite must match."""
    from dask.utils import key_split

    ops = ops or {}
    layers: dict = {}
    for pos, key in enumerate(keys):
        name, index = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        entry = layers.get(name)
        if entry is None:
            entry = layers[name] = [0, 0.0, [], ops.get(key)]
        entry[0] += 1
        if seconds is not None:
            entry[1] += float(seconds[pos])
        seen = entry[2]
        seen.extend(set() for _ in range(len(index) - len(seen)))
        for found, i in zip(seen, index):
            found.add(i)
    merged: dict = {}
    for name, (count, secs, seen, op) in layers.items():
        e = sum(len(found) > 1 for found in seen) / max(1, ndim)
        entry = merged.setdefault((op or key_split(name), e), [0, 0.0])
        entry[0] += count
        entry[1] += secs
    return tuple((op, count, e, secs) for (op, e), (count, secs) in merged.items())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_task_terms_match_the_loops_they_replaced(data):
    names = [f"add-{TOKEN}", f"sum-{TOKEN}", "matmul-1", "x"]
    index = st.lists(st.integers(0, 2), max_size=3).map(tuple)
    keys = data.draw(st.lists(st.one_of(
        st.tuples(st.sampled_from(names), index).map(lambda p: (p[0],) + p[1]),
        st.sampled_from(names)), min_size=1, max_size=30))
    seconds = [float(data.draw(st.integers(0, 5))) for _ in keys]
    ops = {k: "matmul" for k in keys if data.draw(st.booleans())}
    ndim = data.draw(st.integers(0, 3))
    got = task_terms(keys, ndim, seconds, ops)
    want = _terms_by_loops(keys, ndim, seconds, ops)
    assert [t[:3] for t in got] == [t[:3] for t in want]
    assert [t[3] for t in got] == pytest.approx([t[3] for t in want])
    asked = []  # a function of a key gives the same, asked once a layer
    assert task_terms(keys, ndim, seconds, lambda k: asked.append(k) or ops.get(k)) == got
    layers = {k[0] if isinstance(k, tuple) and k else k for k in keys}
    assert len(asked) == len(layers)

# -- memory replay ------------------------------------------------------------


def test_replay_chain_holds_one_output_at_a_time():
    keys = ["a", "b", "c"]
    deps = {"b": ["a"], "c": ["b"]}
    held, largest = replay_memory(keys, [0, 1, 2], [1, 2, 3], [10, 10, 1],
                                  [False, False, True], deps)
    # a lives until b ends, b until c ends: one at a time (a is released as b ends).
    assert (held, largest) == (10.0, 10.0)


def test_replay_skip_and_outputs():
    keys = ["a", "b", "r"]
    deps = {"r": ["a", "b"]}
    args = (keys, [0, 0, 2], [1, 1, 3], [100, 50, 1], [False, False, True], deps)
    assert replay_memory(*args)[0] == 150.0
    assert replay_memory(*args, {"a"})[0] == 50.0


def test_replay_views_count_their_base_once():
    # A chunk x and three slices of it read one after another; w arrives at the end.
    keys = ["x", "s1", "s2", "s3", "u1", "u2", "u3", "w"]
    deps = {"s1": ["x"], "s2": ["x"], "s3": ["x"], "u1": ["s1"], "u2": ["s2"], "u3": ["s3"]}
    t0 = [0, 1, 1, 1, 2, 3, 4, 3]
    t1 = [1, 2, 2, 2, 3, 4, 5, 4]
    nbytes = [800, 10, 10, 10, 0, 0, 0, 500]
    out = [False, False, False, False, True, True, True, True]
    without = replay_memory(keys, t0, t1, nbytes, out, deps)[0]
    with_mem = replay_memory(keys, t0, t1, nbytes, out, deps,
                             mem=[1, 1, 1, 1, 2, 3, 4, 5],
                             mem_bytes=[800, 800, 800, 800, 0, 0, 0, 500])[0]
    assert without == 800.0  # x is released once the slices are made
    assert with_mem == 1300.0  # the slices keep x alive until u3 ends, beside w


def test_replay_reused_ids_do_not_merge():
    keys = ["a", "b", "c", "d"]
    deps = {"b": ["a"], "d": ["c"]}
    held = replay_memory(keys, [0, 1, 5, 6], [1, 2, 6, 7], [100, 0, 100, 0],
                         [False, True, False, True], deps,
                         mem=[9, 1, 9, 2], mem_bytes=[100, 0, 100, 0])[0]
    assert held == 100.0


def test_replay_empty():
    assert replay_memory([], [], [], [], [], {}) == (0.0, 0.0)


def _replay_by_loops(keys, t0, t1, nbytes, is_output, dependencies, skip, mem, mem_bytes):
    """The replay as plain loops, span by span: what the NumPy version must match."""
    n = len(keys)
    index = {k: i for i, k in enumerate(keys)}
    end = [float(v) for v in t1]
    stop = max(end)
    for i, key in enumerate(keys):
        for d in dependencies.get(key, ()):
            j = index.get(d)
            if j is not None and t1[i] > end[j]:
                end[j] = float(t1[i])
        if is_output[i]:
            end[i] = stop
    produced = {mem[i] for i in range(n) if mem[i] and mem_bytes[i] == nbytes[i]}
    spans: dict = {}
    for i in range(n):
        if mem[i] in produced:
            ident, size = mem[i], max(float(nbytes[i]), float(mem_bytes[i]))
        else:
            ident, size = ("own", i), float(nbytes[i])
        if end[i] > t1[i] and size and keys[i] not in skip:
            spans.setdefault(ident, []).append((float(t1[i]), end[i], size))
    events = []
    for group in spans.values():
        group.sort()
        start, stop_, size = group[0]
        for a, b, sz in group[1:]:
            if a <= stop_:
                stop_, size = max(stop_, b), max(size, sz)
            else:
                events += [(start, size), (stop_, -size)]
                start, stop_, size = a, b, sz
        events += [(start, size), (stop_, -size)]
    events.sort(key=lambda e: (e[0], e[1]))
    held = peak = 0.0
    for _, delta in events:
        held += delta
        peak = max(peak, held)
    return peak, float(max(nbytes))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_replay_matches_the_loops_it_replaced(data):
    n = data.draw(st.integers(1, 12))
    keys = [f"k{i}" for i in range(n)]
    t0 = [float(data.draw(st.integers(0, 8))) for _ in range(n)]
    t1 = [a + data.draw(st.integers(0, 4)) for a in t0]
    nbytes = [float(data.draw(st.sampled_from([0, 1, 5, 10, 100]))) for _ in range(n)]
    mem = [data.draw(st.integers(-2, 3)) for _ in range(n)]  # 0: unknown
    mem_bytes = [data.draw(st.sampled_from([b, 0.0, 100.0])) for b in nbytes]
    out = [data.draw(st.booleans()) for _ in range(n)]
    deps = {k: data.draw(st.lists(st.sampled_from(keys + ["elsewhere"]), max_size=3))
            for k in keys}
    skip = set(data.draw(st.lists(st.sampled_from(keys), max_size=2)))
    got = replay_memory(keys, t0, t1, nbytes, out, deps, skip, mem=mem, mem_bytes=mem_bytes)
    assert got == pytest.approx(
        _replay_by_loops(keys, t0, t1, nbytes, out, deps, skip, mem, mem_bytes))


# -- fitting ------------------------------------------------------------------


def test_fit_none_without_data():
    assert fit_workload([]) is None
    assert fit_workload([obs(n_tasks=0)]) is None


@pytest.mark.parametrize("fixed, per_byte", [(5e-4, 1e-9), (1e-5, 3e-9), (0.0, 2e-9)])
def test_fit_separates_fixed_and_per_byte_cost(fixed, per_byte):
    observations = []
    for chunk, tasks in [(8e4, 100), (5e5, 16)]:
        secs = fixed * tasks + per_byte * 8e6
        observations.append(obs(chunk_bytes=chunk, n_tasks=tasks, task_seconds=secs))
    m = fit_workload(observations)
    assert m.fixed_seconds == pytest.approx(fixed, abs=1e-9)
    assert m.seconds_per_byte == pytest.approx(per_byte, rel=1e-6)


def test_fit_one_size_uses_the_prior_split():
    m = fit_workload([obs(task_seconds=0.05)])
    assert m.seconds_per_byte == model.PRIOR_SECONDS_PER_BYTE
    expected = (0.05 - model.PRIOR_SECONDS_PER_BYTE * 8e6) / 100
    assert m.fixed_seconds == pytest.approx(expected)


def test_fit_terms_per_operation_from_two_sizes():
    def terms(n_side, chunk):
        n = n_side**2
        return (("random", n, 1.0, n * (4e-4 + 1e-9 * chunk)),
                ("matmul", n_side**3, 1.5, n_side**3 * 1e-11 * chunk**1.3))

    o1 = obs(chunk_bytes=8e4, blocks=100, terms=terms(10, 8e4))
    o2 = obs(chunk_bytes=5e5, blocks=16, terms=terms(4, 5e5))
    m = fit_workload([o1, o2], blas_threads=2)
    (k1, e1, a1, w1, g1), (k2, e2, a2, w2, g2) = m.task_terms
    assert (k1, e1, g1) == (1.0, 1.0, 1.0) and e2 == 1.5
    assert k2 == pytest.approx(1.0)
    assert a1 == pytest.approx(4e-4) and w1 == pytest.approx(1e-9)
    # A block product's time is fitted as a power of its size (BLAS is faster on
    # larger blocks), between streaming (1) and its work (1.5).
    assert (a2, g2) == (0.0, pytest.approx(1.3)) and w2 == pytest.approx(1e-11)
    assert m.held_exponent == 0.0 and m.blas_threads == 2
    # A matmul's work is the same in any chunking; its tasks are not.
    assert m.n_tasks(400) > 8 * m.n_tasks(100) / 2


def test_fit_measured_amplification_only_when_visible():
    invisible = fit_workload([obs(peak_bytes=1e8 + 5e6)])
    assert invisible.amplification == model.DEFAULT_AMPLIFICATION
    visible = fit_workload([obs(array_bytes=8e8, chunk_bytes=8e6, peak_bytes=1e8 + 8e7,
                                n_tasks=100)])
    working = 8e7 - 100 * GRAPH_BYTES_PER_TASK
    assert visible.amplification == pytest.approx(working / (2 * 8e6))


def test_fit_held_exponent_from_two_grids():
    fine = obs(blocks=100, held_bytes=4e5)  # 5% of the array waits
    coarse = obs(chunk_bytes=5e5, blocks=16, n_tasks=16, held_bytes=1e6)  # 12.5%
    m = fit_workload([fine, coarse])
    # -ln(1 - h) grows like n**e: 0.0513 at 100 chunks, 0.1335 at 16.
    expected = math.log(math.log(0.875) / math.log(0.95)) / math.log(16 / 100)
    assert m.held_exponent == pytest.approx(expected)
    assert model.held_share(m, 100) == pytest.approx(0.05 * (1 - 1 / 100))
    assert model.held_share(m, 16) == pytest.approx(0.125 * (1 - 1 / 16))
    # A finer grid of the full array holds a smaller share than the pilot's.
    share = model.held_share(m, 400)
    assert share == pytest.approx((1 - 0.95 ** (4**expected)) * (1 - 1 / 400))
    p400 = predict(m, 8e8, 2e6)
    working = 400 * GRAPH_BYTES_PER_TASK + 2 * 2 * 2e6
    assert p400.peak_bytes == pytest.approx(m.baseline_bytes + working + share * 8e8)


def test_held_share_beyond_the_whole_array():
    # A matmul's partial products add up to more than the array: a plain power law.
    a = obs(blocks=100, held_bytes=1.6e7)
    b = obs(chunk_bytes=5e5, blocks=16, n_tasks=16, held_bytes=1.2e7)
    m = fit_workload([a, b])
    expected = math.log(1.5 / 2.0) / math.log(16 / 100)
    assert m.held_exponent == pytest.approx(expected)
    assert model.held_share(m, 1) == 0.0
    assert model.held_share(m, 4) <= m.held_max * 0.75


def test_fit_held_from_the_finest_observation():
    fine = obs(blocks=100, held_bytes=4e5, held_aligned_bytes=1e5)
    coarse = obs(chunk_bytes=2e6, blocks=4, held_bytes=4e6)
    m = fit_workload([coarse, fine])
    assert m.held_fraction == pytest.approx(0.05)
    assert m.held_aligned_fraction == pytest.approx(0.0125)
    assert m.held_blocks == 100


# -- prediction ---------------------------------------------------------------


def test_predict_exact():
    m = simple_model(fixed_seconds=1e-3)
    p = predict(m, 1e9, 1e8)
    # 10 chunks, 2 at a time: 5 waves of (0.1 s per chunk + 1 ms fixed); 10 x 0.1 ms;
    # and threads finishing out of step: half a chunk, one thread of two idle.
    assert p.n_chunks == 10 and p.n_tasks == 10
    tail = model.TAIL_CHUNKS * (0.1 + 1e-3) * (1 - 1 / 2)
    assert p.seconds == pytest.approx(5 * (0.1 + 1e-3) + 10 * 1e-4 + tail)
    assert p.peak_bytes == 100 * MiB + 10 * GRAPH_BYTES_PER_TASK + 2 * 2.0 * 1e8


def test_predict_partial_wave_and_fresh_pages():
    m = simple_model(overhead_seconds=0.0, fault_seconds_per_byte=1e-10)
    three = predict(m, 3e8, 1e8)  # 3 chunks on 2 threads: 2 waves
    per_chunk = 0.1 + 1e-10 * 2 * 1e8  # compute and fresh pages
    tail = model.TAIL_CHUNKS * per_chunk / 2
    assert three.seconds == pytest.approx(2 * per_chunk + tail)
    below = predict(m, 3e8, FRESH_PAGES_BYTES - 1)  # no fresh-page cost
    per_chunk = 1e-9 * (FRESH_PAGES_BYTES - 1)
    waves = math.ceil(below.n_chunks / 2)
    tail = model.TAIL_CHUNKS * per_chunk / 2
    assert below.seconds == pytest.approx(waves * per_chunk + tail)


def test_predict_contractions_keep_blas_threads_busy():
    terms = ((1.0, 1.5, 0.0, 1e-12, 1.5),)
    serial = simple_model(task_terms=terms, overhead_seconds=0.0)
    threaded = simple_model(task_terms=terms, overhead_seconds=0.0, blas_threads=2)
    whole = 1e8
    work = 1e-12 * whole**1.5
    assert predict(serial, whole, whole).seconds == pytest.approx(work)
    # One product on two BLAS threads, even under a one-thread scheduler:
    assert predict(threaded, whole, whole).seconds == pytest.approx(work / 2)
    assert predict(threaded, whole, whole, concurrency=1).seconds == pytest.approx(work / 2)
    # Four chunks: 4**1.5 = 8 block products, two at a time, each on two BLAS
    # threads: the cores are oversubscribed.
    products = 8 * 1e-12 * (whole / 4) ** 1.5
    crowded = simple_model(task_terms=terms, overhead_seconds=0.0, blas_threads=2,
                           blas_penalty=2.5)
    assert predict(crowded, whole, whole / 4).seconds == pytest.approx(products * 2.5 / 2)
    assert predict(threaded, whole, whole / 4).seconds == pytest.approx(products / 2)


def test_predict_held_memory_scaling():
    m = simple_model(held_fraction=0.5, held_aligned_fraction=0.1, held_blocks=100)
    p, aligned = predict(m, 1e9, 1e7), predict(m, 1e9, 1e7, aligned=True)
    assert p.peak_bytes - aligned.peak_bytes == pytest.approx(0.4 * 1e9 * (1 - 1 / 100))
    # With a single chunk nothing waits for another chunk's tasks.
    whole = predict(m, 1e9, 1e9)
    assert whole.peak_bytes == m.baseline_bytes + GRAPH_BYTES_PER_TASK + 2.0 * 1e9
    grows = simple_model(held_fraction=0.5, held_blocks=100, held_exponent=0.5)
    assert predict(grows, 1e9, 1e9 / 400).peak_bytes > predict(m, 1e9, 1e9 / 400).peak_bytes
    assert predict(grows, 1e9, 1e9 / 25).peak_bytes < predict(m, 1e9, 1e9 / 25).peak_bytes


def test_predict_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk_bytes must be positive"):
        predict(simple_model(), 1e9, 0)


@settings(max_examples=60, deadline=None)
@given(
    array=st.floats(1e6, 1e12),
    small=st.floats(1e3, 1e9),
    factor=st.floats(1.01, 100),
)
def test_predict_monotone_in_chunk_size(array, small, factor):
    assume(array >= 2 * small * factor)  # both with at least one chunk per thread
    m = simple_model()
    a, b = predict(m, array, small), predict(m, array, small * factor)
    assert b.n_tasks <= a.n_tasks
    assert b.peak_bytes >= a.peak_bytes - GRAPH_BYTES_PER_TASK * a.n_tasks


# -- choosing -----------------------------------------------------------------


BOUNDS = dict(min_chunk_bytes=MiB, max_chunk_bytes=1e12, overhead_target=0.1)


def test_choose_memory_binding():
    m = simple_model(overhead_seconds=3e-4, fixed_seconds=5e-4)
    roomy = choose_chunk_bytes(m, 3.2e9, budget_bytes=1e12, **BOUNDS)
    tight = choose_chunk_bytes(m, 3.2e9, budget_bytes=100 * MiB + 20 * MiB, **BOUNDS)
    assert tight.fits and tight.binding == "memory"
    assert tight.prediction.peak_bytes <= tight.budget_bytes
    assert tight.chunk_bytes < roomy.chunk_bytes


@pytest.mark.parametrize("overhead", [3e-4, 3e-2])
def test_choose_nothing_fits_takes_the_fastest_near_the_smallest_peak(overhead):
    # With a large per-task overhead the smallest chunks are far slower than ones
    # predicted to peak a few percent higher: those are taken, not the smallest.
    m = simple_model(overhead_seconds=overhead)
    c = choose_chunk_bytes(m, 3.2e9, budget_bytes=50 * MiB, **BOUNDS)
    preds = [predict(m, 3.2e9, s) for s in model._candidates(MiB, 3.2e9)]
    least = min(p.peak_bytes for p in preds)
    level = [p for p in preds if p.peak_bytes <= least * (1 + model.PEAK_TOLERANCE)]
    assert not c.fits and c.binding == "memory"
    assert c.least_peak_bytes == least
    assert c.prediction.peak_bytes <= least * (1 + model.PEAK_TOLERANCE)
    assert c.prediction.seconds == min(p.seconds for p in level)
    if overhead > 1e-2:
        assert c.prediction.peak_bytes > least
        assert c.prediction.seconds < 0.8 * min(p.seconds for p in preds
                                                 if p.peak_bytes == least)


def test_choose_whole_array_and_bounds():
    m = simple_model(overhead_seconds=1e-2)
    assert choose_chunk_bytes(m, 4e6, budget_bytes=1e12, **BOUNDS).binding == "array"
    capped = choose_chunk_bytes(m, 3.2e9, budget_bytes=1e12, min_chunk_bytes=MiB,
                                max_chunk_bytes=4 * MiB, overhead_target=0.1)
    assert capped.binding == "max_chunk_bytes" and capped.chunk_bytes == 4 * MiB


def test_choose_prefers_the_smallest_equally_fast():
    m = simple_model(overhead_seconds=1e-7)  # overhead negligible: all sizes alike
    c = choose_chunk_bytes(m, 1e9, budget_bytes=1e12, min_chunk_bytes=MiB,
                           max_chunk_bytes=1e9 / 8, overhead_target=0.5)
    assert c.chunk_bytes == MiB


@settings(max_examples=80, deadline=None)
@given(
    array=st.floats(1e7, 1e12),
    budget=st.floats(1.2e8, 1e11),
    overhead=st.floats(1e-6, 1e-2),
    amp=st.floats(1, 32),
)
def test_choose_fits_whenever_something_does(array, budget, overhead, amp):
    m = simple_model(overhead_seconds=overhead, amplification=amp)
    c = choose_chunk_bytes(m, array, budget_bytes=budget, **BOUNDS)
    grid = model._candidates(min(MiB, array), array)
    if any(predict(m, array, s).peak_bytes <= budget for s in grid):
        assert c.fits and c.prediction.peak_bytes <= budget
    else:
        assert not c.fits
    assert min(MiB, array) * 0.999 <= c.chunk_bytes <= array


# -- shapes -------------------------------------------------------------------


def test_chunk_shape_storage_multiples():
    assert chunk_shape((10000, 10000), 8, 32 * MiB, multiple_of=(256, 300)) == (2048, 2100)
    # A storage chunk larger than the target is still a whole storage chunk.
    assert chunk_shape((1000, 1000), 8, 1000, multiple_of=(100, 100)) == (100, 100)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 5000), st.integers(1, 5000)),
    unit=st.tuples(st.integers(1, 700), st.integers(1, 700)),
    target=st.floats(1e3, 1e9),
)
def test_chunk_shape_storage_multiples_always(shape, unit, target):
    chunks = chunk_shape(shape, 8, target, multiple_of=unit)
    for n, c, u in zip(shape, chunks, unit):
        assert 1 <= c <= n
        assert c == n or c % u == 0


# -- the graph ----------------------------------------------------------------


def test_downstream_rechunk_fft_transpose():
    x = da.ones((10000, 10000), chunks=1000)
    rows = graph.downstream(x.rechunk({0: "auto", 1: -1}).sum().dask, x.name, x.shape)
    assert rows.whole_dims == {1} and not rows.square
    fft = graph.downstream(da.fft.fft(x.rechunk({0: 1000, 1: -1})).dask, x.name, x.shape)
    assert fft.whole_dims == {1} and "fft" in fft.ops
    assert graph.downstream((x + x.T).dask, x.name, x.shape).square
    plain = graph.downstream((x + 1).sum().dask, x.name, x.shape)
    assert plain == graph.Downstream(frozenset(), False, ("add", "sum"))


def test_downstream_ignores_other_shapes():
    x = da.ones((10000, 10000), chunks=1000)
    y = x.sum(axis=0).rechunk(-1)
    assert graph.downstream(y.dask, x.name, x.shape).whole_dims == frozenset()


class Stored(np.ndarray):
    """An in-memory stand-in for a chunked store (a Zarr array, an HDF5 dataset)."""

    chunks = (64, 128)


def test_storage_chunks():
    data = np.zeros((1000, 1000)).view(Stored)
    assert graph.storage_chunks(da.from_array(data, chunks=(200, 1000))) == (64, 128)
    assert graph.storage_chunks(da.from_array(np.zeros((10, 10)), chunks=5)) is None
    assert graph.storage_chunks(da.ones((10, 10))) is None


# -- review findings ----------------------------------------------------------


def test_replay_views_of_data_the_graph_held_count_at_their_size():
    # Two slices of a source array no task produced (da.from_array of NumPy data).
    keys = ["s1", "s2", "r"]
    deps = {"r": ["s1", "s2"]}
    held = replay_memory(keys, [0, 0, 1], [1, 1, 2], [10, 10, 1], [False, False, True], deps,
                         mem=[7, 7, 9], mem_bytes=[10_000, 10_000, 1])[0]
    assert held == 20.0


def test_replay_unknown_memory_is_its_own():
    keys = ["a", "b", "r"]
    deps = {"r": ["a", "b"]}
    held = replay_memory(keys, [0, 0, 1], [1, 1, 2], [10, 20, 1], [False, False, True], deps,
                         mem=[0, 0, 0], mem_bytes=[10, 20, 1])[0]
    assert held == 30.0


def test_choose_rejects_non_positive_bounds():
    with pytest.raises(ValueError, match="min_chunk_bytes"):
        choose_chunk_bytes(simple_model(), 1e9, budget_bytes=1e12, min_chunk_bytes=0,
                           max_chunk_bytes=1e9, overhead_target=0.1)


def test_model_functions_survive_degenerate_input():
    m = simple_model(held_fraction=0.3, held_blocks=100, held_exponent=-0.5, held_max=0.5)
    assert model.held_share(m, 0) == 0.0
    o = obs(chunk_bytes=0, terms=(("add", 10, 1.0, 0.1),))
    assert fit_workload([o]) is not None
    for n in (2, 10, 100, 1000):
        assert model.held_share(m, n) <= 0.5


def test_downstream_square_array_transposed_is_ambiguous():
    a = da.ones((1000, 1000), chunks=100)
    hint = graph.downstream(a.T.rechunk({0: -1}).sum().dask, a.name, a.shape)
    assert hint.whole_dims == frozenset() and hint.square
    b = da.ones((1000, 2000), chunks=100)  # not square: the shapes tell the axes apart
    assert graph.downstream(b.T.rechunk({0: -1}).sum().dask, b.name, b.shape).whole_dims == set()
    assert graph.downstream(b.rechunk({1: -1}).T.sum().dask, b.name, b.shape).whole_dims == {1}


def test_storage_chunks_only_of_the_source_itself():
    data = np.zeros((200, 100)).view(Stored)
    x = da.from_array(data, chunks=(50, 50))
    assert graph.storage_chunks(x) == (64, 128)
    assert graph.storage_chunks(x.T) is None


# -- worker saturation (root-task queuing on a distributed cluster) --------------------


def test_saturation_infinite_when_nothing_waits():
    m = simple_model(baseline_bytes=0.0)  # held_fraction 0: every output is consumed at once
    s = worker_saturation(m, 1e10, 1e7, budget_bytes=1e8, threads_per_worker=2, workers=2)
    assert math.isinf(s.value) and s.reason == "nothing-waits"
    assert s.peak_bytes == s.unqueued_peak_bytes == predict(
        m, 1e10, 1e7, 4, processes=2).peak_bytes


def test_saturation_exact_when_memory_binds():
    m = simple_model(baseline_bytes=0.0, held_fraction=0.25)
    # 100 chunks of 10 MB on 2 workers of 1 thread: 50 roots each, 49 could run ahead.
    base = predict(m, 1e9, 1e7, 2, processes=2).peak_bytes
    assert base == pytest.approx(0.25 * (1 - 1 / 100) * 1e9 / 2 + 2.0 * 1e7)
    # Each root held ahead costs its chunk and what it feeds: 1 + amplification chunks.
    s = worker_saturation(m, 1e9, 1e7, budget_bytes=base + 1e8, threads_per_worker=1,
                          workers=2)
    assert s.reason == "memory" and s.value == 4.0  # 3 roots ahead of its one thread
    assert s.peak_bytes == pytest.approx(base + 3 * 3e7)
    assert s.unqueued_peak_bytes == pytest.approx(base + 49 * 3e7)
    # No room for any chunk ahead: one root task per thread.
    tight = worker_saturation(m, 1e9, 1e7, budget_bytes=base, threads_per_worker=4,
                              workers=2)
    assert tight.value == 1.0 and tight.peak_bytes > base  # four threads' working sets
    # Room for every root output of a worker: queuing is not needed.
    roomy = worker_saturation(m, 1e9, 1e7, budget_bytes=base + 2e9, threads_per_worker=1,
                              workers=2)
    assert roomy.unqueued_peak_bytes <= base + 2e9
    assert math.isinf(roomy.value) and roomy.reason == "fits"


@settings(max_examples=200, deadline=None)
@given(
    held=st.floats(0.01, 1.0),
    chunk=st.floats(1e5, 1e9),
    budget=st.floats(1e6, 1e11),
    threads=st.integers(1, 16),
    workers=st.integers(1, 64),
)
def test_saturation_fits_and_shrinks_with_the_budget(held, chunk, budget, threads, workers):
    m = simple_model(baseline_bytes=0.0, held_fraction=held)
    s = worker_saturation(m, 1e11, chunk, budget_bytes=budget, threads_per_worker=threads,
                          workers=workers)
    assert s.value >= 1.0
    assert s.peak_bytes <= s.unqueued_peak_bytes
    floor = predict(m, 1e11, chunk, threads * workers, processes=workers).peak_bytes
    if s.reason == "memory":
        # Every root held ahead of the threads fits; one more would not.
        ahead = round((s.value - 1) * threads)
        assert s.peak_bytes <= max(budget, floor)
        per_root = chunk * (1 + m.amplification)
        assert s.peak_bytes + per_root > budget or s.peak_bytes == s.unqueued_peak_bytes
        assert ahead >= 0
    smaller = worker_saturation(m, 1e11, chunk, budget_bytes=budget / 2,
                                threads_per_worker=threads, workers=workers)
    assert smaller.value <= s.value


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=50), st.integers(0, 10**7))
@settings(max_examples=300, deadline=None)
def test_water_level_is_the_largest_cap_that_fits(demands, budget):
    level = water_level(demands, budget)
    if level is None:
        assert sum(demands) <= budget
        return
    assert sum(min(d, level) for d in demands) <= budget
    assert sum(min(d, level + 1) for d in demands) > budget
