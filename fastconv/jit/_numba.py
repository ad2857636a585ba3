"""numba set-up shared by the jit kernels (and im2col's packing loops): the decorator with fastconv's
settings, the launch wrapper that applies the thread count, and a fixed-size stack buffer.

Importing this module imports numba but compiles nothing.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

if "OMP_WAIT_POLICY" not in os.environ:
    # Before numba's OpenMP runtime loads: idle numba threads sleep instead of spinning on the cores that
    # BLAS's threads need (see README, "Threads").
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import llvmlite.ir as llir
import numba
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import _threads
from .._config import CACHE, FASTMATH, WIDE_VECTORS


def _prefer_wide_vectors() -> None:
    if not WIDE_VECTORS or os.environ.get("NUMBA_CPU_FEATURES") or numba.config.CPU_FEATURES:
        return
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - no host feature query: leave LLVM's defaults
        return
    if "+avx512f" in features.split(","):
        numba.config.CPU_FEATURES = features + ",-prefer-256-bit"


_prefer_wide_vectors()


def kernel(fn: Callable[..., Any]) -> Any:
    """A parallel, NaN-safe fast-math, disk-cached numba function (cached unless FASTCONV_CACHE=0)."""
    opts = dict(parallel=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy")
    if CACHE:
        try:
            return numba.njit(cache=True, **opts)(fn)
        except RuntimeError as exc:  # no writable cache location for this file
            warnings.warn(f"fastconv: compiled kernels will not be cached on disk ({exc})",
                          RuntimeWarning, stacklevel=2)
    return numba.njit(**opts)(fn)


def inline(fn: Callable[..., Any]) -> Any:
    """A helper compiled into each kernel that calls it (constant arguments fold, as in a template)."""
    return numba.njit(inline="always", fastmath=set(FASTMATH), error_model="numpy")(fn)


_serial = threading.Lock()
_layer_is_threadsafe: bool | None = None


def launch(fn: Any, *args: Any) -> Any:
    """Call a parallel kernel with fastconv's thread count.

    numba's workqueue threading layer (used when neither TBB nor OpenMP loads) aborts the process when two
    Python threads enter parallel code at once; under it, calls are serialized.
    """
    global _layer_is_threadsafe
    n = _threads.current()
    if _layer_is_threadsafe:
        if n is not None:
            numba.set_num_threads(n)
        return fn(*args)
    with _serial:
        if n is not None:
            numba.set_num_threads(n)
        result = fn(*args)
        if _layer_is_threadsafe is None:
            try:
                _layer_is_threadsafe = numba.threading_layer() in ("omp", "tbb")
            except ValueError:  # pragma: no cover - no parallel region has run
                pass
    return result


@intrinsic
def stack_empty(typingctx: Any, size: Any, dtype: Any) -> Any:
    """A pointer to ``size`` (a literal int) uninitialized elements of ``dtype`` on the stack.

    Used through numba.carray for the register-blocked accumulators: memory that nothing else can alias,
    so LLVM keeps it in vector registers.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    count = size.literal_value

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        elem = context.get_value_type(dtype.dtype)
        return cgutils.alloca_once(builder, elem, size=llir.Constant(llir.IntType(64), count))

    return types.CPointer(dtype.dtype)(size, dtype), codegen
