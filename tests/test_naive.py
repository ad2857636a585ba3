"""The naive method is the oracle, so it is checked against things outside fastconv: numerical gradients,
an einsum over sliding windows, hand-worked cases, and PyTorch when installed."""

from __future__ import annotations

import numpy as np
import pytest
import references
from tables import CONV_CASES, DTYPES, assert_close, ids, needs_torch, pool_cases

import fastconv
from fastconv._checkgrid import has_empty_window
from fastconv._params import conv_geometry, pool_geometry

POOL_FNS = {
    "max_pool2d": (fastconv.max_pool2d_forward, fastconv.max_pool2d_backward),
    "avg_pool2d": (fastconv.avg_pool2d_forward, fastconv.avg_pool2d_backward),
}
POOL_PARAMS = [(op, s, kw) for op in POOL_FNS for s, kw in pool_cases(op)]


def pool_geom(shape, kw):
    return pool_geometry(shape, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                         kw.get("dilation", 1), kw.get("ceil_mode", False),
                         kw.get("count_include_pad", True))


def conv_geom(xs, ws, kw):
    return conv_geometry(xs, ws, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                         kw.get("groups", 1))


def check_gradient(f, a: np.ndarray, analytic: np.ndarray, h: float = 1e-6, most: int = 150) -> None:
    """Centered differences of the scalar f() against ``analytic`` at up to ``most`` elements of a
    (all of them for small arrays, a fixed random sample otherwise); a is perturbed in place."""
    flat = a.reshape(-1)  # a view: a is C-contiguous here
    picks = np.arange(flat.size)
    if flat.size > most:
        picks = np.random.default_rng(7).choice(flat.size, most, replace=False)
    numeric = np.empty(picks.size)
    for k, i in enumerate(picks):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        numeric[k] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(analytic.reshape(-1)[picks], numeric, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------- conv
@pytest.mark.parametrize("xs,ws,kw,bias", CONV_CASES, ids=ids(CONV_CASES))
def test_conv_backward_matches_numerical_gradient(xs, ws, kw, bias, rng):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0]) if bias else None
    out = fastconv.conv2d_forward(x, w, b, method="naive", **kw)
    dout = rng.standard_normal(out.shape)

    geom = conv_geom(xs, ws, kw)

    def loss():  # of the einsum reference (naive's own forward matches it, test below): 100x faster
        return float(np.sum(references.conv2d(x, w, b, geom) * dout))

    dx, dw, db = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
    check_gradient(loss, x, dx)
    check_gradient(loss, w, dw)
    if b is not None:
        check_gradient(loss, b, db)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,kw,bias", CONV_CASES, ids=ids(CONV_CASES))
def test_conv_forward_matches_einsum(xs, ws, kw, bias, dtype, rng):
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    expected = references.conv2d(x.astype(np.float64), w.astype(np.float64),
                                 None if b is None else b.astype(np.float64), conv_geom(xs, ws, kw))
    out = fastconv.conv2d_forward(x, w, b, method="naive", **kw)
    assert_close(out, expected, dtype, "naive conv forward")


def test_conv_hand_worked():
    # 1 channel, 3x3 input 1..9, 2x2 kernel of ones, stride 1, no padding: sums of 2x2 blocks.
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2))
    out = fastconv.conv2d_forward(x, w, np.array([0.5]), method="naive")
    np.testing.assert_array_equal(out[0, 0], [[12.5, 16.5], [24.5, 28.5]])
    # Backward with dout all ones: each input counted once per window that covers it.
    dx, dw, db = fastconv.conv2d_backward(np.ones((1, 1, 2, 2)), x, w, method="naive")
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    np.testing.assert_array_equal(dw[0, 0], [[12, 16], [24, 28]])
    np.testing.assert_array_equal(db, [4.0])


