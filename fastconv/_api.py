"""The public NCHW functions: validate once, convert once, dispatch through the registry."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _registry
from ._params import (
    ConvGeometry,
    PoolGeometry,
    as_float_arrays,
    check_ndim,
    conv_geometry,
    pool_geometry,
)
from ._types import ArrayLike, ConvMethod, ConvPadding, FloatArray, IntPair, PoolMethod

_NCHW = "(N, C, H, W)"


def _check_dout(dout: np.ndarray, expected: tuple[int, ...]) -> None:
    if dout.shape != expected:
        raise ValueError(f"dout must have the forward output's shape {expected}, got {dout.shape}")


def _conv_setup(x: np.ndarray, w: np.ndarray, stride: Any, padding: Any, dilation: Any,
                groups: Any) -> ConvGeometry:
    check_ndim("x", x, 4, _NCHW)
    check_ndim("w", w, 4, "(F, C // groups, KH, KW)")
    return conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)


def conv2d_forward(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    *,
    stride: IntPair = 1,
    padding: ConvPadding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    method: ConvMethod = "auto",
) -> FloatArray:
    """2-D convolution (cross-correlation, as in every deep-learning library), NCHW.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (F, C // groups, KH, KW)
    b : array_like, shape (F,), or None
    stride, dilation : int or (int, int)
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
        "same" follows TensorFlow: Ho = ceil(H / stride), the odd padding row at the bottom.
    groups : int
        C and F must both be divisible by it; groups == C is a depthwise convolution.
    method : {"auto", "naive", "jit", "im2col"}

    Returns
    -------
    out : ndarray, shape (N, F, Ho, Wo)
        float32 when every input is float32, else float64.

    Raises
    ------
    ValueError
        An array of the wrong number of dimensions or shape, a size, stride, padding, dilation or groups
        out of range, an unknown method, or an empty output; the message names the argument and its value.
    TypeError
        An array whose dtype is not a float, integer or bool (complex, object, strings).
    ImportError
        ``method`` named explicitly but unusable here (numba missing or broken); "auto" falls back.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 3, 3), np.float32); w = np.ones((1, 1, 2, 2), np.float32)
    >>> fastconv.conv2d_forward(x, w, method="naive")[0, 0]
    array([[4., 4.],
           [4., 4.]], dtype=float32)
    """
    dtype, (x, w, b) = as_float_arrays(x=x, w=w, b=b)
    g = _conv_setup(x, w, stride, padding, dilation, groups)
    if b is not None and b.shape != (g.F,):
        raise ValueError(f"b must have shape (F,) = ({g.F},) or be None, got {b.shape}")
    impl = _registry.resolve("conv2d", method, g, dtype)
    if g.N == 0 or g.F == 0 or g.C == 0:
        out = np.zeros((g.N, g.F, g.Ho, g.Wo), dtype)
        return out if b is None else out + b[None, :, None, None]
    return impl.forward(x, w, b, g)


def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    *,
    stride: IntPair = 1,
    padding: ConvPadding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    method: ConvMethod | tuple[ConvMethod, ConvMethod] = "auto",
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Gradients of :func:`conv2d_forward` with respect to x, w and b.

    Parameters
    ----------
    dout : array_like, shape (N, F, Ho, Wo)
        Upstream gradient.
    x, w, stride, padding, dilation, groups
        As given to the forward call.
    method : {"auto", "naive", "jit", "im2col"} or (str, str)
        A pair of "jit" and "im2col" takes dx from its first method and dw (and db) from its second, as
        "auto" does where each gradient has another fastest method.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C // groups, KH, KW)
    db : ndarray, shape (F,)
        ``dout`` summed over (N, Ho, Wo), returned whether or not the forward had a bias.

    Raises
    ------
    ValueError, TypeError, ImportError
        As :func:`conv2d_forward`; also ValueError when ``dout`` does not have the forward output's shape.
    """
    dtype, (dout, x, w) = as_float_arrays(dout=dout, x=x, w=w)
    g = _conv_setup(x, w, stride, padding, dilation, groups)
    _check_dout(dout, (g.N, g.F, g.Ho, g.Wo))
    impl = _registry.resolve("conv2d", method, g, dtype, "backward")
    if g.N == 0 or g.F == 0 or g.C == 0:
        return np.zeros_like(x), np.zeros_like(w), dout.sum(axis=(0, 2, 3))
    return impl.backward(dout, x, w, g)


def _pool_setup(x: np.ndarray, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                ceil_mode: Any, count_include_pad: Any = True) -> PoolGeometry:
    check_ndim("x", x, 4, _NCHW)
    return pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                         count_include_pad)


def _pool_forward(op: str, x: Any, g_args: tuple[Any, ...], method: str) -> np.ndarray:
    dtype, (x,) = as_float_arrays(x=x)
    g = _pool_setup(x, *g_args)
    impl = _registry.resolve(op, method, g, dtype)
    if x.size == 0:
        return np.zeros((g.N, g.C, g.Ho, g.Wo), dtype)
    return impl.forward(x, g)


