"""Copies that lay a conv's operands out for the tile kernels: the input padded once, its columns split by
phase (column mod stride) so that every tap reads a contiguous run of input for a run of output columns;
the weights packed with a tile's output channels innermost; the tap offset tables; per-thread scratch rows.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import prange

from ..._geometry import columns_inside as _columns_inside
from ..._workspace import ALIGN, scratch
from .._numba import claims_next, claims_start, counter, inline, kernel, launch

columns_inside = inline(_columns_inside)


@inline
def pack_plane(s, d, row0, col0, sw):
    """d[r, p, j] = s[r - row0, j*sw + p - col0], zero outside s: one channel of pack.

    One zero fill and one 2-D slice copy per phase: rows are short, and row-by-row copies cost more in
    loop overhead than in memory traffic."""
    R, P, J = d.shape
    H, W = s.shape
    rlo, rhi = max(0, row0), min(R, H + row0)  # rows of d that hold input rows
    d[...] = 0
    if rhi > rlo:
        for p in range(P):
            jlo, jhi = columns_inside(p - col0, sw, W, J)
            if jhi == jlo:
                continue
            c0 = jlo * sw + p - col0
            c1 = c0 + (jhi - jlo - 1) * sw + 1
            d[rlo:rhi, p, jlo:jhi] = s[rlo - row0 : rhi - row0, c0:c1:sw]


@kernel
def pack(src, dst, row0, col0, sw, ctr):
    """dst[n, c, r, p, j] = src[n, c, r - row0, j*sw + p - col0], zero outside src: the input padded
    and its columns split by phase (column mod stride). One task per (image, channel)."""
    N, C = dst.shape[0], dst.shape[1]
    ntasks = N * C
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for nc in range(cur[0], cur[1]):
                pack_plane(src[nc // C, nc % C], dst[nc // C, nc % C], row0, col0, sw)


def packed_input(x: np.ndarray, rows: int, cols: int, row0: int, col0: int, sw: int,
                  name: str = "packed") -> np.ndarray:
    """pack's copy of x into the scratch buffer called name."""
    shape = (x.shape[0], x.shape[1], rows, sw, cols)
    xpk = scratch(name, math.prod(shape), x.dtype).reshape(shape)
    launch(pack, x, xpk, row0, col0, sw, counter())
    return xpk


def packed_weights(wt: np.ndarray, groups: int, fb: int) -> np.ndarray:
    """(groups * M, K, KH, KW) -> (groups, ceil(M / fb), K, KH, KW, fb), output channels innermost and
    zero-filled to a whole number of tiles."""
    M, K, KH, KW = wt.shape
    Mg = M // groups
    nb = -(-Mg // fb)
    T = K * KH * KW
    w3 = wt.reshape(groups, Mg, T)
    if nb * fb != Mg:
        w3 = np.concatenate([w3, np.zeros((groups, nb * fb - Mg, T), wt.dtype)], axis=1)
    wpk = np.empty((groups, nb, T, fb), wt.dtype)
    np.copyto(wpk, w3.reshape(groups, nb, fb, T).transpose(0, 1, 3, 2))  # one copy, not one per block
    return wpk.reshape(groups, nb, K, KH, KW, fb)


def thread_rows(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A scratch array of one row of at least size elements per numba thread, which a kernel indexes with
    numba.get_thread_id() (always below NUMBA_NUM_THREADS); every row starts on a 64-byte boundary."""
    threads = int(numba.config.NUMBA_NUM_THREADS)
    per_line = max(1, ALIGN // np.dtype(dtype).itemsize)
    row = -(-size // per_line) * per_line
    return scratch(name, threads * row, dtype).reshape(threads, row)


def tap_offsets(xpk: np.ndarray, groups: int, KH: int, dh: int, colph: np.ndarray,
                 coloff: np.ndarray) -> np.ndarray:
    """offq[g, (k, a, e)]: where tap (input channel k of group g, kernel row a, kernel column e) reads in
    one image's flattened packed input, for output row 0 and column 0. Remembered per geometry (the
    NumPy steps cost 5% of a small layer's call); callers must not modify it."""
    return offsets(*xpk.shape[1:], groups, KH, dh, tuple(colph.tolist()), tuple(coloff.tolist()))


@functools.lru_cache(maxsize=64)
def offsets(C: int, R: int, P: int, J: int, groups: int, KH: int, dh: int, colph: tuple,
             coloff: tuple) -> np.ndarray:
    K = C // groups
    colph, coloff = np.array(colph, np.int64), np.array(coloff, np.int64)
    k = np.arange(C).reshape(groups, K, 1, 1)
    a = np.arange(KH).reshape(1, 1, KH, 1)
    offq = (k * R + a * dh) * (P * J) + (colph * J + coloff).reshape(1, 1, 1, -1)
    return offq.reshape(groups, -1).astype(np.int64)
