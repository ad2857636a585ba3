"""The command line: each subcommand runs, writes what it says, and bad options give one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastconv import cli


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for field in ("fastconv", "numpy", "numba", "threading", "cache dir", "threads", "blas idle",
                  "methods"):
        assert field in out, field


def test_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--ops", "max_pool2d", "--layers", "pool2", "--methods", "jit", "--repeats", "2",
            "--no-torch", "--json", str(path)]
    assert cli.main(argv) == 0
    data = json.loads(path.read_text())
    (rec,) = data["records"]
    assert (rec["op"], rec["layer"], rec["method"]) == ("max_pool2d", "pool2", "jit")
    assert rec["fwd_s"] > 0 and rec["fwdbwd_s"] > 0  # values only: timings are never asserted
    assert data["dtype"] == "float32" and data["rounds"] == 2
    assert "pool2" in capsys.readouterr().out


def test_check_quick_passes(capsys):
    assert cli.main(["check", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out and "0 mismatched" in out


@pytest.mark.parametrize("argv,message", [
    (["bench", "--layers", "nope", "--no-torch"], "unknown layer 'nope'"),
    (["bench", "--methods", "nope", "--no-torch"], "unknown or unavailable method 'nope'"),
    (["bench", "--ops", "nope", "--no-torch"], "unknown op 'nope'"),
    (["bench", "--repeats", "0", "--no-torch"], "--repeats must be at least 1"),
    (["check", "--cases", "0"], "--cases must be at least 1"),
])
def test_bad_options_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_module_entry_point_help():
    res = subprocess.run([sys.executable, "-m", "fastconv", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "bench" in res.stdout and "check" in res.stdout
