"""conv2d with numba: the notes' loops, restructured for the CPU.

Forward: the input is padded once and its columns split by phase (column mod stride), so that every tap
reads a contiguous run of input for a run of output columns. Each parallel task owns one output row of
FB output channels and keeps an FB x VW tile of the row in vector registers while it loops over input
channels and taps (``_fwd_tiles``). The tile's loop is written in LLVM IR (``_numba.tile_sums_at``): the
same sums as the Python loop, bitwise, with the accumulators held in registers whatever the tile's shape.

A float64 pointwise conv (1x1, stride 1, no padding) is a GEMM per image: each task packs a block of an
image's columns into panels whose rows lie end to end, and runs the same register tile over them
(``_panel_tiles``), forward and dx.

Backward, dx: split by output phase (dx position mod stride), each phase is a stride-1 convolution of the
upstream gradient with the transposed, flipped sub-kernel of the taps that reach it; it runs on the same
tile kernel. No zero-inserted gradient is ever formed, so no 0 * inf terms appear that naive lacks.

Backward, dw: each task owns dw for a group of output-channel blocks (all input channels), and reduces over
the batch in chunks that stay in cache, again with register tiles (for a pointwise conv, a group of
input-channel blocks, which the task itself copies into channel-innermost blocks chunk by chunk); with few
input channels per group the vectors run along the output columns instead, and tasks own chunks of the
batch, added in a fixed order.

Every task writes only what it owns and reduces in a fixed order, so results are bitwise identical for
any thread count. Each thread claims runs of tasks from its own equal share and then from the others'
(_numba.claim), so that a thread slowed by another process takes fewer of them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from .._params import ConvGeometry
from .._quiet import quiet as _quiet
from .._registry import conv_backward, sum_bias_grad
from .._threads import get_num_threads
from .._workspace import ALIGN, fresh, scratch
from ._numba import (
    claims_next,
    claims_start,
    counter,
    inline,
    kernel,
    launch,
    stack_empty,
    tile_sums,
    tile_sums_at,
    tile_sums_rows,
    transpose8,
)

ACC = 512  # elements of the largest tile: 12 channels x 32 columns (float32), 8 x 16 (float64)


@inline
def _row_sum(a, start, length):
    """a[start:start + length] summed (vectorized): the order of every db sum."""
    s = a.dtype.type(0)
    for j in range(start, start + length):
        s += a[j]
    return s


# ------------------------------------------------------------------------------------------- packing
@inline
def columns_inside(off, sw, W, J):
    """The columns j in [jlo, jhi) of [0, J) whose input column j*sw + off lies in [0, W)."""
    jlo = min(J, max(0, -(off // sw)))  # ceil(-off / sw), at least 0
    jhi = min(J, max(jlo, (W - 1 - off) // sw + 1))
    return jlo, jhi


@inline
def _pack_plane(s, d, row0, col0, sw):
    """d[r, p, j] = s[r - row0, j*sw + p - col0], zero outside s: one channel of _pack.

    One zero fill and one 2-D slice copy per phase: rows are short, and row-by-row copies cost more in
    loop overhead than in memory traffic (1.4x slower on the seed001 layer)."""
    R, P, J = d.shape
    H, W = s.shape
    rlo, rhi = max(0, row0), min(R, H + row0)  # rows of d that hold input rows
    d[...] = 0
    if rhi > rlo:
        for p in range(P):
            jlo, jhi = columns_inside(p - col0, sw, W, J)
            if jhi == jlo:
                continue
            c0 = jlo * sw + p - col0
            c1 = c0 + (jhi - jlo - 1) * sw + 1
            d[rlo:rhi, p, jlo:jhi] = s[rlo - row0 : rhi - row0, c0:c1:sw]


@kernel
def _pack(src, dst, row0, col0, sw, ctr):
    """dst[n, c, r, p, j] = src[n, c, r - row0, j*sw + p - col0], zero outside src: the input padded
    and its columns split by phase (column mod stride). One task per (image, channel)."""
    N, C = dst.shape[0], dst.shape[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for nc in range(cur[0], cur[1]):
                _pack_plane(src[nc // C, nc % C], dst[nc // C, nc % C], row0, col0, sw)


# The forward packs each image in the task that computes it (_packed_tiles) when there are at least this
# many images per thread (fewer tasks than that would leave threads idle: one image, one thread).
PACKED_IMAGES_PER_THREAD = 4


def _packs_per_image(tiling: Tiling, images: int) -> bool:
    """Whether a tile conv over this many images takes _packed_tiles (see PACKED_IMAGES_PER_THREAD)."""
    return tiling.packed is not None and images >= PACKED_IMAGES_PER_THREAD * get_num_threads()


def _run_packed_tiles(tiling: Tiling, x, wt, groups, bias, out, row0, col0, sw, r0, sh, dh, rows, cols,
                      colph, coloff) -> None:
    """_run_tiles with _pack fused in (tiling.packed): x unpacked, packed image by image into rows x
    (sw phases x cols columns) with _pack's row0, col0 and sw."""
    fb = tiling.fb
    wpk = _packed_weights(wt, groups, fb)
    wpk = wpk.reshape(wpk.shape[0], wpk.shape[1], -1, fb)
    C = x.shape[1]
    offq = _offsets(C, rows, sw, cols, groups, wt.shape[2], dh, tuple(colph.tolist()),
                    tuple(coloff.tolist()))
    buf = _thread_rows("packed_image", C * rows * sw * cols, x.dtype)
    launch(tiling.packed, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, rows, cols, counter())


def _in_place(x: np.ndarray, rows: int, reach: int, row0: int, col0: int, sw: int, width: int, vw: int,
              has_overlap: bool) -> bool:
    """Whether the tiles can read x itself (see _tile_source)."""
    H, W = x.shape[2], x.shape[3]
    return row0 == col0 == 0 and sw == 1 and rows <= H and reach <= W and width >= 4 * vw and has_overlap


def _tile_source(x: np.ndarray, rows: int, cols: int, reach: int, row0: int, col0: int, sw: int,
                 width: int, vw: int, has_overlap: bool) -> tuple[np.ndarray, bool]:
    """What _fwd_tiles reads: x itself, viewed as (N, C, H, 1, W), when no padding is needed (row0 =
    col0 = 0, no column phases, the taps stay within rows and within reach columns) and the output rows
    are at least four tiles wide (the last tile then overlaps the one before instead of reading past the
    row); else the padded, phase-split copy with cols columns. With it, whether x itself is read.
    Measured: 1.2x on the pw layer (rows of 196); on lenet (rows of 24) the overlapping tile made the
    forward 15-25% slower, hence the four tiles. Only tiles with an overlapping variant (has_overlap:
    Tiling.overlap) read in place."""
    N, C, H, W = x.shape
    if _in_place(x, rows, reach, row0, col0, sw, width, vw, has_overlap):
        return x.reshape(N, C, H, 1, W), True
    return _packed_input(x, rows, cols, row0, col0, sw), False


def _packed_input(x: np.ndarray, rows: int, cols: int, row0: int, col0: int, sw: int,
                  name: str = "packed") -> np.ndarray:
    """_pack's copy of x into the scratch buffer called name."""
    shape = (x.shape[0], x.shape[1], rows, sw, cols)
    xpk = scratch(name, math.prod(shape), x.dtype).reshape(shape)
    launch(_pack, x, xpk, row0, col0, sw, counter())
    return xpk


