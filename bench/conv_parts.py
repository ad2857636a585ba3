"""Each gradient of a conv layer apart: the jit forward, dx and dw, and PyTorch's (docs/shapes.md, "Where
the time goes"). Best of 7 calls, ms.

    python bench/conv_parts.py jit dw3,dw3s2,dw3c512,dw5,b1c256
    python bench/conv_parts.py torch dw3,dw3s2,dw3c512,dw5,b1c256

PyTorch's dx and dw are a forward with only x (or only w) requiring grad and its backward; subtract its
forward. Run each side in its own process (PyTorch's threads and numba's would share the cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastconv import _suite


def _best(f, reps: int = 7) -> float:
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def _torch_row(la: _suite.ConvLayer, dtype: np.dtype) -> str:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    xt, wt, bt, dt = (torch.from_numpy(a) for a in la.arrays(dtype))
    kw = dict(stride=la.stride, padding=la.padding, dilation=la.dilation, groups=la.groups)
    xr, wr = xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)

    def fwd_dx():
        xr.grad = None
        F.conv2d(xr, wt, bt, **kw).backward(dt)

    def fwd_dw():
        wr.grad = None
        F.conv2d(xt, wr, bt, **kw).backward(dt)

    return (f"torch forward {_best(lambda: F.conv2d(xt, wt, bt, **kw)):.2f}  forward+dx {_best(fwd_dx):.2f}  "
            f"forward+dw {_best(fwd_dw):.2f}")


def _jit_row(la: _suite.ConvLayer, dtype: np.dtype) -> str:
    from fastconv._params import conv_geometry
    from fastconv.jit import conv as jc

    x, w, b, d = la.arrays(dtype)
    g = conv_geometry(x.shape, w.shape, **la.kwargs)
    return (f"jit forward {_best(lambda: jc.conv2d_forward(x, w, b, g)):.2f}  "
            f"dx {_best(lambda: jc.conv2d_backward_dx(d, w, g)):.2f}  "
            f"dw {_best(lambda: jc.conv2d_backward_dw(d, x, g)):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("side", choices=["jit", "torch"])
    ap.add_argument("layers", help="comma-separated layer names (the suite's or the shape classes')")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    layers = {la.name: la for la in _suite.ALL_CONV_LAYERS}
    row = _torch_row if args.side == "torch" else _jit_row
    for name in args.layers.split(","):
        print(name, row(layers[name], np.dtype(args.dtype)), flush=True)


if __name__ == "__main__":
    main()
