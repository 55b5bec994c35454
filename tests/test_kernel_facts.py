"""Lesson 07's compiled facts: the shipped compile report covers a T4 and an H100 at every block
size, says what the lesson says about it, and is what compile_report makes today."""
import pytest

from pagedlab import kernel_facts


def _at(facts, arch, block_size):
    return next(f for f in facts if f.arch == arch and f.block_size == block_size)


def test_the_shipped_report_has_the_decode_loop_on_a_t4_and_an_h100_at_every_block_size():
    assert kernel_facts.SHIPPED.exists()
    found = {(f.arch, f.block_size) for f in kernel_facts.loop_facts()}
    assert found == {(arch, size) for arch in ("sm_75", "sm_90") for size in (8, 16, 32, 128)}


def test_the_h100_loop_runs_on_tensor_cores_and_the_t4_loop_on_fmas():
    facts = kernel_facts.loop_facts()
    h100, t4 = _at(facts, "sm_90", 16), _at(facts, "sm_75", 16)
    assert h100.mix.get("tensor-core matmul", 0) > 0 and "HMMA" in h100.reading
    assert t4.mix.get("tensor-core matmul", 0) == 0 and "FFMA" in t4.reading
    assert 3 < t4.instructions_per_token / h100.instructions_per_token < 5  # "about four times"
    assert all(f.registers < 255 for f in facts)  # no spills in what the lesson shows


def test_block_8_costs_more_per_token_and_16_up_all_cost_the_same():
    facts = kernel_facts.loop_facts()
    for arch in ("sm_75", "sm_90"):
        per_token = {s: _at(facts, arch, s).instructions_per_token for s in (8, 16, 32, 128)}
        assert per_token[8] > per_token[16] == per_token[32] == per_token[128]
        assert _at(facts, arch, 8).table_loads_per_token == 2 * _at(facts, arch, 16).table_loads_per_token


def test_the_block_size_table_names_every_gpu_and_block_size():
    table = kernel_facts.block_size_table()
    assert "Tesla T4 (sm_75)" in table and "H100" in table and "+0.0%" in table


@pytest.mark.slow
def test_the_shipped_report_is_what_compile_report_makes_with_this_triton(tmp_path):
    triton = pytest.importorskip("triton")
    shipped = kernel_facts.load()
    if shipped["triton"] != triton.__version__:
        pytest.skip(f"shipped from Triton {shipped['triton']}, this is {triton.__version__}")
    fresh = kernel_facts.regenerate(tmp_path / "compile_lesson07.json")
    key = lambda f: (f.arch, f.block_size, f.registers, f.shared_bytes, f.loop_instructions)  # noqa: E731
    assert sorted(map(key, kernel_facts.loop_facts(fresh))) == \
        sorted(map(key, kernel_facts.loop_facts(shipped))), \
        "the kernel or its launch changed: python -c 'from pagedlab import kernel_facts; kernel_facts.regenerate()'"


def test_the_paging_cost_figure_draws_a_bar_per_gpu_and_block_size():
    from pagedlab.widgets import paging_cost_figure, paging_cost_png

    figure = paging_cost_figure(kernel_facts.loop_facts())
    assert len(figure.axes[0].patches) == 2 * 4
    assert "counts, not times" in figure.axes[0].get_title()
    assert paging_cost_png(kernel_facts.loop_facts()).startswith(b"\x89PNG")


def test_the_bandwidth_figure_calls_contiguous_sdpa_a_baseline():
    from pagedlab.widgets import bandwidth_figure

    rows = [{"batch": 8, "context": 512, "method": m, "GBps": g}
            for m, g in (("paged kernel", 900.0), ("sdpa contiguous", 1000.0),
                         ("gather + sdpa", 300.0))]
    figure = bandwidth_figure({"results": rows, "copy_bandwidth_GBps": 2000.0, "device": "GPU"})
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "SDPA, contiguous K/V (baseline)" in labels and len(figure.axes[0].patches) == 3
