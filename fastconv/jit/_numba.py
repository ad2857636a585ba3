"""numba set-up shared by the jit kernels (and im2col's packing loops): the decorator with fastconv's
settings, the launch wrapper that applies the thread count, and a fixed-size stack buffer.

Importing this module imports numba but compiles nothing.
"""

from __future__ import annotations

import os
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
from .._config import FASTMATH, WIDE_VECTORS
from . import _threading
from ._cache import KernelCache, location, watch


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

def kernel(fn: Callable[..., Any], name: str | None = None) -> Any:
    """A parallel, NaN-safe fast-math numba function, cached on disk where _cache.location() says.

    name: the kernel's name, for a kernel made by a function (one per tile): its disk-cache files and
    profiles carry it. numba's cache keys a closure's code by its cells' values too, so kernels made from
    one body for different tiles never share a cache entry, whatever their names."""
    if name is not None:
        fn.__name__ = fn.__qualname__ = name
    opts = dict(parallel=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy")
    dispatcher = numba.njit(**opts)(fn)
    if location().enabled:
        try:
            dispatcher._cache = KernelCache(dispatcher.py_func)  # what njit(cache=True) would set
        except (RuntimeError, OSError):  # the location went away since it was chosen: compile in memory
            pass
    watch(dispatcher)
    return dispatcher


def inline(fn: Callable[..., Any]) -> Any:
    """A helper compiled into each kernel that calls it (constant arguments fold, as in a template)."""
    return numba.njit(inline="always", fastmath=set(FASTMATH), error_model="numpy")(fn)


def helper(fn: Callable[..., Any]) -> Any:
    """A serial function the kernels call: typed and lowered once per signature for every kernel that
    calls it (an inline helper is compiled again into each caller, for code that needs its constant
    arguments folded). numba still links its code into each caller and optimizes it again there, so a
    large helper costs LLVM time in every kernel that calls it (docs/pools.md, "Compile time")."""
    return numba.njit(fastmath=set(FASTMATH), error_model="numpy", nogil=True)(fn)


def launch(fn: Any, *args: Any) -> Any:
    """Call a parallel kernel with fastconv's thread count, safely under numba's threading layer (see
    _threading: serialized where the layer is not thread-safe, an error instead of a killed forked child
    under GNU OpenMP)."""
    return _threading.launch(fn, *args, threads=_threads.current())


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


VECTOR_BYTES = 64  # one AVX-512 register: 8 float64 or 16 float32


def _tile_shape(blocks: Any, block: Any, cols: Any, acc: Any, x: Any, w: Any) -> tuple[int, int, int] | None:
    """(rows, vectors per row, rows per weight block) of a tile_sums call, or None if not one."""
    if not (isinstance(blocks, types.IntegerLiteral) and isinstance(block, types.IntegerLiteral)
            and isinstance(cols, types.IntegerLiteral) and isinstance(acc, types.Array)
            and acc.layout == "C" and acc.ndim == 2 and isinstance(x, types.Array)
            and isinstance(w, types.Array) and acc.dtype == x.dtype == w.dtype
            and x.dtype in (types.float32, types.float64)):
        return None
    width = cols.literal_value * x.dtype.bitwidth // 8  # bytes
    if width % VECTOR_BYTES:
        return None
    return blocks.literal_value * block.literal_value, width // VECTOR_BYTES, block.literal_value


class _Vectors:
    """The IR pieces a tile's loop is built from, for one dtype: its vector type and the step that adds
    one term to every sum."""

    def __init__(self, context: Any, builder: Any, dtype: Any) -> None:
        ety = context.get_data_type(dtype)
        self.builder = builder
        self.size = context.get_abi_sizeof(ety)
        self.lanes = VECTOR_BYTES // self.size
        self.vty = llir.VectorType(ety, self.lanes)
        self.intp = context.get_value_type(types.intp)
        name = f"llvm.fma.v{self.lanes}f{self.size * 8}"
        self.fma = cgutils.get_or_insert_function(builder.module, llir.FunctionType(self.vty, [self.vty] * 3),
                                                  name)
        self.undef = llir.Constant(self.vty, llir.Undefined)
        self.splat = llir.Constant(llir.VectorType(llir.IntType(32), self.lanes), [0] * self.lanes)

    def const(self, v: int) -> Any:
        return llir.Constant(self.intp, v)

    def vector_at(self, base: Any, index: Any) -> Any:
        """A pointer to the vector at base[index]."""
        return self.builder.bitcast(self.builder.gep(base, [index]), self.vty.as_pointer())

    def phis(self, *incoming: tuple[list, Any]) -> list:
        """A vector phi per position of the value lists, taking each list's value from its block."""
        out = []
        for values in zip(*(v for v, _ in incoming)):
            ph = self.builder.phi(self.vty)
            for value, (_, block) in zip(values, incoming):
                ph.add_incoming(value, block)
            out.append(ph)
        return out

    def close_loop(self, i: Any, phis: list, new: list, n: Any, head: Any, after: Any) -> Any:
        """End a loop body in the current block: i + 1 and the new sums flow back to head's phis (i,
        phis), and the loop goes on to after when i + 1 reaches n. The block it ended."""
        b = self.builder
        nxt = b.add(i, self.const(1))
        end = b.block
        i.add_incoming(nxt, end)
        for ph, value in zip(phis, new):
            ph.add_incoming(value, end)
        b.cbranch(b.icmp_signed("<", nxt, n), head, after)
        return end

    def step(self, x_at: Any, xq: Any, nvec: int, weights: list, sums: list) -> list:
        """sums[m*nvec + k] + weights[m] * x[xq + k*lanes : ...]: nvec vector loads, a broadcast per
        row, an FMA per row and vector (weights: a pointer per row)."""
        b = self.builder
        xv = [b.load(self.vector_at(x_at, b.add(xq, self.const(k * self.lanes))), align=self.size)
              for k in range(nvec)]
        new = []
        for m, at in enumerate(weights):
            wv = b.insert_element(self.undef, b.load(at), llir.Constant(llir.IntType(32), 0))
            wv = b.shuffle_vector(wv, self.undef, self.splat)
            new.extend(b.call(self.fma, [wv, xv[k], sums[m * nvec + k]]) for k in range(nvec))
        return new


def _emit_tile(context: Any, builder: Any, dtype: Any, shape: tuple[int, int, int], acc_at: Any,
               x_at: Any, w_at: Any, wstep: Any, q0: Any, q1: Any, row_at: Any) -> None:
    """The loop of tile_sums over q0 <= q < q1, its sums stored to acc_at; row_at(q) is the index of
    q's first input element."""
    nrow, nvec, nblk = shape
    vec = _Vectors(context, builder, dtype)
    const, vty, size, lanes, intp = vec.const, vec.vty, vec.size, vec.lanes, vec.intp
    zero = llir.Constant(vty, None)
    entry = builder.block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed("<", q0, q1), loop, done)

    builder.position_at_end(loop)
    q = builder.phi(intp)
    q.add_incoming(q0, entry)
    sums = vec.phis(([zero] * (nrow * nvec), entry))
    wq = builder.mul(q, const(nblk))
    weights = []
    for m in range(nrow):
        at = builder.add(wq, const(m % nblk))
        if m >= nblk:
            at = builder.add(at, builder.mul(wstep, const(m // nblk)))
        weights.append(builder.gep(w_at, [at]))
    new = vec.step(x_at, row_at(q), nvec, weights, sums)
    end = vec.close_loop(q, sums, new, q1, loop, done)

    builder.position_at_end(done)
    final = vec.phis(([zero] * len(new), entry), (new, end))
    for i, f in enumerate(final):
        builder.store(f, vec.vector_at(acc_at, const(i * lanes)), align=size)


def _arguments(context: Any, builder: Any, signature: Any, args: Any) -> tuple[Any, Any]:
    """(idx, data) for an intrinsic's codegen: idx(i), argument i as an intp; data(i), the pointer to
    array argument i's data."""

    def idx(i: int) -> Any:
        return context.cast(builder, args[i], signature.args[i], types.intp)

    def data(i: int) -> Any:
        return context.make_array(signature.args[i])(context, builder, args[i]).data

    return idx, data


@intrinsic
def tile_sums(typingctx: Any, blocks: Any, block: Any, cols: Any, acc: Any, x: Any, xbase: Any,
              xstep: Any, w: Any, wbase: Any, wstep: Any, count: Any) -> Any:
    """A register tile of rows = blocks * block sums by cols, cols a multiple of the vector's lanes
    (VECTOR_BYTES // itemsize: 8 float64, 16 float32):

        acc[m, t] = sum_{q < count} w[wbase + (m // block)*wstep + q*block + m % block]
                                    * x[xbase + q*xstep + t]

    in order of q, each term one fused multiply-add, as the loop written out in Python compiles to with
    fastconv's fast-math flags (the same sums, bitwise). blocks, block and cols are literal ints; acc is
    C-contiguous (rows, cols); x and w are 1-D. No bounds checks: the caller keeps every index inside
    its array.

    Written in LLVM IR, the accumulators are SSA values of the loop, so they stay in vector registers
    whatever the tile's shape. LLVM compiled the Python loop at the peak FMA rate too, with the data in
    L1; with the panels coming from L2, as in the float64 pointwise conv, this loop ran faster."""
    shape = _tile_shape(blocks, block, cols, acc, x, w)
    if shape is None:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        idx, data = _arguments(context, builder, signature, args)

        xbase, xstep, wbase = idx(5), idx(6), idx(8)
        zero = llir.Constant(context.get_value_type(types.intp), 0)
        _emit_tile(context, builder, signature.args[4].dtype, shape, data(3), data(4),
                   builder.gep(data(7), [wbase]), idx(9), zero, idx(10),
                   lambda q: builder.add(xbase, builder.mul(q, xstep)))
        return context.get_dummy_value()

    return types.void(blocks, block, cols, acc, x, xbase, xstep, w, wbase, wstep, count), codegen


@intrinsic
def tile_sums_at(typingctx: Any, blocks: Any, block: Any, cols: Any, acc: Any, x: Any, offs: Any,
                 base: Any, q0: Any, q1: Any, w: Any, wstep: Any) -> Any:
    """tile_sums with the input rows found in a table, over q0 <= q < q1:

        acc[m, t] = sum_q w[(m // block)*wstep + q*block + m % block] * x[offs[q] + base + t]

    (a conv's taps: offs[q] is where tap q's input starts)."""
    shape = _tile_shape(blocks, block, cols, acc, x, w)
    if shape is None or not (isinstance(offs, types.Array) and isinstance(offs.dtype, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        idx, data = _arguments(context, builder, signature, args)

        base = idx(6)
        offs_at = data(5)
        oty = signature.args[5].dtype

        def row_at(q: Any) -> Any:
            o = builder.load(builder.gep(offs_at, [q]))
            return builder.add(context.cast(builder, o, oty, types.intp), base)

        _emit_tile(context, builder, signature.args[4].dtype, shape, data(3), data(4), data(9), idx(10),
                   idx(7), idx(8), row_at)
        return context.get_dummy_value()

    return types.void(blocks, block, cols, acc, x, offs, base, q0, q1, w, wstep), codegen


@intrinsic
def tile_sums_rows(typingctx: Any, rows: Any, cols: Any, acc: Any, x: Any, xbase: Any, xsu: Any, xsv: Any,
                   w: Any, wrows: Any, wsu: Any, wsv: Any, nu: Any, nv: Any) -> Any:
    """A register tile of rows x cols sums (cols a multiple of the vector's lanes) added into acc, its
    terms over a 2-D range of (u, v) and rows read in place, each row m from its own start wrows[m]:

        acc[m, t] += sum_{u < nu} sum_{v < nv} w[wrows[m] + u*wsu + v*wsv] * x[xbase + u*xsu + v*xsv + t]

    in order of (u, v), one fused multiply-add per term, as the loop written out in Python compiles to
    (the dw kernels: u an image or an output row, v a column). rows and cols are literal ints; acc is
    C-contiguous (rows, cols); x, w and wrows are 1-D. No bounds checks."""
    shape = _tile_shape(types.literal(1), rows, cols, acc, x, w)  # rows in one block
    if shape is None or not (isinstance(wrows, types.Array) and isinstance(wrows.dtype, types.Integer)):
        return None
    nrow, nvec, _ = shape

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        idx, data = _arguments(context, builder, signature, args)

        vec = _Vectors(context, builder, signature.args[3].dtype)
        const, size, lanes, intp = vec.const, vec.size, vec.lanes, vec.intp
        acc_at, x_at, w_at, rows_at = data(2), data(3), data(7), data(8)
        xbase, xsu, xsv, wsu, wsv, nu, nv = idx(4), idx(5), idx(6), idx(9), idx(10), idx(11), idx(12)
        rty = signature.args[8].dtype
        starts = [context.cast(builder, builder.load(builder.gep(rows_at, [const(m)])), rty, types.intp)
                  for m in range(nrow)]
        vec_at = [vec.vector_at(acc_at, const(i * lanes)) for i in range(nrow * nvec)]
        init = [builder.load(p, align=size) for p in vec_at]
        entry = builder.block
        outer = builder.append_basic_block("rows.outer")
        inner = builder.append_basic_block("rows.inner")
        latch = builder.append_basic_block("rows.latch")
        done = builder.append_basic_block("rows.done")
        nonempty = builder.and_(builder.icmp_signed(">", nu, const(0)),
                                builder.icmp_signed(">", nv, const(0)))
        builder.cbranch(nonempty, outer, done)

        builder.position_at_end(outer)
        u = builder.phi(intp)
        u.add_incoming(const(0), entry)
        outer_sums = vec.phis((init, entry))
        xu = builder.add(xbase, builder.mul(u, xsu))
        wu = builder.mul(u, wsu)
        builder.branch(inner)

        builder.position_at_end(inner)
        v = builder.phi(intp)
        v.add_incoming(const(0), outer)
        sums = vec.phis((outer_sums, outer))
        wq = builder.add(wu, builder.mul(v, wsv))
        weights = [builder.gep(w_at, [builder.add(starts[m], wq)]) for m in range(nrow)]
        new = vec.step(x_at, builder.add(xu, builder.mul(v, xsv)), nvec, weights, sums)
        vec.close_loop(v, sums, new, nv, inner, latch)

        builder.position_at_end(latch)
        vec.close_loop(u, outer_sums, new, nu, outer, done)

        builder.position_at_end(done)
        final = vec.phis((init, entry), (new, latch))
        for p, f in zip(vec_at, final):
            builder.store(f, p, align=size)
        return context.get_dummy_value()

    return types.void(rows, cols, acc, x, xbase, xsu, xsv, w, wrows, wsu, wsv, nu, nv), codegen


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
