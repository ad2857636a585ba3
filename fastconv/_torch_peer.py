"""PyTorch's side of ``fastconv bench``: a process that times one PyTorch call per request.

Protocol: it prints "ready <torch version>", then for each line ["op", "layer", "dtype", "fwd"|"fwdbwd"]
on stdin prints the seconds one call took. Exits 2 with a reason on stderr when PyTorch is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("PyTorch is not installed", file=sys.stderr)
        return 2
    import numpy as np

    from ._suite import ALL_CONV_LAYERS, POOL_LAYERS

    if args.threads:
        torch.set_num_threads(args.threads)
    layers = {layer.name: layer for layer in (*ALL_CONV_LAYERS, *POOL_LAYERS)}
    cache: dict[tuple, tuple] = {}
    print("ready", torch.__version__, flush=True)
    for line in sys.stdin:
        op, name, dtype, what = json.loads(line)
        layer = layers[name]
        key = (name, dtype)
        if key not in cache:
            arrays = [torch.from_numpy(a) for a in layer.arrays(np.dtype(dtype))]
            arrays[0].requires_grad_(True)
            if op == "conv2d":
                arrays[1].requires_grad_(True)
                arrays[2].requires_grad_(True)
            cache[key] = tuple(arrays)
        arrays = cache[key]
        if op == "conv2d":
            x, w, b, dout = arrays

            def call(x=x, w=w, b=b, layer=layer):
                return F.conv2d(x, w, b, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                groups=layer.groups)
        else:
            x, dout = arrays
            fn = getattr(F, op)

            def call(x=x, fn=fn, layer=layer):
                return fn(x, layer.K, layer.stride, layer.pad)

        for a in arrays:
            a.grad = None  # as a training step would; accumulating into .grad costs an extra pass
        t = time.perf_counter()
        if what == "fwd":
            with torch.no_grad():
                call()
        else:
            call().backward(dout)
        elapsed = time.perf_counter() - t
        print(repr(elapsed), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
