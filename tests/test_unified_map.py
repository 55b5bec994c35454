"""The unified kernel's map (lesson 07b): tile numbers as the kernel counts them, every query in
exactly one tile, causal blocks where a tile's first query cannot see every key."""
from pagedlab.widgets import UnifiedMapWidget, tile_programs, unified_map_html
from pagedlab.widgets.unified_map import BATCHES


def _tables(context_lens, block_size):
    tables, taken = [], 0
    for n in context_lens:
        count = -(-n // block_size)
        tables.append(list(range(taken, taken + count)))
        taken += count
    return tables


def test_tile_numbers_follow_the_kernel_docstring_examples():
    programs = tile_programs(_tables([1, 40, 1], 16), [1, 40, 1], [1, 40, 1], 16, query_tile=16)
    assert [p.seq for p in programs] == [0, 1, 1, 1, 2]
    programs = tile_programs(_tables([16, 16], 16), [16, 16], [16, 16], 16, query_tile=16)
    assert [p.seq for p in programs] == [0, None, 1, None]  # tiles 1 and 3 return at once


def test_every_query_is_in_exactly_one_tile():
    for context_lens, query_lens in BATCHES.values():
        for query_tile in (4, 8, 16):
            programs = tile_programs(_tables(context_lens, 8), context_lens, query_lens, 8,
                                     query_tile)
            seen = sorted((p.seq, q) for p in programs if p.seq is not None for q in p.queries)
            assert seen == [(s, q) for s, n in enumerate(query_lens) for q in range(n)]


def test_a_tile_reads_up_to_its_last_querys_position_and_marks_causal_blocks():
    # 8 new tokens after 32 cached, block 8, query tile 4: positions 32-35, then 36-39.
    first, second, spare = tile_programs(_tables([40], 8), [40], [8], 8, query_tile=4)
    assert first.positions == range(32, 36) and first.kv_end == 36
    assert first.blocks == (0, 1, 2, 3, 4) and first.causal_blocks == (4,)
    assert second.kv_end == 40 and second.causal_blocks == (4,) and spare.seq is None


def test_a_decode_tile_sees_every_key_it_reads():
    programs = tile_programs(_tables([9, 30, 17], 8), [9, 30, 17], [1, 1, 1], 8, query_tile=4)
    working = [p for p in programs if p.seq is not None]
    assert len(working) == 3 and all(p.causal_blocks == () for p in working)


def test_html_counts_programs_over_kv_heads():
    html = unified_map_html(_tables([16, 16], 16), [16, 16], [16, 16], 16, query_tile=16,
                            num_kv_heads=2)
    assert "<b>8 programs</b>" in html and "2 spare" in html and "returns at once" in html


def test_widget_controls_redraw_the_map():
    view = UnifiedMapWidget()
    assert "<b>10 programs</b>" in view.map.value  # the mixed step, query tile 4
    view.kv_heads.value = 2
    assert "<b>20 programs</b>" in view.map.value
    view.batch.value = "decodes only"
    assert "<b>6 programs</b>" in view.map.value and "<br>causal" not in view.map.value
    view.query_tile.value = 16
    view.batch.value = "one whole prompt"
    assert "queries 0-15" in view.map.value and "causal" in view.map.value
