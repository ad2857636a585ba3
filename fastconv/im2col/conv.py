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
from .._quiet import quiet as _quiet
from .._workspace import fresh, scratch
from ..jit._numba import kernel, launch
from ..jit.conv import _packed_input, _tap_columns

MIN_BUDGET = 64 << 20  # bytes


@kernel
def _im2col(xpk, cols, sh, dh, colph, coloff, KH, KW, Ho, Wo):
    """cols[g, (c, a, e), b, (i, j)] = xpk[b, g*Cg + c, i*sh + a*dh, colph[e], coloff[e] + j].

    xpk is the chunk's input padded and split by column phase (as for the jit method), so every row of
    cols is one contiguous copy."""
    G, K, B, P = cols.shape
    Cg = K // (KH * KW)
    for task in prange(G * Cg * KH * B):
        b = task % B
        r = task // B
        a = r % KH
        r //= KH
        c = r % Cg
        g = r // Cg
        plane = xpk[b, g * Cg + c]
        for e in range(KW):
            dst = cols[g, (c * KH + a) * KW + e, b]
            for i in range(Ho):
                src = plane[i * sh + a * dh, colph[e], coloff[e] : coloff[e] + Wo]
                row = dst[i * Wo : i * Wo + Wo]
                for j in range(Wo):
                    row[j] = src[j]


@kernel
def _col2im(dcols, dxpk, sh, dh, colph, coloff, KH, KW, Ho, Wo):
    """dxpk[b, g*Cg + c, i*sh + a*dh, colph[e], coloff[e] + j] += dcols[g, (c, a, e), b, (i, j)]: the
    padded, phase-split input gradient; each task owns one (image, channel) plane of it."""
    G, K, B, P = dcols.shape
    Cg = K // (KH * KW)
    for task in prange(B * G * Cg):
        b = task // (G * Cg)
        gc = task % (G * Cg)
        g, c = gc // Cg, gc % Cg
        plane = dxpk[b, gc]
        plane[...] = 0
        for a in range(KH):
            for e in range(KW):
                src = dcols[g, (c * KH + a) * KW + e, b]
                for i in range(Ho):
                    drow = plane[i * sh + a * dh, colph[e], coloff[e] : coloff[e] + Wo]
                    srow = src[i * Wo : i * Wo + Wo]
                    for j in range(Wo):
                        drow[j] += srow[j]


