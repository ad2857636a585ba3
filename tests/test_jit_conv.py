"""The jit conv's tiles, plans and tunables: every tile record's kernels against naive and bitwise against
its family's other tiles, every path a plan or tunable can force, and the records' own invariants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tables import CONV_CASES, DTYPES, assert_close

import fastconv
from fastconv._params import conv_geometry

numba = pytest.importorskip("numba")

from fastconv.jit import _numba  # noqa: E402
from fastconv.jit import conv as jit_conv  # noqa: E402
from fastconv.jit.conv import db as jit_db  # noqa: E402
from fastconv.jit.conv import dw as jit_dw  # noqa: E402
from fastconv.jit.conv import dw_chans, dx, forward_tiles, panels, tiles  # noqa: E402
from fastconv.jit.conv.plan import Plan  # noqa: E402
from fastconv.jit.conv.tunables import TUNABLES, Tunables  # noqa: E402


@pytest.fixture
def jit_launches(monkeypatch):
    """The kernels the jit conv's modules launch during the test, in order (each still runs)."""
    launched = []
    real = _numba.launch

    def spy(fn, *args):
        launched.append(fn)
        return real(fn, *args)

    for name, module in list(sys.modules.items()):
        if name.startswith("fastconv.jit.conv") and getattr(module, "launch", None) is real:
            monkeypatch.setattr(module, "launch", spy)
    return launched


def _geometry(xs, ws, kw):
    return conv_geometry(xs, ws, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                         kw.get("groups", 1))


def _operands(xs, ws, kw, dtype, rng, bias=True):
    g = _geometry(xs, ws, kw)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    dout = rng.standard_normal((g.N, g.F, g.Ho, g.Wo)).astype(dtype)
    return g, x, w, b, dout


def _poison(a, rng, values=(np.nan, np.inf, -np.inf)):
    flat = a.reshape(-1)
    k = min(len(values), flat.size)
    flat[rng.choice(flat.size, k, replace=False)] = values[:k]


