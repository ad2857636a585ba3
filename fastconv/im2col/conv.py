"""conv2d as unfolded input + BLAS GEMM (notes 001 and 004, the Caffe approach), arranged so that the
unfolded matrix is never written out whole.

Caffe's im2col copies every input pixel KH*KW times into a (C*KH*KW, Ho*Wo) matrix. Writing that matrix
cost as much time as the GEMM that reads it here (memory bandwidth: 115 MB for the res layer). Instead
the input is unfolded along the kernel's width only, and by row phase (row mod stride):

    xe[n, c, e, rp, r, j] = x[n, c, r*sh + rp - pt, j*sw + e*dw - pl]   (zero outside x)

so that for each kernel row a the rows (c, e) of xe, read from row offset (a*dh) // sh of phase
(a*dh) % sh, *are* the unfolded matrix of that kernel row: a strided view with contiguous rows of
Ho*Wo, which BLAS takes as it is (leading dimension sh*R*Wo). The conv is then KH GEMMs per image,

    out[n, g] = sum_a  w[g, :, :, a, :] (Fg, Cg*KW)  @  xe_a[n, g] (Cg*KW, Ho*Wo),

landing directly in NCHW. xe is KW/sw times the input, not KH*KW times.

Where few of its rows are wasted (_stacked_images), the forward instead lays xe out with several images
side by side in each row and runs one GEMM per row phase, that phase's kernel rows stacked: w_a @ xe
holds kernel row a's terms for every output row, shifted by a's row offset, so a numba pass adds the
kernel rows' results, shifted, into NCHW (_conv_stacked). Larger GEMMs run nearer BLAS's full speed:
1.14-1.38x (medians) on the vgg, res and down layers, both dtypes.

Backward: dw[g, :, :, a, :] = sum_n dout[n, g] @ xe_a[n, g]^T, on the same views. dx, with a stride:
for each kernel row a, w_a^T @ dout[n] is the gradient unfolded along the kernel width, folded back into
dx by a numba kernel (col2im restricted to one kernel row, its block still in cache). At stride 1, dx is
one forward convolution of dout with the transposed, flipped kernel, which runs on the forward code above.

The batch is processed in chunks so that the memory used beyond the inputs and the results stays within
max(64 MiB, bytes of the inputs and outputs). The unfold loop is a numba kernel (each task owns its (image,
channel) rows of xe); BLAS is only ever called from Python, never inside a parallel loop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._backward import conv_backward
from .._geometry import columns_inside as _columns_inside
from .._geometry import dx_phases, phase_kernel, transposed_kernel
from .._params import ConvGeometry
from .._quiet import quiet as _quiet
from .._workspace import fresh, scratch
from ..jit._numba import claims_next, claims_start, counter, inline, kernel, launch

columns_inside = inline(_columns_inside)

MIN_BUDGET = 64 << 20  # bytes
CACHE_BYTES = 1 << 20  # a GEMM result block meant to stay in cache while the kernel rows add into it


@kernel
def _unfold_rows(x, xe, n0, sh, sw, dh, dw, pt, pl, images_inner, ctr):
    """xe[b, c, e, rp, r, j] = x[n0 + b, c, r*sh + rp - pt, j*sw + e*dw - pl], zero outside x; with
    images_inner, the same rows laid out as xe[c, e, rp, b, r, j] (each unfolded row's images end to
    end).

    xe is C-contiguous; flat, unsigned indices keep the per-row cost down (rows are short)."""
    if images_inner:
        C, KW, SH, B, R, J = xe.shape
    else:
        B, C, KW, SH, R, J = xe.shape
    H, W = x.shape[2], x.shape[3]
    dst = xe.reshape(-1)
    ntasks = B * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                b, c = task // C, task % C
                src = x[n0 + b, c].reshape(-1)
                for e in range(KW):
                    col0 = e * dw - pl  # the input column of j = 0
                    jlo, jhi = columns_inside(col0, sw, W, J)
                    nj = jhi - jlo
                    for rp in range(SH):
                        if images_inner:
                            first = (((c * KW + e) * SH + rp) * B + b) * R
                        else:
                            first = (((b * C + c) * KW + e) * SH + rp) * R
                        for r in range(R):
                            o = np.uint64((first + r) * J)
                            h = r * sh + rp - pt
                            if h < 0 or h >= H:
                                for j in range(J):
                                    dst[o + np.uint64(j)] = 0
                                continue
                            for j in range(jlo):
                                dst[o + np.uint64(j)] = 0
                            o1 = o + np.uint64(jlo)
                            i = np.uint64(h * W + jlo * sw + col0)
                            if sw == 1:
                                for j in range(nj):
                                    dst[o1 + np.uint64(j)] = src[i + np.uint64(j)]
                            else:
                                for j in range(nj):
                                    dst[o1 + np.uint64(j)] = src[i + np.uint64(j * sw)]
                            for j in range(jhi, J):
                                dst[o + np.uint64(j)] = 0


@kernel
def _fold_rows(dxe, dx, n0, a, sh, sw, dh, dw, pt, pl, ctr):
    """dx[n0 + b, c, i*sh + a*dh - pt, j*sw + e*dw - pl] += dxe[b, c, e, i, j] where that lies in dx:
    kernel row a's share of the input gradient, added back where its windows overlap (col2im). Each
    task owns one (image, channel) plane of dx and adds in a fixed order."""
    B, C, KW, Ho, Wo = dxe.shape
    H, W = dx.shape[2], dx.shape[3]
    ntasks = B * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                b, c = task // C, task % C
                src = dxe[b, c].reshape(-1)
                dst = dx[n0 + b, c].reshape(-1)
                for e in range(KW):
                    col0 = e * dw - pl  # the input column of j = 0
                    jlo, jhi = columns_inside(col0, sw, W, Wo)
                    for i in range(Ho):
                        h = i * sh + a * dh - pt
                        if h < 0 or h >= H:
                            continue
                        o = np.uint64((e * Ho + i) * Wo + jlo)
                        d = np.uint64(h * W + jlo * sw + col0)
                        if sw == 1:
                            for j in range(jhi - jlo):
                                dst[d + np.uint64(j)] += src[o + np.uint64(j)]
                        else:
                            for j in range(jhi - jlo):
                                dst[d + np.uint64(j * sw)] += src[o + np.uint64(j)]


class _Unfolded:
    """The row-unfolded input of one chunk of images and its per-kernel-row GEMM operands."""

    def __init__(self, x, KH, KW, Ho, Wo, sh, sw, dh, dw, pt, pl, groups, n0, nb):
        C = x.shape[1]
        self.R = self.rows(Ho, KH, sh, dh)
        shape = (nb, C, KW, sh, self.R, Wo)
        xe = scratch("unfolded", math.prod(shape), x.dtype).reshape(shape)
        launch(_unfold_rows, x, xe, n0, sh, sw, dh, dw, pt, pl, False, counter())
        self.xv = xe.reshape(nb, groups, (C // groups) * KW, sh, self.R * Wo)
        self.L, self.Wo, self.sh, self.dh = Ho * Wo, Wo, sh, dh

    def row(self, a: int, i0: int, i1: int) -> np.ndarray:
        """The unfolded matrix of kernel row a for images i0 .. i1 of the chunk: (ib, G, Cg*KW, Ho*Wo)."""
        rp, ro = (a * self.dh) % self.sh, (a * self.dh) // self.sh
        return self.xv[i0:i1, :, :, rp, ro * self.Wo : ro * self.Wo + self.L]

    @staticmethod
    def rows(Ho: int, KH: int, sh: int, dh: int) -> int:
        """Rows per phase: the output rows plus the furthest kernel row's offset."""
        return Ho + ((KH - 1) * dh) // sh

    @staticmethod
    def image_bytes(C, KW, Ho, Wo, KH, sh, dh, itemsize) -> int:
        return C * KW * sh * _Unfolded.rows(Ho, KH, sh, dh) * Wo * itemsize


