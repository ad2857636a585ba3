"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart, interleaved, on this
project's 2-core AVX-512 machines (float32 and float64):

- forward: the jit kernels, except for pointwise convs (plain GEMMs win there);
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


def _conv_choice(g: ConvGeometry) -> str:
    return "im2col" if g.pointwise else "jit"


def choose(op: str, geometry: Any, dtype: np.dtype, available: tuple[str, ...],
           direction: str = "forward") -> str:
    """The method for one call (dtype and direction: part of the interface; the present rules, the same
    for both directions and dtypes, do not need them)."""
    pick = _conv_choice(geometry) if op == "conv2d" else "jit"
    return pick if pick in available else _fallback(available)


def _fallback(available: tuple[str, ...]) -> str:
    for name in ("jit", "im2col"):
        if name in available:
            return name
    return "naive"
