"""Drop-in replacements for the deeplearning.ai (Course 4, week 1) assignment functions, NHWC.

A_prev (m, n_H_prev, n_W_prev, n_C_prev), W (f, f, n_C_prev, n_C), b (1, 1, 1, n_C),
hparameters {'stride', 'pad'} for conv and {'f', 'stride'} for pool. Fast by default (method="auto");
pass method="naive" for the reference loops. Corrected against the notes (002): stride honoured in the
backward pass, padding stripped without ``x[p:-p]`` (empty when p == 0), and a max-pool window's gradient
goes to one element (its first maximum, or its last NaN), as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _api

__all__ = ["conv_backward", "conv_forward", "conv_single_step", "create_mask_from_window",
           "distribute_value", "pool_backward", "pool_forward", "zero_pad"]


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).transpose(0, 3, 1, 2)


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def zero_pad(X: Any, pad: int) -> np.ndarray:
    """Pad the height and width of every image of X (m, n_H, n_W, n_C) with ``pad`` zeros."""
    return np.pad(np.asarray(X), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="constant")


def conv_single_step(a_slice_prev: Any, W: Any, b: Any) -> float:
    """One output value: sum(a_slice_prev * W) + b, for a slice and a filter of shape (f, f, n_C_prev)."""
    return float(np.sum(np.asarray(a_slice_prev) * np.asarray(W)) + np.asarray(b).reshape(-1)[0])


def _conv_kw(hparameters: dict) -> dict:
    return dict(stride=hparameters["stride"], padding=hparameters.get("pad", 0))


def conv_forward(A_prev: Any, W: Any, b: Any, hparameters: dict,
                 method: str = "auto") -> tuple[np.ndarray, tuple]:
    """Z (m, n_H, n_W, n_C) and cache (A_prev, W, b, hparameters)."""
    W = np.asarray(W)
    b = np.asarray(b)
    Z = _api.conv2d_forward(_nchw(A_prev), W.transpose(3, 2, 0, 1), b.reshape(-1), method=method,
                            **_conv_kw(hparameters))
    return _nhwc(Z), (A_prev, W, b, hparameters)


def conv_backward(dZ: Any, cache: tuple, method: str = "auto") -> tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """dA_prev (m, n_H_prev, n_W_prev, n_C_prev), dW (f, f, n_C_prev, n_C), db (1, 1, 1, n_C)."""
    A_prev, W, b, hparameters = cache
    dx, dw, db = _api.conv2d_backward(_nchw(dZ), _nchw(A_prev), np.asarray(W).transpose(3, 2, 0, 1),
                                      method=method, **_conv_kw(hparameters))
    return _nhwc(dx), np.ascontiguousarray(dw.transpose(2, 3, 1, 0)), db.reshape(1, 1, 1, -1)


def _pool(mode: str) -> str:
    if mode == "max":
        return "max_pool2d"
    if mode == "average":
        return "avg_pool2d"
    raise ValueError(f"mode must be 'max' or 'average', got {mode!r}")


def pool_forward(A_prev: Any, hparameters: dict, mode: str = "max",
                 method: str = "auto") -> tuple[np.ndarray, tuple]:
    """A (m, n_H, n_W, n_C) pooled with an f x f window at the given stride, no padding."""
    op = _pool(mode)
    A = getattr(_api, f"{op}_forward")(_nchw(A_prev), hparameters["f"], stride=hparameters["stride"],
                                       method=method)
    return _nhwc(A), (A_prev, hparameters)


def pool_backward(dA: Any, cache: tuple, mode: str = "max", method: str = "auto") -> np.ndarray:
    """Gradient of pool_forward: dA (m, n_H, n_W, n_C) and its cache give dA_prev, the shape of A_prev.
    mode "max" sends each window's gradient to its first maximum; "average" spreads it evenly."""
    A_prev, hparameters = cache
    op = _pool(mode)
    dx = getattr(_api, f"{op}_backward")(_nchw(dA), _nchw(A_prev), hparameters["f"],
                                         stride=hparameters["stride"], method=method)
    return _nhwc(dx)


def create_mask_from_window(x: Any) -> np.ndarray:
    """True at the element of window x that receives the max-pool gradient: the first maximum in
    row-major order (or the last NaN). The notes marked every tied maximum; without ties it is the same."""
    x = np.asarray(x)
    flat = x.ravel()
    nans = np.flatnonzero(np.isnan(flat))
    k = nans[-1] if nans.size else int(np.argmax(flat))
    mask = np.zeros(flat.shape, dtype=bool)
    mask[k] = True
    return mask.reshape(x.shape)


def distribute_value(dz: float, shape: tuple[int, int]) -> np.ndarray:
    """An array of ``shape`` whose entries share dz equally (the average-pool gradient of one window)."""
    n_H, n_W = shape
    return np.full(shape, dz / (n_H * n_W))
