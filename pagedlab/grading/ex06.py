"""ex06 paged attention in torch: read K/V through the block table, then attend.

See notebooks/06_attention_over_pages.ipynb.
"""
from __future__ import annotations

from . import tensors
from .exercise import Case, Exercise

ATTENTION_ANSWERS = {
    "pagedlab.attention": ("attention_reference", "gather_kv", "paged_attention_reference",
                           "paged_prefill_reference", "paged_attention"),
    "pagedlab.kernels.paged_attention": ("paged_attention_decode", "paged_decode_kernel",
                                         "reduce_splits_kernel"),
}

EXERCISE = Exercise(
    id="ex06", title="Paged attention in plain torch",
    names={"paged_attention": "my_paged_attention"},
    forbidden=ATTENTION_ANSWERS,
    preload=("torch", "pagedlab.backend"),
    case_timeout=20.0,
)
TOLERANCE = 1e-4


def cases(seed: int) -> list[Case]:
    batch = tensors.paged_batch
    return [
        Case("one sequence, one head, inside one block",
             "out = softmax(q . K^T * scale) @ V over the context; scale defaults to "
             "1 / sqrt(head_dim).", "run",
             batch(1, [3], num_heads=1, num_kv_heads=1)),
        Case("a partly filled last block",
             "Only context_lens[i] tokens count: slice the gathered keys and values to that "
             "length (the rest of the last block is garbage).", "run",
             batch(2, [6], num_heads=1, num_kv_heads=1)),
        Case("blocks in any order, with padded block tables",
             "Token t of a sequence is in block block_tables[i, t // block_size], row "
             "t % block_size; entries past the blocks it needs are padding (-1).", "run",
             batch(3, [9, 4], num_heads=1, num_kv_heads=1)),
        Case("grouped-query attention: several query heads per KV head",
             "Query head h reads KV head h // (num_heads // num_kv_heads).", "run",
             batch(4, [7, 5], num_heads=4, num_kv_heads=2)),
        Case("a batch of different lengths, one KV head for all (MQA)",
             "Handle each sequence with its own context length.", "run",
             batch(5, [1, 8, 13], num_heads=4, num_kv_heads=1)),
        Case(f"random batch (seed {seed})",
             "All of the above at once.", "run",
             batch(seed, [1 + (seed * 7 + i * 5) % 17 for i in range(3)], num_heads=4,
                   num_kv_heads=2)),
    ]


def reference() -> dict:
    from ..attention import paged_attention_reference
    return {"paged_attention": paged_attention_reference}


def run(objects: dict, data: dict):
    return tensors.run_attention(objects["paged_attention"], data)


def compare(case: Case, expected, got):
    return tensors.compare_attention(expected, got, TOLERANCE)
