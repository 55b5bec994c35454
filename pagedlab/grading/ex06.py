"""ex06 paged attention in torch: read K/V through the block table, then attend.

See notebooks/06_attention_over_pages.ipynb.
"""
from __future__ import annotations

import random

from . import tensors
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex06", title="Paged attention in plain torch",
    names={"paged_attention": "my_paged_attention"},
    case_timeout=20.0,
)
TOLERANCE = 1e-4


def batches(seed: int) -> list[dict]:
    """The six decode batches of a run: each case's shape, with lengths and values drawn."""
    rng = random.Random(f"attention:{seed}")
    draw = [rng.randrange(1, 1 << 30) for _ in range(6)]
    batch = tensors.paged_batch
    return [batch(draw[0], [rng.randint(2, 4)], num_heads=1, num_kv_heads=1),   # 1 would hide scale
            batch(draw[1], [rng.choice([5, 6, 7, 9, 10, 11])], num_heads=1, num_kv_heads=1),
            batch(draw[2], [rng.randint(5, 12), rng.randint(2, 8)], num_heads=1, num_kv_heads=1),
            batch(draw[3], [rng.randint(3, 10), rng.randint(3, 10)], num_heads=4, num_kv_heads=2),
            batch(draw[4], [1, rng.randint(5, 9), rng.randint(10, 16)], num_heads=4, num_kv_heads=1),
            batch(draw[5], [rng.randint(1, 17) for _ in range(3)], num_heads=4, num_kv_heads=2)]


NAMES = ["one sequence, one head, inside one block", "a partly filled last block",
         "blocks in any order, with padded block tables",
         "grouped-query attention: several query heads per KV head",
         "a batch of different lengths, one KV head for all (MQA)", "a random batch"]
HINTS = ["out = softmax(q . K^T * scale) @ V over the context; scale defaults to 1 / sqrt(head_dim).",
         "Only context_lens[i] tokens count: slice the gathered keys and values to that length "
         "(the rest of the last block is garbage).",
         "Token t of a sequence is in block block_tables[i, t // block_size], row t % block_size; "
         "entries past the blocks it needs are padding (-1).",
         "Query head h reads KV head h // (num_heads // num_kv_heads).",
         "Handle each sequence with its own context length.", "All of the above at once."]


def cases(seed: int) -> list[Case]:
    return [Case(name, hint, "run_attention", data)
            for name, hint, data in zip(NAMES, HINTS, batches(seed))]


def reference() -> dict:
    from ..attention import paged_attention_reference
    return {"paged_attention": paged_attention_reference}


def compare(case: Case, expected, got):
    return tensors.compare_attention(expected, got, TOLERANCE)
