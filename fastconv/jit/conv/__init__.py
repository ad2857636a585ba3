"""conv2d with numba: the notes' loops, restructured for the CPU. The entry points of the jit method.

The package, one job a module (docs/jit-conv.md explains each kernel family):

- ``tiles``: the register tiles as records, and the pickers that choose among them;
- ``tunables``: thresholds and chunk sizes, named, documented, resettable;
- ``plan``: the decisions of one call, as an object a caller may pass;
- ``packing``: the input padded and split by column phase, the weights packed, offset tables;
- ``forward_tiles``: the channel and row tiles the forward and dx run on, and their kernels;
- ``panels``: pointwise convs as packed GEMM panels; ``forward``: the forward;
- ``dx``: dx by phases, or by a GEMM and a fold; ``dw``, ``dw_chans``: dw; ``db``: db.

Every task writes only what it owns and reduces in a fixed order, so results are bitwise identical for
any thread count and any plan. Each thread claims runs of tasks from its own equal share and then from the
others' (_numba.claim), so that a thread slowed by another process takes fewer of them. Nothing here
compiles at import: each kernel is made from its tile record on first use and compiled (or loaded from
numba's disk cache) on its first call.
"""

from __future__ import annotations

import numpy as np

from ..._backward import conv_backward
from ..._geometry import dx_phases, flat_pointwise
from ..._params import ConvGeometry
from ..._quiet import quiet as _quiet
from . import db as _db
from . import dw as _dw
from . import dx as _dx
from . import forward as _forward
from .plan import DEFAULT, Plan
from .tiles import dw_chans_tile, panel_tile

__all__ = ["Plan", "column_waste", "conv2d_backward", "conv2d_backward_dw", "conv2d_backward_dw_db",
           "conv2d_backward_dx", "conv2d_bias_grad", "conv2d_forward", "plan"]


def plan(g: ConvGeometry, dtype: np.dtype) -> Plan:
    """The tiles a call on this geometry and dtype picks, as a Plan (its paths left to the call: packed
    and fold None). Passing it back gives the same results as passing none."""
    dtype = np.dtype(dtype)
    flat = flat_pointwise(g) or g
    dx_tile = panel_tile(dtype) if g.pointwise else None
    if dx_tile is None:
        dx_tile = _dx.dx_tile(flat, dtype) if dx_phases(flat) else None
    return Plan(forward_tile=_forward.forward_tile(g, dtype), dx_tile=dx_tile,
                dw_tile=dw_chans_tile(flat.Cg, flat.Fg, dtype))


def column_waste(g: ConvGeometry, dtype: np.dtype) -> float:
    """Columns the forward's channel tile computes per output column (1.0: none wasted; a 17-wide row
    in 16-column tiles: 32 / 17), or 1.0 for other tiles (pointwise panels and flattened rows; a
    depthwise conv's row tiles, which are faster than im2col whatever their width): the hook
    method="auto" asks (see fastconv._auto)."""
    tile = _forward.forward_tile(g, np.dtype(dtype))
    if tile.family != "channels" or g.pointwise:
        return 1.0
    return -(-g.Wo // tile.cols) * tile.cols / g.Wo


@_quiet
def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry,
                   plan: Plan = DEFAULT) -> np.ndarray:
    return _forward.conv2d_forward(x, w, b, g, plan)


@_quiet
def conv2d_backward_dx(dout: np.ndarray, w: np.ndarray, g: ConvGeometry, plan: Plan = DEFAULT) -> np.ndarray:
    return _dx.conv2d_backward_dx(dout, w, g, plan)


@_quiet
def conv2d_backward_dw(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, plan: Plan = DEFAULT) -> np.ndarray:
    return _dw.dw_and_db(dout, x, g, False, plan)[0]


@_quiet
def conv2d_backward_dw_db(dout: np.ndarray, x: np.ndarray, g: ConvGeometry, plan: Plan = DEFAULT
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(dw, db): for a pointwise conv the dw kernel sums db from dout while it has it in cache, instead of
    a separate pass through dout; else conv2d_backward_dw and conv2d_bias_grad."""
    dw, db = _dw.dw_and_db(dout, x, g, True, plan)
    return dw, conv2d_bias_grad(dout) if db is None else db


conv2d_bias_grad = _db.conv2d_bias_grad

conv2d_backward = conv_backward(conv2d_backward_dx, conv2d_backward_dw, conv2d_bias_grad,
                                conv2d_backward_dw_db)
