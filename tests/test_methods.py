"""Every registered method against naive, over the shared tables, forward and backward, both dtypes.

A method added to fastconv's registry is picked up here with no edit."""

from __future__ import annotations

import numpy as np
import pytest
from tables import CONV_CASES, DTYPES, OPS, assert_close, fast_methods, ids, pool_cases

import fastconv

POOL_FNS = {
    "max_pool2d": (fastconv.max_pool2d_forward, fastconv.max_pool2d_backward),
    "avg_pool2d": (fastconv.avg_pool2d_forward, fastconv.avg_pool2d_backward),
}

CONV_PARAMS = [(m, *case) for m in fast_methods("conv2d") for case in CONV_CASES]
POOL_PARAMS = [
    (op, m, shape, kw) for op in OPS if op != "conv2d" for m in fast_methods(op)
    for shape, kw in pool_cases(op)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method,xs,ws,kw,bias", CONV_PARAMS, ids=ids(CONV_PARAMS))
def test_conv_method_matches_naive(method, xs, ws, kw, bias, dtype, rng):
    _assert_conv_matches_naive(method, xs, ws, kw, bias, dtype, rng)


def _assert_conv_matches_naive(method, xs, ws, kw, bias, dtype, rng):
    """Forward, dx, dw and db of method against naive on random inputs of these shapes."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    expected = fastconv.conv2d_forward(x, w, b, method="naive", **kw)
    assert_close(fastconv.conv2d_forward(x, w, b, method=method, **kw), expected, dtype, "out")

    dout = rng.standard_normal(expected.shape).astype(dtype)
    got = fastconv.conv2d_backward(dout, x, w, method=method, **kw)
    ref = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
    for name, a, e in zip(("dx", "dw", "db"), got, ref):
        assert_close(a, e, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["weights", "inputs"])
@pytest.mark.parametrize("method,xs,ws,kw,bias", CONV_PARAMS, ids=ids(CONV_PARAMS))
def test_conv_non_finite_values_match_naive(method, xs, ws, kw, bias, where, dtype, rng):
    """An infinite or NaN weight or input element gives NaN and infinities in the same places as naive's
    loops, in the output and in both gradients: in particular no 0 * inf from the zeros a kernel puts
    around dout (dx's tiles, with a non-finite weight) or pads dout's rows with (the jit dw kernel for
    few input channels, with a non-finite input)."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    flat = (w if where == "weights" else x).reshape(-1)
    flat[rng.integers(flat.size)] = np.inf
    if flat.size > 2:
        flat[rng.integers(flat.size)] = -np.inf
        flat[rng.integers(flat.size)] = np.nan
    expected = fastconv.conv2d_forward(x, w, method="naive", **kw)
    assert_close(fastconv.conv2d_forward(x, w, method=method, **kw), expected, dtype, "out")
    dout = rng.standard_normal(expected.shape).astype(dtype)
    got = fastconv.conv2d_backward(dout, x, w, method=method, **kw)
    ref = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
    for name, a, e in zip(("dx", "dw", "db"), got, ref):
        assert_close(a, e, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", ["random", "ties", "nan_inf"])
@pytest.mark.parametrize("op,method,shape,kw", POOL_PARAMS, ids=ids(POOL_PARAMS))
def test_pool_method_matches_naive(op, method, shape, kw, values, dtype, rng):
    if values == "random":
        x = rng.standard_normal(shape)
    else:  # few distinct values: ties in most windows
        x = rng.integers(-1, 2, size=shape).astype(np.float64)
        if values == "nan_inf":
            x[rng.random(shape) < 0.1] = np.nan
            x[rng.random(shape) < 0.1] = -np.inf
            x[rng.random(shape) < 0.05] = np.inf
    x = x.astype(dtype)
    fwd, bwd = POOL_FNS[op]
    expected = fwd(x, method="naive", **kw)
    assert_close(fwd(x, method=method, **kw), expected, dtype, "out")
    dout = rng.standard_normal(expected.shape).astype(dtype)
    assert_close(bwd(dout, x, method=method, **kw), bwd(dout, x, method="naive", **kw), dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", fast_methods("max_pool2d"))
def test_max_pool_windows_of_minus_inf_and_nan(method, dtype):
    """Windows whose in-bounds elements are all -inf send the gradient to their first in-bounds element
    (PyTorch's initial index), also beside the padding and where a NaN or a finite value sits in a
    neighbouring window; of several NaNs the last one takes it."""
    x = np.full((2, 2, 7, 40), -np.inf, dtype)
    x[0, 0, 3, 5] = 1.0
    x[0, 1, 2, 7] = x[0, 1, 2, 8] = x[0, 1, 3, 7] = np.nan
    x[1, 0, :, 20:] = 2.0
    x[1, 1, ::3, ::5] = np.nan
    kw = dict(kernel_size=3, stride=2, padding=1)
    dout = np.arange(1, 2 * 2 * 4 * 20 + 1, dtype=dtype).reshape(2, 2, 4, 20)
    expected = fastconv.max_pool2d_forward(x, method="naive", **kw)
    assert_close(fastconv.max_pool2d_forward(x, method=method, **kw), expected, dtype, "out")
    ref = fastconv.max_pool2d_backward(dout, x, method="naive", **kw)
    np.testing.assert_array_equal(fastconv.max_pool2d_backward(dout, x, method=method, **kw), ref)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_choices(direction, dtype, avx2_tiles):
    """auto takes the jit kernels for float64 pointwise convs of 30 MFLOP or more, im2col's forward and dx
    with the jit dw for float32 ones, and im2col for smaller pointwise convs (plain GEMMs); for a large
    float64 conv with 128 output channels whose im2col forward stacks its kernel rows (down, res),
    im2col's forward and dx with the jit dw, and the same for rows of 7 columns in float32 (16-column
    tiles, see test_auto_narrow_rows); and the jit kernels for everything else (suite layers' shapes: no
    arrays are made)."""
    from fastconv import _registry
    from fastconv._params import conv_geometry

    table = _registry.REGISTRY["conv2d"]
    stacked = "jit"
    split = _registry.SplitBackward(table["im2col"], table["jit"])
    pointwise = "jit" if dtype == np.float64 else "im2col" if direction == "forward" else split
    if dtype == np.float64:
        stacked = "im2col" if direction == "forward" else split
    narrow = ("im2col" if direction == "forward" else split) if dtype == np.float32 else "jit"
    four = "im2col" if direction == "forward" else split  # rows of 4 columns: narrow in both dtypes
    cases = [((32, 256, 14, 14), (256, 256, 1, 1), 1, 0, pointwise),  # pw
             ((8, 16, 8, 8), (32, 16, 1, 1), 1, 0, "im2col"),  # a small pointwise conv
             ((32, 64, 56, 56), (128, 64, 3, 3), 2, 1, stacked),  # down
             ((32, 128, 28, 28), (128, 128, 3, 3), 1, 1, stacked),  # res
             ((64, 64, 32, 32), (64, 64, 3, 3), 1, 1, "jit"),  # vgg: 64 output channels
             ((32, 128, 14, 14), (128, 128, 3, 3), 2, 1, narrow),  # 7 columns; 1 row of 8 wasted: not stacked
             ((10, 32, 14, 14), (16, 32, 3, 3), 1, 1, "jit"),  # seed001: small
             ((2, 3, 8, 8), (4, 3, 1, 1), 2, 0, four)]  # a 1x1 kernel with a stride is not pointwise
    for xs, ws, stride, padding, want in cases:
        g = conv_geometry(xs, ws, stride, padding, 1, 1)
        want = table[want] if isinstance(want, str) else want
        assert _registry.resolve("conv2d", "auto", g, np.dtype(dtype), direction) == want, xs


@pytest.fixture
def avx2_tiles(monkeypatch):
    """The tile pickers choose AVX2 tiles (16 float32 or 8 float64 columns) for the test's duration."""
    from fastconv.jit import _isa
    from fastconv.jit.conv import tiles

    def clear():
        for f in (_isa.target_isa, tiles.tiles, tiles.conv_tile, tiles.panel_tile, tiles.dw_chans_tile):
            f.cache_clear()

    monkeypatch.setenv("FASTCONV_ISA", "avx2")
    clear()
    yield
    monkeypatch.delenv("FASTCONV_ISA")
    clear()


@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_narrow_rows(dtype, avx2_tiles):
    """column_waste is the columns the forward's channel tile computes per output column (1.0 for row
    tiles and pointwise convs), and auto takes im2col's forward and dx with the jit dw from 1.5."""
    from fastconv import _auto, _registry
    from fastconv._params import conv_geometry
    from fastconv.jit.conv import column_waste

    cols = 16 if dtype == np.float32 else 8  # the AVX2 channel tiles' columns
    table = _registry.REGISTRY["conv2d"]
    cases = [((16, 128, 17, 17), (128, 128, 1, 7), (0, 3), 1, -(-17 // cols) * cols / 17),  # k1x7
             ((16, 128, 17, 17), (128, 128, 7, 1), (3, 0), 1, -(-17 // cols) * cols / 17),  # k7x1
             ((32, 512, 7, 7), (512, 512, 3, 3), 1, 1, cols / 7),  # ResNet's last stage
             ((128, 1, 28, 28), (20, 1, 5, 5), 0, 1, 32 / 24 if dtype == np.float32 else 1.0),  # lenet
             ((8, 144, 56, 56), (144, 1, 3, 3), 1, 144, 1.0),  # depthwise: row tiles
             ((8, 64, 5, 3), (64, 64, 1, 1), 0, 1, 1.0)]  # pointwise: flattened rows
    for xs, ws, padding, groups, waste in cases:
        g = conv_geometry(xs, ws, 1, padding, 1, groups)
        assert column_waste(g, np.dtype(dtype)) == pytest.approx(waste), (xs, ws)
        if g.pointwise or (dtype == np.float64 and g.Fg >= _auto.STACKED_CHANNELS):
            continue  # their own rules (test_auto_choices)
        narrow = waste >= 1.5
        assert _registry.resolve("conv2d", "auto", g, np.dtype(dtype), "forward") == (
            table["im2col"] if narrow else table["jit"]), (xs, ws)
        want = _registry.SplitBackward(table["im2col"], table["jit"]) if narrow else table["jit"]
        assert _registry.resolve("conv2d", "auto", g, np.dtype(dtype), "backward") == want, (xs, ws)


@pytest.mark.parametrize("kw,dtype,k", [(dict(padding=1), np.float64, 3),
                                        (dict(stride=2, padding=1, groups=2), np.float64, 3),
                                        (dict(groups=2), np.float32, 1)], ids=["pad", "stride", "pointwise"])
def test_auto_split_backward_matches_naive(kw, dtype, k, rng, monkeypatch):
    """Where auto splits a backward (dx from im2col, dw and db from jit: large float64 convs, float32
    pointwise convs), the three gradients agree with naive; the thresholds are lowered so that a small
    conv takes that path."""
    from fastconv import _auto, _registry
    from fastconv._params import conv_geometry

    monkeypatch.setattr(_auto, "SMALL_FLOPS", 0)
    monkeypatch.setattr(_auto, "STACKED_CHANNELS", 4)
    xs, ws = (3, 64, 24, 11), (10, 64 // kw.get("groups", 1), k, k)
    g = conv_geometry(xs, ws, kw.get("stride", 1), kw.get("padding", 0), 1, kw.get("groups", 1))
    impl = _registry.resolve("conv2d", "auto", g, np.dtype(dtype), "backward")
    assert isinstance(impl, _registry.SplitBackward)
    _assert_conv_matches_naive("auto", xs, ws, kw, True, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_bias_gradient_of_a_large_dout(dtype, rng):
    """The jit method sums db in parallel from 64K elements of dout (the test table's are smaller):
    against a float64 sum, to the dtype's tolerance, non-finite values included."""
    pytest.importorskip("numba")
    from fastconv.jit.conv import conv2d_bias_grad

    dout = rng.standard_normal((3, 5, 150, 150)).astype(dtype)
    dout[1, 2, 7, 9] = np.inf
    dout[2, 4, 0, 0] = np.nan
    expected = dout.astype(np.float64).sum(axis=(0, 2, 3)).astype(dtype)
    got = conv2d_bias_grad(dout)
    assert got.dtype == dtype
    assert_close(got, expected, dtype, "db")


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose8_moves_one_block(dtype, rng):
    """The 8 x 8 in-register transpose the pointwise dw packs with: at unaligned offsets and strides of
    both arrays, dst's block is src's block transposed and nothing else in dst changes."""
    numba = pytest.importorskip("numba")
    from fastconv.jit._numba import transpose8

    @numba.njit
    def move(src, s0, ss, dst, d0, ds):
        transpose8(src, s0, ss, dst, d0, ds)

    src = rng.standard_normal((11, 29)).astype(dtype)
    for (r, c, rd, cd, dcols) in [(0, 0, 0, 0, 8), (3, 5, 1, 7, 21), (2, 21, 4, 3, 16), (1, 13, 0, 9, 17)]:
        dst = np.full((13, dcols), np.nan, dtype)
        move(src, r * 29 + c, 29, dst, rd * dcols + cd, dcols)
        expected = np.full_like(dst, np.nan)
        expected[rd:rd + 8, cd:cd + 8] = src[r:r + 8, c:c + 8].T
        np.testing.assert_array_equal(dst, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_sums_are_the_loops_sums(dtype, rng):
    """The register tiles written in LLVM IR (tile_sums, tile_sums_at, tile_sums_rows) against the loops
    they replace, compiled with the same fast-math flags: bitwise the same sums, for one and two weight
    blocks, one to three vectors of columns, offsets read from a table, rows read in place and added
    into acc over two loops, empty ranges and non-finite inputs."""
    numba = pytest.importorskip("numba")
    from fastconv._config import FASTMATH
    from fastconv.jit._numba import tile_sums, tile_sums_at, tile_sums_rows

    lanes = 64 // np.dtype(dtype).itemsize

    def loop(acc, x, rows_at, w, wbase, wstep, block, q0, q1):
        rows, cols = acc.shape
        for m in range(rows):
            for t in range(cols):
                acc[m, t] = 0
        for q in range(q0, q1):
            for m in range(rows):
                wv = w[wbase + (m // block) * wstep + q * block + m % block]
                for t in range(cols):
                    acc[m, t] += wv * x[rows_at[q] + t]

    def rows_loop(acc, x, xbase, xsu, xsv, w, wrows, wsu, wsv, nu, nv):
        rows, cols = acc.shape
        for u in range(nu):
            for v in range(nv):
                for m in range(rows):
                    wv = w[wrows[m] + u * wsu + v * wsv]
                    for t in range(cols):
                        acc[m, t] += wv * x[xbase + u * xsu + v * xsv + t]

    loop = numba.njit(fastmath=set(FASTMATH))(loop)
    rows_loop = numba.njit(fastmath=set(FASTMATH))(rows_loop)
    tiles = {}
    for blocks, block, nv in [(1, 8, 2), (2, 8, 1), (1, 16, 1), (1, 5, 3), (2, 12, 1), (1, 4, 2)]:
        cols = nv * lanes
        # each shape is its own compiled function: the intrinsics take literal shapes
        src = (f"def run(acc, x, xbase, xstep, w, wbase, wstep, n):\n"
               f"    tile_sums({blocks}, {block}, {cols}, acc, x, xbase, xstep, w, wbase, wstep, n)\n"
               f"def run_at(acc, x, offs, base, q0, q1, w, wstep):\n"
               f"    tile_sums_at({blocks}, {block}, {cols}, acc, x, offs, base, q0, q1, w, wstep)\n"
               f"def run_rows(acc, x, xbase, xsu, xsv, w, wrows, wsu, wsv, nu, nv):\n"
               f"    tile_sums_rows({block}, {cols}, acc, x, xbase, xsu, xsv, w, wrows, wsu, wsv, nu, nv)\n")
        env = {"tile_sums": tile_sums, "tile_sums_at": tile_sums_at, "tile_sums_rows": tile_sums_rows}
        exec(src, env)
        tiles[blocks, block, nv] = tuple(numba.njit(env[f]) for f in ("run", "run_at", "run_rows"))

    for (blocks, block, nv), (run, run_at, run_rows) in tiles.items():
        rows, cols = blocks * block, nv * lanes
        K, xstep, wstep = 37, cols + 3, 41 * block
        x = rng.standard_normal(K * xstep + cols + 11).astype(dtype)
        x[[5, 17]] = [np.inf, np.nan]
        w = rng.standard_normal(3 * wstep + K * block + 7).astype(dtype)
        for n in (K, 1, 0):
            acc, ref = np.full((rows, cols), np.nan, dtype), np.full((rows, cols), np.nan, dtype)
            run(acc, x, 7, xstep, w, 5, wstep, n)
            loop(ref, x, 7 + xstep * np.arange(K), w, 5, wstep, block, 0, n)
            np.testing.assert_array_equal(acc, ref)
            wide = np.zeros((rows, cols))
            for q in range(n):
                wq = [w[5 + (m // block) * wstep + q * block + m % block] for m in range(rows)]
                wide += np.outer(np.array(wq, np.float64), x[7 + q * xstep:][:cols].astype(np.float64))
            finite = np.isfinite(wide)
            np.testing.assert_allclose(acc[finite], wide[finite], rtol=1e-4 if dtype == np.float32 else 1e-10,
                                       atol=1e-4 if dtype == np.float32 else 1e-10)
        offs = rng.integers(0, K * xstep, 19)
        for q0, q1 in ((0, 19), (4, 13), (6, 6)):
            acc, ref = np.full((rows, cols), np.nan, dtype), np.full((rows, cols), np.nan, dtype)
            run_at(acc, x, offs, 3, q0, q1, w, wstep)
            loop(ref, x, offs + 3, w, 0, wstep, block, q0, q1)
            np.testing.assert_array_equal(acc, ref)
        if blocks == 1:  # rows read in place from their own starts, over (u, v), added into acc
            wrows = rng.permutation(rows) * 53 + 2
            for nu, nv in ((3, 7), (1, 5), (0, 4), (2, 0)):
                start = rng.standard_normal((rows, cols)).astype(dtype)
                acc, ref = start.copy(), start.copy()
                run_rows(acc, x, 9, 5 * xstep, xstep, w, wrows, 13, 1, nu, nv)
                rows_loop(ref, x, 9, 5 * xstep, xstep, w, wrows, 13, 1, nu, nv)
                np.testing.assert_array_equal(acc, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1),
                                dict(dilation=2, padding=2, groups=2), dict(stride=(2, 1), padding=(1, 0))],
                         ids=["pad", "stride", "dilation-groups", "row-stride"])
def test_im2col_stacked_kernel_rows(kw, dtype, rng, monkeypatch):
    """The im2col forward (and the stride-1 dx, which runs it on dout) with each row phase's kernel rows
    stacked into one GEMM over several images: here 2 images per GEMM and 3 per chunk, so a chunk ends
    in a GEMM of one image and the last chunk is short; row phases, dilation and groups change which
    unfolded rows each kernel row reads."""
    from fastconv._params import conv_geometry
    from fastconv.im2col import conv as im2col

    xs, ws = (7, 4, 40, 9), (6, 4 // kw.get("groups", 1), 3, 3)
    g = conv_geometry(xs, ws, stride=kw.get("stride", 1), padding=kw["padding"],
                      dilation=kw.get("dilation", 1), groups=kw.get("groups", 1))
    S = im2col._Unfolded.rows(g.Ho, g.KH, g.sh, g.dh) * g.Wo
    monkeypatch.setattr(im2col, "GEMM_COLUMNS", 2 * S)
    itemsize = np.dtype(dtype).itemsize
    inner = im2col._stacked_images(g.N, g.F, g.KH, g.Ho, g.Wo, g.sh, g.dh, itemsize)
    assert inner == 2
    reserve = g.KH * g.F * inner * S * itemsize  # the stacked GEMMs' result block
    per_image = g.C * g.KW * g.sh * S * itemsize
    monkeypatch.setattr(im2col, "MIN_BUDGET", reserve + 3 * per_image)
    assert im2col._images_per_chunk(g.N, per_image, 0, reserve) == 3
    _assert_conv_matches_naive("im2col", xs, ws, kw, True, dtype, rng)
