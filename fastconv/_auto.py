"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` (this project's 2-core AVX-512 machines, float32 and
float64): the jit kernels win forward passes and small problems; BLAS (im2col) wins pointwise convs, the
widest forward GEMMs and the backward pass of anything but tiny layers. Pools always use jit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._params import ConvGeometry

# Backward FLOPs below which the jit kernels beat unfold + GEMM + fold (seed001, ~18 MFLOP, is below).
SMALL_BACKWARD_FLOPS = 30e6


def _conv_choice(g: ConvGeometry, direction: str) -> str:
    pointwise = g.KH == g.KW == 1 and g.sh == g.sw == 1 and g.pt == g.pb == g.pl == g.pr == 0
    if pointwise:
        return "im2col"
    depthwise = g.groups > 1 and g.groups == g.C
    if direction == "forward":
        wide = g.Fg >= 128 and g.Cg * g.KH * g.KW >= 576 and not depthwise
        return "im2col" if wide else "jit"
    return "jit" if g.flops < SMALL_BACKWARD_FLOPS or depthwise else "im2col"


def choose(op: str, geometry: Any, dtype: np.dtype, available: tuple[str, ...],
           direction: str = "forward") -> str:
    if op == "conv2d":
        pick = _conv_choice(geometry, direction)
    else:
        pick = "jit"
    if pick in available:
        return pick
    for fallback in ("jit", "im2col"):
        if fallback in available:
            return fallback
    return "naive"
