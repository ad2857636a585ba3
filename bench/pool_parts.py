"""Time one plane of the jit max-pool backward and its parts, single thread, in the cache
(docs/pools.md, "Where a max backward's time goes").

    python bench/pool_parts.py            # the suite's pool2 and pool3 planes, both dtypes
    python bench/pool_parts.py --reps 20000

Each figure is one @njit loop calling the part `reps` times, divided by `reps`.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from fastconv._params import pool_geometry
from fastconv.jit import pool as PL
from fastconv.jit.planes import load_plane


@numba.njit
def _whole(gp, xp, dp, P, T, pr, ra, Wq, L, sh, sw, ph, pw, dw, KW, KH, ft, fc, ta, reps):
    for _ in range(reps):
        PL._max_bwd_plane(gp, xp, dp, P, T, pr, ra, Wq, L, sh, sw, ph, pw, dw, KW, KH, ft, fc, ta)


@numba.njit
def _load(xp, P, pr, reps):
    for _ in range(reps):
        load_plane(xp, P, pr)


@numba.njit
def _columns(P, T, L, sw, dw, KW, reps):
    for _ in range(reps):
        PL._cols_argmax(P, T, L, sw, dw, KW)


@numba.njit
def _rows(T, n, ra, KH, KW, reps):
    for _ in range(reps):
        PL._rows_argmax(T, n, ra, KH, KW)


def _time(f, *args) -> float:
    """Microseconds per call of f's loop body (args end with reps)."""
    f(*args[:-1], 1)  # compile
    t = time.perf_counter()
    f(*args)
    return (time.perf_counter() - t) / args[-1] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5000)
    reps = ap.parse_args().reps
    print("plane               whole   load  columns (L)   rows (Lo)  zero+scatter   [us]")
    for H, K, S, Pd in ((32, 2, 2, 0), (56, 3, 2, 1)):  # pool2, pool3
        for dt in (np.float32, np.float64):
            g = pool_geometry((1, 1, H, H), (K, K), (S, S), (Pd, Pd), (1, 1), False, True)
            p = PL._pool_plan(g)
            rng = np.random.default_rng(0)
            xp = rng.standard_normal((H, H)).astype(dt)
            gp = rng.standard_normal((g.Ho, g.Wo)).astype(dt)
            dp = np.empty_like(xp)
            P = np.full(p.plane_len, -np.inf, dt)
            T = np.empty((PL.T_ROWS, p.L), dt)
            whole = _time(_whole, gp, xp, dp, P, T, p.plane_row, p.row_at, p.Wq, p.L, S, S, Pd, Pd, 1, K, K,
                          p.first_tap, p.first_col, p.tap_at, reps)
            load = _time(_load, xp, P, p.plane_row, reps)
            cols = _time(_columns, P, T, p.L, S, 1, K, reps)
            rows = _time(_rows, T, p.Lo, p.row_at, K, K, reps)
            name = f"{H}x{H} {K}x{K} s{S} p{Pd} {np.dtype(dt).name}"
            print(f"{name:19s} {whole:6.2f} {load:6.2f} {cols:6.2f} ({p.L:4d}) {rows:6.2f} ({p.Lo:4d}) "
                  f"{whole - load - cols - rows:8.2f}")


if __name__ == "__main__":
    main()
