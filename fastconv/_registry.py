"""The one table of implementations: ``REGISTRY[op][method]``.

The public API dispatches through it, the tests parametrize over it and ``bench/`` times it. Adding a
method is one entry here. Fast methods are named by module path and imported on first use, so that
``import fastconv`` loads neither numba nor any compiled code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._auto import choose
from ._backward import conv_backward, sum_bias_grad

OPS = ("conv2d", "max_pool2d", "avg_pool2d")


@dataclass(frozen=True)
class Method:
    """One implementation of one op: a module holding ``forward`` and ``backward`` functions.

    ``requires`` names the importable packages it needs; a method whose requirement does not import is
    not available, and calling it explicitly raises ImportError saying why. ``provides`` declares the
    module's other functions that callers may ask for by name (``hook``): for a conv, its gradients
    apart (``conv2d_backward_dx``, ``conv2d_backward_dw``, and where it has them its own
    ``conv2d_bias_grad`` and ``conv2d_backward_dw_db``), and the hooks method="auto" consults.
    """

    module: str
    forward_name: str
    backward_name: str
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def _load(self, name: str) -> Callable[..., Any]:
        fn = self._cache.get(name)
        if fn is None:
            fn = getattr(importlib.import_module(self.module), name)
            self._cache[name] = fn
        return fn

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The module's function ``name`` if the method declares it (``provides``), else None."""
        return self._load(name) if name in self.provides else None

    @property
    def forward(self) -> Callable[..., Any]:
        return self._load(self.forward_name)

    @property
    def backward(self) -> Callable[..., Any]:
        return self._load(self.backward_name)


@dataclass(frozen=True)
class SplitBackward:
    """A conv2d backward pass taking dx from one method and dw from another: what method="auto" picks
    where each gradient has a different fastest method. db comes with dw where dw's module computes them
    together (``conv2d_backward_dw_db``), else from whichever of the two modules has its own
    ``conv2d_bias_grad`` (dx's first), else NumPy's sum."""

    dx: Method
    dw: Method

    @property
    def requires(self) -> tuple[str, ...]:
        return self.dx.requires + self.dw.requires

    @property
    def backward(self) -> Callable[..., Any]:
        db_fn = self.dx.hook("conv2d_bias_grad") or self.dw.hook("conv2d_bias_grad") or sum_bias_grad
        return conv_backward(self.dx.hook("conv2d_backward_dx"), self.dw.hook("conv2d_backward_dw"),
                             db_fn, self.dw.hook("conv2d_backward_dw_db"))


def _entries(op: str, module: str, requires: tuple[str, ...] = (), provides: tuple[str, ...] = ()) -> Method:
    return Method(module, f"{op}_forward", f"{op}_backward", requires, provides)


_GRADIENTS = ("conv2d_backward_dx", "conv2d_backward_dw")


REGISTRY: dict[str, dict[str, Method]] = {
    "conv2d": {
        "naive": _entries("conv2d", "fastconv.naive"),
        "jit": _entries("conv2d", "fastconv.jit.conv", ("numba",),
                        (*_GRADIENTS, "conv2d_bias_grad", "conv2d_backward_dw_db", "column_waste")),
        "im2col": _entries("conv2d", "fastconv.im2col.conv", ("numba",), (*_GRADIENTS, "stacks_gemms")),
    },
    "max_pool2d": {
        "naive": _entries("max_pool2d", "fastconv.naive"),
        "jit": _entries("max_pool2d", "fastconv.jit.pool", ("numba",)),
    },
    "avg_pool2d": {
        "naive": _entries("avg_pool2d", "fastconv.naive"),
        "jit": _entries("avg_pool2d", "fastconv.jit.pool", ("numba",)),
    },
}

_import_errors: dict[str, str | None] = {}


def requirement_error(package: str) -> str | None:
    """None when ``package`` imports, else the reason it does not (remembered for the process)."""
    if package not in _import_errors:
        try:
            importlib.import_module(package)
            _import_errors[package] = None
        except Exception as exc:  # a broken install raises more than ImportError
            _import_errors[package] = f"{type(exc).__name__}: {exc}"
    return _import_errors[package]


def _check_op(op: str) -> dict[str, Method]:
    try:
        return REGISTRY[op]
    except KeyError:
        raise ValueError(f"op must be one of {OPS}, got {op!r}") from None


def available_methods(op: str) -> tuple[str, ...]:
    """The concrete methods of ``op`` that can run here (their requirements import)."""
    names = [name for name, m in _check_op(op).items()
             if all(requirement_error(p) is None for p in m.requires)]
    return tuple(names)


def auto_choice(op: str, geometry: Any, dtype: np.dtype, direction: str = "forward") -> str | tuple[str, str]:
    """What method="auto" runs for this call: a method's name, or for a conv2d backward pass possibly
    (dx's method, dw's method). fastconv.dask decides it once on the whole batch's geometry."""
    return choose(op, geometry, dtype, _check_op(op), available_methods(op), direction)


def resolve(op: str, method: object, geometry: Any, dtype: np.dtype,
            direction: str = "forward") -> Any:
    """The Method to call for ``method`` ("auto" or a concrete name; for auto's backward pass possibly
    a SplitBackward), raising clear errors."""
    table = _check_op(op)
    if method == "auto":
        method = auto_choice(op, geometry, dtype, direction)
    if isinstance(method, tuple) and op == "conv2d" and direction == "backward" and len(method) == 2:
        dx, dw = (resolve(op, m, geometry, dtype, direction) for m in method)  # (dx's method, dw's)
        if dx is dw:
            return dx
        split = [name for name, m in table.items() if all(g in m.provides for g in _GRADIENTS)]
        if not all(m in split for m in method):
            raise ValueError(f"a (dx, dw) method pair takes methods from {tuple(split)}, got {method!r}")
        return SplitBackward(dx, dw)
    if not isinstance(method, str) or method not in table:
        raise ValueError(
            f"method must be 'auto' or one of {tuple(table)} for {op}, got {method!r}"
        )
    impl = table[method]
    for package in impl.requires:
        reason = requirement_error(package)
        if reason is not None:
            raise ImportError(
                f"method={method!r} needs {package}, which does not import here ({reason}); "
                f"method='naive' works without it"
            )
    return impl
