"""Pictures of a profile: what its tasks measured and what the model predicts.

:func:`plot_profile` draws, from a profile's sampled task records, its per-compute
measurements and its fitted model: the compute time of each sampled task against
its output's size and against when it started (coloured by operation), the process
memory over the profiled computes with their measured peak, and the predicted wall
time and peak memory against chunk size, with what each profiled compute measured
on them and the current and the recommended chunk size marked. The memory budget is
drawn when it lies near the peaks and otherwise named, so that the axes stay those
of the data. :func:`visualize` draws the profiled array's task graph with Dask's own
``dask.visualize`` machinery, each measured task coloured by its memory.

The figures' data are assembled here by pure functions of plain values
(:func:`task_points`, :func:`memory_timeline`, :func:`prediction_curve`,
:func:`measured_points`, :func:`task_attributes`), so they are tested without
drawing anything; :mod:`.profile_figure` describes the panels once and draws that
description with bokeh or matplotlib, so both show the same things. bokeh,
matplotlib and graphviz are imported only when a picture is drawn (``pip install
"dask-adaptive-chunking[plot]"``).

Sizes are in bytes unless a name says MiB; times in seconds unless it says ms.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import warnings
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import key_split

from dask.array._adaptive_chunking import tasks as _tasks
from dask.array._adaptive_chunking import memory as _memory
from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import shapes as _shapes
from dask.array._adaptive_chunking import profile_figure as _figure
from dask.array._adaptive_chunking import views as _views
from dask.array._adaptive_chunking.profile_figure import TITLES  # noqa: F401 (the panels)

__all__ = [
    "plot_profile",
    "visualize",
    "profile_data",
    "task_points",
    "memory_timeline",
    "prediction_curve",
    "measured_points",
    "predicted_peak_label",
    "task_attributes",
    "match_keys",
]

MiB = 2**20

#: Suffixes :func:`plot_profile` writes: bokeh for HTML, matplotlib for images.
BOKEH_SUFFIXES = (".html",)
MATPLOTLIB_SUFFIXES = (".png", ".svg", ".pdf")

#: ColorBrewer's YlOrRd, light to dark: the fill of a measured task in the graph.
PALETTE = (
    "#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c",
    "#fc4e2a", "#e31a1c", "#bd0026", "#800026",
)
_DARK = 6  # from this colour on, labels are written in white

#: What :func:`visualize` can colour tasks by: (description, unit).
MEASURES = {
    "output": ("output size (dask.sizeof)", "MiB"),
    "growth": ("process memory growth across the task", "MiB"),
    "time": ("compute time", "ms"),
}

_EXTRA = 'pip install "dask-adaptive-chunking[plot]"'


def _require(module: str, package: str, what: str):
    """Import ``module`` or raise an ImportError that says what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs {package}: pip install {package} (or {_EXTRA})"
        ) from e


# ---------------------------------------------------------------------------
# The figures' data: pure functions of plain values
# ---------------------------------------------------------------------------


def _output_bytes(m) -> int:
    return m.output_bytes if m.output_bytes is not None else m.estimated_bytes


def task_points(metrics: Sequence[Any]) -> dict[str, Any]:
    """The sampled tasks in the order they started, as columns.

    Parameters
    ----------
    metrics : sequence of ChunkMemoryMetric
        A profiler's ``metrics`` (a uniform sample of its tasks).

    Returns
    -------
    dict of arrays
        ``start_s`` (seconds since the first sampled task started), ``output_mib``
        (what the output holds, ``dask.sizeof``), ``time_ms``, ``failed``, and
        ``key`` and ``operation`` (the task keys as text and the operations they
        name). No per-task memory: a task's process memory reading may be an
        earlier task's (:data:`.peaks.RSS_REFRESH`), so its growth is mostly 0.

    >>> from dask.array.adaptive_chunking import ChunkMemoryMetric as M
    >>> p = task_points([M(("x-1", 1), (10,), 10, 8, 80, 2.0, 100.0, 101.0, start_time=5.0),
    ...                  M(("x-1", 0), (10,), 10, 8, 80, 1.0, 99.0, 100.0, start_time=4.0)])
    >>> p["start_s"].tolist(), p["time_ms"].tolist(), p["key"], p["operation"]
    ([0.0, 1.0], [1.0, 2.0], ["('x-1', 0)", "('x-1', 1)"], ['x', 'x'])
    """
    ms = sorted(metrics, key=lambda m: m.start_time)
    first = ms[0].start_time if ms else 0.0
    return {
        "start_s": np.array([m.start_time - first for m in ms], dtype=float),
        "output_mib": np.array([_output_bytes(m) / MiB for m in ms], dtype=float),
        "time_ms": np.array([m.compute_time_ms for m in ms], dtype=float),
        "failed": np.array([bool(m.failed) for m in ms], dtype=bool),
        "key": [str(m.chunk_key) for m in ms],
        "operation": [key_split(m.chunk_key) for m in ms],  # "Other" for an odd key
    }


