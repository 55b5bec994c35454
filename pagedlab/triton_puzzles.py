"""Four small Triton puzzles before lesson 07's decode kernel, each checked against torch.

Each puzzle is one idea the decode kernel is built from: a masked load and store, a gather
through a block table, one online softmax walked tile by tile in ``exp2`` units, and a ``tl.dot``
of query rows padded to 16. The learner writes (or edits) the kernel in the notebook and hands it
to its check, which launches it on small inputs and compares with torch::

    check_masked_copy(my_kernel)        # -> PuzzleResult: passed, and one line saying why

A failed check names what broke (a write past the end, a block read in logical instead of
physical order, a missing rescale), never the fix's code. The reference kernels are here too
(``masked_copy_kernel``, ...), for the tests and for anyone stuck. Without Triton (macOS,
Windows) ``triton`` and ``tl`` below are stand-ins: a kernel can be defined and read, not run,
and each check says so and shows what torch gives instead.
See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pagedlab.backend  # first: it sets TRITON_INTERPRET before @triton.jit below runs
import torch

from .triton_compat import tl, triton  # stand-ins where Triton is missing (macOS, Windows)

HAVE_TRITON = pagedlab.backend.triton_status()["available"]


@dataclass
class PuzzleResult:
    """A check's verdict; its repr is the one line a notebook shows."""

    puzzle: str
    passed: bool
    message: str
    ran: bool = True  # False where Triton is missing: the kernel was not launched

    def __repr__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL" if self.ran else "NOT RUN"
        return f"{verdict} {self.puzzle}: {self.message}"

    def __bool__(self) -> bool:
        return self.passed


def _without_triton(puzzle: str, torch_says: str) -> PuzzleResult:
    return PuzzleResult(puzzle, False, f"Triton is not installed here, so the kernel was not run "
                                       f"(open the lesson in Colab to run it); {torch_says}",
                        ran=False)


# -- puzzle 1: a masked load and a masked store ----------------------------------------------------


@triton.jit
def masked_copy_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) the elements this program owns
    mask = offsets < n  # (BLOCK,) the last program's lanes past n are off
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0)  # (BLOCK,)
    tl.store(out_ptr + offsets, 2 * x, mask=mask)


def check_masked_copy(kernel=masked_copy_kernel, n: int = 37, block: int = 16) -> PuzzleResult:
    """``kernel(x_ptr, out_ptr, n, BLOCK)`` must write ``out[:n] = 2 * x[:n]`` and nothing past n."""
    name = "masked copy"
    programs = math.ceil(n / block)
    padded = programs * block  # every lane of every program lands inside these buffers
    x = torch.randn(padded, generator=torch.Generator().manual_seed(1))
    x[n:] = float("nan")  # what an unmasked load would read
    if not HAVE_TRITON:
        return _without_triton(name, f"torch gives out[:{n}] = 2 * x[:{n}].")
    out = torch.full((padded,), -7.0)  # -7 marks "never written"
    kernel[(programs,)](x, out, n, BLOCK=block)
    if not torch.equal(out[n:], torch.full((padded - n,), -7.0)):
        return PuzzleResult(name, False,
                            f"out[{n}:{padded}] was written: the last program's lanes past n = {n} "
                            f"stored too. The interpreter does not check bounds, and on a GPU such a "
                            f"store lands in someone else's memory; switch those lanes off.")
    error = (out[:n] - 2 * x[:n]).abs().max().item()
    if not error < 1e-6:
        wrong = int(((out[:n] - 2 * x[:n]).abs() > 1e-6).nonzero()[0])
        return PuzzleResult(name, False,
                            f"out[{wrong}] = {out[wrong]:.3f}, torch says {2 * x[wrong]:.3f}: "
                            f"program {wrong // block} owns elements {wrong // block * block}.."
                            f"{wrong // block * block + block - 1}; check its offsets.")
    return PuzzleResult(name, True, f"{programs} programs of {block} lanes, out[:{n}] equals "
                                    f"2 * x[:{n}], and the {padded - n} lanes past n stayed off.")


# -- puzzle 2: a gather through a block table ------------------------------------------------------


