"""Lesson 07's Triton puzzles: the reference kernels pass their checks, and each check names
what a typical wrong kernel broke."""
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from pagedlab import triton_puzzles as puzzles  # noqa: E402
from pagedlab.triton_puzzles import tl, triton  # noqa: E402


@pytest.mark.parametrize("name", list(puzzles.PUZZLES))
def test_reference_kernel_passes_its_check(name):
    result = puzzles.PUZZLES[name]()
    assert result.passed, result
    assert repr(result).startswith(f"PASS {name}:")


@triton.jit
def unmasked_store_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + offsets, 2 * x)  # no mask: the tail lanes write past n


def test_a_store_without_mask_is_caught_past_n():
    result = puzzles.check_masked_copy(unmasked_store_kernel)
    assert not result.passed and "past n = 37" in result.message


@triton.jit
def logical_order_kernel(cache_ptr, block_table_ptr, out_ptr, context_len,
                         BLOCK_SIZE: tl.constexpr):
    logical = tl.program_id(0)
    positions = logical * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = positions < context_len
    tl.store(out_ptr + positions, tl.load(cache_ptr + positions, mask=mask), mask=mask)


def test_reading_blocks_in_logical_order_is_named():
    result = puzzles.check_gather(logical_order_kernel)
    assert not result.passed
    assert "logical order" in result.message and "physical block" in result.message


@triton.jit
def natural_exp2_kernel(scores_ptr, values_ptr, out_ptr, n, D: tl.constexpr, TILE: tl.constexpr):
    dims = tl.arange(0, D)
    m = tl.full([1], -1.0e30, dtype=tl.float32)
    l = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([D], dtype=tl.float32)
    for start in range(0, n, TILE):
        tokens = start + tl.arange(0, TILE)
        mask = tokens < n
        s = tl.load(scores_ptr + tokens, mask=mask, other=float("-inf"))  # no log2(e)
        v = tl.load(values_ptr + tokens[:, None] * D + dims[None, :], mask=mask[:, None], other=0.0)
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new)
        l = l * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    tl.store(out_ptr + dims, acc / l)


def test_exp2_without_log2_e_is_named():
    result = puzzles.check_online_softmax(natural_exp2_kernel)
    assert not result.passed and "log2(e)" in result.message


@triton.jit
def forgetful_kernel(scores_ptr, values_ptr, out_ptr, n, D: tl.constexpr, TILE: tl.constexpr):
    dims = tl.arange(0, D)
    l = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([D], dtype=tl.float32)
    for start in range(0, n, TILE):
        tokens = start + tl.arange(0, TILE)
        mask = tokens < n
        s = tl.load(scores_ptr + tokens, mask=mask, other=float("-inf")) * 1.4426950408889634
        v = tl.load(values_ptr + tokens[:, None] * D + dims[None, :], mask=mask[:, None], other=0.0)
        p = tl.exp2(s - tl.max(s, axis=0))
        l = tl.sum(p, axis=0) + 0 * l  # each tile starts over
        acc = tl.sum(p[:, None] * v, axis=0) + 0 * acc
    tl.store(out_ptr + dims, acc / l)


def test_a_softmax_that_forgets_earlier_tiles_is_named():
    result = puzzles.check_online_softmax(forgetful_kernel)
    assert not result.passed and "last tile alone" in result.message


def test_dot_tile_says_the_rule_of_16_when_rows_are_fewer():
    result = puzzles.check_dot_tile(rows=8)
    assert result.passed  # the interpreter accepts any size
    assert ">= 16" in result.message and "ROWS=8" in result.message


def test_without_triton_kernels_still_define_and_checks_say_so():
    script = ("import sys; sys.modules['triton'] = None\n"
              "from pagedlab import triton_puzzles as p\n"
              "@p.triton.jit\n"
              "def k(x_ptr, n, BLOCK: p.tl.constexpr):\n"
              "    pass\n"
              "for check in p.PUZZLES.values():\n"
              "    print(repr(check(k)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("NOT RUN") and "Triton is not installed" in line
                                for line in lines)
