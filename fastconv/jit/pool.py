"""Max and average pooling with numba.

Each parallel task owns one (n, c) plane of the output and of dx, so no two threads ever write the same
element and overlapping windows accumulate in a fixed order: results are bitwise the same for any thread
count. A plane is worked on in rows held in a thread's scratch, so the input plane is read from memory
once and the output once written; everything else stays in the cache. The windows are separable:

- forward, per output row: the window's rows are folded into one row (contiguous, vectorized), which is
  kept in a padded row buffer (-inf or 0 beyond the input's columns); then the columns of each window are
  folded from that buffer at the column stride (constant for strides 1 and 2, so LLVM vectorizes it).
- max backward: each input row's windows are folded column-wise first, keeping the tap of the maximum,
  then the rows of each window are folded (keeping the row), and dout is added at that one element.
  Rows first, then columns, finds exactly the element PyTorch's row-major scan finds (below).
- average backward: each output row's shares are spread over a padded row (column taps), which is then
  added to every input row of the window.

Max-pool follows PyTorch's CPU kernel exactly: the running maximum starts at -inf with the window's first
in-bounds element as its index, and an element replaces it when it is greater or NaN. So the first
maximum in row-major order wins, a NaN wins over everything, and of several NaNs the last one wins. The
fold keeps this order: with the same rule applied across rows to each row's own result, a row replaces
the running maximum exactly when the row-major scan would have moved into it, and the scan's pick inside
that row is the row's own first maximum (or last NaN). A window whose in-bounds elements are all -inf
ends the fold without a tap and takes its first in-bounds element, as PyTorch's initial index does.

Every loop writes an array it does not read in that loop (folds alternate between two scratch rows). A
loop of the form ``d[j] = v if v > d[j] else d[j]`` is turned by LLVM into a masked store (vmaskmov),
which AMD CPUs microcode: written that way the pools ran at about 1 ns an element in the cache.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._params import PoolGeometry
from .._quiet import quiet as _quiet
from .._workspace import fresh
from ._numba import claims_next, claims_start, counter, helper, inline, kernel, launch

MAX, SUM = 0, 1  # the fold of the forward pass: PyTorch's max rule, or a sum

# Rows of a thread's scratch (a 2-D array of padded-row width, allocated per thread so that no two
# threads share its reference count): the padded row, two fold rows (maximum or sum), two tap rows and
# the row of each window's tap (max backward).
PAD, FOLD, TAPS, WIN = 0, 1, 3, 5


def _row_taps(size: int, k: int, s: int, p: int, d: int, out_size: int) -> np.ndarray:
    """(2, out_size): for each output position along one axis, the taps [first, end) of its window that
    fall inside the input (tap t reads input index o*s + t*d - p); first >= end if none does."""
    base = np.arange(out_size) * s - p
    first = np.clip(-(base // d), 0, k)  # ceil(-base / d): the first tap at index >= 0
    end = np.clip((size - 1 - base) // d + 1, 0, k)
    return np.stack([first, np.maximum(end, first)]).astype(np.intp)


def _first_cols(g: PoolGeometry) -> np.ndarray:
    """(Wo,): the first in-bounds column tap of each output column's window, or -1 if none."""
    cols = _row_taps(g.W, g.KW, g.sw, g.pw, g.dw, g.Wo)
    return np.where(cols[0] < cols[1], cols[0], -1).astype(np.intp)


def _padded_width(g: PoolGeometry) -> int:
    """Columns of a padded row: the left padding, the input, and every column a window reaches."""
    return max(g.pw + g.W, (g.Wo - 1) * g.sw + (g.KW - 1) * g.dw + 1)