def memory_timeline(metrics: Sequence[Any]) -> dict[str, np.ndarray]:
    """Process memory over the computes, from the sampled tasks' readings.

    Each task gives two points: its start with the memory before it, and its end
    with the memory after it. Sorted by time, in seconds since the first sampled
    task started; missing readings (recorded as 0) are left out. The engine reuses
    a reading for up to 50 ms and, while it tracks the kernel's high-water mark,
    records that, so the line is a coarse, often stepwise view; the compute's
    measured peak is exact. On the processes scheduler the readings of several
    worker processes interleave.

    >>> from dask.array.adaptive_chunking import ChunkMemoryMetric as M
    >>> t = memory_timeline([M(("x", 1), (), 0, 0, 0, 500.0, 120.0, 130.0, start_time=11.0),
    ...                      M(("x", 0), (), 0, 0, 0, 2000.0, 100.0, 110.0, start_time=10.0)])
    >>> t["seconds"].tolist(), t["memory_mib"].tolist()
    ([0.0, 1.0, 1.5, 2.0], [100.0, 120.0, 130.0, 110.0])
    >>> memory_timeline([M(("x", 0), (), 0, 0, 0, 1000.0, 0.0, 90.0)])["memory_mib"].tolist()
    [90.0]
    """
    if not metrics:
        return {"seconds": np.zeros(0), "memory_mib": np.zeros(0)}
    start = np.array([m.start_time for m in metrics], dtype=float)
    end = start + np.array([m.compute_time_ms for m in metrics], dtype=float) / 1e3
    before = np.array([m.memory_peak_before_mb for m in metrics], dtype=float)
    after = np.array([m.memory_peak_after_mb for m in metrics], dtype=float)
    times = np.concatenate([start, end]) - start.min()
    memory = np.concatenate([before, after])
    order = np.argsort(times, kind="stable")
    order = order[memory[order] > 0]
    return {"seconds": times[order], "memory_mib": memory[order]}


def candidate_sizes(low: float, high: float) -> list[float]:
    """Chunk sizes in bytes from ``low`` to ``high``, spaced as the recommender's.

    >>> sizes = candidate_sizes(2**20, 2**22)  # four per doubling
    >>> len(sizes), sizes[0] == 2**20, sizes[-1] == 2**22
    (9, True, True)
    """
    return _model._candidates(low, high)


