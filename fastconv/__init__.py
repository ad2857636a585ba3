"""fastconv: the classic hand-written CNN layers, fast on a CPU, checked against their naive loops."""

import os as _os

# OpenBLAS's idle threads spin for ~0.1 s after each GEMM, starving the numba kernels that follow (the
# im2col unfold ran 2x slower). Read once when numpy loads OpenBLAS, so it only takes effect when
# fastconv is imported before numpy (the fastconv command does); see README, "Threads".
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from ._api import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    conv2d_backward,
    conv2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from ._registry import OPS, available_methods
from ._threads import get_num_threads, set_num_threads
from ._workspace import release_workspace

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