# Indexing rules the loops below keep, for LLVM to vectorize them:
# - no array views inside the row loops: a view updates the reference count of its parent's memory
#   (an atomic add, contended when both threads slice the same input), about 20-100 ns each;
# - column offsets are max(..., 0), so that LLVM knows an index is not negative and drops numba's
#   negative-index wraparound (with it, the loop is not vectorized: 1.5 against 0.4 ns an element);
# - every element a conditional expression may take is loaded before it: numba lowers ``a if c else
#   b[j]`` to a branch, and LLVM vectorizes the load in it as a masked load (slow on AMD CPUs).


@inline
def _pick(v, m):
    """PyTorch's max rule as a value: v replaces the running maximum m if greater or NaN."""
    return v if (v > m) | (v != v) else m


@inline
def _fold_rows(op, xp, S, base, dh, a0, a1, pw):
    """S[PAD, pw + w] = the fold with op of plane rows base + a*dh, a in [a0, a1), in order (the fold's
    identity if there are none); the steps between alternate between S's FOLD rows."""
    W = xp.shape[1]
    off = max(pw, 0)
    n = a1 - a0
    if n <= 0:
        ident = -np.inf if op == MAX else 0
        for w in range(W):
            S[PAD, off + w] = ident
    elif n == 1:
        r = base + a0 * dh
        for w in range(W):
            S[PAD, off + w] = xp[r, w]
    for s in range(1, n):
        r = base + (a0 + s) * dh
        last = s == n - 1
        dst, doff = (PAD, off) if last else (FOLD + s % 2, 0)
        if s == 1:
            r0 = base + a0 * dh
            if op == MAX:
                for w in range(W):
                    S[dst, doff + w] = _pick(xp[r, w], xp[r0, w])
            else:
                for w in range(W):
                    S[dst, doff + w] = xp[r0, w] + xp[r, w]
        else:
            src = FOLD + (s - 1) % 2
            if op == MAX:
                for w in range(W):
                    S[dst, doff + w] = _pick(xp[r, w], S[src, w])
            else:
                for w in range(W):
                    S[dst, doff + w] = S[src, w] + xp[r, w]


@inline
def _col_step(op, S, dst, src, off, n, sw):
    """S[dst, j] = S[src, j] op S[PAD, j*sw + off] for j < n (off >= 0)."""
    if op == MAX:
        for j in range(n):
            S[dst, j] = _pick(S[PAD, j * sw + off], S[src, j])
    else:
        for j in range(n):
            S[dst, j] = S[src, j] + S[PAD, j * sw + off]


@inline
def _col_gather(S, dst, n, sw):
    """S[dst, j] = S[PAD, j*sw] for j < n: tap 0 of every window."""
    for j in range(n):
        S[dst, j] = S[PAD, j * sw]


@inline
def _fold_cols(op, S, n, sw, dw, KW):
    """The fold with op over taps e of S[PAD, j*sw + e*dw], for j < n; returns the FOLD row holding it.
    The column stride is a constant for strides 1 and 2, so that LLVM vectorizes the strided loads."""
    if sw == 1:
        _col_gather(S, FOLD, n, 1)
    elif sw == 2:
        _col_gather(S, FOLD, n, 2)
    else:
        _col_gather(S, FOLD, n, sw)
    for e in range(1, KW):
        src, dst, off = FOLD + (e - 1) % 2, FOLD + e % 2, max(e * dw, 0)
        if sw == 1:
            _col_step(op, S, dst, src, off, n, 1)
        elif sw == 2:
            _col_step(op, S, dst, src, off, n, 2)
        else:
            _col_step(op, S, dst, src, off, n, sw)
    return FOLD + (KW - 1) % 2


@helper
def _pool_plane(op, xp, op_, S, sh, sw, ph, pw, dh, dw, KW, rtaps, divisor):
    """One plane of the forward pass: op_[i, j] = the window's maximum (op MAX) or its sum divided by
    divisor[i, j] (op SUM)."""
    Ho, Wo = op_.shape
    for i in range(Ho):
        _fold_rows(op, xp, S, i * sh - ph, dh, rtaps[0, i], rtaps[1, i], pw)
        row = _fold_cols(op, S, Wo, sw, dw, KW)
        if op == MAX:
            for j in range(Wo):
                op_[i, j] = S[row, j]
        else:
            for j in range(Wo):
                op_[i, j] = S[row, j] / divisor[i, j]


