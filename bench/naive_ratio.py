"""jit vs naive on the seed001 layer, forward, timed in a warm loop: the figure of the jit issue's
"1000x naive" target. Usage: python bench/naive_ratio.py [--rounds 5] [--calls 50]

naive is timed whole (about 0.2 s a call), jit as the median of many consecutive calls. `fastconv bench`
times each method once per interleaved round instead, so its jit figure includes cold caches.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastconv
from fastconv import _suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="naive calls (default 5)")
    ap.add_argument("--calls", type=int, default=50, help="jit calls after each naive call")
    args = ap.parse_args()
    layer = {la.name: la for la in _suite.CONV_LAYERS}["seed001"]
    x, w, b, _ = layer.arrays(np.dtype(np.float32))

    def run(method: str) -> float:
        t = time.perf_counter()
        fastconv.conv2d_forward(x, w, b, method=method, **layer.kwargs)
        return time.perf_counter() - t

    run("jit")
    run("naive")
    naive, jit = [], []
    for _ in range(args.rounds):
        naive.append(run("naive"))
        jit += [run("jit") for _ in range(args.calls)]
    tn, tj = float(np.median(naive)), float(np.median(jit))
    print(f"seed001 forward, float32: naive {tn * 1e3:.1f} ms (median of {len(naive)}), "
          f"jit {tj * 1e3:.3f} ms (median of {len(jit)}): {tn / tj:.0f}x")


if __name__ == "__main__":
    main()
