"""Measurement for dask.array.adaptive_chunking: memory limits and measured tasks.

This module observes; it neither aggregates nor recommends. It provides

* :func:`cgroup_memory` and :func:`host_memory`: the memory limit a process lives under;
* :func:`process_rss`: resident memory of this process in about a microsecond;
* :func:`track_peak` / :func:`untrack_peak`: the peak memory of each running compute,
  from the kernel's high-water mark (:class:`HighWaterMark`) or a sampler thread
  (:class:`PeakSampler`);
* :func:`instrument`: replaces each task of an optimized graph by a
  :class:`MeasuredTask` that records time in the worker, output bytes, shape, dtype
  and process memory, and delivers the record to the :class:`ComputeCollector` of its
  compute: directly in the process that built the graph or, from the processes
  scheduler's children, riding back on the pickled result (:class:`Shipped`).

A record travels as a plain tuple (see the ``R_*`` indices) and is stored in
a list per compute that becomes a :class:`RecordBatch` (columns) when the compute ends.
A record holds only values the garbage collector soon stops tracking, so thousands
of them do not make it walk the graph's heap more often.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import uuid
import warnings
import weakref
from collections.abc import Hashable
from pathlib import Path
from threading import get_ident
from time import perf_counter

import numpy as np
from dask._task_spec import Alias, Task, _execute_subgraph, convert_legacy_graph
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph
from dask.sizeof import sizeof
from dask.utils import ensure_dict
from numpy import ndarray

try:
    from resource import RUSAGE_SELF, getrusage
except ImportError:  # pragma: no cover - Windows
    RUSAGE_SELF, getrusage = None, None

logger = logging.getLogger("dask.array.adaptive_chunking")


class AdaptiveChunkingWarning(UserWarning):
    """Warning from the adaptive chunking engine (it never raises into a compute)."""


AdaptiveChunkingWarning.__module__ = "dask.array.adaptive_chunking"


_UNLIMITED = 2**60


_warned: set[str] = set()  # kinds of fallback already announced in this process


def warn_once(kind: str, message: str) -> None:
    """Warn with ``message`` the first time a fallback of ``kind`` is taken."""
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, AdaptiveChunkingWarning, stacklevel=3)


def _unreadable(path: Path, e: OSError) -> None:
    warn_once(
        "cgroup",
        f"adaptive chunking cannot read the cgroup file {path} ({e}); the memory limit "
        "falls back to physical memory: set 'array.adaptive-chunking.memory-limit' "
        "if this process runs under a tighter limit",
    )


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None  # no such control at this level: no limit here
    except OSError as e:
        _unreadable(path, e)
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
        except FileNotFoundError:
            return None, None  # not Linux
        except OSError as e:
            _unreadable(Path("/proc/self/cgroup"), e)
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
        # Without a cgroup namespace the process's own path is not under the mount:
        # walk up to the mount root; usage is read where the tightest limit is.
        limits = []
        d = base / rel
        where = None
        while True:
            value = _read_int(d / limit_name)
            if value is not None and (not limits or value < min(limits)):
                where = d
            if value is not None:
                limits.append(value)
            if d == base or base not in d.parents:
                break
            d = d.parent
        own = where if where is not None else base / rel
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


#: What :func:`host_memory` assumes when nothing can tell it the machine's memory.
ASSUMED_MEMORY = 4 * 2**30


def host_memory() -> tuple[int, int]:
    """Total and available physical memory, in bytes.

    From ``psutil``; where it fails, from ``os.sysconf``, and where that fails too,
    :data:`ASSUMED_MEMORY` with nothing in use. Each fallback warns once.
    """
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception as e:
        reason = f"psutil cannot read memory ({type(e).__name__}: {e})"
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        available = os.sysconf("SC_AVPHYS_PAGES") * page
        if total > 0:
            warn_once("host-memory", f"adaptive chunking: {reason}; using os.sysconf: "
                      f"{total / 2**30:.1f} GiB physical memory")
            return int(total), int(min(max(available, 0), total))
    except (AttributeError, ValueError, OSError) as e:
        reason += f", nor os.sysconf ({e})"
    warn_once(
        "host-memory",
        f"adaptive chunking: {reason}; assuming {ASSUMED_MEMORY / 2**30:.0f} GiB: set "
        "'array.adaptive-chunking.memory-limit' to this machine's memory",
    )
    return ASSUMED_MEMORY, ASSUMED_MEMORY




# ---------------------------------------------------------------------------
# Measurement: process memory, fast enough to read around every task
# ---------------------------------------------------------------------------

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_statm_fd: int | None = None  # open /proc/self/statm of this process; -1: unavailable


def _forget_statm_fd() -> None:
    global _statm_fd
    _statm_fd = None  # a forked child must open its own /proc/self/statm


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_statm_fd)


def _psutil_rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception as e:
        warn_once(
            "rss",
            f"adaptive chunking cannot read process memory ({type(e).__name__}: {e}); "
            "memory measurements will read 0",
        )
        return 0


def process_rss() -> int:
    """Resident memory of this process in bytes (under a microsecond on Linux).

    Reads an open ``/proc/self/statm`` with ``pread``; falls back to ``psutil``
    where that file does not exist.
    """
    global _statm_fd
    fd = _statm_fd
    if fd is None:
        try:
            fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            fd = -1
        _statm_fd = fd
    if fd < 0:
        return _psutil_rss()
    try:
        return int(os.pread(fd, 64, 0).split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        _statm_fd = -1
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


#: Longest pause between two samples (seconds); a longer interval would miss peaks
#: of whole computes and overflow the platform's timers.
MAX_INTERVAL = 60.0


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
        #: This process's memory at the last tick, or None while the sampler is idle.
        self.last_rss: int | None = None

    def add(self, collector: ComputeCollector, interval: float) -> None:
        """Track ``collector.peak`` every ``interval`` seconds until removed."""
        with self._lock:
            self._active.add(collector)
            if self._thread is None or not self._thread.is_alive():
                self.last_rss = process_rss()
                self._thread = threading.Thread(
                    target=self._run,
                    args=(min(max(float(interval), 0.001), MAX_INTERVAL),),
                    name="adaptive-chunking-sampler",
                    daemon=True,
                )
                self._thread.start()

    def remove(self, collector: ComputeCollector) -> None:
        with self._lock:
            self._active.discard(collector)
        self._wake.set()

    def _run(self, interval: float) -> None:
        try:
            self._loop(interval)
        finally:  # an error ends it: the next compute starts a new thread
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    self.last_rss = None

    def _loop(self, interval: float) -> None:
        while True:
            with self._lock:
                active = list(self._active)
                if not active:  # in the lock: add() then starts a new thread
                    self._thread = None
                    self.last_rss = None
                    return
            rss = process_rss()
            self.last_rss = rss
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


#: Seconds a per-task memory reading may be reused for by later tasks.
RSS_REFRESH = 0.05
_rss_value = 0
_rss_time = float("-inf")


def _read_rss() -> int:
    if high_water_mark.active and getrusage is not None:
        return getrusage(RUSAGE_SELF).ru_maxrss * 1024  # peak since the compute began
    rss = sampler.last_rss
    return process_rss() if rss is None else rss


def rss_at(now: float) -> int:
    """Process memory for a task record at ``now`` (``perf_counter``), in bytes.

    Reading memory means a system call, and in the threaded scheduler every extra
    moment a worker spends in Python between tasks is paid again while the other
    threads wait for the GIL: reads around every task cost several percent of wall
    time. So a reading is reused for ``RSS_REFRESH`` seconds. While
    :class:`HighWaterMark` tracks the compute the reading is the kernel's peak since
    the compute began (what ``memory_peak_before_mb``/``memory_peak_after_mb``
    report); else the sampler's latest value or a direct read. The compute's peak
    itself never depends on these readings.
    """
    global _rss_value, _rss_time
    if now - _rss_time > RSS_REFRESH:
        _rss_time = now
        _rss_value = _read_rss()
    return _rss_value


def _read_hwm() -> int | None:
    """The kernel's peak resident memory of this process (``VmHWM``), in bytes."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class HighWaterMark:
    """Exact peak memory of running computes from the kernel's high-water mark.

    Linux keeps the peak resident memory of a process (``VmHWM``) and resets it
    when ``5`` is written to ``/proc/self/clear_refs``. The mark is process-wide,
    so before every reset its value is credited to every compute running then;
    no peak is lost when computes overlap, and nothing runs between computes.
    This also resets ``getrusage().ru_maxrss``; set
    ``array.adaptive-chunking.peak-method`` to ``"sampler"`` to leave it alone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: weakref.WeakSet[ComputeCollector] = weakref.WeakSet()
        self.available: bool | None = None  # None: not probed yet

    @property
    def active(self) -> bool:
        """Whether some compute is tracked (collected computes drop out by themselves)."""
        return len(self._active) > 0

    def _reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def _credit(self) -> None:
        mark = _read_hwm()
        if mark is not None:
            for c in self._active:
                if mark > c.peak:
                    c.peak = mark

    def start(self, collector: ComputeCollector) -> bool:
        """Track ``collector.peak``; False where the mark cannot be used."""
        with self._lock:
            if self.available is False:
                return False
            self._credit()
            if not self._reset() or _read_hwm() is None:
                self.available = False
                return False
            self.available = True
            self._active.add(collector)
            return True

    def stop(self, collector: ComputeCollector) -> None:
        """Credit the peak since the last reset and stop tracking ``collector``."""
        with self._lock:
            if collector in self._active:
                self._credit()
                self._active.discard(collector)


high_water_mark = HighWaterMark()


def track_peak(collector: ComputeCollector, method: str, interval: float) -> None:
    """Start tracking the peak memory of one compute (until :func:`untrack_peak`).

    ``method`` is ``"auto"`` (the high-water mark where the kernel offers it,
    else the sampler thread), ``"high-water-mark"`` or ``"sampler"``.
    """
    global _rss_time
    _rss_time = float("-inf")  # task readings of an earlier compute are not reused
    collector.interval = interval
    if method != "sampler" and high_water_mark.start(collector):
        return
    sampler.add(collector, interval)


def untrack_peak(collector: ComputeCollector) -> None:
    """Stop tracking; a compute with child processes takes one last sample of them."""
    high_water_mark.stop(collector)
    sampler.remove(collector)
    if collector.include_children:
        collector.peak = max(collector.peak, process_rss() + children_rss())


# ---------------------------------------------------------------------------
# Measurement: instrumented tasks
# ---------------------------------------------------------------------------

# Record layout: plain tuples keep the per-task cost near a microsecond.
(
    R_KEY, R_T0, R_T1, R_RSS0, R_RSS1, R_NBYTES, R_SHAPE, R_DTYPE, R_WORKER, R_TAG, R_OUT,
    R_FAILED, R_LOGICAL, R_MEM, R_MEMBYTES,
) = range(15)
#: R_NBYTES is the memory the output holds (``dask.sizeof``); R_LOGICAL its logical size
#: (``.nbytes``: a broadcast view of one element holds 8 bytes but is a chunk of many).
#: R_MEM identifies the memory behind the output (a view's base array; 0 when unknown)
#: and R_MEMBYTES is its size: a small slice keeps its whole base alive.


#: Numeric columns of a RecordBatch.
RECORD_DTYPE = np.dtype(
    [
        ("t0", "f8"), ("t1", "f8"), ("rss0", "f8"), ("rss1", "f8"),
        ("nbytes", "i8"), ("logical", "i8"), ("worker", "i8"), ("tag", "i8"),
        ("out", "?"), ("failed", "?"), ("mem", "i8"), ("membytes", "i8"),
    ]
)


class RecordBatch:
    """Task records as columns: a structured array plus keys, shapes and dtypes.

    Columns keep a compute's records out of the garbage collector's way: a tuple
    per task would add thousands of tracked objects, and the extra collections of
    a large graph's heap cost more than the measurement itself.
    """

    __slots__ = ("data", "keys", "shapes", "dtypes")

    def __init__(self, data: np.ndarray, keys: list, shapes: list, dtypes: list):
        self.data, self.keys, self.shapes, self.dtypes = data, keys, shapes, dtypes

    def __len__(self) -> int:
        return len(self.data)

    def take(self, index) -> RecordBatch:
        """The records selected by an index array or boolean mask."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return RecordBatch(
            self.data[index],
            [self.keys[i] for i in index],
            [self.shapes[i] for i in index],
            [self.dtypes[i] for i in index],
        )


