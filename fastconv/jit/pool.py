"""Max and average pooling with numba.

Each parallel task owns one (n, c) plane of the output and of dx, so no two threads ever write the same
element and overlapping windows accumulate in a fixed order: results are bitwise the same for any thread
count. A plane is read from memory once and the output or dx written once; everything between stays in a
thread's scratch, in the cache. The windows are separable:

- forward, per output row: the window's rows are folded into one row (contiguous, vectorized), kept in a
  padded row buffer (-inf or 0 beyond the input's columns); then each window's columns are folded from
  that buffer at the column stride (a constant for strides 1 and 2, so that LLVM vectorizes it).
- max backward, over a whole plane per pass (PoolPlan's layout): each window's columns are folded first,
  keeping the tap of the maximum, then its rows (keeping the row), and dout is added at that one element.
  Columns first, then rows, finds exactly the element PyTorch's row-major scan finds (below); rows first
  would not, on ties.
- average backward, per output row: the shares are spread over a padded row (column taps), which is then
  added to every input row of the window.

Max-pool follows PyTorch's CPU kernel exactly: the running maximum starts at -inf with the window's first
in-bounds element as its index, and an element replaces it when it is greater or NaN. So the first
maximum in row-major order wins, a NaN wins over everything, and of several NaNs the last one wins. The
fold keeps this order: with the same rule applied across rows to each row's own result, a row replaces
the running maximum exactly when the row-major scan would have moved into it, and the scan's pick inside
that row is the row's own first maximum (or last NaN). A window whose in-bounds elements are all -inf
ends the fold without a tap and takes its first in-bounds element, as PyTorch's initial index does.

Measured choices are in docs/pools.md; the rules the loops keep for LLVM to vectorize them are below,
after the geometry tables.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange

from .._params import PoolGeometry
from .._quiet import quiet as _quiet
from .._workspace import fresh
from ._numba import claims_next, claims_start, counter, helper, inline, kernel, launch
from .planes import load_plane, padded_width, plane_layout

MAX, SUM = 0, 1  # the fold of the forward pass: PyTorch's max rule, or a sum

# Rows of the forward's and the average backward's scratch S (a 2-D array of padded-row width, allocated
# by each thread so that no two threads share its reference count): the padded row, then two fold rows
# (maxima or sums) that the folds alternate between.
PAD, FOLD = 0, 1


def _row_taps(size: int, k: int, s: int, p: int, d: int, out_size: int) -> np.ndarray:
    """(2, out_size): for each output position along one axis, the taps [first, end) of its window that
    fall inside the input (tap t reads input index o*s + t*d - p); first >= end if none does."""
    base = np.arange(out_size) * s - p
    first = np.clip(-(base // d), 0, k)  # ceil(-base / d): the first tap at index >= 0
    end = np.clip((size - 1 - base) // d + 1, 0, k)
    return np.stack([first, np.maximum(end, first)]).astype(np.intp)


def _padded_width(g: PoolGeometry) -> int:
    """Columns of a padded row (planes.padded_width)."""
    return padded_width(g.W, g.Wo, g.KW, g.sw, g.pw, g.dw)


# Rules the loops below keep, for LLVM to vectorize them (measured on an AMD Zen 1; docs/pools.md):
# - every loop writes an array row it does not read in that loop: ``d[j] = v if v > d[j] else d[j]``
#   becomes a masked store (vmaskmov), which AMD CPUs microcode (1.5 ns an element);
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
def _fwd(op, x, out, sizes, rtaps, divisor, ctr):
    # One kernel for both pools (op MAX or SUM): each kernel's compile re-optimizes the helpers it calls,
    # so two kernels over the same _pool_plane cost about 6 s more than one. sizes: the geometry's sizes in
    # one array (a call of many arguments leaves a tuple of that length in CPython's free list, which the
    # leak test would count).
    sh, sw, ph, pw, KW, dh, dw, width = (sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5],
                                         sizes[6], sizes[7])
    N, C = x.shape[0], x.shape[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        S = np.empty((FOLD + 2, width), x.dtype)
        # the padding columns stay -inf (max) or 0 (average): only S[PAD, pw:pw + W] is ever written
        fill = -np.inf if op == MAX else 0.0
        for w in range(width):
            S[PAD, w] = fill
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                _pool_plane(op, x[p // C, p % C], out[p // C, p % C], S, sh, sw, ph, pw, dh, dw, KW, rtaps,
                            divisor)


# The max backward works on a whole plane in one loop per pass (see PoolPlan); its fold scratch T has
# these rows, each L long: two rows of maxima and two of taps that the folds alternate between, each
# window's column fold (maximum and tap), and each output window's tap. Like S, P and T are allocated
# inside the prange body on purpose: its loop runs once per thread (not per task), and each thread's
# scratch then has a reference count of its own.
T_M, T_K, T_HM, T_HK, T_WIN = 0, 2, 4, 5, 6
T_ROWS = 7


class PoolPlan(NamedTuple):
    """The plane layout of one pooling geometry (jit/planes.py; the padding is -inf): one loop of L
    iterations folds the columns of every window of every padded row, and one loop of Lo = Ho * Wq
    iterations folds tap a of every window: the column folds of window (i, j) for tap a are at
    row_at[a] + i*Wq + j.
    """

    Wq: int  # windows per padded row (>= Wo; the others are computed and never used)
    L: int  # windows in the padded plane: sh * ns * Wq
    Lo: int  # output windows in the padded layout: Ho * Wq
    plane_len: int  # elements of P, with a row of slack for the taps of the last row's unused windows
    plane_row: np.ndarray  # (H,): where input row r starts in P (its column 0), or -1 if no window reads it
    row_at: np.ndarray  # (KH,): where tap a's column folds of output row 0 start in T's rows
    first_tap: np.ndarray  # (Ho,): the first in-bounds row tap of each output row's windows
    first_col: np.ndarray  # (Wo,): the first in-bounds column tap of each output column's windows, or -1
    tap_at: np.ndarray  # (KH*KW,): tap k's offset from its window's tap 0 in the flat input plane


def _first_taps(size: int, k: int, s: int, p: int, d: int, out_size: int) -> np.ndarray:
    """(out_size,): for each output position along one axis, the first tap of its window that falls inside
    the input, or -1 if none does (_row_taps' first, where its range is not empty)."""
    first, end = _row_taps(size, k, s, p, d, out_size)
    return np.where(first < end, first, -1).astype(np.intp)


def _pool_plan(g: PoolGeometry) -> PoolPlan:
    """The max backward's plane layout for geometry g (see PoolPlan)."""
    lay = plane_layout(g.H, g.Ho, g.KH, g.sh, g.sw, g.ph, g.pw, g.dh, _padded_width(g))
    tap_at = np.add.outer(np.arange(g.KH) * g.dh * g.W, np.arange(g.KW) * g.dw).ravel()
    return PoolPlan(lay.Wq, lay.L, lay.Lo, lay.plane_len, lay.plane_row, lay.row_at,
                    _first_taps(g.H, g.KH, g.sh, g.ph, g.dh, g.Ho),
                    _first_taps(g.W, g.KW, g.sw, g.pw, g.dw, g.Wo), tap_at.astype(np.intp))


@inline
def _tap_first(P, T, dm, dk, n, sw):
    """Tap 0 of every window's columns: (T[dm], T[dk])[q] = (P[q*sw], tap 0), or no tap (-1) if that is
    -inf (PyTorch's rule from a running maximum of -inf). Taps are kept in x's dtype, so that every array
    in the loops has one lane width."""
    zero, none = T.dtype.type(0), T.dtype.type(-1)
    for q in range(n):
        v = P[q * sw]
        T[dm, q] = v
        T[dk, q] = zero if v != -np.inf else none


@inline
def _tap_next(P, T, pm, pk, dm, dk, n, off, e, sw):
    """Column tap e: (T[dm], T[dk])[q] = the running (maximum, tap) (T[pm], T[pk])[q] with P[q*sw + off]
    folded in by PyTorch's rule."""
    te = T.dtype.type(e)
    for q in range(n):
        v, m, k = P[q * sw + off], T[pm, q], T[pk, q]
        take = (v > m) | (v != v)
        T[dm, q] = v if take else m
        T[dk, q] = te if take else k


@inline
def _cols_argmax(P, T, n, sw, dw, KW):
    """(T[T_HM], T[T_HK])[q]: the maximum of window q's column taps P[q*sw + e*dw] and its tap e (-1 if every
    one is -inf). The steps between alternate between rows T_M, T_M+1 (maxima) and T_K, T_K+1 (taps)."""
    for e in range(KW):
        last = e == KW - 1
        dm, dk = (T_HM, T_HK) if last else (T_M + e % 2, T_K + e % 2)
        pm, pk, off = T_M + (e + 1) % 2, T_K + (e + 1) % 2, max(e * dw, 0)
        if e == 0:
            if sw == 1:
                _tap_first(P, T, dm, dk, n, 1)
            elif sw == 2:
                _tap_first(P, T, dm, dk, n, 2)
            else:
                _tap_first(P, T, dm, dk, n, sw)
        elif sw == 1:
            _tap_next(P, T, pm, pk, dm, dk, n, off, e, 1)
        elif sw == 2:
            _tap_next(P, T, pm, pk, dm, dk, n, off, e, 2)
        else:
            _tap_next(P, T, pm, pk, dm, dk, n, off, e, sw)


@inline
def _rows_argmax(T, n, row_at, KH, KW):
    """T[T_WIN, q]: the tap a*KW + e of output window q's maximum over its row taps a, from each row's
    (maximum, column tap) in T[T_HM], T[T_HK] at row_at[a] + q; -1 where no row holds one."""
    for a in range(KH):
        ra, shift = max(row_at[a], 0), T.dtype.type(a * KW)
        dm, dk = T_M + a % 2, (T_WIN if a == KH - 1 else T_K + a % 2)
        if a == 0:
            for q in range(n):
                v, k = T[T_HM, ra + q], T[T_HK, ra + q]
                T[dm, q] = v
                T[dk, q] = k  # tap a*KW + e with a = 0
        else:
            pm, pk = T_M + (a + 1) % 2, T_K + (a + 1) % 2
            for q in range(n):
                v, m, k, kp = T[T_HM, ra + q], T[pm, q], T[T_HK, ra + q], T[pk, q]
                take = (v > m) | (v != v)
                T[dm, q] = v if take else m
                T[dk, q] = k + shift if take else kp


@helper
def _max_bwd_plane(gp, xp, dp, P, T, plane_row, row_at, Wq, L, sh, sw, ph, pw, dw, KW, KH, first_tap,
                   first_col, tap_at):
    """One plane of the max backward: dp = dout's values gp added at each window's maximum. tap_at: each
    tap's offset in the flat plane (a table: an integer division per output costs more than the rest)."""
    H, W = xp.shape
    Ho, Wo = gp.shape
    load_plane(xp, P, plane_row)
    _cols_argmax(P, T, L, sw, dw, KW)
    _rows_argmax(T, Ho * Wq, row_at, KH, KW)
    dflat = dp.reshape(H * W)
    for f in range(H * W):
        dflat[f] = 0
    for i in range(Ho):
        at = (i * sh - ph) * W - pw  # window (i, 0)'s tap 0 in the flat plane (may be outside it)
        for j in range(Wo):
            k = int(T[T_WIN, i * Wq + j])
            if k < 0:  # every in-bounds element is -inf: the first one takes the gradient
                if first_tap[i] < 0 or first_col[j] < 0:
                    continue
                k = first_tap[i] * KW + first_col[j]
            # an in-bounds tap, so the index is not negative: unsigned, it skips numba's wraparound
            dflat[np.uintp(at + j * sw + tap_at[k])] += gp[i, j]


@kernel
def _max_bwd(dout, x, dx, sizes, plane_row, row_at, first_tap, first_col, tap_at, ctr):
    # sizes: the geometry's and the plan's sizes in one array (see max_pool2d_backward): a call of many
    # arguments leaves a tuple of that length in CPython's free list, which the leak test would count
    sh, sw, ph, pw, dw, KH, KW, Wq, L, plane_len = (sizes[0], sizes[1], sizes[2], sizes[3], sizes[4],
                                                    sizes[5], sizes[6], sizes[7], sizes[8], sizes[9])
    N, C = x.shape[0], x.shape[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        P = np.full(plane_len, -np.inf, x.dtype)  # the padding stays -inf
        T = np.empty((T_ROWS, L), x.dtype)
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for p in range(cur[0], cur[1]):
                n, c = p // C, p % C
                _max_bwd_plane(dout[n, c], x[n, c], dx[n, c], P, T, plane_row, row_at, Wq, L, sh, sw, ph, pw,
                               dw, KW, KH, first_tap, first_col, tap_at)


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


def _fwd_sizes(g: PoolGeometry) -> np.ndarray:
    return np.array([g.sh, g.sw, g.ph, g.pw, g.KW, g.dh, g.dw, _padded_width(g)], np.intp)


@_quiet
def max_pool2d_forward(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    out = fresh((g.N, g.C, g.Ho, g.Wo), x.dtype)
    rtaps = _row_taps(g.H, g.KH, g.sh, g.ph, g.dh, g.Ho)
    launch(_fwd, MAX, x, out, _fwd_sizes(g), rtaps, np.empty((1, 1), x.dtype), counter())  # no divisor
    return out


@_quiet
def max_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = fresh(x.shape, x.dtype)
    p = _pool_plan(g)
    sizes = np.array([g.sh, g.sw, g.ph, g.pw, g.dw, g.KH, g.KW, p.Wq, p.L, p.plane_len], np.intp)
    launch(_max_bwd, dout, x, dx, sizes, p.plane_row, p.row_at, p.first_tap, p.first_col, p.tap_at, counter())
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
    launch(_fwd, SUM, x, out, _fwd_sizes(g), rtaps, _divisor(g, x.dtype), counter())
    return out


@_quiet
def avg_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = fresh(x.shape, x.dtype)
    rtaps = _row_taps(g.H, g.KH, g.sh, g.ph, 1, g.Ho)
    launch(_avg_bwd, dout, dx, g.sh, g.sw, g.ph, g.pw, g.KH, g.KW, rtaps, _padded_width(g),
           _divisor(g, x.dtype), counter())
    return dx
