"""Trust: a recommendation says what it rests on, stays near what was measured, keeps
the current chunks unless a move is predicted to pay, and probes when asked."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

import dask.array as da
from dask.array._adaptive_chunking import hook, model, planning, probe
from dask.array._adaptive_chunking.model import Observation, WorkloadModel
from dask.array._adaptive_chunking.shapes import sample_shape

MiB = 2**20
SETTINGS = planning.PlanSettings(50.0, MiB, None, 0.8, 0.1, None)


def measured(*sizes, time=1.0, memory=1.0, **kw) -> WorkloadModel:
    """A model with a large per-task overhead (larger chunks predicted faster),
    calibrated at ``sizes`` with the given ratios."""
    base = dict(tasks_per_chunk=1.0, seconds_per_byte=1e-9, overhead_seconds=5e-3,
                amplification=2.0, results_fraction=0.0, baseline_bytes=100 * MiB,
                concurrency=2, observations=len(sizes))
    base.update(kw)
    return WorkloadModel(**base, corrections=tuple((s, time, memory) for s in sizes))


def observations(chunk_bytes: float, n: int, seconds_per_task: float) -> list:
    return [Observation(
        array_bytes=chunk_bytes * n, chunk_bytes=chunk_bytes, n_tasks=n,
        task_seconds=n * seconds_per_task, wall_seconds=n * seconds_per_task / 2,
        peak_bytes=0, baseline_bytes=100 * MiB, results_bytes=0, concurrency=2)]


# -- distance, uncertainty and calibration ------------------------------------------


def test_distance_is_one_inside_the_measured_sizes_and_grows_outside():
    m = measured(MiB, 4 * MiB)
    assert m.measured_bytes == (MiB, 4 * MiB)
    assert m.distance(2 * MiB) == 1.0
    assert m.distance(32 * MiB) == 8.0
    assert m.distance(MiB / 4) == 4.0
    assert math.isinf(measured().distance(MiB))  # nothing measured
    assert math.isinf(m.distance(0))


def test_uncertainty_grows_with_every_doubling_away():
    m = measured(MiB)
    near, two, eight = m.uncertainty(MiB), m.uncertainty(2 * MiB), m.uncertainty(8 * MiB)
    assert near == pytest.approx(model.UNCERTAINTY)
    assert two == pytest.approx(near + model.UNCERTAINTY_PER_DOUBLING)
    assert eight == pytest.approx(near + 3 * model.UNCERTAINTY_PER_DOUBLING)
    assert measured().uncertainty(MiB) == 1.0


def test_uncertainty_grows_between_measured_sizes_too():
    m = measured(MiB, 64 * MiB)  # 8 MiB: inside, but 8x from either
    assert m.distance(8 * MiB) == 1.0 and m.nearest(8 * MiB) == pytest.approx(8.0)
    assert m.uncertainty(8 * MiB) == pytest.approx(
        model.UNCERTAINTY + 3 * model.UNCERTAINTY_PER_DOUBLING)
    assert m.uncertainty(64 * MiB) == pytest.approx(model.UNCERTAINTY)
    rec = planning.plan(m, (8192, 8192), 8, SETTINGS, limit=64 * 2**30)
    between = dataclasses.replace(rec, chunk_bytes=8 * MiB).evidence
    assert between.startswith("between the chunk sizes measured, 8.0x from the nearest")
    assert between.endswith("time +/-25%")
    at = dataclasses.replace(rec, chunk_bytes=64 * MiB).evidence
    assert at.startswith("at a chunk size measured (1.00 MiB, 64.00 MiB)")


def test_correction_interpolates_and_keeps_the_time_bias_outside():
    m = measured(MiB, time=2.0)
    assert model.correction(m, MiB) == (2.0, 1.0)
    assert model.correction(m, 64 * MiB)[0] == 2.0  # a bias of the model stays
    assert model.correction(measured(), MiB) == (1.0, 1.0)


def test_a_low_memory_ratio_fades_but_a_high_one_is_kept():
    low, high = measured(MiB, memory=0.5), measured(MiB, memory=1.5)
    far = model.FADE * MiB
    assert model.correction(low, MiB)[1] == 0.5
    assert 0.5 < model.correction(low, 2 * MiB)[1] < 1.0
    assert model.correction(low, far)[1] == pytest.approx(1.0)
    assert model.correction(high, far)[1] == 1.5  # more than modelled: kept


def test_fit_predicts_the_measured_time_at_the_measured_size():
    obs = observations(MiB, 200, 0.02) + observations(4 * MiB, 50, 0.05)
    fit = model.fit_workload(obs, 0.0)
    assert fit.measured_bytes == pytest.approx((MiB, 4 * MiB))
    for o in obs:
        p = model.predict(fit, o.array_bytes, o.chunk_bytes, o.concurrency, n_chunks=o.n_tasks)
        assert p.seconds == pytest.approx(o.wall_seconds, rel=0.02)


def test_one_size_puts_long_task_times_on_the_bytes():
    # 20 tasks of 64 ms on 32 MiB chunks, e.g. reading and decompressing a store
    fit = model.fit_workload(observations(32 * MiB, 20, 0.064), 0.0)
    assert fit.overhead_seconds <= model.MAX_FIXED_SECONDS + model.DEFAULT_OVERHEAD_SECONDS
    assert fit.seconds_per_byte * 32 * MiB > 0.05


# -- choosing within reach ----------------------------------------------------------


def choose(m, **kw):
    args = dict(budget_bytes=64 * 2**30, min_chunk_bytes=MiB / 16, max_chunk_bytes=2**30,
                overhead_target=0.1)
    args.update(kw)
    return model.choose_chunk_bytes(m, 2**36, **args)


def test_reach_bounds_a_choice_that_speed_alone_would_take_far():
    m = measured(MiB)
    near, anywhere = choose(m, reach=4.0), choose(m, reach=None)
    assert near.binding == "reach" and near.chunk_bytes <= 4 * MiB * 1.001
    assert anywhere.chunk_bytes > 8 * near.chunk_bytes
    assert near.chunk_bytes < choose(m, reach=16.0).chunk_bytes <= 16 * MiB * 1.001
    assert choose(m).chunk_bytes <= model.REACH * MiB * 1.001


def test_nothing_within_reach_takes_the_nearest_size():
    m = measured(MiB / 1024)  # 1 kiB measured, 1 MiB the smallest allowed
    c = choose(m, min_chunk_bytes=MiB)
    assert c.chunk_bytes == pytest.approx(MiB)


def test_the_budget_may_force_a_size_far_from_the_measured_ones():
    m = measured(256 * MiB, overhead_seconds=1e-5)
    c = choose(m, budget_bytes=300 * MiB)
    assert c.fits and c.chunk_bytes < 256 * MiB / model.REACH


def test_no_measured_size_means_no_reach():
    assert choose(measured()).chunk_bytes == choose(measured(), reach=None).chunk_bytes


# -- planning: keep what works, respect storage ---------------------------------------


def fit_at(chunk_bytes, n, seconds_per_task):
    return model.fit_workload(observations(chunk_bytes, n, seconds_per_task), 0.0)


def test_current_chunks_are_kept_unless_a_move_is_predicted_to_pay():
    fit = fit_at(8 * MiB, 50, 0.02)  # measured at 8 MiB; 8 MiB predicted best
    plan = lambda current: planning.plan(  # noqa: E731
        fit, (8192, 8192), 8, SETTINGS, limit=16 * 2**30, current_chunks=current)
    for current, chunks in [(((2048,) * 4, (1024,) * 8), (2048, 1024)),  # 16 MiB
                            (((512,) * 16, (512,) * 16), (512, 512))]:  # 2 MiB, 13% slower
        rec = plan(current)
        assert rec.binding == "current" and rec.chunks == chunks
        assert "must gain more than the model's uncertainty" in rec.reason
    moved = plan(((128,) * 64, (128,) * 64))  # 128 kiB: 4,096 tasks of overhead
    assert moved.binding != "current" and moved.chunks == (1024, 1024)


@pytest.mark.parametrize("current, unit", [
    (((100,) * 82, (100,) * 82), (100, 100)),  # larger chunks: whole multiples
    (((4100,) * 2, (4100,) * 2), (4100, 4100)),  # smaller: whole divisors
])
def test_chunks_without_storage_align_with_the_current_ones(current, unit):
    fit = fit_at(8 * MiB, 50, 0.02)
    # Current chunks of 128 MiB are above this max-chunk-bytes: they cannot be kept.
    settings = dataclasses.replace(SETTINGS, max_chunk_bytes=64 * MiB)
    rec = planning.plan(dataclasses.replace(fit, corrections=()), (8200, 8200), 8,
                        settings, limit=16 * 2**30, current_chunks=current)
    assert rec.chunks != unit
    for c, u, n in zip(rec.chunks, unit, (8200, 8200)):
        assert c == n or (c % u == 0 if c > u else u % c == 0), rec.chunks
    stored = planning.plan(fit, (8200, 8200), 8, settings, limit=16 * 2**30,
                           current_chunks=current, storage_chunks=(300, 300))
    assert all(c % 300 == 0 or c == 8200 for c in stored.chunks)  # storage wins
    assert "whole multiples of the storage chunks (300, 300)" in stored.reason


def test_current_chunks_outside_the_budget_are_not_kept():
    fit = fit_at(8 * MiB, 50, 0.02)
    whole = ((8192,), (8192,))  # 512 MiB chunks, a 1 GiB limit
    rec = planning.plan(fit, (8192, 8192), 8, SETTINGS, limit=2**30, current_chunks=whole)
    assert rec.binding != "current" and rec.chunks != (8192, 8192)


def test_the_fastest_size_measured_beats_a_guess_inside_its_uncertainty():
    # Measured at 1 and 16 MiB; larger chunks are predicted faster, by less than the
    # uncertainty that far out: the measured 16 MiB is recommended, and says so.
    m = measured(MiB, 16 * MiB, overhead_seconds=2e-4)
    rec = planning.plan(m, (65536, 65536), 8, SETTINGS, limit=64 * 2**30)
    assert rec.binding == "measured" and rec.chunk_bytes == pytest.approx(16 * MiB, rel=0.1)
    assert rec.evidence.startswith("at a chunk size measured")
    assert "the fastest chunk size measured" in rec.reason and "uncertainty" in rec.reason
    # With a large overhead the move pays beyond any doubt: the model's choice stands.
    far = planning.plan(measured(MiB, 16 * MiB, overhead_seconds=0.05), (65536, 65536), 8,
                        SETTINGS, limit=64 * 2**30)
    assert far.binding != "measured" and far.chunk_bytes > 16 * MiB


def test_a_step_toward_an_untrusted_choice_is_taken_when_it_beats_its_own_doubt():
    # Measured at 1 MiB only. The model's best (about 13 MiB) is predicted faster by
    # less than the uncertainty that far out, but 4 MiB is predicted faster by more
    # than the uncertainty there: a step of whole doublings, not the measured size.
    m = measured(MiB, overhead_seconds=2e-4)
    rec = planning.plan(m, (65536, 65536), 8, SETTINGS, limit=64 * 2**30)
    assert rec.binding == "step", rec.reason
    assert rec.chunk_bytes == pytest.approx(4 * MiB, rel=0.05)
    anywhere = dataclasses.replace(SETTINGS, reach=None, evidence=False)
    goal = planning.plan(m, (65536, 65536), 8, anywhere, limit=64 * 2**30)
    assert rec.chunk_bytes < goal.chunk_bytes  # short of the model's own choice
    assert rec.reason.startswith("a step toward (") and "than (363, 363)" in rec.reason
    assert "a compute at them will refine the answer" in rec.reason
    # Once the step is measured and no further step beats its doubt, it is kept.
    after = planning.plan(measured(MiB, 4 * MiB, overhead_seconds=2e-4), (65536, 65536), 8,
                          SETTINGS, limit=64 * 2**30)
    assert after.binding == "measured"
    assert after.chunk_bytes == pytest.approx(4 * MiB, rel=0.05)
    # Where a step gains less than its own uncertainty, the measured size is held.
    small = planning.plan(measured(MiB, overhead_seconds=1e-4), (65536, 65536), 8, SETTINGS,
                          limit=64 * 2**30)
    assert small.binding == "measured" and small.chunk_bytes == pytest.approx(MiB, rel=0.05)


def test_a_peak_measured_inside_the_budget_outweighs_a_prediction_above_it():
    chunks = ((1024,) * 8, (1024,) * 8)  # 8 MiB chunks of a 512 MiB array
    over = measured(8 * MiB, overhead_seconds=2e-3, amplification=60.0)
    limit = 2**30  # a budget of 410 MiB (50% x 0.8); predicted peak far above it
    assert model.predict(over, 512 * MiB, 8 * MiB, 2, 100 * MiB).peak_bytes > 0.4 * limit
    moved = planning.plan(over, (8192, 8192), 8, SETTINGS, limit=limit, current_chunks=chunks)
    assert moved.chunks != (1024, 1024)
    seen = dataclasses.replace(over, peaks=((512 * MiB, 8 * MiB, 350 * MiB),))  # measured: 350 MiB
    kept = planning.plan(seen, (8192, 8192), 8, SETTINGS, limit=limit, current_chunks=chunks)
    assert kept.chunks == (1024, 1024) and kept.fits_budget
    assert "peak measured at these chunks (350.00 MiB) is inside the budget" in kept.reason


@pytest.mark.parametrize("overhead", [5e-3, 1e-4])
def test_dask_auto_chunks_are_not_taken_on_a_guess(overhead):
    """128 MiB chunks predicted from 1 MiB ones are a guess, however much faster: the
    recommendation stays within reach instead (and says so when reach binds)."""
    m = measured(MiB, overhead_seconds=overhead)
    settings = dataclasses.replace(SETTINGS, default_chunk_bytes=128 * MiB)
    rec = planning.plan(m, (40000, 40000), 8, settings, limit=64 * 2**30)
    near = planning.plan(m, (40000, 40000), 8, SETTINGS, limit=64 * 2**30)
    assert near.chunk_bytes <= model.REACH * MiB * 1.001
    assert rec.chunks == near.chunks and rec.binding == near.binding != "default"
    assert rec.binding != "reach" or "have not been run" in rec.reason


def test_dask_auto_chunks_win_when_measured_near_and_predicted_faster():
    m = measured(MiB, 64 * MiB, overhead_seconds=5e-3)  # a probe ran 64 MiB chunks
    settings = dataclasses.replace(SETTINGS, default_chunk_bytes=128 * MiB)
    rec = planning.plan(m, (40000, 40000), 8, settings, limit=64 * 2**30)
    assert rec.chunk_bytes >= 0.95 * 64 * MiB and rec.distance <= model.REACH * 1.001
    # Dask's 128 MiB is predicted 3% faster than the 64 MiB measured: not beyond doubt.
    assert rec.binding in ("default", "reach", "speed", "overhead", "measured"), rec.binding


def test_storage_bound_when_larger_chunks_are_no_faster():
    # Reading a store: all time per byte, so larger chunks only add memory.
    fit = model.fit_workload(observations(30 * MiB, 40, 0.06), 0.0)
    plan = lambda storage: planning.plan(  # noqa: E731
        fit, (4000, 200, 200), 8, SETTINGS, limit=16 * 2**30, storage_chunks=storage)
    coarse = plan((100, 200, 200))  # 30.5 MiB of float64
    assert coarse.chunks == (100, 200, 200) and coarse.binding == "storage"
    assert "storage chunk" in coarse.reason
    fine = plan((10, 100, 100))
    assert all(c % s == 0 for c, s in zip(fine.chunks, (10, 100, 100)))
    assert fine.chunk_bytes > 10 * 100 * 100 * 8  # several store chunks per task


def test_a_recommendation_says_what_it_rests_on():
    fit = fit_at(MiB, 400, 1e-2)
    rec = planning.plan(fit, (20000, 20000), 8, SETTINGS, limit=16 * 2**30)
    d = rec.to_dict()
    json.dumps(d)  # plain values only
    assert d["measured_chunk_sizes_mb"] == pytest.approx([1.0])
    assert d["distance_from_measured"] == pytest.approx(rec.distance)
    assert d["uncertainty"] >= model.UNCERTAINTY
    assert "(1.00 MiB)" in rec.evidence and "+/-" in rec.evidence
    assert d["probes"] == [] and d["probe_note"] == ""


def test_an_empty_array_rests_on_nothing_and_says_so():
    rec = planning.plan(None, (0, 10), 8, SETTINGS, limit=2**30)
    d = rec.to_dict()
    json.dumps(d)
    assert d["distance_from_measured"] is None
    assert rec.evidence == "no chunk size measured"


# -- samples -----------------------------------------------------------------------


@pytest.mark.parametrize("shape, chunks, blocks, expected", [
    ((1000, 10), (100, 10), 4, (400, 10)),
    ((1000, 1000), (100, 100), 4, (200, 200)),
    ((50, 50), (100, 100), 4, (50, 50)),  # never more than the array
])
def test_sample_shape_holds_about_the_blocks_asked_for(shape, chunks, blocks, expected):
    assert sample_shape(shape, chunks, blocks) == expected


def test_traced_task_peak_sees_a_tasks_temporaries():
    x = da.ones((1000, 1000), chunks=(1000, 1000))
    simple = probe.traced_task_peak(x + 1)
    temporaries = probe.traced_task_peak(((x + 1) * 2 + x ** 2).sum())
    assert simple >= 8e6
    assert temporaries > simple  # two 8 MB temporaries at once


def test_probes_step_toward_a_far_best_instead_of_jumping_to_it():
    # The model's best is 64x the measured chunk bytes. Each probe goes at most
    # STEP beyond what is measured so far, so the sizes on the way are measured too.
    measured = [1e6]
    far = 64e6

    class Rec:
        def __init__(self, nbytes):
            self.chunk_bytes, self.chunks = nbytes, (int(nbytes),)
            sizes = tuple((c, 1.0, 1.0) for c in sorted(measured))
            self.model = WorkloadModel(1, 0, 0, 2, 0, 0, 1, 1, corrections=sizes)

    def recommend(extra, reach):
        top = max(measured) * (math.inf if reach is None else reach)
        return Rec(min(far, top))

    def measure_at(chunks):
        measured.append(float(chunks[0]))
        return [], probe.ProbeRun(chunks, chunks, 1, 0.01)

    _, runs, why = probe.tune(recommend, measure_at, lambda rec: 0.01, budget_seconds=1.0)
    sizes = [r.chunks[0] for r in runs]
    assert sizes == [8e6, 64e6], why  # one step, then the far best, now within a step
    assert "the best chunks are near a measured size" in why


# -- probing through the engine -----------------------------------------------------


@pytest.fixture
def measured_small(engine):
    x = da.random.random((2000, 2000), chunks=(100, 100))
    pid = engine.profile_array(x)
    x.mean(axis=0).compute()
    return x, pid


def test_probe_measures_the_chunks_it_recommends(engine, measured_small):
    x, pid = measured_small
    before, was_installed = engine.profile_ids, hook.installed()
    plain = engine.recommend(x, pid)
    rec = engine.recommend(x, pid, workload=lambda a: a.mean(axis=0), probe=5.0)
    assert engine.profile_ids == before  # the samples' profiles are gone
    assert hook.installed() == was_installed
    assert rec.probes and all(r.error is None and r.tasks > 0 for r in rec.probes)
    assert all(r.task_peak_bytes > 0 for r in rec.probes)
    assert rec.probe_note
    assert len(rec.model.measured_bytes) > len(plain.model.measured_bytes)
    assert rec.distance <= probe.CLOSE * 1.001
    d = rec.to_dict()
    json.dumps(d)
    assert len(d["probes"]) == len(rec.probes)
    assert np.allclose(rec.predicted_seconds, d["predicted_time_s"])


def test_a_workload_that_fails_on_the_sample_leaves_the_recommendation(engine,
                                                                        measured_small):
    x, pid = measured_small
    rec = engine.recommend(x, pid, workload=lambda a: a[1999].sum(), probe=5.0)
    assert rec.chunks  # a recommendation all the same
    assert rec.probes[-1].error.startswith("IndexError")
    assert "failed on the probe's sample" in rec.probe_note


def test_probe_time_budget_is_respected(engine, measured_small):
    x, pid = measured_small
    rec = engine.recommend(x, pid, workload=lambda a: a.mean(axis=0), probe=1e-6)
    assert rec.probes == ()
    assert "would take about" in rec.probe_note


@pytest.mark.parametrize("value, error, match", [
    ("yes", TypeError, "probe must be True, False or a time budget"),
    (-1.0, ValueError, "got -1.0"),
    (math.inf, ValueError, "got inf"),
    (float("nan"), ValueError, "got nan"),
])
def test_bad_probe_values_are_refused(engine, measured_small, value, error, match):
    x, pid = measured_small
    with pytest.raises(error, match=match):
        engine.recommend(x, pid, workload=lambda a: a.sum(), probe=value)


def test_probe_needs_the_workload_as_a_function(engine, measured_small):
    x, pid = measured_small
    with pytest.raises(ValueError, match="workload as a function"):
        engine.recommend(x, pid, probe=True)
    with pytest.raises(ValueError, match="workload as a function"):
        engine.recommend(x, pid, workload=x.sum(), probe=True)
    assert engine.recommend(x, pid, workload=lambda a: a.sum()).probes == ()


# -- arrays read from storage ----------------------------------------------------------


def _sharded(tmp_path, shape=(80, 200, 200), chunks=(10, 50, 50), shards=(20, 100, 100)):
    zarr = pytest.importorskip("zarr")
    if int(zarr.__version__.split(".")[0]) < 3:
        pytest.skip("shards need Zarr v3")
    path = str(tmp_path / "sharded.zarr")
    z = zarr.create_array(path, shape=shape, chunks=chunks, shards=shards, dtype="f8")
    z[:] = np.random.default_rng(0).random(shape)
    return path, z


def test_a_sharded_zarr_array_is_recommended_whole_shards(engine, tmp_path):
    path, z = _sharded(tmp_path)
    x = da.from_zarr(path)
    pid = engine.profile_array(x)
    x.mean(axis=0).compute()
    rec = engine.recommend(x, pid, workload=lambda a: a.mean(axis=0))
    assert rec.storage_chunks == (20, 100, 100)
    assert all(c % s == 0 or c == n for c, s, n in zip(rec.chunks, z.shards, x.shape))


def test_a_probe_reads_its_sample_from_storage_at_the_candidate_chunks(tmp_path):
    path, z = _sharded(tmp_path)
    x = da.from_zarr(path)
    sample = probe.sample_of(x, (40, 200, 200), blocks=2)
    assert sample.chunks == ((40, 40), (200,), (200,))
    assert not any("rechunk" in str(name) for name in sample.dask.layers)
    np.testing.assert_array_equal(sample.compute(), z[:80])
    # Made in memory: made once at the old chunks, held, and cut at the new ones.
    x = da.random.default_rng(0).random((80, 10), chunks=(10, 10))
    in_memory = probe.sample_of(x, (40, 10), blocks=1)
    assert in_memory.chunks == ((40,), (10,))
    assert not set(in_memory.dask.layers) & set(x.dask.layers)
    np.testing.assert_array_equal(in_memory.compute(), x[:40].compute())


def test_a_probe_adds_back_what_making_an_array_held_in_memory_costs():
    o = observations(MiB, 100, 0.01)[0]
    per_byte = probe.production_per_byte(o, dataclasses.replace(o, task_seconds=0.5))
    assert per_byte == pytest.approx(0.5 / (100 * MiB))
    assert probe.production_per_byte(dataclasses.replace(o, task_seconds=0.5), o) == 0
    made = probe.with_production(o, per_byte)
    assert made.task_seconds == pytest.approx(o.task_seconds + 0.5)
    assert made.wall_seconds == pytest.approx(o.wall_seconds + 0.25)  # 2 at once


def test_chunks_read_from_zarr_are_whole_store_chunks(engine, tmp_path):
    zarr = pytest.importorskip("zarr")
    store = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(200, 400, 400),
                            chunks=(10, 100, 100), dtype="f8")
    store[:] = np.random.default_rng(0).random((200, 400, 400))
    x = da.from_zarr(str(tmp_path / "a.zarr"))
    assert x.chunks[0][0] == 10
    pid = engine.profile_array(x)
    x.mean(axis=0).compute()
    rec = engine.recommend(x, pid, workload=lambda a: a.mean(axis=0))
    assert rec.storage_chunks == (10, 100, 100)
    assert all(c % s == 0 or c == n for c, s, n in zip(rec.chunks, (10, 100, 100), x.shape))
    assert rec.distance <= model.REACH * 1.001 or rec.binding == "memory"
    y = da.from_zarr(str(tmp_path / "a.zarr"), chunks=rec.chunks)
    np.testing.assert_allclose(y.mean(axis=0).compute(), store[:].mean(axis=0))


STORE_WRITER = """
import sys
import numpy as np
import zarr
store = zarr.open_array(sys.argv[1], mode="w", shape=(160, 400, 400), chunks=(10, 100, 100),
                        dtype="f8")
