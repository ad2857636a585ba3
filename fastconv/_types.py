"""The public API's argument and result types (for type checkers and the docs; nothing checks them at
run time: _params.py validates every argument)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

# Inputs: anything np.asarray takes (float32/float64 kept; integers and bools become float64).
ArrayLike = npt.ArrayLike
# Results: float32 when every array input is float32, else float64.
FloatArray = npt.NDArray[np.float32 | np.float64]
IntPair = int | tuple[int, int]
ConvPadding = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | Literal["valid", "same"]
ConvMethod = Literal["auto", "naive", "jit", "im2col"]
PoolMethod = Literal["auto", "naive", "jit"]
