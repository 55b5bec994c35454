"""Fork, append and free with shared blocks and reference counts in view (lesson 04).

A fork shares every block of its parent (each block's reference count goes up by one).
Appending to a sequence whose partly filled last block is shared first copies that block
(copy-on-write); full shared blocks stay shared forever, which is where parallel sampling and
beam search save memory. See notebooks/04_sharing.ipynb.
"""
from __future__ import annotations

import random

import ipywidgets as widgets

from ..blocks import BlockManager
from ..errors import OutOfBlocks
from ..sequence import Sequence
from .palette import BORDER, OKABE_ITO, cell, chip, colour_of, letter_of, table

SHARED = OKABE_ITO["yellow"]


def _name(seq_id: int) -> str:
    return f"{letter_of(seq_id)}{seq_id}"


class SharingWidget(widgets.VBox):
    """A block manager with one prompt; buttons fork, append a token to, or free a sequence."""

    def __init__(self, num_blocks: int = 12, block_size: int = 4, prompt_len: int = 6,
                 seed: int = 0):
        self.num_blocks, self.block_size, self.prompt_len, self.seed = (
            num_blocks, block_size, prompt_len, seed)
        self.which = widgets.Dropdown(options=[], description="sequence", layout={"width": "13em"})
        self.fork_button = widgets.Button(description="Fork", button_style="primary",
                                          tooltip="a new sample that shares every block")
        self.append_button = widgets.Button(description="Append token",
                                            tooltip="the chosen sequence generates one token")
        self.free_button = widgets.Button(description="Free", tooltip="the chosen sequence ends")
        self.reset_button = widgets.Button(description="Reset", button_style="warning")
        self.fork_button.on_click(lambda _: self.fork())
        self.append_button.on_click(lambda _: self.append())
        self.free_button.on_click(lambda _: self.free())
        self.reset_button.on_click(lambda _: self.reset())
        self.message = widgets.HTML()
        self.pool = widgets.HTML()
        self.tables = widgets.HTML()
        controls = widgets.HBox([self.which, self.fork_button, self.append_button,
                                 self.free_button, self.reset_button],
                                layout={"flex_flow": "row wrap"})
        super().__init__([controls, self.message, self.pool, self.tables])
        self.reset()

    @property
    def chosen(self) -> Sequence | None:
        """The sequence picked in the menu (the first live one if none is)."""
        seqs = {seq.seq_id: seq for seq in self.manager.sequences}
        return seqs.get(self.which.value) or next(iter(seqs.values()), None)

    def reset(self) -> None:
        """One sequence holding the prompt, nothing shared."""
        self.manager = BlockManager(self.num_blocks, self.block_size)
        self.rng = random.Random(self.seed)
        self.next_id = 2
        self.copies: list[tuple[int, int]] = []
        prompt = Sequence(1, [self.rng.randrange(50_000) for _ in range(self.prompt_len)])
        self.manager.allocate(prompt)
        self._say(f"Prompt {_name(1)} holds {self.prompt_len} tokens in blocks "
                  f"{prompt.block_table}. Fork it to start a second sample.")

    def fork(self) -> Sequence | None:
        """A child of the chosen sequence: same block table, every reference count + 1."""
        parent = self.chosen
        if parent is None:
            self._say("Nothing to fork: press Reset.", error=True)
            return None
        child = self.manager.fork(parent, self.next_id)
        self.next_id += 1
        self.which.options = [(_name(s.seq_id), s.seq_id) for s in self.manager.sequences]
        self.which.value = child.seq_id
        self._say(f"{_name(child.seq_id)} forks from {_name(parent.seq_id)}: it shares blocks "
                  f"{child.block_table} (no copy, no new block).")
        return child

    def append(self) -> tuple[int, int] | None:
        """The chosen sequence generates a token; a shared partial last block is copied first."""
        seq = self.chosen
        if seq is None:
            self._say("Nothing to append to: press Reset.", error=True)
            return None
        last, shared = seq.block_table[-1], self.manager.ref_count(seq.block_table[-1])
        try:
            copy = self.manager.append_token(seq, self.rng.randrange(50_000))
        except OutOfBlocks as error:
            self._say(f"OutOfBlocks: {error}", error=True)
            return None
        if copy is not None:
            self.copies.append(copy)
            self._say(f"<b>Copy-on-write</b>: {_name(seq.seq_id)}'s last block {copy[0]} was "
                      f"shared by {shared} sequences, so it was copied to block {copy[1]} "
                      f"(copy {copy[0]} &rarr; {copy[1]}) before the new token was written.")
        elif seq.block_table[-1] != last:
            self._say(f"{_name(seq.seq_id)} filled block {last} and takes block "
                      f"{seq.block_table[-1]} for its new token.")
        else:
            self._say(f"{_name(seq.seq_id)} writes its new token into its own block {last}.")
        return copy

    def free(self) -> None:
        """The chosen sequence ends; blocks whose count drops to zero become free."""
        seq = self.chosen
        if seq is None:
            self._say("Nothing to free: press Reset.", error=True)
            return
        table_before = list(seq.block_table)
        self.manager.free(seq)
        freed = [b for b in dict.fromkeys(table_before) if self.manager.ref_count(b) == 0]
        self._say(f"{_name(seq.seq_id)} ends: reference counts of {table_before} drop by one; "
                  f"blocks {freed} reach zero and are free again.")

    # -- drawing --
    def _say(self, text: str, error: bool = False) -> None:
        colour = "#D55E00" if error else "inherit"
        self.message.value = f'<div style="color:{colour};min-height:1.5em">{text}</div>'
        self.render()

    def render(self) -> None:
        """Redraw the pool (reference counts, shared blocks highlighted) and every block table."""
        manager, size = self.manager, self.block_size
        seqs = manager.sequences
        holders: dict[int, list[int]] = {}
        for seq in seqs:
            for block in seq.block_table:
                holders.setdefault(block, []).append(seq.seq_id)
        boxes = []
        for block in range(manager.num_blocks):
            ids = holders.get(block, [])
            if not ids:
                boxes.append(cell(f"block {block}<br>free<br>ref 0", None))
                continue
            names = " ".join(_name(i) for i in ids)
            shared = len(ids) > 1
            colour = SHARED if shared else colour_of(ids[0])
            label = f"<b>shared &times;{len(ids)}</b>" if shared else "own"
            boxes.append(cell(f"block {block}<br>{names}<br>ref {manager.ref_count(block)} "
                              f"&middot; {label}", colour, width="7.5em",
                              border="3px solid #000" if shared else f"1px solid {BORDER}",
                              title=f"block {block}: reference count {manager.ref_count(block)}"))
        used = manager.num_used_blocks
        without = sum(-(-len(seq) // size) for seq in seqs)
        saving = 0 if not without else 100 * (without - used) / without
        self.pool.value = (
            "<b>The pool</b> (yellow with a thick border = shared: reference count &gt; 1)<br>"
            + "".join(boxes)
            + f"<div>blocks in use: <b>{used}</b>; without sharing: <b>{without}</b> &rarr; "
              f"sharing saves <b>{saving:.0f}%</b> &middot; copies made: "
              f"{', '.join(f'{s}&rarr;{d}' for s, d in self.copies) or 'none'}</div>")
        rows = []
        for seq in seqs:
            table_html = ", ".join(
                f"<b><u>{b}</u></b>" if manager.ref_count(b) > 1 else str(b)
                for b in seq.block_table)
            rows.append([chip(_name(seq.seq_id), colour_of(seq.seq_id)), str(len(seq)),
                         f"[{table_html}]"])
        self.tables.value = ("<b>Block tables</b> (<b><u>underlined</u></b> = shared)<br>"
                             + table(["seq", "tokens", "block table"], rows))
        chosen = self.which.value
        self.which.options = [(_name(s.seq_id), s.seq_id) for s in seqs]
        ids = [s.seq_id for s in seqs]
        if ids:
            self.which.value = chosen if chosen in ids else ids[0]