store[:] = np.random.default_rng(0).random(store.shape)
"""

STORE_READER = """
import sys
import dask.array as da
from dask.array.adaptive_chunking import get_adaptive_engine
from dask.array._adaptive_chunking.peaks import HighWaterMark, _read_hwm
engine = get_adaptive_engine()
anomaly = lambda a: (a - a.mean(axis=0)).std(axis=0)
x = da.from_zarr(sys.argv[1])
pid = engine.profile_array(x)
anomaly(x).compute()
rec = engine.recommend(x, pid, workload=anomaly)
y = anomaly(da.from_zarr(sys.argv[1], chunks=rec.chunks))
HighWaterMark()._reset()
y.compute()
print(rec.chunk_bytes / (x.nbytes / x.npartitions), _read_hwm(), rec.predicted_peak_bytes)
"""


@pytest.mark.slow
def test_measured_peak_within_predicted_for_an_array_read_from_zarr(tmp_path):
    """Read from a store at the recommended chunks (8x the store's here), the
    compute's kernel high-water mark stays within 15% of the predicted peak. With the
    share of waiting chunks held constant it was 36% over.

    The store is written by one process and read by another, as a user opens a store
    made elsewhere: writing it here would leave the allocator holding the chunks it
    freed in per-thread arenas, which later computes of small chunks grow into (up
    to 40% over the prediction, see the benchmarks' notes)."""
    import subprocess
    import sys

    pytest.importorskip("zarr")
    from dask.array._adaptive_chunking.peaks import HighWaterMark

    if not HighWaterMark()._reset():
        pytest.skip("needs /proc/self/clear_refs (Linux)")
    path = str(tmp_path / "a.zarr")
    env = dict(os.environ, DASK_ARRAY__ADAPTIVE_CHUNKING__HISTORY_PATH=str(tmp_path / "h.db"))

    def run(code: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", code, path], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    run(STORE_WRITER)
    coarser, measured, predicted = map(float, run(STORE_READER))
    assert coarser > 2  # coarser than measured
    assert measured <= 1.15 * predicted, (measured / MiB, predicted / MiB)


# -- the loop: profile, apply, compute again -------------------------------------------


def _computes(engine, pid):
    engine.get_profile(pid)  # the computes that returned are folded first
    return engine._profiles.get(pid).aggregate.observations()


def test_a_compute_after_apply_recommendation_is_measured_at_the_new_chunks(engine):
    x = da.random.random((1200, 1200), chunks=(100, 100))
    pid = engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    y = engine.apply_recommendation(x, (400, 400))
    (y + y.T).mean(axis=0).compute()
    first, second = _computes(engine, pid)
    assert first.chunk_bytes == 100 * 100 * 8 and second.chunk_bytes == 400 * 400 * 8
    assert second.blocks == 9
    profile = engine.get_profile(pid)
    assert profile["current_chunks"] == y.chunks and profile["computes"] == 2
    assert profile["profiler_stats"]["array_chunks"] == 9
    assert profile["current_prediction"]["chunks"] == (400, 400)
    # Applied again, from the rechunked array: the same profile follows.
    z = engine.apply_recommendation(y, (600, 600))
    z.sum().compute()
    assert _computes(engine, pid)[-1].chunk_bytes == 600 * 600 * 8
    # The profiled array itself, computed again, is measured at its own chunks.
    x.sum().compute()
    assert _computes(engine, pid)[-1].chunk_bytes == 100 * 100 * 8
    assert engine.get_profile(pid)["current_chunks"] == x.chunks


def test_a_profile_follows_at_most_a_few_rechunks(engine):
    from dask.array._adaptive_chunking.profiles import MAX_VARIANTS

    x = da.random.random((100, 100), chunks=(10, 10))
    pid = engine.profile_array(x)
    made = [engine.apply_recommendation(x, (10, c)) for c in range(11, 12 + MAX_VARIANTS)]
    state = engine._profiles.get(pid)
    assert list(state.variants) == [a.name for a in made[-MAX_VARIANTS:]]
    assert not engine._profiles.in_graph({made[0].name: None})  # the oldest is let go
    engine.remove_profile(pid)
    assert not engine._profiles.in_graph({a.name: None for a in made})


def test_apply_recommendation_reads_storage_again_at_the_new_chunks(engine, tmp_path):
    zarr = pytest.importorskip("zarr")
    path = str(tmp_path / "store.zarr")
    z = zarr.open_array(path, mode="w", shape=(400, 300), chunks=(50, 50), dtype="f8")
    z[:] = np.random.default_rng(1).random((400, 300))
    x = da.from_zarr(path)
    pid = engine.profile_array(x)
    x.sum(axis=0).compute()
    y = engine.apply_recommendation(x, (200, 300))
    assert y.chunks == ((200, 200), (300,))
    assert not any("rechunk" in str(name) for name in y.dask.layers)  # read, not merged
    np.testing.assert_array_equal(y.compute(), z[:])
    y.sum(axis=0).compute()
    assert _computes(engine, pid)[-1].chunk_bytes == 200 * 300 * 8


# -- planning for another machine ----------------------------------------------------


def test_a_profile_plans_for_the_threads_configured_now(engine):
    import dask
    from dask.array._adaptive_chunking.history_service import local_threads

    x = da.random.random((2000, 2000), chunks=100)
    pid = engine.profile_array(x)
    x.mean(axis=0).compute()
    here = engine.recommend(x, pid)
    assert here.carried == "" and here.to_dict()["carried_over"] == ""
    threads = 4 * local_threads()
    with dask.config.set(num_workers=threads):
        there = engine.recommend(x, pid)
        predicted = engine.predict(x, x.chunks, pid)
    assert there.concurrency == threads == predicted["concurrency"]
    assert there.carried == (f"measured with {local_threads()} threads, planned for "
                             f"{threads} threads")


def test_stored_computes_of_other_threads_carry_over_to_a_new_array(engine):
    import dask

    x = da.random.random((1000, 1000), chunks=100)
    engine.profile_array(x)
    x.mean(axis=0).compute()
    big = da.random.random((4000, 4000), chunks=250)
    with dask.config.set(num_workers=5):
        rec = engine.recommend(big, workload=big.mean(axis=0))
    assert rec.concurrency == 5 and "planned for 5 threads" in rec.carried
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError, match="no profile"):
        engine.recommend(big, workload=big.mean(axis=0))  # another scheduler: no carry


@pytest.mark.parametrize("downstream, says, never", [
    ((frozenset(), False, ("add", "sum")), [], ["transpose", "matmul", "square"]),
    ((frozenset(), True, ("matmul", "sum")), ["square chunks", "matmul pairs"],
     ["transpose"]),
    ((frozenset(), True, ("transpose", "add")), ["transpose pairs"], ["matmul"]),
    ((frozenset({1}), False, ("rechunk-merge", "sum")),
     ["axis 1 whole", "rechunk-merge needs it"], ["square", "axes"]),
])
def test_a_reason_names_only_what_applies_to_the_workload(downstream, says, never):
    from dask.array._adaptive_chunking.graph import Downstream

    fit = fit_at(MiB, 400, 1e-2)
    rec = planning.plan(fit, (20000, 20000), 8, SETTINGS, limit=16 * 2**30,
                        downstream=Downstream(*downstream))
    for words in says:
        assert words in rec.reason, (words, rec.reason)
    for words in never:
        assert words not in rec.reason, (words, rec.reason)
    assert "fresh pages" not in rec.reason and "{" not in rec.reason


def test_a_reason_gives_the_numbers_behind_its_constraint():
    from dask.utils import format_bytes

    # Measured sizes left out: else the one measured is as fast and is kept.
    fit = dataclasses.replace(fit_at(MiB, 400, 1e-2), corrections=())
    fast = planning.plan(fit, (20000, 20000), 8, SETTINGS, limit=16 * 2**30)
    assert fast.binding == "speed"
    assert fast.reason.startswith(f"the fastest chunk size predicted "
                                  f"({fast.predicted_seconds:.3g} s)")
    assert "smaller chunks are predicted no faster" in fast.reason  # this fit has no overhead
    costly = WorkloadModel(tasks_per_chunk=1.0, seconds_per_byte=1e-9, overhead_seconds=3e-4,
                           amplification=3.0, results_fraction=0.0, baseline_bytes=1e8,
                           concurrency=2, observations=1)
    rec = planning.plan(costly, (20000, 20000), 8, SETTINGS, limit=16 * 2**30)
    assert rec.binding == "speed", rec.reason
    assert "smaller chunks would add per-task overhead (300 us a task)" in rec.reason
    fit = dataclasses.replace(fit_at(MiB, 400, 1e-3), corrections=())  # larger chunks pay
    tight = planning.plan(fit, (20000, 20000), 8, SETTINGS, limit=2**30)  # 410 MiB budget
    assert tight.binding == "memory" and tight.fits_budget
    assert f"fits the memory budget ({format_bytes(tight.memory_budget_bytes)})" in tight.reason
    assert format_bytes(int(tight.predicted_peak_bytes)) in tight.reason
    none_fit = planning.plan(fit, (20000, 20000), 8, SETTINGS, limit=2**28)
    assert not none_fit.fits_budget and none_fit.binding == "memory"
    assert none_fit.reason.startswith("no chunk size is predicted to fit the memory budget")
