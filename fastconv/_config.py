"""Settings shared by every compiled kernel, in one place (a test keeps them from being hard-coded elsewhere).

Environment variables, read once when the jit kernels are first loaded:

FASTCONV_CACHE=0
    Do not cache compiled kernels on disk; compile in memory every process.
FASTCONV_CACHE_DIR
    Where to cache compiled kernels (default: beside the installed sources if writable, else the user's
    cache directory; see fastconv/jit/_cache.py). `fastconv info` prints the one in use.
FASTCONV_QUIET=1
    Do not print the note that kernels are being compiled (once per process, on stderr).
FASTCONV_WIDE_VECTORS=0
    Leave numba's CPU features alone. By default, on a CPU with AVX-512, fastconv asks LLVM for 512-bit
    vectors (LLVM prefers 256-bit ones on these CPUs), which makes the conv kernels about 1.3x faster. It
    is set only if NUMBA_CPU_FEATURES is not already set, and applies to the whole process's numba code.
OMP_WAIT_POLICY
    fastconv sets it to PASSIVE when unset, before numba's OpenMP runtime loads, so that numba's threads
    sleep after a parallel region instead of spinning on the cores BLAS (the im2col method) needs.
"""

from __future__ import annotations

import os

# LLVM fast-math flags that keep NaN and infinity semantics: no "nnan", no "ninf" (numba's fastmath=True
# would add both and let LLVM drop NaN checks, e.g. in max-pool).
FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


CACHE = _flag("FASTCONV_CACHE", True)
WIDE_VECTORS = _flag("FASTCONV_WIDE_VECTORS", True)
QUIET = _flag("FASTCONV_QUIET", False)
