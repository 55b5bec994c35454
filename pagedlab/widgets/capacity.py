"""A calculator: how many requests of a given length fit on a GPU (lesson 03b).

Pick a model, a GPU, ``gpu_memory_utilization``, the KV-cache dtype, the block size and the
length of a request; the widget redraws the memory budget (weights, activations, KV cache) and
the requests that fit at once, all from :func:`pagedlab.capacity.plan`.
See notebooks/03b_how_many_requests_fit.ipynb.
"""
from __future__ import annotations

import ipywidgets as widgets

from .. import capacity
from .palette import BORDER, LIGHT_GREY, OKABE_ITO, escape, table, text_on

PART_COLOURS = {"weights": OKABE_ITO["blue"], "activations": OKABE_ITO["orange"],
                "KV cache": OKABE_ITO["bluish green"], "not used": LIGHT_GREY}
TOKENS = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def gib(nbytes: float) -> str:
    return f"{nbytes / capacity.GiB:.2f} GiB"


def budget_bar(result: capacity.Capacity) -> str:
    """The GPU's memory as one bar: weights, activations, KV cache, and what vLLM leaves out."""
    total = result.gpu.memory_bytes
    kv = max(result.kv_cache_bytes, 0)
    parts = {"weights": min(result.weights_bytes, total),
             "activations": min(result.activations_bytes, max(total - result.weights_bytes, 0)),
             "KV cache": kv}
    parts["not used"] = max(total - sum(parts.values()), 0)
    pieces = []
    for name, nbytes in parts.items():
        share = 100 * nbytes / total
        if share <= 0:
            continue
        colour = PART_COLOURS[name]
        label = f"{name} {gib(nbytes)}" if share >= 14 else ""
        pieces.append(f'<div title="{escape(name)}: {gib(nbytes)}" style="width:{share:.2f}%;'
                      f"background:{colour};color:{text_on(colour)};overflow:hidden;"
                      f'white-space:nowrap;font-size:11px;padding:2px 0;text-align:center">'
                      f"{escape(label)}</div>")
    legend = " · ".join(f'<span style="color:{PART_COLOURS[n]}">■</span> {n}' for n in parts)
    return (f'<div style="display:flex;width:100%;max-width:720px;border:1px solid {BORDER};'
            f'border-radius:4px;overflow:hidden">{"".join(pieces)}</div>'
            f'<div style="font-size:11px">{legend}</div>')


def verdict(result: capacity.Capacity) -> str:
    """One sentence: how many requests fit, or why none do."""
    if not result.fits:
        return (f"<b>Does not fit.</b> Weights {gib(result.weights_bytes)} + activations "
                f"{gib(result.activations_bytes)} leave nothing of the "
                f"{gib(result.budget_bytes)} budget: vLLM would refuse to start "
                f"(<i>No available memory for the cache blocks</i>).")
    capped = result.max_num_seqs < result.max_concurrency
    return (f"<b>{result.max_concurrency:,.1f} requests</b> of {result.tokens_per_request:,} "
            f"tokens fit at once: {result.num_blocks:,} blocks of {result.block_size} tokens, "
            f"{capacity.blocks_per_request(result.tokens_per_request, result.block_size):,} "
            f"blocks each."
            + (f" <i>--max-num-seqs {result.max_num_seqs} caps the batch first.</i>"
               if capped else ""))


def capacity_table(result: capacity.Capacity) -> str:
    """The numbers behind the bar."""
    shape = result.model
    per_token = (f"2 × {shape.num_layers} layers × {shape.num_kv_heads} kv heads × "
                 f"{shape.head_dim} × {capacity.dtype_bytes(result.kv_cache_dtype)} B = "
                 f"{result.kv_bytes_per_token:,} B")
    rows = [["KV bytes per token", per_token],
            ["budget", f"{result.gpu_memory_utilization:.2f} × {gib(result.gpu.memory_bytes)} = "
                       f"{gib(result.budget_bytes)}"],
            ["weights", f"{capacity.num_parameters(shape):,} parameters × 2 B = "
                        f"{gib(result.weights_bytes)}"],
            ["activations (estimate)", gib(result.activations_bytes)],
            ["KV cache", gib(result.kv_cache_bytes)],
            ["pool", f"{result.num_blocks:,} blocks = {result.pool_tokens:,} tokens"]]
    return table(["", "value"], rows)


class CapacityWidget(widgets.VBox):
    """Model, GPU, utilization, KV dtype, block size, request length -> what fits."""

    def __init__(self, model: str = "Llama-3-8B", gpu: str = "A100 (80 GB)",
                 tokens_per_request: int = 2048):
        style = {"description_width": "initial"}
        self.model = widgets.Dropdown(options=list(capacity.MODELS), value=model,
                                      description="model", style=style)
        self.gpu = widgets.Dropdown(options=list(capacity.GPUS), value=gpu, description="GPU",
                                    style=style)
        self.utilization = widgets.FloatSlider(value=0.92, min=0.5, max=0.98, step=0.01,
                                               description="gpu_memory_utilization",
                                               continuous_update=False, style=style)
        self.kv_dtype = widgets.Dropdown(options=[("auto (16-bit)", "auto"), ("fp8", "fp8")],
                                         value="auto", description="KV cache dtype",
                                         style=style)
        self.block_size = widgets.Dropdown(options=[8, 16, 32, 64, 128], value=16,
                                           description="block size", style=style)
        self.tokens = widgets.SelectionSlider(options=TOKENS, value=tokens_per_request,
                                              description="tokens per request",
                                              continuous_update=False, style=style)
        self.no_gqa = widgets.Checkbox(value=False, description="as if no GQA (one K/V head "
                                       "per query head)", indent=False)
        self.bar = widgets.HTML()
        self.answer = widgets.HTML()
        self.details = widgets.HTML()
        controls = (self.model, self.gpu, self.utilization, self.kv_dtype, self.block_size,
                    self.tokens, self.no_gqa)
        for control in controls:
            control.observe(lambda _: self.render(), names="value")
        wrap = {"flex_flow": "row wrap"}
        super().__init__([widgets.HBox(list(controls[:3]), layout=wrap),
                          widgets.HBox(list(controls[3:]), layout=wrap),
                          self.bar, self.answer, self.details])
        self.render()

    def render(self) -> None:
        """Recompute the plan for the current controls and redraw."""
        shape = capacity.model_shape(self.model.value)
        if self.no_gqa.value:
            shape = capacity.without_gqa(shape)
        tokens = min(self.tokens.value, shape.max_model_len)
        self.result = capacity.plan(shape, self.gpu.value,
                                    gpu_memory_utilization=round(self.utilization.value, 2),
                                    kv_cache_dtype=self.kv_dtype.value,
                                    block_size=self.block_size.value, tokens_per_request=tokens)
        note = (f" ({shape.name} holds at most {shape.max_model_len:,} positions, so "
                f"{tokens:,} tokens)" if tokens < self.tokens.value else "")
        self.bar.value = (f"<div><b>{escape(shape.name)}</b> on <b>{escape(self.gpu.value)}"
                          f"</b>{escape(note)}</div>" + budget_bar(self.result))
        self.answer.value = f"<div>{verdict(self.result)}</div>"
        self.details.value = capacity_table(self.result)
