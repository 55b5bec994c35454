"""Tensor cases for the attention exercises: inputs as plain lists, outputs judged by error.

The grader builds every input here (seeded), sends them as nested lists (the drivers make
tensors of them), and compares the learner's output with pagedlab's reference within a
tolerance. Tiny shapes keep the Triton
interpreter fast. See notebooks/06_attention_over_pages.ipynb.
"""
from __future__ import annotations

import math
import random
from typing import Any

from .exercise import Mismatch, short


def paged_batch(seed: int, context_lens: list[int], block_size: int = 4, num_heads: int = 2,
                num_kv_heads: int = 1, head_dim: int = 8, spare_blocks: int = 2) -> dict:
    """A decode batch whose blocks sit in shuffled order, with padding (-1) and unused blocks."""
    rng = random.Random(seed)
    per_seq = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(per_seq) + spare_blocks
    order = list(range(num_blocks))
    rng.shuffle(order)
    width = max(per_seq) + 1     # one padding column more than any sequence needs
    tables = []
    for count in per_seq:
        tables.append(order[:count] + [-1] * (width - count))
        order = order[count:]

    def normal(*shape: int) -> Any:
        if len(shape) == 1:
            return [round(rng.gauss(0.0, 1.0), 4) for _ in range(shape[0])]
        return [normal(*shape[1:]) for _ in range(shape[0])]

    return {"q": normal(len(context_lens), num_heads, head_dim),
            "k_cache": normal(num_blocks, block_size, num_kv_heads, head_dim),
            "v_cache": normal(num_blocks, block_size, num_kv_heads, head_dim),
            "block_tables": tables, "context_lens": list(context_lens),
            "scale": None if seed % 2 else round(1.0 / math.sqrt(head_dim) * 1.5, 4)}


def compare_attention(expected: dict, got: Any, tolerance: float) -> Mismatch | None:
    if not isinstance(got, dict) or "shape" not in got:
        return Mismatch("the output", f"a tensor of shape {tuple(expected['shape'])}", short(got))
    if got["shape"] != expected["shape"]:
        return Mismatch("the output's shape", str(tuple(expected["shape"])), str(tuple(got["shape"])))
    values = got.get("values")
    if not isinstance(values, list) or len(values) != len(expected["values"]):
        return Mismatch("the output's values", f"{len(expected['values'])} numbers", short(values))
    worst, at = 0.0, 0
    for index, (want, have) in enumerate(zip(expected["values"], values)):
        error = abs(want - have) if isinstance(have, (int, float)) else math.inf
        if not error <= worst:      # also catches NaN
            worst, at = (math.inf if error != error else error), index
    if worst <= tolerance:
        return None
    shape = expected["shape"]
    seq, rest = divmod(at, shape[1] * shape[2])
    head, dim = divmod(rest, shape[2])
    return Mismatch(f"out[{seq}, {head}, {dim}] (the worst of all {len(values)} numbers)",
                    f"{expected['values'][at]:.5f} (within {tolerance:g})",
                    f"{values[at]!r}, off by {worst:.3g}")
