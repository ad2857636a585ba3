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
import numpy as np
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


# ------------------------------------------------------------------------------- dynamic task claiming
# numba's parallel loops split their iterations into one equal, contiguous share per thread. When another
# process takes part of one core (as on these shared machines), the whole call waits for the thread on
# that core: measured here, the float64 pw forward split its 32 images 20/12 when claimed dynamically and
# ran 1.9x faster than with equal shares. The kernels below therefore run one loop iteration per thread,
# and each thread claims runs of tasks from a shared counter until none are left. Which thread runs a
# task never changes what it computes: every task writes only what it owns, so results stay bitwise
# identical for any thread count and any schedule.

COUNTER_SIZE = 16  # int64 elements: the counter and the rest of its 128 bytes, so no other data shares it


def counter() -> np.ndarray:
    """A fresh task counter for one kernel call (never shared between calls, so concurrent calls from
    several Python threads each get their own): ctr[0] counts claimed tasks, ctr[1] is the number of
    threads the call runs on (read here: numba.get_num_threads() inside a kernel would keep it out of the
    disk cache). Were it wrong, results would not change, only the speed: a thread given two loop
    iterations claims in both, and every task is claimed exactly once."""
    ctr = np.zeros(COUNTER_SIZE, np.int64)
    n = _threads.current()
    ctr[1] = n if n is not None else numba.get_num_threads()
    return ctr


@intrinsic
def claim(typingctx: Any, ctr: Any, count: Any) -> Any:
    """Atomically add count to ctr[0] and return its previous value: the first of count tasks claimed."""
    if not (isinstance(ctr, types.Array) and ctr.dtype == types.int64 and isinstance(count, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [context.get_constant(types.intp, 0)],
                                       wraparound=False)
        val = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", ptr, val, "monotonic")

    return types.int64(ctr, count), codegen


@inline
def claim_step(ntask: int, nthreads: int) -> int:
    """Tasks claimed at a time: about 16 runs per thread, so a thread that falls behind leaves at most
    a 16th of its share to wait for, while the counter is touched rarely and each thread still walks
    long runs of consecutive tasks (which the kernels order for cache reuse)."""
    return max(1, ntask // (16 * max(1, nthreads)))
