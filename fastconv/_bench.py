"""Timing engine behind ``fastconv bench`` and ``bench/``.

The machines are shared and noisy, so every figure of one layer is measured in interleaved rounds: each
round times every method once (fastconv's in this process, PyTorch's in a persistent peer process), in
an order that rotates from round to round, and a figure is the median over rounds. Ratios are then
taken between figures measured side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _api, _registry
from ._suite import CONV_LAYERS, POOL_LAYERS, ConvLayer, PoolLayer

POOL_OPS = ("max_pool2d", "avg_pool2d")


def once(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gemm_ceiling(dtype: np.dtype, n: int = 1536) -> float:
    """GFLOP/s of NumPy's matmul on square matrices: the machine's practical ceiling for a conv."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b
    return 2 * n**3 / min(once(lambda: a @ b) for _ in range(5)) / 1e9


# ------------------------------------------------------------------------------------ calls to time
def conv_calls(layer: ConvLayer, dtype: np.dtype, method: str, n: int | None = None,
               f: int | None = None) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(forward, forward + backward) of one suite layer; n, f take a slice (for naive; f filters of a
    grouped layer are whole groups)."""
    x, w, b, dout = layer.arrays(dtype)
    if n is not None:
        x, dout = x[:n], dout[:n]
    kw = layer.kwargs
    if f is not None:
        w, b, dout = w[:f], b[:f], dout[:, :f]
        if layer.groups > 1:  # f filters are whole groups: keep those groups' input channels
            keep = f // (layer.F // layer.groups)
            x, kw = x[:, :keep * (layer.C // layer.groups)], {**kw, "groups": keep}

    def fwd():
        return _api.conv2d_forward(x, w, b, method=method, **kw)

    def fwdbwd():
        _api.conv2d_forward(x, w, b, method=method, **kw)
        return _api.conv2d_backward(dout, x, w, method=method, **kw)

    return fwd, fwdbwd


def pool_calls(op: str, layer: PoolLayer, dtype: np.dtype, method: str, n: int | None = None,
               c: int | None = None) -> tuple[Callable[[], Any], Callable[[], Any]]:
    x, dout = layer.arrays(dtype)
    if n is not None:
        x, dout = x[:n, :c], dout[:n, :c]
    fwd_fn = getattr(_api, f"{op}_forward")
    bwd_fn = getattr(_api, f"{op}_backward")
    kw = layer.kwargs

    def fwd():
        return fwd_fn(x, method=method, **kw)

    def fwdbwd():
        fwd_fn(x, method=method, **kw)
        return bwd_fn(dout, x, method=method, **kw)

    return fwd, fwdbwd


# ---------------------------------------------------------------------------------------- PyTorch
class TorchPeer:
    """PyTorch in its own process (two OpenMP runtimes in one process slow each other down), timing one
    call per request so that its runs interleave with fastconv's. Both sides' idle threads sleep
    (OMP_WAIT_POLICY=PASSIVE) so neither steals the other's cores between runs."""

    def __init__(self, threads: int):
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastconv._torch_peer", "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        hello = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not hello.startswith("ready"):
            err = self.proc.stderr.read().strip().splitlines()  # type: ignore[union-attr]
            self.proc.wait()
            self.close()
            raise RuntimeError(err[-1] if err else "PyTorch peer did not start")
        self.version = hello.split()[1] if len(hello.split()) > 1 else "?"

    def time(self, op: str, layer: str, dtype: str, what: str) -> float:
        self.proc.stdin.write(json.dumps([op, layer, dtype, what]) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        reply = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not reply:
            raise RuntimeError("PyTorch peer exited")
        return float(reply)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def start_torch_peer(threads: int) -> TorchPeer | str:
    try:
        return TorchPeer(threads)
    except Exception as exc:
        return f"PyTorch not timed: {exc}"


# ------------------------------------------------------------------------------------------ rounds
# Conv layers up to this many FLOPs (seed001, 18 MFLOP, about 0.2 s) have naive timed whole; larger
# ones on a slice (1 image, 2 filters), scaled up.
NAIVE_WHOLE_FLOPS = 20e6


def bench_layer(op: str, layer: ConvLayer | PoolLayer, dtype: np.dtype, methods: list[str],
                rounds: int, peer: TorchPeer | None) -> list[dict[str, Any]]:
    """Records for every method (and PyTorch) on one layer, measured in interleaved rounds."""
    dtype = np.dtype(dtype)
    calls: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
    scale: dict[str, float] = {}
    for m in methods:
        if m == "naive" and op == "conv2d" and layer.flops <= NAIVE_WHOLE_FLOPS:  # type: ignore[union-attr]
            calls[m], scale[m] = conv_calls(layer, dtype, m), 1.0  # type: ignore[arg-type]
        elif m == "naive":  # its time grows with the number of windows: time a slice and scale
            if op == "conv2d":
                groups, F = layer.groups, layer.F  # type: ignore[union-attr]
                f = min(2, groups) * (F // groups) if groups > 1 else min(2, F)
                calls[m] = conv_calls(layer, dtype, m, 1, f)  # type: ignore[arg-type]
                scale[m] = layer.N * layer.F / f  # type: ignore[union-attr]
            else:
                c = min(2, layer.C)
                calls[m] = pool_calls(op, layer, dtype, m, 1, c)  # type: ignore[arg-type]
                scale[m] = layer.N * layer.C / c
        elif op == "conv2d":
            calls[m], scale[m] = conv_calls(layer, dtype, m), 1.0  # type: ignore[arg-type]
        else:
            calls[m], scale[m] = pool_calls(op, layer, dtype, m), 1.0  # type: ignore[arg-type]
    times: dict[str, dict[str, list[float]]] = {m: {"fwd": [], "fwdbwd": []} for m in calls}
    first: dict[str, float] = {}
    for m, (fwd, fwdbwd) in calls.items():  # first calls: compilation and warm-up
        first[m] = once(fwd) + once(fwdbwd)
    names = list(calls) + (["pytorch"] if peer else [])
    if peer:
        times["pytorch"] = {"fwd": [], "fwdbwd": []}
        for what in ("fwd", "fwdbwd"):
            peer.time(op, layer.name, dtype.name, what)
    for r in range(rounds):
        # the order rotates from round to round: a method run right after another one finds the caches
        # as that one left them (measured: jit 2.45 ms after itself, 3.1 ms after im2col on cs231n)
        for m in names[r % len(names):] + names[: r % len(names)]:
            for what in ("fwd", "fwdbwd"):
                if m == "pytorch":
                    t = peer.time(op, layer.name, dtype.name, what)  # type: ignore[union-attr]
                elif m == "naive" and times[m][what]:
                    continue  # one timed run of naive is plenty
                else:
                    t = once(calls[m][0 if what == "fwd" else 1])
                times[m][what].append(t * scale.get(m, 1.0))
    records = []
    dst = None
    copy_s = None
    if op != "conv2d":
        x = layer.arrays(dtype)[0]
        dst = np.empty_like(x)
        copy_s = float(np.median([once(lambda: np.copyto(dst, x)) for _ in range(max(3, rounds))]))
    for m in names:
        rec: dict[str, Any] = {"op": op, "layer": layer.name, "method": m, "dtype": dtype.name,
                               "rounds": len(times[m]["fwd"]), "extrapolated": scale.get(m, 1.0) != 1}
        for what in ("fwd", "fwdbwd"):
            rec[f"{what}_s"] = float(np.median(times[m][what]))
            rec[f"{what}_best_s"] = float(min(times[m][what]))
        rec["compile_s"] = max(0.0, first.get(m, 0.0) - rec["fwd_s"] - rec["fwdbwd_s"]) \
            if m not in ("naive", "pytorch") else 0.0
        if op == "conv2d":
            rec["flops"] = layer.flops  # type: ignore[union-attr]
            rec["fwd_gflops"] = layer.flops / rec["fwd_s"] / 1e9  # type: ignore[union-attr]
            rec["fwdbwd_gflops"] = 3 * layer.flops / rec["fwdbwd_s"] / 1e9  # type: ignore[union-attr]
        else:
            rec["copy_s"] = copy_s
        records.append(rec)
    return records


def methods_for(op: str, include_naive: bool) -> list[str]:
    """The registered methods that run here, then "auto"."""
    return [m for m in _registry.available_methods(op) if include_naive or m != "naive"] + ["auto"]


__all__ = ["CONV_LAYERS", "POOL_LAYERS", "POOL_OPS", "TorchPeer", "bench_layer", "conv_calls",
           "gemm_ceiling", "methods_for", "once", "pool_calls", "start_torch_peer"]
