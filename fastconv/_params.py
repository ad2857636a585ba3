"""Argument parsing, validation and output-size arithmetic, done once in the public layer.

Every kernel (naive, jit, im2col) receives arrays that are already C-contiguous, of one float dtype, and a
geometry object whose sizes are consistent, so no kernel can index out of bounds.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "ConvGeometry",
    "PoolGeometry",
    "as_float_arrays",
    "conv_geometry",
    "pool_geometry",
]


# ---------------------------------------------------------------------------------------------- dtypes
def _result_dtype(arrays: dict[str, np.ndarray]) -> np.dtype:
    """float32 only when every array is float32; float64 for float64, integers, bools and mixtures."""
    all_f32 = True
    for name, a in arrays.items():
        dt = a.dtype.newbyteorder("=")  # big-endian data (FITS, network order) is the same float type
        if dt == np.float32:
            continue
        all_f32 = False
        if dt == np.float64 or dt.kind in "iub":
            continue
        raise TypeError(
            f"{name} has dtype {dt}; fastconv computes in float32 or float64 and accepts "
            "float32, float64, integer and bool inputs"
        )
    return np.dtype(np.float32) if all_f32 else np.dtype(np.float64)


def as_float_arrays(**named: object) -> tuple[np.dtype, list[np.ndarray]]:
    """Convert the named inputs (None passes through) to C-contiguous arrays of one float dtype.

    The result never aliases a caller's array that a kernel could write to: kernels only read inputs,
    and np.ascontiguousarray copies whenever the layout or dtype differ. The dtype is always in native
    byte order: a big-endian input is converted once, here, like any other conversion.
    """
    arrays: dict[str, np.ndarray] = {}
    for name, value in named.items():
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind in "USVOcMm":
            raise TypeError(f"{name} has dtype {arr.dtype}; expected a real numeric array")
        arrays[name] = arr
    dtype = _result_dtype(arrays)
    out = [
        None if named[name] is None else np.ascontiguousarray(arrays[name], dtype=dtype)
        for name in named
    ]
    return dtype, out  # type: ignore[return-value]


def check_ndim(name: str, a: np.ndarray, ndim: int, layout: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {a.shape}")


# ---------------------------------------------------------------------------------------- int tuples
def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def pair(name: str, value: object, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as (h, w)."""
    if _is_int(value):
        vals = (int(value), int(value))  # type: ignore[arg-type]
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        vals = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(vals) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return vals