@kernel
def _concat_rows(src, dst, ctr):
    """dst[g, k, n*P : (n + 1)*P] = src[n, g, k]: each (group, channel)'s rows of all the images end to
    end, so that a pointwise dw is one GEMM with a long reduction (NumPy's tensordot made these copies
    on one thread: pw dw 1.1-1.2x). One task per (g, k) owns dst[g, k]."""
    N, G, K, P = src.shape
    ntasks = G * K
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                g = task // K
                k = task % K
                d = dst[g, k]
                for n in range(N):
                    s = src[n, g, k]
                    for j in range(P):
                        d[n * P + j] = s[j]


def _row_kernels(wk: np.ndarray, groups: int) -> np.ndarray:
    """(F, Cg, KH, KW) -> (KH, groups, Fg, Cg*KW): for each kernel row a, the GEMM's left operand."""
    F, Cg, KH, KW = wk.shape
    w5 = wk.reshape(groups, F // groups, Cg, KH, KW).transpose(3, 0, 1, 2, 4)
    return np.ascontiguousarray(w5).reshape(KH, groups, F // groups, Cg * KW)


def _reserve(out_per_image: int, itemsize: int) -> int:
    """Bytes that the GEMM result blocks of _conv take at most, for out_per_image outputs per image."""
    return 2 * max(CACHE_BYTES, out_per_image * itemsize)


def _images_per_chunk(N: int, per_image: int, fixed_bytes: int, reserve: int) -> int:
    """Images per chunk so that the chunk's unfolded input plus reserve bytes of other scratch stay
    within max(MIN_BUDGET, fixed_bytes), the bytes of the call's inputs and outputs."""
    budget = max(MIN_BUDGET, fixed_bytes) - reserve
    return int(max(1, min(N, budget // max(1, per_image))))


def _conv(x, wk, groups, Ho, Wo, sh, sw, dh, dw, pt, pl, out, fixed_bytes, reserve) -> None:
    """out[n, f, i, j] = sum_{c, a, e} wk[f, c, a, e] * x[n, g*Cg + c, i*sh + a*dh - pt, j*sw + e*dw - pl]
    with x zero outside its bounds. out: (N, F, Ho, Wo), possibly a strided view. The chunks' unfolded
    input stays within max(MIN_BUDGET, fixed_bytes) - reserve, the GEMM blocks within reserve (which must
    be at least _reserve(F * Ho * Wo, itemsize))."""
    N, C = x.shape[:2]
    F, Cg, KH, KW = wk.shape
    Fg, L = F // groups, Ho * Wo
    wa = _row_kernels(wk, groups)
    # images per GEMM block: the block's result stays in cache while every kernel row adds into it
    inner = int(max(1, min(N, CACHE_BYTES // (F * L * x.itemsize))))
    per_image = _Unfolded.image_bytes(C, KW, Ho, Wo, KH, sh, dh, x.itemsize)
    B = _images_per_chunk(N, per_image, fixed_bytes, reserve)
    inner = min(inner, B)
    direct = out.flags.c_contiguous
    tmp = scratch("gemm", 2 * inner * F * L, x.dtype)
    for n0 in range(0, N, B):
        nb = min(B, N - n0)
        xu = _Unfolded(x, KH, KW, Ho, Wo, sh, sw, dh, dw, pt, pl, groups, n0, nb)
        for i0 in range(0, nb, inner):
            ib = min(inner, nb - i0)
            part = tmp[ib * F * L : 2 * ib * F * L].reshape(ib, groups, Fg, L)
            if direct:
                acc = out[n0 + i0 : n0 + i0 + ib].reshape(ib, groups, Fg, L)
            else:
                acc = tmp[: ib * F * L].reshape(ib, groups, Fg, L)
            for a in range(KH):
                if a == 0:
                    np.matmul(wa[a], xu.row(a, i0, i0 + ib), out=acc)
                else:
                    np.matmul(wa[a], xu.row(a, i0, i0 + ib), out=part)
                    acc += part
            if not direct:
                out[n0 + i0 : n0 + i0 + ib] = acc.reshape(ib, F, Ho, Wo)


GEMM_COLUMNS = 4096  # columns of a stacked GEMM: enough images side by side for BLAS's full speed
STACK_BYTES = 32 << 20  # the stacked GEMMs' result block at most (else the per-kernel-row GEMMs)


@kernel
def _sum_rows(q, slot, ro, bias, has_bias, out, n0, S, ctr):
    """out[n0 + b, f, i, j] = sum over the kernel rows a, in order, of q[g, slot[a]*Fg + m, b*S + (ro[a]
    + i)*Wo + j] (f = g*Fg + m), plus bias[f] if has_bias: the kernel rows' GEMM results, each shifted
    by its row offset, added into NCHW. out is C-contiguous; each task owns one (image, channel) plane."""
    G, KF, cols = q.shape
    KH = slot.shape[0]
    Fg = KF // KH
    nb = cols // S
    F, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    L = Ho * Wo
    ntasks = nb * F
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                b, f = task // F, task % F
                g, m = f // Fg, f % Fg
                dst = out[n0 + b, f].reshape(-1)
                src = q[g, slot[0] * Fg + m]
                s0 = b * S + ro[0] * Wo
                for p in range(L):
                    dst[p] = src[s0 + p]
                for a in range(1, KH):
                    src = q[g, slot[a] * Fg + m]
                    s0 = b * S + ro[a] * Wo
                    for p in range(L):
                        dst[p] += src[s0 + p]
                if has_bias:
                    bv = bias[f]
                    for p in range(L):
                        dst[p] += bv


STACK_WASTE = 0.1  # the share of rows the stacked GEMMs may compute for nothing


def _stacked_images(N: int, F: int, KH: int, Ho: int, Wo: int, sh: int, dh: int, itemsize: int) -> int:
    """Images per stacked GEMM; 0 where the stacked form does not pay: its result block would exceed
    STACK_BYTES, or more than STACK_WASTE of its rows are past the outputs (measured: lenet, 14% of
    rows wasted and 5 taps per GEMM row, 0.85x the per-kernel-row GEMMs; seed001, 12%, 0.9x; cs231n,
    16%, no faster; vgg, res and down, 3-7%, 1.15-1.3x in float32)."""
    R = _Unfolded.rows(Ho, KH, sh, dh)
    if R - Ho > STACK_WASTE * R:
        return 0
    S = R * Wo
    inner = int(max(1, min(N, GEMM_COLUMNS // S)))
    while inner > 1 and KH * F * inner * S * itemsize > STACK_BYTES:
        inner -= 1
    return inner if KH * F * inner * S * itemsize <= STACK_BYTES else 0


def stacks_gemms(g: ConvGeometry, dtype: np.dtype) -> bool:
    """Whether the forward of this geometry stacks its kernel rows into large GEMMs (_stacked_images):
    the hook method="auto" asks (see fastconv._auto)."""
    return _stacked_images(g.N, g.F, g.KH, g.Ho, g.Wo, g.sh, g.dh, np.dtype(dtype).itemsize) > 0


def _conv_stacked(x, wk, groups, Ho, Wo, sh, sw, dh, dw, pt, pl, out, bias, fixed_bytes, reserve,
                  inner) -> None:
    """_conv with each row phase's kernel rows stacked into one GEMM over inner images side by side
    (inner from _stacked_images). reserve: bytes of other scratch the caller holds; the chunks' unfolded
    input stays within max(MIN_BUDGET, fixed_bytes) less the larger of reserve and the GEMMs' result block.

    The input is unfolded with each row's images end to end (_unfold_rows, images_inner), R rows of
    Wo per image: for kernel row a, output row i reads unfolded row i + ro[a] of phase rp[a]. So w_a
    @ (a phase's unfolded rows) holds every kernel row's terms for every output row, shifted by ro[a]
    rows, and the kernel rows of one phase share that right operand: one GEMM per phase, its left
    operand the phase's kernel rows stacked ((rows x Fg) x Cg*KW), its right one inner images' columns.
    _sum_rows then adds the kernel rows' shifted results into NCHW, bias included. The (R - Ho) rows
    per image past the outputs are computed for nothing (6-7% on the suite's 3x3 layers); in exchange
    the GEMMs are large: measured on the res layer in float32, 1.3-1.5x the speed of the per-image,
    per-kernel-row GEMMs."""
    N, C = x.shape[:2]
    F, Cg, KH, KW = wk.shape
    Fg = F // groups
    R = _Unfolded.rows(Ho, KH, sh, dh)
    S = R * Wo
    wa = _row_kernels(wk, groups)  # (KH, G, Fg, Cg*KW)
    order = sorted(range(KH), key=lambda a: ((a * dh) % sh, a))  # kernel rows by phase
    slot = np.empty(KH, np.int64)
    slot[order] = np.arange(KH)
    ro = np.array([(a * dh) // sh for a in range(KH)], np.int64)
    stacks = []  # (phase, first slot, kernel rows, stacked kernel rows)
    for rp in range(sh):
        rows = [a for a in order if (a * dh) % sh == rp]
        if rows:
            stacks.append((rp, int(slot[rows[0]]), len(rows),
                           np.ascontiguousarray(np.concatenate([wa[a] for a in rows], axis=1))))
    per_image = C * KW * sh * S * x.itemsize
    B = _images_per_chunk(N, per_image, fixed_bytes, max(reserve, KH * F * inner * S * x.itemsize))
    inner = min(inner, B)
    q = scratch("gemm", groups * KH * Fg * inner * S, x.dtype)
    has_bias = bias is not None
    bias = bias if has_bias else np.zeros(1, x.dtype)
    for n0 in range(0, N, B):
        nb = min(B, N - n0)
        xe = scratch("unfolded", C * KW * sh * nb * S, x.dtype).reshape(C, KW, sh, nb, R, Wo)
        launch(_unfold_rows, x, xe, n0, sh, sw, dh, dw, pt, pl, True, counter())
        xv = xe.reshape(groups, Cg * KW, sh, nb * S)
        for i0 in range(0, nb, inner):
            ib = min(inner, nb - i0)
            qb = q[: groups * KH * Fg * ib * S].reshape(groups, KH * Fg, ib * S)
            for rp, s0, count, wst in stacks:
                np.matmul(wst, xv[:, :, rp, i0 * S : (i0 + ib) * S], out=qb[:, s0 * Fg : (s0 + count) * Fg])
            launch(_sum_rows, qb, slot, ro, bias, has_bias, out, n0 + i0, S, counter())


@_quiet
def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry) -> np.ndarray:
    if g.pointwise:  # out[n, g] = w[g] @ x[n, g]: one GEMM per image and group, straight into NCHW
        out = np.matmul(w.reshape(1, g.groups, g.Fg, g.Cg), x.reshape(g.N, g.groups, g.Cg, g.H * g.W))
        out = out.reshape(g.N, g.F, g.Ho, g.Wo)
    else:
        out = fresh((g.N, g.F, g.Ho, g.Wo), x.dtype)
        inner = _stacked_images(g.N, g.F, g.KH, g.Ho, g.Wo, g.sh, g.dh, x.itemsize)
        if inner:
            _conv_stacked(x, w, g.groups, g.Ho, g.Wo, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, out, b,
                          x.nbytes + out.nbytes, 0, inner)
            return out
        _conv(x, w, g.groups, g.Ho, g.Wo, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, out,
              x.nbytes + out.nbytes, _reserve(g.F * g.Ho * g.Wo, x.itemsize))
    if b is not None:
        out += b[None, :, None, None]
    return out


def _conv_dw(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, fixed_bytes: int, reserve: int
             ) -> np.ndarray:
    """dw[g, :, :, a, :] = sum_n dout[n, g] @ xe_a[n, g]^T, image by image in a fixed order."""
    K, L = g.Cg * g.KW, g.Ho * g.Wo
    dwa = np.zeros((g.KH, g.groups, g.Fg, K), x.dtype)
    part = np.empty((1, g.groups, g.Fg, K), x.dtype)
    per_image = _Unfolded.image_bytes(g.C, g.KW, g.Ho, g.Wo, g.KH, g.sh, g.dh, x.itemsize)
    B = _images_per_chunk(g.N, per_image, fixed_bytes, reserve)
    d4 = dout.reshape(g.N, g.groups, g.Fg, L)
    for n0 in range(0, g.N, B):
        nb = min(B, g.N - n0)
        xu = _Unfolded(x, g.KH, g.KW, g.Ho, g.Wo, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.groups, n0, nb)
        for i in range(nb):
            d = d4[n0 + i : n0 + i + 1]
            for a in range(g.KH):
                np.matmul(d, xu.row(a, i, i + 1).transpose(0, 1, 3, 2), out=part)
                dwa[a] += part[0]
    # (KH, G, Fg, Cg, KW) -> (G, Fg, Cg, KH, KW)
    dw = dwa.reshape(g.KH, g.groups, g.Fg, g.Cg, g.KW).transpose(1, 2, 3, 0, 4)
    return np.ascontiguousarray(dw).reshape(g.F, g.Cg, g.KH, g.KW)


def _conv_dx_stride1(dout: np.ndarray, w: np.ndarray, g: ConvGeometry, fixed: int, reserve: int
                     ) -> np.ndarray:
    """At stride 1, dx is one convolution of dout with the transposed, flipped kernel (the jit
    method's single dx phase), run by _conv straight into dx: no fold pass (measured 4-10% faster than
    _conv_dx on the vgg and res layers)."""
    (p,) = dx_phases(g)
    dx = fresh((g.N, g.C, g.H, g.W), dout.dtype)
    wk = phase_kernel(transposed_kernel(w, g), p)
    KH = wk.shape[2]
    inner = _stacked_images(g.N, g.C, KH, g.H, g.W, 1, p.step_h, dout.itemsize)
    if inner:
        _conv_stacked(dout, wk, g.groups, g.H, g.W, 1, 1, p.step_h, p.step_w, -p.base_h, -p.base_w, dx,
                      None, fixed, reserve, inner)
        return dx
    _conv(dout, wk, g.groups, g.H, g.W, 1, 1, p.step_h, p.step_w, -p.base_h, -p.base_w, dx, fixed,
          reserve)
    return dx


def _conv_dx(dout: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """For each kernel row a: dxe = w_a^T @ dout (the input gradient, unfolded along the kernel width),
    folded back into dx. The GEMM block stays in cache until the fold has read it. (With a stride, the
    per-phase convolutions that the jit method uses were 1.3x slower on the down layer.)"""
    L, K = g.Ho * g.Wo, g.Cg * g.KW
    waT = _row_kernels(w, g.groups).transpose(0, 1, 3, 2)  # (KH, G, Cg*KW, Fg), a view
    d4 = dout.reshape(g.N, g.groups, g.Fg, L)
    dx = fresh((g.N, g.C, g.H, g.W), dout.dtype, zero=True)
    inner = int(max(1, min(g.N, CACHE_BYTES // (g.C * g.KW * L * dout.itemsize))))
    buf = scratch("gemm", inner * g.groups * K * L, dout.dtype)
    for n0 in range(0, g.N, inner):
        ib = min(inner, g.N - n0)
        dxe = buf[: ib * g.groups * K * L].reshape(ib, g.groups, K, L)
        for a in range(g.KH):
            np.matmul(waT[a], d4[n0 : n0 + ib], out=dxe)
            launch(_fold_rows, dxe.reshape(ib, g.C, g.KW, g.Ho, g.Wo), dx, n0, a,
                   g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, counter())
    return dx


def _backward_budget(g: ConvGeometry, itemsize: int) -> tuple[int, int]:
    """(bytes of x, dout, w and dx; the reserve for GEMM blocks) of a backward pass. One reserve serves
    both gradients: the scratch buffers of the first are still held during the second."""
    fixed = (2 * g.N * g.C * g.H * g.W + g.N * g.F * g.Ho * g.Wo + g.F * g.Cg * g.KH * g.KW) * itemsize
    return fixed, _reserve(max(g.C * g.KW * g.Ho * g.Wo, g.F * g.Ho * g.Wo), itemsize)


@_quiet
def conv2d_backward_dx(dout: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    if g.pointwise:  # dx[n, g] = w[g]^T @ dout[n, g]
        wT = w.reshape(1, g.groups, g.Fg, g.Cg).transpose(0, 1, 3, 2)
        d5 = dout.reshape(g.N, g.groups, g.Fg, g.H * g.W)
        return np.matmul(wT, d5).reshape(g.N, g.C, g.H, g.W)
    if g.sh == g.sw == 1 and np.isfinite(w).all():
        return _conv_dx_stride1(dout, w, g, *_backward_budget(g, dout.itemsize))
    # The fold adds exactly naive's terms; the stride-1 form also multiplies the weights by the zeros
    # around dout, which an infinite weight would turn into NaN where naive has none.
    return _conv_dx(dout, w, g)


@_quiet
def conv2d_backward_dw(dout: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    if g.pointwise:  # dw[g] = sum_n dout[n, g] @ x[n, g]^T, one GEMM over all the images' pixels
        N, P = g.N, g.H * g.W
        dcat = scratch("dout_rows", dout.size, dout.dtype).reshape(g.groups, g.Fg, N * P)
        xcat = scratch("x_rows", x.size, x.dtype).reshape(g.groups, g.Cg, N * P)
        launch(_concat_rows, dout.reshape(N, g.groups, g.Fg, P), dcat, counter())
        launch(_concat_rows, x.reshape(N, g.groups, g.Cg, P), xcat, counter())
        return np.matmul(dcat, xcat.transpose(0, 2, 1)).reshape(g.F, g.Cg, 1, 1)
    return _conv_dw(dout, x, g, *_backward_budget(g, x.itemsize))


conv2d_backward = conv_backward(conv2d_backward_dx, conv2d_backward_dw)
