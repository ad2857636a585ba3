"""The jit conv forward: the channel (or row) tiles over the padded, phase-split input, packed once or
image by image in the tasks, or read in place; pointwise convs flattened to one long row per image, or
by the panels where the dtype has a panel tile."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..._geometry import flat_pointwise, input_rows, tap_columns
from ..._params import ConvGeometry
from ..._workspace import fresh
from .forward_tiles import in_place, packs_per_image, run_packed_tiles, run_tiles, tile_source
from .panels import pointwise_panels
from .plan import DEFAULT, Plan
from .tiles import Tile, conv_tile, panel_tile


def forward_tile(g: ConvGeometry, dtype: np.dtype) -> Tile:
    """The tile the forward picks: a pointwise conv's panel tile if its dtype has one, else the channel
    or row tile for its output channels per group and (flattened) output rows."""
    if g.pointwise:
        tile = panel_tile(dtype)
        if tile is not None:
            return tile
    flat = flat_pointwise(g) or g
    return conv_tile(g.Fg, np.dtype(dtype), flat.Wo)


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry,
                   plan: Plan = DEFAULT) -> np.ndarray:
    tile = plan.forward_tile or forward_tile(g, x.dtype)
    bias = np.zeros(g.F, x.dtype) if b is None else b
    if tile.family == "panels":
        out = pointwise_panels(tile, x.reshape(g.N, g.C, g.H * g.W), w, g.groups, bias)
        return out.reshape(g.N, g.F, g.Ho, g.Wo)
    flat = flat_pointwise(g)
    if flat is not None:
        out = conv2d_forward(x.reshape(g.N, g.C, 1, g.H * g.W), w, b, flat, replace(plan, forward_tile=tile))
        return out.reshape(g.N, g.F, g.Ho, g.Wo)
    colph, coloff = tap_columns(g.KW, g.dw, g.sw)
    vw = tile.cols
    rows = input_rows(g)
    cols = -(-g.Wo // vw) * vw + int(coloff[-1])
    reach = g.Wo + int(coloff[-1])
    has_overlap = "overlap" in tile.variants
    if packs_per_image(tile, g.N, plan.packed) and not (
            plan.packed is None and in_place(x, rows, reach, g.pt, g.pl, g.sw, g.Wo, vw, has_overlap)):
        out = fresh((g.N, g.F, g.Ho, g.Wo), x.dtype)
        run_packed_tiles(tile, x, w, g.groups, bias, out, g.pt, g.pl, g.sw, 0, g.sh, g.dh, rows, cols,
                         colph, coloff)
        return out
    xpk, overlap = tile_source(x, rows, cols, reach, g.pt, g.pl, g.sw, g.Wo, vw, has_overlap)
    out = fresh((g.N, g.F, g.Ho, g.Wo), x.dtype)
    run_tiles(tile, xpk, w, g.groups, bias, out, g.sh, g.dh, colph, coloff, overlap=overlap)
    return out
