"""Drop-in replacements for the CS231n assignment layers (NCHW), with their cache conventions.

Change ``from cs231n.layers import *`` / ``from cs231n.fast_layers import *`` to
``from fastconv.cs231n import *`` and the same code runs fast. ``*_naive`` use fastconv's naive method
(the corrected reference loops), ``*_fast`` use method="auto", ``*_im2col`` the im2col method and
``*_strides`` / ``*_reshape`` the jit method. A cache from one method's forward works with that method's
backward. conv_param = {'stride', 'pad'}; pool_param = {'pool_height', 'pool_width', 'stride'}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _api
from .layers import (
    affine_backward,
    affine_forward,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)

__all__ = [
    "affine_backward", "affine_forward", "affine_relu_backward", "affine_relu_forward",
    "conv_backward_fast", "conv_backward_im2col", "conv_backward_naive", "conv_backward_strides",
    "conv_forward_fast", "conv_forward_im2col", "conv_forward_naive", "conv_forward_strides",
    "conv_relu_backward", "conv_relu_forward", "conv_relu_pool_backward", "conv_relu_pool_forward",
    "dropout_backward", "dropout_forward", "max_pool_backward_fast", "max_pool_backward_im2col",
    "max_pool_backward_naive", "max_pool_backward_reshape", "max_pool_forward_fast",
    "max_pool_forward_im2col", "max_pool_forward_naive", "max_pool_forward_reshape", "relu_backward",
    "relu_forward", "softmax_loss", "svm_loss",
]


def _conv_kw(conv_param: dict) -> dict:
    return dict(stride=conv_param.get("stride", 1), padding=conv_param.get("pad", 0))


def _pool_kw(pool_param: dict) -> dict:
    ph, pw = pool_param["pool_height"], pool_param["pool_width"]
    return dict(kernel_size=(ph, pw), stride=pool_param.get("stride", (ph, pw)))


def _conv_forward(method: str, x: Any, w: Any, b: Any, conv_param: dict) -> tuple[np.ndarray, tuple]:
    out = _api.conv2d_forward(x, w, b, method=method, **_conv_kw(conv_param))
    return out, (x, w, b, conv_param, method)


def _conv_backward(dout: Any, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of a convolution: dout (N, F, H', W') and the forward's cache give (dx, dw, db),
    of the shapes of x (N, C, H, W), w (F, C, HH, WW) and b (F,), by the method the forward used
    (conv_backward_naive, _fast, _im2col and _strides are this one function)."""
    x, w, _b, conv_param, method = cache
    return _api.conv2d_backward(dout, x, w, method=method, **_conv_kw(conv_param))


def conv_forward_naive(x, w, b, conv_param):
    """Convolution of x (N, C, H, W) with w (F, C, HH, WW) plus b (F,) by the naive loops: (out, cache).

    conv_param: {'stride': int, 'pad': int} (each defaults as in the assignment: 1 and 0). out has shape
    (N, F, H', W'), H' = 1 + (H + 2 * pad - HH) // stride (the assignment asserts it is whole; fastconv
    floors it as PyTorch does). The cache is for conv_backward_naive.

    Raises ValueError (shapes, conv_param/pool_param values) and TypeError (dtypes) as the fastconv
    functions do, naming the argument.
    """
    return _conv_forward("naive", x, w, b, conv_param)


def conv_forward_fast(x, w, b, conv_param):
    """conv_forward_naive's convolution by method="auto" (for conv_backward_fast): (out, cache)."""
    return _conv_forward("auto", x, w, b, conv_param)


def conv_forward_im2col(x, w, b, conv_param):
    """conv_forward_naive's convolution by the im2col method (for conv_backward_im2col): (out, cache)."""
    return _conv_forward("im2col", x, w, b, conv_param)


def conv_forward_strides(x, w, b, conv_param):
    """conv_forward_naive's convolution by the jit method (for conv_backward_strides): (out, cache)."""
    return _conv_forward("jit", x, w, b, conv_param)


conv_backward_naive = conv_backward_fast = conv_backward_im2col = conv_backward_strides = _conv_backward


def _pool_forward(method: str, x: Any, pool_param: dict) -> tuple[np.ndarray, tuple]:
    return _api.max_pool2d_forward(x, method=method, **_pool_kw(pool_param)), (x, pool_param, method)


def _pool_backward(dout: Any, cache: tuple) -> np.ndarray:
    """Backward pass of max pooling: dout (N, C, H', W') and the forward's cache give dx (N, C, H, W);
    each window's gradient goes to its first maximum (max_pool_backward_naive, _fast, _reshape and
    _im2col are this one function)."""
    x, pool_param, method = cache
    return _api.max_pool2d_backward(dout, x, method=method, **_pool_kw(pool_param))


def max_pool_forward_naive(x, pool_param):
    """Max pooling of x (N, C, H, W) by the naive loops: (out, cache).

    pool_param: {'pool_height', 'pool_width', 'stride'} (stride defaults to the window). out has shape
    (N, C, H', W'), H' = 1 + (H - pool_height) // stride.

    Raises ValueError (shapes, conv_param/pool_param values) and TypeError (dtypes) as the fastconv
    functions do, naming the argument.
    """
    return _pool_forward("naive", x, pool_param)


def max_pool_forward_fast(x, pool_param):
    """max_pool_forward_naive's pooling by method="auto" (also max_pool_forward_reshape and _im2col):
    (out, cache)."""
    return _pool_forward("auto", x, pool_param)


max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_fast
max_pool_backward_naive = max_pool_backward_fast = _pool_backward
max_pool_backward_reshape = max_pool_backward_im2col = _pool_backward


# ------------------------------------------------------------------------------- layer_utils sandwiches
def affine_relu_forward(x, w, b):
    """affine_forward then relu_forward: x (N, d_1, ..., d_k), w (D, M), b (M,) give (out (N, M), cache)."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Backward of affine_relu_forward: dout (N, M) gives (dx, dw, db) of the shapes of x, w and b."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def conv_relu_forward(x, w, b, conv_param):
    """conv_forward_fast then relu_forward: (out (N, F, H', W'), cache)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Backward of conv_relu_forward: (dx, dw, db) of the shapes of x, w and b."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """conv_forward_fast, relu_forward, then max_pool_forward_fast: (out (N, F, H'', W''), cache)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward of conv_relu_pool_forward: (dx, dw, db) of the shapes of x, w and b."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)
