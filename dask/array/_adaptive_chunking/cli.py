"""``dask adaptive-chunking``: the command line, a ``dask_cli`` plugin of Dask's CLI.

Registered through the ``dask_cli`` entry point, so that it appears in
``dask --help``; ``python -m dask.array.adaptive_chunking`` runs the same group.
User mistakes (a missing file, nothing stored for a workload) print one line and
exit with status 1, never a traceback; usage mistakes (a missing argument, an
unknown option, a malformed value) print one line too, and exit with status 2.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from dask.array._adaptive_chunking import expressions as _expressions
from dask.array._adaptive_chunking import shapes as _shapes
from dask.array._adaptive_chunking import views as _views

__all__ = ["adaptive_chunking", "main", "OneLineUsageError"]

PREFIX = "array.adaptive-chunking"  # as config.PREFIX (not imported: --help stays fast)


def _engine():
    from dask.array.adaptive_chunking import get_adaptive_engine

    return get_adaptive_engine()


def _fail_cleanly(fn):
    """Run ``fn``; a ValueError, TypeError, OSError, KeyError or the error for array
    expressions (``array.query-planning``) becomes one error line."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # `... | head`: the reader is gone, which is no error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (ValueError, TypeError, OSError, KeyError,
                _expressions.QueryPlanningNotSupportedError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise click.ClickException(str(message)) from None

    return wrapper


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line: the message and where help is.

    Click shows a usage error in four lines (the usage, a hint, a blank line, the
    error); a user who mistyped wants the one that says what is wrong.
    """

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)

    def show(self, file: Any = None) -> None:
        message = self.format_message()
        if not message.endswith((".", "?", "!")):
            message += "."
        if self.ctx is not None:
            message += f" See '{self.ctx.command_path} --help'."
        click.echo(f"Error: {message}", file=file, err=file is None,
                   color=self.ctx.color if self.ctx is not None else None)


@contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except OneLineUsageError:
        raise
    except click.UsageError as e:
        raise OneLineUsageError(e) from None


class _Group(click.Group):
    """The command group; its own and its commands' usage errors are one line.

    They are converted where they are raised (parsing and invoking), not in
    ``main``: run as ``dask adaptive-chunking``, Dask's own group runs ``main``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_usage():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)


