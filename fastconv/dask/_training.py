"""Data-parallel training of ``fastconv.nn`` models over the workers of a ``dask.distributed.Client``,
and the worker set-up that keeps each worker's threads to its share of the cores."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from .. import nn


def _set_threads(dask_worker: Any) -> int:
    """On a worker: numba's and BLAS's threads = the worker's nthreads (Dask's nanny sets OpenMP, MKL
    and OpenBLAS to 1 thread in its workers, numba is left at one thread per core)."""
    import fastconv

    n = max(1, int(dask_worker.state.nthreads))
    fastconv.set_num_threads(n)
    return fastconv.get_num_threads()


def configure_workers(client: Any) -> dict[str, int]:
    """Set every current worker's fastconv thread count (numba and BLAS) to its ``nthreads``; returns
    {worker address: threads}. Workers that join later are not configured: call it again (or start
    workers with NUMBA_NUM_THREADS set in their environment)."""
    return client.run(_set_threads)


# numba does not release a worker's threads between tasks; the worker keeps one model per template so a
# step sends only the parameters.
_WORKER_MODELS: dict[str, nn.Module] = {}


def _shard_gradients(template_key: str, template: nn.Module, state: dict[str, np.ndarray], x: np.ndarray,
                     y: np.ndarray, seed: tuple[int, ...]) -> tuple[float, dict[str, np.ndarray]]:
    """On a worker: (mean loss, parameter gradients of the mean loss) of one shard."""
    model = _WORKER_MODELS.get(template_key)
    if model is None:
        model = _WORKER_MODELS[template_key] = copy.deepcopy(template)
    model.load_state_dict(state)
    model.train()
    for layer in _layers(model):
        if isinstance(layer, nn.Dropout):  # each shard and step its own stream
            layer.rng = np.random.default_rng(seed)
    loss_fn = nn.SoftmaxCrossEntropy()
    loss = loss_fn(model.forward(x), y)
    for p in model.parameters():
        p.grad[...] = 0
    model.backward(loss_fn.backward())
    return float(loss), {name: p.grad.copy() for name, p in model.named_parameters()}


def _layers(module: nn.Module) -> list[nn.Module]:
    return [module] + [m for child in module.children() for m in _layers(child)]


class DataParallel:
    """Synchronous data-parallel training of a ``fastconv.nn`` model (softmax cross-entropy loss).

    ``step(x, y)`` splits the batch into one shard per worker (in the workers' order, sizes as even as
    possible), computes each shard's gradients on its worker, sums them on the client weighted by the
    shard sizes — the gradient of the whole batch's mean loss — and applies one update with the
    optimizer. Without dropout the model after each step equals single-process training on the whole
    batch within float rounding; with dropout, each shard draws its own masks (seeded by ``seed``, the
    step and the shard), so the runs differ as two seeds do.

    The model's structure goes to the workers once; each step sends the parameters and the shards.
    """

    def __init__(self, client: Any, model: nn.Module, optimizer: Any, seed: int = 0):
        self.client = client
        self.model = model
        self.optimizer = optimizer
        self.seed = seed
        self.steps = 0
        self._key = f"fastconv-model-{id(model)}-{time.time_ns()}"
        self._template = client.scatter(copy.deepcopy(model), broadcast=True, hash=False)

    def workers(self) -> list[str]:
        return sorted(self.client.scheduler_info()["workers"])

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One update on the batch (x, y); returns the batch's mean loss before the update."""
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must hold the same, non-zero number of samples, got {len(x)} and "
                             f"{len(y)}")
        workers = self.workers()
        if not workers:
            raise RuntimeError("the client has no workers")
        bounds = np.linspace(0, len(x), min(len(workers), len(x)) + 1).astype(int)
        state = self.model.state_dict()
        [state_f] = self.client.scatter([state], broadcast=True, hash=False)  # a dict alone: one per key
        futures = []
        for shard, (i0, i1) in enumerate(zip(bounds[:-1], bounds[1:])):
            futures.append(self.client.submit(
                _shard_gradients, self._key, self._template, state_f, x[i0:i1], y[i0:i1],
                (self.seed, self.steps, shard), workers=[workers[shard]], allow_other_workers=True,
                pure=False))
        results = self.client.gather(futures)
        weights = np.diff(bounds) / len(x)
        loss = float(sum(wt * r[0] for wt, r in zip(weights, results)))
        for name, p in self.model.named_parameters():
            total = np.zeros_like(p.grad)
            for wt, (_, grads) in zip(weights, results):  # in shard order: deterministic
                total += (wt * grads[name]).astype(total.dtype, copy=False)
            p.grad[...] = total
        self.optimizer.step()
        self.steps += 1
        return loss
