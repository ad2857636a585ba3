"""The jit conv's dw for grouped convs with one input channel per group (depthwise convs, any channel
multiplier): one output channel per task, its input planes one at a time.

dw[f, 0, a, e] = sum over images n and outputs (i, j) of dout[n, f, i, j] * xpad[n, c, i*sh + a*dh,
j*sw + e*dw], c = f // Fg the input channel of f's group and xpad the input with its zero padding.

Each image's input plane is copied into a padded plane P in the layout of jit/planes.py, and dout's
plane into a row of Wq columns, so that tap (a, e) of every output is one loop over q = i*Wq + j with a
constant stride. Each tap adds its products into its own row of S, elementwise over q, image after image;
at the end the valid positions (j < Wo) of each row are summed. So the products formed for the outputs
j < Wo are exactly naive's (with the padding's zeros: 0 * inf is NaN there as in naive), and those of the
unused positions j >= Wo, which may read any input value, are never summed. One task owns each output
channel and adds in a fixed order: dw is bitwise the same for any thread count.

The tile families of dw.py spent most of their lanes on padding here (one input channel per group):
on a depthwise 3x3 conv of 144 channels at 56x56 (docs/shapes.md, dw3) their dw took 17.9 ms against
PyTorch's 6.5.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._params import ConvGeometry
from .._numba import claims_next, claims_start, counter, helper, kernel, launch
from ..planes import load_plane, padded_width, plane_layout
from .db import row_sum


def applies(g: ConvGeometry) -> bool:
    """Whether dw takes this path: one input channel per group, more than one group (a single group of
    one input channel, lenet's first layer, keeps the output-column tiles: 20 output channels would be
    20 tasks over the whole batch)."""
    return g.Cg == 1 and g.groups > 1


@helper
def _channel(dout, x, dwf, f, c, P, S, D, plane_row, row_at, Wq, sw, dw, KH, KW):
    """dwf[f, :] for output channel f, whose input channel is c (see the module's docstring). The
    indices are unsigned: numba's negative-index wraparound kept these loops scalar (0.73 against 0.23
    ns a term, float32)."""
    N, _, Ho, Wo = dout.shape
    T, Lo = S.shape
    Sf = S.reshape(T * Lo)
    zero = S.dtype.type(0)
    for k in range(T * Lo):
        Sf[k] = zero
    for n in range(N):
        load_plane(x[n, c], P, plane_row)
        gp = dout[n, f]
        for i in range(Ho):
            for j in range(Wo):
                D[i * Wq + j] = gp[i, j]
        for a in range(KH):
            ra = np.uintp(max(row_at[a], 0))
            e3 = 0  # the taps done three at a time
            while sw == 1 and e3 + 3 <= KW:  # three taps a pass share D's loads: 1.4x faster a term
                s0 = np.uintp(a * KW + e3) * np.uintp(Lo)
                s1, s2 = s0 + np.uintp(Lo), s0 + np.uintp(2 * Lo)
                b0 = ra + np.uintp(max(e3 * dw, 0))
                b1, b2 = b0 + np.uintp(max(dw, 0)), b0 + np.uintp(max(2 * dw, 0))
                for q in range(Lo):
                    u = np.uintp(q)
                    d = D[u]
                    Sf[s0 + u] = Sf[s0 + u] + d * P[b0 + u]
                    Sf[s1 + u] = Sf[s1 + u] + d * P[b1 + u]
                    Sf[s2 + u] = Sf[s2 + u] + d * P[b2 + u]
                e3 += 3
            for e in range(e3, KW):
                srow = np.uintp(a * KW + e) * np.uintp(Lo)
                off = np.uintp(max(e * dw, 0))
                if sw == 1:
                    base = ra + off
                    for q in range(Lo):
                        u = np.uintp(q)
                        Sf[srow + u] = Sf[srow + u] + D[u] * P[base + u]
                elif sw == 2:
                    base = ra + ra + off
                    for q in range(Lo):
                        u = np.uintp(q)
                        Sf[srow + u] = Sf[srow + u] + D[u] * P[base + u + u]
                else:
                    step = np.uintp(max(sw, 0))
                    for q in range(Lo):
                        u = np.uintp(q)
                        Sf[srow + u] = Sf[srow + u] + D[u] * P[(ra + u) * step + off]
    for t in range(T):
        total = zero
        for i in range(Ho):
            total += row_sum(Sf, t * Lo + i * Wq, Wo)
        dwf[f, t] = total


@kernel
def _dw_planes(dout, x, dwf, sizes, plane_row, row_at, ctr):
    # sizes in one array: a call of many arguments leaves a tuple of that length in CPython's free list,
    # which the leak test would count
    Fg, Wq, sw, dw, KH, KW, plane_len = sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6]
    F, Ho = dout.shape[1], dout.shape[2]
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        # scratch allocated by each thread (its own reference count); P's padding stays 0, D's unused
        # columns are never summed
        P = np.zeros(plane_len, x.dtype)
        S = np.empty((KH * KW, Ho * Wq), x.dtype)
        D = np.zeros(Ho * Wq, x.dtype)
        cur = claims_start()
        while claims_next(ctr, F, tslot, cur):
            for f in range(cur[0], cur[1]):
                _channel(dout, x, dwf, f, f // Fg, P, S, D, plane_row, row_at, Wq, sw, dw, KH, KW)


def conv_dw_planes(dout: np.ndarray, x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """dw of a conv where applies(g)."""
    width = padded_width(g.W, g.Wo, g.KW, g.sw, g.pl, g.dw)
    lay = plane_layout(g.H, g.Ho, g.KH, g.sh, g.sw, g.pt, g.pl, g.dh, width)
    dwf = np.empty((g.F, g.KH * g.KW), x.dtype)
    sizes = np.array([g.Fg, lay.Wq, g.sw, g.dw, g.KH, g.KW, lay.plane_len], np.intp)
    launch(_dw_planes, np.ascontiguousarray(dout), np.ascontiguousarray(x), dwf, sizes, lay.plane_row,
           lay.row_at, counter())
    return dwf.reshape(g.F, 1, g.KH, g.KW)
