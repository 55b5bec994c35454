"""Live pool usage while the engine generates (lesson 08).

A button serves a batch of prompts with :class:`~pagedlab.LLMEngine`; after every engine step
the widget redraws the pool (who holds each block), a usage bar and the step's numbers, then
plots usage over the whole run. See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from .palette import BORDER, OKABE_ITO, cell, chip, colour_of, figure_png, letter_of, table


def pool_html(manager, max_blocks: int = 128) -> str:
    """HTML: one small box per block, labelled with the request holding it (or free)."""
    owner: dict[int, list[int]] = {}
    for seq in manager.sequences:
        for block in seq.block_table:
            owner.setdefault(block, []).append(seq.seq_id)
    boxes = []
    for block in range(min(manager.num_blocks, max_blocks)):
        ids = owner.get(block)
        if not ids:
            boxes.append(cell(f"{block}<br>&middot;", None, width="2.6em"))
        else:
            label = letter_of(ids[0] + 1) + ("+" if len(ids) > 1 else "")
            boxes.append(cell(f"{block}<br><b>{label}</b>", colour_of(ids[0] + 1), width="2.6em",
                              title=f"block {block}: request(s) {ids}"))
    more = "" if manager.num_blocks <= max_blocks else f" (first {max_blocks} shown)"
    return f"<div>pool: {manager.num_blocks} blocks{more}; letter = request</div>" + "".join(boxes)


def usage_figure(usage: list[float], batch: list[int], preempted_steps: list[int]):
    """A matplotlib Figure: pool usage (%) and batch size per engine step."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 2.8))
    axes = figure.add_subplot()
    steps = range(len(usage))
    axes.fill_between(steps, [100 * u for u in usage], color=OKABE_ITO["bluish green"],
                      alpha=0.8, label="pool in use (%)")
    axes.set_ylim(0, 105)
    axes.set_ylabel("% of the pool")
    axes.set_xlabel("engine step")
    twin = axes.twinx()
    twin.step(steps, batch, where="mid", color=OKABE_ITO["blue"], label="batch (sequences)")
    twin.set_ylabel("sequences")
    twin.set_ylim(0, max(batch + [1]) * 1.3)
    if preempted_steps:
        axes.plot(preempted_steps, [102] * len(preempted_steps), "|", color="black",
                  markersize=9, label="preemption")
    lines = axes.get_legend_handles_labels()
    twin_lines = twin.get_legend_handles_labels()
    axes.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize=8,
                loc="upper left", bbox_to_anchor=(1.12, 1.0))
    figure.tight_layout()
    return figure


class ServingWidget(widgets.VBox):
    """Serve ``prompts`` (lists of token ids) with a fresh engine per run; watch the pool live.

    ``decode`` (token ids -> text, e.g. a tokenizer's) shows prompts and answers as text;
    ``eos_token_id`` ends a request early, as in :class:`~pagedlab.LLMEngine`.
    """

    def __init__(self, model, prompts: list[list[int]], num_blocks: int = 32, block_size: int = 8,
                 max_new_tokens: int = 32, max_num_seqs: int = 8, decode=None,
                 eos_token_id: int | None = None):
        self.model, self.prompts, self.block_size = model, prompts, block_size
        self.max_num_seqs, self.decode, self.eos_token_id = max_num_seqs, decode, eos_token_id
        style = {"description_width": "initial"}
        self.num_blocks = widgets.IntSlider(value=num_blocks, min=8, max=128, step=4,
                                            description="pool (blocks)", style=style,
                                            continuous_update=False)
        room = getattr(model, "max_seq_len", 64) - max(map(len, prompts), default=0)
        longest = max(4, min(64, room // 4 * 4))  # no more new tokens than the model has room for
        self.max_new_tokens = widgets.IntSlider(value=min(max_new_tokens, longest), min=4,
                                                max=longest, step=4,
                                                description="new tokens", style=style,
                                                continuous_update=False)
        self.button = widgets.Button(description="Generate", button_style="primary",
                                     tooltip=f"serve {len(prompts)} prompts together")
        self.usage = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="pool 0%",
                                           style=style)
        self.status = widgets.HTML("<i>press Generate</i>")
        self.pool = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.outputs = widgets.HTML()
        self.button.on_click(lambda _: self.generate())
        super().__init__([widgets.HBox([self.num_blocks, self.max_new_tokens, self.button],
                                       layout={"flex_flow": "row wrap"}),
                          self.usage, self.status, self.pool, self.image, self.outputs])

    def _on_step(self, stats) -> None:
        """Called by the engine after every step: redraw the live parts."""
        self.history.append(stats)  # the pool below is drawn after the step's frees
        self.usage.value = stats.usage
        self.usage.description = f"pool {stats.usage:.0%}"
        self.status.value = (f"step <b>{stats.step}</b>: {stats.num_prefills} prefill, "
                             f"{stats.num_decodes} decode, {stats.num_preempted} preempted, "
                             f"{stats.num_finished} finished; blocks used during the step "
                             f"{stats.num_used_blocks} / {stats.num_used_blocks + stats.num_free_blocks}")
        manager = self.engine.block_manager
        if manager.sequences:  # keep the last full picture once all are done
            self.pool.value = pool_html(manager)
        else:
            self.status.value += (f" &mdash; every request is done: {manager.num_used_blocks} / "
                                  f"{manager.num_blocks} used now, every block free again")

    def generate(self) -> list[list[int]]:
        """Serve every prompt with a fresh engine; returns the new tokens of each prompt."""
        from ..engine import LLMEngine
        self.button.disabled = True
        try:
            self.engine = LLMEngine(self.model, num_blocks=self.num_blocks.value,
                                    block_size=self.block_size, max_num_seqs=self.max_num_seqs,
                                    eos_token_id=self.eos_token_id)
            self.history = []
            self.results = self.engine.generate(self.prompts, self.max_new_tokens.value,
                                                progress=False, on_step=self._on_step)
        except Exception as error:  # noqa: BLE001  (shown to the learner, e.g. OutOfBlocks)
            self.status.value = f'<span style="color:#D55E00">{type(error).__name__}: {error}</span>'
            return []
        finally:
            self.button.disabled = False
        usage = [s.usage for s in self.history]
        batch = [s.num_prefills + s.num_decodes for s in self.history]
        preempted = [i for i, s in enumerate(self.history) if s.num_preempted]
        self.image.value = figure_png(usage_figure(usage, batch, preempted))
        stats = self.engine.stats
        self.outputs.value = (
            f'<div style="border-top:1px solid {BORDER}">done: {len(self.history)} steps, '
            f"{stats.generated_tokens} tokens, {stats.preemptions} preemptions, peak "
            f"{stats.peak_used_blocks} of {self.num_blocks.value} blocks</div>"
            + table(["request", "prompt", "new tokens" if self.decode else "new tokens (first 8)"],
                    [[chip(letter_of(i + 1), colour_of(i + 1)), *self._texts(p, out)]
                     for i, (p, out) in enumerate(zip(self.prompts, self.results))]))
        return self.results

    def _texts(self, prompt: list[int], output: list[int]) -> list[str]:
        """The table's prompt and answer cells: text where there is a decoder, else ids."""
        if self.decode is None:
            return [f"{len(prompt)} tokens", str(output[:8])]
        return [html.escape(self.decode(prompt)), html.escape(self.decode(output))]
