"""The jit conv's db: dout summed over images and pixels, each channel by one task in a fixed order."""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._backward import sum_bias_grad
from .._numba import claims_next, claims_start, counter, inline, kernel, launch


@inline
def row_sum(a, start, length):
    """a[start:start + length] summed (vectorized): the order of every db sum."""
    s = a.dtype.type(0)
    for j in range(start, start + length):
        s += a[j]
    return s


@kernel
def _channel_sums(dout, db, ctr):
    """db[f] = sum of dout[:, f]: each image's plane summed (vectorized), those sums added in image
    order. One task per channel: the order does not depend on the thread count."""
    N, F = dout.shape[0], dout.shape[1]
    S = dout[0, 0].size
    df = dout.reshape(-1)
    ntasks = F
    for tslot in prange(ctr[1]):  # one iteration per thread: its own share, then the others'
        cur = claims_start()
        while claims_next(ctr, ntasks, tslot, cur):
            for f in range(cur[0], cur[1]):
                total = dout.dtype.type(0)
                for n in range(N):
                    total += row_sum(df, (n * F + f) * S, S)
                db[f] = total


def conv2d_bias_grad(dout: np.ndarray) -> np.ndarray:
    """db on the cores numba uses (NumPy's sum over (0, 2, 3) runs on one). Below 64K elements NumPy's:
    the launch costs more than the sum."""
    if dout.size < 1 << 16:
        return sum_bias_grad(dout)
    db = np.empty(dout.shape[1], dout.dtype)
    launch(_channel_sums, np.ascontiguousarray(dout), db, counter())
    return db
