"""The pure pieces, exactly: planning a compute, attributing tasks, record codecs,
folding a compute into profile updates, and planning a chunking."""

from __future__ import annotations

import numpy as np
import pytest
from dask._task_spec import Alias, Task, TaskRef

import dask.array as da
from dask.array._adaptive_chunking import attribution, folding, graph, model, planning, records
from dask.array._adaptive_chunking.profiles import Profile
from dask.array._adaptive_chunking.tasks import TaskError

MiB = 2**20


def batch(rows: list[dict], keys: list) -> records.RecordBatch:
    """A batch of records whose columns are zero but for ``rows``' fields."""
    data = np.zeros(len(rows), records.RECORD_DTYPE)
    for i, row in enumerate(rows):
        for name, value in row.items():
            data[name][i] = value
    return records.RecordBatch(data, keys, [None] * len(rows), [None] * len(rows))


# -- what the fold reads off a compute's graph ----------------------------------------


def _optimized_tasks(array) -> dict:
    """The tasks (no aliases or data) of ``array``'s graph as Dask optimizes it."""
    from dask._task_spec import convert_legacy_graph

    dsk = da.optimization.optimize(array.__dask_graph__(), array.__dask_keys__())
    return {k: t for k, t in convert_legacy_graph(dict(dsk)).items() if isinstance(t, Task)}


def _fused_op_by_inner_keys(node, ops):
    """``fused_op`` as first written: the whole list of inner keys, then a scan."""
    from dask._task_spec import _execute_subgraph
    from dask.utils import key_split

    if node is None or node.func is not _execute_subgraph:
        return None
    return next((key_split(attribution.layer_name(k)) for k in attribution._inner_keys(node)
                 if key_split(attribution.layer_name(k)) in ops), None)


@pytest.mark.parametrize("expr, contracts", [
    (lambda a, b: (a @ b).sum(), True),
    (lambda a, b: (da.tensordot(a, b, axes=1) + 1).mean(axis=0), True),
    (lambda a, b: ((a + 1) @ (b * 2)).T.sum(axis=1), True),
    (lambda a, b: (a + b.T).sum(), False),
])
def test_fused_op_finds_what_the_list_of_inner_keys_did(expr, contracts):
    a = da.random.random((40, 40), chunks=10)
    b = da.random.random((40, 40), chunks=10)
    tasks = _optimized_tasks(expr(a, b))
    ops = model.CONTRACTIONS
    want = {k: op for k, t in tasks.items() if (op := _fused_op_by_inner_keys(t, ops))}
    assert bool(want) == contracts
    split: dict = {}
    got = {k: op for k, t in tasks.items() if (op := attribution.fused_op(t, ops, split))}
    assert got == want
    facts = folding.GraphFacts(tasks=tasks, aliases={})
    assert attribution.fused_ops(facts, list(tasks), ops) == want
    assert {k: facts.fused_op_of()(k) for k in want} == want


def test_fused_op_takes_the_first_contraction_depth_first():
    inner = Task(("tensordot-1", 0), int, 1)
    nested = Task.fuse(inner, Task(("add-2", 0), int, TaskRef(("tensordot-1", 0))), key=("add-2", 0))
    top = Task.fuse(nested, Task(("matmul-3", 0), int, TaskRef(("add-2", 0))), key=("matmul-3", 0))
    assert _fused_op_by_inner_keys(top, model.CONTRACTIONS) == "matmul"
    assert attribution.fused_op(top, model.CONTRACTIONS) == "matmul"
    assert attribution.fused_op(nested, model.CONTRACTIONS) == "tensordot"
    assert attribution.fused_op(inner, model.CONTRACTIONS) is None  # not fused


def test_dependencies_of_resolves_aliases_only_where_a_task_reads_one():
    tasks = {"a": Task("a", int, 1), "b": Task("b", int, TaskRef("a")),
             "c": Task("c", max, TaskRef("b"), TaskRef("alias"))}
    facts = folding.GraphFacts(tasks=tasks, aliases={"alias": "a"})
    deps = facts.dependencies_of(["a", "b", "c", "missing"])
    assert {k: sorted(v) for k, v in deps.items()} == {"a": [], "b": ["a"], "c": ["a", "b"]}


def _rechunk_only_by_loops(dependencies):
    only: dict = {}
    for key, deps in dependencies.items():
        rechunk = "rechunk" in str(attribution.layer_name(key))
        for d in deps:
            only[d] = rechunk and only.get(d, True)
    return {d for d, flag in only.items() if flag}


