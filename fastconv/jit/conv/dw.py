"""The jit conv's dw: vectors of input channels where a group's input channels fill one (dw_chans), one
input channel per group (depthwise) by planes (dw_planes), else vectors of output columns
(``_dwp_tiles``), else (a zero-padded dout row would meet a non-finite input)
tiles over taps (``_dw_tiles``). Each task owns a block of dw, or a chunk of the batch whose partial sums
are added in a fixed order: dw is bitwise the same for any thread count.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import prange

from ..._geometry import flat_pointwise, input_rows, tap_columns
from ..._params import ConvGeometry
from ..._workspace import scratch
from .._numba import claims_next, claims_start, counter, inline, kernel, launch, stack_empty
from . import dw_planes
from .dw_chans import conv_dw_channels, conv_dw_pointwise
from .packing import packed_input
from .plan import DEFAULT, Plan
from .tiles import ACC, ACC_DWP, PF, QB, Tile, dw_chans_tile, dw_pixels_tile, dw_taps_tile
from .tunables import TUNABLES


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


@functools.cache
def taps_kernel(tile: Tile) -> Any:
    """The kernel of a dw_taps tile (QB taps x tile.cols output channels), made on first use."""
    mv = tile.cols

    def taps(dT, xpk, offq, dwt, sh, ctr):
        _dw_tiles(mv, dT, xpk, offq, dwt, sh, ctr)
    return kernel(taps, f"dw_taps_{tile.dtype}_{tile.rows}x{mv}")


@functools.cache
def pixels_kernel(tile: Tile) -> Any:
    """The kernel of a dw_pixels tile (PF output channels x tile.rows kernel columns, tile.cols lanes)."""
    vw, pe = tile.cols, tile.rows

    def pixels(dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr):
        _dwp_tiles(vw, pe, dp, xpk, part, sh, dh, colph, coloff, nchunk, F, Ho, Wv, P, J, ctr)
    return kernel(pixels, f"dw_pixels_{tile.dtype}_{pe}x{vw}")


def _dout_channels_last(dout: np.ndarray, g: ConvGeometry, mv: int) -> np.ndarray:
    """dout as (N, Ho, Wo, groups * nmb * mv): output channels contiguous, each group zero-filled to
    whole tiles of mv. A parallel kernel: NumPy's transposing copy runs on one thread."""
    nmb = -(-g.Fg // mv)
    shape = (g.N, g.Ho, g.Wo, g.groups, nmb * mv)
    dT = scratch("dout", math.prod(shape), dout.dtype).reshape(shape)
    launch(_channels_last, dout.reshape(g.N, g.groups, g.Fg, g.Ho, g.Wo), dT.transpose(0, 3, 1, 2, 4),
           counter())
    return dT.reshape(g.N, g.Ho, g.Wo, g.groups * nmb * mv)


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


def _conv_dw_pixels(dout: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray | None:
    """dw by _dwp_tiles; None where zero-padded dout rows would meet a non-finite input (0 * inf
    terms that naive lacks)."""
    dtype = x.dtype
    tile = dw_pixels_tile(g.KW, dtype)
    vw = tile.cols
    Wv = -(-g.Wo // vw) * vw
    if Wv != g.Wo:
        if not np.isfinite(x).all():
            return None
        # dout's rows zero-padded to whole vectors (the input's own copy is "packed")
        dp = packed_input(dout, g.Ho, Wv, 0, 0, 1, "dout").reshape(g.N, g.F, g.Ho, Wv)
    else:
        dp = np.ascontiguousarray(dout)
    colph, coloff = tap_columns(g.KW, g.dw, g.sw)
    rows = input_rows(g)
    xpk = packed_input(x, rows, Wv + int(coloff[-1]), g.pt, g.pl, g.sw)
    _, _, R, P, J = xpk.shape
    # Images per chunk: one channel's packed input and PF channels of dout within
    # TUNABLES.dw_pixels_chunk_bytes, as the chunk is read again for every kernel row and column block.
    # Set by the shapes alone: the order of the sums does not depend on the thread count.
    # Chunks of equal size: a short last chunk would leave its tasks' thread idle.
    per_image = (R * P * J + PF * g.Ho * Wv) * dtype.itemsize
    S = -(-g.N // max(1, TUNABLES.dw_pixels_chunk_bytes // per_image))
    nchunk = -(-g.N // S)
    nfb = -(-g.Fg // PF)
    part = np.zeros((S, g.groups, nfb, g.Cg, g.KH, g.KW, PF), dtype)
    launch(pixels_kernel(tile), dp.reshape(g.N, -1), xpk.reshape(g.N * g.C, -1), part, g.sh, g.dh, colph,
           coloff, nchunk,
           g.F, g.Ho, Wv, P, J, counter())
    dw = part.sum(axis=0) if S > 1 else part[0]
    # (g, fb, k, a, e, m) -> (g, fb, m, k, a, e) -> (F, Cg, KH, KW)
    dw = dw.transpose(0, 1, 5, 2, 3, 4).reshape(g.groups, nfb * PF, g.Cg, g.KH, g.KW)[:, : g.Fg]
    return np.ascontiguousarray(dw.reshape(g.F, g.Cg, g.KH, g.KW))


def _conv_dw(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, plan: Plan) -> np.ndarray:
    """Vectors of input channels when there are enough of them; one input channel per group (depthwise):
    dw_planes; else vectors of output columns; else (a padded dout row would meet a non-finite input)
    tiles over taps."""
    tile = plan.dw_tile or dw_chans_tile(g.Cg, g.Fg, x.dtype)
    if tile is not None:
        return conv_dw_channels(dout, x, g, tile)
    if dw_planes.applies(g):
        return dw_planes.conv_dw_planes(dout, x, g)
    dw = _conv_dw_pixels(dout, x, g)
    if dw is not None:
        return dw
    dtype = x.dtype
    tile = dw_taps_tile(dtype)
    mv = tile.cols
    colph, coloff = tap_columns(g.KW, g.dw, g.sw)
    rows = input_rows(g)
    cols = g.Wo + int(coloff[-1])
    xpk = packed_input(x, rows, cols, g.pt, g.pl, g.sw)
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
    launch(taps_kernel(tile), dT, xpk, offq, dwt, g.sh, counter())
    dw = dwt[:, :, :Q, :].transpose(0, 1, 3, 2).reshape(g.groups, nmb * mv, Q)[:, : g.Fg]
    return np.ascontiguousarray(dw.reshape(g.F, g.Cg, g.KH, g.KW))


def dw_and_db(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, want_db: bool, plan: Plan = DEFAULT
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """(dw, db): a pointwise conv, flattened, by _pwdw_tiles, which sums db too where want_db (else db is
    None); any other conv by _conv_dw, db None."""
    flat = flat_pointwise(g)
    if flat is not None:
        dout, x, g = dout.reshape(g.N, g.F, 1, g.H * g.W), x.reshape(g.N, g.C, 1, g.H * g.W), flat
    tile = plan.dw_tile or dw_chans_tile(g.Cg, g.Fg, x.dtype)
    if g.pointwise and g.Ho == 1 and tile is not None and "pointwise" in tile.variants:
        return conv_dw_pointwise(dout, x, g, tile, want_db)
    return _conv_dw(dout, x, g, plan), None