# ------------------------------------------------------------------------------------------ records
def test_tile_records_fit_their_kernels():
    """Every record names a family its kernels exist for, fits the stack its kernel reserves, has whole
    vectors of some ISA, and a maker for each of its variants; each variant of
    each record is its own kernel object."""
    made = set()
    for t in tiles.TILES:
        assert t.dtype in ("float32", "float64") and t.rows > 0 and t.cols > 0, t
        assert t.isa in ("avx512", "avx2") and t.cols * np.dtype(t.dtype).itemsize % 64 == 0, t
        if t.isa == "avx2" and t.family in ("channels", "dw_chans"):  # sums in at most 12 of 16 registers
            assert t.rows * t.cols * np.dtype(t.dtype).itemsize <= 12 * 32, t
        if t.family in ("channels", "rows", "panels"):
            assert t.rows * t.cols <= tiles.ACC and 2 * t.rows * (t.cols // 2) <= tiles.ACC, t
        elif t.family == "dw_pixels":
            assert tiles.PF * t.rows * t.cols <= tiles.ACC_DWP, t
        elif t.family == "dw_taps":
            assert t.rows == tiles.QB and t.rows * t.cols <= tiles.ACC, t
        else:
            assert t.family == "dw_chans" and t.rows * t.cols <= tiles.ACC and t.min_channels >= t.cols, t
        for v in t.variants:
            if t.family in ("channels", "rows"):
                k = dx.fold_kernel(t) if v == "fold" else forward_tiles.tile_kernel(t, v)
            elif t.family == "panels":
                k = panels.panel_kernel(t)
            elif t.family == "dw_chans":
                k = dw_chans.chans_kernel(t, v)
            elif t.family == "dw_pixels":
                k = jit_dw.pixels_kernel(t)
            else:
                k = jit_dw.taps_kernel(t)
            assert isinstance(k, numba.core.registry.CPUDispatcher)
            made.add(id(k))
    assert len(made) == sum(len(t.variants) for t in tiles.TILES)
    with pytest.raises(LookupError):
        forward_tiles.tile_kernel(tiles.tiles("rows", np.float32)[0], "phases")


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pickers_choose_from_the_records(dtype, isa):
    """Told the target's ISA, the pickers pick only records of their family, dtype and ISA that serve the
    channels (the AVX-512 ones where the ISA has none: row tiles): rows tiles for one channel per group,
    a tile for 2-4 channels, else the tile that pads least per unit of speed, each tile for some shape;
    the dw tiles likewise."""
    name, dt = np.dtype(dtype).name, np.dtype(dtype)
    assert tiles.conv_tile(1, dt, 30, isa=isa).family == "rows"
    narrow = tiles.conv_tile(3, dt, 30, isa=isa)
    assert narrow.isa == isa and narrow.rows == 4 and narrow.serves(3)
    picked = {tiles.conv_tile(c, dt, w, isa=isa) for c in (2, 4, 5, 6, 8, 12, 16, 24, 40, 64, 96)
              for w in (16, 24, 32, 48)}
    assert picked == set(tiles.tiles("channels", dtype, isa=isa))
    assert all(t.dtype == name and t.family == "channels" and t.isa == isa for t in picked)
    chans = {tiles.dw_chans_tile(c, f, dt, isa=isa) for c in (8, 16, 32) for f in (4, 6, 8, 12, 64, 128)}
    assert chans - {None} == set(tiles.tiles("dw_chans", dtype, isa=isa))
    assert tiles.dw_chans_tile(7, 64, dt, isa=isa) is None
    folds = {tiles.conv_tile(q, dt, 64, "fold", isa=isa) for q in (5, 8, 9, 12, 16, 25)}
    assert folds <= set(tiles.tiles("channels", dtype, "fold", isa)) and folds
    pixels = {tiles.dw_pixels_tile(k, np.dtype(dtype)) for k in range(1, 11)}
    assert pixels == set(tiles.tiles("dw_pixels", dtype))


def test_tunables_override_and_reset():
    fresh = Tunables()
    with TUNABLES.override(panel_bytes=123, fold_bytes=7):
        assert (TUNABLES.panel_bytes, TUNABLES.fold_bytes) == (123, 7)
    assert TUNABLES == fresh
    with pytest.raises(TypeError, match="unknown tunables"):
        with TUNABLES.override(panel_byte=1):
            pass
    TUNABLES.dw_chunk_bytes = 5
    TUNABLES.reset()
    assert TUNABLES == fresh


# --------------------------------------------------------------------------------- forward and dx
def _kernels_of(tile):
    """Every kernel made from a tile record (the tiles' sums are bitwise equal: which tile ran is told
    by the kernels launched)."""
    if tile.family in ("channels", "rows"):
        return {forward_tiles.tile_kernel(tile, v) for v in tile.variants if v != "fold"}
    if tile.family == "panels":
        return {panels.panel_kernel(tile)}
    return {dw_chans.chans_kernel(tile, v) for v in tile.variants}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,kw,bias", CONV_CASES[:20:3] + CONV_CASES[-6:])
def test_the_plan_a_call_uses_gives_its_results(xs, ws, kw, bias, dtype, rng, jit_launches):
    """plan(g, dtype) names the tiles a call picks: the kernels a call without a plan launches are
    those tiles' (where the call takes a tile path), and passed back, the plan gives the same results,
    bitwise."""
    g, x, w, b, dout = _operands(xs, ws, kw, dtype, rng, bias)
    p = jit_conv.plan(g, dtype)
    assert p.forward_tile is not None and p.forward_tile.dtype == np.dtype(dtype).name
    jit_launches.clear()
    out = jit_conv.conv2d_forward(x, w, b, g)
    assert set(jit_launches) & _kernels_of(p.forward_tile)
    np.testing.assert_array_equal(jit_conv.conv2d_forward(x, w, b, g, p), out)
    jit_launches.clear()
    dxv = jit_conv.conv2d_backward_dx(dout, w, g)
    if p.dx_tile is not None and dx.fold_applies(g, np.dtype(dtype)) is None:
        assert set(jit_launches) & _kernels_of(p.dx_tile)
    np.testing.assert_array_equal(jit_conv.conv2d_backward_dx(dout, w, g, p), dxv)
    jit_launches.clear()
    dw = jit_conv.conv2d_backward_dw(dout, x, g)
    if p.dw_tile is not None:
        assert set(jit_launches) & _kernels_of(p.dw_tile)
    np.testing.assert_array_equal(jit_conv.conv2d_backward_dw(dout, x, g, p), dw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,kw,bias", CONV_CASES)
def test_jit_forward_packs_each_image_in_its_task(xs, ws, kw, bias, dtype, rng, jit_launches):
    """The forward packing each image inside the task that computes it (one launch) against packing the
    whole batch first (or reading it in place): the same results, bitwise, non-finite inputs included,
    and close to naive. The path taken is checked."""
    g, x, w, b, _ = _operands(xs, ws, kw, dtype, rng, bias)
    tile = jit_conv.plan(g, dtype).forward_tile
    launched = jit_launches

    def both():
        launched.clear()
        whole_batch = jit_conv.conv2d_forward(x, w, b, g, Plan(packed=False))
        before = list(launched)
        launched.clear()
        per_image = jit_conv.conv2d_forward(x, w, b, g, Plan(packed=True))
        return whole_batch, per_image, before, list(launched)

    whole_batch, per_image, before, after = both()
    np.testing.assert_array_equal(per_image, whole_batch)
    if "packed" in tile.variants:
        assert after == [forward_tiles.tile_kernel(tile, "packed")]
    else:
        assert after == before
    assert_close(per_image, fastconv.conv2d_forward(x, w, b, method="naive", **kw), dtype, "out")
    _poison(x, rng)
    whole_batch, per_image, _, _ = both()
    np.testing.assert_array_equal(per_image, whole_batch)  # NaN where the other has NaN


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("packed", [False, True], ids=["batch-packed", "image-packed"])
def test_every_jit_tile_gives_the_same_sums(dtype, packed, rng, jit_launches):
    """Each wide channel tile of the jit forward and dx forced by a plan on every table case where it
    serves the channels: an output element's sum runs over the same taps in the same order whatever the
    tile's shape, so the forward and dx are bitwise those of the first tile (non-finite inputs
    included), which are close to naive (test_conv_method_matches_naive). Every kernel of every tile
    runs: with packed, the per-image variants."""
    wide = [t for t in tiles.tiles("channels", dtype) if t.max_channels is None]
    assert len(wide) > 1
    launched = jit_launches

    def run(tile, g, x, w, b, dout):
        default = jit_conv.plan(g, dtype)
        fwd = tile if default.forward_tile.family == "channels" and tile.serves(g.Fg) else None
        dxt = tile if default.dx_tile is not None and default.dx_tile.family == "channels" \
            and tile.serves(g.Cg) else None
        p = Plan(forward_tile=fwd, dx_tile=dxt, packed=packed, fold=False)
        return jit_conv.conv2d_forward(x, w, b, g, p), jit_conv.conv2d_backward_dx(dout, w, g, p)

    for xs, ws, kw, bias in CONV_CASES:
        g, x, w, b, dout = _operands(xs, ws, kw, dtype, rng, bias)
        _poison(x, rng, (np.nan, np.inf))
        ref = run(wide[0], g, x, w, b, dout)
        for tile in wide[1:]:
            for got, want in zip(run(tile, g, x, w, b, dout), ref):
                np.testing.assert_array_equal(got, want)
    for tile in wide:
        ran = {v for v in tile.variants if v != "fold" and forward_tiles.tile_kernel(tile, v) in launched}
        assert ran >= ({"packed"} if packed else {"fwd"}) | ({"phases"} & set(tile.variants)), tile


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_dx_packs_each_image_in_its_task(dtype, rng, jit_launches):
    """dx at stride 1 runs the forward's tiles over dout padded: packed image by image in the tasks, the
    same dx bitwise as packing all of dout first, on every table case and two with padding past the
    kernel's reach, non-finite values included, the per-image kernel taken in some of them."""
    packed = {forward_tiles.tile_kernel(t, "packed") for t in tiles.TILES if "packed" in t.variants}
    launched = jit_launches
    taken = 0
    # padding past the kernel's reach: dx's rows start below dout's first (r0 > 0)
    wide = [((4, 3, 6, 7), (5, 3, 2, 2), dict(padding=2), None),
            ((4, 3, 6, 7), (5, 3, 2, 3), dict(padding=((2, 0), (3, 1))), None)]
    for xs, ws, kw, _ in CONV_CASES + wide:
        g, x, w, _, dout = _operands(xs, ws, kw, dtype, rng)
        _poison(dout, rng, (np.nan, np.inf))
        whole = jit_conv.conv2d_backward_dx(dout, w, g, Plan(packed=False))
        launched.clear()
        per_image = jit_conv.conv2d_backward_dx(dout, w, g, Plan(packed=True))
        np.testing.assert_array_equal(per_image, whole)
        taken += any(fn in packed for fn in launched)
    assert taken >= 5


@pytest.mark.parametrize("panel_bytes", [1, 3000, 1 << 19])
@pytest.mark.parametrize("xs, ws, groups", [
    ((2, 6, 7, 9), (12, 3, 1, 1), 2),  # 63 columns: 3 panels of 16, the last of 15; 6 channels a group
    ((3, 10, 6, 6), (20, 10, 1, 1), 1),  # 36: a last panel of 4, summed 8 wide; 3 blocks of 8 (odd)
    ((2, 4, 4, 6), (34, 2, 1, 1), 2),  # 24: a last panel of 8 (the narrow width); 17 channels a group
    ((2, 4, 5, 5), (34, 2, 1, 1), 2),  # 25: a last panel of 9 (one past it)
    ((2, 3, 4, 8), (16, 3, 1, 1), 1)],  # 32: whole panels only
    ids=["15", "4", "8", "9", "0"])
def test_jit_pointwise_panels_in_column_blocks(panel_bytes, xs, ws, groups, rng, jit_launches):
    """float64 pointwise convs (forward and dx) by AVX-512's panels of packed input columns, one block of
    columns per task: with a small budget an image splits into several blocks, the last one ragged. A
    last panel of at most 8 columns is packed and summed 8 wide, two blocks of output channels at a
    time (the last block, if odd, paired with itself)."""
    (tile,) = tiles.tiles("panels", np.float64)  # forced: an AVX2 target does not pick it
    assert tiles.panel_tile(np.dtype(np.float64), "avx512") == tile
    assert tiles.panel_tile(np.dtype(np.float64), "avx2") is None
    g, x, w, b, dout = _operands(xs, ws, dict(groups=groups), np.float64, rng)
    plan = Plan(forward_tile=tile, dx_tile=tile)
    with TUNABLES.override(panel_bytes=panel_bytes):
        out = jit_conv.conv2d_forward(x, w, b, g, plan)
        dxv = jit_conv.conv2d_backward_dx(dout, w, g, plan)
    assert jit_launches == [panels.panel_kernel(tile)] * 2
    assert_close(out, fastconv.conv2d_forward(x, w, b, method="naive", groups=groups), np.float64, "out")
    naive = fastconv.conv2d_backward(dout, x, w, method="naive", groups=groups)
    assert_close(dxv, naive[0], np.float64, "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fold_bytes", [1, 1 << 21])
def test_jit_first_layer_dx_with_and_without_the_fold(fold_bytes, dtype, rng, jit_launches):
    """dx of a conv with one input channel per group goes through the GEMM-and-fold kernel when its
    per-thread buffer fits TUNABLES.fold_bytes, else (or with a plan's fold=False) through the phases:
    all agree with naive."""
    xs, ws, kw = (4, 1, 13, 12), (9, 1, 3, 3), dict(padding=1, stride=(1, 2))
    g, x, w, _, dout = _operands(xs, ws, kw, dtype, rng)
    want = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)[0]
    folds = {dx.fold_kernel(t) for t in tiles.TILES if "fold" in t.variants}
    with TUNABLES.override(fold_bytes=fold_bytes):
        tile = dx.fold_applies(g, np.dtype(dtype))
        assert (tile is None) == (fold_bytes == 1)
        assert_close(jit_conv.conv2d_backward_dx(dout, w, g), want, dtype, "dx")
        assert (dx.fold_kernel(tile) in jit_launches) if tile else not folds & set(jit_launches)
        jit_launches.clear()
        assert_close(jit_conv.conv2d_backward_dx(dout, w, g, Plan(fold=False)), want, dtype, "dx")
        assert not folds & set(jit_launches)


# ---------------------------------------------------------------------------------------------- dw
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_jit_dw_tile_matches_naive(dtype, rng, jit_launches):
    """Each channel-vector dw tile forced by a plan on convs whose input channels per group fill its
    vector: pointwise (the per-task transposing kernel) and not, with groups, stride, dilation,
    padding, input channels past a whole number of vectors and output channels clamped in the last
    tile; dw agrees with naive, and each of the tile's kernels ran."""
    cases = [((2, 40, 5, 6), (12, 40, 3, 3), dict(padding=1)),
             ((2, 64, 7, 5), (20, 32, 3, 3), dict(stride=2, padding=1, groups=2)),
             ((2, 36, 9, 8), (9, 36, 2, 3), dict(dilation=2, padding=(1, 2))),
             ((2, 48, 4, 5), (26, 48, 1, 1), {}),
             ((3, 64, 3, 7), (16, 32, 1, 1), dict(groups=2))]
    for tile in tiles.tiles("dw_chans", dtype):
        jit_launches.clear()
        for xs, ws, kw in cases:
            g, x, w, _, dout = _operands(xs, ws, kw, dtype, rng)
            if not tile.serves(g.Cg):
                continue
            got = jit_conv.conv2d_backward_dw(dout, x, g, Plan(dw_tile=tile))
            want = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)[1]
            assert_close(got, want, dtype, "dw")
        for v in tile.variants:
            assert dw_chans.chans_kernel(tile, v) in jit_launches, (tile, v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [30, 32])
