"""First-call compile times of the jit pools, with numba's own timers (docs/pools.md, "Compile time").

    python bench/compile_times.py

Runs with FASTCONV_CACHE=0 (set here, before fastconv is imported), so every kernel compiles in memory
and the disk cache is left alone. Prints each first call's time, then each kernel's total compile time
and the part of it spent in LLVM (numba's "compiler_lock" and "llvm_lock" timers, callees included).
"""

from __future__ import annotations

import os
import time

os.environ["FASTCONV_CACHE"] = "0"
os.environ.setdefault("FASTCONV_QUIET", "1")

import numpy as np  # noqa: E402

import fastconv  # noqa: E402
from fastconv.jit import pool  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    d = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    calls = [("max_pool2d forward", lambda: fastconv.max_pool2d_forward(x, 2, method="jit")),
             ("max_pool2d backward", lambda: fastconv.max_pool2d_backward(d, x, 2, method="jit")),
             ("avg_pool2d forward", lambda: fastconv.avg_pool2d_forward(x, 2, method="jit")),
             ("avg_pool2d backward", lambda: fastconv.avg_pool2d_backward(d, x, 2, method="jit"))]
    for name, call in calls:
        t = time.perf_counter()
        call()
        print(f"first {name:20s} {time.perf_counter() - t:6.2f} s")
    for kernel in (pool._fwd, pool._max_bwd, pool._avg_bwd, pool._pool_plane):
        for sig in kernel.signatures:
            timers = kernel.get_metadata(sig)["timers"]
            print(f"{kernel.__name__:14s} compile {timers['compiler_lock']:6.2f} s, "
                  f"LLVM {timers['llvm_lock']:6.2f} s")


if __name__ == "__main__":
    main()