def prediction_curve(
    predict: Callable[[tuple[int, ...]], Mapping[str, Any]],
    shape: Sequence[int],
    itemsize: int,
    sizes: Sequence[float],
) -> dict[str, Any]:
    """Predicted time and peak memory for a sweep of chunk sizes.

    Each size (bytes) is turned into a chunk shape as the recommender does
    (:func:`shapes.chunk_shape`) and given to ``predict`` (the engine's
    :meth:`~dask.array.adaptive_chunking.AdaptiveChunkingEngine.predict` for the
    profiled array), so the curve is the model's own prediction; shapes that come
    out equal are predicted once.

    Parameters
    ----------
    predict : callable
        Chunk shape -> a dict with ``chunk_size_mb``, ``predicted_time_s``,
        ``predicted_peak_memory_mb`` and ``predicted_tasks``.
    shape : tuple of int
        The array's shape.
    itemsize : int
        Bytes per element.
    sizes : sequence of float
        Chunk sizes to try, in bytes (see :func:`candidate_sizes`).

    Returns
    -------
    dict
        ``chunks`` (list of shapes), and arrays ``chunk_bytes``, ``seconds``,
        ``peak_bytes`` and ``tasks``, ordered by chunk size.

    >>> def predict(chunks):  # a stand-in for engine.predict
    ...     b = chunks[0] * 8
    ...     return {"chunk_size_mb": b / 2**20, "predicted_time_s": 1 + 800 / b,
    ...             "predicted_peak_memory_mb": 100 + 2 * b / 2**20,
    ...             "predicted_tasks": -(-1000 // chunks[0])}
    >>> c = prediction_curve(predict, (1000,), 8, [800, 1600, 1601, 8000])
    >>> c["chunks"], c["tasks"].tolist(), c["seconds"].tolist()
    ([(100,), (200,), (1000,)], [10, 5, 1], [2.0, 1.5, 1.1])
    """
    shape = tuple(int(n) for n in shape)
    out: dict[tuple[int, ...], Mapping[str, Any]] = {}
    for size in sizes:
        chunks = _shapes.chunk_shape(shape, itemsize, size)
        if chunks not in out:
            out[chunks] = predict(chunks)
    rows = sorted(out.items(), key=lambda kv: (kv[1]["chunk_size_mb"], kv[0]))
    return {
        "chunks": [c for c, _ in rows],
        "chunk_bytes": np.array([p["chunk_size_mb"] * MiB for _, p in rows], dtype=float),
        "seconds": np.array([p["predicted_time_s"] for _, p in rows], dtype=float),
        "peak_bytes": np.array([p["predicted_peak_memory_mb"] * MiB for _, p in rows],
                               dtype=float),
        "tasks": np.array([p["predicted_tasks"] for _, p in rows], dtype=np.int64),
    }


def measured_points(observations: Sequence[Any]) -> dict[str, np.ndarray]:
    """What each profiled compute measured, to set beside the predictions.

    Parameters
    ----------
    observations : sequence of Observation
        A profiler's ``observations()``: its own computes, oldest first (the
        history's are left out: they may be of another array).

    Returns
    -------
    dict of arrays
        ``chunk_bytes`` (the profiled array's chunk), ``seconds`` (wall time, the
        first task's start to the last one's end) and ``peak_bytes`` (peak process
        memory), NaN where a compute did not measure it.

    >>> from dask.array._adaptive_chunking.model import Observation
    >>> m = measured_points([Observation(8e8, 8e4, 10_000, 3.0, 1.5, 2e8, 1e8, 0, 2),
    ...                      Observation(8e8, 8e6, 100, 1.0, 0.0, 0.0, 1e8, 0, 2)])
    >>> m["chunk_bytes"].tolist(), m["seconds"].tolist(), m["peak_bytes"].tolist()
    ([80000.0, 8000000.0], [1.5, nan], [200000000.0, nan])
    """
    def column(name: str) -> np.ndarray:
        values = np.array([getattr(o, name) for o in observations], dtype=float)
        return np.where(values > 0, values, np.nan)

    return {"chunk_bytes": column("chunk_bytes"), "seconds": column("wall_seconds"),
            "peak_bytes": column("peak_bytes")}


def predicted_peak_label(measured_baseline: float, baseline_now: float) -> str:
    """The legend label of the predicted peaks.

    A prediction is for a compute started now, from the memory this process holds
    now; the measured points started from what it held then. When the two differ
    (a notebook that has since loaded data, or imported the plotting library), the
    gap between the curve and the measured points is that difference, not a miss of
    the model, and the label says so. Differences within 10% (or 16 MiB) are not
    named. A baseline of 0 (unknown, or a cluster's workers) names nothing.

    >>> predicted_peak_label(100 * 2**20, 110 * 2**20)
    'predicted'
    >>> predicted_peak_label(104 * 2**20, 205 * 2**20)
    'predicted, from 205.00 MiB held now (104.00 MiB then)'
    """
    if measured_baseline <= 0 or baseline_now <= 0:
        return "predicted"
    if abs(baseline_now - measured_baseline) <= max(0.1 * measured_baseline, 16 * MiB):
        return "predicted"
    # Short enough for a legend beside another: the docs say what "held" means.
    return (f"predicted, from {_views.size_text(baseline_now)} held now "
            f"({_views.size_text(measured_baseline)} then)")


