"""Timing engine behind ``fastconv bench``: every registered method on the layer suite, PyTorch as a peer
in its own process, naive measured or extrapolated, and the machine's GEMM ceiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from . import _api, _registry
from ._suite import CONV_LAYERS, POOL_LAYERS, ConvLayer, PoolLayer

POOL_OPS = ("max_pool2d", "avg_pool2d")


def timeit(fn: Callable[[], Any], repeats: int, budget: float = 2.0) -> dict[str, float]:
    """First-call time, then the median and best of up to ``repeats`` calls (fewer past ``budget`` s)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget and len(times) >= 2:
            break
    med = float(np.median(times))
    return {"first": first, "median": med, "best": float(min(times)), "runs": len(times),
            "compile": max(0.0, first - med)}


def gemm_ceiling(dtype: np.dtype, n: int = 1536) -> float:
    """GFLOP/s of NumPy's matmul on square matrices: the machine's practical ceiling for a conv."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    t = timeit(lambda: a @ b, 5, budget=3.0)
    return 2 * n**3 / t["best"] / 1e9


# ------------------------------------------------------------------------------------------- conv
def _conv_calls(layer: ConvLayer, dtype: np.dtype, method: str, n: int | None = None,
                f: int | None = None):
    x, w, b, dout = layer.arrays(dtype)
    if n is not None:  # a slice of the layer, for extrapolating naive
        x, dout = x[:n], dout[:n]
    if f is not None:
        w, b, dout = w[:f], b[:f], dout[:, :f]
    kw = layer.kwargs

    def fwd():
        return _api.conv2d_forward(x, w, b, method=method, **kw)

    def fwdbwd():
        _api.conv2d_forward(x, w, b, method=method, **kw)
        return _api.conv2d_backward(dout, x, w, method=method, **kw)

    return fwd, fwdbwd


def bench_conv(layer: ConvLayer, dtype: np.dtype, method: str, repeats: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"op": "conv2d", "layer": layer.name, "method": method,
                           "dtype": np.dtype(dtype).name, "flops": layer.flops, "extrapolated": False}
    if method == "naive":
        # Naive's time grows with the number of windows: time a slice (1 image, 2 filters) and scale.
        n, f = 1, min(2, layer.F)
        scale = layer.N * layer.F / (n * f)
        fwd, fwdbwd = _conv_calls(layer, dtype, method, n, f)
        reps = 1
        rec["extrapolated"] = scale != 1
    else:
        scale = 1.0
        fwd, fwdbwd = _conv_calls(layer, dtype, method)
        reps = repeats
    tf, tfb = timeit(fwd, reps), timeit(fwdbwd, reps)
    rec.update(fwd_s=tf["median"] * scale, fwd_best_s=tf["best"] * scale,
               fwdbwd_s=tfb["median"] * scale, fwdbwd_best_s=tfb["best"] * scale,
               compile_s=tf["compile"] + tfb["compile"] if method != "naive" else 0.0)
    rec["fwd_gflops"] = layer.flops / rec["fwd_s"] / 1e9
    rec["fwdbwd_gflops"] = 3 * layer.flops / rec["fwdbwd_s"] / 1e9
    return rec


# ------------------------------------------------------------------------------------------- pool
def bench_pool(op: str, layer: PoolLayer, dtype: np.dtype, method: str, repeats: int) -> dict[str, Any]:
    x, dout = layer.arrays(dtype)
    scale = 1.0
    rec: dict[str, Any] = {"op": op, "layer": layer.name, "method": method,
                           "dtype": np.dtype(dtype).name, "extrapolated": False}
    if method == "naive":
        n, c = 1, min(2, layer.C)
        scale = layer.N * layer.C / (n * c)
        x, dout = x[:n, :c], dout[:n, :c]
        rec["extrapolated"] = True
    fwd_fn = getattr(_api, f"{op}_forward")
    bwd_fn = getattr(_api, f"{op}_backward")
    kw = layer.kwargs

    def fwd():
        return fwd_fn(x, method=method, **kw)

    def fwdbwd():
        fwd_fn(x, method=method, **kw)
        return bwd_fn(dout, x, method=method, **kw)

    reps = 1 if method == "naive" else repeats
    tf, tfb = timeit(fwd, reps), timeit(fwdbwd, reps)
    rec.update(fwd_s=tf["median"] * scale, fwd_best_s=tf["best"] * scale,
               fwdbwd_s=tfb["median"] * scale, fwdbwd_best_s=tfb["best"] * scale,
               compile_s=tf["compile"] + tfb["compile"] if method != "naive" else 0.0)
    if method != "naive":
        full_x = layer.arrays(dtype)[0]
        dst = np.empty_like(full_x)
        rec["copy_s"] = timeit(lambda: np.copyto(dst, full_x), repeats)["median"]
    return rec


# ---------------------------------------------------------------------------------------- PyTorch
def torch_peer(dtype: np.dtype, conv_layers: Iterable[str], pool_layers: Iterable[str],
               ops: Iterable[str], repeats: int, threads: int) -> list[dict[str, Any]] | str:
    """Time PyTorch in a separate process (two OpenMP runtimes in one process slow each other down).

    Returns the records, or a one-line reason why there are none."""
    cmd = [sys.executable, "-m", "fastconv._torch_peer", "--dtype", np.dtype(dtype).name,
           "--conv", ",".join(conv_layers), "--pool", ",".join(pool_layers), "--ops", ",".join(ops),
           "--repeats", str(repeats), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=os.environ.copy())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"PyTorch peer failed: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"PyTorch peer not run: {last}"
    return json.loads(proc.stdout)


def methods_for(op: str, include_naive: bool) -> list[str]:
    return [m for m in _registry.available_methods(op) if include_naive or m != "naive"]


__all__ = ["CONV_LAYERS", "POOL_LAYERS", "POOL_OPS", "bench_conv", "bench_pool", "gemm_ceiling",
           "methods_for", "timeit", "torch_peer"]