def _packed_weights(wt: np.ndarray, groups: int, fb: int) -> np.ndarray:
    """(groups * M, K, KH, KW) -> (groups, ceil(M / fb), K, KH, KW, fb), output channels innermost and
    zero-filled to a whole number of tiles."""
    M, K, KH, KW = wt.shape
    Mg = M // groups
    nb = -(-Mg // fb)
    T = K * KH * KW
    w3 = wt.reshape(groups, Mg, T)
    if nb * fb != Mg:
        w3 = np.concatenate([w3, np.zeros((groups, nb * fb - Mg, T), wt.dtype)], axis=1)
    wpk = np.empty((groups, nb, T, fb), wt.dtype)
    np.copyto(wpk, w3.reshape(groups, nb, fb, T).transpose(0, 1, 3, 2))  # one copy, not one per block
    return wpk.reshape(groups, nb, K, KH, KW, fb)


@functools.lru_cache(maxsize=64)
def _tap_columns(KW: int, dw: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
    """Where tap kw reads in the phase-split input: phase (kw*dw) % sw, offset (kw*dw) // sw.
    Remembered: callers must not modify them (not marked read-only, which numba would compile
    separately)."""
    taps = np.arange(KW) * dw
    return (taps % sw).astype(np.intp), (taps // sw).astype(np.intp)


# ------------------------------------------------------------------------------------ forward tiles
@inline
def _tile_sums(fb, vw, acc, xn, wf, offs, q0, q1, base):
    """acc[m, t] = sum_{q0 <= q < q1} wf[q*fb + m] * xn[offs[q] + base + t], over the taps in order:
    one vector load of input per vector of columns and fb broadcast FMAs per tap (tile_sums_at)."""
    tile_sums_at(1, fb, vw, acc, xn, offs, base, q0, q1, wf, 0)


@inline
def _store_tile(acc, bias, out, n, oc0, mcount, i, j0, tmax):
    """out[n, oc0 + m, i, j0 + t] = acc[m, t] + bias[oc0 + m] for m < mcount, t < tmax."""
    for m in range(mcount):
        bv = bias[oc0 + m]
        orow = out[n, oc0 + m, i]
        for t in range(tmax):
            orow[j0 + t] = acc[m, t] + bv


@inline
def _fwd_tiles(fb, vw, xpk, wpk, offq, bias, out, r0, sh, overlap, ctr):
    """out[n, g*Mg + m, i, j] = bias + sum_q wpk[g, m // fb, q, m % fb] * xflat[n][offq[g, q] + (r0 + i*sh)
    * row + j], where xflat[n] is xpk[n] flattened, row one packed input row (all phases) and q runs over
    the taps (input channel, kernel row, kernel column). out may be a strided view. overlap: xpk's rows
    hold no columns beyond what the outputs read, so a last partial chunk is moved back to end at Wo.

    Each task owns one output row of fb output channels and keeps an fb x vw tile of it in vector
    registers while it goes through the taps (_tile_sums), whose offsets come from a table."""
    N, M, Ho, Wo = out.shape
    G, nb, Q, _ = wpk.shape
    Mg = M // G
    row = xpk.shape[3] * xpk.shape[4]
    nch = (Wo + vw - 1) // vw
    ntasks = N * G * nb * Ho
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                # output-channel blocks vary fastest: consecutive tasks reuse the same input rows
                # from cache
                b = task % nb
                r = task // nb
                g = r % G
                r //= G
                i = r % Ho
                n = r // Ho
                acc = numba.carray(stack_empty(ACC, xpk.dtype), (fb, vw))
                mcount = min(fb, Mg - b * fb)
                xn = xpk[n].reshape(-1)
                wf = wpk[g, b].reshape(-1)
                offs = offq[g]
                for ch in range(nch):
                    j0 = ch * vw
                    # overlap is a constant: compiled out of the kernels without overlap
                    if overlap and j0 + vw > Wo:
                        j0 = Wo - vw  # the last chunk overlaps the one before: it never reads past a row
                    _tile_sums(fb, vw, acc, xn, wf, offs, 0, Q, np.uint64((r0 + i * sh) * row + j0))
                    _store_tile(acc, bias, out, n, g * Mg + b * fb, mcount, i, j0, min(vw, Wo - j0))


@inline
def _packed_tiles(fb, vw, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    """_fwd_tiles' sums (without overlap) with _pack fused in: one task per image, which packs the
    image (every channel) into its thread's row of buf as one image of _pack's result, (C, R, sw, J),
    then runs all of the image's tiles, output row by output row with the output-channel blocks
    innermost, while the packed image is in its core's cache. No packing pass over the whole batch and
    one launch less: 1.04-1.17x on the suite's layers (float32 and float64), the same sums."""
    N, C, H, W = x.shape
    M, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    G, nb, Q = wpk.shape[0], wpk.shape[1], wpk.shape[2]
    Mg = M // G
    P = sw
    row = P * J
    nch = (Wo + vw - 1) // vw
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, N, tslot, cur):
            for n in range(cur[0], cur[1]):
                bf = buf[numba.get_thread_id()]
                img = bf[: C * R * P * J].reshape(C, R, P, J)
                for c in range(C):
                    _pack_plane(x[n, c], img[c], row0, col0, sw)
                acc = numba.carray(stack_empty(ACC, x.dtype), (fb, vw))
                for g in range(G):
                    offs = offq[g]
                    for i in range(Ho):
                        for b in range(nb):
                            mcount = min(fb, Mg - b * fb)
                            wf = wpk[g, b].reshape(-1)
                            for ch in range(nch):
                                j0 = ch * vw
                                _tile_sums(fb, vw, acc, bf, wf, offs, 0, Q,
                                           np.uint64((r0 + i * sh) * row + j0))
                                _store_tile(acc, bias, out, n, g * Mg + b * fb, mcount, i, j0,
                                            min(vw, Wo - j0))


@inline
def _row_tiles(rb, vw, xpk, wpk, offq, bias, out, r0, sh, ctr):  # rb must be 4
    """_fwd_tiles' sums for one output channel per group (a depthwise conv; dx of an input with one
    channel per group, as lenet's): each task owns rb output rows of one channel and keeps an rb x vw
    tile of them in registers: per tap one weight and rb vector loads, where a channel tile would spend
    most of its lanes on channels that do not exist. The last row block of a short image repeats its
    last row (reads stay inside the input) and stores only the rows it has."""
    N, M, Ho, Wo = out.shape
    Q = wpk.shape[2]
    row = xpk.shape[3] * xpk.shape[4]
    nch = (Wo + vw - 1) // vw
    nrb = (Ho + rb - 1) // rb
    ntasks = N * M * nrb
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                ib = task % nrb
                r = task // nrb
                g = r % M
                n = r // M
                i0 = ib * rb
                rlast = min(rb, Ho - i0) - 1
                d1 = np.uint64(min(1, rlast) * sh * row)  # rows past the image repeat its last row
                d2 = np.uint64(min(2, rlast) * sh * row)
                d3 = np.uint64(min(3, rlast) * sh * row)
                acc = numba.carray(stack_empty(ACC, xpk.dtype), (rb, vw))
                xn = xpk[n].reshape(-1)
                wf = wpk[g, 0].reshape(-1)
                offs = offq[g]
                for ch in range(nch):
                    j0 = ch * vw
                    for k in range(rb):
                        for t in range(vw):
                            acc[k, t] = 0
                    base = np.uint64((r0 + i0 * sh) * row + j0)
                    for q in range(Q):
                        o = np.uint64(offs[q]) + base
                        wv = wf[np.uint64(q)]
                        # four rows spelled out, columns outermost: the form LLVM vectorizes (with the
                        # rows as a loop it kept the tile in memory and did scalar FMAs)
                        for t in range(vw):
                            tt = np.uint64(t)
                            acc[0, t] += wv * xn[o + tt]
                            acc[1, t] += wv * xn[o + d1 + tt]
                            acc[2, t] += wv * xn[o + d2 + tt]
                            acc[3, t] += wv * xn[o + d3 + tt]
                    tmax = min(vw, Wo - j0)
                    bv = bias[g]
                    for k in range(rlast + 1):
                        orow = out[n, g, i0 + k]
                        for t in range(tmax):
                            orow[j0 + t] = acc[k, t] + bv


@inline
def _phase_tiles(fb, vw, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    """Every phase of a strided dx in one launch: for phase p (a row of pp: h0, w0, nh, nw, r0, q0, q1),
    dx[n, g*Mg + m, h0 + i*sh, w0 + j*sw] = sum_{q0 <= q < q1} wcat[g, m // fb, q, m % fb]
    * srcflat[n][ocat[g, q] + (r0 + i) * row + j], the sums _fwd_tiles forms for each phase apart.

    Each task owns row i of every phase for fb channels: the dx rows h0 + i*sh of all the phases, whose
    columns interleave, so each cache line of dx is completed by one task while it is in cache, and dout
    is read once rather than once per phase (phase by phase, 2x2 phases ran at 28-52 GFLOP/s in float64,
    the shortest slowest)."""
    N, M, H, W = dx.shape
    G, nb, _, _ = wcat.shape
    Mg = M // G
    row = src.shape[3] * src.shape[4]
    ntasks = N * G * nb * nhmax
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                b = task % nb
                r = task // nb
                g = r % G
                r //= G
                i = r % nhmax
                n = r // nhmax
                acc = numba.carray(stack_empty(ACC, src.dtype), (fb, vw))
                mcount = min(fb, Mg - b * fb)
                xn = src[n].reshape(-1)
                wf = wcat[g, b].reshape(-1)
                offs = ocat[g]
                for p in range(pp.shape[0]):
                    h0, w0, nh, nw = pp[p, 0], pp[p, 1], pp[p, 2], pp[p, 3]
                    r0, q0, q1 = pp[p, 4], pp[p, 5], pp[p, 6]
                    if i >= nh:
                        continue
                    h = h0 + i * sh
                    for ch in range((nw + vw - 1) // vw):
                        j0 = ch * vw
                        _tile_sums(fb, vw, acc, xn, wf, offs, q0, q1, np.uint64((r0 + i) * row + j0))
                        tmax = min(vw, nw - j0)
                        for m in range(mcount):
                            drow = dx[n, g * Mg + b * fb + m, h]
                            for t in range(tmax):
                                drow[w0 + (j0 + t) * sw] = acc[m, t]


@kernel
def _phases_f32(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    _phase_tiles(16, 16, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)


@kernel
def _phases_f64(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    _phase_tiles(8, 16, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)


@kernel
def _phases_f64_5x24(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    _phase_tiles(5, 24, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)


@kernel
def _phases_narrow_f32(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    _phase_tiles(4, 32, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)


@kernel
def _phases_narrow_f64(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    _phase_tiles(4, 16, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)


@kernel
def _fwd_f32(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(16, 16, xpk, wpk, offq, bias, out, r0, sh, False, ctr)


@kernel
def _fwd_f32_overlap(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(16, 16, xpk, wpk, offq, bias, out, r0, sh, True, ctr)


@kernel
def _fwd_f64(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(8, 16, xpk, wpk, offq, bias, out, r0, sh, False, ctr)


@kernel
def _fwd_f64_overlap(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(8, 16, xpk, wpk, offq, bias, out, r0, sh, True, ctr)


@kernel
def _fwd_f64_5x24(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(5, 24, xpk, wpk, offq, bias, out, r0, sh, False, ctr)


@kernel
def _fwd_rows_f32(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _row_tiles(4, 32, xpk, wpk, offq, bias, out, r0, sh, ctr)


@kernel
def _fwd_rows_f64(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _row_tiles(4, 16, xpk, wpk, offq, bias, out, r0, sh, ctr)


@kernel
def _packed_f32(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    _packed_tiles(16, 16, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)


@kernel
def _packed_f64(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    _packed_tiles(8, 16, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)


@kernel
def _packed_f64_5x24(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    _packed_tiles(5, 24, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)


@kernel
def _packed_narrow_f32(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    _packed_tiles(4, 32, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)


@kernel
def _packed_narrow_f64(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    _packed_tiles(4, 16, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)


@kernel
def _fwd_f32_8x32(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(8, 32, xpk, wpk, offq, bias, out, r0, sh, False, ctr)


@kernel
def _fwd_f32_8x32_overlap(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(8, 32, xpk, wpk, offq, bias, out, r0, sh, True, ctr)


@kernel
def _phases_f32_8x32(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    _phase_tiles(8, 32, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)


@kernel
def _packed_f32_8x32(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    _packed_tiles(8, 32, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)


@kernel
def _fwd_f32_12x32(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(12, 32, xpk, wpk, offq, bias, out, r0, sh, False, ctr)


@kernel
def _fwd_f32_12x32_overlap(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(12, 32, xpk, wpk, offq, bias, out, r0, sh, True, ctr)


@kernel
def _phases_f32_12x32(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
    _phase_tiles(12, 32, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)


@kernel
def _packed_f32_12x32(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    _packed_tiles(12, 32, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)


# For few output channels (dx of a 1- or 3-channel input): 4 channels x 2 vectors of columns, so a
# 16-channel tile does not compute 13 to 15 channels of zeros.
@kernel
def _fwd_narrow_f32(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(4, 32, xpk, wpk, offq, bias, out, r0, sh, False, ctr)


@kernel
def _fwd_narrow_f64(xpk, wpk, offq, bias, out, r0, sh, ctr):
    _fwd_tiles(4, 16, xpk, wpk, offq, bias, out, r0, sh, False, ctr)


class Tiling(NamedTuple):
    """A tile kernel: fb output channels x vw columns; overlap: its variant for inputs read in place
    (the last partial chunk overlaps the one before), or None; speed: its measured speed per tile
    element, relative to the default tile of its dtype, on a layer that neither tile pads; phases: its
    variant for every phase of a strided dx in one launch, or None."""

    fn: object
    fb: int
    vw: int
    overlap: object = None
    speed: float = 1.0
    phases: object = None  # the same tile for all phases of a strided dx at once (_phase_tiles)
    packed: object = None  # the forward with _pack fused in, one task per image (_packed_tiles)


# Tiles for more than 4 output channels per group, by dtype; _tiling picks the one that computes the
# least padding per unit of speed. float64's 5 x 24 tile: 0.93x the 8 x 16 tile's speed where neither
# pads (48 columns, 40 channels), 1.43x faster on lenet (24 columns, 20 channels) and on 24 columns
# and 40 channels, where 8 x 16 computes a third of its columns for nothing. float32's 8 x 32 and
# 12 x 32 tiles (2 vector loads and 8 or 12 broadcasts per 16 or 24 FMAs, where 16 x 16 needs 1 and
# 16): 1.06-1.20x and 1.07-1.18x the 16 x 16 tile's speed, forward and dx, where none pads (32
# columns; 48 and 96 channels; /tmp/exp/abtiles2.py). Before the tile loop was written in LLVM IR
# (tile_sums_at), LLVM compiled such tiles to code 1.4-3x slower.
_WIDE = {
    np.dtype(np.float32): (Tiling(_fwd_f32, 16, 16, _fwd_f32_overlap, phases=_phases_f32,
                                  packed=_packed_f32),
                           Tiling(_fwd_f32_8x32, 8, 32, _fwd_f32_8x32_overlap, 1.10, _phases_f32_8x32,
                                  _packed_f32_8x32),
                           Tiling(_fwd_f32_12x32, 12, 32, _fwd_f32_12x32_overlap, 1.15, _phases_f32_12x32,
                                  _packed_f32_12x32)),
    np.dtype(np.float64): (Tiling(_fwd_f64, 8, 16, _fwd_f64_overlap, phases=_phases_f64,
                                  packed=_packed_f64),
                           Tiling(_fwd_f64_5x24, 5, 24, None, 0.93, _phases_f64_5x24, _packed_f64_5x24)),
}
_NARROW = {np.dtype(np.float32): Tiling(_fwd_narrow_f32, 4, 32, phases=_phases_narrow_f32,
                                        packed=_packed_narrow_f32),
           np.dtype(np.float64): Tiling(_fwd_narrow_f64, 4, 16, phases=_phases_narrow_f64,
                                        packed=_packed_narrow_f64)}
# one output channel per group: row tiles (4 rows x vw columns)
_ROWS = {np.dtype(np.float32): Tiling(_fwd_rows_f32, 1, 32),
         np.dtype(np.float64): Tiling(_fwd_rows_f64, 1, 16)}


@functools.lru_cache(maxsize=256)
def _tiling(out_per_group: int, dtype: np.dtype, width: int, fold: bool = False) -> Tiling:
    """The tile kernel for out_per_group output channels per group and output rows of width columns;
    fold: among the tiles that _fold_tiles has a kernel for (_FOLD_TILINGS)."""
    dtype = np.dtype(dtype)
    if out_per_group == 1:
        return _ROWS[dtype]
    if out_per_group <= 4:
        return _NARROW[dtype]

    def cost(t: Tiling) -> float:
        return -(-out_per_group // t.fb) * t.fb * -(-width // t.vw) * t.vw / t.speed

    return min(_FOLD_TILINGS[dtype] if fold else _WIDE[dtype], key=cost)


def _tap_offsets(xpk: np.ndarray, groups: int, KH: int, dh: int, colph: np.ndarray,
                 coloff: np.ndarray) -> np.ndarray:
    """offq[g, (k, a, e)]: where tap (input channel k of group g, kernel row a, kernel column e) reads in
    one image's flattened packed input, for output row 0 and column 0. Remembered per geometry (the
    NumPy steps cost 5% of a small layer's call); callers must not modify it."""
    return _offsets(*xpk.shape[1:], groups, KH, dh, tuple(colph.tolist()), tuple(coloff.tolist()))


@functools.lru_cache(maxsize=64)
def _offsets(C: int, R: int, P: int, J: int, groups: int, KH: int, dh: int, colph: tuple,
             coloff: tuple) -> np.ndarray:
    K = C // groups
    colph, coloff = np.array(colph, np.int64), np.array(coloff, np.int64)
    k = np.arange(C).reshape(groups, K, 1, 1)
    a = np.arange(KH).reshape(1, 1, KH, 1)
    offq = (k * R + a * dh) * (P * J) + (colph * J + coloff).reshape(1, 1, 1, -1)
    return offq.reshape(groups, -1).astype(np.int64)


def _run_tiles(tiling: Tiling, xpk, wt, groups, bias, out, sh, dh, colph, coloff, r0=0,
               overlap=False) -> None:
    fn, fb = (tiling.overlap if overlap else tiling.fn), tiling.fb
    wpk = _packed_weights(wt, groups, fb)
    wpk = wpk.reshape(wpk.shape[0], wpk.shape[1], -1, fb)  # (groups, blocks, taps, fb)
    offq = _tap_offsets(xpk, groups, wt.shape[2], dh, colph, coloff)
    launch(fn, xpk, wpk, offq, bias, out, r0, sh, counter())


# ---------------------------------------------------------------------------------- pointwise panels
def _thread_rows(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A scratch array of one row of at least size elements per numba thread, which a kernel indexes with
    numba.get_thread_id() (always below NUMBA_NUM_THREADS); every row starts on a 64-byte boundary."""
    threads = int(numba.config.NUMBA_NUM_THREADS)
    per_line = max(1, ALIGN // np.dtype(dtype).itemsize)
    row = -(-size // per_line) * per_line
    return scratch(name, threads * row, dtype).reshape(threads, row)


PANEL_BYTES = 1 << 19  # one task's packed input columns: with the weights, within a core's L2


@inline
def _panel_tiles(fb, vw, hw, x, wpk, bias, out, buf, pb, ctr):
    """out[n, g*Mg + m, p] = bias[g*Mg + m] + sum_k wpk[g, m // fb, k, m % fb] * x[n, g, k, p]: a
    pointwise conv, one GEMM per image and group, K = x.shape[2] input channels.

    Each task owns pb columns of one image and group. It first copies them, row by row, into panels of
    vw columns whose K rows lie end to end (its thread's row of buf; columns past the image are zeros,
    their sums never stored), then runs every block of fb output channels over each panel while the
    panel is in cache (tile_sums: the forward's fb x vw register tile, its K rows end to end). Read in
    place, a tile's K rows are K strided streams, which the prefetchers do not follow when the input
    comes from memory.

    A last panel of at most hw = vw / 2 columns is packed hw wide and summed by tiles of 2 * fb output
    channels x hw columns (tile_sums over two weight blocks): 196 columns (14 x 14) are 12 panels of
    16 and one of 4, which the 16-wide tile computed at the cost of a whole panel (1.07x on pw and on
    512 channels at 7 x 7, forward and dx, medians of per-round ratios)."""
    N, G, K, P = x.shape
    nb = wpk.shape[1]
    Mg = out.shape[1] // G
    npb = (P + pb - 1) // pb
    of = out.reshape(-1)
    ntasks = N * G * npb
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                c = task % npb
                r = task // npb
                g = r % G
                n = r // G
                p0 = c * pb
                width = min(pb, P - p0)
                npan = (width + vw - 1) // vw
                nfull = width // vw  # panels without columns past the image
                tail = width - nfull * vw
                narrow = 0 < tail <= hw  # a last panel of at most hw columns is summed hw wide
                bf = buf[numba.get_thread_id()]
                row = numba.carray(stack_empty(ACC, x.dtype), (vw,))
                for k in range(K):
                    xr = x[n, g, k]
                    for pan in range(nfull):
                        base = np.uint64((pan * K + k) * vw)
                        j0 = np.uint64(p0 + pan * vw)
                        # through the stack: LLVM cannot tell that bf and x do not overlap, and copied
                        # element by element, in order (vector loads and stores: 1.1x on float64 pw)
                        for t in range(vw):
                            row[t] = xr[j0 + np.uint64(t)]
                        for t in range(vw):
                            bf[base + np.uint64(t)] = row[t]
                    if nfull < npan:
                        j0 = np.uint64(p0 + nfull * vw)
                        tmax = P - (p0 + nfull * vw)
                        tw = hw if narrow else vw  # the last panel's row length
                        base = np.uint64(nfull * K * vw + k * tw)
                        for t in range(tmax):
                            bf[base + np.uint64(t)] = xr[j0 + np.uint64(t)]
                        for t in range(tmax, tw):
                            bf[base + np.uint64(t)] = 0
                acc = numba.carray(stack_empty(ACC, x.dtype), (fb, vw))
                hacc = numba.carray(stack_empty(ACC, x.dtype), (2 * fb, hw))
                # views made once per task: in the tile loop each cost a runtime call
                wg = wpk[g].reshape(-1)
                for b in range(nb):
                    for pan in range(npan):
                        j0 = p0 + pan * vw
                        if pan == nfull and narrow:
                            # blocks in pairs: b's tile sums b + 1's rows too (past the last block,
                            # b's own again, never stored)
                            if b % 2 == 0:
                                tile_sums(2, fb, hw, hacc, bf, nfull * K * vw, hw, wg, b * K * fb,
                                          (min(b + 1, nb - 1) - b) * K * fb, K)
                                for m in range(min(2 * fb, Mg - b * fb)):
                                    oc = g * Mg + b * fb + m
                                    bv = bias[oc]
                                    o = np.uint64((n * out.shape[1] + oc) * P + j0)
                                    for t in range(tail):
                                        of[o + np.uint64(t)] = hacc[m, t] + bv
                            continue
                        tile_sums(1, fb, vw, acc, bf, pan * K * vw, vw, wg, b * K * fb, 0, K)
                        for m in range(min(fb, Mg - b * fb)):
                            oc = g * Mg + b * fb + m
                            bv = bias[oc]
                            # unsigned offsets: a signed one that might wrap around made LLVM store
                            # with scatters
                            o = np.uint64((n * out.shape[1] + oc) * P + j0)
                            if pan < nfull:
                                for t in range(vw):
                                    of[o + np.uint64(t)] = acc[m, t] + bv
                            else:
                                for t in range(P - j0):
                                    of[o + np.uint64(t)] = acc[m, t] + bv


@kernel
def _panels_f64(x, wpk, bias, out, buf, pb, ctr):
    _panel_tiles(8, 16, 8, x, wpk, bias, out, buf, pb, ctr)


# float64 only: in float32 the panels were no faster than the tiles reading the input in place
_PANELS = {np.dtype(np.float64): (_panels_f64, 8, 16)}


def _pointwise_panels(x: np.ndarray, wt: np.ndarray, groups: int, bias: np.ndarray) -> np.ndarray:
    """(N, C, P) input and (M, C // groups, 1, 1) kernel -> (N, M, P), by _panel_tiles."""
    N, C, P = x.shape
    M, K = wt.shape[0], wt.shape[1]
    fn, fb, vw = _PANELS[x.dtype]
    wpk = _packed_weights(wt, groups, fb)
    wpk = wpk.reshape(groups, -1, K, fb)
    pb = min(-(-P // vw), max(1, PANEL_BYTES // (K * vw * x.itemsize))) * vw
    buf = _thread_rows("panels", K * pb, x.dtype)
    out = fresh((N, M, P), x.dtype)
    launch(fn, x.reshape(N, groups, K, P), wpk, bias, out, buf, pb, counter())
    return out


# ------------------------------------------------------------------------------------------- forward
def _flat_pointwise(g: ConvGeometry) -> ConvGeometry | None:
    """For a 1x1 kernel at stride 1 without padding, the same conv on images of one row of H*W pixels:
    long contiguous rows fill the vector tiles (a 14-wide row wastes 2 of 16 lanes and every row ends a
    tile). None for any other conv."""
    if g.pointwise and g.H > 1:
        return replace(g, H=1, W=g.H * g.W, Ho=1, Wo=g.H * g.W)
    return None


@_quiet
def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry) -> np.ndarray:
    flat = _flat_pointwise(g)
    if g.pointwise and x.dtype in _PANELS:
        bias = np.zeros(g.F, x.dtype) if b is None else b
        out = _pointwise_panels(x.reshape(g.N, g.C, g.H * g.W), w, g.groups, bias)
        return out.reshape(g.N, g.F, g.Ho, g.Wo)
    if flat is not None:
        out = conv2d_forward(x.reshape(g.N, g.C, 1, g.H * g.W), w, b, flat)
        return out.reshape(g.N, g.F, g.Ho, g.Wo)
    colph, coloff = _tap_columns(g.KW, g.dw, g.sw)
    tiling = _tiling(g.Fg, x.dtype, g.Wo)
    vw = tiling.vw
    rows = (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1
    cols = -(-g.Wo // vw) * vw + int(coloff[-1])
    reach = g.Wo + int(coloff[-1])
    bias = np.zeros(g.F, x.dtype) if b is None else b
    has_overlap = tiling.overlap is not None
    if _packs_per_image(tiling, g.N) and not _in_place(x, rows, reach, g.pt, g.pl, g.sw, g.Wo, vw,
                                                        has_overlap):
        out = fresh((g.N, g.F, g.Ho, g.Wo), x.dtype)
        _run_packed_tiles(tiling, x, w, g.groups, bias, out, g.pt, g.pl, g.sw, 0, g.sh, g.dh, rows, cols,
                          colph, coloff)
        return out
    xpk, overlap = _tile_source(x, rows, cols, reach, g.pt, g.pl, g.sw, g.Wo, vw, has_overlap)
    out = fresh((g.N, g.F, g.Ho, g.Wo), x.dtype)
    _run_tiles(tiling, xpk, w, g.groups, bias, out, g.sh, g.dh, colph, coloff, overlap=overlap)
    return out


# ---------------------------------------------------------------------------------------- backward dx
def _phase_taps(r: int, K: int, d: int, s: int) -> tuple[list[int], int]:
    """Taps k whose padded position k*d is congruent to r mod s, and their spacing in dout (in rows)."""
    taps = [k for k in range(K) if (k * d - r) % s == 0]
    step = (taps[1] - taps[0]) * d // s if len(taps) > 1 else 1
    return taps, step


def _phase_range(r: int, pad: int, size: int, s: int) -> tuple[int, int]:
    """First q and count of padded positions q*s + r that fall inside the unpadded input."""
    q0 = -((r - pad) // s)  # ceil((pad - r) / s)
    q1 = (pad + size - 1 - r) // s
    return q0, max(0, q1 - q0 + 1)


class DxPhase(NamedTuple):
    """One phase of dx: the positions (h0 + i*sh, w0 + j*sw) for i < nh, j < nw. It is a stride-1
    convolution of dout with the flipped sub-kernel of the taps taps_h x taps_w, which lie step_h rows and
    step_w columns apart in dout; its first output reads dout at row base_h, column base_w (either may be
    negative: rows and columns outside dout count as zero)."""

    h0: int
    w0: int
    nh: int
    nw: int
    taps_h: list[int]
    taps_w: list[int]
    step_h: int
    step_w: int
    base_h: int
    base_w: int


def dx_phases(g: ConvGeometry) -> list[DxPhase]:
    """The phases (dx position mod stride) of dx that some tap reaches; with stride 1, all of dx."""
    # dx[q] = sum_t w[tap_t] * dout[q - m_t], m_t = (tap_t*d - r) // s, with the taps flipped so that
    # the source index grows with the tap: source = base + i + a * step.
    phases = []
    for rh in range(g.sh):
        qh, nh = _phase_range(rh, g.pt, g.H, g.sh)
        taps_h, step_h = _phase_taps(rh, g.KH, g.dh, g.sh)
        for rw in range(g.sw):
            qw, nw = _phase_range(rw, g.pl, g.W, g.sw)
            taps_w, step_w = _phase_taps(rw, g.KW, g.dw, g.sw)
            if nh == 0 or nw == 0 or not taps_h or not taps_w:
                continue  # no dx positions here, or none that any tap reaches: they stay zero
            base_h = qh - (taps_h[-1] * g.dh - rh) // g.sh
            base_w = qw - (taps_w[-1] * g.dw - rw) // g.sw
            h0, w0 = qh * g.sh + rh - g.pt, qw * g.sw + rw - g.pl
            phases.append(DxPhase(h0, w0, nh, nw, taps_h, taps_w, step_h, step_w, base_h, base_w))
    return phases


def transposed_kernel(w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """(F, Cg, KH, KW) -> (C, Fg, KH, KW): dx's channels are the outputs, dout's the inputs, per group."""
    wt = w.reshape(g.groups, g.Fg, g.Cg, g.KH, g.KW).transpose(0, 2, 1, 3, 4)
    return wt.reshape(g.C, g.Fg, g.KH, g.KW)


def phase_kernel(wt: np.ndarray, ph: DxPhase) -> np.ndarray:
    """One phase's flipped sub-kernel of the transposed kernel, contiguous."""
    return np.ascontiguousarray(wt[:, :, ph.taps_h[::-1]][:, :, :, ph.taps_w[::-1]])


@kernel
def _dx_terms(dout, w, dx, sh, sw, dh, dw, pt, pl, ctr):
    """dx[n, c, h, v] = sum of w[f, c % Cg, a, e] * dout[n, f, i, j] over the (f, a, e, i, j) with
    i*sh + a*dh = h + pt and j*sw + e*dw = v + pl inside dout: exactly the terms naive's scatter adds,
    and no others. Each task owns one (image, channel) plane of dx."""
    N, C, H, W = dx.shape
    F, Cg, KH, KW = w.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    Fg = F // (C // Cg)
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                n, c = task // C, task % C
                f0, k = (c // Cg) * Fg, c % Cg
                for h in range(H):
                    for v in range(W):
                        dx[n, c, h, v] = 0
                        for a in range(KH):
                            ti = h + pt - a * dh
                            if ti < 0 or ti % sh != 0 or ti // sh >= Ho:
                                continue
                            for e in range(KW):
                                tj = v + pl - e * dw
                                if tj < 0 or tj % sw != 0 or tj // sw >= Wo:
                                    continue
                                for f in range(f0, f0 + Fg):
                                    dx[n, c, h, v] += w[f, k, a, e] * dout[n, f, ti // sh, tj // sw]


def _phase_columns(p: DxPhase, left: int) -> tuple[np.ndarray, np.ndarray]:
    """Where phase p's taps read in the padded dout (one column phase, left columns of padding): the
    colph, coloff pair _tap_offsets takes."""
    coloff = (left + p.base_w + np.arange(len(p.taps_w)) * p.step_w).astype(np.intp)
    return np.zeros(len(p.taps_w), np.intp), coloff


def _residues(g: ConvGeometry) -> int:
    """How many residues (dx row mod stride, dx column mod stride) hold dx positions."""
    rows = sum(1 for r in range(g.sh) if _phase_range(r, g.pt, g.H, g.sh)[1] > 0)
    cols = sum(1 for r in range(g.sw) if _phase_range(r, g.pl, g.W, g.sw)[1] > 0)
    return rows * cols


def _run_phases(tiling: Tiling, src: np.ndarray, wt: np.ndarray, g: ConvGeometry, phases: list,
                top: int, left: int, dx: np.ndarray) -> None:
    """All phases of a strided dx by one launch of tiling.phases: the phases' packed kernels and tap
    offsets laid end to end along the taps."""
    fb = tiling.fb
    wpks, offs, pp, q0 = [], [], [], 0
    for p in phases:
        colph, coloff = _phase_columns(p, left)
        wpk = _packed_weights(phase_kernel(wt, p), g.groups, fb)
        wpks.append(wpk.reshape(wpk.shape[0], wpk.shape[1], -1, fb))
        offs.append(_tap_offsets(src, g.groups, len(p.taps_h), p.step_h, colph, coloff))
        q1 = q0 + wpks[-1].shape[2]
        pp.append((p.h0, p.w0, p.nh, p.nw, top + p.base_h, q0, q1))
        q0 = q1
    wcat = np.concatenate(wpks, axis=2)
    ocat = np.concatenate(offs, axis=1)
    launch(tiling.phases, src, wcat, ocat, np.array(pp, np.int64), dx, g.sh, g.sw,
           max(p.nh for p in phases), counter())


@inline
def _fold_tiles(fb, vw, dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr):
    """dx for one input channel per group (Cg = 1: lenet's first layer) as a GEMM and a fold.

    Each task owns one image and group. It first forms t[q, p] = sum_f wpk[g, q // fb, f, q % fb]
    * dout[n, g*Fg + f, p] for each of the Q taps q = (kh, kw) and dout pixel p, with the forward's
    register tiles (in its thread's row of buf), then folds: dx[n, g, i*sh + kh*dh - pt, j*sw + kw*dw
    - pl] += t[q, i*Wo + j], taps in order, positions in the padding dropped: exactly naive's terms (no
    weight meets a padding zero). The phases would run a transposed conv with one output channel
    instead: 4 rows x vw columns per tile, one FMA per vector load."""
    N, F, P = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    G, nb, Fg, _ = wpk.shape
    nch = (P + vw - 1) // vw
    ntasks = N * G
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                g = task % G
                n = task // G
                t = buf[numba.get_thread_id()]
                acc = numba.carray(stack_empty(ACC, dout.dtype), (fb, vw))
                xn = dout[n].reshape(-1)
                for b in range(nb):
                    wf = wpk[g, b].reshape(-1)
                    for ch in range(nch):
                        j0 = min(ch * vw, P - vw)  # the last chunk overlaps the one before (P >= vw)
                        _tile_sums(fb, vw, acc, xn, wf, offq[g], 0, Fg, np.uint64(j0))
                        for m in range(fb):
                            base = (b * fb + m) * P + j0
                            for u in range(vw):
                                t[base + u] = acc[m, u]
                plane = dx[n, g]
                for h in range(H):
                    for v in range(W):
                        plane[h, v] = 0
                for q in range(Q):
                    a = q // KW
                    e = q % KW
                    jlo, jhi = columns_inside(e * dw - pl, sw, W, Wo)
                    for i in range(Ho):
                        h = i * sh + a * dh - pt
                        if h < 0 or h >= H:
                            continue
                        drow = plane[h]
                        t0 = np.uint64(q * P + i * Wo + jlo)
                        d0 = np.uint64(jlo * sw + e * dw - pl)
                        if sw == 1:  # unsigned, unit-stride indices: a vectorized loop
                            for j in range(jhi - jlo):
                                drow[d0 + np.uint64(j)] += t[t0 + np.uint64(j)]
                        else:
                            for j in range(jhi - jlo):
                                drow[d0 + np.uint64(j * sw)] += t[t0 + np.uint64(j)]


@kernel
def _fold_f32(dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr):
    _fold_tiles(16, 16, dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr)


@kernel
def _fold_f64(dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr):
    _fold_tiles(8, 16, dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr)


@kernel
def _fold_f64_5x24(dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr):
    _fold_tiles(5, 24, dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr)


# the largest per-thread t of _fold_tiles (lenet's: 115 KB in float64): a core's L2, where the fold
# finds it; larger images take the phases, and the scratch stays small on many-core machines
FOLD_BYTES = 2 << 20
_FOLD = {(np.dtype(np.float32), 16): _fold_f32, (np.dtype(np.float64), 8): _fold_f64,
         (np.dtype(np.float64), 5): _fold_f64_5x24}
_FOLD_TILINGS = {dtype: tuple(t for t in tiles if (dtype, t.fb) in _FOLD) for dtype, tiles in _WIDE.items()}


def _conv_dx_fold(dout: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray | None:
    """_fold_tiles' dx, for one input channel per group, at least 8 output channels per group to sum
    over, 5 taps, 4 (image, group) tasks, images of at least a tile's width and a per-thread buffer t
    within FOLD_BYTES; else None. lenet: 2x in float64, 1.3x in float32."""
    Q, P = g.KH * g.KW, g.Ho * g.Wo
    if g.Cg != 1 or g.Fg < 8 or Q < 5 or g.N * g.groups < 4:  # not the thread count: same sums
        return None
    tiling = _tiling(Q, dout.dtype, P, fold=True)
    fn = _FOLD.get((dout.dtype, tiling.fb))
    if fn is None or P < tiling.vw or -(-Q // tiling.fb) * tiling.fb * P * dout.itemsize > FOLD_BYTES:
        return None
    fb = tiling.fb
    # the taps are the tile's output channels, the output channels its inputs: wpk[g, b, f, m] =
    # w[g*Fg + f, 0, tap b*fb + m]
    wq = w.reshape(g.groups, g.Fg, Q).transpose(0, 2, 1).reshape(g.groups * Q, g.Fg, 1, 1)
    wpk = _packed_weights(wq, g.groups, fb)
    nb = wpk.shape[1]
    wpk = wpk.reshape(g.groups, nb, g.Fg, fb)
    offq = ((np.arange(g.groups)[:, None] * g.Fg + np.arange(g.Fg)[None, :]) * P).astype(np.int64)
    buf = _thread_rows("fold", nb * fb * P, dout.dtype)
    dx = fresh((g.N, g.C, g.H, g.W), dout.dtype)
    launch(fn, dout.reshape(g.N, g.F, P), wpk, offq, dx, buf, Q, g.Ho, g.Wo, g.KW, g.sh, g.sw, g.dh,
           g.dw, g.pt, g.pl, counter())
    return dx


def _conv_dx(dout: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    if not np.isfinite(w).all():
        # The tiles below multiply the weights by the zeros around dout: an infinite weight would
        # turn those into NaN where naive (and PyTorch) have none. A rare case: a slow, exact path.
        dx = fresh((g.N, g.C, g.H, g.W), dout.dtype)
        launch(_dx_terms, dout, w, dx, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, counter())
        return dx
    dtype = dout.dtype
    wt = transposed_kernel(w, g)
    phases = dx_phases(g)
    strided = g.sh > 1 or g.sw > 1
    # Each phase covers every dx position of its residue (position mod stride); a residue no tap
    # reaches has no phase, and its positions stay 0 (a 1x1 kernel with a stride).
    dx = fresh((g.N, g.C, g.H, g.W), dtype)
    if len(phases) < _residues(g):
        dx.fill(0)
    if not phases:
        return dx
    # One zero-padded copy of dout serves every phase: phase rows start at top + base_h.
    top = max(0, max(-p.base_h for p in phases))
    left = max(0, max(-p.base_w for p in phases))
    rows = max(top + p.base_h + p.nh + (len(p.taps_h) - 1) * p.step_h for p in phases)
    tiling = _tiling(g.Cg, dtype, min(p.nw for p in phases))
    vw = tiling.vw
    cols = max(left + p.base_w + -(-p.nw // vw) * vw + (len(p.taps_w) - 1) * p.step_w for p in phases)
    reach = max(left + p.base_w + p.nw + (len(p.taps_w) - 1) * p.step_w for p in phases)
    fused = strided and tiling.phases is not None
    has_overlap = tiling.overlap is not None and not fused
    p = phases[0]
    whole = not strided and (p.h0, p.w0, p.nh, p.nw) == (0, 0, g.H, g.W)  # one phase: all of dx
    if whole and _packs_per_image(tiling, g.N) and not _in_place(dout, rows, reach, top, left, 1, p.nw,
                                                                 vw, has_overlap):
        # dout packed image by image in the tasks
        colph, coloff = _phase_columns(p, left)
        _run_packed_tiles(tiling, dout, phase_kernel(wt, p), g.groups, np.zeros(g.C, dtype), dx, top, left,
                          1, top + p.base_h, 1, p.step_h, rows, cols, colph, coloff)
        return dx
    src, overlap = _tile_source(dout, rows, cols, reach, top, left, 1, min(p.nw for p in phases), vw,
                                has_overlap)
    if fused:
        _run_phases(tiling, src, wt, g, phases, top, left, dx)
        return dx
    zeros = np.zeros(g.C, dtype)
    for p in phases:
        colph, coloff = _phase_columns(p, left)
        out = dx[:, :, p.h0 :: g.sh, p.w0 :: g.sw][:, :, : p.nh, : p.nw]  # written in place, strided
        _run_tiles(tiling, src, phase_kernel(wt, p), g.groups, zeros, out, 1, p.step_h, colph, coloff,
                   r0=top + p.base_h, overlap=overlap)
    return dx


# ---------------------------------------------------------------------------------------- backward dw
QB = 16  # taps (input channel, kh, kw) per dw tile


@inline
def _dw_tiles(mv, dT, xpk, offq, dwt, sh, ctr):
    """dwt[g, mb, q, t] = sum_{n, i, j} dT[n, i, j, g*Mp + mb*mv + t] * xflat[n][offq[g, q] + i*sh*row + j]

    where xflat[n] is xpk[n] flattened and row is one packed input row (all phases). Each task owns one
    tile of QB taps x mv output channels and keeps it in registers over the whole batch."""
    N, Ho, Wo, Fp = dT.shape
    G, nmb, Q, _ = dwt.shape
    row = xpk.shape[3] * xpk.shape[4]
    nqb = Q // QB
    ntasks = G * nmb * nqb
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                qb = task % nqb
                r = task // nqb
                mb = r % nmb
                g = r // nmb
                m0 = (g * nmb + mb) * mv
                acc = numba.carray(stack_empty(ACC, xpk.dtype), (QB, mv))
                xq = numba.carray(stack_empty(QB, xpk.dtype), (QB,))
                for q in range(QB):
                    for t in range(mv):
                        acc[q, t] = 0
                offs = offq[g, qb * QB : qb * QB + QB]
                # Unsigned indices below skip numba's negative-index wraparound code, whose branches
                # would keep LLVM from holding the tile in registers.
                for n in range(N):
                    xn = xpk[n].reshape(-1)
                    dn = dT[n].reshape(-1)
                    for i in range(Ho):
                        pos = i * sh * row
                        for j in range(Wo):
                            dbase = (i * Wo + j) * Fp + m0
                            for q in range(QB):
                                xq[q] = xn[np.uint64(offs[q] + pos + j)]
                            # t outermost and q innermost: LLVM unrolls q and vectorizes t, as in
                            # _fwd_tiles
                            for t in range(mv):
                                d = dn[np.uint64(dbase + t)]
                                for q in range(QB):
                                    acc[q, t] += xq[q] * d
                out = dwt[g, mb, qb * QB : qb * QB + QB]
                for q in range(QB):
                    for t in range(mv):
                        out[q, t] = acc[q, t]


@kernel
def _dw_f32(dT, xpk, offq, dwt, sh, ctr):
    _dw_tiles(16, dT, xpk, offq, dwt, sh, ctr)


@kernel
def _dw_f64(dT, xpk, offq, dwt, sh, ctr):
    _dw_tiles(8, dT, xpk, offq, dwt, sh, ctr)


_DW = {np.dtype(np.float32): (_dw_f32, 16), np.dtype(np.float64): (_dw_f64, 8)}


PF = 4  # output channels per tile of the pixel-vector dw kernel (with 4 or 5 kernel columns)
ACC_DWP = 320  # elements of its largest tile: 4 channels x 5 columns x 16 lanes (float32)


@inline
def _dwp_step(vw, xk, dn, acc, bx, bd, c1, c2, c3, f1, f2, f3):
    """One vector of output columns for a PF x 4 tile: input at bx (+ c1, c2, c3 for the other
    kernel columns), dout at bd (+ f1, f2, f3 for the other channels). Spelled out, lanes outermost:
    the form LLVM vectorizes with the tile in registers (written inline in the task's loops, the
    lane loop stayed scalar)."""
    for t in range(vw):
        tt = np.uint64(t)
        x0 = xk[bx + tt]
        x1 = xk[bx + c1 + tt]
        x2 = xk[bx + c2 + tt]
        x3 = xk[bx + c3 + tt]
        v0 = dn[bd + tt]
        v1 = dn[bd + f1 + tt]
        v2 = dn[bd + f2 + tt]
        v3 = dn[bd + f3 + tt]
        acc[0, t] += v0 * x0
        acc[1, t] += v0 * x1
        acc[2, t] += v0 * x2
        acc[3, t] += v0 * x3
        acc[4, t] += v1 * x0
        acc[5, t] += v1 * x1
        acc[6, t] += v1 * x2
        acc[7, t] += v1 * x3
        acc[8, t] += v2 * x0
        acc[9, t] += v2 * x1
        acc[10, t] += v2 * x2
        acc[11, t] += v2 * x3
        acc[12, t] += v3 * x0
        acc[13, t] += v3 * x1
        acc[14, t] += v3 * x2
        acc[15, t] += v3 * x3


@inline
def _dwp_step5(vw, xk, dn, acc, bx, bd, c1, c2, c3, c4, f1, f2, f3):
    """_dwp_step for tiles of 5 kernel columns (lenet's kernel width: 4-column tiles would compute 8)."""
    for t in range(vw):
        tt = np.uint64(t)
        x0 = xk[bx + tt]
        x1 = xk[bx + c1 + tt]
        x2 = xk[bx + c2 + tt]
        x3 = xk[bx + c3 + tt]
        x4 = xk[bx + c4 + tt]
        v0 = dn[bd + tt]
        v1 = dn[bd + f1 + tt]
        v2 = dn[bd + f2 + tt]
        v3 = dn[bd + f3 + tt]
        acc[0, t] += v0 * x0
        acc[1, t] += v0 * x1
        acc[2, t] += v0 * x2
        acc[3, t] += v0 * x3
        acc[4, t] += v0 * x4
        acc[5, t] += v1 * x0
        acc[6, t] += v1 * x1
        acc[7, t] += v1 * x2
        acc[8, t] += v1 * x3
        acc[9, t] += v1 * x4
        acc[10, t] += v2 * x0
        acc[11, t] += v2 * x1
        acc[12, t] += v2 * x2
        acc[13, t] += v2 * x3
        acc[14, t] += v2 * x4
        acc[15, t] += v3 * x0
        acc[16, t] += v3 * x1
        acc[17, t] += v3 * x2
        acc[18, t] += v3 * x3
        acc[19, t] += v3 * x4


@inline
def _dwp_tiles(vw, pe, dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr):
    """part[s, g, fb, k, a, e, m] = sum over the images n of chunk s, rows i and columns j of
    dp[n, f, i, j] * xpk[n, g*K + k, i*sh + a*dh, colph[e], coloff[e] + j], f = g*Fg + fb*PF + m,
    with dp passed as (N, F*Ho*Wv) and xpk as (N*C, R*P*J): the kernel takes 1-D rows of 2-D arrays
    (with rows reshaped inside it, LLVM left the lane loop scalar).

    For few input channels per group (lenet, cs231n's first layer), too few to fill a vector: the
    vectors run along the output columns j instead, which dout and the packed input both hold
    contiguously. dp's rows are whole vectors long (zero-padded by the caller where the output rows are
    not). Each task owns PF output channels of one input channel and one chunk of nchunk images, and
    goes through the kernel rows and blocks of pe (4 or 5) kernel columns with a PF x pe tile of vectors in
    registers; its lanes are added in order at the end. Channels and columns past a group's last are
    clamped to it: computed again, never stored."""
    N = dp.shape[0]
    S, G, nfb, K, KH, KW, _ = part.shape
    C = G * K
    Fg = F // G
    neb = (KW + pe - 1) // pe
    njc = Wv // vw
    plane = Ho * Wv
    ntasks = S * G * nfb * K
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                k = task % K
                r = task // K
                fb = r % nfb
                r //= nfb
                g = r % G
                s = r // G
                acc = numba.carray(stack_empty(ACC_DWP, xpk.dtype), (PF * pe, vw))
                sums = numba.carray(stack_empty(ACC_DWP, xpk.dtype), (PF * pe,))
                f0 = g * Fg + fb * PF
                fl = g * Fg + min(Fg - 1, fb * PF + PF - 1)  # the last channel of the block in the group
                f1 = np.uint64((min(f0 + 1, fl) - f0) * plane)
                f2 = np.uint64((min(f0 + 2, fl) - f0) * plane)
                f3 = np.uint64((min(f0 + 3, fl) - f0) * plane)
                for a in range(KH):
                    for eb in range(neb):
                        e0 = eb * pe
                        e1, e2 = min(e0 + 1, KW - 1), min(e0 + 2, KW - 1)
                        e3, e4 = min(e0 + 3, KW - 1), min(e0 + 4, KW - 1)
                        cb = colph[e0] * J + coloff[e0]  # where tap e0's column 0 lies in a packed row
                        c1 = np.uint64(colph[e1] * J + coloff[e1] - cb)
                        c2 = np.uint64(colph[e2] * J + coloff[e2] - cb)
                        c3 = np.uint64(colph[e3] * J + coloff[e3] - cb)
                        c4 = np.uint64(colph[e4] * J + coloff[e4] - cb)
                        for u in range(PF * pe):
                            for t in range(vw):
                                acc[u, t] = 0
                        for n in range(s * nchunk, min(N, s * nchunk + nchunk)):
                            xk = xpk[n * C + g * K + k]
                            dn = dp[n]
                            for i in range(Ho):
                                xr = (i * sh + a * dh) * P * J + cb
                                dr = f0 * plane + i * Wv
                                for jc in range(njc):
                                    bx, bd = np.uint64(xr + jc * vw), np.uint64(dr + jc * vw)
                                    if pe == 4:  # a constant: one of the two is compiled
                                        _dwp_step(vw, xk, dn, acc, bx, bd, c1, c2, c3, f1, f2, f3)
                                    else:
                                        _dwp_step5(vw, xk, dn, acc, bx, bd, c1, c2, c3, c4, f1, f2, f3)
                        # the lanes' sums over the whole tile first: indexing the tile with the runtime
                        # bounds below kept it out of registers
                        for u in range(PF * pe):
                            total = acc[u, 0]
                            for t in range(1, vw):
                                total += acc[u, t]
                            sums[u] = total
                        out = part[s, g, fb, k, a]
                        for m in range(min(PF, Fg - fb * PF)):
                            for u in range(min(pe, KW - e0)):
                                out[e0 + u, m] = sums[m * pe + u]


@kernel
def _dwp_f32(dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr):
    _dwp_tiles(16, 4, dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr)


@kernel
def _dwp_f64(dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr):
    _dwp_tiles(8, 4, dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr)


@kernel
def _dwp5_f32(dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr):
    _dwp_tiles(16, 5, dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr)


# (kernel, lanes) by dtype and by kernel columns per tile. float32 takes 5 where that computes fewer
# columns than 4 (kernel widths 5, 9, 10, ...): lenet's dw 1.3x faster. In float64 the 5-column tile
# was no faster (20 accumulators and 9 operands fill the 32 vector registers).
_DWP = {(np.dtype(np.float32), 4): (_dwp_f32, 16), (np.dtype(np.float64), 4): (_dwp_f64, 8),
        (np.dtype(np.float32), 5): (_dwp5_f32, 16)}


def _conv_dw_pixels(dout: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray | None:
    """dw by _dwp_tiles; None where zero-padded dout rows would meet a non-finite input (0 * inf
    terms that naive lacks)."""
    dtype = x.dtype
    pe = 5 if (dtype, 5) in _DWP and -(-g.KW // 5) * 5 < -(-g.KW // 4) * 4 else 4
    fn, vw = _DWP[dtype, pe]
    Wv = -(-g.Wo // vw) * vw
    if Wv != g.Wo:
        if not np.isfinite(x).all():
            return None
        # dout's rows zero-padded to whole vectors (the input's own copy is "packed")
        dp = _packed_input(dout, g.Ho, Wv, 0, 0, 1, "dout").reshape(g.N, g.F, g.Ho, Wv)
    else:
        dp = np.ascontiguousarray(dout)
    colph, coloff = _tap_columns(g.KW, g.dw, g.sw)
    rows = (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1
    xpk = _packed_input(x, rows, Wv + int(coloff[-1]), g.pt, g.pl, g.sw)
    _, _, R, P, J = xpk.shape
    # Images per chunk: one channel's packed input and PF channels of dout within about 1 MiB (half of
    # this machine's L2), as the chunk is read again for every kernel row and column block. Set by the
    # shapes alone: the order of the sums does not depend on the thread count.
    # Chunks of equal size: a short last chunk would leave its tasks' thread idle.
    per_image = (R * P * J + PF * g.Ho * Wv) * dtype.itemsize
    S = -(-g.N // max(1, (1 << 20) // per_image))
    nchunk = -(-g.N // S)
    nfb = -(-g.Fg // PF)
    part = np.zeros((S, g.groups, nfb, g.Cg, g.KH, g.KW, PF), dtype)
    launch(fn, dp.reshape(g.N, -1), xpk.reshape(g.N * g.C, -1), part, g.sh, g.dh, colph, coloff, nchunk,
           g.F, g.Ho, Wv, P, J, counter())
    dw = part.sum(axis=0) if S > 1 else part[0]
    # (g, fb, k, a, e, m) -> (g, fb, m, k, a, e) -> (F, Cg, KH, KW)
    dw = dw.transpose(0, 1, 5, 2, 3, 4).reshape(g.groups, nfb * PF, g.Cg, g.KH, g.KW)[:, : g.Fg]
    return np.ascontiguousarray(dw.reshape(g.F, g.Cg, g.KH, g.KW))


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


@kernel
def _dwc_f32(dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr):
    _dwc_tiles(16, 16, dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr)


@kernel
def _dwc_f64(dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr):
    _dwc_tiles(8, 16, dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr)


@kernel
def _dwc_f64_wide(dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr):
    _dwc_tiles(16, 8, dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr)


@kernel
def _dwc_f32_32x8(dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr):
    _dwc_tiles(32, 8, dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr)


@kernel
def _dwc_f32_32x12(dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr):
    _dwc_tiles(32, 12, dout, xT, dwt, sh, dh, colph, coloff, nchunk, mper, Ho, Wo, ctr)


# (kernel, input channels per tile (the vector), output channels per tile, speed), widest vector first: a
# conv takes the widest vector its input channels per group fill, and of the tiles with that vector the
# one that computes the fewest padded output channels per unit of speed. float64's 16 x 8 tile needs 2
# vector loads and 8 broadcasts per 16 FMAs where 8 x 16 needs 1 and 16; it was 1.1-1.4x faster on
# seed001, vgg, res, down and pw, with the same sums in the same order (12 x 16 and 8 x 24, 0.9-1.0x of
# it). float32's 32 x 8 and 32 x 12 tiles against 16 x 16 (/tmp/exp/abdwt.py, medians of per-round
# ratios): 1.25-1.36x and 1.23-1.53x on vgg, res, down and pw (1.3-1.6x before 12's padding), which
# LLVM's own loop made 1.4-2.6x slower before the loop was written in LLVM IR (tile_sums_rows).
_DWC = {np.dtype(np.float32): ((_dwc_f32_32x8, 32, 8, 1.0), (_dwc_f32_32x12, 32, 12, 1.1),
                               (_dwc_f32, 16, 16, 1.0)),
        np.dtype(np.float64): ((_dwc_f64_wide, 16, 8, 1.0), (_dwc_f64, 8, 16, 1.0))}


@functools.lru_cache(maxsize=256)
def _dwc_tiling(Cg: int, Fg: int, dtype: np.dtype) -> tuple | None:
    """(kernel, kv, fw): the channel-vector dw tile for Cg input and Fg output channels per group, or
    None if Cg fills no tile's vector."""
    tiles = _DWC[np.dtype(dtype)]
    kv = next((t[1] for t in tiles if Cg >= t[1]), None)
    if kv is None:
        return None
    best = min((t for t in tiles if t[1] == kv), key=lambda t: -(-Fg // t[2]) * t[2] / t[3])
    return best[:3]


@inline
def _pwdw_tiles(kv, fw, dout, x, dwt, db, buf, nchunk, kper, ctr):
    """dwt[g, mb, kb, m, t] = sum_{n, p} dout[n, g*Fg + f, p] * x[n, g*Cg + kb*kv + t, p] for a pointwise
    conv (x as (N, C, P)), f = min(mb*fw + m, Fg - 1), x's channels past Cg read as zeros: _dwc_tiles
    without the separate transposing pass.

    Tasks own blocks of input channels (kper blocks, every output channel), not of output channels:
    each task copies its own channels of a chunk of images into channel-innermost blocks in its
    thread's row of buf, where its tiles then read them, in cache. The sums run in the order of
    _dwc_tiles', in the same chunks of images.

    db (unless empty): db[f] = sum_n _row_sum(dout[n, f, :P]), in image order, as _channel_sums sums it;
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
                            db[f] += _row_sum(df, (n * F + f) * S, P)


@kernel
def _pwdw_f32(dout, x, dwt, db, buf, nchunk, kper, ctr):
    _pwdw_tiles(16, 16, dout, x, dwt, db, buf, nchunk, kper, ctr)


@kernel
def _pwdw_f64(dout, x, dwt, db, buf, nchunk, kper, ctr):
    _pwdw_tiles(16, 8, dout, x, dwt, db, buf, nchunk, kper, ctr)


@kernel
def _pwdw_f32_32x8(dout, x, dwt, db, buf, nchunk, kper, ctr):
    _pwdw_tiles(32, 8, dout, x, dwt, db, buf, nchunk, kper, ctr)


@kernel
def _pwdw_f32_32x12(dout, x, dwt, db, buf, nchunk, kper, ctr):
    _pwdw_tiles(32, 12, dout, x, dwt, db, buf, nchunk, kper, ctr)


_PWDW = {_dwc_f32: _pwdw_f32, _dwc_f32_32x8: _pwdw_f32_32x8, _dwc_f32_32x12: _pwdw_f32_32x12,
         _dwc_f64_wide: _pwdw_f64}


@kernel
def _channels_last(src, dst, ctr):
    """dst[n, g, a, b, k] = src[n, g, k, a, b] for k < K, and 0 for K <= k < Kp (tiles padded with
    zero channels). dst may be a strided view. One task per (n, g, a) owns dst[n, g, a]."""
    N, G, K, A, B = src.shape
    Kp = dst.shape[4]
    ntasks = N * G * A
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                a = task % A
                r = task // A
                g = r % G
                n = r // G
                out = dst[n, g, a]
                for b in range(B):
                    for k in range(K, Kp):
                        out[b, k] = 0
                for k in range(K):
                    row = src[n, g, k, a]
                    for b in range(B):
                        out[b, k] = row[b]


TB = 32  # side of the square tiles the channel-block copies transpose through (at least any block width)
TB2 = TB * TB  # their elements (a literal for stack_empty)


@kernel
def _pack_blocks(src, dst, row0, col0, sw, ctr):
    """dst[n, g, b, r, p, j, t] = src[n, g*K + b*bw + t, r - row0, j*sw + p - col0], zero outside src
    and for channels b*bw + t >= K: _pack and the move of channels innermost in one pass. One task per
    (n, g, b, r) owns dst[n, g, b, r]. Through TB x TB tiles on the stack: rows read and written as
    contiguous runs (element by element, the strided stores ran at half the speed of a copy; 8 x 8
    blocks transposed in registers, transpose8, at 0.82-0.92x of the tiles on seed001, vgg and res)."""
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


def _dout_channels_last(dout: np.ndarray, g: ConvGeometry, mv: int) -> np.ndarray:
    """dout as (N, Ho, Wo, groups * nmb * mv): output channels contiguous, each group zero-filled to
    whole tiles of mv. A parallel kernel: NumPy's transposing copy runs on one thread (this made dw
    1.0-1.1x faster on vgg, res and down)."""
    nmb = -(-g.Fg // mv)
    shape = (g.N, g.Ho, g.Wo, g.groups, nmb * mv)
    dT = scratch("dout", math.prod(shape), dout.dtype).reshape(shape)
    launch(_channels_last, dout.reshape(g.N, g.groups, g.Fg, g.Ho, g.Wo), dT.transpose(0, 3, 1, 2, 4),
           counter())
    return dT.reshape(g.N, g.Ho, g.Wo, g.groups * nmb * mv)


L1_SETS, LINE = 64, 64  # an L1 data cache's sets and line bytes (x86 cores of the last decade)
ROWS_PER_SET = 4  # at most this many of a tile's dout rows may start in one set (of 8 or 12 ways)


def _row_stride(plane: int, itemsize: int, rows: int) -> int:
    """The least row length >= plane elements at which rows rows laid end to end start in enough L1
    sets (at most ROWS_PER_SET in one) not to evict one another when read side by side. With 4 KiB
    rows (vgg's 32x32 plane in float32) all 16 rows of the float32 dw tile fall into one set."""
    stride = plane
    while np.bincount((np.arange(rows) * stride * itemsize // LINE) % L1_SETS).max() > ROWS_PER_SET:
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


def _conv_dw_pointwise(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, want_db: bool = False
                       ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(dw, db) of a flat pointwise conv by _pwdw_tiles (db None unless want_db), or None where it has
    no kernel for the tile."""
    fn, kv, mb = _dwc_tiling(g.Cg, g.Fg, x.dtype)
    if fn not in _PWDW:
        return None
    P = g.Wo
    nkb, nmb = -(-g.Cg // kv), -(-g.Fg // mb)
    dc = _dout_rows(dout, mb)
    dwt = np.empty((g.groups, nmb, nkb, mb, kv), x.dtype)
    kper = _blocks_per_task(nkb, g.groups)
    nchunk = _dw_chunk(g, P, nmb * mb, nkb * kv, x.dtype, PW_DW_CHUNK_BYTES)
    buf = _thread_rows("pwdw", nchunk * kper * P * kv, x.dtype)
    db = np.empty(g.F if want_db else 0, x.dtype)
    launch(_PWDW[fn], dc, np.ascontiguousarray(x).reshape(g.N, g.C, P), dwt, db, buf, nchunk, kper,
           counter())
    dw = dwt.transpose(0, 1, 3, 2, 4).reshape(g.groups, nmb * mb, nkb * kv)
    return np.ascontiguousarray(dw[:, : g.Fg, : g.Cg].reshape(g.F, g.Cg, 1, 1)), db if want_db else None


DW_TASKS_PER_THREAD = 1  # channel-vector dw tasks per thread (see _blocks_per_task)


def _blocks_per_task(nblocks: int, groups: int) -> int:
    """Channel blocks per task of the channel-vector dw kernels, whose tasks own nblocks blocks of each
    group: DW_TASKS_PER_THREAD tasks per thread over all groups. Every task reads every chunk of the
    batch, so fewer tasks read less: one per thread ran 1.03-1.2x faster than four per thread on the
    suite's layers in both dtypes (under numba's static split), and 2 or 4 per thread were still slower
    on minima with the tasks claimed, though more tasks would let a thread on a loaded core take fewer."""
    ntask = max(1, min(nblocks, -(-DW_TASKS_PER_THREAD * get_num_threads() // groups)))
    return -(-nblocks // ntask)
DW_CHUNK_BYTES = 1 << 20  # a chunk of images of the channel-vector dw: about half of this machine's L2
# The pointwise dw keeps only its own channels of a chunk's input in cache, so its chunks can be larger:
# 2 MiB (2 images of pw) ran 1.02-1.08x faster than 1 MiB on four pointwise shapes, 4 MiB no better.
PW_DW_CHUNK_BYTES = 2 << 20


def _dw_chunk(g: ConvGeometry, xplane: int, fpad: int, cpad: int, dtype: np.dtype,
              budget: int | None = None) -> int:
    """Images per chunk of the channel-vector dw: the chunk's input (all channels, padded plane xplane)
    and dout within budget bytes (DW_CHUNK_BYTES by default); not the task's share of them, which
    depends on the thread count: the chunks set the order of the sums."""
    per_image = (g.Ho * g.Wo * fpad + xplane * cpad) * dtype.itemsize
    return max(1, (DW_CHUNK_BYTES if budget is None else budget) // per_image)


def _conv_dw_channels(dout: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    dtype = x.dtype
    fn, kv, mb = _dwc_tiling(g.Cg, g.Fg, dtype)
    colph, coloff = _tap_columns(g.KW, g.dw, g.sw)
    rows = (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1
    R, P, J = rows, g.sw, g.Wo + int(coloff[-1])
    nkb = -(-g.Cg // kv)
    # the input padded, its columns split by phase as _pack does, and in channel blocks
    shape = (g.N, g.groups, nkb, R, P, J, kv)
    xT = scratch("packed_t", math.prod(shape), dtype).reshape(shape)
    launch(_pack_blocks, x, xT, g.pt, g.pl, g.sw, counter())
    nmb = -(-g.Fg // mb)
    dc = _dout_rows(dout, mb)
    dwt = np.empty((g.groups, nmb, nkb, g.KH, g.KW, mb, kv), dtype)
    mper = _blocks_per_task(nmb, g.groups)
    nchunk = _dw_chunk(g, R * P * J, nmb * mb, nkb * kv, dtype)
    launch(fn, dc, xT, dwt, g.sh, g.dh, colph, coloff, nchunk, mper, g.Ho, g.Wo, counter())
    # (g, mb, kb, a, e, m, t) -> (g, mb, m, kb, t, a, e) -> (F, Cg, KH, KW)
    dw = dwt.transpose(0, 1, 5, 2, 6, 3, 4).reshape(g.groups, nmb * mb, nkb * kv, g.KH, g.KW)
    return np.ascontiguousarray(dw[:, : g.Fg, : g.Cg].reshape(g.F, g.Cg, g.KH, g.KW))


def _conv_dw(dout: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Vectors of input channels when there are enough of them; else vectors of output columns; else
    (a padded dout row would meet a non-finite input) tiles over taps."""
    if _dwc_tiling(g.Cg, g.Fg, x.dtype) is not None:
        return _conv_dw_channels(dout, x, g)
    dw = _conv_dw_pixels(dout, x, g)
    if dw is not None:
        return dw
    dtype = x.dtype
    fn, mv = _DW[dtype]
    colph, coloff = _tap_columns(g.KW, g.dw, g.sw)
    rows = (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1
    cols = g.Wo + int(coloff[-1])
    xpk = _packed_input(x, rows, cols, g.pt, g.pl, g.sw)
    _, _, R, P, J = xpk.shape
    # Where tap q = (k, kh, kw) of group gi starts in one image's flattened packed input.
    k = np.arange(g.Cg)[:, None, None]
    a = np.arange(g.KH)[None, :, None]
    offq = (k * R + a * g.dh) * (P * J) + (colph * J + coloff)[None, None, :]
    Q = g.Cg * g.KH * g.KW
    nq = -(-Q // QB) * QB
    offq = np.concatenate([offq.reshape(-1), np.zeros(nq - Q, offq.dtype)])  # padding taps: discarded
    offq = (offq[None, :] + (np.arange(g.groups) * g.Cg * R * P * J)[:, None]).astype(np.intp)
    nmb = -(-g.Fg // mv)
    dT = _dout_channels_last(dout, g, mv)
    dwt = np.empty((g.groups, nmb, nq, mv), dtype)
    launch(fn, dT, xpk, offq, dwt, g.sh, counter())
    dw = dwt[:, :, :Q, :].transpose(0, 1, 3, 2).reshape(g.groups, nmb * mv, Q)[:, : g.Fg]
    return np.ascontiguousarray(dw.reshape(g.F, g.Cg, g.KH, g.KW))


@_quiet
def conv2d_backward_dx(dout: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    if g.pointwise and dout.dtype in _PANELS:  # the same terms as naive, even with non-finite w
        dx = _pointwise_panels(dout.reshape(g.N, g.F, g.H * g.W), transposed_kernel(w, g), g.groups,
                               np.zeros(g.C, dout.dtype))
        return dx.reshape(g.N, g.C, g.H, g.W)
    flat = _flat_pointwise(g)
    if flat is not None:
        return _conv_dx(dout.reshape(g.N, g.F, 1, g.H * g.W), w, flat).reshape(g.N, g.C, g.H, g.W)
    dx = _conv_dx_fold(dout, w, g)
    return _conv_dx(dout, w, g) if dx is None else dx


def _dw_and_db(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, want_db: bool
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """(dw, db): a pointwise conv, flattened, by _pwdw_tiles, which sums db too where want_db (else db is
    None); any other conv by _conv_dw, db None."""
    flat = _flat_pointwise(g)
    if flat is not None:
        dout, x, g = dout.reshape(g.N, g.F, 1, g.H * g.W), x.reshape(g.N, g.C, 1, g.H * g.W), flat
    if g.pointwise and g.Ho == 1 and _dwc_tiling(g.Cg, g.Fg, x.dtype) is not None:
        dw_db = _conv_dw_pointwise(dout, x, g, want_db)
        if dw_db is not None:
            return dw_db
    return _conv_dw(dout, x, g), None


@_quiet
def conv2d_backward_dw(dout: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    return _dw_and_db(dout, x, g, False)[0]


@_quiet
def conv2d_backward_dw_db(dout: np.ndarray, x: np.ndarray, g: ConvGeometry
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(dw, db): for a pointwise conv the dw kernel sums db from dout while it has it in cache, instead of
    the separate pass through dout's 13 MB (pw float64: dw + db 1.01-1.05x, medians of 25 interleaved
    rounds in six processes); else conv2d_backward_dw and conv2d_bias_grad."""
    dw, db = _dw_and_db(dout, x, g, True)
    return dw, conv2d_bias_grad(dout) if db is None else db


@kernel
def _channel_sums(dout, db, ctr):
    """db[f] = sum of dout[:, f]: each image's plane summed (vectorized), those sums added in image
    order. One task per channel: the order does not depend on the thread count."""
    N, F = dout.shape[0], dout.shape[1]
    S = dout[0, 0].size
    df = dout.reshape(-1)
    ntasks = F
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for f in range(cur[0], cur[1]):
                total = dout.dtype.type(0)
                for n in range(N):
                    total += _row_sum(df, (n * F + f) * S, S)
                db[f] = total


def conv2d_bias_grad(dout: np.ndarray) -> np.ndarray:
    """db on the cores numba uses: NumPy's sum over (0, 2, 3) runs on one, 0.5-1.0 ms on the suite's
    larger layers against 0.25-0.55 ms here. Below 64K elements NumPy's (the launch costs more)."""
    if dout.size < 1 << 16:
        return sum_bias_grad(dout)
    db = np.empty(dout.shape[1], dout.dtype)
    launch(_channel_sums, np.ascontiguousarray(dout), db, counter())
    return db


conv2d_backward = conv_backward(conv2d_backward_dx, conv2d_backward_dw, conv2d_bias_grad,
                                conv2d_backward_dw_db)
