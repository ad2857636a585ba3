"""PyTorch timed on the benchmark suite, run as its own process by ``fastconv bench``.

Prints a JSON list of records on stdout. Exits 2 with a one-line reason when PyTorch is missing.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--conv", default="")
    ap.add_argument("--pool", default="")
    ap.add_argument("--ops", default="conv2d,max_pool2d,avg_pool2d")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("PyTorch is not installed", file=sys.stderr)
        return 2
    import numpy as np

    from ._bench import timeit
    from ._suite import CONV_LAYERS, POOL_LAYERS

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    ops = args.ops.split(",")
    records = []
    for layer in CONV_LAYERS:
        if "conv2d" not in ops or layer.name not in args.conv.split(","):
            continue
        x, w, b, dout = (torch.from_numpy(a) for a in layer.arrays(dtype))
        x.requires_grad_(True)
        w.requires_grad_(True)
        b.requires_grad_(True)

        def fwd(x=x, w=w, b=b, layer=layer):
            with torch.no_grad():
                return F.conv2d(x, w, b, stride=layer.stride, padding=layer.pad)

        def fwdbwd(x=x, w=w, b=b, dout=dout, layer=layer):
            F.conv2d(x, w, b, stride=layer.stride, padding=layer.pad).backward(dout)

        tf, tfb = timeit(fwd, args.repeats), timeit(fwdbwd, args.repeats)
        records.append({"op": "conv2d", "layer": layer.name, "method": "pytorch", "dtype": dtype.name,
                        "flops": layer.flops, "fwd_s": tf["median"], "fwd_best_s": tf["best"],
                        "fwdbwd_s": tfb["median"], "fwdbwd_best_s": tfb["best"],
                        "fwd_gflops": layer.flops / tf["median"] / 1e9,
                        "fwdbwd_gflops": 3 * layer.flops / tfb["median"] / 1e9,
                        "compile_s": 0.0, "extrapolated": False})
    for layer in POOL_LAYERS:
        if layer.name not in args.pool.split(","):
            continue
        x, dout = (torch.from_numpy(a) for a in layer.arrays(dtype))
        x.requires_grad_(True)
        for op in ("max_pool2d", "avg_pool2d"):
            if op not in ops:
                continue
            fn = getattr(F, op)

            def pfwd(x=x, fn=fn, layer=layer):
                with torch.no_grad():
                    return fn(x, layer.K, layer.stride, layer.pad)

            def pfwdbwd(x=x, fn=fn, layer=layer, dout=dout):
                fn(x, layer.K, layer.stride, layer.pad).backward(dout)

            tf, tfb = timeit(pfwd, args.repeats), timeit(pfwdbwd, args.repeats)
            records.append({"op": op, "layer": layer.name, "method": "pytorch", "dtype": dtype.name,
                            "fwd_s": tf["median"], "fwd_best_s": tf["best"], "fwdbwd_s": tfb["median"],
                            "fwdbwd_best_s": tfb["best"], "compile_s": 0.0, "extrapolated": False})
    json.dump(records, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
