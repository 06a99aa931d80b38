"""Measurement for dask.array.adaptive_chunking: memory limits and instrumented tasks.

This module observes; it neither aggregates nor recommends. It provides

* :func:`cgroup_memory` and :func:`host_memory`: the memory limit a process lives under;
* :func:`process_rss`: resident memory of this process in about a microsecond;
* :class:`PeakSampler`: one daemon thread tracking the peak memory of running computes;
* :func:`instrument`: wraps each task of an optimized graph so that it measures itself
  (time in the worker, output bytes, shape, dtype, memory before and after) and
  delivers a record to the :class:`ComputeCollector` of its compute, directly in the
  process that built the graph or, from the processes scheduler's children, riding
  back on the pickled result.

Records are plain tuples (see the ``R_*`` indices) to keep the per-task cost low.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from dask._task_spec import Task, TaskRef, convert_legacy_graph
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph
from dask.sizeof import sizeof
from dask.utils import ensure_dict

logger = logging.getLogger("dask.array.adaptive_chunking")


class AdaptiveChunkingWarning(UserWarning):
    """Warning from the adaptive chunking engine (it never raises into a compute)."""


AdaptiveChunkingWarning.__module__ = "dask.array.adaptive_chunking"


_UNLIMITED = 2**60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < _UNLIMITED else None


def cgroup_memory(
    proc_cgroup: str | None = None, root: str | os.PathLike = "/sys/fs/cgroup"
) -> tuple[int | None, int | None]:
    """The memory limit and usage of this process's cgroup, in bytes.

    Reads ``/proc/self/cgroup`` (or ``proc_cgroup``, its text) and the cgroup v2
    (``memory.max``, ``memory.current``) or v1 (``memory.limit_in_bytes``,
    ``memory.usage_in_bytes``) files of the process's own cgroup and of its
    ancestors; the tightest limit wins. Usage excludes inactive page cache, as the
    kernel would reclaim it before an out-of-memory kill. Either value is None
    where it cannot be read (not Linux, no limit).

    >>> cgroup_memory("0::/\\n", root="/nonexistent")
    (None, None)
    """
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None, None
    root = Path(root)
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.strip().lstrip("/")
        if controllers == "":  # cgroup v2
            base, limit_name, usage_name, stat_key = (
                root, "memory.max", "memory.current", "inactive_file"
            )
        elif "memory" in controllers.split(","):  # cgroup v1
            base, limit_name, usage_name, stat_key = (
                root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                "total_inactive_file",
            )
        else:
            continue
        own = base / rel
        limits = []
        d = own
        while True:
            value = _read_int(d / limit_name)
            if value is not None:
                limits.append(value)
            if d == base or base not in d.parents:
                break
            d = d.parent
        usage = _read_int(own / usage_name)
        if usage is not None:
            try:
                for stat in (own / "memory.stat").read_text().splitlines():
                    name, _, value = stat.partition(" ")
                    if name == stat_key:
                        usage = max(0, usage - int(value))
                        break
            except (OSError, ValueError):
                pass
        if limits or usage is not None:
            return (min(limits) if limits else None), usage
    return None, None


def host_memory() -> tuple[int, int]:
    """Total and available physical memory, in bytes."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)




# ---------------------------------------------------------------------------
# Measurement: process memory, fast enough to read around every task
# ---------------------------------------------------------------------------

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_statm_fd: dict[int, int] = {}  # pid -> open /proc/self/statm (fork-safe by pid)
_rss_warned = False


def _psutil_rss() -> int:
    global _rss_warned
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception as e:  # pragma: no cover - depends on the platform
        if not _rss_warned:
            _rss_warned = True
            warnings.warn(
                f"adaptive chunking cannot read process memory ({e}); memory "
                "measurements will read 0",
                AdaptiveChunkingWarning,
                stacklevel=2,
            )
        return 0