def test_conv_same_padding_tensorflow_rule():
    # H=8, K=4, stride 2: Ho = 4, total = (4-1)*2 + 4 - 8 = 2 -> 1 top, 1 bottom.
    # W=7, K=3, stride 2: Wo = 4, total = (4-1)*2 + 3 - 7 = 2 -> 1 left, 1 right.
    g = conv_geometry((1, 1, 8, 7), (1, 1, 4, 3), 2, "same", 1, 1)
    assert (g.Ho, g.Wo, g.pt, g.pb, g.pl, g.pr) == (4, 4, 1, 1, 1, 1)
    # H=6, K=2, stride 1: total 1 -> the odd row at the bottom.
    g = conv_geometry((1, 1, 6, 6), (1, 1, 2, 2), 1, "same", 1, 1)
    assert (g.Ho, g.pt, g.pb, g.pl, g.pr) == (6, 0, 1, 0, 1)


# --------------------------------------------------------------------------------------------- pool
@pytest.mark.parametrize("op,shape,kw", POOL_PARAMS, ids=ids(POOL_PARAMS))
def test_pool_backward_matches_numerical_gradient(op, shape, kw, rng):
    if op == "max_pool2d" and has_empty_window(shape, kw):
        pytest.skip("a -inf output has no finite difference; see test_max_pool_empty_window")
    fwd, bwd = POOL_FNS[op]
    # Distinct values far apart (a permutation), so that a small step never changes a window's argmax.
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)
    dout = rng.standard_normal(fwd(x, method="naive", **kw).shape)

    def loss():
        return float(np.sum(fwd(x, method="naive", **kw) * dout))

    dx = bwd(dout, x, method="naive", **kw)
    check_gradient(loss, x, dx, h=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,shape,kw", POOL_PARAMS, ids=ids(POOL_PARAMS))
def test_pool_forward_matches_sliding_windows(op, shape, kw, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    ref = references.max_pool2d if op == "max_pool2d" else references.avg_pool2d
    expected = ref(x.astype(np.float64), pool_geom(shape, kw))
    assert_close(POOL_FNS[op][0](x, method="naive", **kw), expected, dtype, f"naive {op}")


def test_max_pool_ties_go_to_first_maximum():
    x = np.zeros((1, 1, 3, 3))
    # 2x2 windows, stride 1: every window is all zeros, so each window's gradient goes to its top-left.
    dx = fastconv.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, stride=1, method="naive")
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    x = np.array([[[[1.0, 5.0], [5.0, 2.0]]]])
    dx = fastconv.max_pool2d_backward(np.full((1, 1, 1, 1), 3.0), x, 2, method="naive")
    np.testing.assert_array_equal(dx[0, 0], [[0, 3], [0, 0]])


def test_max_pool_nan_is_the_maximum():
    x = np.array([[[[1.0, np.nan, 7.0, 8.0], [np.nan, 2.0, 9.0, 1.0]]]])
    out = fastconv.max_pool2d_forward(x, 2, method="naive")
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 9.0
    dx = fastconv.max_pool2d_backward(np.array([[[[2.0, 3.0]]]]), x, 2, method="naive")
    # PyTorch's CPU kernel: a NaN replaces the running maximum, so the last NaN gets the gradient.
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0, 0], [2, 0, 3, 0]])


def test_max_pool_padding_is_minus_infinity():
    x = np.full((1, 1, 2, 2), -5.0)
    out = fastconv.max_pool2d_forward(x, 3, stride=1, padding=1, method="naive")
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), -5.0))


def test_max_pool_empty_window():
    # H=1, kernel 2 with dilation 2, padding 1: the window's taps are rows -1 and 1, both outside.
    x = np.arange(1.0, 4.0).reshape(1, 1, 1, 3)
    kw = dict(kernel_size=(2, 1), stride=1, padding=(1, 0), dilation=(2, 1))
    out = fastconv.max_pool2d_forward(x, method="naive", **kw)
    np.testing.assert_array_equal(out, np.full((1, 1, 1, 3), -np.inf))
    dx = fastconv.max_pool2d_backward(np.ones((1, 1, 1, 3)), x, method="naive", **kw)
    np.testing.assert_array_equal(dx, np.zeros_like(x))


