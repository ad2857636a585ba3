"""Layer objects in the spirit of note 001: each layer has ``forward(x)`` and ``backward(dout)`` and keeps
what it needs between them. Unlike the note, backward only computes gradients; updating the parameters is
the optimizer's job (SGD below).

Parameters are float32 by default and He-initialized from a seedable ``numpy.random.Generator``.
``Module.state_dict()`` / ``load_state_dict()`` and ``save()`` / ``load()`` (.npz) keep them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _api
from .layers import softmax_loss

__all__ = ["AvgPool2d", "Conv2d", "Dropout", "Flatten", "Linear", "MaxPool2d", "Module", "Parameter",
           "ReLU", "SGD", "Sequential", "SoftmaxCrossEntropy"]


class Parameter:
    """An array and its gradient (same shape and dtype), filled in by the owning layer's backward."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad = np.zeros_like(data)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Module:
    """A layer or a network: ``forward(x)`` keeps what ``backward(dout)`` needs and returns the output;
    ``backward`` fills its parameters' ``grad`` and returns the gradient with respect to x. ``train()`` and
    ``eval()`` switch the training mode (dropout); ``state_dict``, ``save`` and ``load`` keep the
    parameters in a .npz file."""

    training = True

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def children(self) -> list[Module]:
        return []

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for i, child in enumerate(self.children()):
            yield from child.named_parameters(f"{prefix}{i}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        params = dict(self.named_parameters())
        missing = set(params) - set(state)
        extra = set(state) - set(params)
        if missing or extra:
            raise KeyError(f"state_dict mismatch: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.data.shape:
                raise ValueError(f"{name}: shape {value.shape} does not match {p.data.shape}")
            p.data[...] = value

    def save(self, path: str) -> None:
        np.savez(path, **self.state_dict())

    def load(self, path: str) -> None:
        with np.load(path) as f:
            self.load_state_dict({k: f[k] for k in f.files})


class Conv2d(Module):
    """2-D convolution layer (NCHW); the conv2d_forward keywords, He-initialized weights, zero bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                 bias: bool = True, dtype: Any = np.float32, rng: Any = None, method: str = "auto"):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        fan_in = in_channels // groups * kh * kw
        w = _rng(rng).standard_normal((out_channels, in_channels // groups, kh, kw)) * np.sqrt(2 / fan_in)
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        self.kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.method = method
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        b = None if self.bias is None else self.bias.data
        return _api.conv2d_forward(x, self.weight.data, b, method=self.method, **self.kw)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dw, db = _api.conv2d_backward(dout, self._x, self.weight.data, method=self.method, **self.kw)
        self.weight.grad[...] = dw
        if self.bias is not None:
            self.bias.grad[...] = db
        return dx


class _Pool(Module):
    op = ""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, method: str = "auto",
                 **kw: Any):
        self.kw = dict(kernel_size=kernel_size, stride=stride, padding=padding, **kw)
        self.method = method
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return getattr(_api, f"{self.op}_forward")(x, method=self.method, **self.kw)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return getattr(_api, f"{self.op}_backward")(dout, self._x, method=self.method, **self.kw)


class MaxPool2d(_Pool):
    """Max pooling layer (NCHW) with the max_pool2d_forward keywords; no parameters."""

    op = "max_pool2d"

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 ceil_mode: bool = False, method: str = "auto"):
        super().__init__(kernel_size, stride, padding, method, dilation=dilation, ceil_mode=ceil_mode)


class AvgPool2d(_Pool):
    """Average pooling layer (NCHW) with the avg_pool2d_forward keywords; no parameters."""

    op = "avg_pool2d"

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, method: str = "auto"):
        super().__init__(kernel_size, stride, padding, method, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad)


class Linear(Module):
    """y = x @ W + b with W of shape (in_features, out_features) (the CS231n orientation)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = np.float32,
                 rng: Any = None):
        w = _rng(rng).standard_normal((in_features, out_features)) * np.sqrt(2 / in_features)
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        out = x @ self.weight.data
        return out if self.bias is None else out + self.bias.data

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.weight.grad[...] = self._x.T @ dout
        if self.bias is not None:
            self.bias.grad[...] = dout.sum(axis=0)
        return dout @ self.weight.data.T


class ReLU(Module):
    """max(x, 0), elementwise; its gradient passes where x > 0."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return np.maximum(x, 0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self._x > 0, dout, 0).astype(dout.dtype, copy=False)


class Dropout(Module):
    """Inverted dropout keeping each unit with probability ``keep_prob`` while training."""

    def __init__(self, keep_prob: float = 0.5, rng: Any = None):
        if not 0 < keep_prob <= 1:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}")
        self.keep_prob = keep_prob
        self.rng = _rng(rng)
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            self._mask = None
            return x
        self._mask = ((self.rng.random(x.shape) < self.keep_prob) / self.keep_prob).astype(x.dtype)
        return x * self._mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self._mask is None else dout * self._mask


class Flatten(Module):
    """(N, d1, ..., dk) to (N, d1 * ... * dk), and the gradient back."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self._shape)


class Sequential(Module):
    """Layers run in order by forward and in reverse by backward; its parameters are theirs."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def children(self) -> list[Module]:
        return self.layers

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


class SoftmaxCrossEntropy:
    """Mean softmax cross-entropy: ``loss = forward(logits, y)``, then ``backward()`` gives dlogits."""

    def forward(self, logits: np.ndarray, y: np.ndarray) -> float:
        loss, self._dx = softmax_loss(logits, y)
        return loss

    __call__ = forward

    def backward(self) -> np.ndarray:
        return self._dx


class SGD:
    """SGD with momentum and L2 weight decay: v = momentum * v - lr * (grad + wd * w); w += v."""

    def __init__(self, params: list[Parameter], lr: float = 0.01, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got {lr}, {momentum}, "
                             f"{weight_decay}")
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._v = [np.zeros_like(p.data) for p in self.params]

    def step(self) -> None:
        for p, v in zip(self.params, self._v):
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            v *= self.momentum
            v -= (self.lr * g).astype(v.dtype, copy=False)
            p.data += v

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad[...] = 0
