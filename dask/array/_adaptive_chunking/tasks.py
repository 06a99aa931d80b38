"""Measured tasks and the collector of one compute: the per-task hot path.

:class:`MeasuredTask` replaces a plain ``Task`` and records time in the worker,
output bytes, shape, dtype and process memory; the record goes to the
:class:`ComputeCollector` of its compute, directly in the process that built the
graph or, from the processes scheduler's children, riding back on the pickled
result (:class:`Shipped`). The collector hands the compute to a
:class:`ComputeSink` (the engine's recorder) when its first task starts and its
last one ends. A record holds only values the garbage collector soon stops
tracking, so thousands of them do not make it walk the graph's heap more often.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import sys
import threading
import uuid
import weakref
from threading import get_ident
from time import perf_counter
from typing import Any, NamedTuple, Protocol

from dask._task_spec import Task
from dask.sizeof import sizeof
from numpy import ndarray

from dask.array._adaptive_chunking.errors import warn_engine_error
from dask.array._adaptive_chunking.memory import children_rss, free_heap_bytes, process_rss
from dask.array._adaptive_chunking.peaks import readings, rss_at, sampler, untrack_peak
from dask.array._adaptive_chunking.records import local_record, record_failed

__all__ = ["TaskError", "ComputeSink", "ComputeCollector", "MeasuredTask", "Shipped",
           "in_task", "output_bytes"]

logger = logging.getLogger("dask.array.adaptive_chunking")


class TaskError(NamedTuple):
    """The first exception a task of a compute raised."""

    key: Any
    message: str  # "Type: message", cut to 300 characters
    interrupted: bool  # KeyboardInterrupt or SystemExit: the compute was stopped


class ComputeSink(Protocol):
    """What a collector tells about its compute (the engine's recorder implements it).

    Every method is called from a thread running the compute's tasks, never raises
    into it (the collector guards each call) and must be quick.
    """

    def start(self, collector: ComputeCollector) -> None:
        """The compute's first task starts."""

    def register_failed(self, cid: str) -> None:
        """A task failed: records arriving later are folded one by one."""

    def finish(self, collector: ComputeCollector) -> None:
        """The compute's last task ended (or one failed)."""

    def late(self, cid: str, record: tuple) -> None:
        """A task ended after its compute was folded."""

    def abandon(self, records: list, cid: str) -> None:
        """The collector of an unfinished compute was garbage collected."""


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
        "cid", "n_tasks", "records", "counter", "lock", "peak", "baseline", "free",
        "children_baseline", "include_children", "started", "done", "sink", "interval",
        "method", "tags", "states", "tasks", "aliases", "hints", "signatures", "chunks", "error",
        "settings",
        "caller", "finished",
        "__weakref__",
    )

    def __init__(self, n_tasks: int, sink: ComputeSink, tags: list[frozenset] | None = None):
        self.tags = tags if tags is not None else [frozenset()]
        self.states: list = []
        self.tasks: dict = {}  # key -> the task before instrumenting (its dependencies)
        self.aliases: dict = {}  # alias key -> target key
        self.hints: dict = {}  # profile -> what its downstream operations want
        self.signatures: dict = {}  # profile -> the workload signature of this compute
        self.chunks: dict = {}  # profile -> the chunks this compute runs it at
        self.settings = None  # the settings snapshot of the hook that planned it
        self.cid = uuid.uuid4().hex
        self.n_tasks = n_tasks
        self.records: list[tuple] = []
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.baseline = 0
        self.free = 0  # what the allocator held free at the start (see free_heap_bytes)
        self.children_baseline = 0
        self.peak = 0
        self.include_children = False
        self.started = False
        self.done = False
        self.finished = threading.Event()  # set once the sink has folded the compute
        self.sink = sink
        self.interval = 0.01
        self.method = "auto"
        # The first exception a task raised; set in one assignment, so its parts agree
        self.error: TaskError | None = None
        self.caller = get_ident()  # the thread that computes (the sync scheduler's)
        collectors[self.cid] = self
        weakref.finalize(self, sink.abandon, self.records, self.cid)

    def start(self) -> None:
        """The first task starts: the compute is running (idempotent).

        Nothing is tracked before, so a graph that is optimized and never run
        (``dask.optimize``, ``to_delayed``) leaves no trace.
        """
        with self.lock:
            if self.started:
                return
            self.started = True
            self.baseline = self.peak = process_rss()
            self.free = free_heap_bytes(self.baseline)
            # Under the lock: a task of another thread that finishes (or fails) first
            # must find the compute registered, or its end would be lost.
            try:
                self.sink.start(self)
            except Exception as e:  # profiling must never break the compute
                warn_engine_error(e)

    def add(self, record: tuple, failed: bool = False) -> None:
        """Take one record, from any thread; the last one finishes the compute.

        The common path is a list append and a counter step, both atomic: no lock
        is taken while tasks are running.
        """
        if self.done:
            self._late(record)
            if failed:
                # This failure may reach the user first: let the compute be folded
                # (by the thread that finished it) before the exception is raised.
                self.finished.wait(10)
            return
        self.records.append(record)
        n = next(self.counter)
        if n < self.n_tasks and not failed:
            return
        finisher = False
        try:
            with self.lock:
                if not self.done:
                    if failed:  # before done: later records must find it
                        self.sink.register_failed(self.cid)
                    self.done = finisher = True
            if finisher:
                untrack_peak(self)
                self.sink.finish(self)
        except Exception as e:  # profiling must never break the compute
            warn_engine_error(e)
        finally:
            if finisher:
                self.finished.set()
        if not finisher and failed:
            self.finished.wait(10)  # as above: another thread is folding the compute

    def _late(self, record: tuple) -> None:
        try:
            self.sink.late(self.cid, record)
        except Exception as e:  # profiling must never break the compute
            warn_engine_error(e)



