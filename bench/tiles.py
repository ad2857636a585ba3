"""Each register tile of a jit conv family forced on suite layers, against the tile the picker chooses:
the times, their ratio and whether the results are bitwise the same.

    python bench/tiles.py --family channels --dtype float32 --layers vgg,res
    python bench/tiles.py --family dw_chans --dtype float64 --tiles 6x8,8x16 --layers pw
    python bench/tiles.py --family panels --dtype float64 --layers pw

channels (and panels, on pointwise layers: pw) times the forward and dx (the tile forced on both where
it serves their channels), dw_chans the dw. --tiles picks records by rows x cols (default: every record
of the family and dtype, of every ISA). Each figure is the best of --rounds interleaved rounds in this
one process; a ratio is the default tile's time over the forced tile's (above 1: the forced tile is
faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastconv._params import conv_geometry
from fastconv._suite import CONV_LAYERS
from fastconv.jit import conv as jit_conv
from fastconv.jit.conv import tiles
from fastconv.jit.conv.plan import Plan


def _calls(family: str, g, x, w, dout, tile) -> list:
    """The timed calls of one plan: (name, call) for each direction the family runs."""
    if family == "dw_chans":
        plan = Plan(dw_tile=tile)
        return [("dw", lambda: jit_conv.conv2d_backward_dw(dout, x, g, plan))]
    fwd = tile if tile is None or tile.serves(g.Fg) else None
    dxt = tile if tile is None or tile.serves(g.Cg) else None
    plan = Plan(forward_tile=fwd, dx_tile=dxt)
    return [("fwd", lambda: jit_conv.conv2d_forward(x, w, None, g, plan)),
            ("dx", lambda: jit_conv.conv2d_backward_dx(dout, w, g, plan))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=("channels", "panels", "dw_chans"), default="channels")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--layers", default="seed001,vgg,res,down,pw")
    ap.add_argument("--tiles", default="", help="rows x cols of the records to force, e.g. 6x16,8x32")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    dtype = np.dtype(args.dtype)
    wanted = set(args.tiles.split(",")) if args.tiles else None
    records = [t for t in tiles.tiles(args.family, dtype)
               if t.max_channels is None and (wanted is None or f"{t.rows}x{t.cols}" in wanted)]
    layers = {layer.name: layer for layer in CONV_LAYERS}
    rng = np.random.default_rng(0)
    for name in args.layers.split(","):
        layer = layers[name]
        x = rng.standard_normal((layer.N, layer.C, layer.H, layer.W)).astype(dtype)
        w = rng.standard_normal((layer.F, layer.C, layer.K, layer.K)).astype(dtype)
        g = conv_geometry(x.shape, w.shape, layer.stride, layer.pad, 1, 1)
        dout = rng.standard_normal((g.N, g.F, g.Ho, g.Wo)).astype(dtype)
        chosen = jit_conv.plan(g, dtype)
        default = chosen.dw_tile if args.family == "dw_chans" else chosen.forward_tile
        plans = {"default": _calls(args.family, g, x, w, dout, None)}
        plans.update({str(t): _calls(args.family, g, x, w, dout, t) for t in records
                      if args.family != "dw_chans" or t.serves(g.Cg)})
        ref = [call() for _, call in plans["default"]]  # first calls compile
        same = {key: all(np.array_equal(call(), r) for (_, call), r in zip(calls, ref))
                for key, calls in plans.items()}
        best = {key: [float("inf")] * len(calls) for key, calls in plans.items()}
        for _ in range(args.rounds):
            for key, calls in plans.items():
                for i, (_, call) in enumerate(calls):
                    t = time.perf_counter()
                    call()
                    best[key][i] = min(best[key][i], time.perf_counter() - t)
        print(f"{name} {dtype.name} (default: {default})")
        for key, times in best.items():
            cells = [f"{what} {t * 1e3:8.2f} ms ({best['default'][i] / t:4.2f}x)"
                     for i, ((what, _), t) in enumerate(zip(plans[key], times))]
            print(f"  {key:34s} {'  '.join(cells)}  {'bitwise' if same[key] else 'DIFFERENT'}", flush=True)


if __name__ == "__main__":
    main()
