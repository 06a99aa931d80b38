"""The ``dask adaptive-chunking`` command group (a ``dask_cli`` plugin)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner

from dask.array._adaptive_chunking.cli import adaptive_chunking

ROOT = Path(__file__).resolve().parents[3]


def run(*args, input=None):
    return CliRunner().invoke(adaptive_chunking, list(args), input=input)


def test_registered_in_dasks_cli_through_its_plugin_entry_point():
    import click
    from dask.cli import _register_command_ep

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    (value,) = [v for k, v in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["entry-points"]["dask_cli"].items() if k == "adaptive-chunking"]
    group = click.Group("dask")
    _register_command_ep(group, EntryPoint("adaptive-chunking", value, "dask_cli"))
    out = CliRunner().invoke(group, ["--help"])
    assert "adaptive-chunking" in out.output
    sub = CliRunner().invoke(group, ["adaptive-chunking", "--help"])
    for command in ("demo", "recommend", "history", "config"):
        assert command in sub.output


def _stored(engine):
    import dask.array as da

    x = da.random.random((1000, 1000), chunks=100)
    engine.profile_array(x)
    (x + x.T).mean(axis=0).compute()
    return engine.load_history()


def test_history_list_show_export_import_clear(engine, tmp_path):
    assert "empty" in run("history", "list").output
    (row,) = _stored(engine)
    listed = run("history", "list")
    assert listed.exit_code == 0 and row["signature"] in listed.output
    assert "1000x1000" in listed.output and "threads" in listed.output
    shown = run("history", "show", "--all", str(row["id"]))
    assert json.loads(shown.output)["signature"] == row["signature"]
    path = tmp_path / "h.jsonl"
    assert "1 computes written" in run("history", "export", str(path)).output
    assert "aborted" in run("history", "clear", input="n\n").output.lower()
    assert len(engine.load_history()) == 1  # not confirmed: kept
    assert "1 computes deleted" in run("history", "clear", "--yes").output
    assert "1 computes added" in run("history", "import", str(path)).output


def test_history_list_names_each_workload_by_its_operations(engine):
    (row,) = _stored(engine)
    lines = run("history", "list").output.splitlines()
    assert lines[1].split() == ["workload", row["signature"], "random_sample", "->", "add,",
                                "mean_chunk,", "transpose"]
    assert lines[2].split()[0] == str(row["id"]) and "100x100" in lines[2]
    assert all(len(line) <= 100 for line in lines)


def test_history_list_names_older_rows_by_their_tasks_and_clips_long_names(engine):
    import dask
    from dask.array._adaptive_chunking.history import HistoryStore

    (row,) = _stored(engine)
    old = {k: row[k] for k in ("created", "signature", "fingerprint", "shape", "dtype",
                               "chunks")}
    long = {"source": "ones", "applied": [f"operation_{i}" for i in range(30)]}
    store = HistoryStore(dask.config.get("array.adaptive-chunking.history-path"))
    store.add_many([dict(old, signature="s" * 16, data={"observation": row["data"][
        "observation"]}),  # stored before the operations were
                    dict(old, signature="l" * 16, data={"operations": long})])
    store.close()
    lines = run("history", "list").output.splitlines()
    assert f"workload {'s' * 16}  random_sample, mean_chunk, mean_agg (tasks as run)" \
        in lines
    (clipped,) = [line for line in lines if "l" * 16 in line]
    assert clipped.endswith("...") and len(clipped) <= 100
    shown = run("history", "show", str(row["id"] + 2))  # the long one: no measurements
    assert shown.exit_code == 0 and "measured  nothing stored" in shown.output


def test_history_show_summarizes_and_all_shows_the_record(engine):
    (row,) = _stored(engine)
    shown = run("history", "show", str(row["id"]))
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert len(lines) <= 10 and all(len(line) <= 100 for line in lines)
    text = shown.output
    assert f"{row['signature']}  random_sample -> add, mean_chunk, transpose" in text
    assert "1000x1000 float64, 7.63 MiB" in text
    assert "100, the largest 100x100 (78.12 kiB)" in text  # not the chunk tuples
    assert "threads scheduler" in text and "peak " in text and " MiB" in text
    o = row["data"]["observation"]
    assert f"{o['n_tasks']:,} tasks" in text
    everything = run("history", "show", str(row["id"]), "--all")
    assert len(everything.output.splitlines()) > 5 * len(lines)
    stored = json.loads(everything.output)
    assert stored["chunks"] == [list(c) for c in row["chunks"]]
    assert stored["data"] == row["data"]


USAGE_MISTAKES = [
    (["history", "show"], "Missing argument 'ID'", "history show"),
    (["history", "show", "one"], "'one' is not a valid integer", "history show"),
    (["history", "list", "--bogus"], "No such option '--bogus'", "history list"),
    (["history", "list", "--limit", "0"], "0 is not in the range", "history list"),
    (["history", "lst"], "No such command 'lst'", "history"),
    (["--bogus"], "No such option '--bogus'", ""),
    (["recommend", "--shape", "lots"], "'lots' is not a shape", "recommend"),
    (["demo", "--scheduler", "nowhere"], "neither threads", "demo"),
]


@pytest.mark.parametrize("args, message, command", USAGE_MISTAKES)
def test_usage_mistakes_are_one_line_on_stderr_with_status_2(engine, args, message,
                                                             command):
    out = run(*args)
    assert out.exit_code == 2 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert line.startswith("Error: ") and message in line
    path = " ".join(filter(None, ["adaptive-chunking", command]))
    assert line.endswith(f" See '{path} --help'.")


@pytest.mark.parametrize("args, message, command", USAGE_MISTAKES[:3])
def test_usage_mistakes_are_one_line_through_dask_and_main(engine, capsys, args, message,
                                                           command):
    import click
    from dask.cli import _register_command_ep

    from dask.array._adaptive_chunking.cli import main

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    (value,) = [v for k, v in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["entry-points"]["dask_cli"].items() if k == "adaptive-chunking"]
    group = click.Group("dask")  # as `dask`: its group, not ours, runs Click's main
    _register_command_ep(group, EntryPoint("adaptive-chunking", value, "dask_cli"))
    out = CliRunner().invoke(group, ["adaptive-chunking", *args], prog_name="dask")
    assert out.exit_code == 2 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert message in line and f"'dask adaptive-chunking {command} --help'" in line
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and message in err[0]
    assert "python -m dask.array.adaptive_chunking" in err[0]


def test_help_still_works(engine):
    out = run("history", "show", "--help")
    assert out.exit_code == 0 and out.output.startswith("Usage: ")
    assert "--all" in out.output


def test_recommend_from_the_history(engine):
    (row,) = _stored(engine)
    out = run("recommend", "--shape", "12000,12000", "--chunks", "100,100")
    assert out.exit_code == 0, out.output
    assert row["signature"] in out.output and "chunks: (" in out.output
    from dask.utils import format_bytes

    from dask.array.adaptive_chunking import memory_limit

    near = int(memory_limit() * 0.9)
    limited = run("recommend", "--shape", "12000x12000", "--memory-limit", str(near))
    assert limited.exit_code == 0, limited.output
    assert f"of a {format_bytes(int(near * 0.4))} budget" in limited.output
    # A small container: the history measured here carries over, the budget is its own.
    small = run("recommend", "--shape", "12000x12000", "--memory-limit", "2GiB")
    assert small.exit_code == 0, small.output
    assert "of a 819.20 MiB budget" in small.output  # 0.4 of 2 GiB


def test_recommend_without_chunks_starts_from_dask_auto(engine):
    _stored(engine)
    out = run("recommend", "--shape", "20000,20000")
    assert out.exit_code == 0, out.output
    chunks = eval(out.output.split("\nchunks: ", 1)[1].splitlines()[0])
    # Not one 3 GiB chunk kept whole "as it was": nobody asked for one chunk.
    assert math.prod(chunks) < 20000 * 20000 and "kept whole" not in out.output
    # A reason that keeps "the current chunks" says which those are.
    import dask.array as da

    auto = da.empty((20000, 20000), chunks="auto").chunksize
    assert f'current chunks: {auto} (Dask\'s chunks="auto"' in out.output
    given = run("recommend", "--shape", "20000,20000", "--chunks", "100,100")
    assert "current chunks: (100, 100)\n" in given.output


def test_no_comparable_history_names_what_differs(engine):
    import dask

    _stored(engine)
    with dask.config.set(scheduler="sync"):  # computes of another scheduler do not carry
        out = run("recommend", "--shape", "1000,1000")
    assert out.exit_code == 1
    assert "from hardware like this" in out.output
    assert "scheduler threads stored, sync here" in out.output


def test_recommend_for_other_threads_carries_the_history_over(engine):
    from dask.array._adaptive_chunking.history_service import local_threads

    _stored(engine)
    threads = 8 * local_threads()
    here = run("recommend", "--shape", "8000,8000")
    more = run("recommend", "--shape", "8000,8000", "--threads", str(threads))
    assert here.exit_code == 0 and more.exit_code == 0, more.output
    assert "carried over" not in here.output
    assert (f"carried over: measured with {local_threads()} threads, planned for "
            f"{threads} threads") in more.output
    assert "predicted: peak" in more.output  # planned at all; the engine tests check how
    bad = run("recommend", "--shape", "10,10", "--threads", "0")
    assert bad.exit_code == 2 and "--threads" in bad.output


@pytest.mark.parametrize("args, message", [
    (["recommend", "--shape", "12000,12000", "--dtype", "int8"], "no 2-dimensional int8"),
    (["recommend", "--shape", "lots"], "not a shape"),
    (["recommend", "--shape", "10,10", "--dtype", "nonsense"], "not a NumPy dtype"),
    (["recommend", "--shape", "10,10", "--chunks", "5"], "has 1 dimensions"),
    (["recommend", "--shape", "10,10", "--signature", "nope"], "nothing of workload"),
    (["recommend", "--shape", "10,10", "--memory-limit", "lots"], "memory-limit"),
    (["history", "show", "99999"], "no stored compute has id 99999"),
    (["history", "import", "/no/such/file"], "does not exist"),
    (["demo", "--scheduler", "nowhere"], "neither threads"),
    (["demo", "--size", "0"], "--size"),
])
def test_user_mistakes_are_one_line_and_exit_non_zero(engine, args, message):
    _stored(engine)
    out = run(*args)
    assert out.exit_code != 0
    assert message in out.output
    assert "Traceback" not in out.output and out.exception is None or \
        isinstance(out.exception, SystemExit)


def test_a_bad_import_file_is_one_line(engine, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nope": 1}\n')
    out = run("history", "import", str(bad))
    assert out.exit_code == 1 and "line 1" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_config_says_where_each_setting_comes_from(engine, monkeypatch):
    import dask

    monkeypatch.setenv("DASK_ARRAY__ADAPTIVE_CHUNKING__MAX_RECORDS", "500")
    with dask.config.set({"array.adaptive-chunking.max-records": 500,
                          "array.adaptive-chunking.safety-factor": 0.5}):
        out = run("config").output.splitlines()
    line = {row.split()[0]: row for row in out}
    assert line["max-records"].endswith("environment DASK_ARRAY__ADAPTIVE_CHUNKING__MAX_RECORDS")
    assert line["safety-factor"].endswith("code (dask.config.set)")
    assert line["overhead-target"].endswith("default")
    # What a setting means where a person would have to work it out
    assert line["min-chunk-bytes"].endswith("default  (1.00 MiB)")
    assert "(None: this machine's or container's, " in line["memory-limit"]
    assert line["max-chunk-bytes"].endswith("(None: no bound)")


def test_config_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-c", "import sys; from dask.array._adaptive_chunking"
                          ".cli import main; sys.exit(main(['config']))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "max-records" in out.stdout and "default" in out.stdout


def test_config_names_the_yaml_file_that_sets_a_key(tmp_path):
    (tmp_path / "ours.yaml").write_text(
        "array:\n  adaptive_chunking:\n    safety-factor: 0.5\n    max-records: 900\n")
    env = dict(os.environ, DASK_CONFIG=str(tmp_path),
               DASK_ARRAY__ADAPTIVE_CHUNKING__MAX_RECORDS="700")
    out = subprocess.run([sys.executable, "-c", "import sys; from dask.array._adaptive_chunking"
                          ".cli import main; sys.exit(main(['config']))"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    line = {row.split()[0]: row for row in out.stdout.splitlines()}
    assert "0.5" in line["safety-factor"]
    assert line["safety-factor"].endswith(f"file {tmp_path / 'ours.yaml'}")
    assert "700" in line["max-records"]  # the environment wins over the file, as in Dask
    assert line["max-records"].endswith("environment DASK_ARRAY__ADAPTIVE_CHUNKING__MAX_RECORDS")
    assert line["overhead-target"].endswith("default")


def test_config_flags_invalid_values_and_misspelled_keys(monkeypatch):
    monkeypatch.setenv("DASK_ARRAY__ADAPTIVE_CHUNKING", '{"max-profiles": 9}')
    code = ("import sys; from dask.array._adaptive_chunking.cli import main; "
            "sys.exit(main(['config']))")
    env = dict(os.environ, DASK_ARRAY__ADAPTIVE_CHUNKING__SAFETY_FACTOR="7")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    line = {row.split()[0]: row for row in out.stdout.splitlines()}
    assert line["max-profiles"].split()[-1] == "environment"  # a whole-section variable
    assert "INVALID: safety-factor must be in (0, 1], got 7" in line["safety-factor"]
    env = dict(os.environ, DASK_ARRAY__ADAPTIVE_CHUNKING__MAX_PROFILEZ="11")
    env.pop("DASK_ARRAY__ADAPTIVE_CHUNKING")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 1 and "did you mean 'max-profiles'" in out.stderr
    assert "Traceback" not in out.stderr and "max-records" in out.stdout


def test_python_m_is_an_alias_and_runs_the_demo():
    out = subprocess.run(
        [sys.executable, "-m", "dask.array.adaptive_chunking", "--size", "600",
         "--chunk", "50", "--scheduler", "sync"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Recommended chunks" in out.stdout and "faster" in out.stdout
    helped = subprocess.run([sys.executable, "-m", "dask.array.adaptive_chunking", "history",
                             "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "export" in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "dask.array.adaptive_chunking", "demo",
                          "--size", "-3"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
