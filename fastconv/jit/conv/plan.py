"""The decisions of one jit conv call, as an object: which tile each kernel runs and which of the
equivalent paths it takes. ``fastconv.jit.conv.plan(g, dtype)`` makes the one a call would use; a caller
(a test, an autotuner) can build or ``dataclasses.replace`` one and pass it as ``plan=`` to the entry
points. Every
plan gives the same results, bitwise, for every thread count: the paths and tiles differ in speed only
(the channel tiles and dw tiles sum each output's terms in one order, see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from .tiles import Tile


@dataclass(frozen=True)
class Plan:
    """None means: decided when the call runs (tiles.py's pickers, TUNABLES); see fastconv.jit.conv.plan
    for the plan a call would use."""

    forward_tile: Tile | None = None  # channels or rows tile, or for a pointwise conv a panels tile
    dx_tile: Tile | None = None  # the same for dx
    packed: bool | None = None  # forward and dx: pack each image in its task (if the tile has the variant)
    fold: bool | None = None  # dx of one input channel per group by a GEMM and a fold (where it applies)
    dw_tile: Tile | None = None  # channel-vector dw tile (dw_chans family), where the channels fill one


DEFAULT = Plan()