def _pool_backward(op: str, dout: Any, x: Any, g_args: tuple[Any, ...], method: str) -> np.ndarray:
    dtype, (dout, x) = as_float_arrays(dout=dout, x=x)
    g = _pool_setup(x, *g_args)
    _check_dout(dout, (g.N, g.C, g.Ho, g.Wo))
    impl = _registry.resolve(op, method, g, dtype, "backward")
    if x.size == 0:
        return np.zeros_like(x)
    return impl.backward(dout, x, g)


def max_pool2d_forward(
    x: ArrayLike,
    kernel_size: IntPair,
    *,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    method: PoolMethod = "auto",
) -> FloatArray:
    """2-D max pooling, NCHW, with PyTorch's semantics.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size, dilation : int or (int, int)
    stride : int, (int, int) or None
        None means kernel_size.
    padding : int or (int, int)
        Implicit -inf padding, at most half the dilated kernel size.
    ceil_mode : bool
        Round the output size up; a last window that would start in the padding is dropped.
    method : {"auto", "naive", "jit"}

    Returns
    -------
    out : ndarray, shape (N, C, Ho, Wo)
        A window holding NaN gives NaN.

    Raises
    ------
    ValueError
        An array of the wrong number of dimensions or shape, a size, stride, padding, dilation out
        of range, an unknown method, or an empty output; the message names the argument and its value.
    TypeError
        An array whose dtype is not a float, integer or bool (complex, object, strings).
    ImportError
        ``method`` named explicitly but unusable here (numba missing or broken); "auto" falls back.
    """
    return _pool_forward(
        "max_pool2d", x, (kernel_size, stride, padding, dilation, ceil_mode), method
    )


def max_pool2d_backward(
    dout: Any,
    x: ArrayLike,
    kernel_size: IntPair,
    *,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    method: PoolMethod = "auto",
) -> FloatArray:
    """Gradient of :func:`max_pool2d_forward` with respect to x, shape (N, C, H, W).

    Each window's gradient goes to one element: its first maximum in row-major order, or, where the
    window holds NaN, its last NaN (PyTorch's CPU rule). Overlapping windows accumulate.

    Parameters
    ----------
    dout : array_like, shape (N, C, Ho, Wo)
        Upstream gradient.
    x, kernel_size, stride, padding, dilation, ceil_mode, method
        As given to the forward call.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)

    Raises
    ------
    ValueError, TypeError, ImportError
        As :func:`max_pool2d_forward`; also ValueError when ``dout`` does not have the forward output's
        shape.
    """
    return _pool_backward(
        "max_pool2d", dout, x, (kernel_size, stride, padding, dilation, ceil_mode), method
    )


def avg_pool2d_forward(
    x: ArrayLike,
    kernel_size: IntPair,
    *,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    method: PoolMethod = "auto",
) -> FloatArray:
    """2-D average pooling, NCHW, with PyTorch's semantics.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        None means kernel_size.
    padding : int or (int, int)
        Implicit zero padding, at most half the kernel size.
    ceil_mode : bool
    count_include_pad : bool
        Divide by the window size including padding (but not the part of a ceil_mode window that runs
        past the padding), as PyTorch does; False divides by the number of input elements.
    method : {"auto", "naive", "jit"}

    Returns
    -------
    out : ndarray, shape (N, C, Ho, Wo)

    Raises
    ------
    ValueError
        An array of the wrong number of dimensions or shape, a size, stride, padding out
        of range, an unknown method, or an empty output; the message names the argument and its value.
    TypeError
        An array whose dtype is not a float, integer or bool (complex, object, strings).
    ImportError
        ``method`` named explicitly but unusable here (numba missing or broken); "auto" falls back.
    """
    return _pool_forward(
        "avg_pool2d", x, (kernel_size, stride, padding, 1, ceil_mode, count_include_pad), method
    )


def avg_pool2d_backward(
    dout: Any,
    x: ArrayLike,
    kernel_size: IntPair,
    *,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    method: PoolMethod = "auto",
) -> FloatArray:
    """Gradient of :func:`avg_pool2d_forward` with respect to x.

    Parameters
    ----------
    dout : array_like, shape (N, C, Ho, Wo)
        Upstream gradient.
    x, kernel_size, stride, padding, ceil_mode, count_include_pad, method
        As given to the forward call.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)

    Raises
    ------
    ValueError, TypeError, ImportError
        As :func:`avg_pool2d_forward`; also ValueError when ``dout`` does not have the forward output's
        shape.
    """
    return _pool_backward(
        "avg_pool2d", dout, x, (kernel_size, stride, padding, 1, ceil_mode, count_include_pad),
        method,
    )
