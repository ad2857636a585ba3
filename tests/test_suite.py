"""The benchmark layers (_suite): every layer's arrays, output size and FLOPs agree with the conv it
stands for, and every shape class runs through each method as naive does, on a reduced copy (one image,
a few channels or groups, the class's kernel, stride, padding, dilation and grouping kept)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tables import DTYPES, assert_close, fast_methods

import fastconv
from fastconv import _suite
from fastconv._params import conv_geometry


def _reduced(layer: _suite.ConvLayer) -> _suite.ConvLayer:
    if layer.groups > 1:  # keep two groups of the same per-group channels
        cg, fg = layer.C // layer.groups, layer.F // layer.groups
        return replace(layer, N=1, C=2 * cg, F=2 * fg, groups=2, H=min(layer.H, 15), W=min(layer.W, 15))
    return replace(layer, N=1, C=min(layer.C, 6), F=min(layer.F, 5), H=min(layer.H, 15), W=min(layer.W, 15))


@pytest.mark.parametrize("layer", _suite.ALL_CONV_LAYERS, ids=lambda la: la.name)
def test_layer_shapes_and_flops(layer):
    x, w, b, dout = layer.arrays(np.dtype(np.float32))
    g = conv_geometry(x.shape, w.shape, **layer.kwargs)  # the geometry every method computes
    assert (g.Ho, g.Wo) == layer.out_hw and dout.shape == (g.N, g.F, g.Ho, g.Wo) and b.shape == (g.F,)
    assert layer.flops == 2 * g.N * g.F * g.Ho * g.Wo * w[0].size  # a multiply and an add per weight


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", fast_methods("conv2d"))
@pytest.mark.parametrize("layer", _suite.SHAPE_LAYERS, ids=lambda la: la.name)
def test_shape_classes_match_naive(layer, method, dtype):
    small = _reduced(layer)
    x, w, b, dout = small.arrays(np.dtype(dtype))
    kw = small.kwargs
    assert_close(fastconv.conv2d_forward(x, w, b, method=method, **kw),
                 fastconv.conv2d_forward(x, w, b, method="naive", **kw), dtype, "out")
    got = fastconv.conv2d_backward(dout, x, w, method=method, **kw)
    ref = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
    for name, g, r in zip(("dx", "dw", "db"), got, ref):
        assert_close(g, r, dtype, name)
