"""A conv2d backward pass assembled from its gradients' functions: below the registry and every method,
so that methods build their ``conv2d_backward`` without importing the registry that lists them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._quiet import quiet


def sum_bias_grad(dout: np.ndarray) -> np.ndarray:
    """db: dout summed over (N, Ho, Wo) by NumPy, in dout's dtype."""
    return dout.sum(axis=(0, 2, 3), dtype=dout.dtype)


def conv_backward(dx_fn: Callable[..., Any], dw_fn: Callable[..., Any],
                  db_fn: Callable[..., Any] = sum_bias_grad,
                  dw_db_fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A conv2d backward pass (dout, x, w, g) -> (dx, dw, db) from its gradients' functions,
    dx_fn(dout, w, g), dw_fn(dout, x, g) and db_fn(dout) (NumPy's sum unless a method has its own), or
    dw_db_fn(dout, x, g) -> (dw, db) where a method computes both in one pass: what every method
    module's ``conv2d_backward`` is."""

    @quiet
    def conv2d_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, g: Any
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx = dx_fn(dout, w, g)
        if dw_db_fn is not None:
            return (dx, *dw_db_fn(dout, x, g))
        return dx, dw_fn(dout, x, g), db_fn(dout)

    return conv2d_backward
