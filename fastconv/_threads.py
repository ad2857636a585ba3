"""One thread count for numba's kernels and for BLAS (the im2col method's GEMMs)."""

from __future__ import annotations

import os

_num_threads: int | None = None


def _default() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """The number of threads fastconv's kernels use (numba's parallel loops and BLAS alike)."""
    if _num_threads is not None:
        return _num_threads
    try:
        import numba

        return int(numba.config.NUMBA_NUM_THREADS)
    except Exception:
        return _default()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in every fastconv kernel, in every Python thread that calls one.

    Sets numba's thread count (applied on each call, since numba's setting is per calling thread) and the
    BLAS libraries' thread count through threadpoolctl. ``n`` must be between 1 and the number of threads
    numba was started with (NUMBA_NUM_THREADS).
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    try:
        import numba

        limit = int(numba.config.NUMBA_NUM_THREADS)
    except Exception:
        limit = _default()
    if n > limit:
        raise ValueError(f"n must be at most {limit} (NUMBA_NUM_THREADS), got {n}")
    _num_threads = n
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass


def current() -> int | None:
    """The count set by set_num_threads, or None for numba's and BLAS's own defaults."""
    return _num_threads
