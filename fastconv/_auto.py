"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart, interleaved, on this
project's 2-core AVX-512 machines (float32 and float64):

- forward: the jit kernels, except for pointwise convs (plain GEMMs win there);
- backward of a pointwise conv, or of a strided one that is not tiny: im2col (BLAS wins those dw; its
  fold beat the jit method's phase-by-phase dx by 1.4-1.6x on the down layer, and since the jit dx runs
  all phases in one launch the two backward passes are within noise of each other there);
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


def _conv_choice(g: ConvGeometry, direction: str) -> str:
    if direction == "forward":
        return "im2col" if g.pointwise else "jit"
    depthwise = g.groups > 1 and g.groups == g.C
    big = g.flops >= SMALL_FLOPS and not depthwise
    if g.pointwise or (big and (g.sh > 1 or g.sw > 1)):
        return "im2col"
    return "jit"


def choose(op: str, geometry: Any, dtype: np.dtype, available: tuple[str, ...],
           direction: str = "forward") -> str:
    """The method for one call (dtype: part of the interface; the present rules do not need it)."""
    pick = _conv_choice(geometry, direction) if op == "conv2d" else "jit"
    return pick if pick in available else _fallback(available)


def _fallback(available: tuple[str, ...]) -> str:
    for name in ("jit", "im2col"):
        if name in available:
            return name
    return "naive"
