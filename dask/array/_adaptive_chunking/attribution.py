"""Which tasks of a compute belong to which profile, and the plan of one compute.

Pure functions of task graphs. :func:`measured_tasks` finds the tasks a compute
runs, :func:`assign_tags` attributes each to the profiles it works for, and
:func:`instrument` applies that to a local compute (each task becomes a
:class:`~.tasks.MeasuredTask`); the distributed scheduler's optimizer
(``cluster_scheduler.RemoteOptimizer``) applies the same attribution with
annotations instead.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import NamedTuple

from dask._task_spec import Alias, GraphNode, Task, _execute_subgraph, convert_legacy_graph
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph
from dask.utils import ensure_dict

from dask.array._adaptive_chunking import graph as _graph
from dask.array._adaptive_chunking.tasks import (
    ComputeCollector,
    ComputeSink,
    MeasuredTask,
    current_pid,
)

__all__ = [
    "GraphPlan", "plan_graph", "Attribution", "attribute",
    "layer_name", "assign_tags", "measured_tasks", "same_layers", "instrument",
    "dependencies_of", "fused_ops", "fused_op", "read_only_by_rechunks",
]


def dependencies_of(collector, keys) -> dict:
    """The keys each of ``keys`` reads, with aliases resolved to the tasks behind them.

    ``collector`` is anything with the ``tasks`` and ``aliases`` of
    :func:`measured_tasks`.
    """
    tasks, aliases = collector.tasks, collector.aliases
    plain = aliases.keys().isdisjoint  # most tasks read no alias: their own set, no copy
    out = {}
    for key in keys:
        node = tasks.get(key)
        if node is not None:
            deps = node.dependencies
            out[key] = deps if plain(deps) else [aliases.get(d, d) for d in deps]
    return out


def fused_ops(collector, keys, ops: frozenset) -> dict:
    """For tasks that fuse one of ``ops`` inside them, the name of that op.

    Blockwise fusion names a fused task after its last layer: a matmul fused into
    the sum of its products is a ``chunk_sum`` task. The fused task keeps its inner
    keys, which still name the matmul.
    """
    out = {}
    tasks = collector.tasks
    split: dict = {}  # layer name -> its op: thousands of inner keys share a few layers
    for key in keys:
        op = fused_op(tasks.get(key), ops, split)
        if op is not None:
            out[key] = op
    return out


def fused_op(node, ops: frozenset, split: dict | None = None) -> str | None:
    """The first of ``ops`` fused inside the task ``node`` (see :func:`fused_ops`),
    or None. ``split`` caches each layer name's op across calls."""
    if node is None or node.func is not _execute_subgraph:
        return None
    from dask.utils import key_split

    split = {} if split is None else split
    stack = [node]  # the order of _inner_keys: a subgraph's keys, then its subgraphs'
    while stack:
        args = stack.pop().args
        if not (args and isinstance(args[0], dict)):
            continue
        inner = args[0]
        for key in inner:
            layer = layer_name(key)
            op = split.get(layer)
            if op is None:
                op = split[layer] = key_split(layer)
            if op in ops:
                return op
        stack.extend(v for v in reversed(inner.values())
                     if isinstance(v, Task) and v.func is _execute_subgraph)
    return None


def read_only_by_rechunks(dependencies: dict) -> set:
    """Keys whose every reader (in ``dependencies``: key -> keys it reads) is a rechunk.

    >>> sorted(read_only_by_rechunks({("rechunk-merge-1", 0): ["a", "b"], ("sum-2", 0): ["b"]}))
    ['a']
    """
    rechunks: dict = {}  # layer name -> whether it is a rechunk
    for key in dependencies:
        name = layer_name(key)
        if name not in rechunks:
            rechunks[name] = "rechunk" in str(name)
    if not any(rechunks.values()):
        return set()  # the usual case: no rechunk reads anything
    only: dict = {}
    for key, deps in dependencies.items():
        if rechunks[layer_name(key)]:
            for d in deps:
                only.setdefault(d, True)
        else:
            only.update(dict.fromkeys(deps, False))
    return {d for d, flag in only.items() if flag}



