"""Random but reproducible configurations of every conv and pool parameter, for ``fastconv check`` and
``fastconv.testing``. Each case is valid: the output has at least one element."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._params import conv_geometry, pool_geometry

# Channels per group that reach the jit method's other kernels: 5+ output channels (the wide forward
# and dx tiles; 8+ with one input channel: dx as a GEMM and a fold), 8 or 16+ input channels (dw on
# vectors of input channels).
WIDE = (5, 8, 9, 16, 17, 20)


def conv_case(rng: np.random.Generator) -> tuple[tuple, tuple, dict[str, Any], bool]:
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        cg, fg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        if rng.random() < 0.3:  # enough channels for the jit method's wide tiles and dw channel vectors
            cg, fg = int(rng.choice(WIDE)), int(rng.choice(WIDE))
        if rng.random() < 0.15:  # depthwise
            cg, groups = 1, int(rng.integers(2, 5))
        C, F = cg * groups, fg * groups
        KH, KW = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        H, W = int(rng.integers(1, 11)), int(rng.integers(1, 11))
        N = int(rng.integers(1, 5))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        form = rng.integers(0, 5)
        padding: Any
        if form == 0:
            padding = int(rng.integers(0, 3))
        elif form == 1:
            padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        elif form == 2:
            padding = tuple(tuple(int(v) for v in rng.integers(0, 3, 2)) for _ in range(2))
        else:
            padding = "same" if form == 3 else "valid"
        kind = rng.random()
        if kind < 0.1:  # pointwise: a GEMM per image (the jit method's panels)
            KH = KW = 1
            stride, padding = (1, 1), 0
        elif kind < 0.2:  # a first layer: one input channel, 8+ outputs (the jit dx as GEMM and fold)
            cg, fg, N = 1, int(rng.choice(WIDE[1:])), 4
            C, F = groups, fg * groups
            KH, KW, H, W = int(rng.integers(2, 5)), int(rng.integers(3, 5)), int(rng.integers(6, 11)), 10
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        try:
            conv_geometry((N, C, H, W), (F, cg, KH, KW), stride, padding, dilation, groups)
        except ValueError:
            continue
        return (N, C, H, W), (F, cg, KH, KW), kw, bool(rng.random() < 0.7)


def pool_case(rng: np.random.Generator, op: str) -> tuple[tuple, dict[str, Any]]:
    while True:
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if op == "max_pool2d" else (1, 1)
        p = tuple(int(rng.integers(0, ((kk - 1) * dd + 1) // 2 + 1)) for kk, dd in zip(k, d))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 12)),
                 int(rng.integers(1, 12)))
        kw: dict[str, Any] = dict(kernel_size=k, stride=s, padding=p, ceil_mode=bool(rng.random() < 0.4))
        if op == "max_pool2d":
            kw["dilation"] = d
        else:
            kw["count_include_pad"] = bool(rng.random() < 0.5)
        try:
            pool_geometry(shape, k, s, p, d, kw["ceil_mode"], kw.get("count_include_pad", True))
        except ValueError:
            continue
        return shape, kw


def has_empty_window(shape: tuple, kw: dict[str, Any]) -> bool:
    """Whether some max-pool window lies wholly in the padding (possible only with dilation).

    fastconv outputs -inf there and passes no gradient; PyTorch 2.13's CPU backward writes the gradient
    out of bounds for such a window (heap corruption), so comparisons with PyTorch skip these cases.
    """
    g = pool_geometry(shape, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                      kw.get("dilation", 1), kw.get("ceil_mode", False))
    for size, k, s, p, d, n_out in ((g.H, g.KH, g.sh, g.ph, g.dh, g.Ho), (g.W, g.KW, g.sw, g.pw, g.dw, g.Wo)):
        taps = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d
        if not ((taps >= 0) & (taps < size)).any(axis=1).all():
            return True
    return False
