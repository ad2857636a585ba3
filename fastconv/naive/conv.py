"""conv2d as loops over output positions with np.sum over each window (notes 000 and 004, corrected).

Corrections against the notes: integer output sizes; stride, dilation, groups and asymmetric padding in
both directions; dw and db computed; dx returned without its padding (no ``x[p:-p]``, which is empty
for p == 0); the scatter form of the backward uses the kernel unrotated.
"""

from __future__ import annotations

import numpy as np

from .._params import ConvGeometry
from .._quiet import quiet as _quiet


def _pad(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    xp = np.zeros((g.N, g.C, g.H + g.pt + g.pb, g.W + g.pl + g.pr), dtype=x.dtype)
    xp[:, :, g.pt : g.pt + g.H, g.pl : g.pl + g.W] = x
    return xp


def _window(g: ConvGeometry, f: int, i: int, j: int) -> tuple[slice, slice, slice]:
    """Channels, rows and columns of the padded input that output (f, i, j) reads."""
    c0 = (f // g.Fg) * g.Cg
    r0, q0 = i * g.sh, j * g.sw
    return (
        slice(c0, c0 + g.Cg),
        slice(r0, r0 + (g.KH - 1) * g.dh + 1, g.dh),
        slice(q0, q0 + (g.KW - 1) * g.dw + 1, g.dw),
    )


@_quiet
def conv2d_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry
) -> np.ndarray:
    xp = _pad(x, g)
    out = np.zeros((g.N, g.F, g.Ho, g.Wo), dtype=x.dtype)
    for n in range(g.N):
        for f in range(g.F):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    out[n, f, i, j] = np.sum(xp[n][_window(g, f, i, j)] * w[f])
            if b is not None:
                out[n, f] += b[f]
    return out


@_quiet
def conv2d_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, g: ConvGeometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xp = _pad(x, g)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for n in range(g.N):
        for f in range(g.F):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    win = _window(g, f, i, j)
                    dxp[n][win] += dout[n, f, i, j] * w[f]
                    dw[f] += dout[n, f, i, j] * xp[n][win]
    db = dout.sum(axis=(0, 2, 3))
    dx = np.ascontiguousarray(dxp[:, :, g.pt : g.pt + g.H, g.pl : g.pl + g.W])
    return dx, dw, db
