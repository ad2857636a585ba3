"""The jit conv's dx. Split by output phase (dx position mod stride), each phase is a stride-1 convolution
of the upstream gradient with the transposed, flipped sub-kernel of the taps that reach it, and runs on the
forward's tiles (every phase of a strided dx in one launch where the tile has the phases variant). No
zero-inserted gradient is ever formed, so no 0 * inf terms appear that naive lacks. With one input
channel per group (lenet's first layer) dx is a GEMM and a fold instead (``_fold_tiles``); with
non-finite weights, an exact term-by-term kernel.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from numba import prange

from ..._geometry import DxPhase, dx_phases, flat_pointwise, phase_kernel, residues, transposed_kernel
from ..._geometry import columns_inside as _columns_inside
from ..._params import ConvGeometry
from ..._workspace import fresh
from .._numba import claims_next, claims_start, counter, inline, kernel, launch, stack_empty
from .forward_tiles import (
    channel_tile_sums,
    in_place,
    packs_per_image,
    run_packed_tiles,
    run_tiles,
    tap_offsets,
    tile_kernel,
    tile_source,
)
from .packing import packed_weights, thread_rows
from .panels import pointwise_panels
from .plan import DEFAULT, Plan
from .tiles import ACC, Tile, conv_tile, panel_tile
from .tunables import TUNABLES

columns_inside = inline(_columns_inside)


@kernel
def _dx_terms(dout, w, dx, sh, sw, dh, dw, pt, pl, ctr):
    """dx[n, c, h, v] = sum of w[f, c % Cg, a, e] * dout[n, f, i, j] over the (f, a, e, i, j) with
    i*sh + a*dh = h + pt and j*sw + e*dw = v + pl inside dout: exactly the terms naive's scatter adds,
    and no others. Each task owns one (image, channel) plane of dx."""
    N, C, H, W = dx.shape
    F, Cg, KH, KW = w.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    Fg = F // (C // Cg)
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                n, c = task // C, task % C
                f0, k = (c // Cg) * Fg, c % Cg
                for h in range(H):
                    for v in range(W):
                        dx[n, c, h, v] = 0
                        for a in range(KH):
                            ti = h + pt - a * dh
                            if ti < 0 or ti % sh != 0 or ti // sh >= Ho:
                                continue
                            for e in range(KW):
                                tj = v + pl - e * dw
                                if tj < 0 or tj % sw != 0 or tj // sw >= Wo:
                                    continue
                                for f in range(f0, f0 + Fg):
                                    dx[n, c, h, v] += w[f, k, a, e] * dout[n, f, ti // sh, tj // sw]


def _phase_columns(p: DxPhase, left: int) -> tuple[np.ndarray, np.ndarray]:
    """Where phase p's taps read in the padded dout (one column phase, left columns of padding): the
    colph, coloff pair tap_offsets takes."""
    coloff = (left + p.base_w + np.arange(len(p.taps_w)) * p.step_w).astype(np.intp)
    return np.zeros(len(p.taps_w), np.intp), coloff


def _run_phases(tile: Tile, src: np.ndarray, wt: np.ndarray, g: ConvGeometry, phases: list,
                top: int, left: int, dx: np.ndarray) -> None:
    """All phases of a strided dx by one launch of the tile's phases kernel: the phases' packed kernels and
    tap offsets laid end to end along the taps."""
    fb = tile.block
    wpks, offs, pp, q0 = [], [], [], 0
    for p in phases:
        colph, coloff = _phase_columns(p, left)
        wpk = packed_weights(phase_kernel(wt, p), g.groups, fb)
        wpks.append(wpk.reshape(wpk.shape[0], wpk.shape[1], -1, fb))
        offs.append(tap_offsets(src, g.groups, len(p.taps_h), p.step_h, colph, coloff))
        q1 = q0 + wpks[-1].shape[2]
        pp.append((p.h0, p.w0, p.nh, p.nw, top + p.base_h, q0, q1))
        q0 = q1
    wcat = np.concatenate(wpks, axis=2)
    ocat = np.concatenate(offs, axis=1)
    launch(tile_kernel(tile, "phases"), src, wcat, ocat, np.array(pp, np.int64), dx, g.sh, g.sw,
           max(p.nh for p in phases), counter())


@inline
def _fold_tiles(fb, vw, dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr):
    """dx for one input channel per group (Cg = 1: lenet's first layer) as a GEMM and a fold.

    Each task owns one image and group. It first forms t[q, p] = sum_f wpk[g, q // fb, f, q % fb]
    * dout[n, g*Fg + f, p] for each of the Q taps q = (kh, kw) and dout pixel p, with the forward's
    register tiles (in its thread's row of buf), then folds: dx[n, g, i*sh + kh*dh - pt, j*sw + kw*dw
    - pl] += t[q, i*Wo + j], taps in order, positions in the padding dropped: exactly naive's terms (no
    weight meets a padding zero). The phases would run a transposed conv with one output channel
    instead: 4 rows x vw columns per tile, one FMA per vector load."""
    N, F, P = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    G, nb, Fg, _ = wpk.shape
    nch = (P + vw - 1) // vw
    ntasks = N * G
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                g = task % G
                n = task // G
                t = buf[numba.get_thread_id()]
                acc = numba.carray(stack_empty(ACC, dout.dtype), (fb, vw))
                xn = dout[n].reshape(-1)
                for b in range(nb):
                    wf = wpk[g, b].reshape(-1)
                    for ch in range(nch):
                        j0 = min(ch * vw, P - vw)  # the last chunk overlaps the one before (P >= vw)
                        channel_tile_sums(fb, vw, acc, xn, wf, offq[g], 0, Fg, np.uint64(j0))
                        for m in range(fb):
                            base = (b * fb + m) * P + j0
                            for u in range(vw):
                                t[base + u] = acc[m, u]
                plane = dx[n, g]
                for h in range(H):
                    for v in range(W):
                        plane[h, v] = 0
                for q in range(Q):
                    a = q // KW
                    e = q % KW
                    jlo, jhi = columns_inside(e * dw - pl, sw, W, Wo)
                    for i in range(Ho):
                        h = i * sh + a * dh - pt
                        if h < 0 or h >= H:
                            continue
                        drow = plane[h]
                        t0 = np.uint64(q * P + i * Wo + jlo)
                        d0 = np.uint64(jlo * sw + e * dw - pl)
                        if sw == 1:  # unsigned, unit-stride indices: a vectorized loop
                            for j in range(jhi - jlo):
                                drow[d0 + np.uint64(j)] += t[t0 + np.uint64(j)]
                        else:
                            for j in range(jhi - jlo):
                                drow[d0 + np.uint64(j * sw)] += t[t0 + np.uint64(j)]


@functools.cache
def fold_kernel(tile: Tile) -> Any:
    """The fold kernel of a channels tile with the fold variant, made on first use."""
    if "fold" not in tile.variants:
        raise LookupError(f"the {tile} tile has no fold kernel")
    fb, vw = tile.rows, tile.cols

    def fold(dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr):
        _fold_tiles(fb, vw, dout, wpk, offq, dx, buf, Q, Ho, Wo, KW, sh, sw, dh, dw, pt, pl, ctr)
    return kernel(fold, f"fold_{tile.dtype}_{fb}x{vw}")


def fold_applies(g: ConvGeometry, dtype: np.dtype) -> Tile | None:
    """The tile of _fold_tiles' dx for this geometry, or None where the fold does not apply: it needs one
    input channel per group, at least 8 output channels per group to sum over, 5 taps, 4 (image, group)
    tasks (not the thread count: the sums stay the same), images of at least a tile's width and a
    per-thread buffer t within TUNABLES.fold_bytes (in a core's L2, where the fold finds it; larger
    images take the phases, and the scratch stays small on many-core machines)."""
    Q, P = g.KH * g.KW, g.Ho * g.Wo
    if g.Cg != 1 or g.Fg < 8 or Q < 5 or g.N * g.groups < 4:
        return None
    tile = conv_tile(Q, np.dtype(dtype), P, "fold")
    if P < tile.cols or -(-Q // tile.rows) * tile.rows * P * np.dtype(dtype).itemsize > TUNABLES.fold_bytes:
        return None
    return tile


def _conv_dx_fold(dout: np.ndarray, w: np.ndarray, g: ConvGeometry, tile: Tile) -> np.ndarray:
    """dx by _fold_tiles (where fold_applies gave tile)."""
    Q, P = g.KH * g.KW, g.Ho * g.Wo
    fb = tile.rows
    # the taps are the tile's output channels, the output channels its inputs: wpk[g, b, f, m] =
    # w[g*Fg + f, 0, tap b*fb + m]
    wq = w.reshape(g.groups, g.Fg, Q).transpose(0, 2, 1).reshape(g.groups * Q, g.Fg, 1, 1)
    wpk = packed_weights(wq, g.groups, fb)
    nb = wpk.shape[1]
    wpk = wpk.reshape(g.groups, nb, g.Fg, fb)
    offq = ((np.arange(g.groups)[:, None] * g.Fg + np.arange(g.Fg)[None, :]) * P).astype(np.int64)
    buf = thread_rows("fold", nb * fb * P, dout.dtype)
    dx = fresh((g.N, g.C, g.H, g.W), dout.dtype)
    launch(fold_kernel(tile), dout.reshape(g.N, g.F, P), wpk, offq, dx, buf, Q, g.Ho, g.Wo, g.KW, g.sh,
           g.sw, g.dh, g.dw, g.pt, g.pl, counter())
    return dx


def dx_tile(g: ConvGeometry, dtype: np.dtype) -> Tile:
    """The tile dx's phases pick: for its input channels per group and its narrowest phase."""
    return conv_tile(g.Cg, np.dtype(dtype), min([p.nw for p in dx_phases(g)] or [g.W]))


def _conv_dx(dout: np.ndarray, w: np.ndarray, g: ConvGeometry, plan: Plan) -> np.ndarray:
    if not np.isfinite(w).all():
        # The tiles below multiply the weights by the zeros around dout: an infinite weight would
        # turn those into NaN where naive (and PyTorch) have none. A rare case: a slow, exact path.
        dx = fresh((g.N, g.C, g.H, g.W), dout.dtype)
        launch(_dx_terms, dout, w, dx, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, counter())
        return dx
    dtype = dout.dtype
    wt = transposed_kernel(w, g)
    phases = dx_phases(g)
    strided = g.sh > 1 or g.sw > 1
    # Each phase covers every dx position of its residue (position mod stride); a residue no tap
    # reaches has no phase, and its positions stay 0 (a 1x1 kernel with a stride).
    dx = fresh((g.N, g.C, g.H, g.W), dtype)
    if len(phases) < residues(g):
        dx.fill(0)
    if not phases:
        return dx
    # One zero-padded copy of dout serves every phase: phase rows start at top + base_h.
    top = max(0, max(-p.base_h for p in phases))
    left = max(0, max(-p.base_w for p in phases))
    rows = max(top + p.base_h + p.nh + (len(p.taps_h) - 1) * p.step_h for p in phases)
    tile = plan.dx_tile or conv_tile(g.Cg, dtype, min(p.nw for p in phases))
    vw = tile.cols
    cols = max(left + p.base_w + -(-p.nw // vw) * vw + (len(p.taps_w) - 1) * p.step_w for p in phases)
    reach = max(left + p.base_w + p.nw + (len(p.taps_w) - 1) * p.step_w for p in phases)
    fused = strided and "phases" in tile.variants
    has_overlap = "overlap" in tile.variants and not fused
    p = phases[0]
    whole = not strided and (p.h0, p.w0, p.nh, p.nw) == (0, 0, g.H, g.W)  # one phase: all of dx
    if whole and packs_per_image(tile, g.N, plan.packed) and not (
            plan.packed is None and in_place(dout, rows, reach, top, left, 1, p.nw, vw, has_overlap)):
        # dout packed image by image in the tasks
        colph, coloff = _phase_columns(p, left)
        run_packed_tiles(tile, dout, phase_kernel(wt, p), g.groups, np.zeros(g.C, dtype), dx, top, left,
                          1, top + p.base_h, 1, p.step_h, rows, cols, colph, coloff)
        return dx
    src, overlap = tile_source(dout, rows, cols, reach, top, left, 1, min(p.nw for p in phases), vw,
                                has_overlap)
    if fused:
        _run_phases(tile, src, wt, g, phases, top, left, dx)
        return dx
    zeros = np.zeros(g.C, dtype)
    for p in phases:
        colph, coloff = _phase_columns(p, left)
        out = dx[:, :, p.h0 :: g.sh, p.w0 :: g.sw][:, :, : p.nh, : p.nw]  # written in place, strided
        run_tiles(tile, src, phase_kernel(wt, p), g.groups, zeros, out, 1, p.step_h, colph, coloff,
                   r0=top + p.base_h, overlap=overlap)
    return dx


def conv2d_backward_dx(dout: np.ndarray, w: np.ndarray, g: ConvGeometry, plan: Plan = DEFAULT) -> np.ndarray:
    tile = plan.dx_tile
    if g.pointwise and (tile.family == "panels" if tile else panel_tile(dout.dtype) is not None):
        # the same terms as naive, even with non-finite w
        dx = pointwise_panels(tile or panel_tile(dout.dtype), dout.reshape(g.N, g.F, g.H * g.W),
                              transposed_kernel(w, g), g.groups, np.zeros(g.C, dout.dtype))
        return dx.reshape(g.N, g.C, g.H, g.W)
    flat = flat_pointwise(g)
    if flat is not None:
        return conv2d_backward_dx(dout.reshape(g.N, g.F, 1, g.H * g.W), w, flat, plan).reshape(
            g.N, g.C, g.H, g.W)
    fold = fold_applies(g, dout.dtype) if plan.fold is not False else None
    if fold is not None:
        return _conv_dx_fold(dout, w, g, fold)
    return _conv_dx(dout, w, g, plan)
