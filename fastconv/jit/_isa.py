"""Which register file the jit kernels' tiles are sized for: the CPU numba compiles for."""

from __future__ import annotations

import functools
import os

import numba

# CPUs LLVM knows by name that have AVX-512F (for NUMBA_CPU_NAME without NUMBA_CPU_FEATURES)
_AVX512_CPUS = frozenset({"knl", "knm", "skylake-avx512", "skx", "cascadelake", "cooperlake", "cannonlake",
                          "icelake-client", "icelake-server", "tigerlake", "rocketlake", "sapphirerapids",
                          "emeraldrapids", "graniterapids", "graniterapids-d", "znver4", "znver5"})


@functools.cache
def target_isa() -> str:
    """The register file the tiles are sized for: "avx512" (32 vector registers of 64 bytes) where numba
    compiles for a CPU with AVX-512F, else "avx2" (16 of 32 bytes; also the choice for other CPUs until
    they have tiles of their own: on ARM's 32 registers of 16 bytes it fits too). What numba compiles
    for: NUMBA_CPU_FEATURES (or numba.config.CPU_FEATURES) if set, else the CPU named by NUMBA_CPU_NAME,
    else the host. FASTCONV_ISA=avx2|avx512 overrides it."""
    forced = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if forced in ("avx2", "avx512"):
        return forced
    features = os.environ.get("NUMBA_CPU_FEATURES") or numba.config.CPU_FEATURES
    name = (os.environ.get("NUMBA_CPU_NAME") or numba.config.CPU_NAME or "host").lower()
    if not features and name != "host":
        return "avx512" if name in _AVX512_CPUS else "avx2"
    if not features:
        try:
            import llvmlite.binding as llvm

            features = llvm.get_host_cpu_features().flatten()
        except Exception:  # pragma: no cover - no host feature query
            return "avx2"
    return "avx512" if "+avx512f" in features.split(",") else "avx2"
