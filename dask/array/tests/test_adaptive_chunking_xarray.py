"""xarray objects backed by Dask: profiles, recommendations and rechunking by dimension."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

xr = pytest.importorskip("xarray")

from dask.array.adaptive_chunking import Recommendation  # noqa: E402


def _dataset(chunks=None):
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "temperature": (("time", "y", "x"), rng.random((40, 200, 240))),
            "pressure": (("time", "y", "x"), rng.random((40, 200, 240)).astype("float32")),
            "mask": (("y", "x"), rng.random((200, 240)) > 0.5),  # held in memory
        },
        coords={"time": np.arange(40), "y": np.arange(200), "x": np.arange(240)},
    )
    chunked = ds[["temperature", "pressure"]].chunk(chunks or {"time": 1, "y": 50, "x": 60})
    return chunked.assign(mask=ds.mask)


def _anomaly(ds):
    return (ds - ds.mean("time")).std("time")


def test_a_dataarray_is_recommended_and_rechunked_by_dimension_name(engine):
    t = _dataset().temperature
    pid = engine.profile_array(t)
    expected = _anomaly(t).compute()

    profile = engine.get_profile(pid)
    assert profile["dims"] == ("time", "y", "x")
    by_dim = profile["recommended_chunks_by_dim"]
    assert list(by_dim) == ["time", "y", "x"] and tuple(by_dim.values()) == (
        profile["recommended_chunks"])

    rec = engine.recommend(t, pid)
    assert isinstance(rec, Recommendation) and rec.dims == ("time", "y", "x")
    assert rec.chunks_by_dim == dict(zip(rec.dims, rec.chunks))
    assert rec.to_dict()["chunks_by_dim"] == rec.chunks_by_dim
    assert "time:" in repr(rec)  # shown by dimension name

    applied = engine.apply_recommendation(t, pid)
    assert isinstance(applied, xr.DataArray) and applied.dims == t.dims
    assert applied.chunksizes["time"][0] == rec.chunks_by_dim["time"]
    assert applied.data.npartitions < t.data.npartitions
    xr.testing.assert_allclose(_anomaly(applied).compute(), expected)  # sums reordered
    # the recommendation object, chunks by name, and chunks by axis all apply
    assert engine.apply_recommendation(t, rec).chunks == applied.chunks
    assert engine.apply_recommendation(t, rec.chunks_by_dim).chunks == applied.chunks
    assert engine.apply_recommendation(t, rec.chunks).chunks == applied.chunks
    assert engine.apply_recommendation(t, {"time": 20}).chunksizes["time"] == (20, 20)
    # predict takes chunks by dimension name
    assert engine.predict(t, {"time": 40, "y": 200, "x": 240}, pid)["predicted_tasks"] \
        < engine.predict(t, {"time": 1}, pid)["predicted_tasks"]


def test_a_dataset_profiles_each_variable_and_gets_one_size_per_dimension(engine):
    ds = _dataset()
    gid = engine.profile_array(ds)
    expected = _anomaly(ds[["temperature", "pressure"]]).compute()

    profile = engine.get_profile(gid)
    assert set(profile["variables"]) == {"temperature", "pressure"}  # mask is NumPy
    assert profile["status"] == "complete"
    for p in profile["variables"].values():
        assert p["computes"] == 1 and p["recommended_chunks_by_dim"]
    merged = profile["recommended_chunks"]
    assert set(merged) == {"time", "y", "x"}
    for dim, size in merged.items():  # the smallest any variable was recommended
        assert size == min(p["recommended_chunks_by_dim"][dim]
                           for p in profile["variables"].values())

    rec = engine.recommend(ds, gid)
    assert rec.chunks == merged and set(rec.variables) == {"temperature", "pressure"}
    assert rec.variables["pressure"].dims == ("time", "y", "x") and not rec.unavailable
    assert rec.to_dict()["chunks"] == merged
    assert repr(rec).startswith("<DatasetRecommendation chunks=")
    # One variable of it: the Dataset's id finds the variable's own profile
    assert engine.recommend(ds.pressure, gid).chunks == rec.variables["pressure"].chunks

    applied = engine.apply_recommendation(ds, gid)
    assert isinstance(applied, xr.Dataset)
    assert {d: c[0] for d, c in applied.chunks.items()} == merged
    assert isinstance(applied.mask.data, np.ndarray)  # left in memory
    xr.testing.assert_allclose(_anomaly(applied[["temperature", "pressure"]]).compute(),
                                expected)
    assert engine.apply_recommendation(ds, rec).chunks == applied.chunks
    assert engine.apply_recommendation(ds, {"time": 10}).chunks["time"] == (10,) * 4
    with pytest.raises(KeyError, match="profile of a Dataset"):
        engine.get_profiler(gid)

    engine.remove_profile(gid)
    assert engine.profile_ids == []
    with pytest.raises(KeyError):
        engine.get_profile(gid)


def test_a_dataset_variable_never_computed_is_reported_not_fatal(engine):
    ds = _dataset()
    gid = engine.profile_array(ds)
    _anomaly(ds.temperature).compute()  # pressure is never computed
    rec = engine.recommend(ds, gid)
    assert set(rec.variables) == {"temperature"}
    assert "pressure" in rec.unavailable and "no measurements" in rec.unavailable["pressure"]
    assert "pressure: none" in repr(rec)
    fresh = engine.profile_array(_dataset(chunks={"time": 2}))
    with pytest.raises(ValueError, match="no variable of the Dataset has a recommendation"):
        engine.recommend(ds, fresh)


def test_zarr_storage_chunks_are_kept(engine, tmp_path):
    pytest.importorskip("zarr")
    store = str(tmp_path / "data.zarr")
    data = _dataset()[["temperature"]].compute()
    data.to_zarr(store, encoding={"temperature": {"chunks": (4, 40, 48)}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notes on consolidated metadata / splits
        opened = xr.open_zarr(store, chunks={"time": 4, "y": 40, "x": 48})
    t = opened.temperature
    pid = engine.profile_array(t)
    _anomaly(t).compute()
    rec = engine.recommend(t, pid)
    assert engine.get_profile(pid)["recommendation"]["storage_chunks"] == (4, 40, 48)
    assert rec.storage_chunks == (4, 40, 48)
    for size, stored, n in zip(rec.chunks, rec.storage_chunks, t.shape):
        assert size % stored == 0 or size == n, (rec.chunks, rec.storage_chunks)
    applied = engine.apply_recommendation(opened)  # each variable's newest profile
    assert isinstance(applied, xr.Dataset)
    assert applied.temperature.chunks == engine.apply_recommendation(t, rec).chunks


def test_zarr_v3_shards_are_the_storage_unit(engine, tmp_path):
    zarr = pytest.importorskip("zarr")
    if int(zarr.__version__.split(".")[0]) < 3:
        pytest.skip("shards need Zarr v3")
    store = str(tmp_path / "sharded.zarr")
    data = _dataset()[["temperature"]].compute()
    data.to_zarr(store, zarr_format=3, consolidated=False,
                 encoding={"temperature": {"chunks": (4, 40, 48), "shards": (8, 80, 96)}})
    opened = xr.open_zarr(store, consolidated=False, chunks={})
    t = opened.temperature
    pid = engine.profile_array(t)
    _anomaly(t).compute()
    rec = engine.recommend(t, pid)
    assert rec.storage_chunks == (8, 80, 96)
    for size, stored, n in zip(rec.chunks, rec.storage_chunks, t.shape):
        assert size % stored == 0 or size == n, rec.chunks


def test_xarray_mistakes_are_named(engine):
    in_memory = _dataset().mask
    with pytest.raises(TypeError, match=r"DataArray 'mask' holds a numpy.ndarray.*\.chunk\(\)"):
        engine.profile_array(in_memory)
    with pytest.raises(TypeError, match="none of .* is; call .chunk"):
        engine.profile_array(xr.Dataset({"a": ("x", np.arange(3))}))
    ds = _dataset()
    gid = engine.profile_array(ds)
    _anomaly(ds[["temperature", "pressure"]]).compute()
    with pytest.raises(TypeError, match="chunks by dimension name"):
        engine.apply_recommendation(ds, (10, 10, 10))
    with pytest.raises(ValueError, match=r"dimensions \['depth'\].*\('time', 'y', 'x'\)"):
        engine.apply_recommendation(ds, {"depth": 3})
    with pytest.raises(ValueError, match="names dimension 'depth'"):
        engine.apply_recommendation(ds.temperature, {"depth": 3})
    with pytest.raises(TypeError, match="predict takes one array"):
        engine.predict(ds, {"time": 2}, gid)
    with pytest.raises(ValueError, match="no variable named 'other'"):
        engine.recommend(ds.temperature.rename("other"), gid)


def test_profiles_pickle_and_print_like_dicts(engine):
    ds = _dataset()
    gid = engine.profile_array(ds)
    _anomaly(ds[["temperature", "pressure"]]).compute()
    profile = engine.get_profile(gid)
    assert pickle.loads(pickle.dumps(profile)) == profile
    text = repr(profile["variables"]["temperature"])
    assert text.startswith("{\n  'profile_id':") and "'recommended_chunks_by_dim': {" in text
    page = profile._repr_html_()
    assert "temperature" in page and "pressure" in page and "Chunks for Dataset.chunk" in page
    assert "DatasetRecommendation" not in page and "&lt;" not in page


def test_xarray_is_not_imported_for_dask_arrays():
    # Where xarray is installed, other packages may import it; blocked, any import of
    # it by the engine would fail.
    code = (
        "import sys\n"
        "sys.modules['xarray'] = None\n"
        "import dask.array as da\n"
        "from dask.array.adaptive_chunking import AdaptiveChunkingEngine\n"
        "e = AdaptiveChunkingEngine(); x = da.ones((10, 10), chunks=5)\n"
        "pid = e.profile_array(x); x.sum().compute(); e.recommend(x, pid)\n"
        "e.apply_recommendation(x, pid); e.predict(x, 5, pid); e.get_profile(pid)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _small():
    import dask.array as da

    a = xr.DataArray(da.ones((40, 60), chunks=10), dims=("t", "x"), name="a")
    return a, xr.Dataset({"a": a, "b": (a * 2).rename("b")})


def test_a_dropped_variable_is_reported_and_the_others_still_recommended(engine):
    _, ds = _small()
    gid = engine.profile_array(ds)
    (ds + 1).sum().compute()
    engine.remove_profile(engine.get_profile(gid)["variables"]["a"]["profile_id"])
    profile = engine.get_profile(gid)
    assert profile["dropped_variables"] == ["a"] and profile["status"] == "dropped"
    rec = engine.recommend(ds, gid)
    assert set(rec.variables) == {"b"} and "no profile with id" in rec.unavailable["a"]
    assert engine.apply_recommendation(ds, gid).chunks["t"] == (rec.chunks["t"],) * (
        40 // rec.chunks["t"])
    engine.close()  # forgets Dataset ids too
    with pytest.raises(KeyError):
        engine.get_profile(gid)


def test_stale_storage_encoding_after_slicing_is_not_trusted(engine):
    import dask.array as da

    data = xr.DataArray(da.ones((3000, 50), chunks=(100, 50)), dims=("t", "x"))
    data.encoding = {"chunks": (100, 50), "preferred_chunks": {"t": 100, "x": 50}}
    from dask.array._adaptive_chunking import xarray as _x

    assert _x.storage_chunks(data, data.data.chunks) == (100, 50)
    sliced = data.isel(t=slice(5, 3005 - 10))
    assert sliced.encoding["chunks"] == (100, 50)  # xarray keeps it
    assert _x.storage_chunks(sliced, sliced.data.chunks) is None
    pid = engine.profile_array(sliced)
    (sliced + 1).sum().compute()
    assert engine.recommend(sliced, pid).storage_chunks is None


def test_partial_chunks_change_only_the_named_dimensions(engine):
    a, ds = _small()
    assert engine.apply_recommendation(a, {"t": 20}).chunks == ((20, 20), (10,) * 6)
    assert engine.apply_recommendation(a.data, {0: 20}).chunks == ((20, 20), (10,) * 6)
    assert engine.apply_recommendation(a.data, {-1: 30}).chunks == ((10,) * 4, (30, 30))
    with pytest.raises(ValueError, match="names axis 5.*axes 0 to 1"):
        engine.apply_recommendation(a.data, {5: 20})
    pid = engine.profile_array(a)
    (a + 1).sum().compute()
    assert engine.predict(a, {"t": 20}, pid)["chunks"] == (20, 10)
    with pytest.raises(ValueError, match="names dimension 'y'"):
        engine.predict(a, {"y": 20}, pid)


def test_a_dataset_recut_keeps_coordinates_in_step(engine):
    import dask.array as da

    a, _ = _small()
    ds = xr.Dataset({"a": a}, coords={"lat": (("t", "x"), da.zeros((40, 60), chunks=10))})
    out = engine.apply_recommendation(ds, {"t": 20, "x": 30})
    assert out.a.chunks == out.lat.chunks == ((20, 20), (30, 30))


def test_the_dataset_profile_keeps_dims_in_its_recommendation(engine):
    a, _ = _small()
    pid = engine.profile_array(a)
    (a + 1).sum().compute()
    profile = engine.get_profile(pid)
    assert profile["recommendation"]["chunks_by_dim"] == profile["recommended_chunks_by_dim"]
    assert list(profile["recommended_chunks_by_dim"]) == ["t", "x"]


def test_unknown_ids_are_named(engine):
    a, ds = _small()
    with pytest.raises(ValueError, match="no profile with id 'dataset-gone'"):
        engine.apply_recommendation(ds, "dataset-gone")
    with pytest.raises(ValueError, match="invalid chunks 'gone'.*no profile with id 'gone'"):
        engine.apply_recommendation(a, "gone")
    with pytest.raises(ValueError, match="no profile with id"):
        engine.apply_recommendation(a.data, "gone")
    with pytest.raises(KeyError, match="no profile with id"):
        engine.remove_profile(["a", "b"])
    assert engine.apply_recommendation(a.data, "auto").chunks  # chunks, not an id