def layer_name(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else key


def _is_finalize(key) -> bool:
    name = layer_name(key)
    return (name if type(name) is str else str(name)).startswith("finalize-")


def _inner_keys(node) -> tuple:
    """Keys fused inside a task (``Task.fuse`` keeps them in its subgraph), at any
    depth: a fused subgraph may hold tasks that are fused subgraphs themselves."""
    if node.func is _execute_subgraph and node.args and isinstance(node.args[0], dict):
        inner = node.args[0]
        keys = list(inner)
        for value in inner.values():
            if isinstance(value, Task):
                keys.extend(_inner_keys(value))
        return tuple(keys)
    return ()


def assign_tags(dsk, task_keys, named: dict) -> tuple[dict, list[frozenset]]:
    """Attribute each task of an optimized graph to the profiles it works for.

    ``named`` maps a profiled array's name to its profiles. A task works for a
    profile when it computes one of the array's keys (its own key, a key fused
    inside it, or a key that aliases it), depends on such a task, or is a
    dependency of one. Tasks of unrelated arrays in the same compute belong to no
    profile. Returns the index of each task's set of profiles and the distinct sets.
    """
    empty: frozenset = frozenset()
    seeds: dict = {}

    def seed(key, found):
        if found:
            seeds[key] = seeds.get(key, empty) | found

    def inner_profiles(inner) -> frozenset:
        # Blockwise fusion names inner keys "<layer>_.<i>_.<j>": match by prefix.
        name = layer_name(inner)
        found = named.get(name)
        if found is not None:
            return found
        if isinstance(name, str):
            for n, group in named.items():
                if name.startswith(n):
                    return group
        return empty

    for key, node in dsk.items():
        found = named.get(layer_name(key), empty)
        if type(node) is Alias:
            seed(node.target, found)
        elif isinstance(node, Task):
            for inner in _inner_keys(node):
                found = found | inner_profiles(inner)
        seed(key, found)

    # Dependencies before dependents (iterative depth-first post-order).
    order: list = []
    seen: set = set()
    for root in dsk:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(dsk[root].dependencies))]
        while stack:
            key, deps = stack[-1]
            for d in deps:
                if d not in seen and d in dsk:
                    seen.add(d)
                    stack.append((d, iter(dsk[d].dependencies)))
                    break
            else:
                stack.pop()
                order.append(key)

    down: dict = {}  # profiles of the seeds a task depends on (or is)
    for key in order:
        tag = seeds.get(key, empty)
        for d in dsk[key].dependencies:
            t = down.get(d, empty)
            if t and not t <= tag:
                tag = tag | t
        down[key] = tag
    up: dict = {}  # profiles of the seeds that depend on a task
    for key in reversed(order):
        tag = seeds.get(key, empty) | up.get(key, empty)
        if tag:
            for d in dsk[key].dependencies:
                t = up.get(d, empty)
                if not tag <= t:
                    up[d] = t | tag

    tags: list[frozenset] = []
    index: dict[frozenset, int] = {}
    out = {}
    for key in task_keys:
        group = down.get(key, empty) | up.get(key, empty)
        i = index.get(group)
        if i is None:
            i = index[group] = len(tags)
            tags.append(group)
        out[key] = i
    return out, tags


def measured_tasks(dsk, keys) -> tuple[dict, dict, dict, set]:
    """The tasks of an optimized graph that a compute of ``keys`` runs and measures.

    Returns the graph as a flat dict of task-spec nodes, its plain ``Task`` nodes
    that ``keys`` depend on (key -> node; an already measured task as its plain
    task), its aliases (key -> target key) and the keys whose outputs the compute
    returns (through an alias or Dask's finalize step). See :func:`instrument`
    for what is left out and why.
    """
    if isinstance(dsk, HighLevelGraph):
        dsk = ensure_dict(dsk)
    if not _converted(dsk):
        dsk = convert_legacy_graph(dsk)
    requested = list(flatten(keys)) if keys is not None else list(dsk)
    # Dask's optimization culls the graph, so every task is usually needed: then
    # the tasks are read off the graph in one pass, not found by a walk (this is
    # paid on every compute, 2 us a task for the walk).
    read = set().union(*[node.dependencies for node in dsk.values()])
    if not dsk.keys() - read <= set(requested):
        return _walked(dsk, requested)
    return _read(dsk, requested, dsk)


def _converted(dsk: dict) -> bool:
    """Whether ``dsk`` is already what ``convert_legacy_graph`` would make of it."""
    for key, node in dsk.items():
        if not isinstance(node, GraphNode) or (type(node) is Alias and node.target == key):
            return False
    return True


def _walked(dsk: dict, requested: list) -> tuple[dict, dict, dict, set]:
    """:func:`measured_tasks` for a graph with tasks that nothing requested needs:
    only what a walk from ``requested`` reaches."""
    reached: set = set()
    stack = [k for k in requested if k in dsk]
    while stack:
        key = stack.pop()
        if key not in reached:
            reached.add(key)
            stack.extend(d for d in dsk[key].dependencies if d in dsk)
    return _read(dsk, requested, reached)


