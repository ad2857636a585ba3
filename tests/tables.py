"""The shared test tables, imported by the test modules (conftest.py holds the fixtures).

Every method registered in fastconv's registry is checked against naive over these cases, forward
and backward, in float32 and float64, with no test edits when a method is added.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv._registry import OPS

DTYPES = (np.float32, np.float64)

# (x shape, w shape, keywords). Covers strides 1-3, every padding form, dilation 1-2, groups 1 / 2 /
# depthwise, bias and no bias, non-square kernels and inputs, 1x1 kernels, and a kernel as big as the input.
CONV_CASES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), dict(stride=1, padding=1), True),
    ((2, 3, 7, 8), (4, 3, 3, 3), dict(stride=2, padding=0), False),
    ((1, 2, 9, 7), (3, 2, 3, 2), dict(stride=3, padding=(2, 1)), True),
    ((2, 4, 6, 6), (4, 2, 3, 3), dict(padding=1, groups=2), True),
    ((2, 4, 6, 5), (4, 1, 3, 3), dict(padding=1, groups=4), False),  # depthwise
    ((2, 3, 5, 5), (6, 1, 2, 2), dict(stride=2, groups=3), True),  # depthwise, multiplier 2
    ((1, 2, 8, 9), (3, 2, 3, 3), dict(dilation=2, padding=2), True),
    ((2, 2, 9, 8), (2, 2, 2, 3), dict(dilation=(2, 1), stride=(1, 2)), False),
    ((2, 3, 7, 6), (2, 3, 3, 3), dict(padding="same"), True),
    ((1, 2, 8, 7), (3, 2, 4, 3), dict(padding="same", stride=2), True),
    ((1, 2, 9, 9), (2, 2, 3, 3), dict(padding="same", stride=3, dilation=2), False),
    ((1, 2, 6, 6), (2, 2, 3, 3), dict(padding="valid", stride=2), True),
    ((2, 2, 6, 7), (3, 2, 3, 2), dict(padding=((0, 2), (1, 0))), True),  # asymmetric
    ((1, 3, 5, 6), (2, 3, 2, 2), dict(padding=((2, 1), (0, 3)), stride=(2, 3)), False),
    ((3, 5, 4, 4), (7, 5, 1, 1), dict(), True),  # pointwise
    ((2, 6, 5, 4), (4, 3, 1, 1), dict(groups=2), False),  # pointwise, grouped
    ((2, 3, 7, 7), (4, 3, 1, 1), dict(stride=2, padding=1), True),  # 1x1 that is not pointwise
    ((2, 3, 5, 4), (2, 3, 5, 4), dict(), True),  # kernel as big as the input
    ((2, 6, 6, 6), (6, 3, 3, 3), dict(groups=2, stride=2, padding=1, dilation=2), True),
    ((1, 1, 1, 1), (1, 1, 1, 1), dict(), True),
    ((1, 16, 5, 5), (24, 16, 3, 3), dict(padding=1), True),  # wider channels
    ((2, 36, 7, 6), (10, 18, 3, 2), dict(groups=2, stride=(2, 1), padding=1, dilation=(1, 2)), False),
    ((2, 1, 12, 3), (2, 1, 5, 1), dict(padding=(2, 0)), False),  # tall thin
    # rows at least four register tiles wide (64 columns) are read in place, with no padded copy, and
    # their last tile overlaps the one before
    ((2, 3, 4, 70), (18, 3, 3, 3), dict(), True),  # forward in place; 18 channels: a partial block
    ((1, 6, 5, 70), (5, 6, 3, 3), dict(padding=2), False),  # "full" padding: dx reads dout in place
    ((2, 5, 9, 9), (7, 5, 1, 1), dict(), True),  # pointwise, 81 pixels: forward and dx in place
    ((2, 5, 3, 11), (7, 5, 1, 1), dict(), True),  # pointwise, 33 pixels
    ((2, 18, 3, 5), (9, 18, 1, 1), dict(), False),  # pointwise, 18 channels: channel-vector dw tiles
    ((2, 1, 20, 20), (6, 1, 5, 5), dict(), True),  # lenet-like: one input channel
    # 5 channels x 24 columns tiles (float64), forward and dx: a partial chunk, groups, a stride
    ((2, 20, 6, 42), (10, 10, 3, 3), dict(groups=2, padding=1), True),
    ((2, 10, 5, 48), (10, 10, 3, 3), dict(stride=2, padding=1), False),
    # one input channel per group, 8+ output channels: dx as a GEMM over taps, then a fold
    ((4, 1, 12, 11), (8, 1, 3, 3), dict(padding=1), True),
    ((4, 2, 13, 10), (16, 1, 3, 4), dict(groups=2, stride=(2, 1), padding=(1, 2), dilation=(1, 2)), False),
    ((4, 1, 11, 15), (8, 1, 5, 3), dict(stride=(1, 2), padding=2), True),
]

# (x shape, keywords, which of max/avg the case applies to)
POOL_CASES = [
    ((2, 3, 6, 6), dict(kernel_size=2), "both"),
    ((2, 2, 7, 7), dict(kernel_size=3, stride=2), "both"),  # overlapping windows
    ((2, 3, 7, 9), dict(kernel_size=3, stride=2, padding=1), "both"),
    ((1, 2, 8, 7), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)), "both"),
    ((2, 2, 7, 7), dict(kernel_size=2, stride=2, ceil_mode=True), "both"),
    ((1, 2, 8, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), "both"),
    ((1, 2, 10, 9), dict(kernel_size=3, stride=3, padding=1, ceil_mode=True), "both"),
    ((2, 2, 5, 6), dict(kernel_size=3, stride=1, padding=1), "both"),
    ((1, 2, 9, 9), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), "avg"),
    ((1, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                        count_include_pad=False), "avg"),
    ((1, 2, 9, 10), dict(kernel_size=3, stride=2, padding=2, dilation=2), "max"),
    ((1, 2, 9, 9), dict(kernel_size=(2, 3), stride=1, dilation=(3, 2), ceil_mode=True), "max"),
    ((2, 1, 1, 1), dict(kernel_size=1), "both"),
    # windows wholly in the padding (dilation): -inf out, no gradient
    ((1, 2, 1, 5), dict(kernel_size=(2, 2), stride=1, padding=(1, 0), dilation=(2, 1)), "max"),
    ((1, 3, 4, 5), dict(kernel_size=(4, 5)), "both"),
    # windows that tile the input (stride = kernel): the backward stores dx once and zeroes only what no
    # window reaches, here a last row and column (2x2) and two of each (3x3); results start as NaN
    ((2, 2, 7, 9), dict(kernel_size=2), "both"),
    ((1, 2, 8, 11), dict(kernel_size=3), "both"),
    # rows long enough for the vector loops' bodies and remainders (the jit kernels fold whole rows, and
    # the max backward a whole plane, in one loop)
    ((1, 2, 5, 75), dict(kernel_size=3, stride=1, padding=1), "both"),
    ((2, 3, 12, 70), dict(kernel_size=3, stride=2, padding=1), "both"),
    ((1, 2, 9, 68), dict(kernel_size=2, stride=3, dilation=2), "max"),
    # windows two columns wide that tile the input (the max backward writes dx directly), with a row and
    # a column no window reaches
    ((2, 2, 7, 41), dict(kernel_size=(3, 2)), "max"),
]


def pool_cases(op: str) -> list:
    kind = "max" if op == "max_pool2d" else "avg"
    return [(shape, kw) for shape, kw, which in POOL_CASES if which in ("both", kind)]


def ids(cases) -> list[str]:
    """Readable pytest ids for a table's rows."""
    return ["-".join(str(p) for p in case if not isinstance(p, bool)).replace(" ", "") for case in cases]


def fast_methods(op: str) -> list[str]:
    """Every available method but naive, and "auto" (its dispatch is checked like a method)."""
    return [m for m in fastconv.available_methods(op) if m != "naive"] + ["auto"]


def tolerance(dtype) -> float:
    """Error allowed relative to the reference's largest magnitude: a few hundred ulps of the sums."""
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype, what: str = "") -> None:
    """Same shape, same dtype, NaN in the same places, and values within the dtype's tolerance."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    np.testing.assert_array_equal(nan_a, nan_e, err_msg=f"{what}: NaN positions differ")
    fin = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~fin & ~nan_e], expected[~fin & ~nan_e],
                                  err_msg=f"{what}: infinities differ")
    if fin.any():
        scale = max(float(np.abs(expected[fin]).max()), 1.0)
        err = float(np.abs(actual[fin].astype(np.float64) - expected[fin]).max())
        assert err <= tolerance(dtype) * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


try:  # PyTorch is an optional outside oracle
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:  # pragma: no cover
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")

__all__ = ["CONV_CASES", "DTYPES", "OPS", "POOL_CASES", "assert_close", "ids", "fast_methods",
           "needs_torch", "pool_cases", "tolerance"]