def _array_bytes(a: ndarray) -> int:
    """``dask.sizeof`` of a NumPy array: a broadcast view holds its distinct elements."""
    strides = a.strides
    if 0 in strides:
        # What sizeof's slice of one element along each broadcast axis holds, without
        # making the slice: half the time (0.4 against 0.7 us; a mean's counts are
        # broadcast)
        n = a.itemsize
        for size, stride in zip(a.shape, strides):
            if stride:
                n *= size
            elif not size:
                return 0
        return n
    return a.nbytes


_EMPTY_LIST = sys.getsizeof([])


def output_bytes(result: Any) -> int:
    """``dask.sizeof(result)``, computed directly for what reductions return.

    A dict of arrays (the partial sums of ``mean``, ``var``, ``std``), or a tuple or
    list of arrays, of up to ten items, where ``sizeof`` adds up its exact parts;
    anything else goes to ``sizeof``. Through its dispatch a two-array dict took
    5.8 us, here 2.9 us; the tests hold the two equal.
    """
    kind = type(result)
    if kind is dict and len(result) <= 10:
        # sizeof's own sum: the dict, a list of its keys and one of its values (built
        # as it builds them: their sizes follow CPython's over-allocation), less two
        # empty lists
        keys, values = list(result.keys()), list(result.values())
        size = (sys.getsizeof(result) + sys.getsizeof(keys) + sys.getsizeof(values)
                - 2 * _EMPTY_LIST)
        for key, value in zip(keys, values):
            if type(value) is not ndarray or type(key) is not str:
                return sizeof(result)
            size += sys.getsizeof(key) + _array_bytes(value)
        return size
    if (kind is tuple or kind is list) and len(result) <= 10:
        size = sys.getsizeof(result)
        for value in result:
            if type(value) is not ndarray:
                return sizeof(result)
            size += _array_bytes(value)
        return size
    return sizeof(result)


_TASK_SLOTS = Task.get_all_slots()
_PID = os.getpid()


def _new_pid() -> None:
    global _PID
    _PID = os.getpid()


def current_pid() -> int:
    """This process's id, kept up to date across ``fork`` without a system call."""
    return _PID


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_pid)


_get_task_slots = operator.attrgetter(*_TASK_SLOTS)
_set_slots = "\n".join(f"    new.{slot} = values[{i}]" for i, slot in enumerate(_TASK_SLOTS))
_namespace: dict = {}
# One generated assignment per slot: an eighth of a microsecond a task less than a
# loop of setattr calls, paid for every task of every compute.
exec(f"def _set_task_slots(new, values):\n{_set_slots}\n", _namespace)
_set_task_slots = _namespace["_set_task_slots"]


def _copy_task_slots(node: Task, cls: type) -> Task:
    """A ``cls`` instance with ``node``'s ``Task`` state, without re-running ``__init__``."""
    new = cls.__new__(cls)
    try:
        values = _get_task_slots(node)
    except AttributeError:  # a slot never set (a task not made by Task.__init__)
        for slot in _TASK_SLOTS:
            try:
                setattr(new, slot, getattr(node, slot))
            except AttributeError:
                pass
        return new
    _set_task_slots(new, values)
    return new


