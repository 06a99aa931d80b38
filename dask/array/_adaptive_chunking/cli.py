"""``dask adaptive-chunking``: the command line, a ``dask_cli`` plugin of Dask's CLI.

Registered through the ``dask_cli`` entry point, so that it appears in
``dask --help``; ``python -m dask.array.adaptive_chunking`` runs the same group.
User mistakes (a bad option, a missing file, nothing stored for a workload) print
one line and exit with status 1, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys

import click

from dask.array._adaptive_chunking import expressions as _expressions

__all__ = ["adaptive_chunking", "main"]

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


@click.group(name="adaptive-chunking", invoke_without_command=True)
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
        shape = tuple(int(n) for n in text.replace("x", ",").split(",") if n.strip())
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
    with dask.config.set(settings):
        rec, signature, computes = _from_history(da.empty(dims, dtype=np_dtype,
                                                          chunks=block), signature)
    click.echo(f"workload {signature} ({computes} stored computes)")
    if rec.carried:
        click.echo(f"carried over: {rec.carried}")
    click.echo(f"chunks: {rec.chunks}")
    click.echo(f"chunk size: {rec.chunk_bytes / 2**20:.1f} MiB "
               f"(array.chunk-size: {rec.array_chunk_size})")
    click.echo(f"decided by: {rec.binding}: {rec.reason}")
    click.echo(f"predicted: peak {rec.predicted_peak_bytes / 2**20:.0f} MiB of a "
               f"{rec.memory_budget_bytes / 2**20:.0f} MiB budget, "
               f"{rec.predicted_seconds:.2f} s, {rec.predicted_tasks} tasks")


def _from_history(x, signature: str | None):
    """The recommendation for ``x`` from the stored computes of ``signature`` (default:
    the newest stored workload of its number of dimensions and dtype), with the
    signature and how many computes it rests on, through the engine's public API."""
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
    return engine.recommend(x, workload=signature), signature, min(stored, STORED_ROWS)


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
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@_fail_cleanly
def history_list(limit: int) -> None:
    """The newest stored computes, one line each."""
    rows = _engine().load_history()
    if not rows:
        click.echo("the history is empty")
        return
    click.echo(f"{'id':>6}  {'workload':16}  {'shape':>16}  {'dtype':8}  {'chunk':>14}  "
               "hardware")
    for r in rows[:limit]:
        hardware = json.loads(r["fingerprint"])
        chunk = "x".join(str(max(c, default=0)) for c in r["chunks"])
        click.echo(f"{r['id']:>6}  {r['signature']:16}  "
                   f"{'x'.join(map(str, r['shape'])):>16}  {r['dtype']:8}  {chunk:>14}  "
                   f"{hardware.get('scheduler')}, {hardware.get('threads')} threads, "
                   f"{hardware.get('memory_limit', 0) / 2**30:.1f} GiB")
    if len(rows) > limit:
        click.echo(f"... {len(rows) - limit} more (--limit)")


@history.command("show")
@click.argument("row_id", type=int)
@_fail_cleanly
def history_show(row_id: int) -> None:
    """One stored compute, in full (JSON)."""
    row = next((r for r in _engine().load_history() if r["id"] == row_id), None)
    if row is None:
        raise click.ClickException(f"no stored compute has id {row_id}; `dask "
                                   "adaptive-chunking history list` shows the ids")
    click.echo(json.dumps(row, indent=2))


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
        click.echo(f"{key:24} {value!r:28} {source}")
    _config.check_keys()  # a misspelled key: one line naming it, and exit 1


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