def process_rss() -> int:
    """Resident memory of this process in bytes (~1 us on Linux)."""
    pid = os.getpid()
    fd = _statm_fd.get(pid)
    if fd is None:
        try:
            fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            fd = -1
        _statm_fd[pid] = fd
    if fd < 0:
        return _psutil_rss()
    try:
        return int(os.pread(fd, 64, 0).split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        _statm_fd[pid] = -1
        return _psutil_rss()


def children_rss() -> int:
    """Resident memory of this process's children (processes scheduler), in bytes."""
    try:
        import psutil

        total = 0
        for child in psutil.Process().children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except Exception:
        return 0


class PeakSampler:
    """One daemon thread that tracks the peak memory of every running compute.

    It runs only while some compute is registered and exits when the last one
    finishes or is garbage collected.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: weakref.WeakSet[ComputeCollector] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, collector: ComputeCollector, interval: float) -> None:
        """Track ``collector.peak`` every ``interval`` seconds until removed."""
        with self._lock:
            self._active.add(collector)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run,
                    args=(max(float(interval), 0.001),),
                    name="adaptive-chunking-sampler",
                    daemon=True,
                )
                self._thread.start()

    def remove(self, collector: ComputeCollector) -> None:
        with self._lock:
            self._active.discard(collector)
        self._wake.set()

    def _run(self, interval: float) -> None:
        while True:
            with self._lock:
                active = list(self._active)
                if not active:
                    self._thread = None
                    return
            rss = process_rss()
            children = None
            for c in active:
                value = rss
                if c.include_children:
                    if children is None:
                        children = children_rss()
                    value += children
                if value > c.peak:
                    c.peak = value
            del active
            self._wake.wait(interval)
            self._wake.clear()

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the thread to exit (used by tests and reset)."""
        thread = self._thread
        self._wake.set()
        if thread is not None and not self._active:
            thread.join(timeout)


sampler = PeakSampler()


# ---------------------------------------------------------------------------
# Measurement: instrumented tasks
# ---------------------------------------------------------------------------

# Record layout: plain tuples keep the per-task cost near a microsecond.
(
    R_KEY, R_T0, R_T1, R_RSS0, R_RSS1, R_NBYTES, R_SHAPE, R_DTYPE, R_WORKER, R_TAG, R_OUT,
    R_FAILED, R_LOGICAL,
) = range(13)
#: R_NBYTES is the memory the output holds (``dask.sizeof``); R_LOGICAL its logical size
#: (``.nbytes``: a broadcast view of one element holds 8 bytes but is a chunk of many).

collectors: weakref.WeakValueDictionary[str, ComputeCollector] = (
    weakref.WeakValueDictionary()
)
in_task = threading.local()


class ComputeCollector:
    """Gathers the records of one instrumented compute.

    Created by the optimizer hook and referenced only by the graph's wrapped
    tasks: when the graph is dropped (a compute interrupted, or optimized and never
    run) the collector is garbage collected and the engine still receives the
    partial records through ``weakref.finalize``.
    """

    __slots__ = (
        "cid", "n_tasks", "records", "lock", "peak", "baseline", "children_baseline",
        "include_children", "done", "engine", "__weakref__",
    )

    def __init__(self, n_tasks: int, engine):
        self.cid = uuid.uuid4().hex
        self.n_tasks = n_tasks
        self.records: list[tuple] = []
        self.lock = threading.Lock()
        self.baseline = process_rss()
        self.children_baseline = 0
        self.peak = self.baseline
        self.include_children = False
        self.done = False
        self.engine = engine
        collectors[self.cid] = self
        weakref.finalize(self, engine._abandon, self.records, self.cid)

    def add(self, record: tuple) -> None:
        with self.lock:
            late = self.done
            if not late:
                self.records.append(record)
                self.done = record[R_FAILED] or len(self.records) >= self.n_tasks
                finished = self.done
        try:
            if late:
                self.engine._late(self.cid, record)
            elif finished:
                sampler.remove(self)
                self.engine._finish(self)
        except Exception as e:  # profiling must never break the compute
            warn_engine_error(e)


def warn_engine_error(e: BaseException) -> None:
    warnings.warn(
        f"adaptive chunking could not record a profile ({type(e).__name__}: {e}); "
        "the computation itself is unaffected",
        AdaptiveChunkingWarning,
        stacklevel=3,
    )


class Measured:
    """Callable that runs one graph node and measures it.

    A wrapped graph holds ``Task(key, Measured(node, ...), *deps)``. In the
    process that built the graph the record goes straight to the collector; in a
    child process (processes scheduler) the result is returned inside
    :class:`Shipped`, which hands the record over when the parent unpickles it.
    """

    __slots__ = ("node", "deps", "collector", "cid", "pid", "tag", "is_output")

    def __init__(self, node, deps, collector, tag: int, is_output: bool):
        self.node = node
        self.deps = deps
        self.collector = collector
        self.cid = collector.cid
        self.pid = os.getpid()
        self.tag = tag
        self.is_output = is_output

    def __reduce__(self):
        args = (self.node, self.deps, self.cid, self.pid, self.tag, self.is_output)
        return _remote_measured, args

    def __call__(self, *values):
        depth = getattr(in_task, "depth", 0)
        in_task.depth = depth + 1
        rss0 = process_rss()
        t0 = time.perf_counter()
        try:
            result = self.node(dict(zip(self.deps, values)))
        except BaseException as exc:
            t1 = time.perf_counter()
            in_task.depth = depth
            self._record(t0, t1, rss0, None, exc)
            raise
        t1 = time.perf_counter()
        in_task.depth = depth
        return self._record(t0, t1, rss0, result, None)

    def _record(self, t0, t1, rss0, result, exc):
        try:
            local = self.collector is not None and os.getpid() == self.pid
            nbytes = sizeof(result) if exc is None else 0
            logical = getattr(result, "nbytes", None)
            record = (
                self.node.key, t0, t1, rss0, process_rss(),
                nbytes,
                getattr(result, "shape", None), getattr(result, "dtype", None),
                threading.get_ident() if local else os.getpid(),
                self.tag, self.is_output, exc is not None,
                logical if isinstance(logical, int) else nbytes,
            )
            if local:
                self.collector.add(record)
            elif _in_distributed_worker():
                pass  # an instrumented graph sent to a cluster: run it, do not measure
            elif exc is None:
                return Shipped(result, record, self.cid)
            else:
                # The exception travels back pickled; the record rides on it.
                exc._adaptive_chunking_record = Shipped(None, record, self.cid)
        except Exception as e:  # profiling must never break the compute
            logger.debug("adaptive chunking failed to record task %s: %s", self.node.key, e)
        return result


def _remote_measured(node, deps, cid, pid, tag, is_output):
    m = Measured.__new__(Measured)
    m.node, m.deps, m.cid, m.pid, m.tag, m.is_output = node, deps, cid, pid, tag, is_output
    m.collector = collectors.get(cid) if os.getpid() == pid else None
    return m


def _in_distributed_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    try:
        from distributed import get_worker

        get_worker()
        return True
    except Exception:
        return False


class Shipped:
    """A task result carrying its measurement back from a child process."""

    __slots__ = ("value", "record", "cid")

    def __init__(self, value, record, cid):
        self.value, self.record, self.cid = value, record, cid

    def __reduce__(self):
        return receive, (self.value, self.record, self.cid)


def receive(value, record, cid):
    """Unpickling hook run in the parent: deliver the record, return the result."""
    collector = collectors.get(cid)
    if collector is not None:
        if not collector.include_children:
            # The pool's children start lazily: take their baseline at first contact.
            collector.children_baseline = children_rss()
            collector.include_children = True
        collector.add(record)
    return value


def layer_name(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else key


def instrument(dsk, keys, tag_of, engine):
    """Wrap every plain ``Task`` of an optimized graph in :class:`Measured`.

    ``tag_of(layer_name) -> int`` attributes each task to one of the compute's
    profile groups. Aliases and data nodes are left alone (they do no work, and
    counting them would double bytes); so are ``Task`` subclasses such as p2p
    barriers, whose type the scheduler relies on.
    """
    if isinstance(dsk, HighLevelGraph):
        dsk = ensure_dict(dsk)
    dsk = convert_legacy_graph(dsk)
    outputs = set(flatten(keys)) if keys is not None else set()
    tasks = {}
    for key, node in dsk.items():
        if type(node) is Task:
            if isinstance(node.func, Measured):  # already instrumented
                node = node.func.node
            if str(layer_name(key)).startswith("finalize-"):
                # Dask's finalize step joins the results: not a chunk. What it joins
                # are the results the compute holds.
                outputs.update(node.dependencies)
                continue
            tasks[key] = node
    collector = ComputeCollector(len(tasks), engine)
    out = dict(dsk)
    for key, node in tasks.items():
        deps = tuple(node.dependencies)
        out[key] = Task(
            key,
            Measured(node, deps, collector, tag_of(layer_name(key)), key in outputs),
            *(TaskRef(d) for d in deps),
            _data_producer=node.data_producer,
        )
    return out, collector


def max_overlap(records: Sequence[tuple]) -> int:
    """Largest number of records whose [start, stop] intervals overlap."""
    starts = sorted(r[R_T0] for r in records)
    stops = sorted(r[R_T1] for r in records)
    best = running = j = 0
    for s in starts:
        while j < len(stops) and stops[j] <= s:
            j += 1
            running -= 1
        running += 1
        best = max(best, running)
    return best


