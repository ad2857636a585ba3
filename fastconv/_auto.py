"""method="auto": which concrete method runs one call.

A heuristic calibrated on ``fastconv bench`` and on the two gradients timed apart, interleaved, on this
project's 2-core AVX-512 machines (float32 and float64):

- pointwise convs: in float64 from 30 MFLOP, the jit kernels (packed panels, the dw transposing in
  registers), which beat im2col's GEMMs in forward, dx and dw on the pw layer (8.3, 8.3, 8.6 against
  10.7, 9.3, 10.6 ms) and in forward and dx on three other pointwise shapes (64 channels at 32x32, 512
  at 7x7, 64 -> 256 at 28x28; dw: 1.5x and 1.8x faster on two, 1.3x slower at 7x7); in float32 from
  30 MFLOP, im2col's forward and dx with the jit dw (its 32-channel tiles: 3.2 against 4.4 ms on pw,
  1.5x and 1.8x faster at 64 channels 32x32 and 64 -> 256 at 28x28, level at 512 at 7x7; the jit
  forward level with im2col on pw, its dx 0.82x); for small convs (8 x 16 x 8 x 8 -> 32: 14 against
  55 us, call overheads), im2col;
- forward: the jit kernels, except for pointwise convs (above) and, in float64, convs
  of at least 30 MFLOP and 128 output channels per group whose im2col forward stacks its kernel rows
  into large GEMMs. Timed on a loaded machine, im2col's forward took 61-64 against 75-79 ms median on
  the down layer, and 89-95 against 113-122 on res. On a quiet machine earlier that day, res was
  estimated at 66 against jit's 61 (the im2col forward before the stacked GEMMs, scaled by the 1.2x
  they measured): at most 8% slower there, so im2col is the choice that stays within 10% of the better
  method under either load. vgg (64 channels) keeps the jit kernels: equal under load, about 1.3x
  faster on the quiet machine;
- backward of the float64 convs whose forward takes im2col above: dx from im2col (at stride 1 its
  stacked GEMMs: 93-95 against the jit dx's 120-123 ms on res under load; on down, im2col's fold,
  80-87 against 89-94), dw from the jit kernels (105 against 111-117 on res; 64-69 against 69-76 on
  down). With the jit dx on a quiet machine about level with the previous im2col dx, which the
  stacked GEMMs made 1.13-1.17x faster, im2col's dx is not expected to be slower there;
- any other backward: the jit kernels. With one task per thread and tiled channel-block copies, the jit
  dw beat im2col's GEMMs on the res, vgg and down layers in both dtypes (down: 27-30 against 32-33 ms in
  float32, 42-51 against 48-55 in float64), and the jit dx, running every phase of a strided dx in one
  launch, matched or beat im2col's fold. (Before that, auto took strided layers' dw, and at times their
  dx, from im2col.)

- narrow output rows: where the jit forward's channel tile computes at least 1.5 columns per output
  column (``column_waste``: 17-wide rows in 16-column tiles, 32 / 17), im2col's forward and dx with the
  jit dw. Measured on an AMD Zen 1 (AVX2), float32, best of 7, ms, jit against im2col forward and
  jit against (im2col dx, jit dw) backward: Inception's 1x7 at 17x17 (k1x7) 30.3 / 21.6 and 44.0 / 39.8,
  7x1 30.7 / 22.8 and 46.9 / 39.0; the odd small shape (6 columns) 0.15 / 0.17 and 0.66 / 0.42. lenet's
  24 columns (1.33) keep the jit kernels, 2.8x PyTorch's speed there. Depthwise convs' row tiles are
  faster than im2col at any width and are left out (docs/shapes.md).

Pools always use jit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._params import ConvGeometry

SMALL_FLOPS = 30e6  # below this (seed001: 18 MFLOP), the jit kernels: launches and calls dominate
STACKED_CHANNELS = 128  # output channels per group from which the float64 forward takes im2col
COLUMN_WASTE = 1.5  # columns the jit forward's tile computes per output column, from which im2col runs


def _conv_choice(g: ConvGeometry, dtype: np.dtype, direction: str, methods: dict[str, Any]
                 ) -> str | tuple[str, str]:
    """A method name, or for the backward pass possibly (dx's method, dw's method). methods: the op's
    registry entries, whose declared hooks answer questions about a geometry (im2col's
    ``stacks_gemms``)."""
    if g.pointwise:
        if g.flops < SMALL_FLOPS:
            return "im2col"
        if np.dtype(dtype) == np.float64:
            return "jit"
        return "im2col" if direction == "forward" else ("im2col", "jit")
    if np.dtype(dtype) == np.float64 and g.Fg >= STACKED_CHANNELS and g.flops >= SMALL_FLOPS:
        stacks = methods["im2col"].hook("stacks_gemms") if "im2col" in methods else None
        if stacks is not None and stacks(g, dtype):
            return "im2col" if direction == "forward" else ("im2col", "jit")
    waste = methods["jit"].hook("column_waste") if "jit" in methods else None
    if waste is not None and waste(g, dtype) >= COLUMN_WASTE:
        return "im2col" if direction == "forward" else ("im2col", "jit")
    return "jit"


def choose(op: str, geometry: Any, dtype: np.dtype, methods: dict[str, Any], available: tuple[str, ...],
           direction: str = "forward") -> str | tuple[str, str]:
    """The method for one call; for a conv2d backward pass possibly a pair (dx's method, dw's).
    methods: the op's registry entries; available: the names of those that can run here."""
    if op == "conv2d":  # only the methods that can run here answer questions (a hook imports its module)
        pick = _conv_choice(geometry, dtype, direction, {k: m for k, m in methods.items() if k in available})
    else:
        pick = "jit"
    if isinstance(pick, str):
        return pick if pick in available else _fallback(available)
    dx, dw = (p if p in available else _fallback(available) for p in pick)
    return dx if dx == dw else (dx, dw)


def _fallback(available: tuple[str, ...]) -> str:
    for name in ("jit", "im2col"):
        if name in available:
            return name
    return "naive"