def batch_from_records(records: list[tuple]) -> RecordBatch:
    """Turn record tuples (see the ``R_*`` indices) into a :class:`RecordBatch`."""
    n = len(records)
    data = np.empty(n, RECORD_DTYPE)
    if n:
        numbers = np.array(
            [
                (r[R_T0], r[R_T1], r[R_RSS0], r[R_RSS1], r[R_NBYTES], r[R_LOGICAL],
                 r[R_WORKER] & 0x7FFFFFFFFFFFFFFF, r[R_TAG], r[R_OUT], r[R_FAILED],
                 r[R_MEM] & 0x7FFFFFFFFFFFFFFF, r[R_MEMBYTES])
                for r in records
            ],
            dtype=object,
        )
        for j, name in enumerate(RECORD_DTYPE.names):
            data[name] = numbers[:, j]
    shapes: dict = {}
    return RecordBatch(
        data,
        [r[R_KEY] for r in records],
        [shapes.setdefault(r[R_SHAPE], r[R_SHAPE]) if type(r[R_SHAPE]) is tuple
         else r[R_SHAPE] for r in records],
        [r[R_DTYPE] for r in records],
    )


def max_overlap(t0: np.ndarray, t1: np.ndarray) -> int:
    """Largest number of ``[t0, t1]`` intervals that overlap at one time.

    >>> max_overlap(np.array([0.0, 1.0, 2.0]), np.array([1.5, 3.0, 4.0]))
    2
    """
    if len(t0) == 0:
        return 0
    starts = np.sort(t0)
    stops = np.sort(t1)
    running = np.arange(1, len(starts) + 1) - np.searchsorted(stops, starts, side="right")
    return int(running.max())


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
        "cid", "n_tasks", "records", "counter", "lock", "peak", "baseline",
        "children_baseline", "include_children", "started", "done", "engine", "interval",
        "method", "tags", "states", "tasks", "aliases", "hints", "signatures", "error",
        "caller", "finished",
        "__weakref__",
    )

    def __init__(self, n_tasks: int, engine, tags: list[frozenset] | None = None):
        self.tags = tags if tags is not None else [frozenset()]
        self.states: list = []
        self.tasks: dict = {}  # key -> the task before instrumenting (its dependencies)
        self.aliases: dict = {}  # alias key -> target key
        self.hints: dict = {}  # profile -> what its downstream operations want
        self.signatures: dict = {}  # profile -> the workload signature of this compute
        self.cid = uuid.uuid4().hex
        self.n_tasks = n_tasks
        self.records: list[tuple] = []
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.baseline = 0
        self.children_baseline = 0
        self.peak = 0
        self.include_children = False
        self.started = False
        self.done = False
        self.finished = threading.Event()  # set once the engine has folded the compute
        self.engine = engine
        self.interval = 0.01
        self.method = "auto"
        # (key, "Type: message", interrupted) of an exception a task raised; set in one
        # assignment, so its parts agree. Interrupted: no error but KeyboardInterrupt...
        self.error: tuple | None = None
        self.caller = get_ident()  # the thread that computes (the sync scheduler's)
        collectors[self.cid] = self
        weakref.finalize(self, engine._abandon, self.records, self.cid)

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
            # Under the lock: a task of another thread that finishes (or fails) first
            # must find the compute registered, or its end would be lost.
            try:
                self.engine._start(self)
            except Exception as e:  # profiling must never break the compute
                warn_engine_error(e)

    def add(self, record: tuple) -> None:
        """Take one record, from any thread; the last one finishes the compute.

        The common path is a list append and a counter step, both atomic: no lock
        is taken while tasks are running.
        """
        if self.done:
            self._late(record)
            if record[R_FAILED]:
                # This failure may reach the user first: let the compute be folded
                # (by the thread that finished it) before the exception is raised.
                self.finished.wait(10)
            return
        self.records.append(record)
        n = next(self.counter)
        if n < self.n_tasks and not record[R_FAILED]:
            return
        finisher = False
        try:
            with self.lock:
                if not self.done:
                    if record[R_FAILED]:  # before done: later records must find it
                        self.engine._register_failed(self.cid)
                    self.done = finisher = True
            if finisher:
                untrack_peak(self)
                self.engine._finish(self)
        except Exception as e:  # profiling must never break the compute
            warn_engine_error(e)
        finally:
            if finisher:
                self.finished.set()
        if not finisher and record[R_FAILED]:
            self.finished.wait(10)  # as above: another thread is folding the compute

    def _late(self, record: tuple) -> None:
        try:
            self.engine._late(self.cid, record)
        except Exception as e:  # profiling must never break the compute
            warn_engine_error(e)