@click.group(name="adaptive-chunking", cls=_Group, invoke_without_command=True)
@click.pass_context
def adaptive_chunking(ctx: click.Context) -> None:
    """Chunk sizes for Dask arrays, learned from your own computations."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@adaptive_chunking.command()
@click.option("--size", default=6000, show_default=True, type=click.IntRange(min=1),
              help="Side of the square array.")
@click.option("--chunk", default=100, show_default=True, type=click.IntRange(min=1),
              help="Side of the (too small) starting chunks.")
@click.option("--scheduler", default="threads", show_default=True,
              help="threads, sync, processes, or the address of a running "
                   "dask.distributed scheduler (tcp://host:8786).")
@_fail_cleanly
def demo(size: int, chunk: int, scheduler: str) -> None:
    """Profile a workload started with too-small chunks, recommend, apply, compare."""
    from dask.array._adaptive_chunking.demo import run_demo

    if scheduler in ("threads", "sync", "processes"):
        run_demo(size, chunk, scheduler, progress=True)
        return
    if "://" not in scheduler and ":" not in scheduler:
        raise click.BadParameter(
            f"{scheduler!r} is neither threads, sync, processes nor a scheduler address "
            "such as tcp://127.0.0.1:8786", param_hint="--scheduler")
    try:
        from distributed import Client
    except ImportError:
        raise click.ClickException(
            "--scheduler ADDRESS needs dask.distributed: pip install "
            "'dask-adaptive-chunking[distributed]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except OSError as e:
        raise click.ClickException(f"cannot connect to the scheduler at {scheduler}: {e}") \
            from None
    with client:
        run_demo(size, chunk, None, progress=True, client=client)


def _shape(text: str) -> tuple[int, ...]:
    try:
        # "20000x20000" as history list writes it; "20000,x" or "20000,,5" is a mistake
        shape = tuple(int(n) for n in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(n < 0 for n in shape):
        raise click.BadParameter(f"{text!r} is not a shape; write e.g. 20000,20000",
                                 param_hint="--shape")
    return shape


@adaptive_chunking.command()
@click.option("--shape", required=True, help="The array's shape, e.g. 20000,20000.")
@click.option("--dtype", default="float64", show_default=True, help="The array's dtype.")
@click.option("--chunks", default=None,
              help="Its current chunk shape, e.g. 100,100 (default: Dask's "
                   "chunks=\"auto\").")
@click.option("--memory-limit", default=None,
              help="Memory this process may use, e.g. 4GiB (default: the machine's or "
                   "the container's).")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Tasks to run at once, e.g. a worker's threads (default: this "
                   "machine's).")
@click.option("--signature", default=None,
              help="The stored workload to learn from (default: the newest stored one "
                   "of this number of dimensions and dtype).")
@_fail_cleanly
def recommend(shape: str, dtype: str, chunks: str | None, memory_limit: str | None,
              threads: int | None, signature: str | None) -> None:
    """Recommend chunks for an array from the history, without computing anything."""
    import numpy as np

    import dask
    import dask.array as da

    _expressions.require_classic_arrays("dask adaptive-chunking recommend")
    dims = _shape(shape)
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise click.BadParameter(f"{dtype!r} is not a NumPy dtype",
                                 param_hint="--dtype") from None
    block = _shape(chunks) if chunks else "auto"  # what da.from_array would choose
    if chunks and len(block) != len(dims):
        raise click.BadParameter(f"{chunks!r} has {len(block)} dimensions, the shape "
                                 f"{len(dims)}", param_hint="--chunks")
    settings = {f"{PREFIX}.memory-limit": memory_limit} if memory_limit else {}
    if threads:
        settings["num_workers"] = threads  # what the threaded scheduler would run at once
    x = da.empty(dims, dtype=np_dtype, chunks=block)
    with dask.config.set(settings):
        rec, workload = _from_history(x, signature)
    click.echo(f"workload {workload}")
    start = "" if chunks else ' (Dask\'s chunks="auto"; --chunks gives others)'
    click.echo(f"current chunks: {x.chunksize}{start}")
    if rec.carried:
        click.echo(f"carried over: {rec.carried}")
    click.echo(f"chunks: {rec.chunks}")
    click.echo(f"chunk size: {_views.size_text(rec.chunk_bytes)} "
               f"(array.chunk-size: {rec.array_chunk_size})")
    click.echo(textwrap.fill(f"decided by: {rec.binding}: {rec.reason}", 88,
                             subsequent_indent="  "))
    click.echo(f"predicted: peak {_views.size_text(rec.predicted_peak_bytes)} of a "
               f"{_views.size_text(rec.memory_budget_bytes)} budget, "
               f"{_views.duration_text(rec.predicted_seconds)}, "
               f"{rec.predicted_tasks:,} tasks")


def _from_history(x, signature: str | None):
    """The recommendation for ``x`` from the stored computes of ``signature`` (default:
    the newest stored workload of its number of dimensions and dtype), with the
    workload (its signature, its operations and how many computes it rests on, in
    words), through the engine's public API."""
    import numpy as np

    from dask.array._adaptive_chunking import config as _config
    from dask.array._adaptive_chunking import history_service as _service
    from dask.array._adaptive_chunking.history_service import STORED_ROWS
    from dask.array.adaptive_chunking import get_adaptive_engine

    engine = get_adaptive_engine()
    here = _service.fingerprint(_config.snapshot(strict=False))
    rows = _service.plannable(engine.load_history(signature), here)
    if signature is None:
        signature = next((r["signature"] for r in rows if len(r["shape"]) == x.ndim
                          and np.dtype(r["dtype"]) == x.dtype), None)
        if signature is None:
            raise click.ClickException(
                f"the history holds no {x.ndim}-dimensional {x.dtype} workload "
                f"from hardware like this{_mismatch(engine, here, x=x)}; profile one first "
                "(see `dask adaptive-chunking history list`)")
    stored = sum(r["signature"] == signature and "observation" in r["data"] for r in rows)
    if not stored:
        raise click.ClickException(
            f"the history holds nothing of workload {signature!r} from hardware like "
            f"this{_mismatch(engine, here, signature=signature)}; `dask adaptive-chunking "
            "history list` shows what it holds")
    n = min(stored, STORED_ROWS)
    label = (f"{signature} ({_views.count_text(n, 'stored compute')} from hardware like "
             f"this): {workload_names(rows)[signature]}")
    return engine.recommend(x, workload=signature), label


