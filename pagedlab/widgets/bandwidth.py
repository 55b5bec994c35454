"""The benchmark's picture: memory bandwidth of each attention method, per shape (lesson 07).

Decode attention reads every key and value once, so its speed is best told as bandwidth: bytes
moved per second, next to the device's plain copy bandwidth (the ceiling).
See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

from .palette import OKABE_ITO, figure_png

METHOD_COLOURS = {
    "paged kernel": OKABE_ITO["bluish green"],
    "sdpa contiguous": OKABE_ITO["sky blue"],
    "gather + sdpa": OKABE_ITO["vermillion"],
    "flex paged": OKABE_ITO["reddish purple"],
}
HATCHES = {"paged kernel": "", "sdpa contiguous": "//", "gather + sdpa": "..", "flex paged": "xx"}


def bandwidth_figure(result: dict):
    """A matplotlib Figure: GB/s per (batch, context) and method, from ``pagedlab.tools.bench.run``."""
    from matplotlib.figure import Figure

    rows = [r for r in result["results"] if "GBps" in r]
    shapes = list(dict.fromkeys((r["batch"], r["context"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / max(1, len(methods))
    figure = Figure(figsize=(8, 3.6))
    axes = figure.add_subplot()
    for i, method in enumerate(methods):
        values = {(r["batch"], r["context"]): r["GBps"] for r in rows if r["method"] == method}
        xs = [s + (i - (len(methods) - 1) / 2) * width for s in range(len(shapes))]
        ys = [values.get(shape, 0.0) for shape in shapes]
        bars = axes.bar(xs, ys, width, label=method, color=METHOD_COLOURS.get(method, "#999999"),
                        hatch=HATCHES.get(method, ""), edgecolor="black", linewidth=0.5)
        axes.bar_label(bars, fmt="%.3g", fontsize=7)
    copy = result.get("copy_bandwidth_GBps")
    if copy:
        axes.axhline(copy, color="black", linestyle="--", linewidth=1)
        axes.text(len(shapes) - 0.5, copy, f" copy {copy:.3g} GB/s", va="bottom", ha="right",
                  fontsize=8)
    axes.set_xticks(range(len(shapes)), [f"batch {b}\ncontext {c}" for b, c in shapes])
    measured = [r["GBps"] for r in rows if r["GBps"] > 0]
    if measured and max(measured) / min(measured) > 100:  # e.g. the interpreter: show every bar
        axes.set_yscale("log")
    axes.set_ylabel("GB/s (higher is better)")
    axes.set_title(f"{result.get('device', '?')}, {result.get('dtype', '')}", fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return figure


def bandwidth_png(result: dict) -> bytes:
    """The bandwidth figure as PNG bytes (for IPython.display.Image or an ipywidgets Image)."""
    return figure_png(bandwidth_figure(result))
