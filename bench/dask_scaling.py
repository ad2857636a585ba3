"""Images per second of fastconv.dask against the single-process functions, on one machine.

    python bench/dask_scaling.py                      # forward on 256 vgg images, and training steps
    python bench/dask_scaling.py --what forward --rounds 7
    python bench/dask_scaling.py --scheduler tcp://host:8786   # a real cluster instead of a LocalCluster

Forward: the vgg suite layer (64 channels of 32 x 32, 64 filters of 3 x 3, padding 1, float32) on a batch
of --batch images held on the workers in chunks of --chunk, computed and kept there (persist), against
fastconv.conv2d_forward on the whole batch in this process with 1 and 2 threads. Training: steps of
--steps-batch images of 3 x 32 x 32 through conv layers of vgg-suite size (DataParallel against the
same model trained in this process). Each figure is the median of --rounds rounds; the configurations
take turns round by round. A LocalCluster of 1 worker process and one of 2 (1 thread each) run one after
the other, so that idle workers of one do not share the cores with the other.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _model(seed: int = 0):
    from fastconv import nn

    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10, rng=rng))


def _local_step(model, opt, x, y) -> None:
    from fastconv import nn

    loss_fn = nn.SoftmaxCrossEntropy()
    loss_fn(model.forward(x), y)
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=("forward", "training", "both"), default="both")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--steps-batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--worker-numba-threads", action="store_true",
                    help="start the LocalCluster workers with NUMBA_NUM_THREADS=1 (numba's pool sized to "
                         "the worker instead of the machine)")
    ap.add_argument("--scheduler", default=None,
                    help="address of a running scheduler (default: LocalClusters)")
    args = ap.parse_args()

    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import fastconv
    import fastconv.dask as fd
    from fastconv import nn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 64, 32, 32)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    xs = rng.standard_normal((args.steps_batch, 3, 32, 32)).astype(np.float32)
    ys = rng.integers(0, 10, args.steps_batch)
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    def single(threads: int) -> None:
        fastconv.set_num_threads(threads)
        if args.what in ("forward", "both"):
            record(f"forward, this process, {threads} thread(s)",
                   _timed(lambda: fastconv.conv2d_forward(x, w, padding=1)))
        if args.what in ("training", "both"):
            model = _model()
            opt = nn.SGD(model.parameters(), lr=0.01)
            _local_step(model, opt, xs, ys)  # warm
            record(f"training, this process, {threads} thread(s)",
                   _timed(lambda: _local_step(model, opt, xs, ys)))

    def cluster(client: Client, label: str) -> None:
        fd.configure_workers(client)
        if args.what in ("forward", "both"):
            # the batch held on the workers, as a data set would be: chunks scattered round robin (the
            # scheduler alone placed 5 of 8 on one worker, which then did 5/8 of the work)
            workers = sorted(client.scheduler_info()["workers"])
            blocks = [x[i:i + args.chunk] for i in range(0, len(x), args.chunk)]
            futures = [client.scatter(b, workers=[workers[i % len(workers)]]) for i, b in enumerate(blocks)]
            xd = da.concatenate([da.from_delayed(f, shape=b.shape, dtype=b.dtype)
                                 for f, b in zip(futures, blocks)])
            out = fd.conv2d_forward(xd, w, padding=1)
            wait(client.persist(out))  # warm: compile or load the kernels on every worker
            for _ in range(args.rounds):
                for threads in (1, 2):
                    single(threads)
                record(f"forward, {label}", _timed(lambda: wait(client.persist(out))))
        if args.what in ("training", "both"):
            model = _model()
            trainer = fd.DataParallel(client, model, nn.SGD(model.parameters(), lr=0.01))
            trainer.step(xs, ys)  # warm
            for _ in range(args.rounds):
                if args.what == "training":
                    for threads in (1, 2):
                        single(threads)
                record(f"training, {label}", _timed(lambda: trainer.step(xs, ys)))

    if args.scheduler:
        with Client(args.scheduler) as client:
            cluster(client, f"{len(client.scheduler_info()['workers'])} workers at {args.scheduler}")
    else:
        for n in (1, 2):
            env = {"NUMBA_NUM_THREADS": "1"} if args.worker_numba_threads else {}
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, env=env,
                              dashboard_address=":0") as lc, Client(lc) as client:
                cluster(client, f"{n} worker process(es) x 1 thread")
    print(f"fastconv {fastconv.__version__}; medians of {args.rounds} rounds")
    for name, ts in times.items():
        n = args.batch if name.startswith("forward") else args.steps_batch
        med = statistics.median(ts)
        print(f"  {name:48s} {med * 1e3:9.1f} ms  {n / med:8.1f} images/s  ({len(ts)} runs)")


if __name__ == "__main__":
    main()
