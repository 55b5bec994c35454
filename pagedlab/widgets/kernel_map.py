"""Which physical blocks each kernel program reads, step by step (lessons 06 and 07).

The decode kernel runs one program per (sequence, KV head[, split]). A program walks its part
of the context ``tile`` tokens at a time; for each token it looks up the physical block in the
block table. The map draws programs as rows and loop steps as columns; a cell names the blocks
that step reads and how many of its token lanes are masked (past the context).
See notebooks/06_attention_over_pages.ipynb and notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import random

import ipywidgets as widgets

from .palette import BORDER, cell, colour_of, escape, letter_of


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def program_steps(block_table: list[int], context_len: int, block_size: int, tile: int,
                  tokens_per_split: int, split: int) -> list[tuple[list[int], int]]:
    """Loop steps of one program: (physical blocks read, masked lanes) per step of ``tile`` tokens."""
    start = split * tokens_per_split
    end = min(start + tokens_per_split, context_len)
    steps = []
    for first in range(start, end, tile):
        tokens = range(first, min(first + tile, end))
        blocks = list(dict.fromkeys(block_table[t // block_size] for t in tokens))
        steps.append((blocks, tile - len(tokens)))
    return steps


def kernel_map_html(block_tables: list[list[int]], context_lens: list[int], block_size: int,
                    num_kv_heads: int = 1, num_splits: int = 1, tile: int | None = None) -> str:
    """HTML grid: one row per program (sequence, KV head, split), one column per loop step.

    ``tile`` (tokens per loop step) defaults to ``block_size``. Splits follow the kernel: each
    gets a whole number of tiles, and splits past the longest context are dropped.
    """
    tile = tile or block_size
    longest = max(context_lens)
    tokens_per_split = _cdiv(_cdiv(longest, num_splits), tile) * tile
    num_splits = _cdiv(longest, tokens_per_split)
    rows, programs = [], 0
    for seq, (table, context_len) in enumerate(zip(block_tables, context_lens)):
        colour = colour_of(seq + 1)
        for head in range(num_kv_heads):
            for split in range(num_splits):
                programs += 1
                steps = program_steps(table, context_len, block_size, tile, tokens_per_split, split)
                name = (f"seq {seq} ({letter_of(seq + 1)}) &middot; kv {head}"
                        + (f" &middot; split {split}" if num_splits > 1 else ""))
                boxes = [cell(f"step {i}<br>blk {', '.join(map(str, blocks))}"
                              + (f"<br>{masked} masked" if masked else "<br>&nbsp;"),
                              colour, width="6.5em",
                              title=f"reads physical blocks {blocks}; {masked} lanes masked")
                         for i, (blocks, masked) in enumerate(steps)]
                if not boxes:
                    boxes = [cell("no work<br>(context ends before this split)", None,
                                  width="20em")]
                rows.append(f'<div style="white-space:nowrap"><span style="display:inline-block;'
                            f'min-width:20em;font-family:monospace;font-size:12px">{name}</span>'
                            f'{"".join(boxes)}</div>')
    header = (f"<b>{programs} programs</b> = {len(context_lens)} sequences &times; "
              f"{num_kv_heads} KV heads &times; {num_splits} split(s) (rows: seq &middot; kv head "
              f"&middot; split); each step reads "
              f"{tile} token lanes (block size {block_size}); "
              f"{tokens_per_split} tokens per split")
    return (f'<div style="overflow-x:auto;padding:4px;border:1px solid {BORDER};border-radius:4px">'
            f"{header}<br>{''.join(rows)}</div>")


def token_reads_html(block_table: list[int], context_len: int, block_size: int) -> str:
    """HTML: for each token position, the physical block and slot its key and value are read from."""
    boxes = []
    for position in range(context_len):
        block = block_table[position // block_size]
        slot = block * block_size + position % block_size
        boxes.append(cell(f"pos {position}<br>blk {block}<br>slot {slot}",
                          colour_of(position // block_size + 1), width="4.6em",
                          title=f"token {position}: logical block {position // block_size}, "
                                f"physical block {block}, row {position % block_size}"))
    return (f"<div><b>Reading a context of {context_len} tokens</b> through block table "
            f"{escape(block_table)} (block size {block_size}; colour = logical block)</div>"
            + "".join(boxes))


class KernelMapWidget(widgets.VBox):
    """The programs x loop-steps map, with sliders for KV heads, splits and the tile size."""

    def __init__(self, context_lens: tuple[int, ...] = (37, 12, 64), block_size: int = 8,
                 seed: int = 0):
        self.context_lens, self.block_size = list(context_lens), block_size
        total = sum(_cdiv(n, block_size) for n in self.context_lens)
        physical = list(range(total))
        random.Random(seed).shuffle(physical)  # blocks sit anywhere in the pool
        self.block_tables, taken = [], 0
        for n in self.context_lens:
            self.block_tables.append(physical[taken:taken + _cdiv(n, block_size)])
            taken += _cdiv(n, block_size)
        self.heads = widgets.IntSlider(value=1, min=1, max=4, description="KV heads",
                                       continuous_update=False)
        self.splits = widgets.IntSlider(value=1, min=1, max=4, description="splits",
                                        continuous_update=False)
        self.tile = widgets.Dropdown(options=[16, 32, 64], value=16,  # the kernel's TILE
                                     description="tile (tokens)")
        self.map = widgets.HTML()
        for control in (self.heads, self.splits, self.tile):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([widgets.HBox([self.heads, self.splits, self.tile],
                                       layout={"flex_flow": "row wrap"}), self.map])
        self.render()

    def render(self) -> None:
        """Redraw the map for the current sliders."""
        self.map.value = kernel_map_html(self.block_tables, self.context_lens, self.block_size,
                                         self.heads.value, self.splits.value, self.tile.value)
