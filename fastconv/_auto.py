"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart, interleaved, on this
project's 2-core AVX-512 machines (float32 and float64):

- forward: the jit kernels, except for pointwise convs (plain GEMMs win there);
- backward of a pointwise conv: im2col (plain GEMMs);
- backward of a strided conv that is not tiny: dw from im2col (BLAS wins those dw: 28-40 against 37-53
  ms on the down layer in float32); in float32 dx from the jit kernels, which run every phase in one
  launch (25-38 against 29-43 ms there), in float64 from im2col too (the two dx within noise);
- any other backward: the jit kernels. (Until the float64 dw tiles of 16 input x 8 output channels,
  dgemm won float64's dw on the res layer by 10% and auto took dx and dw from different methods; now
  the jit dw is 1.2x faster there.)

Pools always use jit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._params import ConvGeometry

# FLOPs below which the jit kernels win whatever the shape (seed001, ~18 MFLOP, is below).
SMALL_FLOPS = 30e6


def _conv_choice(g: ConvGeometry, dtype: np.dtype, direction: str) -> str | tuple[str, str]:
    """A method name, or for the backward pass (dx's method, dw's method)."""
    if direction == "forward":
        return "im2col" if g.pointwise else "jit"
    depthwise = g.groups > 1 and g.groups == g.C
    big = g.flops >= SMALL_FLOPS and not depthwise
    if g.pointwise:
        return "im2col"
    if big and (g.sh > 1 or g.sw > 1):
        return ("jit", "im2col") if np.dtype(dtype) == np.float32 else "im2col"
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
