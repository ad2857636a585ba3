"""Run `fastconv bench` as an AVX2 laptop would, on an x86-64 machine with AVX-512.

Everything is restricted to AVX2 together, before Python starts, in a child process:
- numba compiles for Haswell, with the host's features minus every AVX-512 one
  (`NUMBA_CPU_NAME=haswell`, `NUMBA_CPU_FEATURES`), so fastconv also sizes its tiles for AVX2;
- PyTorch's peer process runs its AVX2 kernels (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`);
- NumPy's OpenBLAS runs its Haswell kernels (`OPENBLAS_CORETYPE=Haswell`), for the GEMM ceiling and
  the im2col method.

Usage:
    python bench/avx2.py [fastconv bench options]    e.g. --quick, --dtype float64, --layers vgg,res
    python bench/avx2.py --print-env                 the variables it sets, and nothing run

On a CPU without AVX-512 the numba features are the host's own, so the run is a plain `fastconv bench`
with the same variables set.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

# Features that give LLVM 512-bit vectors or AVX-512 instructions: turned off as well as avx512*.
_WIDE = ("+avx512", "+evex512", "+avx10", "+amx-avx512")


def avx2_features(host_features: str) -> str:
    """The host's LLVM feature string with every AVX-512 feature turned off ("+x" -> "-x")."""
    return ",".join("-" + f[1:] if f.startswith(_WIDE) else f for f in host_features.split(",") if f)


def avx2_env(host_features: str, base: dict[str, str]) -> dict[str, str]:
    """base with the AVX2 restriction's variables set."""
    env = dict(base)
    env.update(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=avx2_features(host_features),
               ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", OPENBLAS_CORETYPE="Haswell")
    return env


def main(argv: list[str]) -> int:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print(f"bench/avx2.py: the AVX2 restriction is for x86-64 CPUs; this one is {platform.machine()}",
              file=sys.stderr)
        return 2
    import llvmlite.binding as llvm

    env = avx2_env(llvm.get_host_cpu_features().flatten(), dict(os.environ))
    names = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
             "OPENBLAS_CORETYPE")
    if argv[:1] == ["--print-env"]:
        for name in names:
            print(f"{name}={env[name]}")
        return 0
    print("bench/avx2.py: numba, PyTorch and OpenBLAS restricted to AVX2 (" +
          ", ".join(f"{n}={env[n]}" for n in names if n != "NUMBA_CPU_FEATURES") + ")", flush=True)
    return subprocess.call([sys.executable, "-m", "fastconv", "bench", *argv], env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
