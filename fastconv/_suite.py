"""The benchmark layer suite: the shapes every speed figure in fastconv is measured on.

Shared by ``fastconv bench``, ``bench/`` (pytest-benchmark) and the PyTorch peer process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class _Window:
    H: int
    W: int
    K: int
    stride: int
    pad: int

    @property
    def out_hw(self) -> tuple[int, int]:
        return ((self.H + 2 * self.pad - self.K) // self.stride + 1,
                (self.W + 2 * self.pad - self.K) // self.stride + 1)


@dataclass(frozen=True)
class ConvLayer(_Window):
    name: str
    N: int
    C: int
    H: int
    W: int
    F: int
    K: int
    stride: int
    pad: int

    @property
    def flops(self) -> int:
        """Forward FLOPs: 2 * N * F * Ho * Wo * C * K * K (backward is twice that)."""
        ho, wo = self.out_hw
        return 2 * self.N * self.F * ho * wo * self.C * self.K * self.K

    def arrays(self, dtype: np.dtype, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.N, self.C, self.H, self.W)).astype(dtype)
        w = (rng.standard_normal((self.F, self.C, self.K, self.K)) * 0.1).astype(dtype)
        b = rng.standard_normal(self.F).astype(dtype)
        ho, wo = self.out_hw
        dout = rng.standard_normal((self.N, self.F, ho, wo)).astype(dtype)
        return x, w, b, dout

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.pad)


@dataclass(frozen=True)
class PoolLayer(_Window):
    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    stride: int
    pad: int

    def arrays(self, dtype: np.dtype, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.N, self.C, self.H, self.W)).astype(dtype)
        ho, wo = self.out_hw
        dout = rng.standard_normal((self.N, self.C, ho, wo)).astype(dtype)
        return x, dout

    @property
    def kwargs(self) -> dict:
        return dict(kernel_size=self.K, stride=self.stride, padding=self.pad)


CONV_LAYERS = (
    ConvLayer("seed001", 10, 32, 14, 14, 16, 3, 1, 1),
    ConvLayer("cs231n", 50, 3, 32, 32, 32, 7, 1, 3),
    ConvLayer("lenet", 128, 1, 28, 28, 20, 5, 1, 0),
    ConvLayer("vgg", 64, 64, 32, 32, 64, 3, 1, 1),
    ConvLayer("res", 32, 128, 28, 28, 128, 3, 1, 1),
    ConvLayer("down", 32, 64, 56, 56, 128, 3, 2, 1),
    ConvLayer("pw", 32, 256, 14, 14, 256, 1, 1, 0),
)

POOL_LAYERS = (
    PoolLayer("pool2", 64, 64, 32, 32, 2, 2, 0),
    PoolLayer("pool3", 32, 128, 56, 56, 3, 2, 1),
)
