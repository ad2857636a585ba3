"""Work for the processes that tests/test_processes.py starts: importable by name, so that spawned and
forkserver workers can unpickle it."""

from __future__ import annotations

import numpy as np
from test_threads import _calls

import fastconv


def everything(_: int = 0) -> list[np.ndarray]:
    """Every op and compiled method (auto included), forward and backward, on small arrays of both
    dtypes (naive's Python loops use no threading layer)."""
    out: list[np.ndarray] = []
    for dt in (np.float32, np.float64):
        calls = _calls(np.random.default_rng(5), dt)
        for op, fn in calls.items():
            for m in [m for m in fastconv.available_methods(op) if m != "naive"] + ["auto"]:
                out.extend(fn(m))
    return out


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Bitwise equal lists of arrays (NaN where NaN), of equal dtypes."""
    return len(a) == len(b) and all(np.array_equal(x, y, equal_nan=True) and x.dtype == y.dtype
                                    for x, y in zip(a, b))
