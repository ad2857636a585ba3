"""The forward-style register tiles: output rows of a conv computed as tiles of output channels x columns
held in vector registers while the kernel runs through the taps. The forward, the stride-1 phases of dx
and their fused variants all run on them.

Each parallel task owns one output row of ``tile.rows`` output channels and keeps the tile in registers
while it loops over input channels and taps (``_fwd_tiles``). The tile's loop is written in LLVM IR
(``_numba.tile_sums_at``): the same sums as the Python loop, bitwise, with the accumulators held in
registers whatever the tile's shape. Variants (``tiles.Tile.variants``): ``fwd``; ``overlap``, reading
the input in place, its last partial chunk overlapping the one before; ``packed``, packing each image in
the task that computes it; ``phases``, every phase of a strided dx in one launch. ``tile_kernel`` makes
each from its tile record.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from numba import prange

from ..._threads import get_num_threads
from .._numba import claims_next, claims_start, counter, inline, kernel, launch, stack_empty, tile_sums_at
from .packing import offsets, pack_plane, packed_input, packed_weights, tap_offsets, thread_rows
from .tiles import ACC, Tile
from .tunables import TUNABLES


@inline
def channel_tile_sums(fb, vw, acc, xn, wf, offs, q0, q1, base):
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
    registers while it goes through the taps (channel_tile_sums), whose offsets come from a table."""
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
                    channel_tile_sums(fb, vw, acc, xn, wf, offs, 0, Q, np.uint64((r0 + i * sh) * row + j0))
                    _store_tile(acc, bias, out, n, g * Mg + b * fb, mcount, i, j0, min(vw, Wo - j0))


