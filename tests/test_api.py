"""The public layer: validation, dtype rules, memory layouts, empty batches, inputs left untouched.

Run for every available method, so a fast method cannot skip what the public layer promises."""

from __future__ import annotations

import numpy as np
import pytest
from tables import assert_close

import fastconv

ALL = {op: fastconv.available_methods(op) for op in fastconv.OPS}


def conv_args(rng, dtype=np.float64):
    return (rng.standard_normal((2, 4, 6, 6)).astype(dtype),
            rng.standard_normal((6, 2, 3, 3)).astype(dtype),
            rng.standard_normal(6).astype(dtype))


# ---------------------------------------------------------------------------------------- validation
CONV_ERRORS = [
    (dict(x_shape=(4, 6, 6)), ValueError, "x must be 4-D"),
    (dict(w_shape=(6, 2, 3)), ValueError, "w must be 4-D"),
    (dict(groups=3), ValueError, "groups=3 does not divide the input channels C=4"),
    (dict(groups=4, w_shape=(6, 1, 3, 3)), ValueError, "groups=4 does not divide the output"),
    (dict(groups=1), ValueError, "w.shape[1] must be C // groups"),
    (dict(groups=0), ValueError, "groups must be a positive int"),
    (dict(stride=0), ValueError, "stride must be positive, got 0"),
    (dict(stride=(1, -2)), ValueError, "stride must be positive"),
    (dict(stride=1.5), TypeError, "stride must be an int or a pair of ints, got 1.5"),
    (dict(dilation=0), ValueError, "dilation must be positive, got 0"),
    (dict(padding=-1), ValueError, "padding must be non-negative, got -1"),
    (dict(padding=((1, -1), (0, 0))), ValueError, "padding must be non-negative"),
    (dict(padding="full"), ValueError, "padding must be 'valid', 'same'"),
    (dict(padding=None), TypeError, "padding must be an int"),
    (dict(w_shape=(6, 2, 7, 3)), ValueError, "larger than the padded input"),
    (dict(dilation=4), ValueError, "larger than the padded input"),
    (dict(b_shape=(5,)), ValueError, "b must have shape (F,) = (6,)"),
    (dict(method="fast"), ValueError, "method must be 'auto' or one of"),
]


@pytest.mark.parametrize("change,exc,message", CONV_ERRORS, ids=[c[2] for c in CONV_ERRORS])
def test_conv_forward_validation(change, exc, message, rng):
    change = dict(change)
    x = rng.standard_normal(change.pop("x_shape", (2, 4, 6, 6)))
    w = rng.standard_normal(change.pop("w_shape", (6, 2, 3, 3)))
    b = rng.standard_normal(change.pop("b_shape", (6,)))
    kw = dict(groups=2, **change) if "groups" not in change else change
    with pytest.raises(exc, match=_literal(message)):
        fastconv.conv2d_forward(x, w, b, **kw)


def _literal(message: str) -> str:
    import re

    return re.escape(message)


def test_conv_backward_validation(rng):
    x, w, _ = conv_args(rng)
    with pytest.raises(ValueError, match=_literal("dout must have the forward output's shape (2, 6, 4, 4)")):
        fastconv.conv2d_backward(np.zeros((2, 6, 4, 5)), x, w, groups=2)


POOL_ERRORS = [
    (dict(kernel_size=0), ValueError, "kernel_size must be positive, got 0"),
    (dict(kernel_size=(2, 2, 2)), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=2, stride=0), ValueError, "stride must be positive"),
    (dict(kernel_size=2, padding=2), ValueError, "padding=2 must be at most half"),
    (dict(kernel_size=3, padding=-1), ValueError, "padding must be non-negative"),
    (dict(kernel_size=3, padding="same"), TypeError, "pool padding must be an int"),
    (dict(kernel_size=9), ValueError, "larger than the padded input"),
    (dict(kernel_size=2, ceil_mode="yes"), TypeError, "ceil_mode must be a bool"),
    (dict(kernel_size=2, method="im2"), ValueError, "method must be 'auto' or one of"),
]


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("kw,exc,message", POOL_ERRORS, ids=[c[2] for c in POOL_ERRORS])
def test_pool_validation(op, kw, exc, message, rng):
    x = rng.standard_normal((2, 3, 6, 6))
    fwd = getattr(fastconv, f"{op}_forward")
    bwd = getattr(fastconv, f"{op}_backward")
    with pytest.raises(exc, match=_literal(message)):
        fwd(x, **kw)
    with pytest.raises(exc, match=_literal(message)):
        bwd(np.zeros((2, 3, 3, 3)), x, **kw)


