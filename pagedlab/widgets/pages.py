"""Block size and sequence lengths -> block tables, slot mapping and waste (lesson 02).

Three sequences generate side by side (one token each per step, as in a batch), so their blocks
interleave in the pool: logical block i of a sequence can sit in any physical block, and its
block table says which. The last block of each sequence is partly empty: internal
fragmentation, never more than ``block_size - 1`` slots per sequence.
See notebooks/02_pages_and_block_tables.ipynb.
"""
from __future__ import annotations

import ipywidgets as widgets

from ..blocks import BlockManager
from ..sequence import Sequence
from .palette import BORDER, cell, chip, colour_of, letter_of, table


def build_pool(lengths: list[int], block_size: int, prompt_len: int = 1) -> tuple[BlockManager, list[Sequence]]:
    """Allocate sequences of these lengths (tokens) the way a batch grows: a token each per step."""
    total_blocks = sum(-(-length // block_size) for length in lengths)
    manager = BlockManager(max(1, total_blocks), block_size)
    seqs = []
    for seq_id, length in enumerate(lengths, start=1):
        seq = Sequence(seq_id, list(range(min(prompt_len, length))))
        manager.allocate(seq)
        seqs.append(seq)
    for step in range(max(lengths)):
        for seq, length in zip(seqs, lengths):
            if len(seq) < length:
                manager.append_token(seq, len(seq))
    return manager, seqs


def waste_of(lengths: list[int], block_size: int) -> tuple[int, int]:
    """(empty slots in last blocks, slots allocated) for sequences of these lengths."""
    allocated = sum(-(-length // block_size) * block_size for length in lengths)
    return allocated - sum(lengths), allocated


class BlockTableWidget(widgets.VBox):
    """Sliders for the block size and three sequence lengths; the pool, tables and waste follow."""

    def __init__(self, block_size: int = 4, lengths: tuple[int, ...] = (7, 10, 3),
                 max_len: int = 40):
        self.block_size = widgets.IntSlider(value=block_size, min=1, max=16, description="block size",
                                            continuous_update=False)
        self.lengths = [widgets.IntSlider(value=length, min=1, max=max_len,
                                          description=f"length {letter_of(i)}{i}",
                                          continuous_update=False)
                        for i, length in enumerate(lengths, start=1)]
        self.pool = widgets.HTML()
        self.tables = widgets.HTML()
        self.summary = widgets.HTML()
        for slider in [self.block_size, *self.lengths]:
            slider.observe(lambda _: self.render(), names="value")
        super().__init__([widgets.HBox([self.block_size, *self.lengths[:1]]),
                          widgets.HBox(self.lengths[1:]), self.summary, self.pool, self.tables])
        self.render()

    def render(self) -> None:
        """Rebuild the pool from the sliders and redraw everything."""
        size = self.block_size.value
        lengths = [slider.value for slider in self.lengths]
        manager, seqs = build_pool(lengths, size)
        owner = {block: (seq, index) for seq in seqs for index, block in enumerate(seq.block_table)}
        boxes = []
        for block in range(manager.num_blocks):
            seq, index = owner[block]
            start = index * size
            slots = [str(pos) if pos < len(seq) else "&middot;" for pos in range(start, start + size)]
            body = (f"block {block}<br><b>{letter_of(seq.seq_id)}{seq.seq_id}</b> #{index}<br>"
                    f"<span style='font-size:10px'>{' '.join(slots)}</span>")
            width = f"{max(4.2, 1.3 * size + 1):.1f}em"
            boxes.append(cell(body, colour_of(seq.seq_id), width=width,
                              title=f"physical block {block} = logical block {index} of "
                                    f"sequence {seq.seq_id}; numbers are token positions"))
        self.pool.value = ("<b>The pool</b> (physical blocks; inside: the token positions "
                           "each slot holds, &middot; = empty slot)<br>" + "".join(boxes))
        rows = []
        for seq in seqs:
            slots = manager.slot_mapping(seq)
            shown = ", ".join(map(str, slots[:12])) + (", ..." if len(slots) > 12 else "")
            tail = len(seq.block_table) * size - len(seq)
            rows.append([chip(f"{letter_of(seq.seq_id)}{seq.seq_id}", colour_of(seq.seq_id)),
                         str(len(seq)), str(seq.block_table), f"[{shown}]", str(tail)])
        self.tables.value = (
            "<b>Block tables and slot mapping</b> (slot = block_table[p // B] * B + p % B)<br>"
            + table(["seq", "tokens", "block table", "slot of each position", "empty slots"], rows))
        empty, allocated = waste_of(lengths, size)
        self.summary.value = (
            f'<div style="padding:4px;border:1px solid {BORDER};border-radius:4px">'
            f"block size <b>{size}</b>: {len(manager.sequences)} sequences, "
            f"{sum(lengths)} tokens in {manager.num_used_blocks} blocks = {allocated} slots; "
            f"<b>{empty}</b> slots empty = <b>{100 * empty / allocated:.1f}%</b> internal "
            f"fragmentation (at most {size - 1} per sequence)</div>")
