"""pytest-benchmark over the registry: every op x every available method (and auto) x the layer suite and
the shape classes (_suite.SHAPE_LAYERS), forward and forward+backward, with PyTorch as a peer row timed in
its own process.

Groups are named op|layer|dtype|pass. naive runs only on the smallest conv layer (seconds, not hours).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastconv import _bench, _suite

DTYPES = ("float32", "float64")
PASSES = ("fwd", "fwdbwd")
SMALL = ("seed001",)  # naive on a pool layer takes over 15 s

CASES = [
    (op, layer, method)
    for op in ("conv2d", "max_pool2d", "avg_pool2d")
    for layer in (_suite.ALL_CONV_LAYERS if op == "conv2d" else _suite.POOL_LAYERS)
    for method in _bench.methods_for(op, include_naive=True)
    if method != "naive" or layer.name in SMALL
]


def _ids(cases):
    return [f"{op}|{layer.name}|{m}" for op, layer, m in cases]


@pytest.mark.parametrize("what", PASSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,layer,method", CASES, ids=_ids(CASES))
def test_fastconv(benchmark, op, layer, method, dtype, what):
    if op == "conv2d":
        calls = _bench.conv_calls(layer, np.dtype(dtype), method)
        benchmark.extra_info["flops"] = layer.flops * (1 if what == "fwd" else 3)
    else:
        calls = _bench.pool_calls(op, layer, np.dtype(dtype), method)
    fn = calls[0 if what == "fwd" else 1]
    fn()  # compile and warm up outside the timing
    benchmark.group = f"{op}|{layer.name}|{dtype}|{what}"
    benchmark.extra_info["method"] = method
    if method == "naive":
        benchmark.pedantic(fn, rounds=1, iterations=1)
    else:
        benchmark(fn)


PEER_CASES = [(op, layer) for op, layer, m in CASES if m == "auto"]


@pytest.mark.parametrize("what", PASSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,layer", PEER_CASES, ids=[f"{o}|{la.name}" for o, la in PEER_CASES])
def test_pytorch(benchmark, torch_peer, op, layer, dtype, what):
    """PyTorch's own timing of each call (its process reports it; the round trip is not counted)."""
    if torch_peer is None:
        pytest.skip("PyTorch is not installed")
    times: list[float] = []
    torch_peer.time(op, layer.name, dtype, what)  # warm-up
    benchmark.group = f"{op}|{layer.name}|{dtype}|{what}"
    benchmark.extra_info["method"] = "pytorch"
    if op == "conv2d":
        benchmark.extra_info["flops"] = layer.flops * (1 if what == "fwd" else 3)
    benchmark.pedantic(lambda: times.append(torch_peer.time(op, layer.name, dtype, what)),
                       rounds=7, iterations=1)
    benchmark.extra_info["peer_median_s"] = float(np.median(times))


DROPIN_LAYERS = [layer for layer in _suite.CONV_LAYERS if layer.name in ("cs231n", "vgg", "res")]


@pytest.mark.parametrize("api", ["nchw", "deeplearning_ai"])
@pytest.mark.parametrize("layer", DROPIN_LAYERS, ids=[la.name for la in DROPIN_LAYERS])
def test_nhwc_dropin(benchmark, layer, api):
    """deeplearning.ai's NHWC conv_forward + conv_backward against the NCHW API on the same data: the
    price of the layout conversions."""
    from fastconv import deeplearning_ai as dlai

    x, w, b, dout = layer.arrays(np.dtype("float32"))
    kw = dict(stride=layer.stride, padding=layer.pad)
    benchmark.group = f"dropin|{layer.name}|float32|fwdbwd"
    benchmark.extra_info["method"] = api
    if api == "nchw":
        def fn():
            _bench._api.conv2d_forward(x, w, b, **kw)
            return _bench._api.conv2d_backward(dout, x, w, **kw)
    else:
        A = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        W = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        bb = b.reshape(1, 1, 1, -1)
        dZ = np.ascontiguousarray(dout.transpose(0, 2, 3, 1))
        hp = {"stride": layer.stride, "pad": layer.pad}

        def fn():
            _, cache = dlai.conv_forward(A, W, bb, hp)
            return dlai.conv_backward(dZ, cache)
    fn()
    benchmark(fn)
