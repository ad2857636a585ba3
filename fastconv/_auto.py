"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart, interleaved, on this
project's 2-core AVX-512 machines (float32 and float64):

- forward: the jit kernels, except for pointwise convs (plain GEMMs win there);
- backward of a pointwise conv, or of a strided one that is not tiny: im2col (its fold beats the jit
  method's per-phase dx, 1.4-1.6x on the down layer, and BLAS wins that dw);
- any other backward: the jit kernels, except that in float64 a long reduction (Cg*KH*KW >= 1024)
  takes dw from im2col (dgemm beat the float64 dw tiles by 10% on the res layer), so one call may take
  dx from jit and dw from im2col.

Pools always use jit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._params import ConvGeometry

# FLOPs below which the jit kernels win whatever the shape (seed001, ~18 MFLOP, is below), and the
# reduction length (input channels per group x taps) from which dgemm wins float64's dw.
SMALL_FLOPS = 30e6
DW_GEMM_K_F64 = 1024


def _conv_choice(g: ConvGeometry, dtype: np.dtype, direction: str) -> str | tuple[str, str]:
    """A method name, or for the backward pass (method for dx, method for dw)."""
    if direction == "forward":
        return "im2col" if g.pointwise else "jit"
    depthwise = g.groups > 1 and g.groups == g.C
    big = g.flops >= SMALL_FLOPS and not depthwise
    if g.pointwise or (big and (g.sh > 1 or g.sw > 1)):
        return "im2col"
    if big and np.dtype(dtype) == np.float64 and g.Cg * g.KH * g.KW >= DW_GEMM_K_F64:
        return ("jit", "im2col")
    return "jit"


def choose(op: str, geometry: Any, dtype: np.dtype, available: tuple[str, ...],
           direction: str = "forward") -> str | tuple[str, str]:
    """The method for one call; for a conv2d backward pass possibly a pair (dx's method, dw's)."""
    pick = _conv_choice(geometry, dtype, direction) if op == "conv2d" else "jit"
    if isinstance(pick, str):
        return pick if pick in available else _fallback(available)
    dx, dw = (p if p in available else _fallback(available) for p in pick)
    return dx if dx == dw else (dx, dw)


def _fallback(available: tuple[str, ...]) -> str:
    for name in ("jit", "im2col"):
        if name in available:
            return name
    return "naive"
