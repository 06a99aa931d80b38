"""The memory a process may use, and how much it uses now.

:func:`cgroup_memory` and :func:`host_memory` give the limit a process lives under
(a container's cgroup limit is often far below the host's memory);
:func:`process_rss` reads this process's resident memory in about a microsecond,
fast enough to read around tasks; :func:`memory_limit` combines them with the
configured limit.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from dask.array._adaptive_chunking.errors import warn_once

__all__ = [
    "ASSUMED_MEMORY", "cgroup_memory", "host_memory", "memory_limit", "process_rss",
    "free_heap_bytes", "live_rss", "in_use_now", "resident_now", "children_rss", "usage",
]


_UNLIMITED = 2**60

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


#: This process's memory when the module was imported: the interpreter and its
#: libraries, a floor for the memory in use.
_IMPORTED_RSS = process_rss()

def _find_mallinfo2():
    """glibc's ``mallinfo2`` (2.33 and later) as a ctypes function, or None."""
    try:
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                "fsmblks", "uordblks", "fordblks", "keepcost")]

        function = ctypes.CDLL(None).mallinfo2
        function.restype = MallInfo2
        return function
    except (OSError, AttributeError, TypeError):
        return None


# Looked up and called once, here: the first lookup and the first call take
# milliseconds, a reading after them microseconds.
_mallinfo2 = _find_mallinfo2()
if _mallinfo2 is not None:
    _mallinfo2()


def _malloc_free_bytes() -> int:
    """Bytes the C allocator holds free (glibc ``mallinfo2().fordblks``; 0 elsewhere)."""
    if _mallinfo2 is None:
        return 0
    try:
        return int(_mallinfo2().fordblks)
    except Exception:
        return 0


#: The share of the time a compute's start may spend reading the allocator's free
#: heap. A reading walks the free lists: 10-20 us on a fresh process, 0.7-3 ms in a
#: test process that ran 90 tests, 51 ms on a heap cut into 100,000 free pieces.
FREE_HEAP_SHARE = 0.01
#: When, since the last reading, resident memory has changed by more than this
#: share (or 16 MiB), the heap has too: it is read again, whatever it costs.
FREE_HEAP_MOVED = 0.1
#: When it may be read again, the last reading, and the resident memory then.
_free_heap: list = [-math.inf, 0, 0]


def free_heap_bytes(rss: int | None = None) -> int:
    """Bytes the C allocator holds free for reuse, read at most :data:`FREE_HEAP_SHARE`
    of the time (0 where the allocator cannot tell).

    A reading that took ``t`` seconds is reused for the next ``t / FREE_HEAP_SHARE``
    seconds while the resident memory (``rss``, a reading just taken; default:
    read now) stays within :data:`FREE_HEAP_MOVED` of what it was: computes run
    back to back each free what they allocated, and the free heap hardly changes.

    >>> free_heap_bytes() >= 0
    True
    """
    began = time.perf_counter()
    rss = process_rss() if rss is None else rss
    after, last, then = _free_heap
    if began < after and abs(rss - then) <= max(FREE_HEAP_MOVED * then, 16 * 2**20):
        return last
    free = _malloc_free_bytes()
    _free_heap[:] = [began + (time.perf_counter() - began) / FREE_HEAP_SHARE, free, rss]
    return free


def live_rss(rss: int | None = None, free: int | None = None) -> int:
    """This process's resident memory less what its allocator keeps free, in bytes.

    After a compute, the chunks it freed stay resident in the allocator's heap
    until the next compute reuses them: a ``qr`` that peaked at 657 MiB left the
    process at 475 MiB, of which 379 MiB were free heap, and the same compute run
    again peaked at 682 MiB. Taking the raw figure as the next compute's starting
    point counted the free heap twice (as memory held, and again as the chunks
    that reuse it) and predicted 1,066 MiB. ``rss`` and ``free`` are readings just
    taken (default: read now). Pages the allocator has handed back to the system
    (``malloc_trim``) still count as free although they are no longer resident, so
    the result is never taken below the memory the process held when this module
    was imported (the interpreter and its libraries).

    >>> live_rss(500 * 2**20, 400 * 2**20) >= 100 * 2**20
    True
    """
    rss = process_rss() if rss is None else rss
    free = _malloc_free_bytes() if free is None else free
    return max(min(rss, _IMPORTED_RSS), rss - free)


#: Seconds a reading of the memory in use is reused by planning, so that predictions
#: made together (a plot's sweep and ``engine.predict``) start from the same figure.
IN_USE_SECONDS = 1.0
_in_use: list = [-math.inf, 0, 0]  # when it was read, the memory in use, the resident


def _planning_reading() -> tuple[int, int]:
    read_at, live, rss = _in_use
    now = time.monotonic()
    if now - read_at > IN_USE_SECONDS:
        rss = process_rss()
        live = live_rss(rss)
        _in_use[:] = [now, live, rss]
    return live, rss


def in_use_now() -> int:
    """:func:`live_rss`, read at most once every :data:`IN_USE_SECONDS`."""
    return _planning_reading()[0]


def resident_now() -> int:
    """:func:`process_rss`, read with :func:`in_use_now` (the same reading)."""
    return _planning_reading()[1]


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


def memory_limit(configured: int | None = None) -> int:
    """The memory this process may use, in bytes.

    ``configured`` (the ``memory-limit`` setting) when given, else the smaller of
    physical memory and this process's cgroup limit.

    >>> memory_limit(2 * 2**30)
    2147483648
    """
    if configured is not None:
        return configured
    total, _ = host_memory()
    limit, _ = cgroup_memory()
    return min(total, limit) if limit else total


def usage(configured: int | None = None) -> tuple[int, int]:
    """The memory limit this process lives under and what is in use against it, in bytes.

    The host's memory, or the cgroup's limit where tighter (usage then from the
    cgroup); with ``configured`` (the ``memory-limit`` setting), that limit against
    this process's own resident memory.

    >>> total, used = usage(2**40)
    >>> total == 2**40 and 0 <= used <= total
    True
    """
    total, available = host_memory()
    used = total - available
    cg_limit, cg_usage = cgroup_memory()
    if cg_limit is not None and cg_limit < total:
        total = cg_limit
        used = cg_usage if cg_usage is not None else used
    if configured is not None:
        total = configured
        used = process_rss()
    return total, min(used, total)
