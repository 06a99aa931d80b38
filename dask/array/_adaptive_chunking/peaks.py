"""The peak memory of running computes, and the memory readings of task records.

A compute's peak comes from the kernel's high-water mark (:class:`HighWaterMark`,
exact, Linux) or from a sampler thread (:class:`PeakSampler`); :func:`track_peak`
picks one. Task records carry a cheaper, coarser reading (:func:`rss_at`), reused
for a short while because a system call per task is paid by every waiting thread.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from dask.array._adaptive_chunking.memory import children_rss, process_rss

try:
    from resource import RUSAGE_SELF, getrusage
except ImportError:  # pragma: no cover - Windows
    RUSAGE_SELF, getrusage = None, None

if TYPE_CHECKING:
    from dask.array._adaptive_chunking.tasks import ComputeCollector

__all__ = [
    "MAX_INTERVAL", "RSS_REFRESH", "PeakSampler", "HighWaterMark", "sampler",
    "high_water_mark", "readings", "rss_at", "track_peak", "untrack_peak",
]


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


class _Readings:
    """The reading task records reuse: its value (bytes) and when it was taken."""

    __slots__ = ("value", "time")

    def __init__(self) -> None:
        self.value = 0
        self.time = float("-inf")


#: Read by the hot path as ``readings.value``: an attribute, not a call.
readings = _Readings()


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
    if now - readings.time > RSS_REFRESH:
        readings.time = now
        readings.value = _read_rss()
    return readings.value


class _Proc:
    """``/proc/self/status`` and ``/proc/self/clear_refs``, kept open.

    The mark is read three times and reset once per compute: opening the files each
    time took 40 of the 50 us. A forked child closes the parent's and opens its own
    (``/proc/self`` was the parent's when they were opened).
    """

    def __init__(self) -> None:
        self.pid = 0
        self.status = self.clear = -1

    def _open(self) -> None:
        pid = os.getpid()
        if self.pid == pid:
            return
        self.pid = pid  # tried once per process, even if a file cannot be opened
        self.status = self.clear = -1
        cloexec = getattr(os, "O_CLOEXEC", 0)
        for attr, path, flags in (("status", "/proc/self/status", os.O_RDONLY),
                                  ("clear", "/proc/self/clear_refs", os.O_WRONLY)):
            try:
                setattr(self, attr, os.open(path, flags | cloexec))
            except OSError:
                pass

    def forked(self) -> None:
        """In a forked child, right after the fork: close the parent's files while
        their numbers are still this process's (later they may name other files)."""
        for fd in (self.status, self.clear):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pid, self.status, self.clear = 0, -1, -1

    def hwm(self) -> int | None:
        self._open()
        if self.status < 0:
            return None
        try:
            text = os.pread(self.status, 16384, 0)
            at = text.index(b"VmHWM:")
            return int(text[at + 6:text.index(b"kB", at)]) * 1024
        except (OSError, ValueError):
            return None

    def reset(self) -> bool:
        self._open()
        if self.clear < 0:
            return False
        try:
            return os.write(self.clear, b"5") == 1
        except OSError:
            return False


_proc = _Proc()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_proc.forked)


def _read_hwm() -> int | None:
    """The kernel's peak resident memory of this process (``VmHWM``), in bytes."""
    return _proc.hwm()


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
        return _proc.reset()

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
            if self._active:  # the computes running now keep their peak so far
                self._credit()
            # Read back once, to learn whether the mark works here: two reads of
            # /proc/self/status were most of the 0.1 ms this took per compute.
            if not self._reset() or (self.available is None and _read_hwm() is None):
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
    readings.time = float("-inf")  # task readings of an earlier compute are not reused
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
