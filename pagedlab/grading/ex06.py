"""ex06 paged attention in torch: read K/V through the block table, then attend.

See notebooks/06_attention_over_pages.ipynb.
"""
from __future__ import annotations

import dataclasses
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
HINTS = ["Ordinary attention over the sequence's context: every query scores every key, a "
         "softmax turns the scores into weights, the weights mix the values. Mind the scale "
         "argument.",
         "Only context_lens[i] tokens are context: whatever else sits in the last block is not.",
         "Blocks can be anywhere in the pool, in any order: the table says where each one is, "
         "and its entries past the blocks a sequence needs are padding.",
         "Several query heads share one KV head: neighbouring query heads read the same one.",
         "Each sequence has its own context length and its own table.", "All of the above at once."]
MISTAKES = {   # what a wrong output shows, when it equals the reference's with this mistake
    "no scale": "The scores were not multiplied by the scale.",
    "default scale": "The scale passed in was ignored: the default is only for scale=None.",
    "unmasked": "Tokens past context_len took part: the rest of the last block holds no context.",
    "no table": "The logical block number was used as the physical one: the block table says "
                "where each block of the sequence lives.",
    "repeat": "Query head h read the wrong KV head: the query heads of one group are neighbours "
              "(heads 0 and 1 share KV head 0 when there are two per group), not every "
              "num_kv_heads-th head.",
}


def cases(seed: int) -> list[Case]:
    return [Case(name, hint, "run_attention", data)
            for name, hint, data in zip(NAMES, HINTS, batches(seed))]


def reference() -> dict:
    from ..attention import paged_attention_reference
    return {"paged_attention": paged_attention_reference}


def compare(case: Case, expected, got):
    mismatch = tensors.compare_attention(expected, got, TOLERANCE)
    if mismatch is None or not isinstance(got, dict) or got.get("shape") != expected["shape"]:
        return mismatch
    return dataclasses.replace(mismatch, hint=diagnose(case.data, got.get("values")))


def with_mistake(data: dict, mistake: str) -> list:
    """The output of paged attention on ``data`` with one of MISTAKES (None where unknown)."""
    from .ex07 import emulate      # the same paged attention, number by number
    if mistake in ("no scale", "unmasked", "no table"):
        return emulate(data, mistake)
    if mistake == "default scale":
        return emulate({**data, "scale": None})
    num_heads, num_kv_heads = len(data["q"][0]), len(data["k_cache"][0][0])
    group = num_heads // num_kv_heads
    where = [(head % num_kv_heads) * group + head // num_kv_heads for head in range(num_heads)]
    q = [[None] * num_heads for _ in data["q"]]   # head h moved to where its wrong KV head is read
    for seq, heads in enumerate(data["q"]):
        for head, values in enumerate(heads):
            q[seq][where[head]] = values
    out = emulate({**data, "q": q})
    head_dim = len(data["q"][0][0])
    return [out[(seq * num_heads + where[head]) * head_dim + dim] for seq in range(len(q))
            for head in range(num_heads) for dim in range(head_dim)]


def diagnose(data: dict, values) -> str:
    """The one mistake whose output the learner's equals ("" if none, or if it makes no
    difference on this case)."""
    from .ex07 import emulate
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        return ""
    right = emulate(data)
    for mistake, text in MISTAKES.items():
        guess = with_mistake(data, mistake)
        known = [(v, g, r) for v, g, r in zip(values, guess, right) if g is not None]
        if len(guess) == len(values) and any(abs(g - r) > 1e-3 for _, g, r in known) \
                and all(abs(v - g) <= 1e-3 for v, g, _ in known):
            return text
    return ""
