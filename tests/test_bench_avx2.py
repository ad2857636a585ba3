"""bench/avx2.py, the AVX2 restriction for `fastconv bench`: what it sets, and that fastconv then compiles
for AVX2 (tiles included). Nothing here compiles a kernel."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "avx2.py"
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _module():
    spec = importlib.util.spec_from_file_location("bench_avx2", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_avx512_feature_is_turned_off_and_nothing_else():
    host = "+64bit,+avx,+avx2,+fma,+avx512f,+avx512bw,-avx512fp16,+evex512,+avx10.1-512,-amx-avx512,+sse4.2"
    got = _module().avx2_features(host).split(",")
    assert got == ["+64bit", "+avx", "+avx2", "+fma", "-avx512f", "-avx512bw", "-avx512fp16", "-evex512",
                   "-avx10.1-512", "-amx-avx512", "+sse4.2"]


def test_env_sets_every_library_and_keeps_the_rest():
    env = _module().avx2_env("+avx2,+avx512f", {"PATH": "/bin", "OPENBLAS_CORETYPE": "SkylakeX"})
    assert env == {"PATH": "/bin", "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2,-avx512f",
                   "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                   "OPENBLAS_CORETYPE": "Haswell"}


@pytest.mark.skipif(not X86, reason="the AVX2 restriction is for x86-64 CPUs")
def test_fastconv_under_the_restriction_compiles_for_avx2():
    printed = subprocess.run([sys.executable, str(SCRIPT), "--print-env"], capture_output=True, text=True,
                             check=True).stdout
    env = dict(line.split("=", 1) for line in printed.splitlines())
    assert set(env) == {"NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                        "OPENBLAS_CORETYPE"}
    assert not any(f.startswith(("+avx512", "+evex512")) for f in env["NUMBA_CPU_FEATURES"].split(","))
    assert "+avx2" in env["NUMBA_CPU_FEATURES"].split(",")
    probe = ("import numba; from fastconv.jit._isa import target_isa; import fastconv.jit._numba; "
             "print(target_isa(), numba.config.CPU_NAME, '+avx512f' in (numba.config.CPU_FEATURES or ''))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    assert out == ["avx2", "haswell", "False"]
