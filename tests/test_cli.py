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


def test_bench_writes_json_and_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.json"
    argv = ["bench", "--ops", "max_pool2d", "--layers", "pool2", "--methods", "jit", "--repeats", "2",
            "--no-torch", "--json", str(path), "--plot", str(tmp_path / "chart.png")]
    assert cli.main(argv) == 0
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
    (["bench", "--layers", "seed001", "--ops", "max_pool2d", "--no-torch"],
     "none of seed001 is a max_pool2d layer (max_pool2d's layers: pool2, pool3)"),
    (["bench", "--no-torch", "--json", "/nonexistent-dir/x.json"], "--json: the directory /nonexistent-dir"),
    (["bench", "--no-torch", "--plot", "/nonexistent-dir/x.png"], "--plot: the directory /nonexistent-dir"),
    (["demo", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["compile", "--jobs", "0"], "--jobs must be at least 1"),
    (["compile", "--layers", "nope"], "unknown layer 'nope'"),
])
def test_bad_options_one_line(argv, message, capsys):
    """Refused before any work: a bad output path is not found after the benchmark has run."""
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert captured.out == ""


def test_output_path_that_is_a_directory(tmp_path, capsys):
    assert cli.main(["bench", "--no-torch", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_plot_without_matplotlib_fails_first(monkeypatch, tmp_path, capsys):
    from fastconv import _chart

    monkeypatch.setattr(_chart, "available", lambda: "--plot needs matplotlib: pip install matplotlib")
    for argv in (["bench", "--no-torch", "--plot", str(tmp_path / "a.png")],
                 ["demo", "--plot", str(tmp_path / "b.png")]):
        assert cli.main(argv) == 2
        assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_typo_in_a_subcommand_option_shows_its_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--quik"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastconv bench" in err and "unrecognized arguments: --quik" in err


def test_version(capsys):
    import fastconv

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"fastconv {fastconv.__version__}"


def test_closed_pipe_is_not_an_error():
    """fastconv info | head -1: the reader leaves before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "fastconv", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even started writing
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_compile_then_the_layers_load(capsys):
    """`fastconv compile` leaves every kernel of the layers it ran in the disk cache: a new process
    running one of those calls compiles nothing."""
    assert cli.main(["compile", "--layers", "pool2", "--dtype", "float32", "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert "compiled for 2 of 2 calls" in captured.out and "2/2" in captured.err
    res = subprocess.run([sys.executable, "-c", """
import numpy as np, fastconv
from fastconv import _bench, _suite
from fastconv.jit import pool
layer = next(la for la in _suite.POOL_LAYERS if la.name == "pool2")
_bench.pool_calls("max_pool2d", layer, np.dtype("float32"), "jit")[1]()
print(sum(sum(k.stats.cache_misses.values()) for k in (pool._fwd, pool._max_bwd)))
"""], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.split() == ["0"], res.stderr


def test_module_entry_point_help():
    res = subprocess.run([sys.executable, "-m", "fastconv", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "bench" in res.stdout and "check" in res.stdout


def test_chart_of_convs_and_pools(tmp_path):
    """Conv panels with PyTorch and the GEMM line, a pool panel against the copy (synthetic records)."""
    pytest.importorskip("matplotlib")
    from fastconv import _chart

    recs = [{"op": "conv2d", "layer": la, "method": m, "fwd_gflops": g, "fwdbwd_gflops": g / 2}
            for la in ("vgg", "res") for m, g in (("jit", 50.0), ("im2col", 40.0), ("pytorch", 45.0))]
    recs += [{"op": "max_pool2d", "layer": "pool2", "method": m, "fwd_s": t, "fwdbwd_s": 3 * t,
              "copy_s": 0.001} for m, t in (("jit", 0.002), ("pytorch", 0.004))]
    result = {"version": "0", "machine": {"cpu": "test"}, "dtype": "float32", "threads": 2, "rounds": 3,
              "gemm_gflops": 60.0, "torch": "2.13.0", "records": recs}
    _chart.draw(result, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="nothing to plot"):
        _chart.draw({**result, "records": []}, str(tmp_path / "d.png"))