def test_avg_pool_divisors_hand_worked():
    x = np.ones((1, 1, 3, 3))
    # kernel 2, stride 2, padding 1: windows cover 1, 2, 2, 4 inputs out of 4 places.
    incl = fastconv.avg_pool2d_forward(x, 2, stride=2, padding=1, method="naive")
    excl = fastconv.avg_pool2d_forward(x, 2, stride=2, padding=1, count_include_pad=False,
                                       method="naive")
    np.testing.assert_array_equal(incl[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(excl[0, 0], np.ones((2, 2)))
    # ceil_mode: H=3, k=2, s=2 -> 2 windows; the last covers one row and its divisor is 2*1, not 4.
    out = fastconv.avg_pool2d_forward(x, 2, stride=2, ceil_mode=True, method="naive")
    np.testing.assert_array_equal(out[0, 0], np.ones((2, 2)))


def test_pool_ceil_mode_drops_window_starting_in_padding():
    # H=5, k=2, s=2, p=1, ceil: ceil((5+2-2)/2)+1 = 4, but window 3 starts at 6-1=5 >= H: dropped -> 3.
    assert pool_geometry((1, 1, 5, 5), 2, 2, 1, 1, True).Ho == 3
    assert pool_geometry((1, 1, 5, 5), 2, 2, 1, 1, False).Ho == 3
    assert pool_geometry((1, 1, 6, 6), 3, 2, 0, 1, True).Ho == 3


# ------------------------------------------------------------------------------------------ PyTorch
@needs_torch
@pytest.mark.parametrize("xs,ws,kw,bias", CONV_CASES, ids=ids(CONV_CASES))
def test_conv_naive_matches_pytorch(xs, ws, kw, bias, rng):
    import torch
    import torch.nn.functional as F

    g = conv_geom(xs, ws, kw)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0]) if bias else None
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    tout = F.conv2d(F.pad(tx, (g.pl, g.pr, g.pt, g.pb)), tw, tb, stride=(g.sh, g.sw),
                    dilation=(g.dh, g.dw), groups=g.groups)
    dout = rng.standard_normal(tuple(tout.shape))
    tout.backward(torch.tensor(dout))
    out = fastconv.conv2d_forward(x, w, b, method="naive", **kw)
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
    assert_close(out, tout.detach().numpy(), np.float64, "forward")
    assert_close(dx, tx.grad.numpy(), np.float64, "dx")
    assert_close(dw, tw.grad.numpy(), np.float64, "dw")
    assert_close(db, dout.sum(axis=(0, 2, 3)), np.float64, "db")
    if tb is not None:
        assert_close(db, tb.grad.numpy(), np.float64, "db vs torch")


def _torch_pool(op, tx, kw):
    import torch.nn.functional as F

    kw = dict(kw)
    if op == "max_pool2d":
        return F.max_pool2d(tx, **kw)
    return F.avg_pool2d(tx, **kw)


@needs_torch
@pytest.mark.parametrize("op,shape,kw", POOL_PARAMS, ids=ids(POOL_PARAMS))
@pytest.mark.parametrize("values", ["random", "ties", "nan"])
def test_pool_naive_matches_pytorch(op, shape, kw, values, rng):
    import torch

    k, p = np.broadcast_to(kw["kernel_size"], 2), np.broadcast_to(kw.get("padding", 0), 2)
    if np.any(p > k // 2):
        pytest.skip("PyTorch refuses padding above half the undilated kernel; fastconv allows half "
                    "the dilated kernel")
    if op == "max_pool2d" and has_empty_window(shape, kw):
        pytest.skip("PyTorch 2.13 writes out of bounds for a window wholly in the padding")
    if values == "random":
        x = rng.standard_normal(shape)
    else:  # few distinct values: many ties inside windows, and NaN where asked
        x = rng.integers(0, 3, size=shape).astype(np.float64)
        if values == "nan":
            x[rng.random(shape) < 0.15] = np.nan
    tx = torch.tensor(x, requires_grad=True)
    tout = _torch_pool(op, tx, kw)
    dout = rng.standard_normal(tuple(tout.shape))
    tout.backward(torch.tensor(dout))
    fwd, bwd = POOL_FNS[op]
    assert_close(fwd(x, method="naive", **kw), tout.detach().numpy(), np.float64, "forward")
    assert_close(bwd(dout, x, method="naive", **kw), tx.grad.numpy(), np.float64, "backward")
