"""The drop-in call sets against the courses' own expected outputs and gradient checks, the layers around
conv and pool, the nn layer objects, and the user-facing checking tools."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import cs231n, nn
from fastconv import deeplearning_ai as dlai
from fastconv.testing import (
    check_layer,
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)

CS231N_CONV = ["naive", "fast", "im2col", "strides"]


# ------------------------------------------------------------------------------------------ CS231n
@pytest.mark.parametrize("kind", CS231N_CONV)
def test_cs231n_conv_forward_notebook_values(kind):
    # ConvolutionalNetworks.ipynb, "Convolution: Naive forward pass"
    x = np.linspace(-0.1, 0.5, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    w = np.linspace(-0.2, 0.3, num=3 * 3 * 4 * 4).reshape(3, 3, 4, 4)
    b = np.linspace(-0.1, 0.2, num=3)
    out, _ = getattr(cs231n, f"conv_forward_{kind}")(x, w, b, {"stride": 2, "pad": 1})
    correct_out = np.array([[[[-0.08759809, -0.10987781], [-0.18387192, -0.2109216]],
                             [[0.21027089, 0.21661097], [0.22847626, 0.23004637]],
                             [[0.50813986, 0.54309974], [0.64082444, 0.67101435]]],
                            [[[-0.98053589, -1.03143541], [-1.19128892, -1.24695841]],
                             [[0.69108355, 0.66880383], [0.59480972, 0.56776003]],
                             [[2.36270298, 2.36904306], [2.38090835, 2.38247847]]]])
    assert rel_error(out, correct_out) < 1e-7


@pytest.mark.parametrize("kind", CS231N_CONV)
def test_cs231n_conv_backward_gradient_check(kind):
    rng = np.random.default_rng(231)
    x, w, b = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    dout = rng.standard_normal((4, 2, 5, 5))
    conv_param = {"stride": 1, "pad": 1}
    fwd = getattr(cs231n, f"conv_forward_{kind}")
    bwd = getattr(cs231n, f"conv_backward_{kind}")
    dx_num = eval_numerical_gradient_array(lambda x: fwd(x, w, b, conv_param)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: fwd(x, w, b, conv_param)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: fwd(x, w, b, conv_param)[0], b, dout)
    _, cache = fwd(x, w, b, conv_param)
    dx, dw, db = bwd(dout, cache)
    assert rel_error(dx, dx_num) < 1e-8
    assert rel_error(dw, dw_num) < 1e-8
    assert rel_error(db, db_num) < 1e-8


@pytest.mark.parametrize("kind", ["naive", "fast", "reshape", "im2col"])
def test_cs231n_max_pool_notebook_values_and_gradient(kind):
    x = np.linspace(-0.3, 0.4, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    pool_param = {"pool_width": 2, "pool_height": 2, "stride": 2}
    out, _ = getattr(cs231n, f"max_pool_forward_{kind}")(x, pool_param)
    correct_out = np.array([[[[-0.26315789, -0.24842105], [-0.20421053, -0.18947368]],
                             [[-0.14526316, -0.13052632], [-0.08631579, -0.07157895]],
                             [[-0.02736842, -0.01263158], [0.03157895, 0.04631579]]],
                            [[[0.09052632, 0.10526316], [0.14947368, 0.16421053]],
                             [[0.20842105, 0.22315789], [0.26736842, 0.28210526]],
                             [[0.32631579, 0.34105263], [0.38526316, 0.4]]]])
    assert rel_error(out, correct_out) < 1e-7
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 8, 8))
    dout = rng.standard_normal((3, 2, 4, 4))
    fwd = getattr(cs231n, f"max_pool_forward_{kind}")
    dx_num = eval_numerical_gradient_array(lambda x: fwd(x, pool_param)[0], x, dout)
    dx = getattr(cs231n, f"max_pool_backward_{kind}")(dout, fwd(x, pool_param)[1])
    assert rel_error(dx, dx_num) < 1e-10


def test_cs231n_affine_relu_and_sandwiches():
    # FullyConnectedNets.ipynb, "Affine layer: forward"
    num_inputs, input_shape, output_dim = 2, (4, 5, 6), 3
    x = np.linspace(-0.1, 0.5, num=num_inputs * 120).reshape(num_inputs, *input_shape)
    w = np.linspace(-0.2, 0.3, num=120 * output_dim).reshape(120, output_dim)
    b = np.linspace(-0.3, 0.1, num=output_dim)
    out, _ = cs231n.affine_forward(x, w, b)
    assert rel_error(out, np.array([[1.49834967, 1.70660132, 1.91485297],
                                    [3.25553199, 3.5141327, 3.77273342]])) < 1e-8
    # "ReLU activation: forward"
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, _ = cs231n.relu_forward(x)
    correct = np.array([[0., 0., 0., 0.], [0., 0., 0.04545455, 0.13636364],
                        [0.22727273, 0.31818182, 0.40909091, 0.5]])
    assert rel_error(out, correct) < 1e-7
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((10, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    dout = rng.standard_normal((10, 5))
    _, cache = cs231n.affine_relu_forward(x, w, b)
    dx, dw, db = cs231n.affine_relu_backward(dout, cache)
    assert rel_error(dx, eval_numerical_gradient_array(
        lambda x: cs231n.affine_relu_forward(x, w, b)[0], x, dout)) < 1e-8
    assert rel_error(dw, eval_numerical_gradient_array(
        lambda w: cs231n.affine_relu_forward(x, w, b)[0], w, dout)) < 1e-8
    assert rel_error(db, eval_numerical_gradient_array(
        lambda b: cs231n.affine_relu_forward(x, w, b)[0], b, dout)) < 1e-8
    x = rng.standard_normal((2, 3, 8, 8))
    w, b = rng.standard_normal((3, 3, 3, 3)), rng.standard_normal(3)
    conv_param, pool_param = {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    dout = rng.standard_normal((2, 3, 4, 4))
    _, cache = cs231n.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    dx, dw, db = cs231n.conv_relu_pool_backward(dout, cache)
    f = lambda x: cs231n.conv_relu_pool_forward(x, w, b, conv_param, pool_param)[0]  # noqa: E731
    assert rel_error(dx, eval_numerical_gradient_array(f, x, dout)) < 1e-6


def test_relu_backward_at_zero_and_nan():
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    out, cache = cs231n.relu_forward(x)
    np.testing.assert_array_equal(out, [0.0, 0.0, 2.0, np.nan])
    np.testing.assert_array_equal(cs231n.relu_backward(np.ones(4), cache), [0, 0, 1, 0])
    assert cs231n.relu_forward(x.astype(np.float32))[0].dtype == np.float32


def test_softmax_and_svm_loss():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 10)) * 0.001
    y = rng.integers(10, size=50)
    x_copy = x.copy()
    loss, dx = cs231n.softmax_loss(x, y)
    np.testing.assert_array_equal(x, x_copy)  # the notes subtracted the max in place
    assert abs(loss - np.log(10)) < 1e-2  # near-uniform scores: loss about log(C)
    assert rel_error(dx, eval_numerical_gradient(lambda x: cs231n.softmax_loss(x, y)[0], x,
                                                 verbose=False)) < 1e-7
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])  # stable for large scores
    loss, _ = cs231n.softmax_loss(big, np.array([0, 0]))
    assert np.isfinite(loss) and abs(loss - 500.0) < 1e-6
    loss, dx = cs231n.svm_loss(x, y)
    assert abs(loss - 9.0) < 1e-2  # near-equal scores: each wrong class costs the margin 1
    assert rel_error(dx, eval_numerical_gradient(lambda x: cs231n.svm_loss(x, y)[0], x,
                                                 verbose=False)) < 1e-7
    with pytest.raises(ValueError, match="labels must be in"):
        cs231n.softmax_loss(x, y + 10)


def test_dropout_keeps_p_and_leaves_global_rng_alone():
    x = np.random.default_rng(0).standard_normal((500, 500)) + 10
    state = np.random.get_state()[1].copy()
    for p in (0.25, 0.4, 0.7):
        out, cache = cs231n.dropout_forward(x, {"mode": "train", "p": p, "seed": 123})
        assert abs((out == 0).mean() - (1 - p)) < 0.01
        assert abs(out.mean() - x.mean()) < 0.05 * x.mean()  # inverted: expectation preserved
        out2, _ = cs231n.dropout_forward(x, {"mode": "train", "p": p, "seed": 123})
        np.testing.assert_array_equal(out, out2)
        np.testing.assert_array_equal(cs231n.dropout_forward(x, {"mode": "test", "p": p})[0], x)
        dout = np.ones_like(x)
        np.testing.assert_array_equal(cs231n.dropout_backward(dout, cache), cache[1])
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert cs231n.dropout_forward(x.astype(np.float32), {"mode": "train", "p": 0.5, "seed": 1})[
        0].dtype == np.float32


# ---------------------------------------------------------------------------------- deeplearning.ai
def test_dlai_zero_pad_and_single_step():
    np.random.seed(1)  # the notebook's own seeding, reproduced in this test only
    x = np.random.randn(4, 3, 3, 2)
    x_pad = dlai.zero_pad(x, 2)
    assert x_pad.shape == (4, 7, 7, 2)
    np.testing.assert_array_equal(x_pad[1, 1], np.zeros((7, 2)))
    np.random.seed(1)
    a_slice_prev = np.random.randn(4, 4, 3)
    W = np.random.randn(4, 4, 3)
    b = np.random.randn(1, 1, 1)
    assert abs(dlai.conv_single_step(a_slice_prev, W, b) - (-6.99908945068)) < 1e-9


@pytest.mark.parametrize("method", ["auto", "naive", "jit", "im2col"])
def test_dlai_conv_notebook_values(method):
    np.random.seed(1)
    A_prev = np.random.randn(10, 4, 4, 3)
    W = np.random.randn(2, 2, 3, 8)
    b = np.random.randn(1, 1, 1, 8)
    Z, cache = dlai.conv_forward(A_prev, W, b, {"pad": 2, "stride": 2}, method=method)
    assert abs(Z.mean() - 0.0489952035289) < 1e-10
    np.testing.assert_allclose(Z[3, 2, 1], [-0.61490741, -6.7439236, -2.55153897, 1.75698377,
                                            3.56208902, 0.53036437, 5.18531798, 8.75898442],
                               atol=1e-8)
    dA, dW, db = dlai.conv_backward(Z, cache, method=method)
    assert dA.shape == A_prev.shape and dW.shape == W.shape and db.shape == b.shape
    assert abs(dA.mean() - 1.45243777754) < 1e-9
    assert abs(dW.mean() - 1.72699145831) < 1e-9
    assert abs(db.mean() - 7.83923256462) < 1e-9


@pytest.mark.parametrize("method", ["auto", "naive", "jit"])
def test_dlai_pool_notebook_values(method):
    np.random.seed(1)
    A_prev = np.random.randn(2, 4, 4, 3)
    A, _ = dlai.pool_forward(A_prev, {"stride": 2, "f": 3}, method=method)
    np.testing.assert_allclose(A[:, 0, 0], [[1.74481176, 0.86540763, 1.13376944],
                                           [1.13162939, 1.51981682, 2.18557541]], atol=1e-8)
    A, _ = dlai.pool_forward(A_prev, {"stride": 2, "f": 3}, mode="average", method=method)
    np.testing.assert_allclose(A[:, 0, 0], [[0.02105773, -0.20328806, -0.40389855],
                                           [-0.22154621, 0.51716526, 0.48155844]], atol=1e-8)
    np.random.seed(1)
    A_prev = np.random.randn(5, 5, 3, 2)
    A, cache = dlai.pool_forward(A_prev, {"stride": 1, "f": 2}, method=method)
    dA = np.random.randn(5, 4, 2, 2)
    np.testing.assert_allclose(dlai.pool_backward(dA, cache, mode="max", method=method)[1, 1],
                               [[0, 0], [5.05844394, -1.68282702], [0, 0]], atol=1e-8)
    np.testing.assert_allclose(dlai.pool_backward(dA, cache, mode="average", method=method)[1, 1],
                               [[0.08485462, 0.2787552], [1.26461098, -0.25749373],
                                [1.17975636, -0.53624893]], atol=1e-8)
    with pytest.raises(ValueError, match="mode must be"):
        dlai.pool_forward(A_prev, {"stride": 1, "f": 2}, mode="min")


def test_dlai_helpers():
    x = np.array([[1.0, 3.0], [3.0, -2.0]])
    np.testing.assert_array_equal(dlai.create_mask_from_window(x), [[False, True], [False, False]])
    np.testing.assert_array_equal(dlai.distribute_value(2.0, (2, 2)), np.full((2, 2), 0.5))


def test_dlai_matches_nchw_api():
    rng = np.random.default_rng(7)
    A = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    W = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    b = rng.standard_normal((1, 1, 1, 5)).astype(np.float32)
    Z, _ = dlai.conv_forward(A, W, b, {"pad": 1, "stride": 2})
    ref = fastconv.conv2d_forward(A.transpose(0, 3, 1, 2), W.transpose(3, 2, 0, 1), b.ravel(),
                                  stride=2, padding=1, method="naive")
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z, ref.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- nn
def _tiny_net(rng):
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                         nn.AvgPool2d(1), nn.Flatten(), nn.Dropout(0.8, rng=rng), nn.Linear(16, 3, rng=rng))


def test_nn_gradients_match_numerical():
    rng = np.random.default_rng(0)
    net = _tiny_net(rng).eval()  # dropout off, so the function is deterministic
    for p in net.parameters():
        p.data = p.data.astype(np.float64)
        p.grad = np.zeros_like(p.data)
    x = rng.standard_normal((3, 2, 4, 4))
    y = np.array([0, 2, 1])
    loss_fn = nn.SoftmaxCrossEntropy()
    loss_fn(net.forward(x), y)
    net.backward(loss_fn.backward())
    for name, p in net.named_parameters():
        num = eval_numerical_gradient(lambda _: loss_fn(net.forward(x), y), p.data, verbose=False)
        assert rel_error(p.grad, num) < 1e-6, name


def test_nn_training_step_dtype_and_state_dict(tmp_path):
    rng = np.random.default_rng(1)
    net = _tiny_net(rng)
    assert all(p.data.dtype == np.float32 for p in net.parameters())
    conv = net.layers[0]
    fan_in = 2 * 3 * 3
    assert abs(conv.weight.data.std() - np.sqrt(2 / fan_in)) < 0.15  # He initialization
    x = rng.standard_normal((8, 2, 4, 4)).astype(np.float32)
    y = rng.integers(3, size=8)
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = nn.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    first = None
    for _ in range(30):
        out = net.forward(x)
        assert out.dtype == np.float32
        loss = loss_fn(out, y)
        first = loss if first is None else first
        opt.zero_grad()
        net.backward(loss_fn.backward())
        opt.step()
    assert loss < first / 2
    assert all(p.data.dtype == np.float32 for p in net.parameters())
    path = tmp_path / "net.npz"
    net.save(str(path))
    other = _tiny_net(np.random.default_rng(99))
    other.load(str(path))
    net.eval()
    other.eval()
    np.testing.assert_array_equal(net.forward(x), other.forward(x))
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({})


def test_sgd_update_rule():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = nn.SGD([p], lr=0.1, momentum=0.5, weight_decay=0.01)
    p.grad[...] = [0.5, 0.5]
    opt.step()  # v = -0.1 * (g + 0.01 w)
    np.testing.assert_allclose(p.data, [1.0 - 0.1 * 0.51, -2.0 - 0.1 * 0.48])
    v1 = -0.1 * np.array([0.51, 0.48])
    w1 = p.data.copy()
    opt.step()
    np.testing.assert_allclose(p.data, w1 + 0.5 * v1 - 0.1 * (0.5 + 0.01 * w1))


# ---------------------------------------------------------------------------------------- testing
def test_check_layer_passes_reference_and_catches_bugs():
    assert check_layer(cs231n.conv_forward_naive, "conv", cs231n.conv_backward_naive, cases=6).passed
    assert check_layer(cs231n.max_pool_forward_naive, "max_pool", cs231n.max_pool_backward_naive,
                       cases=6).passed

    def stride_ignored_in_backward(dout, cache):  # bug of note 002
        x, w, b, conv_param, method = cache
        return fastconv.conv2d_backward(np.ascontiguousarray(dout), x, w, padding=conv_param["pad"]) \
            if conv_param["stride"] == 1 else (np.zeros_like(x), np.zeros_like(w), np.zeros(w.shape[0]))

    report = check_layer(cs231n.conv_forward_naive, "conv", stride_ignored_in_backward, cases=20)
    assert not report.passed and report.worst_error > 0.1
    assert "FAILED" in str(report)

    def pool_assigns(dout, cache):  # bug of notes 000/004: '=' instead of '+=' where windows overlap
        x, pool_param, _ = cache
        return np.zeros_like(x)

    assert not check_layer(cs231n.max_pool_forward_naive, "max_pool", pool_assigns, cases=5).passed


def test_demo_trains(tmp_path):
    pytest.importorskip("sklearn")
    from fastconv import demo

    lines: list[str] = []
    hist = demo.run(epochs=4, plot=str(tmp_path / "curves.png"), log=lines.append)
    assert len(hist["test_acc"]) == 4 and hist["test_acc"][-1] > 0.9
    assert any("epoch  4" in line for line in lines)
    if __import__("importlib").util.find_spec("matplotlib"):
        assert (tmp_path / "curves.png").stat().st_size > 1000
