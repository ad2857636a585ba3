"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart, interleaved, on this
project's 2-core AVX-512 machines (float32 and float64):

- forward: the jit kernels, except for pointwise convs (plain GEMMs win there) and, in float64, strided
  convs whose im2col forward stacks its kernel rows into large GEMMs (the down layer: 61-63 against
  75-79 ms median in three interleaved runs on a loaded machine; the res layer, at stride 1, went
  either way depending on the load, so it keeps the jit kernels; below 30 MFLOP, the jit kernels);
- backward of a pointwise conv: im2col (plain GEMMs);
- any other backward: the jit kernels. With one task per thread and tiled channel-block copies, the jit
  dw beat im2col's GEMMs on the res, vgg and down layers in both dtypes (down: 27-30 against 32-33 ms in
  float32, 42-51 against 48-55 in float64), and the jit dx, running every phase of a strided dx in one
  launch, matched or beat im2col's fold. (Before that, auto took strided layers' dw, and at times their
  dx, from im2col.)

Pools always use jit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._params import ConvGeometry

SMALL_FLOPS = 30e6  # below this (seed001: 18 MFLOP), the jit kernels: launches and calls dominate


def _conv_choice(g: ConvGeometry, dtype: np.dtype, direction: str) -> str:
    if g.pointwise:
        return "im2col"
    if (direction == "forward" and np.dtype(dtype) == np.float64 and (g.sh > 1 or g.sw > 1)
            and g.flops >= SMALL_FLOPS):
        from .im2col.conv import _stacked_images

        if _stacked_images(g.N, g.F, g.KH, g.Ho, g.Wo, g.sh, g.dh, 8):
            return "im2col"
    return "jit"


def choose(op: str, geometry: Any, dtype: np.dtype, available: tuple[str, ...],
           direction: str = "forward") -> str:
    """The method for one call."""
    pick = _conv_choice(geometry, dtype, direction) if op == "conv2d" else "jit"
    return pick if pick in available else _fallback(available)


def _fallback(available: tuple[str, ...]) -> str:
    for name in ("jit", "im2col"):
        if name in available:
            return name
    return "naive"