# -------------------------------------------------------------------------------------------- conv
@dataclass(frozen=True)
class ConvGeometry:
    """Every size a conv2d kernel needs. Padding is explicit: top, bottom, left, right."""

    N: int
    C: int
    H: int
    W: int
    F: int
    KH: int
    KW: int
    Ho: int
    Wo: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    dh: int
    dw: int
    groups: int

    @property
    def Cg(self) -> int:  # input channels per group
        return self.C // self.groups

    @property
    def Fg(self) -> int:  # output channels per group
        return self.F // self.groups

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel at stride 1 without padding: the input already is the unfolded matrix."""
        return (self.KH == self.KW == 1 and self.sh == self.sw == 1
                and self.pt == self.pb == self.pl == self.pr == 0)

    @property
    def flops(self) -> int:
        """Multiply-adds counted as 2 FLOPs, forward pass."""
        return 2 * self.N * self.F * self.Ho * self.Wo * self.Cg * self.KH * self.KW


def _conv_padding(
    padding: object, H: int, W: int, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]
) -> tuple[int, int, int, int]:
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            # TensorFlow's rule: Ho = ceil(H / stride), the odd row/column at the bottom/right.
            out: list[int] = []
            for size, kk, ss, dd in ((H, k[0], s[0], d[0]), (W, k[1], s[1], d[1])):
                o = -(-size // ss)
                total = max((o - 1) * ss + (kk - 1) * dd + 1 - size, 0)
                out += [total // 2, total - total // 2]
            return out[0], out[1], out[2], out[3]
        raise ValueError(f"padding must be 'valid', 'same', an int or pairs of ints, got {padding!r}")
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    ):
        try:
            t, b = pair("padding", padding[0], minimum=0)
            l, r = pair("padding", padding[1], minimum=0)
        except (TypeError, ValueError):
            raise ValueError(
                f"padding must be non-negative ints ((top, bottom), (left, right)), got {padding!r}"
            ) from None
        return t, b, l, r
    try:
        ph, pw = pair("padding", padding, minimum=0)
    except TypeError:
        raise TypeError(
            "padding must be an int, (ph, pw), ((top, bottom), (left, right)), 'valid' or 'same', "
            f"got {padding!r}"
        ) from None
    return ph, ph, pw, pw


_G = TypeVar("_G")


def _memo(fn: Callable[..., _G]) -> Callable[..., _G]:
    """Remember the geometries of recent calls (validation costs more than a small layer's kernel).

    Arguments that cannot be hashed (a list as stride, say) skip the memo; errors are never remembered.
    typed=True keeps True and 1, or 2.0 and 2, apart, so validation sees what the caller passed."""
    cached = functools.lru_cache(maxsize=256, typed=True)(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _G:
        try:
            return cached(*args, **kwargs)
        except TypeError as exc:
            if "unhashable" not in str(exc):
                raise
            return fn(*args, **kwargs)

    return wrapper


def conv_out_size(size: int, k: int, s: int, p_lo: int, p_hi: int, d: int) -> int:
    return (size + p_lo + p_hi - (k - 1) * d - 1) // s + 1


@_memo
def conv_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
) -> ConvGeometry:
    N, C, H, W = x_shape
    F, Cg, KH, KW = w_shape
    if not _is_int(groups) or groups < 1:  # type: ignore[operator]
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    groups = int(groups)  # type: ignore[arg-type]
    if C % groups:
        raise ValueError(f"groups={groups} does not divide the input channels C={C}")
    if F % groups:
        raise ValueError(f"groups={groups} does not divide the output channels F={F} (w.shape[0])")
    if Cg != C // groups:
        raise ValueError(
            f"w.shape[1] must be C // groups = {C} // {groups} = {C // groups}, got w shape {w_shape}"
        )
    if KH < 1 or KW < 1:
        raise ValueError(f"the kernel must be at least 1x1, got w shape {w_shape}")
    s = pair("stride", stride)
    d = pair("dilation", dilation)
    pt, pb, pl, pr = _conv_padding(padding, H, W, (KH, KW), s, d)
    Ho = conv_out_size(H, KH, s[0], pt, pb, d[0])
    Wo = conv_out_size(W, KW, s[1], pl, pr, d[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"the kernel {KH}x{KW} (dilation {d}) is larger than the padded input "
            f"{H + pt + pb}x{W + pl + pr} (input {H}x{W}, padding {padding!r}): output would be "
            f"{Ho}x{Wo}"
        )
    return ConvGeometry(N, C, H, W, F, KH, KW, Ho, Wo, s[0], s[1], pt, pb, pl, pr, d[0], d[1], groups)


# -------------------------------------------------------------------------------------------- pool
@dataclass(frozen=True)
class PoolGeometry:
    """Every size a pooling kernel needs; padding is symmetric as in PyTorch."""

    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    Ho: int
    Wo: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    ceil_mode: bool
    count_include_pad: bool


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape: with ceil_mode a last window starting in the padding is dropped."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@_memo
def pool_geometry(
    x_shape: tuple[int, ...],
    kernel_size: object,
    stride: object,
    padding: object,
    dilation: object,
    ceil_mode: object,
    count_include_pad: object = True,
) -> PoolGeometry:
    N, C, H, W = x_shape
    k = pair("kernel_size", kernel_size)
    s = k if stride is None else pair("stride", stride)
    d = pair("dilation", dilation)
    if isinstance(padding, str):
        raise TypeError(f"pool padding must be an int or (ph, pw), got {padding!r}")
    p = pair("padding", padding, minimum=0)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    for axis in range(2):
        eff = (k[axis] - 1) * d[axis] + 1
        if 2 * p[axis] > eff:
            raise ValueError(
                f"padding={padding!r} must be at most half the (dilated) kernel size "
                f"{eff} (kernel_size={kernel_size!r}, dilation={dilation!r})"
            )
    Ho = pool_out_size(H, k[0], s[0], p[0], d[0], bool(ceil_mode))
    Wo = pool_out_size(W, k[1], s[1], p[1], d[1], bool(ceil_mode))
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"kernel_size={kernel_size!r} (dilation {d}) is larger than the padded input "
            f"{H + 2 * p[0]}x{W + 2 * p[1]}: output would be {Ho}x{Wo}"
        )
    return PoolGeometry(
        N, C, H, W, k[0], k[1], Ho, Wo, s[0], s[1], p[0], p[1], d[0], d[1],
        bool(ceil_mode), bool(count_include_pad),
    )
