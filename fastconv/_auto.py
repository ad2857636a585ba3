"""method="auto": which concrete method to run for one call."""

from __future__ import annotations

from typing import Any

import numpy as np

# Most preferred first; the first one available is taken.
_PREFERENCE = {
    "conv2d": ("jit", "im2col", "naive"),
    "max_pool2d": ("jit", "naive"),
    "avg_pool2d": ("jit", "naive"),
}


def choose(op: str, geometry: Any, dtype: np.dtype, available: tuple[str, ...]) -> str:
    for name in _PREFERENCE[op]:
        if name in available:
            return name
    return available[0]