def _measured(engine, profile_id: str, what: str) -> tuple[dict[str, Any], list, list]:
    """The profile (``engine.get_profile``), its sampled task records and per-compute
    observations, or why it cannot be drawn yet."""
    profiler = engine.get_profiler(profile_id)  # KeyError for an unknown id
    metrics = profiler.metrics
    with warnings.catch_warnings():  # a budget no chunking fits is drawn, not warned
        warnings.simplefilter("ignore", UserWarning)
        profile = engine.get_profile(profile_id)
    if profile["computes"] == 0:
        raise ValueError(
            f"profile {profile_id!r} has no computes yet: compute the profiled array (or "
            f"an expression of it) first, then call {what}()"
        )
    return profile, metrics, profiler.observations()


def profile_data(engine, profile_id: str) -> dict[str, Any]:
    """Everything :func:`plot_profile` draws, as plain values.

    Only the engine's public methods are used: ``get_profile``, ``get_profiler``,
    ``predict`` and its recommender's ``min_chunk_bytes``.

    Returns
    -------
    dict
        ``title``; ``tasks`` (:func:`task_points`) and ``timeline``
        (:func:`memory_timeline`) of the sampled tasks, ``sampled`` and
        ``total_tasks``; ``measured`` (:func:`measured_points`) and
        ``measured_peak_bytes`` of the profiled computes; ``curve``
        (:func:`prediction_curve`), ``current`` and ``recommended`` (``chunks``,
        ``chunk_bytes``, ``seconds``, ``peak_bytes``), ``budget_bytes``, and the
        axes of the predicted panels, ``ranges`` (``chunk_mib``, ``time_s``,
        ``peak_mib``: :class:`.profile_figure.AxisRange`, holding the curve, the
        marked and the measured points), ``budget_label`` and ``budget_drawn``
        (:func:`.profile_figure.peak_axis`), all None without a model;
        ``predicted_peak_label`` (:func:`predicted_peak_label`); ``note``
        says what is missing and why.
    """
    import dask.array as da

    profile, metrics, observations = _measured(engine, profile_id, "plot_profile")
    stats = profile["profiler_stats"]
    shape, dtype = tuple(profile["array_shape"]), np.dtype(profile["array_dtype"])
    chunks = profile["current_chunks"]
    largest = tuple(max(c, default=0) for c in chunks)
    data: dict[str, Any] = {
        "profile_id": profile_id,
        "tasks": task_points(metrics),
        "timeline": memory_timeline(metrics),
        "sampled": len(metrics),
        "total_tasks": stats["total_chunks"],
        "measured": measured_points(observations),
        "measured_peak_bytes": max((o.peak_bytes for o in observations), default=0.0),
        "note": "",
        **dict.fromkeys(("curve", "current", "recommended", "budget_bytes", "ranges",
                         "budget_label", "budget_drawn")),
        "predicted_peak_label": "predicted",
    }
    data["title"] = (
        f"Profile {profile_id}: {shape} {dtype} in {largest} chunks, "
        f"{_views.count_text(profile['computes'], 'compute')}, {len(metrics):,} of "
        f"{stats['total_chunks']:,} tasks sampled"
    )
    notes = []
    if not metrics:
        notes.append("no per-task records (array.adaptive-chunking.profile is off, or no "
                     "task of the profiled computes worked on this array)")
    rec = profile["recommendation"]
    nbytes = math.prod(shape) * dtype.itemsize
    if rec is None or rec["chunk_size_mb"] == 0 or not nbytes:
        notes.append("no prediction: " + (profile["recommendation_unavailable"]
                                          if rec is None else "the array is empty"))
        data["note"] = "; ".join(notes)
        return data
    stand_in = da.empty(shape, dtype=dtype, chunks=chunks)

    def predict(chunks):
        return engine.predict(stand_in, chunks, profile_id)

    itemsize = max(1, dtype.itemsize)
    now = predict(chunks)
    current_bytes = now["chunk_size_mb"] * MiB
    rec_bytes = rec["chunk_size_mb"] * MiB
    low = max(1.0, min(current_bytes, rec_bytes, engine.recommender.min_chunk_bytes) / 2)
    high = max(low, float(nbytes))
    data["curve"] = prediction_curve(predict, shape, itemsize, candidate_sizes(low, high))
    data["current"] = {
        "chunks": largest,
        "chunk_bytes": current_bytes,
        "seconds": now["predicted_time_s"],
        "peak_bytes": now["predicted_peak_memory_mb"] * MiB,
    }
    data["recommended"] = {
        "chunks": tuple(rec["chunks"]),
        "chunk_bytes": float(rec_bytes),
        "seconds": rec["predicted_time_s"],
        "peak_bytes": rec["predicted_peak_memory_mb"] * MiB,
    }
    data["budget_bytes"] = float(rec["memory_budget_mb"] * MiB)
    if not profile["workers"]:  # a cluster's peaks are its workers', not this process's
        then = observations[-1].baseline_bytes if observations else 0.0  # the newest
        data["predicted_peak_label"] = predicted_peak_label(then, _memory.in_use_now())
    data["ranges"], data["budget_label"], data["budget_drawn"] = _figure.prediction_axes(data)
    data["note"] = "; ".join(notes)
    return data