@kernel
def _unpack(dxpk, dx, n0, pt, pl):
    """dx[n0 + b, c, h, w] = dxpk[b, c, h + pt, (w + pl) % sw, (w + pl) // sw]: drop the padding."""
    B, C, R, SW, J = dxpk.shape
    H, W = dx.shape[2], dx.shape[3]
    for task in prange(B * C):
        b, c = task // C, task % C
        for h in range(H):
            src = dxpk[b, c, h + pt]
            dst = dx[n0 + b, c, h]
            for p in range(SW):
                # columns w = j*SW + p - pl inside [0, W) for j in [jlo, jhi)
                jlo = max(0, -((p - pl) // SW))
                jhi = min(J, max(jlo, (W - 1 + pl - p) // SW + 1))
                row = src[p, jlo:jhi]
                out = dst[jlo * SW + p - pl :]
                for j in range(jhi - jlo):
                    out[j * SW] = row[j]


def _chunk(g: ConvGeometry, itemsize: int, fixed_bytes: int) -> int:
    """Images per chunk, so that the scratch memory stays within max(64 MiB, inputs + outputs)."""
    budget = max(MIN_BUDGET, fixed_bytes)
    colph, coloff = _tap_columns(g.KW, g.dw, g.sw)
    rows = max((g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1, g.pt + g.H)
    packed = g.C * rows * g.sw * max(g.Wo + int(coloff[-1]), -(-(g.pl + g.W) // g.sw))
    per_image = g.Cg * g.groups * g.KH * g.KW * g.Ho * g.Wo  # the unfolded matrix
    per_image += 2 * g.F * g.Ho * g.Wo  # the GEMM result, or the dout chunk
    per_image += 2 * packed  # the padded input and the padded input gradient
    return int(max(1, min(g.N, budget // (per_image * itemsize))))


def _unfold(x: np.ndarray, g: ConvGeometry, n0: int, B: int, buf: np.ndarray) -> np.ndarray:
    """The unfolded matrix of images n0 .. n0 + B, written into (the start of) buf."""
    colph, coloff = _tap_columns(g.KW, g.dw, g.sw)
    rows = (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1
    xpk = _packed_input(x[n0 : n0 + B], rows, g.Wo + int(coloff[-1]), g.pt, g.pl, g.sw)
    cols = buf[: g.groups * g.Cg * g.KH * g.KW * B * g.Ho * g.Wo]
    cols = cols.reshape(g.groups, g.Cg * g.KH * g.KW, B, g.Ho * g.Wo)
    launch(_im2col, xpk, cols, g.sh, g.dh, colph, coloff, g.KH, g.KW, g.Ho, g.Wo)
    return cols


def _pointwise(g: ConvGeometry) -> bool:
    """A 1x1 kernel at stride 1 without padding: the input already is the unfolded matrix."""
    return g.KH == g.KW == 1 and g.sh == g.sw == 1 and g.pt == g.pb == g.pl == g.pr == 0


@_quiet
def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry) -> np.ndarray:
    if _pointwise(g):  # out[n, g] = w[g] @ x[n, g]: one GEMM per image and group, straight into NCHW
        out = np.matmul(w.reshape(1, g.groups, g.Fg, g.Cg), x.reshape(g.N, g.groups, g.Cg, g.H * g.W))
        out = out.reshape(g.N, g.F, g.Ho, g.Wo)
        if b is not None:
            out += b[None, :, None, None]
        return out
    out = fresh((g.N, g.F, g.Ho, g.Wo), x.dtype)
    B = _chunk(g, x.itemsize, x.nbytes + out.nbytes)
    K, P = g.Cg * g.KH * g.KW, g.Ho * g.Wo
    wg = w.reshape(g.groups, g.Fg, K)
    out5 = out.reshape(g.N, g.groups, g.Fg, P)
    buf = scratch("cols", g.groups * K * B * P, x.dtype)
    for n0 in range(0, g.N, B):
        nb = min(B, g.N - n0)
        cols = _unfold(x, g, n0, nb, buf).reshape(g.groups, K, nb * P)
        res = scratch("gemm", g.groups * g.Fg * nb * P, x.dtype).reshape(g.groups, g.Fg, nb * P)
        np.matmul(wg, cols, out=res)  # one GEMM per group
        out5[n0 : n0 + nb] = res.reshape(g.groups, g.Fg, nb, P).transpose(2, 0, 1, 3)
    if b is not None:
        out += b[None, :, None, None]
    return out


@_quiet
def conv2d_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, g: ConvGeometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    db = dout.sum(axis=(0, 2, 3), dtype=dout.dtype)
    if _pointwise(g):
        P = g.H * g.W
        x5, d5 = x.reshape(g.N, g.groups, g.Cg, P), dout.reshape(g.N, g.groups, g.Fg, P)
        wT = w.reshape(1, g.groups, g.Fg, g.Cg).transpose(0, 1, 3, 2)
        dx = np.matmul(wT, d5).reshape(x.shape)
        dwp = np.stack([np.tensordot(d5[:, i], x5[:, i], axes=([0, 2], [0, 2]))
                        for i in range(g.groups)])
        return dx, dwp.reshape(g.F, g.Cg, 1, 1).astype(x.dtype, copy=False), db
    dx = fresh(x.shape, x.dtype)
    dw = np.zeros((g.groups, g.Fg, g.Cg * g.KH * g.KW), x.dtype)
    B = _chunk(g, x.itemsize, x.nbytes + dout.nbytes + dx.nbytes + w.nbytes)
    K, P = g.Cg * g.KH * g.KW, g.Ho * g.Wo
    colph, coloff = _tap_columns(g.KW, g.dw, g.sw)
    rows = (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1
    # the padded gradient must reach every input row and column, beyond the rows the windows touch
    rows = max(rows, g.pt + g.H)
    cols_pk = max(g.Wo + int(coloff[-1]), -(-(g.pl + g.W) // g.sw))
    wgT = w.reshape(g.groups, g.Fg, K).transpose(0, 2, 1)  # (groups, K, Fg), a view
    d5 = dout.reshape(g.N, g.groups, g.Fg, P)
    buf = scratch("cols", g.groups * K * B * P, x.dtype)
    for n0 in range(0, g.N, B):
        nb = min(B, g.N - n0)
        cols = _unfold(x, g, n0, nb, buf).reshape(g.groups, K, nb * P)
        dchunk = scratch("dout", g.groups * g.Fg * nb * P, x.dtype).reshape(g.groups, g.Fg, nb, P)
        dchunk[...] = d5[n0 : n0 + nb].transpose(1, 2, 0, 3)
        dchunk = dchunk.reshape(g.groups, g.Fg, nb * P)
        dw += np.matmul(dchunk, cols.transpose(0, 2, 1))  # (groups, Fg, K)
        # cols is not needed any more: its buffer takes the unfolded gradient
        dcols = np.matmul(wgT, dchunk, out=cols).reshape(g.groups, K, nb, P)
        shape = (nb, g.C, rows, g.sw, cols_pk)
        dxpk = scratch("dxpacked", int(np.prod(shape)), x.dtype).reshape(shape)
        launch(_col2im, dcols, dxpk, g.sh, g.dh, colph, coloff, g.KH, g.KW, g.Ho, g.Wo)
        launch(_unpack, dxpk, dx, n0, g.pt, g.pl)
    return dx, dw.reshape(g.F, g.Cg, g.KH, g.KW), db
