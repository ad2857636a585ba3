"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart, interleaved, on this
project's 2-core AVX-512 machines (float32 and float64):

- forward: the jit kernels, except for pointwise convs (plain GEMMs win there) and, in float64, convs
  of at least 30 MFLOP and 128 output channels per group whose im2col forward stacks its kernel rows
  into large GEMMs. Timed on a loaded machine, im2col's forward took 61-64 against 75-79 ms median on
  the down layer, and 89-95 against 113-122 on res. On the quiet machine of an hour before, res was
  estimated at 66 against jit's 61 (the im2col forward before the stacked GEMMs, scaled by the 1.2x
  they measured): at most 8% slower there, so im2col is the choice that stays within 10% of the better
  method under either load. vgg (64 channels) keeps the jit kernels: equal under load, about 1.3x
  faster on the quiet machine;
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
STACKED_CHANNELS = 128  # output channels per group from which the float64 forward takes im2col


def _conv_choice(g: ConvGeometry, dtype: np.dtype, direction: str) -> str:
    if g.pointwise:
        return "im2col"
    if (direction == "forward" and np.dtype(dtype) == np.float64 and g.Fg >= STACKED_CHANNELS
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
