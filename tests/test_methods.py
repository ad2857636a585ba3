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


@pytest.fixture
def jit_launches(monkeypatch):
    """The kernels the jit conv module launches during the test, in order (each still runs)."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    launched = []
    real = jit_conv.launch
    monkeypatch.setattr(jit_conv, "launch", lambda fn, *a: launched.append(fn) or real(fn, *a))
    return launched


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


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_choices(direction, dtype):
    """auto takes the jit kernels for float64 pointwise convs of 30 MFLOP or more, im2col's forward and dx
    with the jit dw for float32 ones, and im2col for smaller pointwise convs (plain GEMMs); for a large
    float64 conv with 128 output channels whose im2col forward stacks its kernel rows (down, res),
    im2col's forward and dx with the jit dw; and the jit kernels for everything else (suite layers'
    shapes: no arrays are made)."""
    from fastconv import _registry
    from fastconv._params import conv_geometry

    table = _registry.REGISTRY["conv2d"]
    stacked = "jit"
    split = _registry.SplitBackward(table["im2col"], table["jit"])
    pointwise = "jit" if dtype == np.float64 else "im2col" if direction == "forward" else split
    if dtype == np.float64:
        stacked = "im2col" if direction == "forward" else split
    cases = [((32, 256, 14, 14), (256, 256, 1, 1), 1, 0, pointwise),  # pw
             ((8, 16, 8, 8), (32, 16, 1, 1), 1, 0, "im2col"),  # a small pointwise conv
             ((32, 64, 56, 56), (128, 64, 3, 3), 2, 1, stacked),  # down
             ((32, 128, 28, 28), (128, 128, 3, 3), 1, 1, stacked),  # res
             ((64, 64, 32, 32), (64, 64, 3, 3), 1, 1, "jit"),  # vgg: 64 output channels
             ((32, 128, 14, 14), (128, 128, 3, 3), 2, 1, "jit"),  # 1 row of 8 wasted: not stacked
             ((10, 32, 14, 14), (16, 32, 3, 3), 1, 1, "jit"),  # seed001: small
             ((2, 3, 8, 8), (4, 3, 1, 1), 2, 0, "jit")]  # a 1x1 kernel with a stride is not pointwise
    for xs, ws, stride, padding, want in cases:
        g = conv_geometry(xs, ws, stride, padding, 1, 1)
        want = table[want] if isinstance(want, str) else want
        assert _registry.resolve("conv2d", "auto", g, np.dtype(dtype), direction) == want, xs


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
@pytest.mark.parametrize("xs,ws,kw,bias", CONV_CASES, ids=ids(CONV_CASES))
def test_jit_forward_packs_each_image_in_its_task(xs, ws, kw, bias, dtype, rng, monkeypatch, jit_launches):
    """With enough images per thread the jit forward packs each image inside the task that computes it
    (one launch): the same results, bitwise, as packing the whole batch first, non-finite inputs
    included, and close to naive. Here the threshold is lowered to 0 so that every table case whose
    forward pads (or splits by phase) its input, with a tile that has such a variant, takes that path;
    the path taken is checked."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    launched = jit_launches

    def both(x):
        launched.clear()
        monkeypatch.setattr(jit_conv, "PACKED_IMAGES_PER_THREAD", 10**9)
        whole_batch = fastconv.conv2d_forward(x, w, b, method="jit", **kw)
        before = list(launched)
        launched.clear()
        monkeypatch.setattr(jit_conv, "PACKED_IMAGES_PER_THREAD", 0)
        per_image = fastconv.conv2d_forward(x, w, b, method="jit", **kw)
        return whole_batch, per_image, before, list(launched)

    whole_batch, per_image, before, after = both(x)
    np.testing.assert_array_equal(per_image, whole_batch)
    tilings = {t.fn: t for t in (*jit_conv._WIDE[np.dtype(dtype)], jit_conv._NARROW[np.dtype(dtype)])}
    tile = next((tilings[fn] for fn in before if fn in tilings), None)
    if jit_conv._pack not in before or tile is None:
        assert after == before  # read in place, or a kernel without the per-image variant
        return
    assert after == [tile.packed]
    assert_close(per_image, fastconv.conv2d_forward(x, w, b, method="naive", **kw), dtype, "out")
    flat = x.reshape(-1)
    k = min(3, flat.size)
    flat[rng.choice(flat.size, k, replace=False)] = [np.inf, np.nan, -np.inf][:k]
    whole_batch, per_image, _, _ = both(x)
    np.testing.assert_array_equal(per_image, whole_batch)  # NaN where the other has NaN


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("packed", [False, True], ids=["batch-packed", "image-packed"])
def test_every_jit_tile_gives_the_same_sums(dtype, packed, rng, monkeypatch, jit_launches):
    """Each wide register tile of the jit forward and dx, forced on every table case: an output
    element's sum runs over the same taps in the same order whatever the tile's shape, so the forward
    and dx are bitwise those of the default tile (non-finite inputs included), which are close to
    naive (test_conv_method_matches_naive). With packed, the per-image variants (threshold 0)."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    tilings = jit_conv._WIDE[np.dtype(dtype)]
    assert len(tilings) > 1
    monkeypatch.setattr(jit_conv, "PACKED_IMAGES_PER_THREAD", 0 if packed else 10**9)
    launched = jit_launches

    def run(tiling, x, w, b, dout, kw):
        monkeypatch.setitem(jit_conv._WIDE, np.dtype(dtype), (tiling,))
        jit_conv._tiling.cache_clear()
        out = fastconv.conv2d_forward(x, w, b, method="jit", **kw)
        return out, fastconv.conv2d_backward(dout, x, w, method="jit", **kw)[0]

    try:
        for xs, ws, kw, bias in CONV_CASES:
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
            flat = x.reshape(-1)
            flat[rng.integers(flat.size)] = np.nan
            flat[rng.integers(flat.size)] = np.inf
            shape = fastconv.conv2d_forward(x, w, method="naive", **kw).shape
            dout = rng.standard_normal(shape).astype(dtype)
            ref = run(tilings[0], x, w, b, dout, kw)
            for tiling in tilings[1:]:
                for got, want in zip(run(tiling, x, w, b, dout, kw), ref):
                    np.testing.assert_array_equal(got, want)
    finally:
        jit_conv._tiling.cache_clear()
    for tiling in tilings:  # every tile's kernels ran
        assert tiling.fn in launched or tiling.overlap in launched or tiling.packed in launched
        assert tiling.phases is None or tiling.phases in launched


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_dx_packs_each_image_in_its_task(dtype, rng, monkeypatch, jit_launches):
    """dx at stride 1 runs the forward's tiles over dout padded: with enough images per thread, dout is
    packed image by image in the tasks too. Bitwise the same dx as packing all of dout first on every
    table case and two with padding past the kernel's reach, non-finite values included, the per-image
    kernel taken in some of them."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    packed = {t.packed for t in (*jit_conv._WIDE[np.dtype(dtype)], jit_conv._NARROW[np.dtype(dtype)])}
    launched = jit_launches
    taken = 0
    # padding past the kernel's reach: dx's rows start below dout's first (r0 > 0)
    wide = [((4, 3, 6, 7), (5, 3, 2, 2), dict(padding=2), None),
            ((4, 3, 6, 7), (5, 3, 2, 3), dict(padding=((2, 0), (3, 1))), None)]
    for xs, ws, kw, _ in CONV_CASES + wide:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        g = fastconv.conv2d_forward(x, w, method="naive", **kw)
        dout = rng.standard_normal(g.shape).astype(dtype)
        flat = dout.reshape(-1)
        k = min(2, flat.size)
        flat[rng.choice(flat.size, k, replace=False)] = [np.nan, np.inf][:k]
        monkeypatch.setattr(jit_conv, "PACKED_IMAGES_PER_THREAD", 10**9)
        whole = fastconv.conv2d_backward(dout, x, w, method="jit", **kw)[0]
        monkeypatch.setattr(jit_conv, "PACKED_IMAGES_PER_THREAD", 0)
        launched.clear()
        per_image = fastconv.conv2d_backward(dout, x, w, method="jit", **kw)[0]
        np.testing.assert_array_equal(per_image, whole)
        taken += any(fn in packed for fn in launched)
    assert taken >= 5  # 9 of the 34 cases (stride 1, padded dout, a tile with the variant)


