"""The ``fastconv`` command: bench (the main job), check, info, demo."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any


class CliError(Exception):
    """An error reported as one line, without a traceback."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _suite_layers(option: str) -> list[str]:
    """The layer names of a --layers value (the suite's when empty; a set's name stands for its layers),
    each checked."""
    from . import _suite

    suite = [layer.name for layer in (*_suite.CONV_LAYERS, *_suite.POOL_LAYERS)]
    names = suite + [layer.name for layer in _suite.SHAPE_LAYERS]
    wanted = []
    for name in option.split(",") if option else suite:
        if name in _suite.LAYER_SETS:
            wanted += _suite.LAYER_SETS[name]
        elif name in names:
            wanted.append(name)
        else:
            raise CliError(f"--layers: unknown layer {name!r} ({', '.join(names)}; "
                           f"or {', '.join(_suite.LAYER_SETS)})")
    return wanted


def _check_output_path(path: str, option: str) -> None:
    """Refuse an output path that cannot be written before any work is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CliError(f"{option}: {path} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise CliError(f"{option}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CliError(f"{option}: cannot write in {folder}")


# ------------------------------------------------------------------------------------------ bench
def _fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:9.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:6.2f}x"


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    from . import _bench, _suite
    from ._threads import get_num_threads

    dtype = np.dtype(args.dtype)
    from ._registry import OPS

    ops = args.ops.split(",") if args.ops else list(OPS)
    for op in ops:
        if op not in OPS:
            raise CliError(f"--ops: unknown op {op!r} ({', '.join(OPS)})")
    wanted = _suite_layers(args.layers)
    conv_layers = [layer for layer in _suite.ALL_CONV_LAYERS if layer.name in wanted]
    pool_layers = [layer for layer in _suite.POOL_LAYERS if layer.name in wanted]
    for op in ops:
        if not (conv_layers if op == "conv2d" else pool_layers):
            kind = _suite.ALL_CONV_LAYERS if op == "conv2d" else _suite.POOL_LAYERS
            raise CliError(f"--layers: none of {', '.join(wanted)} is a {op} layer "
                           f"({op}'s layers: {', '.join(layer.name for layer in kind)})")
    known = sorted({m for op in ops for m in _bench.methods_for(op, include_naive=True)})
    for m in args.methods.split(",") if args.methods else []:
        if m not in known:
            raise CliError(f"--methods: unknown or unavailable method {m!r} ({', '.join(known)})")
    if args.repeats < 1:
        raise CliError(f"--repeats must be at least 1, got {args.repeats}")
    if args.json:
        _check_output_path(args.json, "--json")
    if args.plot:
        _check_output_path(args.plot, "--plot")
        from . import _chart

        missing = _chart.available()
        if missing:
            raise CliError(missing)
    rounds = 3 if args.quick else args.repeats
    threads = get_num_threads()
    _say(f"fastconv bench: {dtype.name}, {threads} threads, {rounds} interleaved rounds per layer")
    ceiling = _bench.gemm_ceiling(dtype)
    _say(f"GEMM ceiling (NumPy matmul, {dtype.name}): {ceiling:.0f} GFLOP/s")
    peer = None
    if not args.no_torch:
        started = _bench.start_torch_peer(threads)
        if isinstance(started, str):
            _say(started)
        else:
            peer = started
            _say(f"PyTorch {peer.version} timed in a separate process, interleaved with fastconv")
    records: list[dict[str, Any]] = []
    try:
        for op in ops:
            for layer in conv_layers if op == "conv2d" else pool_layers:
                methods = [m for m in _bench.methods_for(op, include_naive=True)
                           if not args.methods or m in args.methods.split(",")]
                if args.quick and layer.name not in ("seed001", "pool2"):
                    methods = [m for m in methods if m != "naive"]
                if not methods and not peer:
                    continue
                _say(f"  {op:10s} {layer.name:8s} {', '.join(methods)}{' + pytorch' if peer else ''}")
                records += _bench.bench_layer(op, layer, dtype, methods, rounds, peer)
    finally:
        if peer:
            peer.close()
    _print_tables(records, ops, ceiling)
    import fastconv

    result = {"version": fastconv.__version__, "machine": _machine(), "dtype": dtype.name,
              "threads": threads, "rounds": rounds, "gemm_gflops": ceiling,
              "torch": peer.version if peer else None, "records": records}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        _say(f"wrote {args.json}")
    if args.plot:
        from . import _chart

        _chart.draw(result, args.plot)
        _say(f"wrote {args.plot}")
    return 0


def _print_tables(records: list[dict[str, Any]], ops: list[str], ceiling: float) -> None:
    from ._table import render

    by = {(r["op"], r["layer"], r["method"]): r for r in records}
    for op in ops:
        rows = [r for r in records if r["op"] == op]
        if not rows:
            continue
        print(f"\n{op}  (times are medians; 'vs pytorch' > 1 means fastconv is faster)")
        conv = op == "conv2d"
        columns = [("layer", "<"), ("method", "<"), ("fwd ms", ">")]
        columns += [("GFLOP/s", ">"), ("%GEMM", ">")] if conv else [("x copy", ">")]
        columns += [("fwd+bwd ms", ">")] + ([("GFLOP/s", ">")] if conv else [("x copy", ">")])
        columns += [("vs naive", ">"), ("vs pytorch", ">"), ("(fwd+bwd)", ">"), ("compile s", ">")]
        table = []
        for layer in dict.fromkeys(r["layer"] for r in rows):
            naive = by.get((op, layer, "naive"))
            torch_rec = by.get((op, layer, "pytorch"))
            for r in [x for x in rows if x["layer"] == layer]:
                ext = "~" if naive and naive.get("extrapolated") else ""
                vs_naive = ("-" if not naive or r is naive
                            else ext + _ratio(naive["fwd_s"], r["fwd_s"]).strip())
                vs_t = "-" if r is torch_rec else _ratio(torch_rec and torch_rec["fwd_s"], r["fwd_s"])
                vs_tb = "-" if r is torch_rec else _ratio(torch_rec and torch_rec["fwdbwd_s"],
                                                          r["fwdbwd_s"])
                cells = [layer, r["method"] + ("~" if r.get("extrapolated") else ""), _fmt_ms(r["fwd_s"])]
                if conv:
                    cells += [f"{r['fwd_gflops']:.1f}", f"{100 * r['fwd_gflops'] / ceiling:.0f}%"]
                else:
                    cells += [_ratio(r["fwd_s"], r.get("copy_s"))]
                cells += [_fmt_ms(r["fwdbwd_s"])] + ([f"{r['fwdbwd_gflops']:.1f}"] if conv
                                                     else [_ratio(r["fwdbwd_s"], r.get("copy_s"))])
                cells += [vs_naive, vs_t, vs_tb, f"{r['compile_s']:.2f}"]
                table.append([c.strip() for c in cells])
        print(render(columns, table))
    print("\n~ : naive timed on a slice of the layer (1 image, 2 filters or channels) and scaled up; "
          "seed001's naive is timed whole.")


# ------------------------------------------------------------------------------------------ check
def cmd_check(args: argparse.Namespace) -> int:
    from ._check import TOLERANCE, run_check

    cases = 8 if args.quick else args.cases
    if cases < 1:
        raise CliError(f"--cases must be at least 1, got {cases}")
    t0 = time.perf_counter()
    rows = run_check(cases, seed=args.seed, progress=_say)
    print(f"{'op':11s} {'method':17s} {'dtype':8s} {'cases':>5s} {'fwd rel err':>12s} "
          f"{'bwd rel err':>12s} {'tolerance':>9s}  status")
    for r in rows:
        tol = TOLERANCE[__import__("numpy").dtype(r["dtype"])]
        print(f"{r['op']:11s} {r['method']:17s} {r['dtype']:8s} {r['cases']:5d} {r['fwd_err']:12.2e} "
              f"{r['bwd_err']:12.2e} {tol:9.0e}  {'ok' if r['ok'] else 'MISMATCH'}")
        if not r["ok"]:
            print(f"    worst case: {r['worst']}")
    bad = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(bad)} ok, {len(bad)} mismatched ({time.perf_counter() - t0:.1f} s)")
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------- info
def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features().flatten().split(",")
        info["cpu"] = llvm.get_host_cpu_name()
        info["simd"] = [f[1:] for f in feats if f.startswith("+") and f[1:] in (
            "sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512bf16",
            "avx512fp16", "amx-tile")]
    except Exception:  # pragma: no cover
        pass
    return info


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    import fastconv

    print(f"fastconv   {fastconv.__version__}")
    print(f"numpy      {np.__version__}")
    try:
        import llvmlite
        import numba

        from .jit import _isa, _numba  # noqa: F401 (_numba applies fastconv's numba settings)

        print(f"numba      {numba.__version__}")
        print(f"llvmlite   {llvmlite.__version__}")
        fastconv.max_pool2d_forward(np.zeros((1, 1, 2, 2), np.float32), 2, method="jit")
        from .jit import _threading

        layer = numba.threading_layer()
        threadsafe, forksafe = _threading.safety(layer)
        vendor = f", {_threading.omp_vendor()} OpenMP" if layer == "omp" else ""
        print(f"threading  {layer}{vendor}: {_threading.CHOICE}; "
              f"fork-safe: {'yes' if forksafe else 'no (use spawn or forkserver for worker processes)'}; "
              f"thread-safe: {'yes' if threadsafe else 'fastconv serializes its kernel launches'} "
              f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})")
        from .jit import _cache

        print(f"cache dir  {_cache.location().describe()}")
        print(f"cpu flags  {numba.config.CPU_FEATURES and '512-bit vectors preferred' or 'LLVM default'}; "
              f"register tiles sized for {_isa.target_isa()}")
    except Exception as exc:
        print(f"numba      not usable: {type(exc).__name__}: {exc}")
    print(f"threads    {fastconv.get_num_threads()}")
    if fastconv.BLAS_SLEEPS_AT_ONCE:
        print(f"blas idle  sleeps at once (OPENBLAS_THREAD_TIMEOUT={os.environ['OPENBLAS_THREAD_TIMEOUT']})")
    else:
        print("blas idle  spins ~0.1 s after each GEMM: this BLAS's thread pool could not be restarted; "
              "export OPENBLAS_THREAD_TIMEOUT=4 (numba kernels right after a GEMM ran up to 2x slower)")
    try:
        from threadpoolctl import threadpool_info

        for p in threadpool_info():
            print(f"pool       {p['user_api']}: {p['internal_api']} {p.get('version') or ''} "
                  f"{p['num_threads']} threads ({os.path.basename(p['filepath'])})")
    except ImportError:
        pass
    m = _machine()
    print(f"cpu        {m.get('cpu', '?')}, {m['cpus']} logical CPUs, SIMD: {' '.join(m.get('simd', []))}")
    print("methods    " + "; ".join(f"{op}: {', '.join(fastconv.available_methods(op))}"
                                      for op in fastconv.OPS))
    return 0


# ---------------------------------------------------------------------------------------- compile
def cmd_compile(args: argparse.Namespace) -> int:
    from . import _precompile
    from .jit import _cache, _isa, _numba  # noqa: F401 (_numba applies fastconv's numba settings)

    loc = _cache.location()
    if not loc.enabled:
        raise CliError(f"nothing would be kept: the disk cache is {loc.describe()}")
    wanted = _suite_layers(args.layers)
    if args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, got {args.jobs}")
    dtypes = [args.dtype] if args.dtype else ["float32", "float64"]
    work = _precompile.items(dtypes, wanted)
    _say(f"fastconv compile: {len(work)} calls ({', '.join(dtypes)}) on {args.jobs} processes, kernels for "
         f"this CPU ({_isa.target_isa()} tiles) into {loc.describe()}")
    t0 = time.perf_counter()
    failed = _precompile.compile_all(work, args.jobs, _say)
    for item, exc in failed:
        print(f"{item}: {type(exc).__name__}: {exc}")
    print(f"compiled for {len(work) - len(failed)} of {len(work)} calls in {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    if args.epochs < 1:
        raise CliError(f"--epochs must be at least 1, got {args.epochs}")
    if args.workers < 0:
        raise CliError(f"--workers must be 0 or more, got {args.workers}")
    if args.plot:
        _check_output_path(args.plot, "--plot")
        from . import _chart

        missing = _chart.available()
        if missing:
            raise CliError(missing)
    try:
        hist = demo.run(epochs=args.epochs, seed=args.seed, plot=args.plot, workers=args.workers)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    print(f"final test accuracy {hist['test_acc'][-1]:.3f} in {hist['seconds']:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fastconv", description=(
        "fastconv: hand-written CNN layers made fast. 'bench' times every method (and PyTorch when "
        "installed), 'check' compares every method with the naive reference, 'info' describes this "
        "machine's set-up."))
    from . import __version__

    ap.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time naive, jit, im2col (and PyTorch) on the layer suite")
    b.add_argument("--quick", action="store_true",
                   help="3 timed runs per figure, naive only on the smallest layers (under a minute "
                        "once kernels are compiled)")
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--ops", default=None, help="comma-separated ops to time (default: all)")
    b.add_argument("--layers", default="", help="comma-separated layer names (default: the suite; "
                                                "'shapes': the shape classes beyond it)")
    b.add_argument("--methods", default="", help="comma-separated methods (default: all available)")
    b.add_argument("--repeats", type=int, default=7,
                   help="interleaved timing rounds per layer (default 7; --quick: 3)")
    b.add_argument("--json", metavar="PATH", help="write every record as JSON")
    b.add_argument("--plot", metavar="PATH", help="draw a PNG chart (needs matplotlib)")
    b.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    b.set_defaults(func=cmd_bench)
    c = sub.add_parser("check", help="every method against naive (and PyTorch), forward and backward")
    c.add_argument("--quick", action="store_true", help="8 configurations per op instead of --cases")
    c.add_argument("--cases", type=int, default=40, help="random configurations per op (default 40)")
    c.add_argument("--seed", type=int, default=0, help="seed of the configuration grid")
    c.set_defaults(func=cmd_check)
    k = sub.add_parser("compile", help="compile the kernels of the layer suite ahead of time, into the "
                                       "disk cache (what bench and a first call would compile)")
    k.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: both")
    k.add_argument("--layers", default="", help="comma-separated layer names (default: the suite; "
                                                "'shapes': the shape classes beyond it)")
    k.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                   help="worker processes compiling at once (default: the CPUs, at most 4)")
    k.set_defaults(func=cmd_compile)
    i = sub.add_parser("info", help="versions, threading layer, thread count, cache, CPU features")
    i.set_defaults(func=cmd_info)
    d = sub.add_parser("demo", help="train a small CNN from fastconv.nn on scikit-learn's 8x8 digits")
    d.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    d.add_argument("--seed", type=int, default=0, help="seed of the initialization and shuffling")
    d.add_argument("--workers", type=int, default=0,
                   help="train data-parallel on a local Dask cluster of N worker processes (fastconv[dask])")
    d.add_argument("--plot", metavar="PATH", default=None,
                   help="write a PNG of the loss and accuracy curves (needs matplotlib)")
    d.set_defaults(func=cmd_demo)
    return ap


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; an option the subcommand does not know is reported with the subcommand's usage (argparse
    alone reports it with the top-level usage, which lists no options)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # inside the try: a closed pipe is met here, not at exit
        return status
    except BrokenPipeError:  # the reader went away (fastconv info | head -1): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except CliError as exc:
        print(f"fastconv: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastconv: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, not a traceback
        print(f"fastconv: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