def test_pool_validation_more(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    with pytest.raises(ValueError, match="x must be 4-D"):
        fastconv.max_pool2d_forward(x[0], 2)
    with pytest.raises(ValueError, match=_literal("dout must have the forward output's shape (2, 3, 3, 3)")):
        fastconv.avg_pool2d_backward(np.zeros((2, 3, 3, 2)), x, 2)
    with pytest.raises(TypeError, match="count_include_pad must be a bool"):
        fastconv.avg_pool2d_forward(x, 2, count_include_pad=None)
    with pytest.raises(ValueError, match="op must be one of"):
        fastconv.available_methods("conv3d")


# -------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("method", ALL["conv2d"])
def test_dtype_rules(method, rng):
    x, w, b = conv_args(rng)
    f32 = [a.astype(np.float32) for a in (x, w, b)]
    assert fastconv.conv2d_forward(*f32, groups=2, method=method).dtype == np.float32
    assert all(a.dtype == np.float32 for a in fastconv.conv2d_backward(
        np.ones((2, 6, 4, 4), np.float32), f32[0], f32[1], groups=2, method=method))
    # float32 with float64 promotes; integers and bools become float64
    assert fastconv.conv2d_forward(f32[0], w, f32[2], groups=2, method=method).dtype == np.float64
    xi = rng.integers(-3, 3, size=x.shape)
    out = fastconv.conv2d_forward(xi, w, b, groups=2, method=method)
    assert out.dtype == np.float64
    assert_close(out, fastconv.conv2d_forward(xi.astype(np.float64), w, b, groups=2, method="naive"),
                 np.float64)
    assert fastconv.max_pool2d_forward(x > 0, 2).dtype == np.float64
    assert fastconv.avg_pool2d_forward(xi.astype(np.int8), 2).dtype == np.float64


@pytest.mark.parametrize("bad", [np.complex128, object, "U3", np.float16])
def test_bad_dtypes_raise_typeerror_naming_it(bad, rng):
    x, w, b = conv_args(rng)
    xb = x.astype(bad) if bad != "U3" else x.astype(str).astype("U3")
    name = str(np.dtype(bad))
    with pytest.raises(TypeError, match=name):
        fastconv.conv2d_forward(xb, w, b, groups=2)
    with pytest.raises(TypeError, match=name):
        fastconv.max_pool2d_forward(xb, 2)
    with pytest.raises(TypeError, match="dout has dtype complex128"):
        fastconv.avg_pool2d_backward(np.zeros((2, 4, 3, 3), complex), x, 2)


# ------------------------------------------------------------------------------------------- layouts
def layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    ro = a.copy()
    ro.flags.writeable = False
    rev = np.ascontiguousarray(a[..., ::-1])[..., ::-1]  # negative strides, same values
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return {"fortran": np.asfortranarray(a), "readonly": ro, "reversed": rev,
            "strided": big[..., ::2]}


@pytest.mark.parametrize("layout", ["fortran", "readonly", "reversed", "strided"])
@pytest.mark.parametrize("method", ALL["conv2d"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_any_layout_and_inputs_unmodified(layout, method, dtype, rng):
    x, w, b = conv_args(rng, dtype)
    dout = rng.standard_normal((2, 6, 6, 6)).astype(dtype)
    kw = dict(groups=2, padding=1)
    ref = fastconv.conv2d_forward(x, w, b, method="naive", **kw)
    ref_b = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
    xs, ws, bs, ds = (layouts(a)[layout] for a in (x, w, b, dout))
    copies = [a.copy() for a in (xs, ws, bs, ds)]
    assert_close(fastconv.conv2d_forward(xs, ws, bs, method=method, **kw), ref, dtype)
    for got, exp in zip(fastconv.conv2d_backward(ds, xs, ws, method=method, **kw), ref_b):
        assert_close(got, exp, dtype)
    for a, c in zip((xs, ws, bs, ds), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("layout", ["fortran", "readonly", "reversed", "strided"])
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_any_layout_and_inputs_unmodified(layout, op, rng):
    x = rng.standard_normal((2, 3, 7, 7))
    dout = rng.standard_normal((2, 3, 4, 4))
    fwd = getattr(fastconv, f"{op}_forward")
    bwd = getattr(fastconv, f"{op}_backward")
    kw = dict(kernel_size=3, stride=2, padding=1)
    for method in ALL[op]:
        xs, ds = layouts(x)[layout], layouts(dout)[layout]
        copies = (xs.copy(), ds.copy())
        assert_close(fwd(xs, method=method, **kw), fwd(x, method="naive", **kw), np.float64)
        assert_close(bwd(ds, xs, method=method, **kw), bwd(dout, x, method="naive", **kw),
                     np.float64)
        np.testing.assert_array_equal(xs, copies[0])
        np.testing.assert_array_equal(ds, copies[1])


# ------------------------------------------------------------------------------------- empty batches
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(dtype):
    x = np.zeros((0, 4, 6, 6), dtype)
    w = np.ones((6, 2, 3, 3), dtype)
    b = np.ones(6, dtype)
    for method in ALL["conv2d"]:
        out = fastconv.conv2d_forward(x, w, b, groups=2, stride=2, padding=1, method=method)
        assert out.shape == (0, 6, 3, 3) and out.dtype == dtype
        dx, dw, db = fastconv.conv2d_backward(out, x, w, groups=2, stride=2, padding=1,
                                              method=method)
        assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (6,)
        assert not dw.any() and not db.any() and dw.dtype == dtype
    for op in ("max_pool2d", "avg_pool2d"):
        for method in ALL[op]:
            out = getattr(fastconv, f"{op}_forward")(x, 2, method=method)
            assert out.shape == (0, 4, 3, 3) and out.dtype == dtype
            dx = getattr(fastconv, f"{op}_backward")(out, x, 2, method=method)
            assert dx.shape == x.shape and dx.dtype == dtype


def test_available_methods_lists_naive():
    for op in fastconv.OPS:
        assert "naive" in fastconv.available_methods(op)


def test_remembered_geometry_keeps_validation(rng):
    """Geometries are memoized: the memo must not turn an error into a result (True == 1 and hash
    alike), nor refuse arguments it cannot hash."""
    x = rng.standard_normal((1, 1, 5, 5))
    w = rng.standard_normal((1, 1, 2, 2))
    for _ in range(2):
        assert fastconv.conv2d_forward(x, w, stride=1, method="naive").shape == (1, 1, 4, 4)
        with pytest.raises(TypeError, match="stride must be an int"):
            fastconv.conv2d_forward(x, w, stride=True, method="naive")
        assert fastconv.conv2d_forward(x, w, stride=[2, 2], method="naive").shape == (1, 1, 2, 2)
        assert fastconv.max_pool2d_forward(x, [2, 2], method="naive").shape == (1, 1, 2, 2)
        with pytest.raises(TypeError):
            fastconv.max_pool2d_forward(x, True, method="naive")


@pytest.mark.parametrize("pair", [("im2col", "jit"), ("jit", "im2col"), ("jit", "jit")])
def test_backward_method_pair_takes_dx_and_dw_from_each(pair):
    """A (dx, dw) pair, as auto chooses: dx bitwise the first method's, dw and db the second's."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    kw = dict(stride=2, padding=1, groups=2)
    dout = rng.standard_normal(fastconv.conv2d_forward(x, w, **kw).shape)
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, method=pair, **kw)
    np.testing.assert_array_equal(dx, fastconv.conv2d_backward(dout, x, w, method=pair[0], **kw)[0])
    by_dw = fastconv.conv2d_backward(dout, x, w, method=pair[1], **kw)
    np.testing.assert_array_equal(dw, by_dw[1])
    np.testing.assert_allclose(db, by_dw[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pair", [("im2col", "naive"), ("jit", "nope"), ("jit",)])
def test_backward_method_pair_errors(pair):
    x, w = np.ones((1, 2, 5, 5)), np.ones((2, 2, 3, 3))
    with pytest.raises(ValueError, match="method"):
        fastconv.conv2d_backward(np.ones((1, 2, 3, 3)), x, w, method=pair)
