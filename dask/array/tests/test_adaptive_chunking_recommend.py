"""Recommendations from the engine: pilots, predictions, shapes the graph asks for."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dask
import dask.array as da
from dask.array.adaptive_chunking import Recommendation

MiB = 2**20


def pilot(engine, expr, shape=(1000, 1000), sizes=((100, 100), (250, 250))):
    """Profile ``expr`` on a small random array at each chunk size; return the ids."""
    ids = []
    for chunks in sizes:
        x = da.random.random(shape, chunks=chunks)
        ids.append(engine.profile_array(x))
        expr(x).compute()
    return ids


def test_recommend_for_a_larger_array_from_a_pilot(engine):
    ids = pilot(engine, lambda x: (x + 1).sum())
    full = da.random.random((20000, 20000), chunks=(100, 100))
    rec = engine.recommend(full, ids)
    assert isinstance(rec, Recommendation)
    assert rec.fits_budget
    # A pilot cannot see 128 MiB chunks are too big; it can see 80 kB ones are tiny.
    assert MiB <= rec.chunk_bytes <= 128 * MiB
    assert all(20000 % c == 0 or 20000 % c >= c / 2 for c in rec.chunks)
    d = rec.to_dict()
    for key in ("binding_constraint", "reason", "predicted_peak_memory_mb",
                "predicted_tasks", "predicted_time_s", "array_chunk_size"):
        assert key in d
    assert d["reason"]
    assert rec.predicted_tasks < (200 * 200)
    # One pilot alone also works (the split of task time then uses a prior).
    assert engine.recommend(full, ids[0]).chunk_bytes >= MiB


def test_recommend_default_is_the_arrays_own_profile(engine):
    x = da.random.random((2000, 2000), chunks=(100, 100))
    with pytest.raises(ValueError, match="profile_array"):
        engine.recommend(x)
    pid = engine.profile_array(x)
    x.sum().compute()
    assert engine.recommend(x).chunks == engine.get_profile(pid)["recommended_chunks"]
    assert engine.recommend(x, [pid]).chunks == engine.recommend(x, pid).chunks


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((np.ones(3), None), TypeError, "dask.array.Array"),
        ((None, "nope"), KeyError, "no profile with id"),
        ((None, []), ValueError, "empty list"),
    ],
)
def test_recommend_rejects_bad_input(engine, args, exc, match):
    array, pid = args
    if array is None:
        array = da.ones((10, 10), chunks=5)
    with pytest.raises(exc, match=match):
        engine.recommend(array, pid)


def test_recommend_needs_a_computed_profile(engine):
    x = da.ones((100, 100), chunks=10)
    pid = engine.profile_array(x)
    with pytest.raises(ValueError, match="compute the profiled array first"):
        engine.recommend(x, pid)


def test_recommend_unknown_shape(engine):
    (pid,) = pilot(engine, lambda x: x.sum(), sizes=[(100, 100)])
    x = da.from_array(np.ones(10), chunks=5)
    x = x[x > 0]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        engine.recommend(x, pid)


def test_workload_says_rows_are_wanted(engine):
    """A rechunk to rows after the array: recommend rows from the start."""
    ids = pilot(engine, lambda x: x.rechunk({0: "auto", 1: -1}).sum())
    x = da.random.random((12000, 12000), chunks=(100, 100))
    rec = engine.recommend(x, ids, workload=x.rechunk({0: "auto", 1: -1}).sum())
    assert rec.chunks[1] == 12000
    assert "rechunk" in rec.reason
    # With the recommendation's byte target, Dask's own "auto" keeps those rows.
    y = da.random.random(x.shape, chunks=rec.chunks)
    with dask.config.set({"array.chunk-size": rec.array_chunk_size}):
        z = y.rechunk({0: "auto", 1: -1})
    assert z.chunks == y.chunks


def test_workload_must_use_the_array(engine):
    ids = pilot(engine, lambda x: x.sum(), sizes=[(100, 100)])
    x = da.ones((1000, 1000), chunks=100)
    with pytest.raises(ValueError, match="does not use this array"):
        engine.recommend(x, ids, workload=da.ones(5).sum())
    with pytest.raises(TypeError, match="dask collection"):
        engine.recommend(x, ids, workload=np.ones(3))


def test_transpose_downstream_gives_square_chunks(engine):
    from dask.array._adaptive_chunking.graph import Downstream

    x = da.random.random((2000, 2000), chunks=(100, 100))
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    assert "transpose" in engine.get_profile(pid)["recommendation"]["downstream_ops"]
    # A big array in rows with whole columns, to be added to its transpose:
    profiler = engine.get_profiler(pid)
    rows = ((100,) * 200, (20000,))
    transpose = Downstream(frozenset(), True, ("transpose",))
    square = engine.recommender.recommend(profiler, (20000, 20000), 8, downstream=transpose)
    assert square.chunks[0] == square.chunks[1]  # x.T pairs rows with columns
    assert "square" in square.reason
    # From rows, a move is only made when it is predicted to pay; whole rows are
    # not kept for their own sake.
    moved = engine.recommender.recommend(
        profiler, (20000, 20000), 8, current_chunks=rows, downstream=transpose,
    )
    assert moved.binding == "current" or moved.chunks[1] < 20000
    kept = engine.recommender.recommend(profiler, (20000, 20000), 8, current_chunks=rows)
    assert kept.chunks[1] == 20000


def test_whole_dims_kept_without_transpose(engine):
    x = da.random.random((4000, 4000), chunks=(100, 4000))
    pid = engine.profile_array(x)
    (x + 1).sum().compute()
    assert engine.recommend(x, pid).chunks[1] == 4000


class Stored(np.ndarray):
    """An in-memory stand-in for a Zarr array or an HDF5 dataset."""

    chunks = (64, 100)


def test_storage_chunks_are_respected(engine):
    data = np.random.random((2000, 3000)).view(Stored)
    x = da.from_array(data, chunks=(64, 100))
    pid = engine.profile_array(x)
    (x + 1).sum().compute()
    rec = engine.recommend(x, pid)
    assert rec.storage_chunks == (64, 100)
    for n, c, s in zip(x.shape, rec.chunks, (64, 100)):
        assert c == n or c % s == 0
    profile = engine.get_profile(pid)
    assert profile["recommendation"]["storage_chunks"] == (64, 100)
    assert tuple(profile["recommended_chunks"]) == rec.chunks


def test_predict_any_chunking(engine):
    ids = pilot(engine, lambda x: (x + 1).sum())
    x = da.random.random((8000, 8000), chunks=(100, 100))
    small, big = engine.predict(x, 200, ids), engine.predict(x, 2000, ids)
    assert small["predicted_tasks"] > big["predicted_tasks"]
    assert small["predicted_peak_memory_mb"] < big["predicted_peak_memory_mb"]
    assert small["predicted_time_s"] > big["predicted_time_s"]
    assert big["chunks"] == (2000, 2000)
    rec = engine.recommend(x, ids)
    same = engine.predict(x, rec.chunks, ids)
    assert same["predicted_peak_memory_mb"] == pytest.approx(
        rec.predicted_peak_bytes / MiB, rel=0.05
    )
    with pytest.raises(ValueError, match="invalid chunks"):
        engine.predict(x, (1, 2, 3), ids)


def test_apply_recommendation_for_a_larger_array(engine):
    ids = pilot(engine, lambda x: (x * 2).sum(), sizes=[(100, 100)])
    x = da.random.random((6000, 6000), chunks=(100, 100))
    y = engine.apply_recommendation(x, ids[0])
    assert y.chunks == da.core.normalize_chunks(engine.recommend(x, ids[0]).chunks, x.shape)
    assert y.chunksize != (100, 100)


def test_budget_shrinks_the_recommendation(engine):
    # Pilots at 2 and 8 MiB chunks: the measured sizes leave room to shrink.
    ids = pilot(engine, lambda x: (x + 1).sum(), (4000, 4000), ((500, 500), (1000, 1000)))
    x = da.random.random((20000, 20000), chunks=(100, 100))
    large = engine.predict(x, (2500, 2500), ids)["predicted_peak_memory_mb"] * 2**20
    # A budget that leaves the compute half of what 48 MiB chunks are predicted to
    # need above what this process already holds.
    # What the planner counts as held (advisor.workers_for): the process's memory in
    # use less the graph of x's 40,000 chunks; what earlier tests left in memory moves it.
    from dask.array._adaptive_chunking.advisor import workers_for

    held = workers_for(None, engine.recommend(x, ids).model, x.chunks).baseline
    assert held < large
    budget = held + (large - held) / 2
    settings = {"array.adaptive-chunking.memory-limit": int(budget / 0.8),
                "array.adaptive-chunking.target-memory-percent": 100}
    with dask.config.set(settings):
        tight = engine.recommend(x, ids)
    assert tight.fits_budget
    assert tight.predicted_peak_bytes <= tight.memory_budget_bytes
    assert tight.chunk_bytes < 2500 * 2500 * 8
    # The largest size that fits, or the pilot's 2 MiB if that is predicted as fast.
    assert tight.binding in ("memory", "measured"), tight.reason


@pytest.mark.slow
def test_measured_peak_within_predicted(engine, trim_heap):
    """The recommended chunks' measured peak does not exceed the predicted peak.

    The workload is the benchmark's W4 (a rechunk to rows, then a sum) at 8000 x
    8000: a pilot at two chunk sizes, the recommendation for the full array with
    the full expression as ``workload``, then the full array computed in the
    recommended chunks while the kernel's high-water mark is watched.
    """
    from dask.array._adaptive_chunking.peaks import HighWaterMark, _read_hwm

    if not HighWaterMark()._reset():
        pytest.skip("needs /proc/self/clear_refs (Linux)")
    expr = lambda x: x.rechunk({0: "auto", 1: -1}).sum()  # noqa: E731
    ids = pilot(engine, expr)
    x = da.random.random((8000, 8000), chunks=(100, 100))
    rec = engine.recommend(x, ids, workload=expr(x))
    with dask.config.set({"array.chunk-size": rec.array_chunk_size}):
        y = expr(da.random.random(x.shape, chunks=rec.chunks))
    trim_heap()  # from the memory in use, as predicted (earlier tests leave free heap)
    HighWaterMark()._reset()
    y.compute()
    measured = _read_hwm()
    assert measured <= rec.predicted_peak_bytes, (measured / MiB, rec.predicted_peak_bytes / MiB)
    assert measured >= rec.predicted_peak_bytes * 0.5
    assert math.isfinite(rec.predicted_seconds)


DOCS = ["README.md", "docs/user-guide.md", "docs/troubleshooting.md", "docs/xarray.md",
        "docs/notebook.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_documented_examples_run(doc, engine, capsys):
    """Every Python example of the README and the documentation pages runs as written."""
    import logging
    import re
    import textwrap
    from pathlib import Path

    from dask.array.adaptive_chunking import disable_adaptive_chunking

    text = (Path(__file__).resolve().parents[3] / doc).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    namespace: dict = {}
    logger = logging.getLogger("dask.array.adaptive_chunking")
    level, handlers = logger.level, list(logging.root.handlers)
    try:
        for i, block in enumerate(blocks):
            code = textwrap.dedent(block)  # a block inside a list item is indented
            exec(compile(code, f"{doc} example {i + 1}", "exec"), namespace)
    finally:
        disable_adaptive_chunking()
        logger.setLevel(level)  # the troubleshooting page turns on the INFO log
        logging.root.handlers[:] = handlers


def test_one_chunk_pilot_still_scales_tasks(engine):
    x = da.random.random((1000, 1000), chunks=-1)
    pid = engine.profile_array(x)
    (x + 1).sum().compute()
    big = da.random.random((20000, 20000), chunks=(1000, 1000))
    assert engine.predict(big, 500, pid)["predicted_tasks"] > 100
    rec = engine.recommend(big, pid)
    assert rec.predicted_tasks > 1
    assert rec.fits_budget == (rec.predicted_peak_bytes <= rec.memory_budget_bytes)


def test_hints_of_another_dimensionality_are_ignored(engine):
    x = da.random.random((1000, 1000), chunks=100)
    pid = engine.profile_array(x)
    x.rechunk({1: -1}).sum().compute()
    assert engine.recommend(da.ones((4000, 4000), chunks=100), pid).chunks[1] == 4000
    for other in (da.ones(100_000, chunks=100), da.ones((), chunks=())):
        rec = engine.recommend(other, pid)
        assert len(rec.chunks) == other.ndim
        engine.predict(other, other.chunks, pid)
        engine.apply_recommendation(other, pid)


def test_pilot_rechunked_to_one_chunk_says_nothing(engine):
    ids = pilot(engine, lambda x: x.rechunk({0: "auto", 1: -1}).sum())
    x = da.random.random((12000, 12000), chunks=(100, 100))
    rec = engine.recommend(x, ids)  # no workload: the pilot's rechunk fit in one chunk
    assert rec.chunks != x.shape
    assert "finalize" not in " ".join(rec.downstream)


def test_apply_and_workload_arguments(engine):
    ids = pilot(engine, lambda x: (x + 1).sum())
    x = da.random.random((4000, 4000), chunks=(100, 100))
    assert engine.apply_recommendation(x, ids).chunks == da.core.normalize_chunks(
        engine.recommend(x, ids).chunks, x.shape
    )
    with pytest.raises(ValueError, match="workload is empty"):
        engine.recommend(x, ids, workload=[])
