"""The spec's usage examples, run as written (each with the checks of what it shows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dask.array.core import normalize_chunks

import dask
import dask.array as da
from dask.array.adaptive_chunking import (
    ChunkSizeRecommender,
    disable_adaptive_chunking,
    enable_adaptive_chunking,
    get_adaptive_engine,
)

MiB = 2**20
SPEC_KEYS = {
    "array_shape",
    "array_dtype",
    "current_chunks",
    "execution_time_s",
    "profiler_stats",
    "recommended_chunks",
}


# ---------------------------------------------------------------------------
# The spec's usage examples, as written
# ---------------------------------------------------------------------------


def test_spec_basic_profiling(engine, capsys):
    array = da.ones((10000, 10000), chunks=(100, 100))
    engine = get_adaptive_engine()
    profile_id = engine.profile_array(array)
    result = array.compute()
    profile = engine.get_profile(profile_id)
    print(profile)

    assert result.shape == (10000, 10000) and result[5, 7] == 1.0
    assert SPEC_KEYS <= profile.keys()
    assert profile["array_shape"] == (10000, 10000)
    assert profile["array_dtype"] == "float64"
    assert profile["current_chunks"] == array.chunks
    assert profile["execution_time_s"] > 0
    stats = profile["profiler_stats"]
    assert stats["total_chunks"] == 10000
    assert stats["avg_chunk_size_mb"] == pytest.approx(100 * 100 * 8 / MiB)
    assert stats["peak_memory_mb"] > 0
    assert stats["avg_throughput_mb_per_sec"] > 0
    rec = profile["recommended_chunks"]
    assert isinstance(rec, tuple) and len(rec) == 2
    assert math.prod(rec) * 8 > 100 * 100 * 8  # 80 kB chunks are far too small
    assert "recommended_chunks" in capsys.readouterr().out


def test_spec_applying_recommendations(engine):
    array = da.random.random((3000, 3000), chunks=(100, 100))
    profile_id = engine.profile_array(array)
    expected = array.sum().compute()

    profile = engine.get_profile(profile_id)
    recommendation = profile["recommended_chunks"]

    if recommendation:
        optimized = engine.apply_recommendation(array, recommendation)
        result = optimized.sum().compute()
    assert recommendation
    assert optimized.chunks == normalize_chunks(recommendation, array.shape)
    assert result == pytest.approx(expected)


def test_spec_memory_aware_workflow(engine):
    enable_adaptive_chunking()
    try:
        engine = get_adaptive_engine()
        engine.profiler.enabled = True

        arr1 = da.random.random((5000, 5000), chunks=(50, 50))
        profile_id = engine.profile_array(arr1)
        result1 = arr1.compute()
        profile1 = engine.get_profile(profile_id)

        arr2 = da.random.random((8000, 8000), chunks=(50, 50))
        if profile1["recommended_chunks"]:
            arr2 = arr2.rechunk(profile1["recommended_chunks"])
        result2 = arr2.compute()

        telemetry = engine.get_telemetry()
        print(f"Tracked arrays: {telemetry['tracked_arrays']}")
        print(f"Memory pressure: {telemetry['memory_pressure']['percent_used']:.1f}%")
    finally:
        disable_adaptive_chunking()
    assert result1.shape == (5000, 5000) and result2.shape == (8000, 8000)
    assert arr2.chunksize == profile1["recommended_chunks"]
    assert telemetry["tracked_arrays"] == 1
    # enabled globally: the second, unprofiled compute was profiled too
    assert telemetry["computes_profiled"] == 2
    assert engine.profiler.get_stats()["computes"] == 2
    assert 0 <= telemetry["memory_pressure"]["percent_used"] <= 100


def test_spec_configuration(engine):
    with dask.config.set({"array.adaptive-chunking.enabled": True}):
        engine = get_adaptive_engine()
        engine.profile_chunks = True
        assert engine.enabled
        da.ones((1000, 1000), chunks=(100, 100)).sum().compute()
    assert not engine.enabled
    assert engine.profiler.get_stats()["total_chunks"] > 0
    before = engine.profiler.get_stats()["total_chunks"]
    da.ones((1000, 1000), chunks=(100, 100)).sum().compute()
    assert engine.profiler.get_stats()["total_chunks"] == before


def test_spec_example_dataframe(engine, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    path = tmp_path / "large_file.csv"
    pd.DataFrame({"a": np.arange(20000.0), "b": np.ones(20000)}).to_csv(path, index=False)

    df = dd.read_csv(str(path), blocksize=100_000)
    array = df.to_dask_array()
    engine = get_adaptive_engine()
    profile_id = engine.profile_array(array)
    result = array.mean().compute()
    profile = engine.get_profile(profile_id)
    print(f"Recommended chunks: {profile['recommended_chunks']}")

    assert result == pytest.approx((np.arange(20000.0).mean() + 1) / 2)
    assert profile["status"] == "complete"
    assert profile["profiler_stats"]["total_chunks"] > 0
    # Row counts of a CSV are unknown before reading: no silent guess.
    assert profile["recommended_chunks"] is None
    assert "compute_chunk_sizes" in profile["recommendation_unavailable"]


def test_spec_example_multi_array(engine):
    engine = get_adaptive_engine()
    arrays = [da.random.random((n, n), chunks=(50, 50)) for n in [1000, 5000, 10000]]
    profile_ids = [engine.profile_array(arr) for arr in arrays]
    results = [arr.compute() for arr in arrays]

    for pid, arr, res in zip(profile_ids, arrays, results):
        profile = engine.get_profile(pid)
        print(f"Array {arr.shape}: {profile['recommended_chunks']}")
        assert profile["profiler_stats"]["total_chunks"] == arr.npartitions
        assert res.shape == arr.shape
        rec = profile["recommended_chunks"]
        assert normalize_chunks(rec, arr.shape)  # valid for this array


def test_spec_memory_constrained(engine):
    engine = get_adaptive_engine()
    x = da.random.random((2000, 2000), chunks=(100, 100))
    engine.profile_array(x)
    x.sum().compute()

    recommender = ChunkSizeRecommender(
        target_memory_percent=20.0,
        min_chunk_bytes=512 * 1024,
        safety_factor=0.5,
    )
    recommendation = recommender.recommend_chunk_size(
        profiler=engine.profiler,
        array_shape=(50000, 50000),
        dtype_size=8,
    )
    assert len(recommendation) == 2
    nbytes = math.prod(recommendation) * 8
    assert 512 * 1024 <= nbytes <= recommender.memory_budget()


def test_spec_recommender_signature_example(engine):
    x = da.random.random((2000, 2000), chunks=(100, 100))
    engine.profile_array(x)
    x.sum().compute()
    profiler = engine.profiler

    recommender = ChunkSizeRecommender(
        target_memory_percent=50.0,
        min_chunk_bytes=1024 * 1024,
        max_chunk_bytes=None,
        safety_factor=0.8,
    )
    recommendation = recommender.recommend_chunk_size(
        profiler=profiler,
        array_shape=(10000, 10000),
        dtype_size=8,
        num_dimensions=2,
    )
    assert len(recommendation) == 2
    assert math.prod(recommendation) * 8 >= 1024 * 1024


def test_spec_troubleshooting(engine, capsys):
    engine = get_adaptive_engine()
    engine.profiler.enabled = True
    engine.profile_chunks = True
    engine.recommender = ChunkSizeRecommender(
        target_memory_percent=75.0,
        safety_factor=0.9,
    )
    x = da.ones((1000, 1000), chunks=(100, 100))
    engine.profile_array(x)
    x.sum().compute()
    stats = engine.profiler.get_stats()
    print(f"Peak memory: {stats['peak_memory_mb']:.1f} MB")
    print(f"Avg chunk: {stats['avg_chunk_size_mb']:.2f} MB")
    out = capsys.readouterr().out
    assert "Peak memory" in out and stats["peak_memory_mb"] > 0