def _mismatch(engine, here: str, x=None, signature: str | None = None) -> str:
    """Why the stored computes of ``signature`` (or of ``x``'s dimensions and dtype)
    do not count on the hardware ``here``: what of the newest one's differs, or ''."""
    import numpy as np

    from dask.array._adaptive_chunking import history as _history

    for row in engine.load_history(signature):
        if x is None or (len(row["shape"]) == x.ndim and np.dtype(row["dtype"]) == x.dtype):
            try:
                differ = _history.differences(row["fingerprint"], here)
            except (KeyError, ValueError, TypeError):
                return " (its stored hardware description is unreadable)"
            return f" (the newest such compute differs: {', '.join(differ)})" if differ else ""
    return ""


@adaptive_chunking.group()
def history() -> None:
    """The stored computes: list, show, export, import, clear."""


@history.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many of the newest computes to list.")
@_fail_cleanly
def history_list(limit: int) -> None:
    """The newest stored computes, one line each, under their workload: its
    signature (what `recommend --signature` takes) and its operations."""
    rows = _engine().load_history()
    if not rows:
        click.echo("the history is empty")
        return
    for line in list_lines(rows, limit):
        click.echo(line)


@history.command("show")
@click.argument("row_id", metavar="ID", type=int)
@click.option("--all", "everything", is_flag=True,
              help="The whole stored record as JSON: every chunk, each operation's tasks.")
@_fail_cleanly
def history_show(row_id: int, everything: bool) -> None:
    """One stored compute (ID from `history list`): what was computed, on what, and
    what it measured."""
    rows = _engine().load_history()
    row = next((r for r in rows if r["id"] == row_id), None)
    if row is None:
        raise click.ClickException(f"no stored compute has id {row_id}; `dask "
                                   "adaptive-chunking history list` shows the ids")
    if everything:
        click.echo(json.dumps(row, indent=2))
        return
    for line in show_lines(row, workload_names(rows)[row["signature"]]):
        click.echo(line)