@triton.jit
def gather_kernel(cache_ptr, block_table_ptr, out_ptr, context_len, BLOCK_SIZE: tl.constexpr):
    logical = tl.program_id(0)  # one program per logical block of the sequence
    physical = tl.load(block_table_ptr + logical)  # where that block lives in the pool
    rows = tl.arange(0, BLOCK_SIZE)  # (B,) rows of the block
    positions = logical * BLOCK_SIZE + rows  # (B,) token positions in the sequence
    mask = positions < context_len  # (B,) the last block is only partly full
    values = tl.load(cache_ptr + physical * BLOCK_SIZE + rows, mask=mask)  # (B,)
    tl.store(out_ptr + positions, values, mask=mask)


def gather_case(context_len: int = 27, block_size: int = 8, num_blocks: int = 10, seed: int = 3):
    """A pool of ``num_blocks`` blocks where slot (block b, row r) holds 100 * b + r, and a
    shuffled block table for one sequence: (cache (num_blocks, block_size), block_table)."""
    cache = (100 * torch.arange(num_blocks)[:, None] + torch.arange(block_size)).float()
    needed = math.ceil(context_len / block_size)
    order = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed))
    return cache, order[:needed].to(torch.int32)


def check_gather(kernel=gather_kernel, context_len: int = 27, block_size: int = 8) -> PuzzleResult:
    """``kernel(cache_ptr, block_table_ptr, out_ptr, context_len, BLOCK_SIZE)``, one program per
    logical block, must write token ``t``'s value from block ``block_table[t // B]``, row ``t % B``."""
    name = "gather through a block table"
    cache, block_table = gather_case(context_len, block_size)
    expected = cache[block_table.long()].flatten()[:context_len]  # torch: the table, then rows
    if not HAVE_TRITON:
        return _without_triton(name, f"torch gives {expected[:10].int().tolist()}...")
    padded = len(block_table) * block_size
    out = torch.full((padded,), -7.0)
    kernel[(len(block_table),)](cache, block_table, out, context_len, BLOCK_SIZE=block_size)
    if not torch.equal(out[context_len:], torch.full((padded - context_len,), -7.0)):
        return PuzzleResult(name, False, f"positions {context_len}..{padded - 1} were written: the "
                                         f"last block holds only {context_len % block_size or block_size}"
                                         f" tokens, its other lanes must stay off.")
    wrong = (out[:context_len] != expected).nonzero()
    if len(wrong):
        t = int(wrong[0])
        got = int(out[t])
        table = block_table.tolist()
        told = (f"out[{t}] = {got}, which is block {got // 100} row {got % 100}; token {t} is "
                f"logical block {t // block_size}, which the table {table} puts in physical block "
                f"{table[t // block_size]}, row {t % block_size} (= {int(expected[t])}).")
        if torch.equal(out[:context_len], cache.flatten()[:context_len]):
            told += " The blocks were read in logical order, as if the pool were contiguous."
        return PuzzleResult(name, False, told)
    return PuzzleResult(name, True, f"{len(block_table)} programs read blocks {block_table.tolist()}"
                                    f" in that order; every one of the {context_len} tokens "
                                    f"equals torch's cache[block_table].")


# -- puzzle 3: an online softmax, one tile at a time -----------------------------------------------


@triton.jit
def online_softmax_kernel(scores_ptr, values_ptr, out_ptr, n, D: tl.constexpr, TILE: tl.constexpr):
    dims = tl.arange(0, D)  # (D,)
    m = tl.full([1], -1.0e30, dtype=tl.float32)  # running max, in log2 units
    l = tl.zeros([1], dtype=tl.float32)  # running sum of exp2(score - m)
    acc = tl.zeros([D], dtype=tl.float32)  # running sum of exp2(score - m) * value
    for start in range(0, n, TILE):
        tokens = start + tl.arange(0, TILE)  # (T,)
        mask = tokens < n  # (T,)
        s = tl.load(scores_ptr + tokens, mask=mask, other=float("-inf")) * 1.4426950408889634
        v = tl.load(values_ptr + tokens[:, None] * D + dims[None, :], mask=mask[:, None],
                    other=0.0)  # (T, D)
        m_new = tl.maximum(m, tl.max(s, axis=0))  # (1,)
        alpha = tl.exp2(m - m_new)  # (1,) how much the old terms shrink
        p = tl.exp2(s - m_new)  # (T,)
        l = l * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)  # (D,)
        m = m_new
    tl.store(out_ptr + dims, acc / l)


