"""The chart of ``fastconv bench --plot``: conv GFLOP/s per layer and method, PyTorch beside them and
NumPy's GEMM rate as the line to reach; pools in copies of their input, a memory copy being the floor.

matplotlib is optional: ``available()`` says whether a chart can be drawn, so the command line can refuse
``--plot`` before it benchmarks anything.
"""

from __future__ import annotations

from typing import Any


def available() -> str | None:
    """None if matplotlib can draw a PNG here, else what to install."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib: pip install matplotlib (or 'fastconv[demo]')"
    return None


# one colour per method in every panel
_COLORS = {"naive": "tab:gray", "jit": "tab:blue", "im2col": "tab:orange", "auto": "tab:green",
           "pytorch": "tab:red"}


def _bars(ax: Any, records: list[dict[str, Any]], value: Any) -> None:
    """Grouped bars: one group per layer, one bar per method (PyTorch last, hatched)."""
    layers = list(dict.fromkeys(r["layer"] for r in records))
    methods = [m for m in dict.fromkeys(r["method"] for r in records) if m != "pytorch"]
    if any(r["method"] == "pytorch" for r in records):
        methods.append("pytorch")
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        vals = [next((value(r) for r in records if r["layer"] == la and r["method"] == m), 0.0)
                for la in layers]
        ax.bar([j + i * width for j in range(len(layers))], vals, width, label=m, color=_COLORS.get(m),
               hatch="//" if m == "pytorch" else None, edgecolor="black" if m == "pytorch" else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers)
    ax.set_xlabel("suite layer (shapes: README, 'The layer suite')")


def draw(result: dict[str, Any], path: str) -> None:
    """Write the chart of one ``fastconv bench`` result (the dict it writes with --json) to path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in result["records"] if r["method"] != "naive"]
    convs = [r for r in records if r["op"] == "conv2d"]
    pools = [r for r in records if r["op"] != "conv2d" and r.get("copy_s")]
    rows = [("conv2d", convs)] if convs else []
    rows += [(op, [r for r in pools if r["op"] == op]) for op in dict.fromkeys(r["op"] for r in pools)]
    if not rows:
        raise ValueError("nothing to plot: no conv2d or pool records")
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 4.2 * len(rows)), squeeze=False)
    dtype = result["dtype"]
    for (op, recs), (left, right) in zip(rows, axes):
        for ax, what, title in ((left, "fwd", "forward"), (right, "fwdbwd", "forward + backward")):
            if op == "conv2d":
                _bars(ax, recs, lambda r, w=what: r[f"{w}_gflops"])
                ax.axhline(result["gemm_gflops"], color="black", linestyle="--", linewidth=1,
                           label=f"NumPy GEMM {result['gemm_gflops']:.0f}")
                ax.set_ylabel(f"GFLOP/s ({dtype}, higher is better)")
            else:
                _bars(ax, recs, lambda r, w=what: r[f"{w}_s"] / r["copy_s"])
                ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="np.copyto of the input")
                ax.set_ylabel("time in copies of the input (lower is better)")
            ax.set_title(f"{op} {title}, {dtype}")
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
    m = result.get("machine", {})
    peer = f"; PyTorch {result['torch']} in its own process" if result.get("torch") else ""
    fig.suptitle(f"fastconv {result.get('version', '')} on {m.get('cpu', '?')} "
                 f"({' '.join(m.get('simd', [])) or 'SIMD unknown'}), {result['threads']} threads, "
                 f"medians of {result['rounds']} interleaved rounds{peer}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