#: Columns a line of `history list` and `history show` stays within.
WIDTH = 100


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis where it was cut.

    >>> _clip("add, mean_chunk, transpose", 20)
    'add, mean_chunk,...'
    """
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def workload_names(rows: list[dict[str, Any]], width: int = 72) -> dict[str, str]:
    """Each stored workload signature's operations in words (at most ``width``
    characters), from its newest row that stored them (``history_service.operations``:
    the operation that made the array, then those applied to it, sorted).

    Rows stored before the operations were have only the tasks that ran, after
    Dask fused some of them (an ``add`` into the ``mean_chunk`` that reads it):
    those are named ``(tasks as run)``.

    >>> ops = {"source": "random_sample", "applied": ["add", "mean_chunk"]}
    >>> terms = [["random_sample", 4, 1.0, 0.1], ["sum-partial", 2, 1.0, 0.0],
    ...          ["sum-aggregate", 1, 0.0, 0.0]]
    >>> workload_names([{"signature": "a", "data": {"operations": ops}},
    ...                 {"signature": "b", "data": {"observation": {"terms": terms}}},
    ...                 {"signature": "c", "data": {}}])  # doctest: +NORMALIZE_WHITESPACE
    {'a': 'random_sample -> add, mean_chunk', 'b': 'random_sample, sum (tasks as run)',
     'c': '(operations not stored)'}
    """
    names: dict[str, str] = {}
    guessed: dict[str, str] = {}
    for r in rows:
        ops = r["data"].get("operations")
        if ops is not None and r["signature"] not in names:
            applied = f" -> {', '.join(ops['applied'])}" if ops["applied"] else ""
            names[r["signature"]] = _clip(ops["source"] + applied, width)
        terms = r["data"].get("observation", {}).get("terms")
        if terms and r["signature"] not in guessed:
            ran = [t[0].removesuffix("-aggregate") for t in terms
                   if not t[0].endswith("-partial")]
            suffix = " (tasks as run)"
            guessed[r["signature"]] = _clip(", ".join(dict.fromkeys(ran)),
                                            width - len(suffix)) + suffix
    return {r["signature"]: names.get(r["signature"]) or guessed.get(r["signature"])
            or "(operations not stored)" for r in rows}


def hardware_text(fingerprint: str, full: bool = False) -> str:
    """A stored hardware fingerprint in words (``full``: also the cores).

    >>> from dask.array._adaptive_chunking.history import fingerprint
    >>> hardware_text(fingerprint(cores=4, threads=4, memory_limit=2**33,
    ...                           scheduler="threads"))
    'threads, 4 threads, 8.00 GiB'
    >>> hardware_text(fingerprint(cores=2, threads=8, memory_limit=0,
    ...                           scheduler="distributed"), full=True)
    'distributed scheduler, 2 workers with 8 threads in all, memory limit unknown'
    """
    f = json.loads(fingerprint)
    limit = int(f.get("memory_limit") or 0)
    memory = _views.size_text(limit) if limit else "memory limit unknown"
    if f.get("scheduler") == "distributed":
        text = (f"{_views.count_text(f.get('cores') or 0, 'worker')} with "
                f"{_views.count_text(f.get('threads') or 0, 'thread')} in all")
        if limit:
            memory += " per worker"
    else:
        text = _views.count_text(f.get("threads") or 0, "thread")
        if full:
            text += f" on {_views.count_text(f.get('cores') or 0, 'core')}"
    if full:
        return (f"{f.get('scheduler')} scheduler, {text}, "
                f"{memory}{' memory limit' if limit else ''}")
    return f"{f.get('scheduler')}, {text}, {memory}"


def _stored(created: float, seconds: bool = False) -> str:
    return time.strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""),
                         time.localtime(created))


def _largest_chunk(chunks) -> str:
    return "x".join(map(str, _shapes.largest(chunks)))


def list_lines(rows: list[dict[str, Any]], limit: int) -> list[str]:
    """The lines of `history list`: the newest ``limit`` rows, under a line naming
    their workload (the workloads in the order of their newest row)."""
    names = workload_names(rows)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows[:limit]:
        groups.setdefault(r["signature"], []).append(r)
    table = [("id", "stored", "shape", "dtype", "chunk", "hardware")]
    table += [(str(r["id"]), _stored(r["created"]), "x".join(map(str, r["shape"])),
               r["dtype"], _largest_chunk(r["chunks"]), hardware_text(r["fingerprint"]))
              for mine in groups.values() for r in mine]
    widths = [max(len(cells[i]) for cells in table) for i in range(5)]

    def line(cells) -> str:
        first = [cells[0].rjust(widths[0] + 2)]
        return _clip("  ".join(first + [c.ljust(w) for c, w in zip(cells[1:], widths[1:])]
                               + [cells[5]]), WIDTH)

    out, rest = [line(table[0])], iter(table[1:])
    for signature, mine in groups.items():
        out.append(_clip(f"workload {signature}  {names[signature]}", WIDTH))
        out += [line(next(rest)) for _ in mine]
    if len(rows) > limit:
        out.append(f"... {len(rows) - limit:,} more (--limit)")
    return out


def show_lines(row: dict[str, Any], workload: str) -> list[str]:
    """The lines of `history show` without ``--all``: a summary of one stored
    compute, without its chunk tuples and per-operation terms."""
    import numpy as np

    itemsize = np.dtype(row["dtype"]).itemsize
    n_chunks = math.prod(len(c) for c in row["chunks"])
    block = math.prod(_shapes.largest(row["chunks"])) * itemsize
    out = [
        f"stored compute {row['id']}, {_stored(row['created'], seconds=True)}",
        _clip(f"workload  {row['signature']}  {workload}", WIDTH),
        f"array     {'x'.join(map(str, row['shape']))} {row['dtype']}, "
        f"{_views.size_text(math.prod(row['shape']) * itemsize)}",
        f"chunks    {n_chunks:,}, the largest {_largest_chunk(row['chunks'])} "
        f"({_views.size_text(block)})",
        f"hardware  {hardware_text(row['fingerprint'], full=True)}",
    ]
    o = row["data"].get("observation")
    if o is None:
        out.append("measured  nothing stored (a record without its measurements)")
    else:
        out.append(f"time      {_views.duration_text(o['wall_seconds'])} from the first task "
                   f"to the last; {o['n_tasks']:,} tasks, "
                   f"{_views.duration_text(o['task_seconds'])} in all, "
                   f"at most {o['concurrency']:,} at once")
        where = f" (one worker of {o['processes']})" if o.get("processes", 1) > 1 else ""
        out.append(f"memory    peak {_views.size_text(o['peak_bytes'])}{where}, "
                   f"{_views.size_text(o['baseline_bytes'])} when it started"
                   if o["peak_bytes"] else "memory    peak not measured")
    out.append("(--all: the whole record, with every chunk)")
    return out


@history.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@_fail_cleanly
def history_export(path: str) -> None:
    """Write the history to PATH as JSON lines."""
    click.echo(f"{_engine().export_history(path)} computes written to {path}")


@history.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@_fail_cleanly
def history_import(path: str) -> None:
    """Add the JSON lines of PATH (from `export`) to the history."""
    click.echo(f"{_engine().import_history(path)} computes added from {path}")


@history.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_fail_cleanly
def history_clear(yes: bool) -> None:
    """Delete every stored compute."""
    if not yes:
        click.confirm("Delete every stored compute?", abort=True)
    click.echo(f"{_engine().clear_history()} computes deleted")


@adaptive_chunking.command()
@_fail_cleanly
def config() -> None:
    """The effective settings, and where each comes from: the default, an environment
    variable, a YAML file of Dask's config paths, or code."""
    import dask
    import dask.array.adaptive_chunking  # noqa: F401  (registers the defaults)
    from dask.array._adaptive_chunking import config as _config

    defaults, given = _config.defaults(), _config.sources()
    current = dask.config.get(PREFIX)
    for key in _config.RULES:
        value = current.get(key, current.get(key.replace("-", "_")))
        if key in given:
            source = given[key]
        elif value != defaults.get(key):
            source = "code (dask.config.set)"
        else:
            source = "default"
        try:
            _config.RULES[key](key, value)
        except (TypeError, ValueError) as e:
            source += f"  INVALID: {e}"
        else:
            source += _in_force(key, value)
        click.echo(f"{key:24} {value!r:28} {source}")
    _config.check_keys()  # a misspelled key: one line naming it, and exit 1


def _in_force(key: str, value: Any) -> str:
    """What a valid setting means where a person would have to work it out: a byte
    count as a size, and None as what takes its place.

    >>> _in_force("min-chunk-bytes", 1048576), _in_force("overhead-target", 0.1)
    ('  (1.00 MiB)', '')
    """
    if key == "memory-limit" and value is None:
        from dask.array._adaptive_chunking.memory import memory_limit

        return f"  (None: this machine's or container's, {_views.size_text(memory_limit())})"
    if key == "history-path" and value is None:
        from dask.array._adaptive_chunking.history import default_path

        return f"  (None: {default_path()})"
    if key.endswith("-bytes") and value is None:
        return "  (None: no bound)"
    if key in ("min-chunk-bytes", "max-chunk-bytes", "memory-limit", "max-memory") and (
            isinstance(value, int) and not isinstance(value, bool)):
        return f"  ({_views.size_text(value)})"
    return ""


def main(argv: list[str] | None = None) -> int:
    """``python -m dask.array.adaptive_chunking``: the same commands; returns the status."""
    try:
        adaptive_chunking.main(args=argv, prog_name="python -m dask.array.adaptive_chunking",
                               standalone_mode=True)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
