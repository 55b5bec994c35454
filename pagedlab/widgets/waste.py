"""Where the KV-cache memory goes: contiguous reservation (Orca) vs paging (lesson 03).

Serves the same synthetic workload with four memory managers and draws, for each, the pool
split into token states / reserved / internal / external fragmentation / idle, next to the
share of token states the PagedAttention paper measured (its Fig. 2).
See notebooks/03_where_memory_goes.ipynb.
"""
from __future__ import annotations

import ipywidgets as widgets

from .palette import BORDER, PART_COLOURS, figure_png, table, text_on

# The paper's Fig. 2: share of KV-cache memory holding token states (%).
PAPER_TOKEN_STATES = {"Orca (Max)": 20.4, "Orca (Pow2)": 26.8, "Orca (Oracle)": 38.2,
                      "vLLM (paged)": 96.3}
PARTS = ("token states", "reserved", "internal fragmentation", "external fragmentation", "idle")
HATCHES = {"token states": "", "reserved": "//", "internal fragmentation": "xx",
           "external fragmentation": "..", "idle": ""}


def memories(pool_tokens: int, block_size: int = 16, max_seq_len: int = 2048) -> dict:
    """Fresh memory managers of ``pool_tokens`` token slots each, by the paper's names."""
    from .. import BlockManager, ContiguousAllocator
    made = {f"Orca ({label})": ContiguousAllocator(pool_tokens, policy=policy,
                                                   max_seq_len=max_seq_len)
            for label, policy in (("Max", "max"), ("Pow2", "pow2"), ("Oracle", "oracle"))}
    made["vLLM (paged)"] = BlockManager(pool_tokens // block_size, block_size)
    return made


def compare(requests, pool_tokens: int = 64 * 1024, block_size: int = 16, progress=None) -> dict:
    """Simulate the requests with each memory manager: {name: SimResult}.

    ``progress``: called with (done, total) after each simulation.
    """
    from ..sim.simulator import simulate
    results, made = {}, memories(pool_tokens, block_size)
    for done, (name, memory) in enumerate(made.items(), start=1):
        results[name] = simulate(requests, memory)
        if progress:
            progress(done, len(made))
    return results


def shares(result) -> dict[str, float]:
    """The pool split of one SimResult, in percent, in PARTS order."""
    return {"token states": 100 * result.token_states, "reserved": 100 * result.reserved,
            "internal fragmentation": 100 * result.internal_fragmentation,
            "external fragmentation": 100 * result.external_fragmentation,
            "idle": 100 * result.idle}


def waste_figure(results: dict, paper: dict = PAPER_TOKEN_STATES, title: str = ""):
    """A matplotlib Figure: stacked bars of the pool per system, and the mean batch size."""
    from matplotlib.figure import Figure

    names = list(results)
    figure = Figure(figsize=(10, 0.75 * len(names) + 1.8))
    bars_axes, batch_axes = figure.subplots(1, 2, width_ratios=[3, 1], sharey=True)
    for row, name in enumerate(names):
        left = 0.0
        for part, value in shares(results[name]).items():
            colour = PART_COLOURS[part]
            bars_axes.barh(row, value, left=left, color=colour, hatch=HATCHES[part],
                           edgecolor="white", linewidth=0.5, label=part if row == 0 else None)
            if value >= 6:
                bars_axes.text(left + value / 2, row, f"{value:.0f}%", ha="center", va="center",
                               fontsize=8, color=text_on(colour))
            left += value
        if name in paper:
            bars_axes.plot(paper[name], row + 0.42, marker="v", color="black", markersize=7)
            bars_axes.text(paper[name], row + 0.44, f" paper {paper[name]}%", fontsize=7,
                           va="bottom")
    bars_axes.set_yticks(range(len(names)), names)
    bars_axes.invert_yaxis()
    bars_axes.set_xlim(0, 100)
    bars_axes.set_ylim(len(names) - 0.4, -0.8)
    bars_axes.set_xlabel("% of the KV-cache pool (averaged over the busy steps)")
    bars_axes.legend(ncol=3, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                     frameon=False)
    batch = [results[name].mean_batch_size for name in names]
    drawn = batch_axes.barh(range(len(names)), batch, color=PART_COLOURS["token states"])
    batch_axes.bar_label(drawn, fmt="%.0f", fontsize=8, padding=2)
    batch_axes.set_xlabel("mean batch size")
    batch_axes.set_xlim(0, max(batch) * 1.25 if max(batch) else 1)
    if title:
        figure.suptitle(title, fontsize=10, y=0.995)
    figure.tight_layout()
    return figure


def waste_table(results: dict, paper: dict = PAPER_TOKEN_STATES) -> str:
    """HTML table of the same numbers (and the paper's token-state shares)."""
    rows = []
    for name, result in results.items():
        split = shares(result)
        rows.append([name, f"<b>{split['token states']:.1f}%</b>",
                     f"{paper[name]}%" if name in paper else "-",
                     *(f"{split[p]:.1f}%" for p in PARTS[1:]),
                     f"{result.mean_batch_size:.1f}"])
    return table(["system", "token states", "paper", "reserved", "internal", "external", "idle",
                  "mean batch"], rows)


class WasteWidget(widgets.VBox):
    """Workload, block size and pool size controls; the four systems' breakdown redrawn."""

    POOLS = [("16K", 16 * 1024), ("32K", 32 * 1024), ("64K", 64 * 1024), ("128K", 128 * 1024)]

    def __init__(self, num_requests: int = 300, workload: str = "ShareGPT", block_size: int = 16,
                 pool_tokens: int = 64 * 1024, seed: int = 0):
        self.num_requests, self.seed = num_requests, seed
        style = {"description_width": "initial"}
        self.workload = widgets.Dropdown(options=["ShareGPT", "Alpaca"], value=workload,
                                         description="workload", style=style)
        self.block_size = widgets.Dropdown(options=[1, 4, 8, 16, 32, 64, 128], value=block_size,
                                           description="block size", style=style)
        self.pool = widgets.SelectionSlider(options=self.POOLS, value=pool_tokens,
                                            description="pool (token slots)",
                                            continuous_update=False, style=style)
        self.progress = widgets.IntProgress(value=0, min=0, max=4, description="simulating",
                                            style=style)
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        for control in (self.workload, self.block_size, self.pool):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([widgets.HBox([self.workload, self.block_size, self.pool],
                                       layout={"flex_flow": "row wrap"}),
                          self.progress, self.image, self.table])
        self.render()

    def render(self) -> None:
        """Re-run the four simulations for the current controls and redraw."""
        from .. import workloads
        make = workloads.sharegpt_like if self.workload.value == "ShareGPT" else workloads.alpaca_like
        requests = make(self.num_requests, seed=self.seed)
        self.progress.value = 0
        self.progress.bar_style = ""

        def advance(done, total):
            self.progress.value = done

        self.results = compare(requests, self.pool.value, self.block_size.value, advance)
        self.progress.bar_style = "success"
        title = (f"{self.num_requests} {self.workload.value}-like requests, pool of "
                 f"{self.pool.value} token slots, block size {self.block_size.value}")
        paper = PAPER_TOKEN_STATES if self.workload.value == "ShareGPT" else {}  # its Fig. 2
        self.image.value = figure_png(waste_figure(self.results, paper, title=title))
        self.table.value = (f'<div style="border-top:1px solid {BORDER};padding-top:4px">'
                            f"{title}</div>" + waste_table(self.results, paper))