# ---------------------------------------------------------------------------
# plot_profile: bokeh (HTML, notebooks) and matplotlib (PNG, SVG, PDF)
# ---------------------------------------------------------------------------


def _suffix(filename) -> str | None:
    if filename is None:
        return None
    suffix = Path(os.fspath(filename)).suffix.lower()
    if suffix not in BOKEH_SUFFIXES + MATPLOTLIB_SUFFIXES:
        raise ValueError(
            f"cannot write a profile plot to {os.fspath(filename)!r}: unsupported suffix "
            f"{suffix or '(none)'!r}; use {', '.join(BOKEH_SUFFIXES)} (bokeh) or "
            f"{', '.join(MATPLOTLIB_SUFFIXES)} (matplotlib)"
        )
    return suffix


def plot_profile(engine, profile_id: str, filename=None):
    """Draw a profile; write it to ``filename`` when given.

    Panels: the compute time of each sampled task against the bytes its output
    holds, and against when it started (both coloured by the task's operation);
    the process memory during the profiled computes (the tasks' readings before
    and after) with the measured peak; the wall time and the peak memory against
    chunk size, predicted by the profile's fitted model
    (:meth:`AdaptiveChunkingEngine.predict` at sizes spaced as the recommender's
    candidates) and measured by each profiled compute, with the current and the
    recommended chunk size marked, and the memory budget drawn, or named when it
    is far above (or below) the peaks. Legends sit below their panels.

    Parameters
    ----------
    engine : AdaptiveChunkingEngine
    profile_id : str
        From ``engine.profile_array``; the profile must have been computed.
    filename : str or path, optional
        ``.html``: a bokeh page with its JavaScript inlined (``bokeh.resources.INLINE``,
        so it opens without internet access: 1.7 MB for a small profile, 2.5 MB
        with 10,000 task records); ``.png``, ``.svg`` or
        ``.pdf``: a matplotlib figure. None: nothing is written.

    Returns
    -------
    bokeh layout or matplotlib.figure.Figure
        bokeh's for ``.html`` and, when bokeh is installed, for None (show it with
        ``bokeh.plotting.show``); matplotlib's otherwise (a notebook shows it).

    Raises
    ------
    KeyError
        For an unknown profile id.
    ValueError
        For an unsupported suffix, or a profile with no compute yet.
    ImportError
        When the plotting library the suffix needs is missing.

    Examples
    --------
    >>> import dask.array as da
    >>> from dask.array.adaptive_chunking import AdaptiveChunkingEngine
    >>> engine = AdaptiveChunkingEngine()
    >>> x = da.random.random((1000, 1000), chunks=100)
    >>> pid = engine.profile_array(x)
    >>> _ = (x + x.T).sum().compute()
    >>> figure = engine.plot_profile(pid)  # bokeh.plotting.show(figure) displays it
    >>> type(figure).__name__
    'Column'
    >>> engine.close()

    ``engine.plot_profile(pid, filename="profile.html")`` writes the page.
    """
    suffix = _suffix(filename)
    if suffix is None:  # bokeh, as dask.diagnostics; else matplotlib
        backend = "bokeh"
        try:
            import bokeh  # noqa: F401
        except ImportError:
            try:
                import matplotlib  # noqa: F401
                backend = "matplotlib"
            except ImportError:
                pass  # neither: the error names bokeh
    else:
        backend = "bokeh" if suffix in BOKEH_SUFFIXES else "matplotlib"
    what = "plot_profile" + ("" if filename is None else f"(filename='...{suffix}')")
    _require(backend, backend, what)
    data = profile_data(engine, profile_id)
    if backend == "bokeh":
        figure = _figure.draw_bokeh(data)
        if filename is not None:
            from bokeh.io import save
            from bokeh.resources import INLINE

            save(figure, filename=os.fspath(filename), resources=INLINE, title=data["title"])
        return figure
    figure = _figure.draw_matplotlib(data)
    if filename is not None:
        figure.savefig(os.fspath(filename))
    return figure


