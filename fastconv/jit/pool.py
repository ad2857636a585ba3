"""Max and average pooling with numba.

Each parallel task owns one (n, c) plane of the output and of dx, so no two threads ever write the same
element and overlapping windows accumulate in a fixed order. Within a plane the work goes tap by tap over
a whole output row (``ow`` innermost), which LLVM vectorizes, instead of window by window.

Max-pool follows PyTorch's CPU kernel exactly: the running maximum starts at -inf with the window's first
in-bounds element as its index, and an element replaces it when it is greater or NaN. So the first
maximum in row-major order wins, a NaN wins over everything, and of several NaNs the last one wins.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._params import PoolGeometry
from .._quiet import quiet as _quiet
from .._workspace import fresh
from ._numba import claims_next, claims_start, counter, inline, kernel, launch


def _ow_ranges(g: PoolGeometry) -> np.ndarray:
    """(2, KW): the output columns [lo[e], hi[e]) whose tap e falls inside the input, where the tap reads
    input column ow*sw + e*dw - pw."""
    off = np.arange(g.KW) * g.dw - g.pw
    lo = np.clip(-(off // g.sw), 0, g.Wo)  # ceil(-off / sw), at least 0
    hi = np.clip((g.W - 1 - off) // g.sw + 1, lo, g.Wo)
    return np.stack([lo, hi]).astype(np.intp)


# The row operations one tap of one output row can need (literal op codes of _tap_row).
MAX, FIRST_TAP, SUM, SPREAD = 0, 1, 2, 3


@inline
def _row(op, a, b, c, lo, hi, sw, off, t):
    """For output columns j in [lo, hi), whose tap reads input column j*sw + off:

    MAX        b[j] = max(b[j], a[j*sw + off]), NaN winning (PyTorch's rule)
    FIRST_TAP  c[j] = t if a[j*sw + off] is the first to equal the window maximum b[j], or, when b[j] is
               NaN, if it is NaN (so the last NaN wins); tap numbers live in an array of x's dtype so
               every array in the loop has the same lane width
    SUM        b[j] += a[j*sw + off]
    SPREAD     b[j*sw + off] += a[j] (one tap's share of the average-pool gradient)

    Slices and loops from 0, selects instead of branches: the forms LLVM vectorizes (a loop over
    range(lo, hi), or an index it cannot prove non-negative, is not vectorized)."""
    n = hi - lo
    if op == MAX:
        xs, os = a[lo * sw + off :], b[lo:hi]
        for j in range(n):
            v, m = xs[j * sw], os[j]
            os[j] = v if (v > m) | (v != v) else m
    elif op == FIRST_TAP:
        xs, bs, ts = a[lo * sw + off :], b[lo:hi], c[lo:hi]
        for j in range(n):
            v, m, tj = xs[j * sw], bs[j], ts[j]
            nan_max = m != m
            take = (nan_max & (v != v)) | (~nan_max & (tj < 0) & (v == m))
            ts[j] = t if take else tj
    elif op == SUM:
        xs, os = a[lo * sw + off :], b[lo:hi]
        for j in range(n):
            os[j] += xs[j * sw]
    else:
        ss, ds = a[lo:hi], b[lo * sw + off :]
        for j in range(n):
            ds[j * sw] += ss[j]


@inline
def _tap_row(op, a, b, c, lo, hi, sw, off, t):
    """_row with the column stride as a constant for the common strides 1 and 2, so LLVM vectorizes the
    (interleaved) accesses; c and t are only read by FIRST_TAP."""
    if sw == 1:
        _row(op, a, b, c, lo, hi, 1, off, t)
    elif sw == 2:
        _row(op, a, b, c, lo, hi, 2, off, t)
    else:
        _row(op, a, b, c, lo, hi, sw, off, t)


@inline
def _each_tap(op, plane, b, c, i, sh, sw, ph, pw, dh, dw, KH, KW, lo, hi):
    """_tap_row(op, ...) for every tap of output row i that lies inside the input, in row-major window
    order (the order PyTorch's max rule depends on); FIRST_TAP gets each tap's number in b's dtype."""
    H = plane.shape[0]
    for a in range(KH):
        ih = i * sh + a * dh - ph
        if ih < 0 or ih >= H:
            continue
        xrow = plane[ih]
        for e in range(KW):
            _tap_row(op, xrow, b, c, lo[e], hi[e], sw, e * dw - pw, b.dtype.type(a * KW + e))


@inline
def _zero_rows(dplane, done, upto):
    """Zero rows [done, upto) of a dx plane; returns the new count of zeroed rows. The backward kernels
    zero each row just before the first window that adds into it (windows go down the plane in order),
    so a row's zeros and its sums meet in cache: one pass of writes over dx instead of a memset and then
    the sums."""
    for r in range(done, upto):
        dplane[r, :] = 0
    return max(done, upto)


@kernel
def _max_fwd(x, out, sh, sw, ph, pw, KH, KW, dh, dw, ranges, ctr):
    N, C, H, W = x.shape
    Ho = out.shape[2]
    lo, hi = ranges[0], ranges[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                n, c = p // C, p % C
                plane = x[n, c]
                for i in range(Ho):
                    orow = out[n, c, i]
                    orow[:] = -np.inf
                    _each_tap(MAX, plane, orow, orow, i, sh, sw, ph, pw, dh, dw, KH, KW, lo, hi)


@kernel
def _max_bwd(dout, x, dx, sh, sw, ph, pw, KH, KW, dh, dw, ranges, ctr):
    N, C, H, W = x.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    lo, hi = ranges[0], ranges[1]
    # tap number -> its row and column offset in the window (no integer division per output)
    tap_row = np.empty(KH * KW, np.intp)
    tap_col = np.empty(KH * KW, np.intp)
    for a in range(KH):
        for e in range(KW):
            tap_row[a * KW + e] = a * dh
            tap_col[a * KW + e] = e * dw
    # one row of scratch per task, allocated here rather than inside the parallel loop
    best_rows = np.empty((N * C, Wo), x.dtype)
    tap_rows = np.empty((N * C, Wo), x.dtype)
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                n, c = p // C, p % C
                plane = x[n, c]
                dplane = dx[n, c]
                done = 0  # rows of dplane zeroed so far
                best = best_rows[p]
                tap = tap_rows[p]
                for i in range(Ho):
                    # Pass 1: each window's maximum (NaN winning), as in the forward pass.
                    best[:] = -np.inf
                    _each_tap(MAX, plane, best, best, i, sh, sw, ph, pw, dh, dw, KH, KW, lo, hi)
                    # Pass 2: which tap holds it, in PyTorch's order. A window with no element inside the
                    # input (possible with dilation) keeps tap -1: output -inf, no gradient.
                    tap[:] = -1
                    _each_tap(FIRST_TAP, plane, best, tap, i, sh, sw, ph, pw, dh, dw, KH, KW, lo, hi)
                    grow = dout[n, c, i]
                    done = _zero_rows(dplane, done, min(H, i * sh + (KH - 1) * dh - ph + 1))
                    for j in range(Wo):
                        k = int(tap[j])
                        if k >= 0:
                            dplane[i * sh + tap_row[k] - ph, j * sw + tap_col[k] - pw] += grow[j]
                _zero_rows(dplane, done, H)  # rows below every window


def _avg_counts(size: int, k: int, s: int, p: int, out_size: int, include_pad: bool) -> np.ndarray:
    """Per output position along one axis: how many taps count toward the divisor (PyTorch's rule: the
    window clipped to the padded input, or to the input alone without count_include_pad)."""
    start = np.arange(out_size) * s - p
    end = np.minimum(start + k, size + p)
    if not include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return (end - start).astype(np.intp)


@kernel
def _avg_fwd(x, out, sh, sw, ph, pw, KH, KW, hcnt, wcnt, ranges, ctr):
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    lo, hi = ranges[0], ranges[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                n, c = p // C, p % C
                plane = x[n, c]
                for i in range(Ho):
                    orow = out[n, c, i]
                    orow[:] = 0
                    _each_tap(SUM, plane, orow, orow, i, sh, sw, ph, pw, 1, 1, KH, KW, lo, hi)
                    for j in range(Wo):
                        orow[j] = orow[j] / x.dtype.type(hcnt[i] * wcnt[j])  # in x's dtype, as naive


@kernel
def _avg_bwd(dout, dx, sh, sw, ph, pw, KH, KW, hcnt, wcnt, ranges, ctr):
    N, C, H, W = dx.shape
    zero = dx.dtype.type(0)
    Ho, Wo = dout.shape[2], dout.shape[3]
    lo, hi = ranges[0], ranges[1]
    share_rows = np.empty((N * C, Wo), dx.dtype)  # one row per task, allocated outside the loop
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                n, c = p // C, p % C
                dplane = dx[n, c]
                done = 0  # rows of dplane zeroed so far
                share = share_rows[p]
                for i in range(Ho):
                    grow = dout[n, c, i]
                    for j in range(Wo):
                        share[j] = grow[j] / dx.dtype.type(hcnt[i] * wcnt[j])
                    done = _zero_rows(dplane, done, min(H, i * sh + KH - ph))
                    for a in range(KH):
                        ih = i * sh + a - ph
                        if ih < 0 or ih >= H:
                            continue
                        drow = dplane[ih]
                        for e in range(KW):
                            off = e - pw
                            _tap_row(SPREAD, share, drow, drow, lo[e], hi[e], sw, off, zero)
                _zero_rows(dplane, done, H)  # rows below every window


@_quiet
def max_pool2d_forward(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    out = fresh((g.N, g.C, g.Ho, g.Wo), x.dtype)
    launch(_max_fwd, x, out, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, g.dh, g.dw, _ow_ranges(g), counter())
    return out


@_quiet
def max_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = fresh(x.shape, x.dtype)
    launch(_max_bwd, dout, x, dx, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, g.dh, g.dw, _ow_ranges(g), counter())
    return dx


def _counts(g: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    return (
        _avg_counts(g.H, g.KH, g.sh, g.ph, g.Ho, g.count_include_pad),
        _avg_counts(g.W, g.KW, g.sw, g.pw, g.Wo, g.count_include_pad),
    )


@_quiet
def avg_pool2d_forward(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    out = fresh((g.N, g.C, g.Ho, g.Wo), x.dtype)
    hcnt, wcnt = _counts(g)
    launch(_avg_fwd, x, out, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, hcnt, wcnt, _ow_ranges(g), counter())
    return out


@_quiet
def avg_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = fresh(x.shape, x.dtype)
    hcnt, wcnt = _counts(g)
    launch(_avg_bwd, dout, dx, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, hcnt, wcnt, _ow_ranges(g), counter())
    return dx
