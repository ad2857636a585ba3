"""conv2d as im2col + GEMM (notes 001 and 004, the Caffe approach), and col2im for the gradient.

The unfolded matrix of a chunk of B images is laid out as cols[g, k, b, p] with k = (c, kh, kw) and
p = (oh, ow): for each group one GEMM of (Fg, K) @ (K, B*P) gives the forward, (Fg, B*P) @ (B*P, K) the
weight gradient and (K, Fg) @ (Fg, B*P) the unfolded input gradient. Wide GEMMs keep BLAS efficient for
small images; the price is one transposing copy of each output chunk into NCHW.

The batch is processed in chunks so that the memory used beyond the inputs and the results stays within
max(64 MiB, bytes of the inputs and outputs). The unfold and fold loops are numba kernels (race-free: each
task owns its rows of cols, or its (image, channel) plane of dx); BLAS is only ever called from Python,
never inside a parallel loop.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._params import ConvGeometry
from .._workspace import scratch
from ..jit._numba import kernel, launch

MIN_BUDGET = 64 << 20  # bytes


def _col_ranges(size: int, out: int, k: int, s: int, d: int, pad: int) -> np.ndarray:
    """(2, k): for tap t, the outputs o in [lo, hi) whose input index o*s + t*d - pad is inside [0, size)."""
    off = np.arange(k) * d - pad
    lo = np.clip(-(off // s), 0, out)
    hi = np.clip((size - 1 - off) // s + 1, lo, out)
    return np.stack([lo, hi]).astype(np.intp)


@kernel
def _im2col(x, cols, n0, sh, sw, dh, dw, pt, pl, KH, KW, Ho, Wo, ranges):
    """cols[g, (c, a, e), b, (i, j)] = x[n0 + b, g*Cg + c, i*sh + a*dh - pt, j*sw + e*dw - pl], or 0."""
    G, K, B, P = cols.shape
    Cg = K // (KH * KW)
    H = x.shape[2]
    for task in prange(G * Cg * KH * B):
        b = task % B
        r = task // B
        a = r % KH
        r //= KH
        c = r % Cg
        g = r // Cg
        plane = x[n0 + b, g * Cg + c]
        for e in range(KW):
            dst = cols[g, (c * KH + a) * KW + e, b]
            lo, hi = ranges[0, e], ranges[1, e]
            off = e * dw - pl
            for i in range(Ho):
                row = dst[i * Wo : i * Wo + Wo]
                ih = i * sh + a * dh - pt
                if ih < 0 or ih >= H:
                    row[:] = 0
                    continue
                # slices and loops from 0: the form LLVM vectorizes
                src = plane[ih, lo * sw + off :]
                row[:lo] = 0
                seg = row[lo:hi]
                for j in range(hi - lo):
                    seg[j] = src[j * sw]
                row[hi:] = 0


@kernel
def _col2im(dcols, dx, n0, sh, sw, dh, dw, pt, pl, KH, KW, Ho, Wo, ranges):
    """dx[n0 + b, g*Cg + c] = sum of dcols[g, (c, a, e), b, (i, j)] over the windows that read it."""
    G, K, B, P = dcols.shape
    Cg = K // (KH * KW)
    H = dx.shape[2]
    for task in prange(B * G * Cg):
        b = task // (G * Cg)
        gc = task % (G * Cg)
        g, c = gc // Cg, gc % Cg
        plane = dx[n0 + b, gc]
        plane[:, :] = 0
        for a in range(KH):
            for e in range(KW):
                src = dcols[g, (c * KH + a) * KW + e, b]
                lo, hi = ranges[0, e], ranges[1, e]
                off = e * dw - pl
                for i in range(Ho):
                    ih = i * sh + a * dh - pt
                    if ih < 0 or ih >= H:
                        continue
                    drow = plane[ih, lo * sw + off :]
                    srow = src[i * Wo + lo : i * Wo + hi]
                    for j in range(hi - lo):
                        drow[j * sw] += srow[j]


def _chunk(g: ConvGeometry, itemsize: int, fixed_bytes: int, copies: int) -> int:
    """Images per chunk: ``copies`` matrices of K x (B * P) within the memory budget."""
    budget = max(MIN_BUDGET, fixed_bytes)
    per_image = copies * g.Cg * g.groups * g.KH * g.KW * g.Ho * g.Wo * itemsize
    per_image += 2 * g.F * g.Ho * g.Wo * itemsize  # the GEMM result and the dout chunk copy
    return int(max(1, min(g.N, budget // max(1, per_image))))


def _unfold(x: np.ndarray, g: ConvGeometry, n0: int, B: int, ranges: np.ndarray,
            buf: np.ndarray) -> np.ndarray:
    """The unfolded matrix of images n0 .. n0 + B, written into (the start of) buf."""
    cols = buf[: g.groups * g.Cg * g.KH * g.KW * B * g.Ho * g.Wo]
    cols = cols.reshape(g.groups, g.Cg * g.KH * g.KW, B, g.Ho * g.Wo)
    launch(_im2col, x, cols, n0, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.KH, g.KW, g.Ho, g.Wo, ranges)
    return cols


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry) -> np.ndarray:
    out = np.empty((g.N, g.F, g.Ho, g.Wo), x.dtype)
    B = _chunk(g, x.itemsize, x.nbytes + out.nbytes, 1)
    ranges = _col_ranges(g.W, g.Wo, g.KW, g.sw, g.dw, g.pl)
    K, P = g.Cg * g.KH * g.KW, g.Ho * g.Wo
    wg = w.reshape(g.groups, g.Fg, K)
    out5 = out.reshape(g.N, g.groups, g.Fg, P)
    buf = scratch("cols", g.groups * K * B * P, x.dtype)
    for n0 in range(0, g.N, B):
        nb = min(B, g.N - n0)
        cols = _unfold(x, g, n0, nb, ranges, buf).reshape(g.groups, K, nb * P)
        res = scratch("gemm", g.groups * g.Fg * nb * P, x.dtype).reshape(g.groups, g.Fg, nb * P)
        np.matmul(wg, cols, out=res)  # one GEMM per group
        out5[n0 : n0 + nb] = res.reshape(g.groups, g.Fg, nb, P).transpose(2, 0, 1, 3)
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv2d_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, g: ConvGeometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dx = np.empty_like(x)
    dw = np.zeros((g.groups, g.Fg, g.Cg * g.KH * g.KW), x.dtype)
    B = _chunk(g, x.itemsize, x.nbytes + dout.nbytes + dx.nbytes, 1)
    ranges = _col_ranges(g.W, g.Wo, g.KW, g.sw, g.dw, g.pl)
    K, P = g.Cg * g.KH * g.KW, g.Ho * g.Wo
    wgT = w.reshape(g.groups, g.Fg, K).transpose(0, 2, 1)  # (groups, K, Fg), a view
    d5 = dout.reshape(g.N, g.groups, g.Fg, P)
    buf = scratch("cols", g.groups * K * B * P, x.dtype)
    for n0 in range(0, g.N, B):
        nb = min(B, g.N - n0)
        cols = _unfold(x, g, n0, nb, ranges, buf).reshape(g.groups, K, nb * P)
        dchunk = scratch("dout", g.groups * g.Fg * nb * P, x.dtype).reshape(g.groups, g.Fg, nb, P)
        dchunk[...] = d5[n0 : n0 + nb].transpose(1, 2, 0, 3)
        dchunk = dchunk.reshape(g.groups, g.Fg, nb * P)
        dw += np.matmul(dchunk, cols.transpose(0, 2, 1))  # (groups, Fg, K)
        # cols is not needed any more: its buffer takes the unfolded gradient
        dcols = np.matmul(wgT, dchunk, out=cols).reshape(g.groups, K, nb, P)
        launch(_col2im, dcols, dx, n0, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.KH, g.KW, g.Ho, g.Wo,
               ranges)
    db = dout.sum(axis=(0, 2, 3), dtype=dout.dtype)
    return dx, dw.reshape(g.F, g.Cg, g.KH, g.KW), db