def dependencies_of(collector: ComputeCollector, keys) -> dict:
    """The keys each of ``keys`` reads, with aliases resolved to the tasks behind them.

    ``collector`` is anything with the ``tasks`` and ``aliases`` of
    :func:`measured_tasks`.
    """
    tasks, aliases = collector.tasks, collector.aliases
    out = {}
    for key in keys:
        node = tasks.get(key)
        if node is not None:
            out[key] = [aliases.get(d, d) for d in node.dependencies]
    return out


def fused_ops(collector: ComputeCollector, keys, ops: frozenset) -> dict:
    """For tasks that fuse one of ``ops`` inside them, the name of that op.

    Blockwise fusion names a fused task after its last layer: a matmul fused into
    the sum of its products is a ``chunk_sum`` task. The fused task keeps its inner
    keys, which still name the matmul.
    """
    from dask.utils import key_split

    out = {}
    tasks = collector.tasks
    for key in keys:
        node = tasks.get(key)
        if node is None:
            continue
        for inner in _inner_keys(node):
            op = key_split(layer_name(inner))
            if op in ops:
                out[key] = op
                break
    return out


def read_only_by_rechunks(dependencies: dict) -> set:
    """Keys whose every reader (in ``dependencies``: key -> keys it reads) is a rechunk.

    >>> sorted(read_only_by_rechunks({("rechunk-merge-1", 0): ["a", "b"], ("sum-2", 0): ["b"]}))
    ['a']
    """
    only: dict = {}
    for key, deps in dependencies.items():
        rechunk = "rechunk" in str(layer_name(key))
        for d in deps:
            only[d] = rechunk and only.get(d, True)
    return {d for d, flag in only.items() if flag}