def _read(dsk: dict, requested: list, needed) -> tuple[dict, dict, dict, set]:
    """:func:`measured_tasks`'s answer for the keys ``needed`` of ``dsk``."""
    outputs, joins = set(), set()
    stack = list(requested)
    while stack:  # only through what passes results on: aliases and the finalize step
        key = stack.pop()
        node = dsk.get(key)
        if node is None or key in outputs or key in joins:
            continue
        if type(node) is Alias or _is_finalize(key):
            joins.add(key)
            stack.extend(node.dependencies)
        else:
            outputs.add(key)
    tasks, aliases = {}, {}
    for key in needed:
        node = dsk[key]
        kind = type(node)
        if kind is Alias:
            aliases[key] = node.target
        elif (kind is Task or kind is MeasuredTask) and not _is_finalize(key):
            # A measured task is already instrumented (by dask.optimize, say).
            tasks[key] = node if kind is Task else node.plain()
    return dsk, tasks, aliases, outputs


def same_layers(hlg: HighLevelGraph, tasks: dict) -> HighLevelGraph:
    """``hlg``'s layers and dependencies, materialized with the nodes of ``tasks``."""
    from dask.highlevelgraph import MaterializedLayer

    layers = {}
    for name, layer in hlg.layers.items():
        layers[name] = MaterializedLayer(
            {k: tasks[k] if k in tasks else layer[k] for k in layer},
            annotations=layer.annotations,
            collection_annotations=layer.collection_annotations,
        )
    return HighLevelGraph(layers, {k: set(v) for k, v in hlg.dependencies.items()})


def instrument(dsk, keys, named, sink: ComputeSink) -> tuple[dict, ComputeCollector]:
    """Replace every plain ``Task`` of an optimized graph by a :class:`MeasuredTask`.

    Only tasks the local schedulers will run are measured: those the requested
    ``keys`` depend on (a task nothing needs is skipped by the scheduler, and its
    compute would never look finished). ``named`` (see :func:`assign_tags`)
    attributes tasks to profiles; a frozenset gives every task to those profiles,
    and None to no profile (the engine's aggregate only). Aliases and data nodes are
    left alone (they do no work, and counting them would double bytes); so are
    ``Task`` subclasses such as p2p barriers, whose type the scheduler relies on.
    Dask's finalize step only joins results: it is not measured, and what it joins
    counts as the results the compute holds.
    """
    found = attribute(dsk, keys, named)
    collector = ComputeCollector(len(found.tasks), sink, found.tags)
    collector.tasks, collector.aliases = found.tasks, found.aliases
    out = dict(found.graph)
    cid, pid, wrap = collector.cid, current_pid(), MeasuredTask.wrap
    tag_of, outputs = found.tag_of, found.outputs
    for key, node in found.tasks.items():
        out[key] = wrap(node, collector, cid, pid, tag_of[key], key in outputs)
    return out, collector


class GraphPlan(NamedTuple):
    """What the high-level graph of one compute says before it is optimized.

    ``names`` are the profiled arrays in it, ``whole`` whether every task works for
    every one of them (then tasks need no attribution one by one) and
    ``downstream`` what the later operations want of each one's chunks.
    """

    names: list[str]
    whole: bool
    downstream: dict[str, _graph.Downstream]


def plan_graph(hlg, names: Iterable[str], shapes: Mapping[str, tuple]) -> GraphPlan:
    """The plan of one compute, for the local hook and the scheduler's optimizer alike.

    ``names`` are the profiled array names found in ``hlg`` (a HighLevelGraph) and
    ``shapes`` their shapes (the downstream hints depend on them).
    """
    names = list(names)
    layered = isinstance(hlg, HighLevelGraph)
    # A rechunk of a profiled array by apply_recommendation is profiled with it, and
    # its graph is the array's lineage too.
    whole = layered and bool(names) and all(_graph.whole_lineage(hlg.dependencies, n)
                                            for n in names)
    downstream = {n: _graph.downstream(hlg, n, tuple(shapes[n]))
                  for n in names if layered and n in shapes}
    return GraphPlan(names, whole, downstream)


class Attribution(NamedTuple):
    """The tasks of an optimized graph that a compute runs, and whom each works for.

    ``graph`` is the flat graph, ``tasks`` its measured plain tasks, ``aliases``
    (key -> target) and ``outputs`` as :func:`measured_tasks` gives them;
    ``tag_of[key]`` indexes ``tags``, the distinct sets of profiles.
    """

    graph: dict
    tasks: dict
    aliases: dict
    outputs: set
    tag_of: dict
    tags: list[frozenset]


def attribute(dsk, keys, named) -> Attribution:
    """Attribute the tasks a compute of ``keys`` runs to profiles.

    ``named`` maps profiled array names to their profiles (see :func:`assign_tags`);
    a frozenset gives every task to those profiles, and None to no profile.
    """
    flat, tasks, aliases, outputs = measured_tasks(dsk, keys)
    if named is None or isinstance(named, frozenset):  # no profile, or all tasks one's
        tag_of, tags = dict.fromkeys(tasks, 0), [named or frozenset()]
    else:
        tag_of, tags = assign_tags(flat, list(tasks), named)
    return Attribution(flat, tasks, aliases, outputs, tag_of, tags)
