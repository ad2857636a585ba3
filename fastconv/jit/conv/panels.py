"""Pointwise convs (1x1, stride 1, no padding) as one GEMM per image and group, by packed panels: each task
packs a block of an image's columns into panels whose rows lie end to end, and runs the forward's
register tile over them (``_panel_tiles``), forward and dx. Used where the panels family has a tile for
the dtype (tiles.TILES: float64).
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from numba import prange

from ..._workspace import fresh
from .._numba import claims_next, claims_start, counter, inline, kernel, launch, stack_empty, tile_sums
from .packing import packed_weights, thread_rows
from .tiles import ACC, Tile
from .tunables import TUNABLES


@inline
def _panel_tiles(fb, vw, hw, x, wpk, bias, out, buf, pb, ctr):
    """out[n, g*Mg + m, p] = bias[g*Mg + m] + sum_k wpk[g, m // fb, k, m % fb] * x[n, g, k, p]: a
    pointwise conv, one GEMM per image and group, K = x.shape[2] input channels.

    Each task owns pb columns of one image and group. It first copies them, row by row, into panels of
    vw columns whose K rows lie end to end (its thread's row of buf; columns past the image are zeros,
    their sums never stored), then runs every block of fb output channels over each panel while the
    panel is in cache (tile_sums: the forward's fb x vw register tile, its K rows end to end). Read in
    place, a tile's K rows are K strided streams, which the prefetchers do not follow when the input
    comes from memory.

    A last panel of at most hw = vw / 2 columns is packed hw wide and summed by tiles of 2 * fb output
    channels x hw columns (tile_sums over two weight blocks): 196 columns (14 x 14) are 12 panels of
    16 and one of 4, which the 16-wide tile would compute at the cost of a whole panel."""
    N, G, K, P = x.shape
    nb = wpk.shape[1]
    Mg = out.shape[1] // G
    npb = (P + pb - 1) // pb
    of = out.reshape(-1)
    ntasks = N * G * npb
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for task in range(cur[0], cur[1]):
                c = task % npb
                r = task // npb
                g = r % G
                n = r // G
                p0 = c * pb
                width = min(pb, P - p0)
                npan = (width + vw - 1) // vw
                nfull = width // vw  # panels without columns past the image
                tail = width - nfull * vw
                narrow = 0 < tail <= hw  # a last panel of at most hw columns is summed hw wide
                bf = buf[numba.get_thread_id()]
                row = numba.carray(stack_empty(ACC, x.dtype), (vw,))
                for k in range(K):
                    xr = x[n, g, k]
                    for pan in range(nfull):
                        base = np.uint64((pan * K + k) * vw)
                        j0 = np.uint64(p0 + pan * vw)
                        # through the stack: LLVM cannot tell that bf and x do not overlap, and copied
                        # element by element, in order (vector loads and stores: faster)
                        for t in range(vw):
                            row[t] = xr[j0 + np.uint64(t)]
                        for t in range(vw):
                            bf[base + np.uint64(t)] = row[t]
                    if nfull < npan:
                        j0 = np.uint64(p0 + nfull * vw)
                        tmax = P - (p0 + nfull * vw)
                        tw = hw if narrow else vw  # the last panel's row length
                        base = np.uint64(nfull * K * vw + k * tw)
                        for t in range(tmax):
                            bf[base + np.uint64(t)] = xr[j0 + np.uint64(t)]
                        for t in range(tmax, tw):
                            bf[base + np.uint64(t)] = 0
                acc = numba.carray(stack_empty(ACC, x.dtype), (fb, vw))
                hacc = numba.carray(stack_empty(ACC, x.dtype), (2 * fb, hw))
                # views made once per task: in the tile loop each cost a runtime call
                wg = wpk[g].reshape(-1)
                for b in range(nb):
                    for pan in range(npan):
                        j0 = p0 + pan * vw
                        if pan == nfull and narrow:
                            # blocks in pairs: b's tile sums b + 1's rows too (past the last block,
                            # b's own again, never stored)
                            if b % 2 == 0:
                                tile_sums(2, fb, hw, hacc, bf, nfull * K * vw, hw, wg, b * K * fb,
                                          (min(b + 1, nb - 1) - b) * K * fb, K)
                                for m in range(min(2 * fb, Mg - b * fb)):
                                    oc = g * Mg + b * fb + m
                                    bv = bias[oc]
                                    o = np.uint64((n * out.shape[1] + oc) * P + j0)
                                    for t in range(tail):
                                        of[o + np.uint64(t)] = hacc[m, t] + bv
                            continue
                        tile_sums(1, fb, vw, acc, bf, pan * K * vw, vw, wg, b * K * fb, 0, K)
                        for m in range(min(fb, Mg - b * fb)):
                            oc = g * Mg + b * fb + m
                            bv = bias[oc]
                            # unsigned offsets: a signed one that might wrap around made LLVM store
                            # with scatters
                            o = np.uint64((n * out.shape[1] + oc) * P + j0)
                            if pan < nfull:
                                for t in range(vw):
                                    of[o + np.uint64(t)] = acc[m, t] + bv
                            else:
                                for t in range(P - j0):
                                    of[o + np.uint64(t)] = acc[m, t] + bv


@functools.cache
def panel_kernel(tile: Tile) -> Any:
    """The panels kernel of a panels tile (its last narrow panel half as wide), made on first use."""
    fb, vw, hw = tile.rows, tile.cols, tile.cols // 2

    def panels(x, wpk, bias, out, buf, pb, ctr):
        _panel_tiles(fb, vw, hw, x, wpk, bias, out, buf, pb, ctr)
    return kernel(panels, f"panels_{tile.dtype}_{fb}x{vw}")


def pointwise_panels(tile: Tile, x: np.ndarray, wt: np.ndarray, groups: int, bias: np.ndarray) -> np.ndarray:
    """(N, C, P) input and (M, C // groups, 1, 1) kernel -> (N, M, P), by _panel_tiles."""
    N, C, P = x.shape
    M, K = wt.shape[0], wt.shape[1]
    fb, vw = tile.rows, tile.cols
    wpk = packed_weights(wt, groups, fb)
    wpk = wpk.reshape(groups, -1, K, fb)
    pb = min(-(-P // vw), max(1, TUNABLES.panel_bytes // (K * vw * x.itemsize))) * vw
    buf = thread_rows("panels", K * pb, x.dtype)
    out = fresh((N, M, P), x.dtype)
    launch(panel_kernel(tile), x.reshape(N, groups, K, P), wpk, bias, out, buf, pb, counter())
    return out