def test_jit_dw_reads_dout_rows_in_place_or_padded(size, dtype, rng):
    """The jit dw for many input channels per group reads its tile's dout rows in place, or, where those
    rows would start in too few L1 sets (a 32x32 plane: 4 KiB in float32, 8 KiB in float64), from a copy
    in padded rows. Both agree with naive, with groups and a last tile of clamped output channels. The
    AVX-512 tile (8 or 16 rows) is forced: the AVX2 tiles' 4 or 6 rows never need the padding."""
    xs, ws, kw = (1, 32, size, size), (20, 16, 3, 3), dict(padding=1, groups=2)
    tile = tiles.dw_chans_tile(16, 10, np.dtype(dtype), isa="avx512")
    plane = size * size
    assert (dw_chans._row_stride(plane, np.dtype(dtype).itemsize, tile.rows) > plane) == (size == 32)
    g, x, w, _, dout = _operands(xs, ws, kw, dtype, rng)
    want = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)[1]
    assert_close(jit_conv.conv2d_backward_dw(dout, x, g, Plan(dw_tile=tile)), want, dtype, "dw")


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_depthwise_dw_by_planes(dtype, rng, jit_launches):
    """dw of convs with one input channel per group (depthwise, channel multipliers 1-3) takes the plane
    kernel: with strides 1, 2, 3 and unequal ones, dilation, uneven padding, kernels of 1-7 columns (its
    three-tap passes and their remainders) and non-finite inputs, whose products with the padding's zeros
    naive forms too; it agrees with naive. A single group of one input channel keeps the other kernels."""
    from fastconv.jit.conv import dw_planes

    cases = [((2, 4, 6, 5), (4, 1, 3, 3), dict(padding=1, groups=4)),
             ((2, 3, 5, 5), (6, 1, 2, 2), dict(stride=2, groups=3)),
             ((2, 6, 9, 8), (6, 1, 3, 3), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=6)),
             ((2, 6, 9, 12), (6, 1, 3, 7), dict(padding=(1, 2), dilation=(2, 1), groups=6)),
             ((1, 4, 11, 7), (12, 1, 3, 2), dict(stride=3, padding=2, groups=4)),
             ((3, 5, 7, 7), (5, 1, 1, 4), dict(padding=(0, 3), groups=5)),
             ((2, 8, 14, 14), (8, 1, 5, 5), dict(stride=2, padding=2, groups=8))]
    for xs, ws, kw in cases:
        g, x, w, _, dout = _operands(xs, ws, kw, dtype, rng)
        _poison(x, rng)
        assert dw_planes.applies(g)
        jit_launches.clear()
        got = jit_conv.conv2d_backward_dw(dout, x, g)
        want = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)[1]
        assert_close(got, want, dtype, "dw")
        assert jit_launches == [dw_planes._dw_planes], xs
    g, x, _, _, dout = _operands((2, 1, 8, 8), (4, 1, 3, 3), {}, dtype, rng)
    assert not dw_planes.applies(g)
    jit_launches.clear()
    jit_conv.conv2d_backward_dw(dout, x, g)
    assert dw_planes._dw_planes not in jit_launches


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk_bytes", [1, 20_000, 1 << 20])
def test_jit_pointwise_dw_transposes_per_task(chunk_bytes, dtype, rng, jit_launches):
    """dw of a pointwise conv with 16+ input channels per group: each task transposes its own input
    channels, chunk by chunk of images. Here groups, a last block of 2 channels of 16 (zero-filled),
    output channels clamped in the last tile, and chunks of 1 image, of 2 with a short last chunk
    (float64; of 4 in float32), and of the whole batch; dw agrees with naive."""
    xs, ws, kw = (5, 36, 3, 7), (22, 18, 1, 1), dict(groups=2)
    g, x, w, _, dout = _operands(xs, ws, kw, dtype, rng)
    with TUNABLES.override(pw_dw_chunk_bytes=chunk_bytes):
        got = jit_conv.conv2d_backward_dw(dout, x, g)
    tile = tiles.dw_chans_tile(g.Cg, g.Fg, np.dtype(dtype))
    assert dw_chans.chans_kernel(tile, "pointwise") in jit_launches
    assert_close(got, fastconv.conv2d_backward(dout, x, w, method="naive", **kw)[1], dtype, "dw")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tasks_per_thread", [1, 3])