# ---------------------------------------------------------------------------
# visualize: the task graph, coloured by what each task measured
# ---------------------------------------------------------------------------


def match_keys(graph_keys: Iterable[Any], measured: Container[Any] | Iterable[Any]
               ) -> dict[Any, tuple[Any, bool]]:
    """Which measured task computed each task of a graph: key -> (measured key, fused).

    A key the profile recorded matches itself. Optimizing a compute of a larger
    expression fuses a chunk's tasks into one, named after the first and the last
    operation (``('random_sample-b9..', 0, 1)`` runs inside
    ``('random_sample-sum-ca..', 0, 1)`` of ``(x + 1).sum()``): a key not recorded
    matches the recorded key with its block index whose name starts with its own
    operation's name and a dash (``fused`` True). Other keys are left out.

    >>> match_keys([("x-1", 0), ("x-1", 1), ("y-2", 0)], [("x-1", 0), ("x-add-9", 1)])
    {('x-1', 0): (('x-1', 0), False), ('x-1', 1): (('x-add-9', 1), True)}
    """
    from dask.utils import key_split

    measured = set(measured)
    by_index: dict[tuple, list] = {}
    for k in measured:
        if isinstance(k, tuple) and k and isinstance(k[0], str):
            by_index.setdefault(k[1:], []).append(k)
    out = {}
    for key in graph_keys:
        if key in measured:
            out[key] = (key, False)
        elif isinstance(key, tuple) and key and isinstance(key[0], str):
            prefix = key_split(key[0]) + "-"
            found = sorted((k for k in by_index.get(key[1:], ()) if k[0] != key[0]
                            and key_split(k[0]).startswith(prefix)), key=str)
            if found:
                out[key] = (found[0], True)
    return out


