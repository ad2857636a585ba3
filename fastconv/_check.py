"""``fastconv check``: every method against naive (and naive against PyTorch when installed) on a grid of
random configurations, forward and backward, both dtypes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _api, _registry
from ._checkgrid import conv_case, has_empty_window, pool_case

TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def rel_err(a: np.ndarray, e: np.ndarray) -> float:
    """Largest difference over the reference's largest magnitude (at least 1); inf on shape, dtype or
    NaN-position mismatch."""
    if a.shape != e.shape or a.dtype != e.dtype:
        return float("inf")
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if (nan_a != nan_e).any():
        return float("inf")
    fin = np.isfinite(e)
    if (a[~fin & ~nan_e] != e[~fin & ~nan_e]).any():
        return float("inf")
    if not fin.any():
        return 0.0
    scale = max(float(np.abs(e[fin]).max()), 1.0)
    return float(np.abs(a[fin].astype(np.float64) - e[fin]).max()) / scale


def _conv_results(method: str, x, w, b, dout, kw) -> list[np.ndarray]:
    out = _api.conv2d_forward(x, w, b, method=method, **kw)
    return [out, *_api.conv2d_backward(dout, x, w, method=method, **kw)]


def _pool_results(op: str, method: str, x, dout, kw) -> list[np.ndarray]:
    out = getattr(_api, f"{op}_forward")(x, method=method, **kw)
    return [out, getattr(_api, f"{op}_backward")(dout, x, method=method, **kw)]


def _torch_conv(x, w, b, dout, kw) -> list[np.ndarray] | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    from ._params import conv_geometry

    g = conv_geometry(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"], kw["groups"])
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    out = F.conv2d(F.pad(tx, (g.pl, g.pr, g.pt, g.pb)), tw, tb, stride=(g.sh, g.sw),
                   dilation=(g.dh, g.dw), groups=g.groups)
    out.backward(torch.tensor(dout))
    return [out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), dout.sum(axis=(0, 2, 3))]


def _torch_pool(op, x, dout, kw) -> list[np.ndarray] | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    k, p = np.broadcast_to(kw["kernel_size"], 2), np.broadcast_to(kw["padding"], 2)
    if np.any(p > k // 2):  # PyTorch refuses these; fastconv allows half the dilated kernel
        return None
    if op == "max_pool2d" and has_empty_window(x.shape, kw):
        return None  # PyTorch's backward writes out of bounds here
    tx = torch.tensor(x, requires_grad=True)
    out = getattr(F, op)(tx, **kw)
    out.backward(torch.tensor(dout))
    return [out.detach().numpy(), tx.grad.numpy()]


def run_check(cases: int, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per (op, method, dtype): the worst forward and backward error over ``cases`` configs.

    method "naive-vs-pytorch" compares the oracle itself with PyTorch (float64 only)."""
    rows: dict[tuple, dict[str, Any]] = {}

    def record(op, method, dtype, res, ref, what):
        key = (op, method, np.dtype(dtype).name)
        row = rows.setdefault(key, {"op": op, "method": method, "dtype": key[2], "cases": 0,
                                    "fwd_err": 0.0, "bwd_err": 0.0, "worst": None})
        row["cases"] += 1
        fe = rel_err(res[0], ref[0])
        be = max(rel_err(a, e) for a, e in zip(res[1:], ref[1:]))
        if max(fe, be) >= max(row["fwd_err"], row["bwd_err"]):
            row["worst"] = what
        row["fwd_err"], row["bwd_err"] = max(row["fwd_err"], fe), max(row["bwd_err"], be)

    rng = np.random.default_rng(seed)
    for op in _registry.OPS:
        if progress:
            progress(f"checking {op} on {cases} configurations")
        methods = [m for m in _registry.available_methods(op) if m != "naive"]
        for _ in range(cases):
            if op == "conv2d":
                xs, ws, kw, bias = conv_case(rng)
                case = (xs, ws, kw)
            else:
                xs, kw = pool_case(rng, op)
                case = (xs, kw)
            for dtype in (np.float32, np.float64):
                x = rng.standard_normal(xs).astype(dtype)
                if op == "conv2d":
                    w = rng.standard_normal(ws).astype(dtype)
                    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
                    out = _api.conv2d_forward(x, w, b, method="naive", **kw)
                    dout = rng.standard_normal(out.shape).astype(dtype)
                    ref = _conv_results("naive", x, w, b, dout, kw)
                    for m in methods:
                        record(op, m, dtype, _conv_results(m, x, w, b, dout, kw), ref, case)
                    if dtype == np.float64:
                        peer = _torch_conv(x, w, b, dout, kw)
                        if peer is not None:
                            record(op, "naive-vs-pytorch", dtype, ref, peer, case)
                else:
                    if op == "max_pool2d":  # ties
                        x = np.round(x).astype(dtype)
                    out = getattr(_api, f"{op}_forward")(x, method="naive", **kw)
                    dout = rng.standard_normal(out.shape).astype(dtype)
                    ref = _pool_results(op, "naive", x, dout, kw)
                    for m in methods:
                        record(op, m, dtype, _pool_results(op, m, x, dout, kw), ref, case)
                    if dtype == np.float64:
                        peer = _torch_pool(op, x, dout, kw)
                        if peer is not None:
                            record(op, "naive-vs-pytorch", dtype, ref, peer, case)
    out_rows = list(rows.values())
    for row in out_rows:
        row["ok"] = max(row["fwd_err"], row["bwd_err"]) <= TOLERANCE[np.dtype(row["dtype"])]
    return out_rows
