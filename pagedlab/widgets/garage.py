"""The garage grid of lesson 01: cars (sequences) park in spaces (blocks) of the KV cache.

Buttons: a new car arrives with a prompt, every parked car generates its next token, a car
leaves, reset. The grid shows every space (free ones dashed), who parks there and how many of
its slots hold tokens; beside it, each car's ticket is its block table.
See notebooks/01_parking_garage.ipynb.
"""
from __future__ import annotations

import random

import ipywidgets as widgets

from ..blocks import BlockManager
from ..errors import OutOfBlocks
from ..sequence import Sequence
from .palette import BORDER, cell, chip, colour_of, escape, letter_of, table


def _slots_bar(filled: int, block_size: int) -> str:
    """Slots of one space as characters: a full square per token, an empty one per free slot."""
    if block_size > 8:
        return f"{filled}/{block_size}"
    return "&#9632;" * filled + "&#9633;" * (block_size - filled)


def car_label(seq_id: int) -> str:
    """How a car is named everywhere: its letter and number, e.g. 'A1'."""
    return f"{letter_of(seq_id)}{seq_id}"


class GarageWidget(widgets.VBox):
    """The parking garage: a BlockManager of ``num_blocks`` spaces of ``block_size`` token slots.

    ``new_car()``, ``next_token()``, ``leave()`` and ``reset()`` are what the buttons do.
    """

    def __init__(self, num_blocks: int = 12, block_size: int = 4, prompt_len: int = 5,
                 seed: int = 0):
        self.num_blocks, self.block_size, self.seed = num_blocks, block_size, seed
        self.prompt = widgets.IntSlider(value=prompt_len, min=1, max=4 * block_size,
                                        description="prompt tokens", continuous_update=False,
                                        style={"description_width": "initial"})
        self.new_button = widgets.Button(description="New car", button_style="primary",
                                         tooltip="a request arrives with `prompt tokens` tokens")
        self.token_button = widgets.Button(description="Next token",
                                           tooltip="every parked car generates one token")
        self.leave_button = widgets.Button(description="Car leaves",
                                           tooltip="the chosen car finishes and frees its spaces")
        self.reset_button = widgets.Button(description="Reset", button_style="warning")
        self.which = widgets.Dropdown(options=[], description="car", layout={"width": "11em"})
        self.grid = widgets.HTML()
        self.tickets = widgets.HTML()
        self.message = widgets.HTML()
        self.new_button.on_click(lambda _: self.new_car())
        self.token_button.on_click(lambda _: self.next_token())
        self.leave_button.on_click(lambda _: self.leave())
        self.reset_button.on_click(lambda _: self.reset())
        controls = widgets.HBox([self.prompt, self.new_button, self.token_button,
                                 self.which, self.leave_button, self.reset_button],
                                layout={"flex_flow": "row wrap"})
        body = widgets.HBox([self.grid, self.tickets], layout={"flex_flow": "row wrap"})
        super().__init__([controls, self.message, body])
        self.reset()

    # -- what the buttons do --
    def reset(self) -> None:
        """An empty garage."""
        self.manager = BlockManager(self.num_blocks, self.block_size)
        self.cars: dict[int, Sequence] = {}
        self.next_id = 1
        self.rng = random.Random(self.seed)
        self._say(f"An empty garage: {self.num_blocks} spaces of {self.block_size} token slots.")

    def new_car(self, prompt_len: int | None = None) -> Sequence | None:
        """A request arrives; it parks all its prompt tokens or, if they don't fit, none."""
        prompt_len = self.prompt.value if prompt_len is None else prompt_len
        seq = Sequence(self.next_id, [self.rng.randrange(50_000) for _ in range(prompt_len)])
        need = self.manager.blocks_needed(seq)
        try:
            self.manager.allocate(seq)
        except OutOfBlocks:
            self._say(f"Car {car_label(seq.seq_id)} ({prompt_len} tokens) needs {need} spaces but "
                      f"only {self.manager.num_free_blocks} are free: it is turned away and "
                      "<b>nothing</b> was taken (all or nothing).", error=True)
            return None
        self.next_id += 1
        self.cars[seq.seq_id] = seq
        self._say(f"Car {car_label(seq.seq_id)} parks {prompt_len} tokens in spaces "
                  f"{seq.block_table}; its ticket (block table) says where each part is.")
        return seq

    def next_token(self) -> list[str]:
        """Every parked car generates one token; a new space only when its last one is full."""
        events = []
        for seq in self.cars.values():
            before = list(seq.block_table)
            try:
                self.manager.append_token(seq, self.rng.randrange(50_000))
            except OutOfBlocks:
                events.append(f"{car_label(seq.seq_id)} cannot grow: no free space "
                              "(lesson 05: the scheduler would preempt someone)")
                continue
            if seq.block_table != before:
                events.append(f"{car_label(seq.seq_id)} filled its last space and takes "
                              f"space {seq.block_table[-1]}")
        if not self.cars:
            events.append("No car is parked: press New car first.")
        else:
            events.insert(0, "Every car added one token.")
        self._say(" ".join(events), error=any("cannot" in e for e in events))
        return events

    def leave(self, car_id: int | None = None) -> None:
        """A car finishes: its spaces go back to the free pool at once."""
        if car_id is None:  # the car picked in the menu, else the one parked longest
            car_id = self.which.value if self.which.value in self.cars else next(iter(self.cars), None)
        if car_id not in self.cars:
            self._say("No car to leave: park one first.", error=True)
            return
        seq = self.cars.pop(car_id)
        spaces = list(seq.block_table)
        self.manager.free(seq)
        self._say(f"Car {car_label(car_id)} leaves; spaces {spaces} are free again, "
                  "for any car, in any order.")

    # -- drawing --
    def _say(self, text: str, error: bool = False) -> None:
        colour = "#D55E00" if error else "inherit"
        self.message.value = f'<div style="color:{colour};min-height:1.5em">{text}</div>'
        self.render()

    def render(self) -> None:
        """Redraw the grid, the tickets and the car picker from the block manager."""
        manager, size = self.manager, self.block_size
        owner: dict[int, tuple[int, int, int]] = {}   # block -> (car, logical index, filled)
        for seq in self.cars.values():
            for index, block in enumerate(seq.block_table):
                owner[block] = (seq.seq_id, index, min(size, len(seq) - index * size))
        boxes = []
        for block in range(manager.num_blocks):
            if block in owner:
                car, index, filled = owner[block]
                body = (f"space {block}<br><b>{car_label(car)}</b> #{index}<br>"
                        f"{_slots_bar(filled, size)}")
                boxes.append(cell(body, colour_of(car), title=f"car {car} logical block {index}: "
                                  f"{filled} of {size} slots hold tokens"))
            else:
                boxes.append(cell(f"space {block}<br>free<br>{_slots_bar(0, size)}", None,
                                  title="free space"))
        empty = sum(len(seq.block_table) * size - len(seq) for seq in self.cars.values())
        self.grid.value = (
            f'<div style="max-width:30em"><b>The garage</b> (KV-cache pool)<br>{"".join(boxes)}'
            f'<div>free spaces: <b>{manager.num_free_blocks}</b> of {manager.num_blocks} '
            f"&middot; tokens: <b>{sum(len(s) for s in self.cars.values())}</b> "
            f"&middot; empty slots: <b>{empty}</b></div></div>")
        rows = [[chip(car_label(seq.seq_id), colour_of(seq.seq_id)), str(len(seq)),
                 "[" + ", ".join(str(b) for b in seq.block_table) + "]"]
                for seq in self.cars.values()]
        self.tickets.value = (
            f'<div style="margin-left:1em;padding-left:1em;border-left:1px solid {BORDER}">'
            "<b>Tickets</b> (block tables: logical block i &rarr; space)<br>"
            + (table(["car", "tokens", "block table"], rows) if rows else "<i>no car parked</i>")
            + "</div>")
        chosen = self.which.value
        self.which.options = [(car_label(car), car) for car in self.cars]
        if self.cars:
            self.which.value = chosen if chosen in self.cars else next(iter(self.cars))