@pytest.mark.parametrize("xs,f,groups", [((3, 40, 3, 5), 12, 1), ((4, 36, 2, 7), 22, 2),
                                          ((3, 32, 32, 32), 20, 1)])
def test_jit_pointwise_backward_sums_db_in_the_dw_kernel(xs, f, groups, tasks_per_thread, dtype, rng,
                                                         jit_launches):
    """For a pointwise conv the jit backward sums db in the dw kernel, each task its share of a group's
    output channels, chunk by chunk (here of one image): db against a float64 sum, inf and NaN included,
    with shares of 1 to 12 channels (11 of 22 in a group split three ways does not divide), and on
    32 x 32 planes, whose dout rows the kernel reads padded; dx and dw are those of the separate calls.
    The db kernel does not run."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((f, xs[1] // groups, 1, 1)).astype(dtype)
    dout = rng.standard_normal((xs[0], f, xs[2], xs[3])).astype(dtype)
    dout[1, 3, 0, 1] = np.inf
    dout[2, f - 1, 1, 0] = np.nan
    pointwise = {dw_chans.chans_kernel(t, "pointwise") for t in tiles.tiles("dw_chans", dtype, "pointwise")}
    with TUNABLES.override(pw_dw_chunk_bytes=1, dw_tasks_per_thread=tasks_per_thread):
        dxv, dw, db = fastconv.conv2d_backward(dout, x, w, groups=groups, method="jit")
        assert jit_db._channel_sums not in jit_launches and set(jit_launches) & pointwise
        g = conv_geometry(x.shape, w.shape, 1, 0, 1, groups)
        np.testing.assert_array_equal(dxv, jit_conv.conv2d_backward_dx(dout, w, g))
        np.testing.assert_array_equal(dw, jit_conv.conv2d_backward_dw(dout, x, g))
    assert db.dtype == dtype
    assert_close(db, dout.astype(np.float64).sum(axis=(0, 2, 3)).astype(dtype), dtype, "db")


# ------------------------------------------------------------------------------------- disk cache
_CACHED_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fastconv._params import conv_geometry
    from fastconv.jit import conv as jit_conv
    from fastconv.jit.conv import forward_tiles, tiles
    from fastconv.jit.conv.plan import Plan
    from fastconv.naive import conv2d_forward as naive
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 5, 30))
    w = rng.standard_normal((11, 6, 3, 3))
    g = conv_geometry(x.shape, w.shape, 1, 1, 1, 1)
    order = tiles.tiles("channels", np.float64)[:2]
    out = {}
    for t in (order if sys.argv[1] == "forward" else order[::-1]):
        got = jit_conv.conv2d_forward(x, w, None, g, Plan(forward_tile=t, packed=False))
        k = forward_tiles.tile_kernel(t, "fwd")
        out[str(t)] = [float(np.abs(got - naive(x, w, None, g)).max()), sum(k.stats.cache_hits.values())]
    print(json.dumps(out))
""")


