"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart (this project's 2-core
AVX-512 machines, float32 and float64): the jit kernels win every forward pass but pointwise ones, and
the input gradient; BLAS (im2col) wins pointwise convs and the weight gradient of layers with a long
reduction (Cg*KH*KW >= 256). A backward pass may take dx from one method and dw from the other. Pools
always use jit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._params import ConvGeometry

# FLOPs below which the jit kernels beat unfold + GEMM on the weight gradient (seed001, ~18 MFLOP, is
# below), and the reduction length (input channels per group x taps) from which BLAS wins it.
SMALL_FLOPS = 30e6
DW_GEMM_K = 256


def _conv_choice(g: ConvGeometry, direction: str) -> str | tuple[str, str]:
    """A method name, or for the backward pass (method for dx, method for dw)."""
    pointwise = g.KH == g.KW == 1 and g.sh == g.sw == 1 and g.pt == g.pb == g.pl == g.pr == 0
    if pointwise:  # the input is the unfolded matrix already: plain GEMMs
        return "im2col" if direction == "forward" else ("im2col", "im2col")
    if direction == "forward":  # the register-tiled kernels win every other forward of the suite
        return "jit"
    depthwise = g.groups > 1 and g.groups == g.C
    big = g.flops >= SMALL_FLOPS and g.Cg * g.KH * g.KW >= DW_GEMM_K and not depthwise
    return ("jit", "im2col" if big else "jit")


def choose(op: str, geometry: Any, dtype: np.dtype, available: tuple[str, ...],
           direction: str = "forward") -> str | tuple[str, str]:
    """The method for one call; for a conv2d backward pass possibly a pair (dx's method, dw's)."""
    pick = _conv_choice(geometry, direction) if op == "conv2d" else "jit"
    if isinstance(pick, str):
        return pick if pick in available else _fallback(available)
    dx, dw = (p if p in available else _fallback(available) for p in pick)
    return dx if dx == dw else (dx, dw)


def _fallback(available: tuple[str, ...]) -> str:
    for name in ("jit", "im2col"):
        if name in available:
            return name
    return "naive"
