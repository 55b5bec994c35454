"""Latency against request rate, the paper's Fig. 12, with chunked prefill's budget (lesson 05b).

Left: normalized latency (seconds per output token) against the request rate for the Orca
baselines and paged memory (chunked prefill off and on). Right: the 99th-percentile wait between
two tokens of an answer (p99 ITL) for the two paged schedules. Sliders move the token budget of
the chunked run and the rate the table reads at; every simulation is cached.
See notebooks/05b_chunked_prefill_and_latency.ipynb.
"""
from __future__ import annotations

import ipywidgets as widgets

from .palette import BORDER, OKABE_ITO, figure_png, table

STYLES = {  # system -> (colour, line style, marker): colour is never the only cue
    "Orca (Max)": (OKABE_ITO["vermillion"], ":", "v"),
    "Orca (Pow2)": (OKABE_ITO["orange"], "-.", "s"),
    "Orca (Oracle)": (OKABE_ITO["reddish purple"], "--", "D"),
    "paged": (OKABE_ITO["blue"], "-", "o"),
    "paged, chunked": (OKABE_ITO["bluish green"], "-", "^"),
}
BUDGETS = (64, 128, 256, 512, 1024, 2048)


def _label(system: str, curves) -> str:
    return f"paged, chunked ({curves.budget} tokens)" if system == "paged, chunked" else system


def latency_figure(curves, rate: float | None = None, title: str = ""):
    """A matplotlib Figure of a :class:`~pagedlab.sim.curves.LatencyCurves`: normalized latency
    of every system (left), p99 inter-token latency of the paged ones (right); ``rate`` marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    for system in curves.points:
        colour, line, marker = STYLES.get(system, ("black", "-", "."))
        left.plot(curves.rates, curves.values(system), color=colour, linestyle=line,
                  marker=marker, label=_label(system, curves))
        if system.startswith("paged"):
            right.plot(curves.rates, [1000 * v for v in curves.values(system, "p99_itl")],
                       color=colour, linestyle=line, marker=marker, label=_label(system, curves))
    left.set_xlabel("request rate (req/s)")
    left.set_ylabel("normalized latency (s/token)")
    left.set_ylim(bottom=0)
    left.legend(fontsize=8, loc="upper left")
    right.set_xlabel("request rate (req/s)")
    right.set_ylabel("p99 inter-token latency (ms)")
    right.set_ylim(bottom=0)
    right.legend(fontsize=8, loc="upper left")
    if rate is not None:
        for axes in (left, right):
            axes.axvline(rate, color="grey", linewidth=1)
    figure.suptitle(title or f"{curves.num_requests} ShareGPT-like requests, "
                    f"{curves.pool_tokens} KV slots (simulated OPT-13B on an A100)", fontsize=10)
    figure.tight_layout()
    return figure


def latency_table(curves, rate: float) -> str:
    """HTML: every system's latencies at one of the swept rates."""
    rows = []
    for system in curves.points:
        p = curves.at(system, rate)
        rows.append([_label(system, curves), f"{1000 * p.normalized_latency:.0f} ms",
                     f"{p.mean_ttft:.2f} s", f"{p.p99_ttft:.2f} s", f"{1000 * p.mean_tpot:.0f} ms",
                     f"{1000 * p.p99_itl:.0f} ms", f"{p.mean_batch_size:.1f}", str(p.preemptions)])
    return table(["system", "normalized latency", "mean TTFT", "p99 TTFT", "mean TPOT", "p99 ITL",
                  "mean batch", "preemptions"], rows)


class LatencyWidget(widgets.VBox):
    """Token budget and request rate sliders; the latency curves and a table at that rate."""

    def __init__(self, num_requests: int = 300, rates=None, budget: int = 512,
                 rate: float | None = None, seed: int = 0):
        from ..sim.curves import RATES
        self.num_requests, self.seed = num_requests, seed
        self.rates = tuple(float(r) for r in (rates or RATES))
        style = {"description_width": "initial"}
        self.budget = widgets.SelectionSlider(options=list(BUDGETS), value=budget,
                                              description="token budget (chunked)",
                                              continuous_update=False, style=style)
        self.rate = widgets.SelectionSlider(options=list(self.rates),
                                            value=self.rates[len(self.rates) // 2]
                                            if rate is None else float(rate),
                                            description="request rate (req/s)",
                                            continuous_update=False, style=style)
        self.image = widgets.Image(format="png")
        self.summary = widgets.HTML()
        self.budget.observe(lambda _: self.render(), names="value")
        self.rate.observe(lambda _: self.render(), names="value")
        super().__init__([widgets.HBox([self.budget, self.rate], layout={"flex_flow": "row wrap"}),
                          self.image, self.summary])
        self.render()

    def render(self) -> None:
        """Simulate what is not cached yet, redraw, and write the table at the chosen rate."""
        from ..sim.curves import latency_curves
        self.curves = latency_curves(self.rates, self.num_requests, budget=self.budget.value,
                                     seed=self.seed)
        rate = self.rate.value
        self.image.value = figure_png(latency_figure(self.curves, rate))
        paged, chunked = self.curves.at("paged", rate), self.curves.at("paged, chunked", rate)
        note = (f"At {rate:g} req/s, budget {self.budget.value}: chunked prefill's p99 ITL "
                f"{1000 * chunked.p99_itl:.0f} ms against {1000 * paged.p99_itl:.0f} ms with whole "
                f"prompts; mean TTFT {chunked.mean_ttft:.2f} s against {paged.mean_ttft:.2f} s.")
        self.summary.value = (f'<div style="border-top:1px solid {BORDER}">{note}</div>'
                              + latency_table(self.curves, rate))
