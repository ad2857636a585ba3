"""OpenBLAS's idle worker threads: make them sleep at once after a GEMM instead of spinning ~0.1 s.

OpenBLAS (pthreads build, as in NumPy's wheels) reads OPENBLAS_THREAD_TIMEOUT when its thread pool
starts, which is when NumPy loads it. fastconv sets the variable (if unset) on import; when NumPy was
imported first, the pools of the OpenBLAS libraries already loaded are restarted so that they take it.
"""

from __future__ import annotations

import ctypes
import os

TIMEOUT = "4"  # 2**4 cycles: the worker threads wait on a condition variable right after their job


def restart_loaded_pools() -> bool:
    """Restart the thread pool of each pthreads OpenBLAS already loaded so that it reads
    OPENBLAS_THREAD_TIMEOUT again. True if every such library was restarted (or none is loaded); False
    if one lacks the entry points (another BLAS build): its threads keep spinning."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return False
    done = True
    for info in threadpool_info():
        if info.get("internal_api") != "openblas" or info.get("threading_layer") != "pthreads":
            continue  # an OpenMP build follows OMP_WAIT_POLICY instead
        try:
            lib = ctypes.CDLL(info["filepath"])
            read_env, timeout = lib.openblas_read_env, lib.openblas_thread_timeout
            shutdown, start = lib.blas_thread_shutdown_, lib.blas_thread_init
        except (OSError, AttributeError):
            done = False
            continue
        timeout.restype = ctypes.c_uint
        read_env()  # the environment variables, now with the timeout
        if str(timeout()) != os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
            done = False
            continue
        # Joins the idle workers and starts new ones, which take the new timeout; the thread count
        # (and any threadpoolctl limit) is kept.
        shutdown()
        start()
    return done
