"""Hypothesis fuzz of ``ChunkSizeRecommender.recommend`` and ``recommend_chunk_size``:
every argument, bad ones rejected by name, good ones giving a valid chunking.

The harness these properties share (``fuzz``, ``call``, ``Outcome`` and its checks,
the value strategies, time limits, the per-module example report) is
``adaptive_chunking_fuzz_harness``.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dask.array.adaptive_chunking import ChunkSizeRecommender

from adaptive_chunking_fuzz_harness import (
    PILOT,
    MiB,
    _report_examples,  # noqa: F401 - the autouse fixture of this module
    call,
    check_recommendation,
    expect_rejection,
    finite_real,
    fuzz,
    is_int,
    only_budget_warnings,
    tried,
)


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
