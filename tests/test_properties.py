"""Property tests: on random shapes, every parameter, both dtypes and edge-case values (inf, NaN, huge and
tiny magnitudes, ties), every method's forward and backward equals naive."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from tables import assert_close, fast_methods

import fastconv
from fastconv._params import conv_geometry, pool_geometry

small = st.integers(1, 3)
pairs = st.tuples(small, small)


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    # mostly few channels per group; sometimes enough to fill the jit method's wide tiles (5 or more
    # output channels, 8 or 16 input channels: a vector of them)
    channels = st.one_of(small, small, small, st.sampled_from([5, 8, 9, 16, 17]))
    cg, fg = draw(channels), draw(channels)
    if draw(st.booleans()) and draw(st.booleans()):
        cg = 1  # depthwise (with a channel multiplier fg)
    padding = draw(st.one_of(
        st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                  st.tuples(st.integers(0, 3), st.integers(0, 3))),
        st.sampled_from(["same", "valid"])))
    kw = dict(stride=draw(pairs), padding=padding, dilation=draw(st.tuples(st.integers(1, 2),
                                                                          st.integers(1, 2))),
              groups=groups)
    xs = (draw(small), cg * groups, draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    ws = (fg * groups, cg, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    try:
        conv_geometry(xs, ws, kw["stride"], padding, kw["dilation"], groups)
    except ValueError:
        assume(False)
    return xs, ws, kw, draw(st.booleans())


@st.composite
def pool_configs(draw, op):
    k = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    d = draw(st.tuples(st.integers(1, 2), st.integers(1, 2))) if op == "max_pool2d" else (1, 1)
    p = tuple(draw(st.integers(0, ((kk - 1) * dd + 1) // 2)) for kk, dd in zip(k, d))
    kw = dict(kernel_size=k, stride=draw(st.one_of(st.none(), pairs)), padding=p,
              ceil_mode=draw(st.booleans()))
    if op == "max_pool2d":
        kw["dilation"] = d
    else:
        kw["count_include_pad"] = draw(st.booleans())
    xs = (draw(small), draw(small), draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    try:
        pool_geometry(xs, k, kw["stride"], p, d, kw["ceil_mode"], kw.get("count_include_pad", True))
    except ValueError:
        assume(False)
    return xs, kw


VALUE_KINDS = ["normal", "ties", "huge", "tiny", "special"]


def values(shape, kind: str, dtype, seed: int, for_conv: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "ties":
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
    else:
        a = rng.standard_normal(shape)
        if kind == "huge":  # large, but products and sums stay finite in float32
            a *= 1e15 if for_conv else 1e30
        elif kind == "tiny":
            a *= 1e-15 if for_conv else 1e-30
        elif kind == "special":
            u = rng.random(shape)
            a[u < 0.08] = np.nan
            a[(u >= 0.08) & (u < 0.16)] = np.inf
            a[(u >= 0.16) & (u < 0.22)] = -np.inf
    return a.astype(dtype)


@given(cfg=conv_configs(), kind=st.sampled_from(VALUE_KINDS), dtype=st.sampled_from(["f4", "f8"]),
       seed=st.integers(0, 2**31))
def test_conv_methods_equal_naive(cfg, kind, dtype, seed):
    xs, ws, kw, bias = cfg
    x = values(xs, kind, dtype, seed, True)
    w = values(ws, "normal" if kind == "special" else kind, dtype, seed + 1, True)
    b = values((ws[0],), "normal", dtype, seed + 2, True) if bias else None
    ref = fastconv.conv2d_forward(x, w, b, method="naive", **kw)
    dout = values(ref.shape, "normal", dtype, seed + 3, True)
    ref_b = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
    for m in fast_methods("conv2d"):
        assert_close(fastconv.conv2d_forward(x, w, b, method=m, **kw), ref, dtype, f"{m} out")
        for name, got, exp in zip(("dx", "dw", "db"), fastconv.conv2d_backward(dout, x, w, method=m,
                                                                             **kw), ref_b):
            assert_close(got, exp, dtype, f"{m} {name}")


@given(data=st.data(), op=st.sampled_from(["max_pool2d", "avg_pool2d"]),
       kind=st.sampled_from(VALUE_KINDS), dtype=st.sampled_from(["f4", "f8"]),
       seed=st.integers(0, 2**31))
def test_pool_methods_equal_naive(data, op, kind, dtype, seed):
    xs, kw = data.draw(pool_configs(op))
    x = values(xs, kind, dtype, seed, False)
    fwd, bwd = getattr(fastconv, f"{op}_forward"), getattr(fastconv, f"{op}_backward")
    with np.errstate(all="ignore"):
        ref = fwd(x, method="naive", **kw)
        dout = values(ref.shape, "normal", dtype, seed + 1, False)
        ref_b = bwd(dout, x, method="naive", **kw)
    for m in fast_methods(op):
        assert_close(fwd(x, method=m, **kw), ref, dtype, f"{m} out")
        assert_close(bwd(dout, x, method=m, **kw), ref_b, dtype, f"{m} dx")
