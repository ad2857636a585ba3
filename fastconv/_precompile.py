"""``fastconv compile``: compile the kernels the suite's layers use, ahead of time, into the disk cache.

Each work item runs one op's forward and backward with one method on one suite layer and dtype, which
compiles (or loads) every kernel that call needs. Items run in worker processes started with "spawn" (a
forked child of a process that has run numba's threads is not safe under every threading layer), so
several compile at once; the disk cache is safe for that (fastconv.jit._cache). A layer of another shape
may still compile a kernel on its first call: the tiles follow the channel counts.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    op: str
    layer: str
    dtype: str
    method: str

    def __str__(self) -> str:
        return f"{self.op} {self.layer} {self.dtype} {self.method}"


def items(dtypes: list[str], layers: list[str] | None = None) -> list[Item]:
    """Every (op, suite layer, dtype, method) but naive and auto (auto runs the other methods' kernels,
    on the same layer the same plans). The layers are the suite's whole: a slice of the batch could take
    another path (packed or not) than the benchmark's call."""
    from . import _suite
    from ._registry import OPS, available_methods

    found = []
    for dtype in dtypes:
        for op in OPS:
            convs = _suite.ALL_CONV_LAYERS if layers else _suite.CONV_LAYERS  # the shapes when named
            kind = convs if op == "conv2d" else _suite.POOL_LAYERS
            for layer in kind:
                if layers and layer.name not in layers:
                    continue
                for method in available_methods(op):
                    if method not in ("naive", "auto"):
                        found.append(Item(op, layer.name, dtype, method))
    return found


def run_item(item: Item) -> float:
    """Run one item (in a worker process); its wall time."""
    import numpy as np

    from . import _bench, _suite

    t0 = time.perf_counter()
    dtype = np.dtype(item.dtype)
    if item.op == "conv2d":
        layer = next(la for la in _suite.ALL_CONV_LAYERS if la.name == item.layer)
        _, fwdbwd = _bench.conv_calls(layer, dtype, item.method)
    else:
        pool = next(la for la in _suite.POOL_LAYERS if la.name == item.layer)
        _, fwdbwd = _bench.pool_calls(item.op, pool, dtype, item.method)
    fwdbwd()
    return time.perf_counter() - t0


def run(work: list[Item], jobs: int) -> Iterator[tuple[Item, float | BaseException]]:
    """Run the items on `jobs` worker processes; yield each (item, seconds or its exception) as it ends."""
    ctx = multiprocessing.get_context("spawn")
    before = os.environ.get("FASTCONV_QUIET")
    os.environ["FASTCONV_QUIET"] = "1"  # no compile note from each worker: the command says what it does
    try:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
        futures = {pool.submit(run_item, item): item for item in work}  # the workers start here
    finally:
        if before is None:
            del os.environ["FASTCONV_QUIET"]
        else:
            os.environ["FASTCONV_QUIET"] = before
    with pool:
        for fut in as_completed(futures):
            exc = fut.exception()
            yield futures[fut], exc if exc is not None else fut.result()


def progress_bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(1, total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def compile_all(work: list[Item], jobs: int, say: Callable[[str], None]) -> list[tuple[Item, BaseException]]:
    """Run every item, saying each as it ends with a progress bar; the items that failed."""
    failed = []
    t0 = time.perf_counter()
    for done, (item, result) in enumerate(run(work, jobs), 1):
        if isinstance(result, BaseException):
            failed.append((item, result))
            status = f"FAILED: {type(result).__name__}: {result}"
        else:
            status = f"{result:5.1f} s"
        say(f"{progress_bar(done, len(work))} {str(item):36s} {status}  ({time.perf_counter() - t0:.0f} s)")
    return failed