@kernel
def _max_fwd(x, out, sh, sw, ph, pw, KH, KW, dh, dw, rtaps, width, ctr):
    N, C = x.shape[0], x.shape[1]
    ntasks = N * C
    none = np.empty((1, 1), x.dtype)  # no divisor
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        S = np.empty((FOLD + 2, width), x.dtype)
        S[PAD, :] = -np.inf  # the padding columns stay -inf: only S[PAD, pw:pw + W] is ever written
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                _pool_plane(MAX, x[p // C, p % C], out[p // C, p % C], S, sh, sw, ph, pw, dh, dw, KW,
                            rtaps, none)


@kernel
def _avg_fwd(x, out, sh, sw, ph, pw, KH, KW, rtaps, width, divisor, ctr):
    N, C = x.shape[0], x.shape[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        S = np.empty((FOLD + 2, width), x.dtype)
        S[PAD, :] = 0  # the padding columns stay 0
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                _pool_plane(SUM, x[p // C, p % C], out[p // C, p % C], S, sh, sw, ph, pw, 1, 1, KW,
                            rtaps, divisor)


# The max backward's column taps run over a whole plane at once: the plane is copied into a padded plane
# P whose rows are Wq*sw long, where Wq >= Wo is the number of windows a padded row holds, so window j of
# row r starts at P[(r*Wq + j)*sw] and one loop of H*Wq iterations covers every row (loops of one row,
# 16-28 windows, are too short for LLVM's vector loop, which takes 32 elements a step, and ran scalar).
# T's rows: two fold rows of maxima, two of taps, then each (row, window)'s maximum and tap.
TM, TK, HM, HK = 0, 2, 4, 5


def _plane_windows(g: PoolGeometry) -> int:
    """Wq: windows in a padded row of the max backward's plane layout (>= Wo; the rest are not used)."""
    reach = max(g.pw + g.W, (g.Wo - 1) * g.sw + (g.KW - 1) * g.dw + 1)
    return -(-reach // g.sw)


@inline
def _tap_first(P, T, dm, dk, n, sw):
    """Tap 0 of every window: T[dm, q] = P[q*sw], T[dk, q] = tap 0, or no tap (-1) if it is -inf
    (PyTorch's rule from a running maximum of -inf)."""
    zero, none = T.dtype.type(0), T.dtype.type(-1)
    for q in range(n):
        v = P[q * sw]
        T[dm, q] = v
        T[dk, q] = zero if v != -np.inf else none


@inline
def _tap_next(P, T, pm, pk, dm, dk, off, e, n, sw):
    """Tap e: (T[dm], T[dk])[q] = the running (maximum, tap) (T[pm], T[pk])[q] with P[q*sw + off] folded in
    by PyTorch's rule."""
    te = T.dtype.type(e)
    for q in range(n):
        v, m, k = P[q * sw + off], T[pm, q], T[pk, q]
        take = (v > m) | (v != v)
        T[dm, q] = v if take else m
        T[dk, q] = te if take else k


@inline
def _row_argmax(P, T, n, sw, dw, KW):
    """T[HM, q], T[HK, q]: the maximum of the taps P[q*sw + e*dw] of window q (in row order) and its tap e
    (in x's dtype, so every array in the loops has one lane width; -1 if every element is -inf)."""
    for e in range(KW):
        last = e == KW - 1
        dm, dk = (HM, HK) if last else (TM + e % 2, TK + e % 2)
        pm, pk, off = TM + (e - 1) % 2, TK + (e - 1) % 2, max(e * dw, 0)
        if e == 0:
            if sw == 1:
                _tap_first(P, T, dm, dk, n, 1)
            elif sw == 2:
                _tap_first(P, T, dm, dk, n, 2)
            else:
                _tap_first(P, T, dm, dk, n, sw)
        elif sw == 1:
            _tap_next(P, T, pm, pk, dm, dk, off, e, n, 1)
        elif sw == 2:
            _tap_next(P, T, pm, pk, dm, dk, off, e, n, 2)
        else:
            _tap_next(P, T, pm, pk, dm, dk, off, e, n, sw)


@inline
def _window_argmax(T, S, Wq, base, dh, a0, a1, KW, n):
    """S[WIN, j]: the tap a*KW + e of window j's maximum over its rows base + a*dh, a in [a0, a1), from the
    rows' own (maximum, column tap) in T; -1 where no row holds one."""
    if a1 <= a0:
        for j in range(n):
            S[WIN, j] = -1
    for s in range(a1 - a0):
        a = a0 + s
        at = max((base + a * dh) * Wq, 0)
        shift = S.dtype.type(a * KW)
        dm, dk = FOLD + s % 2, (WIN if s == a1 - a0 - 1 else TAPS + s % 2)
        if s == 0:
            for j in range(n):
                k, v = T[HK, at + j], T[HM, at + j]
                S[dm, j] = v
                S[dk, j] = k + shift if k >= 0 else k
        else:
            pm, pk = FOLD + (s - 1) % 2, TAPS + (s - 1) % 2
            for j in range(n):
                v, m, k, pk_ = T[HM, at + j], S[pm, j], T[HK, at + j], S[pk, j]
                take = (v > m) | (v != v)
                S[dm, j] = v if take else m
                S[dk, j] = k + shift if take else pk_


@helper
def _max_bwd_plane(gp, xp, dp, S, P, T, Wq, sh, sw, ph, pw, dh, dw, KW, rtaps, first_col, tap_at):
    """One plane of the max backward: dp = dout's values gp added at each window's maximum. tap_at[k]: tap
    k's offset from its window's tap 0 in the flat plane (a table: an integer division per output costs
    more than the rest of the backward)."""
    H, W = xp.shape
    Ho, Wo = gp.shape
    off, row = max(pw, 0), Wq * sw
    for r in range(H):
        at = max(r * row + off, 0)
        for w in range(W):
            P[at + w] = xp[r, w]
    _row_argmax(P, T, H * Wq, sw, dw, KW)
    dflat = dp.reshape(H * W)
    dflat[:] = 0
    for i in range(Ho):
        a0, a1 = rtaps[0, i], rtaps[1, i]
        _window_argmax(T, S, Wq, i * sh - ph, dh, a0, a1, KW, Wo)
        at = (i * sh - ph) * W - pw  # window (i, 0)'s tap 0 in the flat plane (may be outside it)
        for j in range(Wo):
            k = int(S[WIN, j])
            if k < 0:  # every in-bounds element is -inf: the first one takes the gradient
                if a1 <= a0 or first_col[j] < 0:
                    continue
                k = a0 * KW + first_col[j]
            dflat[at + j * sw + tap_at[k]] += gp[i, j]


@kernel
def _max_bwd(dout, x, dx, sh, sw, ph, pw, KH, KW, dh, dw, rtaps, first_col, tap_at, width, Wq, ctr):
    N, C, H = x.shape[0], x.shape[1], x.shape[2]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        S = np.empty((WIN + 1, width), x.dtype)
        # the padded plane, with a row of slack for the taps of the last row's unused windows; its
        # padding stays -inf: only each row's input columns are ever written
        P = np.full((H + 1) * Wq * sw, -np.inf, x.dtype)
        T = np.empty((HK + 1, H * Wq), x.dtype)
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                n, c = p // C, p % C
                _max_bwd_plane(dout[n, c], x[n, c], dx[n, c], S, P, T, Wq, sh, sw, ph, pw, dh, dw, KW,
                               rtaps, first_col, tap_at)


@helper
def _avg_bwd_plane(gp, dp, S, sh, sw, ph, pw, KW, rtaps, divisor):
    """One plane of the average backward: each window's share of gp spread over its elements of dp."""
    H, W = dp.shape
    Ho, Wo = gp.shape
    off = max(pw, 0)
    width = S.shape[1]
    dp[:] = 0
    for i in range(Ho):
        for j in range(Wo):
            S[FOLD, j] = gp[i, j] / divisor[i, j]
        for w in range(width):
            S[PAD, w] = 0
        for e in range(KW):
            if sw == 1:
                for j in range(Wo):
                    S[PAD, j + e] += S[FOLD, j]
            elif sw == 2:
                for j in range(Wo):
                    S[PAD, j * 2 + e] += S[FOLD, j]
            else:
                for j in range(Wo):
                    S[PAD, j * sw + e] += S[FOLD, j]
        for a in range(rtaps[0, i], rtaps[1, i]):
            r = i * sh + a - ph
            for w in range(W):
                dp[r, w] += S[PAD, off + w]


@kernel
def _avg_bwd(dout, dx, sh, sw, ph, pw, KH, KW, rtaps, width, divisor, ctr):
    N, C = dx.shape[0], dx.shape[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        S = np.empty((FOLD + 1, width), dx.dtype)
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                _avg_bwd_plane(dout[p // C, p % C], dx[p // C, p % C], S, sh, sw, ph, pw, KW, rtaps, divisor)


@_quiet
def max_pool2d_forward(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    out = fresh((g.N, g.C, g.Ho, g.Wo), x.dtype)
    rtaps = _row_taps(g.H, g.KH, g.sh, g.ph, g.dh, g.Ho)
    launch(_max_fwd, x, out, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, g.dh, g.dw, rtaps, _padded_width(g),
           counter())
    return out


@_quiet
def max_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = fresh(x.shape, x.dtype)
    rtaps = _row_taps(g.H, g.KH, g.sh, g.ph, g.dh, g.Ho)
    tap_at = np.add.outer(np.arange(g.KH) * g.dh * g.W, np.arange(g.KW) * g.dw).ravel()
    launch(_max_bwd, dout, x, dx, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, g.dh, g.dw, rtaps, _first_cols(g),
           tap_at.astype(np.intp), _padded_width(g), _plane_windows(g), counter())
    return dx


def _avg_counts(size: int, k: int, s: int, p: int, out_size: int, include_pad: bool) -> np.ndarray:
    """Per output position along one axis: how many taps count toward the divisor (PyTorch's rule: the
    window clipped to the padded input, or to the input alone without count_include_pad)."""
    start = np.arange(out_size) * s - p
    end = np.minimum(start + k, size + p)
    if not include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return (end - start).astype(np.intp)


def _divisor(g: PoolGeometry, dtype: np.dtype) -> np.ndarray:
    """(Ho, Wo): each window's divisor, in x's dtype (the division is done in x's dtype, as naive's)."""
    hcnt = _avg_counts(g.H, g.KH, g.sh, g.ph, g.Ho, g.count_include_pad)
    wcnt = _avg_counts(g.W, g.KW, g.sw, g.pw, g.Wo, g.count_include_pad)
    return np.multiply.outer(hcnt, wcnt).astype(dtype)


@_quiet
def avg_pool2d_forward(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    out = fresh((g.N, g.C, g.Ho, g.Wo), x.dtype)
    rtaps = _row_taps(g.H, g.KH, g.sh, g.ph, 1, g.Ho)
    launch(_avg_fwd, x, out, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, rtaps, _padded_width(g),
           _divisor(g, x.dtype), counter())
    return out


@_quiet
def avg_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = fresh(x.shape, x.dtype)
    rtaps = _row_taps(g.H, g.KH, g.sh, g.ph, 1, g.Ho)
    launch(_avg_bwd, dout, dx, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, rtaps, _padded_width(g),
           _divisor(g, x.dtype), counter())
    return dx
