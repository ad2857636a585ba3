"""Max and average pooling as loops over output positions (notes 000, 002, 004, corrected).

Windows are taken in the unpadded input: the rows and columns of a window that fall in the padding are
simply left out, which is what padding with -inf (max) or with zeros (average) amounts to. Corrections
against the notes: integer output sizes, the pool width read from the width, the backward accumulates
(``+=``) where windows overlap, and the gradient of a max goes to one element only: the first maximum in
row-major order, or where the window holds NaN the last NaN, exactly as PyTorch's CPU kernel does.
"""

from __future__ import annotations

import numpy as np

from .._params import PoolGeometry
from .._quiet import quiet as _quiet


def _taps(start: int, k: int, d: int, size: int) -> np.ndarray:
    """Input indices start, start + d, ..., of a window of k taps that lie inside [0, size)."""
    idx = start + d * np.arange(k)
    return idx[(idx >= 0) & (idx < size)]


def _window(g: PoolGeometry, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        _taps(i * g.sh - g.ph, g.KH, g.dh, g.H),
        _taps(j * g.sw - g.pw, g.KW, g.dw, g.W),
    )


@_quiet
def max_pool2d_forward(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    out = np.empty((g.N, g.C, g.Ho, g.Wo), dtype=x.dtype)
    for n in range(g.N):
        for c in range(g.C):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    rows, cols = _window(g, i, j)
                    win = x[n, c][np.ix_(rows, cols)]
                    # NaN propagates; a window wholly in the padding (possible with dilation) is -inf
                    out[n, c, i, j] = np.max(win) if win.size else -np.inf
    return out


def _argmax_like_pytorch(win: np.ndarray) -> int:
    flat = win.ravel()
    nans = np.flatnonzero(np.isnan(flat))
    if nans.size:
        return int(nans[-1])
    return int(np.argmax(flat))  # first maximum


@_quiet
def max_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = np.zeros_like(x)
    for n in range(g.N):
        for c in range(g.C):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    rows, cols = _window(g, i, j)
                    if rows.size == 0 or cols.size == 0:
                        continue  # a window wholly in the padding passes no gradient
                    k = _argmax_like_pytorch(x[n, c][np.ix_(rows, cols)])
                    dx[n, c, rows[k // cols.size], cols[k % cols.size]] += dout[n, c, i, j]
    return dx


def _divisor(g: PoolGeometry, i: int, j: int, rows: np.ndarray, cols: np.ndarray) -> int:
    if not g.count_include_pad:
        return rows.size * cols.size
    # The window clipped to the padded input (with ceil_mode it may run past the padding).
    h0, w0 = i * g.sh - g.ph, j * g.sw - g.pw
    h1, w1 = min(h0 + g.KH, g.H + g.ph), min(w0 + g.KW, g.W + g.pw)
    return (h1 - h0) * (w1 - w0)


@_quiet
def avg_pool2d_forward(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    out = np.empty((g.N, g.C, g.Ho, g.Wo), dtype=x.dtype)
    for n in range(g.N):
        for c in range(g.C):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    rows, cols = _window(g, i, j)
                    total = np.sum(x[n, c][np.ix_(rows, cols)])
                    out[n, c, i, j] = total / _divisor(g, i, j, rows, cols)
    return out


@_quiet
def avg_pool2d_backward(dout: np.ndarray, x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    dx = np.zeros_like(x)
    for n in range(g.N):
        for c in range(g.C):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    rows, cols = _window(g, i, j)
                    share = dout[n, c, i, j] / _divisor(g, i, j, rows, cols)
                    dx[n, c, rows[:, None], cols[None, :]] += share
    return dx