def parking_comparison(lengths: list[int], max_len: int, num_slots: int,
                       block_size: int = 4) -> str:
    """HTML: the same cars parked contiguously (each reserves ``max_len`` slots) and paged.

    Contiguous parking reserves a car's maximum length in one run of slots up front; paging
    gives each car whole blocks of ``block_size`` slots, only as many as its tokens fill (so
    only its last block may be partly empty), anywhere in the garage. Lengths in tokens.
    """
    def row(title: str, runs: list[tuple[int | None, int, str]]) -> str:
        parts = []
        for car, width, what in runs:
            if width <= 0:
                continue
            percent = 100 * width / num_slots
            colour = None if car is None else colour_of(car)
            label = "" if car is None else car_label(car)
            style = (f"background:{colour};color:#000;" if colour else
                     f"border:1px dashed {BORDER};")
            if what == "reserved":
                style += "opacity:0.45;"
            parts.append(f'<div title="{escape(what)}" style="display:inline-block;box-sizing:'
                         f"border-box;width:{percent:.2f}%;height:2em;line-height:2em;{style}"
                         f'font-family:monospace;font-size:11px;text-align:center;overflow:hidden">'
                         f"{escape(label if what != 'free' else '')}</div>")
        return f'<div><b>{title}</b></div><div style="width:100%;white-space:nowrap">{"".join(parts)}</div>'

    contiguous, used = [], 0
    for car, length in enumerate(lengths, start=1):
        if used + max_len > num_slots:
            break
        contiguous += [(car, length, "tokens"), (car, max_len - length, "reserved")]
        used += max_len
    parked_contiguous = len(contiguous) // 2
    contiguous.append((None, num_slots - used, "free"))
    paged, used = [], 0
    for car, length in enumerate(lengths, start=1):
        blocks = -(-length // block_size)
        if used + blocks * block_size > num_slots:
            break
        paged += [(car, length, "tokens"), (car, blocks * block_size - length, "reserved")]
        used += blocks * block_size
    parked_paged = len(paged) // 2
    paged.append((None, num_slots - used, "free"))
    return (f'<div style="max-width:48em">'
            + row(f"contiguous: each car reserves {max_len} slots &rarr; "
                  f"{parked_contiguous} of {len(lengths)} cars fit", contiguous)
            + row(f"paged: each car takes whole blocks of {block_size} slots, only as many as "
                  f"it fills &rarr; {parked_paged} of {len(lengths)} cars fit, "
                  f"{num_slots - used} slots still free", paged)
            + '<div style="font-size:11px">pale = held but empty (reserved for tokens not '
              "generated yet; paged: the rest of a car's last block); dashed = free</div></div>")
