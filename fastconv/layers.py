"""The layers around conv and pool in the notes (003, 004): affine, ReLU, dropout, softmax and SVM loss.

Plain NumPy: these are memory-bound one-liners that NumPy already runs at full speed. They keep the
caller's dtype (float32 stays float32) and never modify their inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _float(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return a.astype(np.float64)
    if not a.dtype.isnative:  # big-endian float32/float64 data: the same numbers in native byte order
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} has dtype {a.dtype}; expected float32 or float64")
    return a


def affine_forward(x: Any, w: Any, b: Any) -> tuple[np.ndarray, tuple]:
    """out = x.reshape(N, D) @ w + b for x of shape (N, d1, ..., dk), w (D, M), b (M,)."""
    x, w, b = _float(x, "x"), _float(w, "w"), _float(b, "b")
    x2 = x.reshape(x.shape[0], -1)
    if x2.shape[1] != w.shape[0]:
        raise ValueError(f"x flattens to {x2.shape} but w has shape {w.shape}")
    return x2 @ w + b, (x, w, b)


def affine_backward(dout: Any, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of affine_forward: dout (N, M) and its cache give dx (N, d1, ..., dk), dw (D, M) and
    db (M,)."""
    x, w, _ = cache
    dout = _float(dout, "dout")
    x2 = x.reshape(x.shape[0], -1)  # the notes used the un-reshaped x here
    return (dout @ w.T).reshape(x.shape), x2.T @ dout, dout.sum(axis=0)


def relu_forward(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """max(0, x), NaN passing through as in PyTorch."""
    x = _float(x, "x")
    return np.maximum(x, 0), x  # np.maximum propagates NaN; a python 0 keeps float32


def relu_backward(dout: Any, cache: np.ndarray) -> np.ndarray:
    """The gradient flows where x > 0 (at exactly 0 it does not, as in PyTorch)."""
    dout = _float(dout, "dout")
    return np.where(cache > 0, dout, 0).astype(dout.dtype, copy=False)


def dropout_forward(x: Any, dropout_param: dict) -> tuple[np.ndarray, tuple]:
    """Inverted dropout. dropout_param: 'p' the probability of keeping a unit, 'mode' 'train' or 'test',
    optional 'seed' (a private generator: NumPy's global random state is left alone)."""
    x = _float(x, "x")
    p, mode = dropout_param["p"], dropout_param.get("mode", "train")
    if not 0 < p <= 1:
        raise ValueError(f"dropout_param['p'] is the keep probability, in (0, 1]; got {p!r}")
    if mode == "test":
        return x.copy(), (dropout_param, None)
    if mode != "train":
        raise ValueError(f"dropout_param['mode'] must be 'train' or 'test', got {mode!r}")
    if "seed" in dropout_param and dropout_param["seed"] is not None:
        u = np.random.default_rng(dropout_param["seed"]).random(x.shape)
    else:
        u = np.random.random_sample(x.shape)  # noqa: NPY002 - unseeded: the global RNG, as in CS231n
    mask = ((u < p) / p).astype(x.dtype)
    return x * mask, (dropout_param, mask)


def dropout_backward(dout: Any, cache: tuple) -> np.ndarray:
    """Gradient of dropout_forward: dout times the forward's mask (scaled by 1 / p) in 'train' mode,
    dout unchanged (a copy) in 'test' mode."""
    dropout_param, mask = cache
    dout = _float(dout, "dout")
    return dout.copy() if mask is None else dout * mask


def _labels(y: Any, n: int, c: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"y must be {n} integer class labels, got shape {y.shape} dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must be in [0, {c}), got range [{y.min()}, {y.max()}]")
    return y


def softmax_loss(x: Any, y: Any) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(x) against labels y, and its gradient. x is not modified."""
    x = _float(x, "x")
    n = x.shape[0]
    y = _labels(y, n, x.shape[1])
    shifted = x - x.max(axis=1, keepdims=True)  # stable, and a new array
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), y].mean()
    dx = np.exp(log_probs)
    dx[np.arange(n), y] -= 1
    return float(loss), (dx / n).astype(x.dtype, copy=False)


def svm_loss(x: Any, y: Any) -> tuple[float, np.ndarray]:
    """Multiclass SVM (hinge, margin 1) loss averaged over the batch, and its gradient."""
    x = _float(x, "x")
    n = x.shape[0]
    y = _labels(y, n, x.shape[1])
    correct = x[np.arange(n), y][:, None]
    margins = np.maximum(0, x - correct + 1.0)
    margins[np.arange(n), y] = 0
    loss = margins.sum() / n
    pos = (margins > 0).astype(x.dtype)
    pos[np.arange(n), y] -= pos.sum(axis=1)
    return float(loss), pos / n
