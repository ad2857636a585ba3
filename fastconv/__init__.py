"""fastconv: the classic hand-written CNN layers, fast on a CPU, checked against their naive loops."""

import os as _os
import sys as _sys

# OpenBLAS's idle threads spin for ~0.1 s after each GEMM, starving the numba kernels that follow (the
# im2col unfold ran 2x slower, a jit conv right after a GEMM 1.6-2x slower). OpenBLAS reads the timeout
# when its thread pool starts: if NumPy is loaded already, its pool is restarted to take it. A value the
# user set is left alone. See README, "Threads"; `fastconv info` tells whether it took effect.
from . import _blas_idle  # noqa: E402 (standard library only)

_USER_TIMEOUT = "OPENBLAS_THREAD_TIMEOUT" in _os.environ
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", _blas_idle.TIMEOUT)
if _USER_TIMEOUT or "numpy" not in _sys.modules:
    BLAS_SLEEPS_AT_ONCE = True
else:
    BLAS_SLEEPS_AT_ONCE = _blas_idle.restart_loaded_pools()

from ._api import (  # noqa: E402 (after the environment is set)
    avg_pool2d_backward,
    avg_pool2d_forward,
    conv2d_backward,
    conv2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from ._registry import OPS, available_methods  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402
from ._workspace import release_workspace  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "OPS",
    "__version__",
    "available_methods",
    "get_num_threads",
    "release_workspace",
    "set_num_threads",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "conv2d_backward",
    "conv2d_forward",
    "max_pool2d_backward",
    "max_pool2d_forward",
]