_fault_cost: float | None = None
_calibrating = threading.Lock()  # one calibration at a time, each once per process


def fault_seconds_per_byte() -> float:
    """Seconds per byte to touch freshly mapped pages, measured once per process.

    Large NumPy arrays are served with fresh pages that fault on first touch; the
    difference between filling a fresh 32 MiB array and filling it again is that
    cost (median of three, about 15 ms in all).
    """
    global _fault_cost
    with _calibrating:
        if _fault_cost is None:
            _fault_cost = _measure_fault_cost()
    return _fault_cost


def _measure_fault_cost() -> float:
    n = 32 * 2**20
    costs = []
    for _ in range(3):
        t0 = perf_counter()
        a = np.empty(n // 8)
        a.fill(1.0)
        t1 = perf_counter()
        a.fill(2.0)
        t2 = perf_counter()
        del a
        costs.append(max(0.0, (t1 - t0) - (t2 - t1)) / n)
    return sorted(costs)[1]


_blas: tuple[int, float] | None = None


def blas_profile() -> tuple[int, float]:
    """How NumPy's BLAS uses the cores, measured once per process (about 0.2 s).

    Returns the cores one large matrix product keeps busy (process CPU time over
    wall time of two 1024 x 1024 products; 1 for a single-threaded BLAS) and how
    much slower two products run when started at once from two threads than one
    after the other: a multithreaded BLAS called from several threads
    oversubscribes the cores, which is why Dask's docs advise one BLAS thread per
    worker thread.
    """
    global _blas
    with _calibrating:
        if _blas is None:
            _blas = _measure_blas()
    return _blas


def _measure_blas() -> tuple[int, float]:
    from time import process_time

    a = np.ones((1024, 1024))
    a @ a  # warm up the thread pool
    cpu, wall = process_time(), perf_counter()
    for _ in range(2):
        a @ a
    cpu, wall = process_time() - cpu, perf_counter() - wall
    threads = max(1, min(os.cpu_count() or 1, round(cpu / wall))) if wall > 0 else 1

    def products():
        for _ in range(2):
            a @ a

    start = perf_counter()
    products()
    products()
    sequential = perf_counter() - start
    workers = [threading.Thread(target=products) for _ in range(2)]
    start = perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    concurrent = perf_counter() - start
    penalty = max(1.0, concurrent / sequential) if sequential > 0 else 1.0
    return threads, penalty


def warn_engine_error(e: BaseException) -> None:
    warnings.warn(
        f"adaptive chunking could not record a profile ({type(e).__name__}: {e}); "
        "the computation itself is unaffected",
        AdaptiveChunkingWarning,
        stacklevel=3,
    )


_TASK_SLOTS = Task.get_all_slots()
_PID = os.getpid()


def _new_pid() -> None:
    global _PID
    _PID = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_pid)


