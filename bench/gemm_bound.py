"""How fast the im2col forward could be with NumPy's BLAS: its GEMMs alone against PyTorch's forward.

For each suite conv layer, in interleaved rounds: the im2col method's whole forward; the same GEMMs
alone (np.matmul on the already unfolded input, the GEMMs the method runs: per row phase one GEMM of
its kernel rows stacked over several images, or KH per image, or one per image for a 1x1 conv; no
unfold, no adding up of the kernel rows, no bias); PyTorch's forward (in its own process, as in
`fastconv bench`). PyTorch's time over the GEMM-only time is an upper bound of the im2col forward's
ratio to PyTorch on this machine: no unfold or fold can make the method faster than its own GEMMs.

Usage: python bench/gemm_bound.py [--dtype float32|float64] [--rounds 9] [--layers vgg,res,down,pw]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastconv
import fastconv.jit._numba
from fastconv import _api, _bench, _suite
from fastconv._params import conv_geometry
from fastconv.im2col import conv as im2col


def gemm_only(layer: _suite.ConvLayer, dtype: np.dtype):
    """A call that runs the im2col forward's GEMMs on its unfolded input (made once, here)."""
    x, w, _, _ = layer.arrays(dtype)
    g = conv_geometry(x.shape, w.shape, stride=layer.stride, padding=layer.pad, dilation=1, groups=1)
    if g.pointwise:
        xm = x.reshape(g.N, 1, g.C, g.H * g.W)
        wm = w.reshape(1, 1, g.F, g.C)
        out = np.empty((g.N, 1, g.F, g.H * g.W), dtype)
        return lambda: np.matmul(wm, xm, out=out)
    wa = im2col._row_kernels(w, 1)
    inner = im2col._stacked_images(g.N, g.F, g.KH, g.Ho, g.Wo, g.sh, g.dh, dtype.itemsize)
    if inner:  # the stacked GEMMs: per row phase, its kernel rows stacked, inner images side by side
        R = im2col._Unfolded.rows(g.Ho, g.KH, g.sh, g.dh)
        S = R * g.Wo
        xe = np.empty((g.C, g.KW, g.sh, g.N, R, g.Wo), dtype)
        fastconv.jit._numba.launch(im2col._unfold_rows, x, xe, 0, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, True,
                                   fastconv.jit._numba.counter())
        xv = xe.reshape(g.C * g.KW, g.sh, g.N * S)
        stacks = [np.concatenate([wa[a, 0] for a in range(g.KH) if (a * g.dh) % g.sh == rp])
                  for rp in range(g.sh)]
        q = np.empty((g.KH * g.F, inner * S), dtype)

        def stacked():
            for i0 in range(0, g.N, inner):
                ib = min(inner, g.N - i0)
                for rp, wst in enumerate(stacks):
                    if len(wst):
                        np.matmul(wst, xv[:, rp, i0 * S : (i0 + ib) * S], out=q[: len(wst), : ib * S])
        return stacked
    xu = im2col._Unfolded(x, g.KH, g.KW, g.Ho, g.Wo, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, 1, 0, g.N)
    outs = [np.empty((g.N, 1, g.F, g.Ho * g.Wo), dtype) for _ in range(g.KH)]

    def per_row():
        for a in range(g.KH):
            np.matmul(wa[a], xu.row(a, 0, g.N), out=outs[a])
    return per_row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--layers", default="vgg,res,down,pw")
    args = ap.parse_args()
    dtype = np.dtype(args.dtype)
    peer = _bench.start_torch_peer(fastconv.get_num_threads())
    if isinstance(peer, str):
        raise SystemExit(peer)
    layers = {la.name: la for la in _suite.CONV_LAYERS}
    print(f"{args.dtype}, {fastconv.get_num_threads()} threads, {args.rounds} interleaved rounds; "
          f"GEMM ceiling (NumPy matmul) {_bench.gemm_ceiling(dtype):.0f} GFLOP/s")
    print("layer    im2col ms  GEMMs ms  GEMM GFLOP/s  pytorch ms  im2col/pytorch  bound (GEMMs/pytorch)")
    try:
        for name in args.layers.split(","):
            layer = layers[name]
            x, w, b, _ = layer.arrays(dtype)
            calls = {"im2col": lambda x=x, w=w, b=b, kw=layer.kwargs: _api.conv2d_forward(
                         x, w, b, method="im2col", **kw),
                     "gemms": gemm_only(layer, dtype),
                     "pytorch": lambda name=name: peer.time("conv2d", name, dtype.name, "fwd")}
            for f in calls.values():
                f()
            times: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(args.rounds):
                for k, f in calls.items():
                    if k == "pytorch":
                        times[k].append(f())
                    else:
                        t = time.perf_counter()
                        f()
                        times[k].append(time.perf_counter() - t)
            med = {k: float(np.median(v)) for k, v in times.items()}
            print(f"{name:8s} {med['im2col'] * 1e3:9.2f} {med['gemms'] * 1e3:9.2f} "
                  f"{layer.flops / med['gemms'] / 1e9:13.0f} {med['pytorch'] * 1e3:11.2f} "
                  f"{med['pytorch'] / med['im2col']:15.2f}x {med['pytorch'] / med['gemms']:14.2f}x")
    finally:
        peer.close()


if __name__ == "__main__":
    main()
