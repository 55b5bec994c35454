"""ex07 the Triton kernel's inner loop: block-table loads, masks, online softmax.

Runs in the Triton interpreter on a CPU (tiny shapes). See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

from . import ex06, tensors
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex07", title="The paged-attention kernel's inner loop, in Triton",
    names={"paged_attention": "my_paged_attention"},
    forbidden=ex06.ATTENTION_ANSWERS,
    preload=("torch", "pagedlab.backend", "triton", "triton.language"),
    case_timeout=30.0,
)
TOLERANCE = 1e-4

HINTS = {
    "one sequence, one head, inside one block":
        "Load the physical block id from the block table, then the block's keys; scores = "
        "sum(k * q) * scale; keep a running max m, sum l and weighted sum acc.",
    "a partly filled last block":
        "Mask the tokens past context_len: their scores must be -inf (and their loads masked).",
    "blocks in any order, with padded block tables":
        "Read block_tables[seq, logical_block] for every block: blocks can be anywhere.",
    "grouped-query attention: several query heads per KV head":
        "kv_head = head // QUERIES_PER_KV picks the keys and values this program reads.",
    "a batch of different lengths, one KV head for all (MQA)":
        "Each program loops over its own sequence's blocks: cdiv(context_len, BLOCK_SIZE).",
}


def cases(seed: int) -> list[Case]:
    return [Case(case.name, HINTS.get(case.name, "Online softmax: when the max grows, rescale "
                                      "l and acc by exp(m_old - m_new)."), case.driver, case.data)
            for case in ex06.cases(seed)]


def reference() -> dict:
    from ..attention import paged_attention_reference
    return {"paged_attention": paged_attention_reference}


def run(objects: dict, data: dict):
    return tensors.run_attention(objects["paged_attention"], data)


def compare(case: Case, expected, got):
    return tensors.compare_attention(expected, got, TOLERANCE)