def _copy_task_slots(node: Task, cls: type) -> Task:
    """A ``cls`` instance with ``node``'s ``Task`` state, without re-running ``__init__``."""
    new = cls.__new__(cls)
    for slot in _TASK_SLOTS:
        try:
            setattr(new, slot, getattr(node, slot))
        except AttributeError:
            pass
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
                nbytes = sizeof(result)
                logical = getattr(result, "nbytes", None)
                if type(logical) is not int:
                    logical = nbytes
                shape, dtype = getattr(result, "shape", None), getattr(result, "dtype", None)
                mem, membytes = id(result), nbytes
            rss0 = _rss_value
            collector.add(
                (self.key, t0, t1, rss0, rss_at(t1), nbytes, shape, dtype, get_ident(),
                 self.tag, self.is_output, False, logical, mem, membytes)
            )
        except Exception as e:  # profiling must never break the compute
            logger.debug("adaptive chunking failed to measure task %s: %s", self.key, e)
            try:  # still count the task, or the compute would never finish
                collector.add((self.key, t0, t1, 0, 0, 0, None, None, get_ident(),
                               self.tag, self.is_output, False, 0, 0, 0))
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
            record = (
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
                    collector.error = (self.key, f"{type(exc).__name__}: {exc}"[:300],
                                       not isinstance(exc, Exception))
                collector.add(record)
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
            collector.add(record)
    except Exception as e:  # runs inside unpickling: never fail the compute
        logger.debug("adaptive chunking failed to receive a record: %s", e)
    return value


def layer_name(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else key


def _is_finalize(key) -> bool:
    return str(layer_name(key)).startswith("finalize-")


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
    dsk = convert_legacy_graph(dsk)
    requested = list(flatten(keys)) if keys is not None else list(dsk)
    outputs: set = set()
    tasks = {}
    aliases = {}
    stack = [(k, True) for k in requested]
    seen: set = set()
    while stack:
        key, is_output = stack.pop()
        if key in seen:
            if is_output:
                outputs.add(key)
            continue
        seen.add(key)
        node = dsk.get(key)
        if node is None:
            continue
        kind = type(node)
        # What an alias or the finalize step points at is still an output.
        passes_output = is_output and (kind is Alias or _is_finalize(key))
        if is_output and not passes_output:
            outputs.add(key)
        stack.extend((d, passes_output) for d in node.dependencies)
        if kind is Alias:
            aliases[key] = node.target
        if kind is MeasuredTask:  # already instrumented (e.g. by dask.optimize)
            node = node.plain()
        elif kind is not Task or _is_finalize(key):
            continue
        tasks[key] = node
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


def instrument(dsk, keys, named, engine):
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
    dsk, tasks, aliases, outputs = measured_tasks(dsk, keys)
    if named is None or isinstance(named, frozenset):  # no profile, or all tasks one's
        tag_of, tags = dict.fromkeys(tasks, 0), [named or frozenset()]
    else:
        tag_of, tags = assign_tags(dsk, list(tasks), named)
    collector = ComputeCollector(len(tasks), engine, tags)
    collector.tasks, collector.aliases = tasks, aliases
    out = dict(dsk)
    cid, pid, wrap = collector.cid, _PID, MeasuredTask.wrap
    for key, node in tasks.items():
        out[key] = wrap(node, collector, cid, pid, tag_of[key], key in outputs)
    return out, collector