def check_online_softmax(kernel=online_softmax_kernel, n: int = 50, head_dim: int = 4,
                         tile: int = 16) -> PuzzleResult:
    """``kernel(scores_ptr, values_ptr, out_ptr, n, D, TILE)`` in one program must give
    ``softmax(scores) @ values``, walking the scores ``TILE`` at a time."""
    name = "online softmax"
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(n, generator=generator) * 3  # (n,)
    values = torch.randn(n, head_dim, generator=generator)  # (n, D)
    expected = scores.softmax(0) @ values  # (D,)
    if not HAVE_TRITON:
        return _without_triton(name, f"torch gives {[round(x, 4) for x in expected.tolist()]}.")
    out = torch.zeros(head_dim)
    kernel[(1,)](scores, values, out, n, D=head_dim, TILE=tile)
    error = (out - expected).abs().max().item()
    if error < 1e-5:
        return PuzzleResult(name, True, f"{math.ceil(n / tile)} tiles of {tile} give softmax(scores)"
                                        f" @ values within {error:.1e}; no score row was ever stored.")
    hints = [((scores * math.log(2)).softmax(0) @ values,
              "it equals a softmax of scores * ln(2): exp2 needs the scores in log2 units "
              "(times log2(e)) first"),
             (scores[(math.ceil(n / tile) - 1) * tile:].softmax(0) @ values[(math.ceil(n / tile) - 1) * tile:],
              "it equals the softmax of the last tile alone: what came before was lost")]
    said = next((why for found, why in hints if (out - found).abs().max() < 1e-4),
                "check the rescaling: when the max grows, the running sum and the weighted sum "
                "both shrink by the same factor")
    return PuzzleResult(name, False, f"max |kernel - torch| = {error:.2e}; {said}.")


# -- puzzle 4: a tl.dot tile with padded rows ------------------------------------------------------


@triton.jit
def dot_tile_kernel(q_ptr, k_ptr, out_ptr, num_rows, D: tl.constexpr, ROWS: tl.constexpr,
                    TILE: tl.constexpr):
    rows = tl.arange(0, ROWS)  # (R,) query heads, padded up to ROWS
    dims = tl.arange(0, D)  # (D,)
    keys = tl.arange(0, TILE)  # (T,)
    row_mask = rows < num_rows  # (R,) padded rows load zeros and are never stored
    q = tl.load(q_ptr + rows[:, None] * D + dims[None, :], mask=row_mask[:, None], other=0.0)
    k = tl.load(k_ptr + keys[None, :] * D + dims[:, None])  # (D, T) one column per key
    scores = tl.dot(q, k)  # (R, T)
    tl.store(out_ptr + rows[:, None] * TILE + keys[None, :], scores, mask=row_mask[:, None])


def check_dot_tile(kernel=dot_tile_kernel, num_rows: int = 4, rows: int = 16, head_dim: int = 32,
                   tile: int = 16) -> PuzzleResult:
    """``kernel(q_ptr, k_ptr, out_ptr, num_rows, D, ROWS, TILE)`` must give the (num_rows, TILE)
    scores ``q @ k.T`` with its query rows padded to ``ROWS`` inside the kernel."""
    name = "tl.dot tile"
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(num_rows, head_dim, generator=generator)  # (rows, D) fp32: see below
    k = torch.randn(tile, head_dim, generator=generator)  # (T, D)
    expected = q @ k.T  # (rows, T)
    if not HAVE_TRITON:
        return _without_triton(name, f"torch gives a ({num_rows}, {tile}) score tile.")
    out = torch.full((num_rows, tile), -7.0)
    kernel[(1,)](q, k, out, num_rows, D=head_dim, ROWS=rows, TILE=tile)
    error = (out - expected).abs().max().item()
    rule = ("" if min(rows, tile, head_dim) >= 16 else
            f" The interpreter accepts it, but a compiled tl.dot needs every dimension >= 16: "
            f"ROWS={rows} would not compile for a GPU.")
    if error < 1e-4:
        return PuzzleResult(name, True, f"{num_rows} real rows padded to {rows}, scores equal "
                                        f"q @ k.T within {error:.1e}.{rule}")
    return PuzzleResult(name, False, f"max |kernel - torch| = {error:.2e}: k must be loaded as "
                                     f"(D, T), one column per key, for q (R, D) @ k.{rule}")


PUZZLES = {"masked copy": check_masked_copy, "gather through a block table": check_gather,
           "online softmax": check_online_softmax, "tl.dot tile": check_dot_tile}
