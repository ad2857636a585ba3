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
    """A conv layer: N images of C channels, H x W, F filters of K x KW (KW = K unless given), stride,
    padding pad (rows) and pad_w (columns, = pad unless given), dilation and groups."""

    name: str
    N: int
    C: int
    H: int
    W: int
    F: int
    K: int
    stride: int
    pad: int
    KW: int | None = None
    pad_w: int | None = None
    dilation: int = 1
    groups: int = 1

    @property
    def kernel(self) -> tuple[int, int]:
        return self.K, self.K if self.KW is None else self.KW

    @property
    def padding(self) -> tuple[int, int]:
        return self.pad, self.pad if self.pad_w is None else self.pad_w

    @property
    def out_hw(self) -> tuple[int, int]:
        (kh, kw), (ph, pw), d = self.kernel, self.padding, self.dilation
        return ((self.H + 2 * ph - d * (kh - 1) - 1) // self.stride + 1,
                (self.W + 2 * pw - d * (kw - 1) - 1) // self.stride + 1)

    @property
    def flops(self) -> int:
        """Forward FLOPs: 2 * N * F * Ho * Wo * (C / groups) * KH * KW (backward is twice that)."""
        ho, wo = self.out_hw
        kh, kw = self.kernel
        return 2 * self.N * self.F * ho * wo * (self.C // self.groups) * kh * kw

    def arrays(self, dtype: np.dtype, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.N, self.C, self.H, self.W)).astype(dtype)
        w = (rng.standard_normal((self.F, self.C // self.groups, *self.kernel)) * 0.1).astype(dtype)
        b = rng.standard_normal(self.F).astype(dtype)
        ho, wo = self.out_hw
        dout = rng.standard_normal((self.N, self.F, ho, wo)).astype(dtype)
        return x, w, b, dout

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


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

# The shape classes real networks use beyond the suite (not run by default: `fastconv bench --layers
# shapes`, or by name): depthwise 3x3 and 5x5 (MobileNet, EfficientNet), Inception's 1x7 and 7x1, batch 1
# (inference), a dilated 3x3 (segmentation), a 5x5 and an odd small shape.
SHAPE_LAYERS = (
    ConvLayer("dw3", 8, 144, 56, 56, 144, 3, 1, 1, groups=144),
    ConvLayer("dw3s2", 8, 144, 56, 56, 144, 3, 2, 1, groups=144),
    ConvLayer("dw3c512", 8, 512, 14, 14, 512, 3, 1, 1, groups=512),
    ConvLayer("dw5", 8, 240, 28, 28, 240, 5, 1, 2, groups=240),
    ConvLayer("k1x7", 16, 128, 17, 17, 128, 1, 1, 0, KW=7, pad_w=3),
    ConvLayer("k7x1", 16, 128, 17, 17, 128, 7, 1, 3, KW=1, pad_w=0),
    ConvLayer("b1c256", 1, 256, 14, 14, 256, 3, 1, 1),
    ConvLayer("b1c64", 1, 64, 56, 56, 64, 3, 1, 1),
    ConvLayer("dil2", 8, 128, 28, 28, 128, 3, 1, 2, dilation=2),
    ConvLayer("k5", 16, 32, 28, 28, 64, 5, 1, 2),
    ConvLayer("odd", 3, 5, 13, 11, 7, 3, 2, 1),
)

# --layers names that stand for a set of layers
LAYER_SETS = {"shapes": tuple(layer.name for layer in SHAPE_LAYERS)}

POOL_LAYERS = (
    PoolLayer("pool2", 64, 64, 32, 32, 2, 2, 0),
    PoolLayer("pool3", 32, 128, 56, 56, 3, 2, 1),
)

ALL_CONV_LAYERS = CONV_LAYERS + SHAPE_LAYERS
