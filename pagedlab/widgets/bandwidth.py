"""Lesson 07's pictures of speed: bandwidth measured on a GPU, and paging's compiled cost anywhere.

Decode attention reads every key and value once, so its speed is best told as bandwidth: bytes
moved per second, next to the device's plain copy bandwidth (the ceiling). SDPA on contiguous K/V
is drawn as a baseline (a different kernel without paging), not as a bound. Without a GPU there is
no speed to draw; :func:`paging_cost_figure` draws what can be counted instead: the compiled loop's
instructions per context token for each block size (:mod:`pagedlab.kernel_facts`).
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
LABELS = {"sdpa contiguous": "SDPA, contiguous K/V (baseline)"}


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
        bars = axes.bar(xs, ys, width, label=LABELS.get(method, method), color=METHOD_COLOURS.get(method, "#999999"),
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


def paging_cost_figure(facts):
    """A matplotlib Figure: the decode loop's SASS instructions per context token, per block size
    and GPU, from :func:`pagedlab.kernel_facts.loop_facts` (counts, not times)."""
    from matplotlib.figure import Figure

    gpus = list(dict.fromkeys((f.arch, f.gpu) for f in facts))
    sizes = sorted({f.block_size for f in facts})
    colours = [OKABE_ITO["blue"], OKABE_ITO["orange"], OKABE_ITO["bluish green"]]
    width = 0.8 / max(1, len(gpus))
    figure = Figure(figsize=(8, 3.4))
    axes = figure.add_subplot()
    for i, (arch, gpu) in enumerate(gpus):
        per_size = {f.block_size: f for f in facts if f.arch == arch}
        xs = [j + (i - (len(gpus) - 1) / 2) * width for j in range(len(sizes))]
        ys = [per_size[s].instructions_per_token if s in per_size else 0.0 for s in sizes]
        bars = axes.bar(xs, ys, width, label=f"{gpu} ({arch})", color=colours[i % len(colours)],
                        hatch=("", "//", "..")[i % 3], edgecolor="black", linewidth=0.5)
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
    loads = {f.block_size: f.table_loads_per_token for f in facts}
    axes.set_xticks(range(len(sizes)), [f"block {s}\n1 block id per {round(1 / loads[s])} tokens"
                                        for s in sizes], fontsize=8)
    axes.set_ylim(0, 1.3 * max(f.instructions_per_token for f in facts))
    axes.set_ylabel("SASS instructions per token\n(per warp, decode loop)")
    axes.set_title("The decode kernel compiled ahead of time: what one context token costs "
                   "(counts, not times)", fontsize=10)
    axes.legend(fontsize=8, loc="upper center", ncol=len(gpus))
    figure.tight_layout()
    return figure


def paging_cost_png(facts) -> bytes:
    """:func:`paging_cost_figure` as PNG bytes."""
    return figure_png(paging_cost_figure(facts))
