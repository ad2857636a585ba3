"""fastconv's ops on Dask arrays: batches larger than one machine's memory or time, over a cluster.

The functions have the names, signatures and keywords of the NCHW API (``fastconv.conv2d_forward``, ...).
The batch inputs (x, dout) are dask arrays chunked along the batch axis only; the weights are NumPy
arrays (or anything ``np.asarray`` takes), sent to each worker once, not once per chunk. The results are
dask arrays: forward and dx chunk by chunk (``map_blocks``), dw and db summed over the chunks by a tree
reduction in a fixed order. Arguments are checked when the function is called, not when the graph runs.

method="auto" is decided once, on the whole batch's geometry, and every chunk runs that choice: forward
and dx are then bitwise what the single-process function gives (the kernels compute each image alone);
dw and db are sums over chunks, equal to the single-process ones within float rounding.

Workers' threads: call ``configure_workers(client)`` once so that each worker's numba kernels and BLAS use
as many threads as the worker has (``nthreads``): Dask's nanny sets OMP/MKL/OpenBLAS to 1 thread in its
worker processes but leaves numba at one thread per core, which oversubscribes the cores when there are
several workers per machine. Data-parallel training of ``fastconv.nn`` models: ``DataParallel``.

Needs ``pip install "fastconv[dask]"`` (dask.array; dask.distributed for a cluster).
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError('fastconv.dask needs dask: pip install "fastconv[dask]"') from exc

from .. import _api, _registry
from .._params import conv_geometry
from .._types import ConvPadding, IntPair
from ._training import DataParallel, configure_workers

__all__ = ["DataParallel", "avg_pool2d_backward", "avg_pool2d_forward", "configure_workers",
           "conv2d_backward", "conv2d_forward", "max_pool2d_backward", "max_pool2d_forward"]


def _batch_chunked(name: str, a: Any) -> da.Array:
    """a as a 4-d dask array chunked along axis 0 only, or a ValueError that says how to rechunk."""
    if not isinstance(a, da.Array):
        raise TypeError(f"{name} must be a dask array (dask.array.from_array({name}, chunks=(n, -1, -1, "
                        f"-1)) makes one), got {type(a).__name__}")
    if a.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions (N, C, H, W), got shape {a.shape}")
    if any(len(c) > 1 for c in a.chunks[1:]):
        raise ValueError(f"{name} must be chunked along the batch axis only, got chunks "
                         f"{tuple(len(c) for c in a.chunks)} blocks per axis; use "
                         f"{name}.rechunk({{1: -1, 2: -1, 3: -1}})")
    return a


def _aligned(dout: Any, x: da.Array) -> da.Array:
    """dout chunked as x along the batch (a dask array is rechunked; a NumPy array is wrapped)."""
    if not isinstance(dout, da.Array):
        dout = da.from_array(np.asarray(dout), chunks=(x.chunks[0], -1, -1, -1))
    dout = _batch_chunked("dout", dout)
    if dout.shape[0] != x.shape[0]:
        raise ValueError(f"dout must have the batch size of x ({x.shape[0]}), got shape {dout.shape}")
    return dout.rechunk({0: x.chunks[0]}) if dout.chunks[0] != x.chunks[0] else dout


def _empty(a: da.Array) -> np.ndarray:
    """A batch of zero images like a's: the single-process function on it checks every argument and
    gives the result's shape and dtype, at no cost."""
    return np.zeros((0, *a.shape[1:]), a.dtype)


