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


@intrinsic
def transpose8(typingctx: Any, src: Any, s0: Any, sstride: Any, dst: Any, d0: Any, dstride: Any) -> Any:
    """dst_flat[d0 + j*dstride + i] = src_flat[s0 + i*sstride + j] for i, j < 8, src_flat and dst_flat
    the flat views of the contiguous arrays src and dst (of one dtype): an 8 x 8 block transposed in
    registers, 8 vector loads, 24 two-vector shuffles, 8 vector stores. No bounds checks: the caller
    keeps every row inside its array.

    Written element by element (a strided store per element, or a tile on the stack), LLVM moved the
    block at 0.7 ns an element, twice the time of a plain copy."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype
            and src.dtype in (types.float32, types.float64)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ety = context.get_data_type(signature.args[0].dtype)
        vty = llir.VectorType(ety, 8)
        intp = context.get_value_type(types.intp)

        def pointer(aryty: Any, ary: Any, offset: Any, oty: Any) -> Any:
            data = context.make_array(aryty)(context, builder, ary).data
            return builder.gep(data, [context.cast(builder, offset, oty, types.intp)])

        def row(base: Any, stride: Any, sty: Any, i: int) -> Any:
            step = builder.mul(context.cast(builder, stride, sty, types.intp), llir.Constant(intp, i))
            return builder.bitcast(builder.gep(base, [step]), vty.as_pointer())

        src_at = pointer(signature.args[0], args[0], args[1], signature.args[1])
        dst_at = pointer(signature.args[3], args[3], args[4], signature.args[4])
        size = context.get_abi_sizeof(ety)  # the only alignment assumed: an element's
        rows = [builder.load(row(src_at, args[2], signature.args[2], i), align=size) for i in range(8)]
        mask_type = llir.VectorType(llir.IntType(32), 8)
        s = 1
        while s < 8:  # swap the off-diagonal s x s blocks of every 2s x 2s block
            lo = llir.Constant(mask_type, [e if e & s == 0 else 8 + e - s for e in range(8)])
            hi = llir.Constant(mask_type, [e + s if e & s == 0 else 8 + e for e in range(8)])
            new = list(rows)
            for i in range(8):
                if i & s == 0:
                    new[i] = builder.shuffle_vector(rows[i], rows[i + s], lo)
                    new[i + s] = builder.shuffle_vector(rows[i], rows[i + s], hi)
            rows = new
            s *= 2
        for j in range(8):
            builder.store(rows[j], row(dst_at, args[5], signature.args[5], j), align=size)
        return context.get_dummy_value()

    return types.void(src, s0, sstride, dst, d0, dstride), codegen


# ------------------------------------------------------------------------------- dynamic task claiming
# numba's parallel loops split their iterations into one equal, contiguous share per thread. When another
# process takes part of one core (as on these shared machines), the whole call waits for the thread on
# that core: measured here, the float64 pw forward split its 32 images 20/12 when they were claimed from
# one shared counter, and ran 1.9x faster than with equal shares. So the kernels run one loop iteration
# per thread, and each thread claims runs of tasks from the front of its own equal share (the same tasks
# numba's split would give it, in order, so consecutive kernels find their data in the same core's
# cache), then from the other threads' shares until none are left. A task is claimed exactly once,
# by whichever thread reaches it first; every task writes only what it owns, so results stay bitwise
# identical for any thread count and any schedule.

SLOT = 16  # int64 elements per share's counter: 128 bytes, so no two counters share a cache line (pair)


def counter() -> np.ndarray:
    """The task counters of one kernel call, fresh (never shared between calls, so concurrent calls from
    several Python threads each get their own): ctr[1] is the number of threads the call runs on, read
    here (numba.get_num_threads() inside a kernel would keep it out of the disk cache), and
    ctr[SLOT * (s + 1)] counts the tasks claimed from share s. Were ctr[1] wrong, results would not
    change, only the speed: every share is drained by whichever threads reach it."""
    n = _threads.current()
    n = n if n is not None else numba.get_num_threads()
    ctr = np.zeros(SLOT * (n + 1), np.int64)
    ctr[1] = n
    return ctr


@intrinsic
def claim(typingctx: Any, ctr: Any, slot: Any, count: Any) -> Any:
    """Atomically add count to share slot's counter and return its previous value: the first of count
    tasks claimed, counted from the share's start."""
    if not (isinstance(ctr, types.Array) and ctr.dtype == types.int64 and isinstance(slot, types.Integer)
            and isinstance(count, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        slot = context.cast(builder, args[1], signature.args[1], types.intp)
        one = context.get_constant(types.intp, 1)
        index = builder.mul(builder.add(slot, one), context.get_constant(types.intp, SLOT))
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [index], wraparound=False)
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, val, "monotonic")

    return types.int64(ctr, slot, count), codegen


@inline
def task_share(ntask: int, nshares: int, s: int) -> tuple[int, int]:
    """Tasks [lo, hi) of share s of nshares equal, contiguous shares (numba's own split)."""
    return s * ntask // nshares, (s + 1) * ntask // nshares


@inline
def claims_start() -> Any:
    """A thread's claiming state, on its stack: (first task, end of the run, shares tried)."""
    cur = numba.carray(stack_empty(3, np.int64), (3,))
    cur[2] = 0
    return cur


@inline
def claims_next(ctr: Any, ntask: int, tslot: int, cur: Any) -> bool:
    """Claim the next run of tasks for the thread in loop iteration tslot: from its own share while it
    lasts, then from the next shares in turn. True with the run in [cur[0], cur[1]); False when every
    share is drained. Used as

        for tslot in prange(ctr[1]):
            cur = claims_start()
            while claims_next(ctr, ntasks, tslot, cur):
                for task in range(cur[0], cur[1]):
                    ...

    Runs are about a 16th of a share: a thread that falls behind leaves at most that much of its share
    to the others, while each counter is touched rarely."""
    nshares = ctr[1]
    run = max(1, ntask // (16 * max(1, nshares)))
    while cur[2] < nshares:
        s = (tslot + cur[2]) % nshares
        lo, hi = task_share(ntask, nshares, s)
        first = lo + claim(ctr, s, run)
        if first < hi:
            cur[0] = first
            cur[1] = min(hi, first + run)
            return True
        cur[2] += 1
    return False