def task_attributes(metrics: Sequence[Any], color_by: str = "output",
                    graph_keys: Iterable[Any] | None = None) -> dict[str, Any]:
    """Graphviz node attributes of the measured tasks, for ``dask.dot.to_graphviz``.

    A task sampled several times (several computes) shows its largest value.
    Values are scaled from 0 to the largest onto :data:`PALETTE` (light to dark).

    Parameters
    ----------
    metrics : sequence of ChunkMemoryMetric
    color_by : {"output", "growth", "time"}
        The output's size (``dask.sizeof``, MiB), the process memory growth across
        the task (MiB, negative counted as 0) or the compute time (ms).
    graph_keys : iterable, optional
        The keys of the graph to draw, matched to the measured ones by
        :func:`match_keys` (a task measured as part of a fused one gets a dashed
        outline); default the measured keys themselves.

    Returns
    -------
    dict
        ``function_attributes`` and ``data_attributes`` (key -> attributes: a
        filled colour, the value in the task's label, a tooltip with the task's
        measurements in MiB and ms), ``values``
        (measured key -> value), ``matched`` and ``fused`` (how many graph keys
        matched, and how many of them through a fused task), ``high`` (the largest
        value) and ``unit``.

    >>> from dask.array.adaptive_chunking import ChunkMemoryMetric as M
    >>> a = task_attributes([M(("add-1", 0), (), 0, 0, 0, 1.0, 10.0, 10.0, output_bytes=0),
    ...                      M(("add-1", 1), (), 0, 0, 0, 1.0, 10.0, 10.0,
    ...                        output_bytes=2**20)])
    >>> a["function_attributes"][("add-1", 1)]["fillcolor"], a["high"], a["unit"]
    ('#800026', 1.0, 'MiB')
    >>> a["function_attributes"][("add-1", 0)]["label"]  # graphviz's line break
    'add\\\\n0 B'
    """
    from dask.utils import format_bytes

    if color_by not in MEASURES:
        raise ValueError(f"color_by={color_by!r} is not one of {sorted(MEASURES)}")
    unit = MEASURES[color_by][1]
    values: dict[Any, float] = {}
    details: dict[Any, str] = {}
    for m in metrics:
        value = {
            "output": _output_bytes(m) / MiB,
            "growth": max(0.0, m.memory_delta_mb),
            "time": m.compute_time_ms,
        }[color_by]
        key = m.chunk_key
        if key in values and values[key] >= value:
            continue
        values[key] = value
        details[key] = (
            f"{key}: output {_output_bytes(m) / MiB:.3f} MiB, process memory "
            f"{m.memory_peak_before_mb:.1f} -> {m.memory_peak_after_mb:.1f} MiB, "
            f"{m.compute_time_ms:.2f} ms" + (", failed" if m.failed else "")
        )
    high = max(values.values(), default=0.0)
    if graph_keys is None:
        matches = {k: (k, False) for k in values}
    else:
        matches = match_keys(graph_keys, values)
    function_attributes, data_attributes = {}, {}
    for key, (source, fused) in matches.items():
        value = values[source]
        level = round((len(PALETTE) - 1) * value / high) if high > 0 else 0
        tooltip = details[source] if not fused else f"measured in fused task {details[source]}"
        colour = {"style": "filled,dashed" if fused else "filled",
                  "fillcolor": PALETTE[level],
                  "fontcolor": "white" if level >= _DARK else "black",
                  "tooltip": tooltip}
        name = key_split(key)
        text = format_bytes(round(value * MiB)) if unit == "MiB" else f"{value:.2f} {unit}"
        function_attributes[key] = dict(colour, label=f"{name}\\n{text}")
        data_attributes[key] = dict(colour)
    return {"function_attributes": function_attributes, "data_attributes": data_attributes,
            "values": values, "matched": len(matches),
            "fused": sum(1 for _, fused in matches.values() if fused),
            "high": high, "unit": unit}


def _check_graphviz() -> None:
    fix = ("pip install graphviz (or conda install python-graphviz), and Graphviz "
           "itself: apt-get install graphviz, brew install graphviz or conda install "
           "graphviz")
    try:
        import graphviz  # noqa: F401
    except ImportError as e:
        raise ImportError(f"visualize needs the graphviz Python package: {fix}") from e
    if shutil.which("dot") is None:
        raise RuntimeError(f"visualize needs Graphviz's `dot` program, not found on PATH: {fix}")


@contextlib.contextmanager
def _unprofiled() -> Iterator[None]:
    """Optimize graphs in this thread without the engine instrumenting them (as it
    does not inside a measured task): drawing a graph is no compute."""
    depth = getattr(_tasks.in_task, "depth", 0)
    _tasks.in_task.depth = depth + 1
    try:
        yield
    finally:
        _tasks.in_task.depth = depth