def _tree_sum(parts: list[Any]) -> Any:
    """Delayed pairwise sum in a fixed order: ((p0 + p1) + (p2 + p3)) + ..."""
    while len(parts) > 1:
        parts = [dask.delayed(np.add)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


# ------------------------------------------------------------------------------------------- conv2d
def _conv_method(x: da.Array, w: np.ndarray, kw: dict[str, Any], method: Any, direction: str,
                 dtype: np.dtype) -> Any:
    """What the chunks run: method, or auto's choice for the whole batch. dtype: the compute dtype, as
    the NCHW function gave it for the zero-image batch (its conversion rules, b included)."""
    if method != "auto":
        return method
    g = conv_geometry(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"], kw["groups"])
    return _registry.auto_choice("conv2d", g, dtype, direction)


def _conv_forward_block(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, kw: dict[str, Any],
                        method: Any) -> np.ndarray:
    return _api.conv2d_forward(x, w, b, method=method, **kw)


def conv2d_forward(x: Any, w: Any, b: Any = None, *, stride: IntPair = 1, padding: ConvPadding = 0,
                   dilation: IntPair = 1, groups: int = 1, method: str = "auto") -> da.Array:
    """:func:`fastconv.conv2d_forward` of a dask array x (N, C, H, W) chunked along N; returns a dask
    array (N, F, Ho, Wo) with x's chunks along N. Raises as the NCHW function does, and ValueError for x
    chunked along another axis, TypeError for an x that is not a dask array."""
    x = _batch_chunked("x", x)
    w = np.asarray(w)
    b = None if b is None else np.asarray(b)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    meta = _api.conv2d_forward(_empty(x), w, b, method=method, **kw)
    chosen = _conv_method(x, w, kw, method, "forward", meta.dtype)
    wd, bd = dask.delayed(w, pure=True), dask.delayed(b, pure=True)
    return x.map_blocks(_conv_forward_block, wd, bd, kw, chosen, dtype=meta.dtype,
                        chunks=(x.chunks[0], *meta.shape[1:]), meta=meta)


def _conv_backward_block(dout: np.ndarray, x: np.ndarray, w: np.ndarray, kw: dict[str, Any],
                         method: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _api.conv2d_backward(dout, x, w, method=method, **kw)


def conv2d_backward(dout: Any, x: Any, w: Any, *, stride: IntPair = 1, padding: ConvPadding = 0,
                    dilation: IntPair = 1, groups: int = 1,
                    method: str = "auto") -> tuple[da.Array, da.Array, da.Array]:
    """:func:`fastconv.conv2d_backward` of dask arrays dout and x chunked along N (dout is rechunked as
    x): dx a dask array with x's chunks, dw and db dask arrays of one block each, summed over the chunks
    by a tree reduction."""
    x = _batch_chunked("x", x)
    dout = _aligned(dout, x)
    w = np.asarray(w)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    dx0, dw0, db0 = _api.conv2d_backward(_empty(dout), _empty(x), w, method=method, **kw)
    chosen = _conv_method(x, w, kw, method, "backward", dx0.dtype)
    wd = dask.delayed(w, pure=True)
    parts = [dask.delayed(_conv_backward_block, nout=3)(d, xb, wd, kw, chosen)
             for d, xb in zip(dout.to_delayed().ravel(), x.to_delayed().ravel())]
    dx = da.concatenate([da.from_delayed(p[0], shape=(n, *dx0.shape[1:]), dtype=dx0.dtype, meta=dx0)
                         for p, n in zip(parts, x.chunks[0])])
    dw = da.from_delayed(_tree_sum([p[1] for p in parts]), shape=dw0.shape, dtype=dw0.dtype, meta=dw0)
    db = da.from_delayed(_tree_sum([p[2] for p in parts]), shape=db0.shape, dtype=db0.dtype, meta=db0)
    return dx, dw, db


# -------------------------------------------------------------------------------------------- pools
def _pool_forward_block(x: np.ndarray, op: str, kw: dict[str, Any], method: str) -> np.ndarray:
    return getattr(_api, f"{op}_forward")(x, method=method, **kw)


def _pool_backward_block(dout: np.ndarray, x: np.ndarray, op: str, kw: dict[str, Any],
                         method: str) -> np.ndarray:
    return getattr(_api, f"{op}_backward")(dout, x, method=method, **kw)


def _pool_forward(op: str, x: Any, kw: dict[str, Any], method: str) -> da.Array:
    x = _batch_chunked("x", x)
    meta = getattr(_api, f"{op}_forward")(_empty(x), method=method, **kw)
    return x.map_blocks(_pool_forward_block, op, kw, method, dtype=meta.dtype,
                        chunks=(x.chunks[0], *meta.shape[1:]), meta=meta)


def _pool_backward(op: str, dout: Any, x: Any, kw: dict[str, Any], method: str) -> da.Array:
    x = _batch_chunked("x", x)
    dout = _aligned(dout, x)
    meta = getattr(_api, f"{op}_backward")(_empty(dout), _empty(x), method=method, **kw)
    return da.map_blocks(_pool_backward_block, dout, x, op, kw, method, dtype=meta.dtype,
                         chunks=x.chunks, meta=meta)


def max_pool2d_forward(x: Any, kernel_size: IntPair, *, stride: IntPair | None = None, padding: IntPair = 0,
                       dilation: IntPair = 1, ceil_mode: bool = False, method: str = "auto") -> da.Array:
    """:func:`fastconv.max_pool2d_forward` of a dask array chunked along N, chunk by chunk."""
    kw = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
              ceil_mode=ceil_mode)
    return _pool_forward("max_pool2d", x, kw, method)


def max_pool2d_backward(dout: Any, x: Any, kernel_size: IntPair, *, stride: IntPair | None = None,
                        padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False,
                        method: str = "auto") -> da.Array:
    """:func:`fastconv.max_pool2d_backward` of dask arrays chunked along N (dout rechunked as x)."""
    kw = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
              ceil_mode=ceil_mode)
    return _pool_backward("max_pool2d", dout, x, kw, method)


def avg_pool2d_forward(x: Any, kernel_size: IntPair, *, stride: IntPair | None = None, padding: IntPair = 0,
                       ceil_mode: bool = False, count_include_pad: bool = True,
                       method: str = "auto") -> da.Array:
    """:func:`fastconv.avg_pool2d_forward` of a dask array chunked along N, chunk by chunk."""
    kw = dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad)
    return _pool_forward("avg_pool2d", x, kw, method)


def avg_pool2d_backward(dout: Any, x: Any, kernel_size: IntPair, *, stride: IntPair | None = None,
                        padding: IntPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                        method: str = "auto") -> da.Array:
    """:func:`fastconv.avg_pool2d_backward` of dask arrays chunked along N (dout rechunked as x)."""
    kw = dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad)
    return _pool_backward("avg_pool2d", dout, x, kw, method)