class MeasuredTask(Task):
    """A ``Task`` that measures its own execution.

    It is a copy of the original task (same key, function, arguments and
    dependencies, so the scheduler sees the same graph) whose ``__call__`` records
    time in the worker, output size, shape, dtype and process memory. In the
    process that built the graph the record goes straight to the collector; in a
    child process (processes scheduler) the result is returned inside
    :class:`Shipped`, which hands the record over when the parent unpickles it.
    A ``Task`` subclass rather than a wrapping task keeps the per-task cost to the
    measurement itself.
    """

    __slots__ = ("collector", "cid", "pid", "tag", "is_output")

    @classmethod
    def wrap(cls, node: Task, collector, cid, pid: int, tag: int, is_output: bool):
        new = _copy_task_slots(node, cls)
        new.collector, new.cid, new.pid = collector, cid, pid
        new.tag, new.is_output = tag, is_output
        return new

    def plain(self) -> Task:
        """The original task, without measurement."""
        return _copy_task_slots(self, Task)

    def __reduce__(self):
        return _remote_task, (self.plain(), self.cid, self.pid, self.tag, self.is_output)

    def __eq__(self, value: object) -> bool:
        # Equal to the task it measures: a graph compares as Dask's optimization left it.
        other = value.plain() if type(value) is MeasuredTask else value
        return self.plain() == other

    __hash__ = Task.__hash__

    def _get_token(self) -> str:
        # Hash and token as the plain task's, as equality says (Task's name the type).
        if not self._token:
            from dask.base import tokenize

            self._token = tokenize(("Task", self.func, self.args, self.kwargs))
        return self._token

    def __call__(self, values=()):
        try:
            collector = self.collector
        except AttributeError:  # made by Task.copy()/substitute(): not measured
            return Task.__call__(self, values)
        if collector is not None and not collector.started:
            collector.start()
        depth = getattr(in_task, "depth", 0)
        in_task.depth = depth + 1
        t0 = perf_counter()
        try:
            result = Task.__call__(self, values)
        except BaseException as exc:
            in_task.depth = depth
            self._record_slow(collector, t0, perf_counter(), None, exc)
            raise
        t1 = perf_counter()
        in_task.depth = depth
        if collector is None or _PID != self.pid:
            return self._record_slow(collector, t0, t1, result, None)
        # The common case, kept short: every bytecode here is paid while the other
        # worker threads may be waiting for the GIL.
        try:
            if type(result) is ndarray and 0 not in result.strides:
                nbytes = logical = membytes = result.nbytes
                shape, dtype = result.shape, result.dtype
                base = result.base
                if type(base) is ndarray:
                    mem, membytes = id(base), base.nbytes
                else:
                    mem = id(result)
            else:
                nbytes = output_bytes(result)
                logical = getattr(result, "nbytes", None)
                if type(logical) is not int:
                    logical = nbytes
                shape, dtype = getattr(result, "shape", None), getattr(result, "dtype", None)
                mem, membytes = id(result), nbytes
            rss0 = readings.value
            collector.add(local_record(
                self.key, t0, t1, rss0, rss_at(t1), nbytes, shape, dtype, get_ident(),
                self.tag, self.is_output, False, logical, mem, membytes,
            ))
        except Exception as e:  # profiling must never break the compute
            logger.debug("adaptive chunking failed to measure task %s: %s", self.key, e)
            try:  # still count the task, or the compute would never finish
                collector.add(local_record(self.key, t0, t1, 0, 0, 0, None, None,
                                           get_ident(), self.tag, self.is_output, False,
                                           0, 0, 0))
            except Exception:
                pass
        return result

    def _record_slow(self, collector, t0, t1, result, exc):
        """Record a failed task, or a task run in a child process."""
        try:
            local = collector is not None and _PID == self.pid
            nbytes = sizeof(result) if exc is None else 0
            logical = getattr(result, "nbytes", None)
            rss = rss_at(t1) if local else process_rss()
            record = local_record(
                self.key, t0, t1, rss, rss,
                nbytes,
                getattr(result, "shape", None), getattr(result, "dtype", None),
                get_ident() if local else _PID,
                self.tag, self.is_output, exc is not None,
                logical if type(logical) is int else nbytes,
                # Addresses in a child process mean nothing here: 0 is "its own memory".
                id(result) if local else 0, nbytes,
            )
            if local:
                if exc is not None and collector.error is None:
                    collector.error = TaskError(self.key, f"{type(exc).__name__}: {exc}"[:300],
                                       not isinstance(exc, Exception))
                collector.add(record, exc is not None)
            elif not _child_of(self.pid):
                pass  # the graph outlived its compute or left the process: just run it
            elif exc is None:
                return Shipped(result, record, self.cid)
            else:
                # The exception travels back pickled; the record rides on it.
                exc._adaptive_chunking_record = Shipped(None, record, self.cid)
        except Exception as e:  # profiling must never break the compute
            logger.debug("adaptive chunking failed to record task %s: %s", self.key, e)
        return result


def _remote_task(task: Task, cid: str, pid: int, tag: int, is_output: bool) -> MeasuredTask:
    collector = collectors.get(cid) if os.getpid() == pid else None
    return MeasuredTask.wrap(task, collector, cid, pid, tag, is_output)


def _child_of(pid: int) -> bool:
    """Whether this process is a multiprocessing child of ``pid`` (processes scheduler).

    Only then may a result be wrapped in :class:`Shipped`: the parent unwraps it
    when it unpickles the result. Anywhere else (a distributed worker, an executor
    of the user's, or the same process after its collector died) the wrapper would
    leak into the results.
    """
    if _PID == pid:
        return False
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None or parent.pid != pid:
        return False
    return not _in_distributed_worker()


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
    try:
        collector = collectors.get(cid)
        if collector is not None:
            collector.start()
            if not collector.include_children:
                # The pool's children start lazily: take their baseline at first contact.
                collector.children_baseline = children_rss()
                collector.include_children = True
                sampler.add(collector, collector.interval)  # the children's peaks
            collector.add(record, record_failed(record))
    except Exception as e:  # runs inside unpickling: never fail the compute
        logger.debug("adaptive chunking failed to receive a record: %s", e)
    return value
