"""Turn pytest-benchmark JSON (python -m pytest bench --benchmark-enable --benchmark-json F) into the
Markdown tables of README.md. Usage: python bench/make_table.py bench.json [--dtype float32]"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from fastconv._table import render


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    with open(args.json) as fh:
        data = json.load(fh)
    rows: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        op, layer, dtype, what = b["group"].split("|")
        if dtype != args.dtype:
            continue
        info = b.get("extra_info", {})
        median = info.get("peer_median_s", b["stats"]["median"])
        rows[(op, layer)].setdefault(info["method"], {})[what] = (median, info.get("flops"))
    machine = data.get("machine_info", {})
    print(f"Median times, {args.dtype}, {machine.get('cpu', {}).get('count', '?')} CPUs "
          f"({machine.get('cpu', {}).get('brand_raw', '?')}); ratio = PyTorch time / fastconv time.\n")
    columns = [("layer", "<"), ("method", "<"), ("fwd ms", ">"), ("fwd GFLOP/s", ">"),
               ("fwd vs PyTorch", ">"), ("fwd+bwd ms", ">"), ("fwd+bwd vs PyTorch", ">")]
    by_op: dict[str, list[list[str]]] = defaultdict(list)
    for (op, layer), methods in rows.items():
        peer = methods.get("pytorch", {})
        for method, r in methods.items():
            fwd, flops = r.get("fwd", (None, None))
            fb = r.get("fwdbwd", (None, None))[0]
            gf = f"{flops / fwd / 1e9:.0f}" if fwd and flops else "-"
            vs = f"{peer['fwd'][0] / fwd:.2f}x" if peer.get("fwd") and fwd and method != "pytorch" \
                else "-"
            vsb = f"{peer['fwdbwd'][0] / fb:.2f}x" if peer.get("fwdbwd") and fb and method != "pytorch" \
                else "-"
            ms = lambda t: f"{t * 1e3:.2f}" if t else "-"  # noqa: E731
            by_op[op].append([layer, method, ms(fwd), gf, vs, ms(fb), vsb])
    for op, table in by_op.items():
        title = "deeplearning.ai NHWC drop-in vs the NCHW API" if op == "dropin" else op
        print(f"\n**{title}**\n")
        print(render(columns, table, markdown=True))

if __name__ == "__main__":
    main()