def test_read_only_by_rechunks_matches_the_loop_it_replaced():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = st.sampled_from(["rechunk-merge-1", "rechunk-split-2", "sum-3", "x", 7])
    key = st.one_of(names, st.tuples(names, st.integers(0, 2)))

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(key, st.lists(key, max_size=4), max_size=12))
    def check(dependencies):
        assert attribution.read_only_by_rechunks(dependencies) == \
            _rechunk_only_by_loops(dependencies)

    check()


# -- the plan of one compute, shared by the local hook and the scheduler ------------


def test_plan_graph_of_the_only_profiled_array_needs_no_attribution():
    x = da.ones((100, 100), chunks=50)
    y = (x + 1).sum()
    plan = attribution.plan_graph(y.__dask_graph__(), [x.name], {x.name: x.shape})
    assert plan.names == [x.name] and plan.whole
    assert plan.downstream[x.name] == graph.Downstream(frozenset(), False, ("add", "sum"))


def test_plan_graph_with_an_unrelated_array_attributes_tasks():
    x, z = da.ones((100, 100), chunks=50), da.zeros((100, 100), chunks=50)
    y = da.stack([x.T, z])
    plan = attribution.plan_graph(y.__dask_graph__(), [x.name], {x.name: x.shape})
    assert not plan.whole  # z's tasks are in the compute too
    assert plan.downstream[x.name].square  # a transpose follows


def test_attribute_tags_only_the_tasks_of_the_profiled_array():
    graph_ = {
        ("x", 0): Task(("x", 0), np.ones, 3),
        ("z", 0): Task(("z", 0), np.zeros, 3),
        ("sum", 0): Task(("sum", 0), np.sum, TaskRef(("x", 0))),
        "out": Alias("out", ("sum", 0)),
    }
    found = attribution.attribute(graph_, ["out", ("z", 0)], {"x": frozenset({"p"})})
    assert set(found.tasks) == {("x", 0), ("z", 0), ("sum", 0)}  # the alias is no task
    assert found.outputs == {("sum", 0), ("z", 0)}
    assert found.tags[found.tag_of[("x", 0)]] == {"p"}
    assert found.tags[found.tag_of[("sum", 0)]] == {"p"}  # it reads x
    assert found.tags[found.tag_of[("z", 0)]] == frozenset()


def test_attribute_gives_every_task_to_the_profiles_of_a_whole_lineage():
    graph_ = {("x", 0): Task(("x", 0), np.ones, 3), ("z", 0): Task(("z", 0), np.ones, 2)}
    found = attribution.attribute(graph_, [("x", 0), ("z", 0)], frozenset({"p"}))
    assert found.tags == [frozenset({"p"})] and set(found.tag_of.values()) == {0}


# -- record codecs ------------------------------------------------------------------


def test_local_and_cluster_records_become_the_same_columns():
    local = records.batch_from_records([records.local_record(
        ("x", 0), 1.0, 1.5, 0, 0, 800, None, None, 7, 0, True, False, 800, 0, 800)])
    cluster, groups = records.batch_from_cluster(
        [records.cluster_record(["x", 0], 1.0, 1.5, 800, "tcp://w", 7, ("p",), False)],
        outputs={("x", 0)}, as_key=lambda k: tuple(k) if isinstance(k, list) else k)
    assert local.keys == cluster.keys == [("x", 0)]
    for name in ("t0", "t1", "nbytes", "logical", "membytes", "tag", "out", "failed"):
        assert local.data[name][0] == cluster.data[name][0], name
    assert groups == [("p",)]
    assert not records.cluster_failed(records.cluster_record("k", 0, 0, 0, "w", 0, (), False))


def test_record_failed_reads_the_local_layout():
    record = records.local_record("k", 0, 0, 0, 0, 0, None, None, 0, 0, False, True, 0, 0, 0)
    assert records.record_failed(record)


# -- folding -----------------------------------------------------------------------


