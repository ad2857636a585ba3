"""``fastconv demo``: train a small CNN built from fastconv.nn on scikit-learn's 8x8 digits."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from . import nn


def build_model(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 4 x 4
        nn.Conv2d(16, 32, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 2 x 2
        nn.Flatten(), nn.Dropout(0.75, rng=rng), nn.Linear(128, 10, rng=rng),
    )


def run(epochs: int = 15, batch: int = 32, lr: float = 0.05, seed: int = 0, plot: str | None = None,
        log: Any = print, workers: int = 0) -> dict[str, Any]:
    """Train the demo network; returns the history (loss, train and test accuracy per epoch, seconds).

    workers > 0 trains data-parallel over a local Dask cluster of that many worker processes of 1
    thread each (fastconv.dask.DataParallel; needs fastconv[dask]). The network is far too small for
    that to pay (a step takes about a millisecond, less than a scheduler round trip): it shows how.
    """
    if workers:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise RuntimeError("--workers needs dask.distributed: pip install 'fastconv[dask]'") from exc
        environ = dict(os.environ)  # LocalCluster sets OMP/MKL/OPENBLAS_NUM_THREADS=1 here, for its workers
        try:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=":0") as cluster, Client(cluster) as client:
                return _run(epochs, batch, lr, seed, plot, log, client)
        finally:
            os.environ.clear()
            os.environ.update(environ)
    return _run(epochs, batch, lr, seed, plot, log, None)


def _run(epochs: int, batch: int, lr: float, seed: int, plot: str | None, log: Any,
         client: Any) -> dict[str, Any]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise RuntimeError("the demo needs scikit-learn: pip install 'fastconv[demo]'") from exc
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8), in [0, 1]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    x_mean = x[train].mean()
    x = x - x_mean
    model = build_model(rng)
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = nn.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    trainer = None
    if client is not None:
        from .dask import DataParallel, configure_workers

        configure_workers(client)
        trainer = DataParallel(client, model, opt, seed=seed)
    history: dict[str, list[float]] = {"loss": [], "train_acc": [], "test_acc": []}
    t0 = time.perf_counter()
    where = f" on {len(client.scheduler_info()['workers'])} Dask workers" if client is not None else ""
    log(f"training on {len(train)} digits, testing on {len(test)}; {epochs} epochs{where}")
    for epoch in range(1, epochs + 1):
        model.train()
        perm = rng.permutation(train)
        losses = []
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            if trainer is not None:
                losses.append(trainer.step(x[idx], y[idx]))
                continue
            losses.append(loss_fn(model.forward(x[idx]), y[idx]))
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        model.eval()
        train_acc = float((model.forward(x[train]).argmax(axis=1) == y[train]).mean())
        test_acc = float((model.forward(x[test]).argmax(axis=1) == y[test]).mean())
        history["loss"].append(float(np.mean(losses)))
        history["train_acc"].append(train_acc)
        history["test_acc"].append(test_acc)
        log(f"epoch {epoch:2d}  loss {history['loss'][-1]:.4f}  train acc {train_acc:.3f}  "
            f"test acc {test_acc:.3f}  ({time.perf_counter() - t0:.1f} s)")
    history["seconds"] = time.perf_counter() - t0  # type: ignore[assignment]
    if plot:
        _plot(history, plot, log)
    return history


def _plot(history: dict, path: str, log: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("the plot needs matplotlib: pip install matplotlib") from exc
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history["loss"]) + 1)
    a.plot(epochs, history["loss"])
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    b.plot(epochs, history["train_acc"], label="train")
    b.plot(epochs, history["test_acc"], label="test")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    log(f"wrote {path}")
