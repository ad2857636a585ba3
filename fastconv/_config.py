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
FASTCONV_RECYCLE_MB
    At most this many MiB (default 1024) of the memory of results of 32 MiB or more that no array uses
    any more are kept for later results of about their size, whose pages are then already mapped: a new
    result that large costs 1-1.7 copies of its bytes in page faults. 0 turns this off;
    ``fastconv.release_workspace()`` frees what is kept.
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


def _mebibytes(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        mib = float(value) if value else default
    except ValueError:
        raise ValueError(f"{name} must be a number of MiB, got {value!r}") from None
    if mib < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return int(mib * (1 << 20))


RECYCLE_BYTES = _mebibytes("FASTCONV_RECYCLE_MB", 1024)