def test_fold_splits_a_compute_between_its_profiles():
    x, z = da.ones(100, chunks=50), da.zeros(100, chunks=50)
    px, pz = Profile("px", x), Profile("pz", z)
    b = batch([
        {"t0": 0.0, "t1": 1.0, "logical": 400, "nbytes": 400, "worker": 1, "tag": 0},
        {"t0": 0.5, "t1": 2.0, "logical": 400, "nbytes": 400, "worker": 2, "tag": 1},
        {"t0": 2.0, "t1": 3.0, "logical": 8, "nbytes": 8, "worker": 1, "tag": 2, "out": True},
    ], [("x", 0), ("z", 0), ("sum", 0)])
    tags = [frozenset({px}), frozenset({pz}), frozenset({px, pz})]
    out = folding.fold(b, tags, [px, pz], "complete", peak=5 * MiB, baseline=2 * MiB)
    assert out.summary == {
        "status": "complete", "tasks": 3, "wall_time_s": 3.0, "peak_memory_mb": 5.0,
        "baseline_memory_mb": 2.0, "results_memory_mb": 8 / MiB, "concurrency": 2,
    }
    assert out.observation.n_tasks == 3 and out.observation.array_bytes == 808
    ux, uz = out.updates
    assert ux.profile is px and ux.part.keys == [("x", 0), ("sum", 0)]
    assert uz.part.keys == [("z", 0), ("sum", 0)]
    assert ux.observation.array_bytes == x.nbytes and ux.observation.chunk_bytes == 400
    assert ux.observation.task_seconds == 2.0  # 1 s + 1 s
    assert ux.error is None and ux.signature is None


def test_fold_names_the_task_that_raised():
    x = da.ones(10, chunks=5)
    p = Profile("p", x)
    b = batch([{"t0": 0, "t1": 1, "failed": True}], [("x", 1)])
    out = folding.fold(b, [frozenset({p})], [p], "failed", peak=0, baseline=0,
                       error=TaskError(("x", 1), "ZeroDivisionError: boom", False))
    assert out.updates[0].error == "task ('x', 1) raised ZeroDivisionError: boom"
    out = folding.fold(b, [frozenset({p})], [p], "failed", peak=0, baseline=0)
    assert out.updates[0].error == "task ('x', 1) raised"  # from a cluster: the key only
    out = folding.fold(b, [frozenset({p})], [p], "incomplete", peak=0, baseline=0,
                       error=TaskError(("x", 1), "KeyboardInterrupt", True))
    assert out.updates[0].error == "task ('x', 1) was interrupted (KeyboardInterrupt)"


def test_fold_of_a_compute_with_no_record():
    p = Profile("p", da.ones(10, chunks=5))
    out = folding.fold(batch([], []), [frozenset({p})], [p], "incomplete", peak=0, baseline=0)
    assert out.observation is None and out.updates[0].observation is None
    assert out.summary["tasks"] == 0


# -- planning a chunking -----------------------------------------------------------


def observations(chunk_bytes: float, n: int, seconds_per_task: float, peak: float):
    return [model.Observation(
        array_bytes=chunk_bytes * n, chunk_bytes=chunk_bytes, n_tasks=n,
        task_seconds=n * seconds_per_task, wall_seconds=n * seconds_per_task / 2,
        peak_bytes=peak, baseline_bytes=100 * MiB, results_bytes=0, concurrency=2)]


SETTINGS = planning.PlanSettings(50.0, MiB, None, 0.8, 0.1, None)


@pytest.mark.parametrize("limit", [2**30, 16 * 2**30])
def test_plan_keeps_the_predicted_peak_in_the_budget(limit):
    fit = model.fit_workload(observations(80_000, 400, 1e-3, 300 * MiB), 0.0)
    rec = planning.plan(fit, (20000, 20000), 8, SETTINGS, limit=limit)
    assert rec.memory_budget_bytes == SETTINGS.budget(limit) == int(limit * 0.4)
    assert rec.fits_budget == (rec.predicted_peak_bytes <= rec.memory_budget_bytes)
    assert all(20000 % c == 0 or 20000 % c >= c / 2 for c in rec.chunks)  # no sliver
    assert rec.chunk_bytes >= MiB


def test_plan_keeps_whole_what_was_whole():
    fit = model.fit_workload(observations(80_000, 400, 1e-3, 300 * MiB), 0.0)
    rec = planning.plan(fit, (4000, 100), 8, SETTINGS, limit=2**34,
                        current_chunks=((100,) * 40, (100,)))
    assert rec.chunks[1] == 100 and "kept whole" in rec.reason


def test_plan_without_measurements():
    assert planning.plan(None, (100,), 8, SETTINGS, limit=2**30) is None
    empty = planning.plan(None, (0, 10), 8, SETTINGS, limit=2**30)
    assert empty.binding == "array" and empty.reason == "the array is empty"


def test_checked_arguments_name_the_bad_one():
    with pytest.raises(ValueError, match="num_dimensions=3"):
        planning.checked_arguments((10, 10), 8, 3, None, None, None, None, None)
    with pytest.raises(ValueError, match="storage_chunks"):
        planning.checked_arguments((10, 10), 8, None, (5,), None, None, None, None)
    assert planning.checked_arguments((10,), 8, None, [5], 0, None, None, None) == (
        (5,), None, None)
