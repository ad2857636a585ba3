"""Independent references for the naive method: sliding-window views and einsum, written without loops
and without any of fastconv's kernels, so that a mistake in one is unlikely to repeat in the other."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fastconv._params import ConvGeometry, PoolGeometry


def _windows(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
             ho: int, wo: int) -> np.ndarray:
    """(N, C, ho, wo, kh, kw) view of the dilated, strided windows of an already padded input."""
    v = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return v[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (g.pt, g.pb), (g.pl, g.pr)))
    win = _windows(xp, g.KH, g.KW, g.sh, g.sw, g.dh, g.dw, g.Ho, g.Wo)
    win = win.reshape(g.N, g.groups, g.Cg, g.Ho, g.Wo, g.KH, g.KW)
    wg = w.reshape(g.groups, g.Fg, g.Cg, g.KH, g.KW)
    out = np.einsum("ngchwij,gfcij->ngfhw", win, wg).reshape(g.N, g.F, g.Ho, g.Wo)
    return out if b is None else out + b[None, :, None, None]


def _pool_pad(x: np.ndarray, g: PoolGeometry, value: float) -> np.ndarray:
    # Right/bottom extra so that a ceil_mode window running past the padding stays inside the array.
    extra_h = max(0, (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1 - (g.H + 2 * g.ph))
    extra_w = max(0, (g.Wo - 1) * g.sw + (g.KW - 1) * g.dw + 1 - (g.W + 2 * g.pw))
    return np.pad(x, ((0, 0), (0, 0), (g.ph, g.ph + extra_h), (g.pw, g.pw + extra_w)),
                  constant_values=value)


def max_pool2d(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    win = _windows(_pool_pad(x, g, -np.inf), g.KH, g.KW, g.sh, g.sw, g.dh, g.dw, g.Ho, g.Wo)
    return win.max(axis=(4, 5))


def avg_pool2d(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    total = _windows(_pool_pad(x, g, 0.0), g.KH, g.KW, g.sh, g.sw, 1, 1, g.Ho, g.Wo).sum(axis=(4, 5))
    # What counts toward the divisor: the input, plus (count_include_pad) the padding, never the part of
    # a ceil_mode window that runs past the padding.
    mask = np.zeros_like(_pool_pad(x[:1, :1], g, 0.0))
    if g.count_include_pad:
        mask[:, :, : g.H + 2 * g.ph, : g.W + 2 * g.pw] = 1.0
    else:
        mask[:, :, g.ph : g.ph + g.H, g.pw : g.pw + g.W] = 1.0
    count = _windows(mask, g.KH, g.KW, g.sh, g.sw, 1, 1, g.Ho, g.Wo).sum(axis=(4, 5))
    return (total / count).astype(x.dtype)
