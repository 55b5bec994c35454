"""The lesson widgets, headless: press their buttons, move their sliders, read what they show."""
import importlib
import subprocess
import sys

import pytest

widgets = pytest.importorskip("ipywidgets")

from pagedlab.widgets import (  # noqa: E402
    BlockTableWidget, GarageWidget, KernelMapWidget, SharingWidget, kernel_map_html,
    parking_comparison, token_reads_html,
)
from pagedlab.widgets.palette import SEQUENCE_COLOURS, text_on  # noqa: E402


def test_import_pagedlab_loads_neither_widgets_nor_torch():
    code = ("import sys, pagedlab; bad = [m for m in ('torch', 'ipywidgets', 'matplotlib') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pagedlab_widgets_is_reachable_from_the_package():
    import pagedlab
    assert pagedlab.widgets is importlib.import_module("pagedlab.widgets")
    assert pagedlab.widgets.GarageWidget is GarageWidget


def test_text_on_each_palette_colour_is_black_or_white():
    assert {text_on(colour) for colour in SEQUENCE_COLOURS} <= {"#000000", "#FFFFFF"}
    assert text_on("#0072B2") == "#FFFFFF" and text_on("#F0E442") == "#000000"


# -- garage (lesson 01) --
def test_garage_new_car_parks_and_shows_its_ticket():
    garage = GarageWidget(num_blocks=6, block_size=4, prompt_len=5)
    before = garage.grid.value
    garage.new_button.click()
    assert [len(seq.block_table) for seq in garage.cars.values()] == [2]
    assert garage.grid.value != before
    assert "A1" in garage.grid.value and "A1" in garage.tickets.value
    assert "free spaces: <b>4</b> of 6" in garage.grid.value


def test_garage_next_token_takes_a_space_only_when_the_last_is_full():
    garage = GarageWidget(num_blocks=6, block_size=4, prompt_len=3)
    garage.new_button.click()
    garage.token_button.click()          # 4 tokens: still one space
    assert garage.manager.num_used_blocks == 1
    garage.token_button.click()          # 5 tokens: a second space
    assert garage.manager.num_used_blocks == 2
    assert "takes space" in garage.message.value


def test_garage_turns_away_a_car_that_does_not_fit_and_takes_nothing():
    garage = GarageWidget(num_blocks=3, block_size=4, prompt_len=8)
    garage.new_button.click()
    garage.new_button.click()
    assert len(garage.cars) == 1 and garage.manager.num_free_blocks == 1
    assert "turned away" in garage.message.value


def test_garage_leave_frees_the_chosen_car_and_reset_empties():
    garage = GarageWidget(num_blocks=8, block_size=4, prompt_len=4)
    garage.new_button.click()
    garage.new_button.click()
    garage.which.value = 2
    garage.leave_button.click()
    assert list(garage.cars) == [1] and garage.manager.num_free_blocks == 7
    assert [value for _, value in garage.which.options] == [1]
    garage.reset_button.click()
    assert not garage.cars and garage.manager.num_free_blocks == 8
    assert "no car parked" in garage.tickets.value


def test_parking_comparison_fits_more_cars_paged():
    html = parking_comparison([5, 9, 3, 7, 6], max_len=16, num_slots=48)
    assert "3 of 5 cars fit" in html and "5 of 5 cars fit" in html
    # paged in blocks of 4: 8 + 12 + 4 + 8 + 8 = 40 slots held, 8 free
    assert "blocks of 4 slots" in html and "8 slots still free" in html


# -- block tables (lesson 02) --
def test_block_size_slider_redraws_tables_and_waste():
    view = BlockTableWidget(block_size=4, lengths=(7, 10, 3))
    assert "<b>4</b> slots empty" in view.summary.value
    pool_before = view.pool.value
    view.block_size.value = 8
    assert "<b>12</b> slots empty" in view.summary.value
    assert view.pool.value != pool_before


def test_length_slider_changes_the_block_table():
    view = BlockTableWidget(block_size=4, lengths=(4, 4, 4))
    before = view.tables.value
    view.lengths[0].value = 9
    assert view.tables.value != before
    assert "9</td>" in view.tables.value


# -- sharing (lesson 04) --
def test_fork_shares_every_block_and_shows_reference_counts():
    view = SharingWidget(num_blocks=8, block_size=4, prompt_len=6)
    view.fork_button.click()
    assert len(view.manager.sequences) == 2
    assert all(view.manager.ref_count(b) == 2 for b in view.manager.sequences[0].block_table)
    assert "shared &times;2" in view.pool.value and "ref 2" in view.pool.value


def test_append_to_a_shared_partial_block_shows_the_copy():
    view = SharingWidget(num_blocks=8, block_size=4, prompt_len=6)
    view.fork_button.click()                 # the child is chosen
    view.append_button.click()
    assert "Copy-on-write" in view.message.value
    assert view.copies == [(1, 2)] and "1&rarr;2" in view.pool.value


def test_free_returns_blocks_whose_count_reaches_zero():
    view = SharingWidget(num_blocks=8, block_size=4, prompt_len=6)
    view.fork_button.click()
    view.append_button.click()               # child now owns a copy of the last block
    view.free_button.click()                 # frees the child
    assert view.manager.num_used_blocks == 2
    view.reset_button.click()
    assert view.copies == [] and len(view.manager.sequences) == 1


# -- kernel map (lessons 06, 07) --
def test_kernel_map_has_one_row_per_program():
    html = kernel_map_html([[3, 1], [0]], [12, 5], block_size=8, num_kv_heads=2)
    assert "<b>4 programs</b>" in html and "blk 3" in html and "3 masked" in html


def test_kernel_map_sliders_add_programs():
    view = KernelMapWidget(context_lens=(37, 12, 64), block_size=8)
    assert "<b>3 programs</b>" in view.map.value
    view.splits.value = 2
    assert "<b>6 programs</b>" in view.map.value and "no work" in view.map.value
    view.heads.value = 2
    assert "<b>12 programs</b>" in view.map.value
    steps = view.map.value.count("step ")
    view.tile.value = 64
    assert view.map.value.count("step ") < steps


def test_token_reads_name_block_and_slot_of_each_position():
    html = token_reads_html([5, 2], context_len=6, block_size=4)
    assert "pos 4<br>blk 2<br>slot 8" in html and "pos 0<br>blk 5<br>slot 20" in html


# -- waste breakdown (lesson 03) --
def test_waste_widget_redraws_when_block_size_or_workload_changes():
    from pagedlab.widgets import WasteWidget
    view = WasteWidget(num_requests=60, pool_tokens=16 * 1024)
    assert set(view.results) == {"Orca (Max)", "Orca (Pow2)", "Orca (Oracle)", "vLLM (paged)"}
    assert view.progress.value == 4 and bytes(view.image.value[:4]) == b"\x89PNG"
    image, paged = bytes(view.image.value), view.results["vLLM (paged)"]
    view.block_size.value = 128
    assert bytes(view.image.value) != image
    assert view.results["vLLM (paged)"].internal_fragmentation > paged.internal_fragmentation
    assert "paper" in view.table.value.lower()
    view.workload.value = "Alpaca"
    assert "Alpaca-like" in view.table.value and "96.3%" not in view.table.value


def test_paged_memory_holds_more_token_states_than_every_contiguous_policy():
    from pagedlab.widgets.waste import compare
    import pagedlab as pl
    # A pool much smaller than the workload, so that every system stays busy for a while.
    results = compare(pl.workloads.sharegpt_like(300, seed=1), pool_tokens=16 * 1024)
    paged = results.pop("vLLM (paged)")
    assert all(paged.token_states > other.token_states for other in results.values())
    assert all(paged.mean_batch_size > other.mean_batch_size for other in results.values())


# -- scheduler timeline (lesson 05) --
def test_timeline_marks_preemptions_and_a_watermark_reduces_them():
    from pagedlab.widgets import TimelineWidget
    view = TimelineWidget(num_requests=60, num_blocks=256, rate=1.0)
    before, image = view.result.preemptions, bytes(view.image.value)
    assert before > 0 and "preemptions" in view.summary.value
    view.watermark.value = 0.1
    assert view.result.preemptions < before
    assert bytes(view.image.value) != image and "watermark 10%" in view.summary.value


def test_timeline_pool_slider_changes_the_batch():
    from pagedlab.widgets import TimelineWidget
    view = TimelineWidget(num_requests=60, num_blocks=256, rate=1.0)
    small = view.result.mean_batch_size
    view.num_blocks.value = 1024
    assert view.result.mean_batch_size > small


# -- live serving (lesson 08) --
def test_serving_widget_redraws_the_pool_on_every_engine_step():
    torch = pytest.importorskip("torch")
    import pagedlab as pl
    from pagedlab.widgets import ServingWidget
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = pl.GPT(pl.GPTConfig(vocab_size=64, n_positions=64, n_embd=16, n_layer=1, n_head=2))
        prompts = [[1, 2, 3, 4, 5], [6, 7, 8], [9] * 12]
        view = ServingWidget(model, prompts, num_blocks=8, block_size=4, max_new_tokens=8)
        seen = []
        view.pool.observe(lambda change: seen.append(change["new"]), names="value")
        view.button.click()
    finally:
        torch.set_num_threads(threads)
    assert len(view.results) == 3 and all(len(out) == 8 for out in view.results)
    assert 1 < len(set(seen)) <= len(view.history)   # redrawn live, step by step
    assert bytes(view.image.value[:4]) == b"\x89PNG" and "done:" in view.outputs.value
    assert view.usage.description.startswith("pool ") and not view.button.disabled


def test_serving_widget_shows_an_impossible_request_instead_of_raising():
    torch = pytest.importorskip("torch")
    import pagedlab as pl
    from pagedlab.widgets import ServingWidget
    model = pl.GPT(pl.GPTConfig(vocab_size=64, n_positions=64, n_embd=16, n_layer=1, n_head=2))
    view = ServingWidget(model, [[1] * 40], num_blocks=8, block_size=4, max_new_tokens=8)
    assert view.generate() == [] and "OutOfBlocks" in view.status.value