@pytest.mark.parametrize("panel_bytes", [1, 3000, 1 << 19])
@pytest.mark.parametrize("xs, ws, groups", [
    ((2, 6, 7, 9), (12, 3, 1, 1), 2),  # 63 columns: 3 panels of 16, the last of 15; 6 channels a group
    ((3, 10, 6, 6), (20, 10, 1, 1), 1),  # 36: a last panel of 4, summed 8 wide; 3 blocks of 8 (odd)
    ((2, 4, 4, 6), (34, 2, 1, 1), 2),  # 24: a last panel of 8 (the narrow width); 17 channels a group
    ((2, 4, 5, 5), (34, 2, 1, 1), 2),  # 25: a last panel of 9 (one past it)
    ((2, 3, 4, 8), (16, 3, 1, 1), 1)],  # 32: whole panels only
    ids=["15", "4", "8", "9", "0"])
def test_jit_pointwise_panels_in_column_blocks(panel_bytes, xs, ws, groups, rng, monkeypatch):
    """float64 pointwise convs (forward and dx) go through panels of packed input columns, one block of
    columns per task: with a small budget an image splits into several blocks, the last one ragged. A
    last panel of at most 8 columns is packed and summed 8 wide, two blocks of output channels at a
    time (the last block, if odd, paired with itself)."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    monkeypatch.setattr(jit_conv, "PANEL_BYTES", panel_bytes)
    _assert_conv_matches_naive("jit", xs, ws, dict(groups=groups), True, np.float64, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fold_bytes", [1, 1 << 21])
def test_jit_first_layer_dx_with_and_without_the_fold(fold_bytes, dtype, rng, monkeypatch):
    """dx of a conv with one input channel per group goes through the GEMM-and-fold kernel when its
    per-thread buffer fits FOLD_BYTES, else through the phases: both agree with naive."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    monkeypatch.setattr(jit_conv, "FOLD_BYTES", fold_bytes)
    xs, ws, kw = (4, 1, 13, 12), (9, 1, 3, 3), dict(padding=1, stride=(1, 2))
    g = fastconv._api._conv_setup(np.empty(xs), np.empty(ws), kw["stride"], kw["padding"], 1, 1)
    dout = np.zeros((g.N, g.F, g.Ho, g.Wo), dtype)
    assert (jit_conv._conv_dx_fold(dout, np.ones(ws, dtype), g) is None) == (fold_bytes == 1)
    _assert_conv_matches_naive("jit", xs, ws, kw, False, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_jit_dw_tile_matches_naive(dtype, rng, monkeypatch, jit_launches):
    """Each channel-vector dw tile forced in turn (_DWC), on convs whose input channels per group fill its
    vector: pointwise (the per-task transposing kernel) and not, with groups, stride, dilation,
    padding, input channels past a whole number of vectors and output channels clamped in the last
    tile; dw agrees with naive, and _dwc_tiling picks each tile for some shape."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    tiles = jit_conv._DWC[np.dtype(dtype)]
    cases = [((2, 40, 5, 6), (12, 40, 3, 3), dict(padding=1)),
             ((2, 64, 7, 5), (20, 32, 3, 3), dict(stride=2, padding=1, groups=2)),
             ((2, 36, 9, 8), (9, 36, 2, 3), dict(dilation=2, padding=(1, 2))),
             ((2, 48, 4, 5), (26, 48, 1, 1), {}),
             ((3, 64, 3, 7), (16, 32, 1, 1), dict(groups=2))]
    launched = jit_launches
    try:
        for tile in tiles:
            monkeypatch.setitem(jit_conv._DWC, np.dtype(dtype), (tile,))
            jit_conv._dwc_tiling.cache_clear()
            for xs, ws, kw in cases:
                if xs[1] // kw.get("groups", 1) < tile[1]:
                    continue
                x = rng.standard_normal(xs).astype(dtype)
                w = rng.standard_normal(ws).astype(dtype)
                shape = fastconv.conv2d_forward(x, w, method="naive", **kw).shape
                dout = rng.standard_normal(shape).astype(dtype)
                got = fastconv.conv2d_backward(dout, x, w, method="jit", **kw)[1]
                want = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)[1]
                assert_close(got, want, dtype, "dw")
            assert tile[0] in launched
            assert tile[0] not in jit_conv._PWDW or jit_conv._PWDW[tile[0]] in launched
    finally:
        jit_conv._dwc_tiling.cache_clear()
    monkeypatch.setitem(jit_conv._DWC, np.dtype(dtype), tiles)
    picks = [jit_conv._dwc_tiling(c, f, np.dtype(dtype)) for c in (8, 16, 32) for f in (8, 12, 64, 128)]
    chosen = {t[0] for t in picks if t is not None}
    jit_conv._dwc_tiling.cache_clear()
    assert chosen == {t[0] for t in tiles}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [30, 32])
def test_jit_dw_reads_dout_rows_in_place_or_padded(size, dtype, rng):
    """The jit dw for many input channels per group reads its tile's dout rows in place, or, where those
    rows would start in too few L1 sets (a 32x32 plane: 4 KiB in float32, 8 KiB in float64), from a copy
    in padded rows. Both agree with naive, with groups and a last tile of clamped output channels."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    xs, ws, kw = (1, 32, size, size), (20, 16, 3, 3), dict(padding=1, groups=2)
    fw = jit_conv._dwc_tiling(16, 10, np.dtype(dtype))[2]
    plane = size * size
    assert (jit_conv._row_stride(plane, np.dtype(dtype).itemsize, fw) > plane) == (size == 32)
    _assert_conv_matches_naive("jit", xs, ws, kw, False, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk_bytes", [1, 20_000, 1 << 20])
def test_jit_pointwise_dw_transposes_per_task(chunk_bytes, dtype, rng, monkeypatch):
    """dw of a pointwise conv with 16+ input channels per group: each task transposes its own input
    channels, chunk by chunk of images. Here groups, a last block of 2 channels of 16 (zero-filled),
    output channels clamped in the last tile, and chunks of 1 image, of 2 with a short last chunk
    (float64; of 4 in float32), and of the whole batch; dw agrees with naive."""
    pytest.importorskip("numba")
    from fastconv.jit import conv as jit_conv

    monkeypatch.setattr(jit_conv, "PW_DW_CHUNK_BYTES", chunk_bytes)
    taken = []
    real = jit_conv._conv_dw_pointwise
    monkeypatch.setattr(jit_conv, "_conv_dw_pointwise", lambda *a: taken.append(real(*a)) or taken[-1])
    _assert_conv_matches_naive("jit", (5, 36, 3, 7), (22, 18, 1, 1), dict(groups=2), True, dtype, rng)
    assert taken and all(dw is not None for dw in taken)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tasks_per_thread", [1, 3])
@pytest.mark.parametrize("xs,f,groups", [((3, 40, 3, 5), 12, 1), ((4, 36, 2, 7), 22, 2),
                                          ((3, 32, 32, 32), 20, 1)])
def test_jit_pointwise_backward_sums_db_in_the_dw_kernel(xs, f, groups, tasks_per_thread, dtype, rng,
                                                         monkeypatch, jit_launches):
    """For a pointwise conv the jit backward sums db in the dw kernel, each task its share of a group's
    output channels, chunk by chunk (here of one image): db against a float64 sum, inf and NaN included,
    with shares of 1 to 12 channels (11 of 22 in a group split three ways does not divide), and on
    32 x 32 planes, whose dout rows the kernel reads padded; dx and dw are those of the separate calls.
    The db kernel does not run."""
    from fastconv._params import conv_geometry
    from fastconv.jit import conv as jit_conv

    monkeypatch.setattr(jit_conv, "PW_DW_CHUNK_BYTES", 1)
    monkeypatch.setattr(jit_conv, "DW_TASKS_PER_THREAD", tasks_per_thread)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((f, xs[1] // groups, 1, 1)).astype(dtype)
    dout = rng.standard_normal((xs[0], f, xs[2], xs[3])).astype(dtype)
    dout[1, 3, 0, 1] = np.inf
    dout[2, f - 1, 1, 0] = np.nan
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, groups=groups, method="jit")
    assert jit_conv._channel_sums not in jit_launches and set(jit_launches) & set(jit_conv._PWDW.values())
    assert db.dtype == dtype
    assert_close(db, dout.astype(np.float64).sum(axis=(0, 2, 3)).astype(dtype), dtype, "db")
    g = conv_geometry(x.shape, w.shape, 1, 0, 1, groups)
    np.testing.assert_array_equal(dx, jit_conv.conv2d_backward_dx(dout, w, g))
    np.testing.assert_array_equal(dw, jit_conv.conv2d_backward_dw(dout, x, g))


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
