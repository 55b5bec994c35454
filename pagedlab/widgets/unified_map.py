"""Which blocks each program of the unified kernel reads, for a whole engine step (lesson 07b).

The unified kernel runs one program per (query tile, KV head). A query tile is ``query_tile``
consecutive new tokens of one sequence; sequence ``i``'s tiles are numbered from
``query_start_loc[i] // query_tile + i``, so a few numbers are spare and their programs return at
once. A program reads its sequence's blocks up to the last key its last query may see; blocks
holding keys past its first query's position are partly hidden by the causal mask.
The numbering and the ranges follow ``kernels/unified_attention.py`` line by line.
See notebooks/07b_the_unified_kernel.ipynb.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import ipywidgets as widgets

from .palette import BORDER, GREY, cell, colour_of, letter_of


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class TileProgram:
    """One tile number of the grid (for every KV head alike)."""

    tile_id: int
    seq: int | None  # None: a spare number, the program returns at once
    queries: range = range(0)  # indices among the sequence's new tokens
    positions: range = range(0)  # their positions in the sequence
    kv_end: int = 0  # keys 0 .. kv_end - 1 are read
    blocks: tuple = ()  # physical blocks read, in order
    causal_blocks: tuple = ()  # of those, blocks with keys some query of the tile may not see


def tile_programs(block_tables: list[list[int]], context_lens: list[int], query_lens: list[int],
                  block_size: int, query_tile: int) -> list[TileProgram]:
    """Every tile number the kernel launches (``num_tokens // query_tile + num_seqs``), in order."""
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    first_tile = [starts[i] // query_tile + i for i in range(len(query_lens))]
    programs = []
    for tile_id in range(starts[-1] // query_tile + len(query_lens)):
        seq = sum(first <= tile_id for first in first_tile) - 1  # as the kernel counts
        q_tile = tile_id - first_tile[seq]
        query_len, context_len = query_lens[seq], context_lens[seq]
        if q_tile * query_tile >= query_len:
            programs.append(TileProgram(tile_id, None))
            continue
        queries = range(q_tile * query_tile, min(query_len, (q_tile + 1) * query_tile))
        first_position = context_len - query_len + queries[0]
        kv_end = context_len - query_len + queries[-1] + 1
        logical = range(_cdiv(kv_end, block_size))
        blocks = tuple(block_tables[seq][b] for b in logical)
        causal = tuple(block_tables[seq][b] for b in logical
                       if min((b + 1) * block_size, kv_end) - 1 > first_position)
        programs.append(TileProgram(tile_id, seq, queries,
                                    range(first_position, kv_end), kv_end, blocks, causal))
    return programs


def unified_map_html(block_tables: list[list[int]], context_lens: list[int],
                     query_lens: list[int], block_size: int, query_tile: int,
                     queries_per_kv: int = 4, num_kv_heads: int = 1) -> str:
    """HTML: one row per tile number (each run by ``num_kv_heads`` programs), the blocks it reads."""
    programs = tile_programs(block_tables, context_lens, query_lens, block_size, query_tile)
    rows_per_tile = max(16, 1 << max(0, query_tile * queries_per_kv - 1).bit_length())
    lines = []
    for program in programs:
        if program.seq is None:
            label = f"tile {program.tile_id}: spare number"
            boxes = cell("returns at once", None, width="12em", title="no queries of its sequence left")
        else:
            letter = letter_of(program.seq + 1)
            q = program.queries
            label = (f"tile {program.tile_id}: seq {program.seq} ({letter}) queries {q[0]}-{q[-1]}"
                     f" &middot; pos {program.positions[0]}-{program.positions[-1]}")
            boxes = "".join(
                cell(f"blk {block}<br>{'causal' if block in program.causal_blocks else 'all see'}",
                     colour_of(program.seq + 1) if block not in program.causal_blocks else GREY,
                     width="5.2em",
                     title=(f"physical block {block}: keys some queries of this tile may not see "
                            f"(masked -inf)" if block in program.causal_blocks else
                            f"physical block {block}: every query of the tile sees all its keys"))
                for block in program.blocks)
        lines.append(f'<div style="white-space:nowrap"><span style="display:inline-block;'
                     f'min-width:24em;font-family:monospace;font-size:12px">{label}</span>'
                     f"{boxes}</div>")
    working = sum(p.seq is not None for p in programs)
    header = (f"<b>{len(programs) * num_kv_heads} programs</b> = {len(programs)} tile numbers "
              f"&times; {num_kv_heads} KV head(s); {len(programs) - working} spare "
              f"(return at once). Query tile {query_tile} tokens &times; {queries_per_kv} query "
              f"heads = {query_tile * queries_per_kv} rows (padded to {rows_per_tile}); block size "
              f"{block_size}. Grey: blocks the causal mask partly hides.")
    return (f'<div style="overflow-x:auto;padding:4px;border:1px solid {BORDER};border-radius:4px">'
            f"{header}<br>{''.join(lines)}</div>")


# (context_lens, query_lens) of each kind of step the lesson shows
BATCHES = {
    "mixed: decode, chunk, prompt": ([9, 30, 17], [1, 10, 17]),
    "decodes only": ([9, 30, 17], [1, 1, 1]),
    "a prompt after a cached prefix": ([40], [8]),
    "one whole prompt": ([40], [40]),
}


class UnifiedMapWidget(widgets.VBox):
    """Tile numbers x blocks read, for a chosen batch, query tile and number of KV heads."""

    def __init__(self, block_size: int = 8, queries_per_kv: int = 4, seed: int = 0):
        self.block_size, self.queries_per_kv, self.seed = block_size, queries_per_kv, seed
        self.batch = widgets.Dropdown(options=list(BATCHES), value=list(BATCHES)[0],
                                      description="batch")
        self.query_tile = widgets.Dropdown(options=[4, 8, 16], value=4,
                                           description="query tile")
        self.kv_heads = widgets.IntSlider(value=1, min=1, max=4, description="KV heads",
                                          continuous_update=False)
        self.map = widgets.HTML()
        for control in (self.batch, self.query_tile, self.kv_heads):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([widgets.HBox([self.batch, self.query_tile, self.kv_heads],
                                       layout={"flex_flow": "row wrap"}), self.map])
        self.render()

    def tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        """(block tables, context_lens, query_lens) of the chosen batch, blocks shuffled."""
        context_lens, query_lens = BATCHES[self.batch.value]
        physical = list(range(sum(_cdiv(n, self.block_size) for n in context_lens)))
        random.Random(self.seed).shuffle(physical)  # blocks sit anywhere in the pool
        tables, taken = [], 0
        for n in context_lens:
            tables.append(physical[taken:taken + _cdiv(n, self.block_size)])
            taken += _cdiv(n, self.block_size)
        return tables, list(context_lens), list(query_lens)

    def render(self) -> None:
        """Redraw the map for the current controls."""
        tables, context_lens, query_lens = self.tables()
        self.map.value = unified_map_html(tables, context_lens, query_lens, self.block_size,
                                          self.query_tile.value, self.queries_per_kv,
                                          self.kv_heads.value)
