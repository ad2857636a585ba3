"""The jit dw with vectors of input channels (tiles.TILES' dw_chans family), for convs whose input channels
per group fill a vector: the input is copied into channel blocks, channels innermost (``_pack_blocks``),
and each task owns a run of output-channel blocks and goes through the batch in chunks that stay in
cache (``_dwc_tiles``). For a flat pointwise conv the tasks own input-channel blocks instead and copy
their own channels chunk by chunk (``_pwdw_tiles``), summing db from the same chunks.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import prange

from ..._geometry import columns_inside as _columns_inside
from ..._geometry import input_rows, tap_columns
from ..._params import ConvGeometry
from ..._threads import get_num_threads
from ..._workspace import scratch
from .._numba import (
    claims_next,
    claims_start,
    counter,
    inline,
    kernel,
    launch,
    stack_empty,
    tile_sums_rows,
    transpose8,
)
from .db import row_sum
from .packing import thread_rows
from .tiles import ACC, Tile
from .tunables import TUNABLES

columns_inside = inline(_columns_inside)


@inline
def _dwc_tiles(kv, fw, dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr):
    """dwt[g, mb, kb, a, e, m, t] = sum_{n, i, j} dout[n, g*Fg + f, i*Wo + j]
    * xT[n, g, kb, i*sh + a*dh, colph[e], j + coloff[e], t], f = min(mb*fw + m, Fg - 1)

    The input is in channel blocks, channels innermost: kv input channels are one vector. The fw output
    channels are fw broadcasts read from dout's rows in place, fw streams (dout is passed as (N, F, S),
    S >= Ho*Wo: rows padded where they would evict one another, see _row_stride): the same register
    tile as _fwd_tiles (for input channels >= kv). Output channels past a group's last are clamped to
    it: computed again, never used (the caller drops dwt's rows past Fg).

    Each task owns mper consecutive output-channel blocks (all input-channel blocks, all taps) and goes
    through the batch in chunks of nchunk images small enough to stay in cache: for each chunk, every
    tap and every (mb, kb) tile of the task in turn, the tile in registers and added to dwt after the
    chunk. So every chunk of the input and of dout comes from memory once per task, not once per tile
    (a 1x1 conv, with no taps to share a chunk, ran at a quarter of the speed with tiles as tasks)."""
    N, F, S = dout.shape
    G, nmb, nkb, KH, KW, _, _ = dwt.shape
    _, _, _, R, P, J, _ = xT.shape
    Fg = F // G
    ntask = (nmb + mper - 1) // mper
    ntasks = G * ntask
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                g = task // ntask
                mb0 = (task % ntask) * mper
                acc = numba.carray(stack_empty(ACC, xT.dtype), (fw, kv))
                rows = numba.carray(stack_empty(TB, np.uint64), (fw,))
                rown = numba.carray(stack_empty(TB, np.uint64), (fw,))
                xf = xT.reshape(-1)
                df = dout.reshape(-1)
                for mb in range(mb0, min(nmb, mb0 + mper)):
                    dwt[g, mb] = 0
                for n0 in range(0, N, nchunk):
                    for a in range(KH):
                        for e in range(KW):
                            for mb in range(mb0, min(nmb, mb0 + mper)):
                                for m in range(fw):  # where each output channel's row starts in an image
                                    rows[m] = np.uint64((g * Fg + min(mb * fw + m, Fg - 1)) * S)
                                for kb in range(nkb):
                                    for m in range(fw):
                                        for t in range(kv):
                                            acc[m, t] = 0
                                    for n in range(n0, min(N, n0 + nchunk)):
                                        for m in range(fw):
                                            rown[m] = rows[m] + np.uint64(n * F * S)
                                        # output rows u = i, columns v = j
                                        xbase = (((n * G + g) * nkb + kb) * R * P + a * dh * P + colph[e]) * J
                                        tile_sums_rows(fw, kv, acc, xf, (xbase + coloff[e]) * kv,
                                                       sh * P * J * kv, kv, df, rown, Wo, 1, Ho, Wo)
                                    tile = dwt[g, mb, kb, a, e]
                                    for m in range(fw):
                                        for t in range(kv):
                                            tile[m, t] += acc[m, t]


@inline
def _pwdw_tiles(kv, fw, dout, x, dwt, db, buf, nchunk, kper, ctr):
    """dwt[g, mb, kb, m, t] = sum_{n, p} dout[n, g*Fg + f, p] * x[n, g*Cg + kb*kv + t, p] for a pointwise
    conv (x as (N, C, P)), f = min(mb*fw + m, Fg - 1), x's channels past Cg read as zeros: _dwc_tiles
    without the separate transposing pass.

    Tasks own blocks of input channels (kper blocks, every output channel), not of output channels:
    each task copies its own channels of a chunk of images into channel-innermost blocks in its
    thread's row of buf, where its tiles then read them, in cache. The sums run in the order of
    _dwc_tiles', in the same chunks of images.

    db (unless empty): db[f] = sum_n row_sum(dout[n, f, :P]), in image order, as _channel_sums sums it;
    each task sums its share of the group's output channels from each chunk after its tiles."""
    N, F, S = dout.shape
    C, P = x.shape[1], x.shape[2]
    G, nmb, nkb = dwt.shape[0], dwt.shape[1], dwt.shape[2]
    Fg, Cg = F // G, C // G
    ntask = (nkb + kper - 1) // kper
    ntasks = G * ntask
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                g = task // ntask
                kb0 = (task % ntask) * kper
                kb1 = min(nkb, kb0 + kper)
                bf = buf[numba.get_thread_id()]
                xf = x.reshape(-1)
                df = dout.reshape(-1)
                pfull = P - P % 8  # columns in whole 8 x 8 blocks
                acc = numba.carray(stack_empty(ACC, x.dtype), (fw, kv))
                rows = numba.carray(stack_empty(TB, np.uint64), (fw,))
                for mb in range(nmb):
                    for kb in range(kb0, kb1):
                        dwt[g, mb, kb] = 0
                # db of this task's share of the group's output channels, from each chunk's dout while
                # it is in cache (db.size == 0: not wanted)
                f0 = g * Fg + (task % ntask) * Fg // ntask
                f1 = g * Fg + (task % ntask + 1) * Fg // ntask if db.size else f0
                for f in range(f0, f1):
                    db[f] = 0
                for n0 in range(0, N, nchunk):
                    n1 = min(N, n0 + nchunk)
                    for n in range(n0, n1):  # bf[n - n0, kb - kb0, p, t] = x[n, g*Cg + kb*kv + t, p]
                        for kb in range(kb0, kb1):
                            blk = bf[((n - n0) * kper + kb - kb0) * P * kv:]
                            if (kb + 1) * kv <= Cg:  # a whole block: by 8 x 8 blocks in registers
                                xrow = (n * C + g * Cg + kb * kv) * P
                                for p0 in range(0, pfull, 8):
                                    for t0 in range(0, kv, 8):
                                        transpose8(xf, xrow + t0 * P + p0, P, blk, p0 * kv + t0, kv)
                                for t in range(kv):
                                    for p in range(pfull, P):
                                        blk[p * kv + t] = xf[xrow + t * P + p]
                                continue
                            for t in range(kv):
                                c = kb * kv + t
                                if c < Cg:
                                    xr = x[n, g * Cg + c]
                                    for p in range(P):
                                        blk[p * kv + t] = xr[p]
                                else:
                                    for p in range(P):
                                        blk[p * kv + t] = 0
                    for mb in range(nmb):
                        for m in range(fw):  # where each output channel's row starts in image n0
                            rows[m] = np.uint64((n0 * F + g * Fg + min(mb * fw + m, Fg - 1)) * S)
                        for kb in range(kb0, kb1):
                            for m in range(fw):
                                for t in range(kv):
                                    acc[m, t] = 0
                            # images u = n - n0 of the chunk, pixels v
                            tile_sums_rows(fw, kv, acc, bf, (kb - kb0) * P * kv, kper * P * kv, kv, df, rows,
                                           F * S, 1, n1 - n0, P)
                            tile = dwt[g, mb, kb]
                            for m in range(fw):
                                for t in range(kv):
                                    tile[m, t] += acc[m, t]
                    for f in range(f0, f1):
                        for n in range(n0, n1):
                            db[f] += row_sum(df, (n * F + f) * S, P)


@functools.cache
def chans_kernel(tile: Tile, variant: str) -> Any:
    """The kernel of a dw_chans tile (tile.rows output channels x tile.cols input channels): its taps
    variant (_dwc_tiles) or its pointwise one (_pwdw_tiles), made on first use."""
    if variant not in tile.variants:
        raise LookupError(f"the {tile} tile has no {variant!r} kernel")
    kv, fw = tile.cols, tile.rows
    if variant == "taps":
        def taps(dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr):
            _dwc_tiles(kv, fw, dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr)
        return kernel(taps, f"dw_chans_{tile.dtype}_{fw}x{kv}")

    def pointwise(dout, x, dwt, db, buf, nchunk, kper, ctr):
        _pwdw_tiles(kv, fw, dout, x, dwt, db, buf, nchunk, kper, ctr)
    return kernel(pointwise, f"dw_chans_pointwise_{tile.dtype}_{fw}x{kv}")


TB = 32  # side of the square tiles the channel-block copies transpose through (at least any block width)


TB2 = TB * TB  # their elements (a literal for stack_empty)


@kernel
def _pack_blocks(src, dst, row0, col0, sw, ctr):
    """dst[n, g, b, r, p, j, t] = src[n, g*K + b*bw + t, r - row0, j*sw + p - col0], zero outside src
    and for channels b*bw + t >= K: packing.pack and the move of channels innermost in one pass. One task per
    (n, g, b, r) owns dst[n, g, b, r]. Through TB x TB tiles on the stack: rows read and written as
    contiguous runs (element by element, the strided stores ran at half the speed of a copy; 8 x 8
    blocks transposed in registers by transpose8 were slower than these tiles)."""
    N, G, nblk, R, P, J, bw = dst.shape
    H, W = src.shape[2], src.shape[3]
    K = src.shape[1] // G
    ntasks = N * G * nblk * R
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                r = task % R
                q = task // R
                b = q % nblk
                q //= nblk
                g = q % G
                n = q // G
                d = dst[n, g, b, r]
                h = r - row0
                if h < 0 or h >= H:
                    d[...] = 0
                    continue
                tile = numba.carray(stack_empty(TB2, src.dtype), (TB, TB))
                kmax = min(bw, K - b * bw)
                for p in range(P):
                    jlo, jhi = columns_inside(p - col0, sw, W, J)
                    for j0 in range(0, J, TB):
                        jn = min(TB, J - j0)
                        for t in range(bw):
                            if t < kmax:
                                srow = src[n, g * K + b * bw + t, h]
                                for u in range(jn):
                                    j = j0 + u
                                    tile[t, u] = srow[j * sw + p - col0] if jlo <= j < jhi else 0
                            else:
                                for u in range(jn):
                                    tile[t, u] = 0
                        for u in range(jn):
                            orow = d[p, j0 + u]
                            for t in range(bw):
                                orow[t] = tile[t, u]


L1_SETS, LINE = 64, 64  # an L1 data cache's sets and line bytes (x86 cores of the last decade)


def _row_stride(plane: int, itemsize: int, rows: int) -> int:
    """The least row length >= plane elements at which rows rows laid end to end start in enough L1
    sets (at most TUNABLES.rows_per_set in one) not to evict one another when read side by side. With 4 KiB
    rows (vgg's 32x32 plane in float32) all 16 rows of the float32 dw tile fall into one set."""
    stride = plane
    while np.bincount((np.arange(rows) * stride * itemsize // LINE) % L1_SETS).max() > TUNABLES.rows_per_set:
        stride += LINE // itemsize
    return stride


@kernel
def _copy_rows(src, dst, ctr):
    """dst[n, f, :P] = src[n, f] for src (N, F, P): one task per (n, f)."""
    N, F, P = src.shape
    ntasks = N * F
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                n, f = task // F, task % F
                dst[n, f, :P] = src[n, f]


def _dout_rows(dout: np.ndarray, rows: int) -> np.ndarray:
    """dout as (N, F, S) rows for _dwc_tiles: itself, or a copy in rows padded to _row_stride."""
    N, F = dout.shape[:2]
    plane = math.prod(dout.shape[2:])
    stride = _row_stride(plane, dout.dtype.itemsize, rows)
    if stride == plane:
        return np.ascontiguousarray(dout).reshape(N, F, plane)
    dst = scratch("dout", N * F * stride, dout.dtype).reshape(N, F, stride)
    launch(_copy_rows, np.ascontiguousarray(dout).reshape(N, F, plane), dst, counter())
    return dst


def conv_dw_pointwise(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, tile: Tile, want_db: bool = False
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """(dw, db) of a flat pointwise conv by _pwdw_tiles with a tile that has the pointwise variant (db None
    unless want_db)."""
    kv, mb = tile.cols, tile.rows
    P = g.Wo
    nkb, nmb = -(-g.Cg // kv), -(-g.Fg // mb)
    dc = _dout_rows(dout, mb)
    dwt = np.empty((g.groups, nmb, nkb, mb, kv), x.dtype)
    kper = _blocks_per_task(nkb, g.groups)
    nchunk = _dw_chunk(g, P, nmb * mb, nkb * kv, x.dtype, TUNABLES.pw_dw_chunk_bytes)
    buf = thread_rows("pwdw", nchunk * kper * P * kv, x.dtype)
    db = np.empty(g.F if want_db else 0, x.dtype)
    launch(chans_kernel(tile, "pointwise"), dc, np.ascontiguousarray(x).reshape(g.N, g.C, P), dwt, db, buf,
           nchunk, kper,
           counter())
    dw = dwt.transpose(0, 1, 3, 2, 4).reshape(g.groups, nmb * mb, nkb * kv)
    return np.ascontiguousarray(dw[:, : g.Fg, : g.Cg].reshape(g.F, g.Cg, 1, 1)), db if want_db else None


def _blocks_per_task(nblocks: int, groups: int) -> int:
    """Channel blocks per task of the channel-vector dw kernels, whose tasks own nblocks blocks of each
    group: TUNABLES.dw_tasks_per_thread tasks per thread over all groups. Every task reads every chunk
    of the batch, so fewer tasks read less (more tasks would let a thread on a loaded core take fewer:
    measured slower all the same, see docs/jit-conv.md)."""
    ntask = max(1, min(nblocks, -(-TUNABLES.dw_tasks_per_thread * get_num_threads() // groups)))
    return -(-nblocks // ntask)


def _dw_chunk(g: ConvGeometry, xplane: int, fpad: int, cpad: int, dtype: np.dtype,
              budget: int | None = None) -> int:
    """Images per chunk of the channel-vector dw: the chunk's input (all channels, padded plane xplane)
    and dout within budget bytes (TUNABLES.dw_chunk_bytes by default); not the task's share of them, which
    depends on the thread count: the chunks set the order of the sums."""
    per_image = (g.Ho * g.Wo * fpad + xplane * cpad) * dtype.itemsize
    return max(1, (TUNABLES.dw_chunk_bytes if budget is None else budget) // per_image)


def conv_dw_channels(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, tile: Tile) -> np.ndarray:
    """dw by _dwc_tiles with a dw_chans tile (whose vector the input channels per group fill)."""
    dtype = x.dtype
    kv, mb = tile.cols, tile.rows
    colph, coloff = tap_columns(g.KW, g.dw, g.sw)
    rows = input_rows(g)
    R, P, J = rows, g.sw, g.Wo + int(coloff[-1])
    nkb = -(-g.Cg // kv)
    # the input padded, its columns split by phase as packing.pack does, and in channel blocks
    shape = (g.N, g.groups, nkb, R, P, J, kv)
    xT = scratch("packed_t", math.prod(shape), dtype).reshape(shape)
    launch(_pack_blocks, x, xT, g.pt, g.pl, g.sw, counter())
    nmb = -(-g.Fg // mb)
    dc = _dout_rows(dout, mb)
    dwt = np.empty((g.groups, nmb, nkb, g.KH, g.KW, mb, kv), dtype)
    mper = _blocks_per_task(nmb, g.groups)
    nchunk = _dw_chunk(g, R * P * J, nmb * mb, nkb * kv, dtype)
    launch(chans_kernel(tile, "taps"), dc, xT, dwt, g.sh, g.dh, colph, coloff, nchunk, mper, g.Ho, g.Wo,
           counter())
    # (g, mb, kb, a, e, m, t) -> (g, mb, m, kb, t, a, e) -> (F, Cg, KH, KW)
    dw = dwt.transpose(0, 1, 5, 2, 6, 3, 4).reshape(g.groups, nmb * mb, nkb * kv, g.KH, g.KW)
    return np.ascontiguousarray(dw[:, : g.Fg, : g.Cg].reshape(g.F, g.Cg, g.KH, g.KW))
