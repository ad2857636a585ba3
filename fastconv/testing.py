"""Tools for users checking their own layer code: CS231n's numerical gradients and relative error, and a
one-call comparison of a hand-written conv or pool function with fastconv's reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _api
from ._check import rel_err
from ._checkgrid import conv_case, pool_case

__all__ = ["CheckReport", "check_layer", "eval_numerical_gradient", "eval_numerical_gradient_array",
           "rel_error"]


def rel_error(x: Any, y: Any) -> float:
    """CS231n's relative error: max |x - y| / max(1e-8, |x| + |y|)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _centered(f: Callable[[np.ndarray], Any], x: np.ndarray, h: float):
    """For each element of x: its index, f(x + h) and f(x - h) (x is perturbed in place and restored)."""
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(x), copy=True)
        x[ix] = old - h
        neg = np.array(f(x), copy=True)
        x[ix] = old
        yield ix, pos, neg
        it.iternext()


def eval_numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, verbose: bool = True,
                            h: float = 1e-5) -> np.ndarray:
    """Centered-difference gradient of the scalar f at x (x is perturbed in place and restored).

    As in CS231n, ``verbose`` prints each index and its gradient."""
    grad = np.zeros_like(x)
    for ix, pos, neg in _centered(f, x, h):
        grad[ix] = (pos - neg) / (2 * h)
        if verbose:
            print(ix, grad[ix])
    return grad


def eval_numerical_gradient_array(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray,
                                  h: float = 1e-5) -> np.ndarray:
    """Numerical gradient of sum(f(x) * df) with respect to x, for a function returning an array."""
    grad = np.zeros_like(x)
    for ix, pos, neg in _centered(f, x, h):
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
    return grad


@dataclass
class CheckReport:
    """What check_layer found: the worst relative error and the configuration that produced it."""

    op: str
    cases: int
    worst_error: float = 0.0
    worst_case: dict = field(default_factory=dict)
    tolerance: float = 1e-7
    failures: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures and self.worst_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return (f"{self.op}: {verdict} over {self.cases} configurations; worst relative error "
                f"{self.worst_error:.3g} at {self.worst_case}"
                + (f"; {len(self.failures)} raised: {self.failures[0]}" if self.failures else ""))


def check_layer(forward: Callable[..., Any], op: str = "conv", backward: Callable[..., Any] | None = None,
                cases: int = 20, seed: int = 0, tolerance: float = 1e-7) -> CheckReport:
    """Compare a hand-written CS231n-style layer with fastconv's reference on random configurations.

    op "conv": forward(x, w, b, conv_param) -> out or (out, cache), backward(dout, cache) -> (dx, dw, db);
    op "max_pool" / "avg_pool": forward(x, pool_param) -> out or (out, cache), backward(dout, cache) -> dx.
    Configurations use the parameters those signatures can express (square stride, symmetric padding,
    no dilation or groups); inputs are float64. Returns a CheckReport (``passed``, ``worst_error``, ...).
    """
    if op not in ("conv", "max_pool", "avg_pool"):
        raise ValueError(f"op must be 'conv', 'max_pool' or 'avg_pool', got {op!r}")
    rng = np.random.default_rng(seed)
    report = CheckReport(op, cases, tolerance=tolerance)
    done = 0
    while done < cases:
        if op == "conv":
            xs, ws, kw, _ = conv_case(rng)
            s, p = kw["stride"], kw["padding"]
            if kw["groups"] != 1 or kw["dilation"] != (1, 1) or s[0] != s[1] or not isinstance(p, int):
                continue
            x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
            param = {"stride": s[0], "pad": p}
            ref = _api.conv2d_forward(x, w, b, stride=s, padding=p, method="naive")
            args: tuple = (x, w, b, param)
        else:
            fastop = "max_pool2d" if op == "max_pool" else "avg_pool2d"
            xs, kw = pool_case(rng, fastop)
            if kw["padding"] != (0, 0) or kw["ceil_mode"] or kw.get("dilation", (1, 1)) != (1, 1):
                continue
            k, s = kw["kernel_size"], kw["stride"]
            x = rng.standard_normal(xs)
            param = {"pool_height": k[0], "pool_width": k[1], "stride": s[0]}
            if s[0] != s[1]:
                continue
            ref = getattr(_api, f"{fastop}_forward")(x, k, stride=s, method="naive")
            args = (x, param)
        done += 1
        case = {"x": x.shape, **({"w": w.shape} if op == "conv" else {}), "param": param}
        try:
            got = forward(*args)
            cache = None
            if isinstance(got, tuple):
                got, cache = got
            errors = [rel_err(np.asarray(got, dtype=np.float64), ref)]
            if backward is not None:
                dout = rng.standard_normal(ref.shape)
                if op == "conv":
                    exp = _api.conv2d_backward(dout, x, w, stride=param["stride"], padding=param["pad"],
                                               method="naive")
                    errors += [rel_err(np.asarray(a, dtype=np.float64), e)
                               for a, e in zip(backward(dout, cache), exp)]
                else:
                    exp = getattr(_api, f"{fastop}_backward")(dout, x, k, stride=s, method="naive")
                    errors.append(rel_err(np.asarray(backward(dout, cache), dtype=np.float64), exp))
        except Exception as exc:  # a user's function that raises is a finding, not a crash
            report.failures.append(f"{case}: {type(exc).__name__}: {exc}")
            continue
        if max(errors) >= report.worst_error:
            report.worst_error, report.worst_case = max(errors), case
    return report
