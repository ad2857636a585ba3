"""Interleaved A/B timing of fastconv under several configurations, each in its own persistent process.

A configuration is an environment (a threading layer, say) and optionally another source tree of
fastconv (a checkout of main, to compare a change against). Every round times each configuration once per
case, in an order that rotates from round to round; a figure is the median over rounds, and a ratio the
median of the per-round ratios against the first configuration (so the machine's drift cancels out).

    python bench/ab.py --config omp:NUMBA_THREADING_LAYER=omp --config wq:NUMBA_THREADING_LAYER=workqueue \\
        --cases conv2d:seed001:float32:fwd:jit,max_pool2d:pool3:float32:fwdbwd:jit
    python bench/ab.py --config main@/path/to/main-checkout --config change \\
        --cases max_pool2d:pool2:float32:fwd:jit

A case is op:layer:dtype:what:method, with what = fwd or fwdbwd and a suite layer name; each call is timed
as the best of --reps calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def peer() -> None:
    """The timed side: reads 'op layer dtype what method reps' lines, prints the best time of reps calls."""
    import numpy as np

    from fastconv import _bench
    from fastconv._suite import ALL_CONV_LAYERS, POOL_LAYERS

    layers = {layer.name: layer for layer in ALL_CONV_LAYERS + POOL_LAYERS}
    calls: dict = {}
    print("ready", flush=True)
    for line in sys.stdin:
        op, name, dtype, what, method, reps = line.split()
        key = (op, name, dtype, method)
        if key not in calls:
            if op == "conv2d":
                calls[key] = _bench.conv_calls(layers[name], np.dtype(dtype), method)
            else:
                calls[key] = _bench.pool_calls(op, layers[name], np.dtype(dtype), method)
        fn = calls[key][0 if what == "fwd" else 1]
        best = float("inf")
        for _ in range(int(reps)):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        print(best, flush=True)


def parse_config(text: str) -> tuple[str, dict[str, str], str | None]:
    """'name[@tree][:VAR=value[,VAR=value...]]' -> (name, environment, source tree)."""
    head, _, env_text = text.partition(":")
    name, _, tree = head.partition("@")
    env = dict(item.split("=", 1) for item in env_text.split(",") if item)
    return name, env, tree or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", required=True, help="name[@tree][:VAR=value,...]")
    ap.add_argument("--cases", required=True, help="comma-separated op:layer:dtype:what:method")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    procs = {}
    for text in args.config:
        name, env, tree = parse_config(text)
        full = dict(os.environ, **env)
        if tree:
            full["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + full.get("PYTHONPATH", "")
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--peer"], text=True, env=full,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tree or None)
        if not proc.stdout.readline().startswith("ready"):  # type: ignore[union-attr]
            raise SystemExit(f"configuration {name} did not start")
        procs[name] = proc

    def ask(proc: subprocess.Popen, case: list[str]) -> float:
        proc.stdin.write(" ".join(case + [str(args.reps)]) + "\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        return float(proc.stdout.readline())  # type: ignore[union-attr]

    names = list(procs)
    for case_text in args.cases.split(","):
        case = case_text.split(":")
        for n in names:
            ask(procs[n], case)  # first calls: compilation and warm-up
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            for n in names[r % len(names):] + names[: r % len(names)]:
                times[n].append(ask(procs[n], case))
        base = names[0]
        row = [case_text, f"{base} {statistics.median(times[base]) * 1e3:.3f} ms"]
        for n in names[1:]:
            ratio = statistics.median(b / t for b, t in zip(times[base], times[n]))
            row.append(f"{n} {statistics.median(times[n]) * 1e3:.3f} ms ({ratio:.3f}x)")
        print("  ".join(row), flush=True)
    for proc in procs.values():
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["--peer"]:
        peer()
    else:
        main()