def visualize(engine, profile_id: str, filename="adaptive-chunking.svg", *,
              collection=None, color_by: str = "output", optimize_graph: bool = True,
              profiled: Callable[[], Any] | None = None, **kwargs):
    """Draw the profiled array's task graph, measured tasks coloured.

    Tasks are matched to the profile's sampled records by key, in the graph as
    Dask optimizes it for a compute (``optimize_graph=True``), which is how the
    records name them. Tasks that were not sampled, or that a compute of a larger
    expression fused under other names, stay white; the graph's label says how
    many were matched. Drawn by ``dask.base.visualize_dsk``, what
    ``dask.visualize`` uses, with per-key ``function_attributes`` and
    ``data_attributes`` (:func:`task_attributes`).

    Graphviz's layout takes time that grows faster than the graph: a few hundred
    tasks take a second, 10,000 one to two minutes (``benchmarks/bench_plots.py``).
    Draw a small pilot of the same workload instead.

    Parameters
    ----------
    engine : AdaptiveChunkingEngine
    profile_id : str
        A profile that has been computed.
    filename : str or path, optional
        Written by graphviz; the suffix picks the format (``.svg``, ``.png``,
        ``.pdf``, ``.dot``...). None: nothing is written.
    collection : dask collection or list of them, optional
        What to draw instead of the profiled array, e.g. the expression that was
        computed (``(x + x.T).sum()``): its optimized graph names the tasks as the
        profile recorded them. Default the profiled array, while it exists.
    color_by : {"output", "growth", "time"}
        See :func:`task_attributes`.
    optimize_graph : bool
        Draw the optimized graph (default), whose keys the profile recorded.
    profiled : callable, optional
        Returns the profiled array while it exists (the engine passes it).
    **kwargs
        Passed on to ``dask.visualize`` / ``dask.dot.to_graphviz`` (``rankdir``,
        ``format``...; ``function_attributes`` and ``data_attributes`` given here
        win over the colours for their keys).

    Returns
    -------
    IPython.display.SVG or Image, or None
        What ``dask.visualize`` returns.

    Raises
    ------
    KeyError
        For an unknown profile id.
    ValueError
        For a profile with no compute yet, or when the profiled array is gone and
        no ``collection`` is given.
    ImportError, RuntimeError
        When the graphviz package or its ``dot`` program is missing.

    Examples
    --------
    With ``x`` profiled as ``pid`` (not run here: it needs Graphviz)::

        y = (x + x.T).sum()
        y.compute()
        engine.visualize(pid, filename="graph.svg")
        engine.visualize(pid, filename="expression.svg", collection=y, color_by="time")
    """
    _check_graphviz()
    from dask.base import collections_to_expr, unpack_collections, visualize_dsk

    _, metrics, _ = _measured(engine, profile_id, "visualize")
    if collection is None:
        collection = profiled() if profiled is not None else None
        if collection is None:
            raise ValueError(
                f"the array profiled as {profile_id!r} no longer exists: pass "
                "collection= (the array, or the expression you computed from it)"
            )
    collections = collection if isinstance(collection, (list, tuple)) else [collection]
    with _unprofiled():
        args, _ = unpack_collections(*collections)
        if not args:
            raise TypeError(f"collection must be a dask collection, got {collection!r}")
        dsk = collections_to_expr(args, optimize_graph=optimize_graph).__dask_graph__()
    attrs = task_attributes(metrics, color_by, graph_keys=dsk.keys())
    what, unit = MEASURES[color_by]
    legend = (
        f"profile {profile_id}: measured tasks coloured by {what}, light yellow 0 {unit} "
        f"to dark red {attrs['high']:.3g} {unit}; {attrs['matched']} of {len(dsk)} tasks "
        f"matched ({attrs['fused']} dashed: measured inside a fused task) of "
        f"{len(attrs['values'])} sampled; white: not sampled, or renamed by optimization"
    )
    function_attributes = {**attrs["function_attributes"],
                           **(kwargs.pop("function_attributes", None) or {})}
    data_attributes = {**attrs["data_attributes"],
                       **(kwargs.pop("data_attributes", None) or {})}
    kwargs.setdefault("label", legend)
    kwargs.setdefault("labelloc", "t")
    kwargs.setdefault("engine", "graphviz")
    return visualize_dsk(
        dsk,
        filename=None if filename is None else os.fspath(filename),
        optimize_graph=optimize_graph,
        function_attributes=function_attributes,
        data_attributes=data_attributes,
        **kwargs,
    )