@inline
def _packed_tiles(fb, vw, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
    """_fwd_tiles' sums (without overlap) with packing.pack fused in: one task per image, which packs the
    image (every channel) into its thread's row of buf as one image of pack's result, (C, R, sw, J),
    then runs all of the image's tiles, output row by output row with the output-channel blocks
    innermost, while the packed image is in its core's cache. No packing pass over the whole batch and
    one launch less: the same sums."""
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
                    pack_plane(x[n, c], img[c], row0, col0, sw)
                acc = numba.carray(stack_empty(ACC, x.dtype), (fb, vw))
                for g in range(G):
                    offs = offq[g]
                    for i in range(Ho):
                        for b in range(nb):
                            mcount = min(fb, Mg - b * fb)
                            wf = wpk[g, b].reshape(-1)
                            for ch in range(nch):
                                j0 = ch * vw
                                channel_tile_sums(fb, vw, acc, bf, wf, offs, 0, Q,
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
    is read once rather than once per phase (phase by phase, the shortest phases ran slowest)."""
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
                        channel_tile_sums(fb, vw, acc, xn, wf, offs, q0, q1, np.uint64((r0 + i) * row + j0))
                        tmax = min(vw, nw - j0)
                        for m in range(mcount):
                            drow = dx[n, g * Mg + b * fb + m, h]
                            for t in range(tmax):
                                drow[w0 + (j0 + t) * sw] = acc[m, t]


@functools.cache
def tile_kernel(tile: Tile, variant: str) -> Any:
    """The kernel of one variant of a channels or rows tile, made (not compiled) on first use. The tile's
    shape reaches the kernel body as constants of its closure, which numba's disk cache keys each
    compiled kernel by: a kernel is never replayed for another tile."""
    if variant not in tile.variants or tile.family not in ("channels", "rows"):
        raise LookupError(f"the {tile} tile has no {variant!r} kernel")
    fb, vw = tile.rows, tile.cols
    name = f"{variant if tile.family == 'channels' else 'rows'}_{tile.dtype}_{fb}x{vw}"
    if tile.family == "rows":
        def rows(xpk, wpk, offq, bias, out, r0, sh, ctr):
            _row_tiles(fb, vw, xpk, wpk, offq, bias, out, r0, sh, ctr)
        return kernel(rows, name)
    if variant in ("fwd", "overlap"):
        overlap = variant == "overlap"

        def fwd(xpk, wpk, offq, bias, out, r0, sh, ctr):
            _fwd_tiles(fb, vw, xpk, wpk, offq, bias, out, r0, sh, overlap, ctr)
        return kernel(fwd, name)
    if variant == "packed":
        def packed(x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr):
            _packed_tiles(fb, vw, x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, R, J, ctr)
        return kernel(packed, name)
    if variant == "phases":
        def phases(src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr):
            _phase_tiles(fb, vw, src, wcat, ocat, pp, dx, sh, sw, nhmax, ctr)
        return kernel(phases, name)
    raise LookupError(f"no kernel body for the {variant!r} variant here")  # fold: see dx


def packs_per_image(tile: Tile, images: int, forced: bool | None = None) -> bool:
    """Whether a tile conv over this many images packs each image in its task (the tile's packed
    variant): from TUNABLES.packed_images_per_thread images per thread, unless forced (a Plan's)."""
    if "packed" not in tile.variants:
        return False
    if forced is not None:
        return forced
    return images >= TUNABLES.packed_images_per_thread * get_num_threads()


def run_packed_tiles(tile: Tile, x, wt, groups, bias, out, row0, col0, sw, r0, sh, dh, rows, cols,
                     colph, coloff) -> None:
    """run_tiles with pack fused in (the packed variant): x unpacked, packed image by image into rows x
    (sw phases x cols columns) with pack's row0, col0 and sw."""
    fb = tile.block
    wpk = packed_weights(wt, groups, fb)
    wpk = wpk.reshape(wpk.shape[0], wpk.shape[1], -1, fb)
    C = x.shape[1]
    offq = offsets(C, rows, sw, cols, groups, wt.shape[2], dh, tuple(colph.tolist()),
                   tuple(coloff.tolist()))
    buf = thread_rows("packed_image", C * rows * sw * cols, x.dtype)
    launch(tile_kernel(tile, "packed"), x, wpk, offq, bias, out, buf, row0, col0, sw, r0, sh, rows, cols,
           counter())


def in_place(x: np.ndarray, rows: int, reach: int, row0: int, col0: int, sw: int, width: int, vw: int,
             has_overlap: bool) -> bool:
    """Whether the tiles can read x itself (see tile_source)."""
    H, W = x.shape[2], x.shape[3]
    return row0 == col0 == 0 and sw == 1 and rows <= H and reach <= W and width >= 4 * vw and has_overlap


def tile_source(x: np.ndarray, rows: int, cols: int, reach: int, row0: int, col0: int, sw: int,
                width: int, vw: int, has_overlap: bool) -> tuple[np.ndarray, bool]:
    """What _fwd_tiles reads: x itself, viewed as (N, C, H, 1, W), when no padding is needed (row0 =
    col0 = 0, no column phases, the taps stay within rows and within reach columns) and the output rows
    are at least four tiles wide (the last tile then overlaps the one before instead of reading past the
    row; narrower rows ran slower with the overlapping tile); else the padded, phase-split copy with cols
    columns. With it, whether x itself is read. Only tiles with an overlap variant (has_overlap) read in
    place."""
    N, C, H, W = x.shape
    if in_place(x, rows, reach, row0, col0, sw, width, vw, has_overlap):
        return x.reshape(N, C, H, 1, W), True
    return packed_input(x, rows, cols, row0, col0, sw), False


def run_tiles(tile: Tile, xpk, wt, groups, bias, out, sh, dh, colph, coloff, r0=0, overlap=False) -> None:
    """The fwd (or overlap) kernel of tile over the packed input xpk (see _fwd_tiles)."""
    fb = tile.block
    wpk = packed_weights(wt, groups, fb)
    wpk = wpk.reshape(wpk.shape[0], wpk.shape[1], -1, fb)  # (groups, blocks, taps, fb)
    offq = tap_offsets(xpk, groups, wt.shape[2], dh, colph, coloff)
    launch(tile_kernel(tile, "overlap" if overlap else "fwd"), xpk, wpk, offq, bias, out, r0, sh,
           counter())
