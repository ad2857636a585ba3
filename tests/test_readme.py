"""The README's code runs as written, and its tables say what the code does (as numbagg's test_readme)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_blocks_run():
    blocks = [b for b in _blocks("python") if "LocalCluster" not in b]
    assert len(blocks) >= 2
    namespace: dict = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # the example's comments state the shapes and dtypes: check them
    assert namespace["out"].shape == (8, 16, 32, 32) and namespace["out"].dtype.name == "float32"
    assert namespace["p"].shape == (8, 16, 16, 16)
    assert namespace["dx"].shape == namespace["x"].shape and namespace["dw"].shape == namespace["w"].shape
    import numpy as np

    np.testing.assert_allclose(namespace["out"], namespace["ref"], rtol=1e-4, atol=1e-4)


def test_layer_table_is_the_suite():
    from fastconv import _suite

    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[1] in ("conv2d", "max/avg pool"):
            rows[cells[0]] = cells
    assert set(rows) == {la.name for la in (*_suite.CONV_LAYERS, *_suite.POOL_LAYERS)}
    for la in _suite.CONV_LAYERS:
        expected = [la.name, "conv2d", la.N, la.C, f"{la.H} x {la.W}", la.F, la.K, la.stride, la.pad]
        assert rows[la.name] == [str(v) for v in expected], la.name
    for la in _suite.POOL_LAYERS:
        expected = [la.name, "max/avg pool", la.N, la.C, f"{la.H} x {la.W}", "-", la.K, la.stride, la.pad]
        assert rows[la.name] == [str(v) for v in expected], la.name


def test_shape_table_is_the_shape_classes():
    from fastconv import _suite

    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] in {la.name for la in _suite.SHAPE_LAYERS}:
            rows[cells[0]] = cells
    assert set(rows) == {la.name for la in _suite.SHAPE_LAYERS}
    for la in _suite.SHAPE_LAYERS:
        (kh, kw), (ph, pw) = la.kernel, la.padding
        expected = [la.name, la.N, la.C, f"{la.H} x {la.W}", la.F, f"{kh} x {kw}", la.stride, f"{ph} x {pw}",
                    la.dilation, la.groups]
        assert rows[la.name] == [str(v) for v in expected], la.name


def test_every_subcommand_is_documented():
    import argparse

    from fastconv import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = README.read_text()
    for name in sub.choices:
        assert f"`fastconv {name}" in text, name


@pytest.mark.parametrize("var", ["FASTCONV_CACHE", "FASTCONV_CACHE_DIR", "FASTCONV_QUIET"])
def test_environment_variables_are_documented(var):
    from fastconv import _config

    assert var in README.read_text() and var in (_config.__doc__ or "")


def test_dask_block_runs_as_a_script(tmp_path):
    pytest.importorskip("distributed")
    (block,) = [b for b in _blocks("python") if "LocalCluster" in b]
    script = tmp_path / "readme_dask.py"
    script.write_text(block)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    mean, shape = res.stdout.split(maxsplit=1)
    assert abs(float(mean)) < 0.5 and shape.strip() == "(64, 64, 3, 3)"