def test_disk_cache_never_replays_a_kernel_for_another_tile(tmp_path):
    """Two tiles of one family (one kernel body): a process compiling them in one order and a second
    loading them in the other each get the right kernel. Then, as if two processes had raced on a cold
    cache (numba can then point one overload's index entry at another's code), the two kernels' data
    files are swapped: the next process finds the wrong key in each, compiles both again and gets the
    right results (a kernel of the wrong tile would read weights packed for the other: far from naive)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTCONV_CACHE="1")

    def run(order):
        res = subprocess.run([sys.executable, "-c", _CACHED_RUN, order], env=env, capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(res.stdout.splitlines()[-1])

    runs = [run("forward"), run("backward")]
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == 2
    for name in runs[0]:
        assert runs[0][name][0] < 1e-12 and runs[1][name][0] < 1e-12, name
        assert runs[0][name][1] == 0 and runs[1][name][1] == 1, name  # compiled, then loaded
    a, b = (sorted(tmp_path.rglob(f"*fwd_float64_{t}*.nbc")) for t in ("8x16", "5x24"))
    assert len(a) == len(b) == 1
    data_a, data_b = a[0].read_bytes(), b[0].read_bytes()
    a[0].write_bytes(data_b)
    b[0].write_bytes(data_a)
    swapped = run("forward")
    for name in runs[0]:
        assert swapped[name] == [swapped[name][0], 0] and swapped[name][0] < 1e-12, name
