"""Conv geometry that several methods share: where a conv's taps read, which input rows a forward needs,
and dx as stride-1 phase convolutions. Plain Python and NumPy, below every method: the jit and im2col
modules import it, never each other.

``columns_inside`` is also compiled into kernels (each kernel module wraps it with its numba decorator),
so it uses only what numba compiles.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from ._params import ConvGeometry


def columns_inside(off: int, sw: int, W: int, J: int) -> tuple[int, int]:
    """The columns j in [jlo, jhi) of [0, J) whose input column j*sw + off lies in [0, W)."""
    jlo = min(J, max(0, -(off // sw)))  # ceil(-off / sw), at least 0
    jhi = min(J, max(jlo, (W - 1 - off) // sw + 1))
    return jlo, jhi


def flat_pointwise(g: ConvGeometry) -> ConvGeometry | None:
    """For a 1x1 kernel at stride 1 without padding, the same conv on images of one row of H*W pixels:
    long contiguous rows fill the vector tiles (a 14-wide row wastes 2 of 16 lanes and every row ends a
    tile). None for any other conv."""
    if g.pointwise and g.H > 1:
        return replace(g, H=1, W=g.H * g.W, Ho=1, Wo=g.H * g.W)
    return None


def input_rows(g: ConvGeometry) -> int:
    """The padded input rows a forward reads: from row 0 to the last tap of the last output row."""
    return (g.Ho - 1) * g.sh + (g.KH - 1) * g.dh + 1


@functools.lru_cache(maxsize=64)
def tap_columns(KW: int, dw: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
    """Where tap kw reads in an input whose columns are split by phase (column mod sw): phase
    (kw*dw) % sw, offset (kw*dw) // sw. Remembered: callers must not modify them (not marked read-only,
    which numba would compile separately)."""
    taps = np.arange(KW) * dw
    return (taps % sw).astype(np.intp), (taps // sw).astype(np.intp)


# ------------------------------------------------------------------------------------ dx as phases
def _phase_taps(r: int, K: int, d: int, s: int) -> tuple[list[int], int]:
    """Taps k whose padded position k*d is congruent to r mod s, and their spacing in dout (in rows)."""
    taps = [k for k in range(K) if (k * d - r) % s == 0]
    step = (taps[1] - taps[0]) * d // s if len(taps) > 1 else 1
    return taps, step


def phase_range(r: int, pad: int, size: int, s: int) -> tuple[int, int]:
    """First q and count of padded positions q*s + r that fall inside the unpadded input."""
    q0 = -((r - pad) // s)  # ceil((pad - r) / s)
    q1 = (pad + size - 1 - r) // s
    return q0, max(0, q1 - q0 + 1)


class DxPhase(NamedTuple):
    """One phase of dx: the positions (h0 + i*sh, w0 + j*sw) for i < nh, j < nw. It is a stride-1
    convolution of dout with the flipped sub-kernel of the taps taps_h x taps_w, which lie step_h rows and
    step_w columns apart in dout; its first output reads dout at row base_h, column base_w (either may be
    negative: rows and columns outside dout count as zero)."""

    h0: int
    w0: int
    nh: int
    nw: int
    taps_h: list[int]
    taps_w: list[int]
    step_h: int
    step_w: int
    base_h: int
    base_w: int


def dx_phases(g: ConvGeometry) -> list[DxPhase]:
    """The phases (dx position mod stride) of dx that some tap reaches; with stride 1, all of dx."""
    # dx[q] = sum_t w[tap_t] * dout[q - m_t], m_t = (tap_t*d - r) // s, with the taps flipped so that
    # the source index grows with the tap: source = base + i + a * step.
    phases = []
    for rh in range(g.sh):
        qh, nh = phase_range(rh, g.pt, g.H, g.sh)
        taps_h, step_h = _phase_taps(rh, g.KH, g.dh, g.sh)
        for rw in range(g.sw):
            qw, nw = phase_range(rw, g.pl, g.W, g.sw)
            taps_w, step_w = _phase_taps(rw, g.KW, g.dw, g.sw)
            if nh == 0 or nw == 0 or not taps_h or not taps_w:
                continue  # no dx positions here, or none that any tap reaches: they stay zero
            base_h = qh - (taps_h[-1] * g.dh - rh) // g.sh
            base_w = qw - (taps_w[-1] * g.dw - rw) // g.sw
            h0, w0 = qh * g.sh + rh - g.pt, qw * g.sw + rw - g.pl
            phases.append(DxPhase(h0, w0, nh, nw, taps_h, taps_w, step_h, step_w, base_h, base_w))
    return phases


def residues(g: ConvGeometry) -> int:
    """How many residues (dx row mod stride, dx column mod stride) hold dx positions."""
    rows = sum(1 for r in range(g.sh) if phase_range(r, g.pt, g.H, g.sh)[1] > 0)
    cols = sum(1 for r in range(g.sw) if phase_range(r, g.pl, g.W, g.sw)[1] > 0)
    return rows * cols


def transposed_kernel(w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """(F, Cg, KH, KW) -> (C, Fg, KH, KW): dx's channels are the outputs, dout's the inputs, per group."""
    wt = w.reshape(g.groups, g.Fg, g.Cg, g.KH, g.KW).transpose(0, 2, 1, 3, 4)
    return wt.reshape(g.C, g.Fg, g.KH, g.KW)


def phase_kernel(wt: np.ndarray, ph: DxPhase) -> np.ndarray:
    """One phase's flipped sub-kernel of the transposed kernel, contiguous."""
    return np.ascontiguousarray(wt[:, :, ph.taps_h[::-1]][:, :, :, ph.taps_w[::-1]])
