"""The scheduler over time: batch size, queue and pool, with preemptions marked (lesson 05).

Runs the serving simulator on requests arriving as a Poisson process and plots its per-step
timeline. Sliders change the pool size, the arrival rate and the watermark.
See notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

import ipywidgets as widgets

from .palette import BORDER, OKABE_ITO, PART_COLOURS, figure_png, table


def timeline_figure(result, title: str = ""):
    """A matplotlib Figure of a SimResult's timeline: batch and queue on top, pool below."""
    from matplotlib.figure import Figure

    timeline = result.timeline
    steps = range(len(timeline.batch_size))
    figure = Figure(figsize=(11, 4.6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(steps, timeline.batch_size, color=OKABE_ITO["blue"], label="running (batch size)")
    top.plot(steps, timeline.waiting, color=OKABE_ITO["vermillion"], linestyle="--",
             label="waiting (queue)")
    top.set_ylabel("requests")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    token = [100 * x for x in timeline.token_states]
    tail = [100 * x for x in timeline.internal_fragmentation]
    bottom.stackplot(steps, token, tail, colors=[PART_COLOURS["token states"],
                                                 PART_COLOURS["internal fragmentation"]],
                     labels=["token states", "internal fragmentation\n(last blocks)"])
    bottom.set_ylim(0, 105)
    bottom.set_ylabel("% of the pool")
    bottom.set_xlabel("step")
    # A preemption is a step where the running count of preemptions went up.
    marks = [s for s in steps[1:] if timeline.preemptions[s] > timeline.preemptions[s - 1]]
    if timeline.preemptions and timeline.preemptions[0]:
        marks.insert(0, 0)
    if marks:
        bottom.plot(marks, [102] * len(marks), linestyle="none", marker="|", markersize=9,
                    color="black", label=f"preemption ({result.preemptions} in all)")
    bottom.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def summary_table(result) -> str:
    """HTML: the numbers behind the timeline."""
    return table(["steps", "finished", "preemptions", "mean batch", "max batch", "token states"],
                 [[str(result.steps), str(result.finished), str(result.preemptions),
                   f"{result.mean_batch_size:.1f}", str(result.max_batch_size),
                   f"{100 * result.token_states:.1f}%"]])


class TimelineWidget(widgets.VBox):
    """Pool size, arrival rate and watermark sliders; the simulated timeline redrawn."""

    def __init__(self, num_requests: int = 150, num_blocks: int = 512, rate: float = 1.0,
                 watermark: float = 0.0, block_size: int = 16, seed: int = 0):
        self.num_requests, self.block_size, self.seed = num_requests, block_size, seed
        style = {"description_width": "initial"}
        self.num_blocks = widgets.IntSlider(value=num_blocks, min=128, max=2048, step=128,
                                            description="pool (blocks of 16)",
                                            continuous_update=False, style=style)
        self.rate = widgets.FloatSlider(value=rate, min=0.1, max=4.0, step=0.1,
                                        description="arrivals per step", readout_format=".1f",
                                        continuous_update=False, style=style)
        self.watermark = widgets.SelectionSlider(options=[("0%", 0.0), ("1%", 0.01), ("5%", 0.05),
                                                          ("10%", 0.1)], value=watermark,
                                                 description="watermark", style=style,
                                                 continuous_update=False)
        self.image = widgets.Image(format="png")
        self.summary = widgets.HTML()
        for control in (self.num_blocks, self.rate, self.watermark):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([widgets.HBox([self.num_blocks, self.rate, self.watermark],
                                       layout={"flex_flow": "row wrap"}),
                          self.image, self.summary])
        self.render()

    def render(self) -> None:
        """Simulate with the current sliders and redraw the timeline."""
        from .. import BlockManager, workloads
        from ..sim.simulator import simulate
        requests = workloads.sharegpt_like(self.num_requests, seed=self.seed, rate=self.rate.value)
        manager = BlockManager(self.num_blocks.value, self.block_size,
                               watermark=self.watermark.value)
        self.result = simulate(requests, manager)
        title = (f"{self.num_requests} ShareGPT-like requests at {self.rate.value:.1f} per step, "
                 f"{self.num_blocks.value} blocks, watermark {100 * self.watermark.value:.0f}%")
        self.image.value = figure_png(timeline_figure(self.result, title))
        self.summary.value = (f'<div style="border-top:1px solid {BORDER}">{title}</div>'
                              + summary_table(self.result))
