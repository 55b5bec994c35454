"""ex09 the unified kernel's query tile and causal mask, in Triton.

Runs in the Triton interpreter on a CPU (tiny shapes). See notebooks/07b_the_unified_kernel.ipynb.

Judged from outside, as ex07 is (:mod:`.kernel_check`): the grader finds the learner's
``@triton.jit`` kernel ``my_unified_kernel`` in the notebook and checks that
``my_unified_attention`` launches it; the sandbox defines that kernel alone, and the driver
launches it on a packed step it allocated (:func:`.drivers.run_unified_kernel`). The reference
is :func:`pagedlab.paged_prefill_reference`. A failing case's hint says which rule of the mask
the learner's numbers follow instead (:func:`diagnose`).
"""
from __future__ import annotations

import dataclasses
import math
import random

from . import kernel_check, notebook, tensors
from .exercise import Case, Exercise

KERNEL, WRAPPER = "my_unified_kernel", "my_unified_attention"
EXERCISE = Exercise(
    id="ex09", title="The unified kernel's query tile and causal mask, in Triton",
    names={"paged_attention": WRAPPER},
    case_timeout=30.0,
)
SANDBOX_NAMES = {"kernel": KERNEL}                  # what the sandbox hands the driver
REFERENCE_DRIVER = "run_prefill"                    # the reference is a function, not a kernel
TOLERANCE = 1e-4


def batch(seed: int, context_lens: list[int], query_lens: list[int], num_heads: int = 1,
          num_kv_heads: int = 1, query_tile: int = 4) -> dict:
    """A packed step: sequence i brings its last query_lens[i] of context_lens[i] tokens."""
    data = tensors.paged_batch(seed, context_lens, num_heads=num_heads, num_kv_heads=num_kv_heads)
    rng = random.Random(f"ex09:q:{seed}")
    head_dim = len(data["q"][0][0])
    data["q"] = [[[round(rng.gauss(0.0, 1.0), 4) for _ in range(head_dim)] for _ in range(num_heads)]
                 for _ in range(sum(query_lens))]
    data.update(query_lens=list(query_lens), query_tile=query_tile)
    return data


def cases(seed: int) -> list[Case]:
    rng = random.Random(f"ex09:{seed}")
    draw = [rng.randrange(1, 1 << 30) for _ in range(6)]
    prompt = rng.randint(5, 8)
    chunk, prefix = rng.randint(3, 6), rng.randint(4, 9)
    partial = rng.choice([5, 6, 7])
    decodes = [rng.randint(2, 12) for _ in range(3)]
    mixed = [(1, rng.randint(3, 10)), (rng.randint(2, 4), rng.randint(6, 12)),
             (rng.randint(3, 6), 0)]
    rng.shuffle(mixed)
    busy = [(n, rng.randint(0, 6)) for n in (rng.randint(1, 7) for _ in range(3))]
    steps = [
        batch(draw[0], [prompt], [prompt]),
        batch(draw[1], [prefix + chunk], [chunk]),
        batch(draw[2], [partial + rng.randint(0, 4)], [partial]),
        batch(draw[3], decodes, [1, 1, 1], num_heads=4, num_kv_heads=2, query_tile=2),
        batch(draw[4], [n + before for n, before in mixed], [n for n, _ in mixed],
              num_heads=4, num_kv_heads=2, query_tile=2),
        batch(draw[5], [n + before for n, before in busy], [n for n, _ in busy],
              num_heads=2, num_kv_heads=1, query_tile=rng.choice([2, 4])),
    ]
    return [Case(name, hint, "run_unified_kernel", data)
            for (name, hint), data in zip(NAMES_AND_HINTS, steps)]


NAMES_AND_HINTS = [
    ("a whole prompt: each query sees the keys up to its own",
     "Row r of a tile is one of the sequence's new tokens; it sees the keys at or before its "
     "own position."),
    ("a chunk after a cached prefix: the new tokens end the context",
     "The new tokens are the last query_len of the context_len tokens: their positions count "
     "the part already in the cache."),
    ("a partial last query tile", "Rows past the sequence's new tokens are no queries; the tile "
     "needs the keys up to its last real query."),
    ("decodes are query tiles of one", "A decode is one query at the context's last position: "
     "it sees the whole context."),
    ("a mixed step: decodes, a chunk and a whole prompt, packed",
     "Each sequence's tiles use its own query_len and context_len."),
    ("a random step", "All of the above at once."),
]


def cells(data: dict) -> list:
    """What the sandbox runs: the kernel alone (see :mod:`.kernel_check`)."""
    return kernel_check.kernel_cells(notebook.code_cells(data), KERNEL, WRAPPER)


def check_objects(objects: dict) -> dict:
    """For ``check`` in the notebook: the kernel the wrapper refers to by name."""
    namespace = getattr(objects["paged_attention"], "__globals__", {})
    if KERNEL not in namespace:
        raise NameError(f"define {KERNEL} (a @triton.jit kernel) next to {WRAPPER}")
    return {"kernel": namespace[KERNEL]}


def reference() -> dict:
    from ..attention import paged_prefill_reference
    return {"paged_attention": paged_prefill_reference}


def compare(case: Case, expected, got):
    mismatch = tensors.compare_attention(expected, got, TOLERANCE)
    if mismatch is None or not isinstance(got, dict) or got.get("shape") != expected["shape"]:
        return mismatch
    return dataclasses.replace(mismatch, hint=diagnose(case.data, got.get("values")))


# ------------------------------------------------------------------ what a wrong output shows
def _loaded(query: dict, kv_end: int) -> int:
    """Keys the tile's loop loads for real: whole blocks up to kv_end, within the context."""
    block = query["block"]
    return min(query["context"], -(-kv_end // block) * block)


def _kv_end(query: dict) -> int:
    """The right end of the keys the query's tile needs: its last real query's position + 1."""
    tile = query["tile"]
    last = min(query["new"], (query["j"] // tile + 1) * tile) - 1
    return query["context"] - query["new"] + last + 1


MISTAKES = {   # which keys a query sees (``query``: its j, pos, context, new, tile, block)
    "from zero": (lambda key, query: key <= query["j"],
                  "Query positions were counted from 0: the new tokens are the last query_len "
                  "of the context, after the part already in the cache."),
    "no causal mask": (lambda key, query: key < _loaded(query, _kv_end(query)),
                       "A query saw keys after its own position: it may see only the keys at or "
                       "before it (the causal mask)."),
    "strictly before": (lambda key, query: key < query["pos"],
                        "A query must see its own key too: at or before its position, not only "
                        "before it."),
    "tile stops early": (lambda key, query: key <= query["pos"] and key < _loaded(
        query, min(query["new"], (query["j"] // query["tile"] + 1) * query["tile"])),
                         "The tile stopped before the keys its last query sees: kv_end counts "
                         "the tokens before the new ones too."),
}


def attend(data: dict, visible) -> list[float]:
    """Attention for the packed step where a query sees the keys ``visible(key, query)`` says;
    NaN for a query that sees none."""
    import torch
    q = torch.tensor(data["q"], dtype=torch.float64)                      # (T, H, D)
    k_cache = torch.tensor(data["k_cache"], dtype=torch.float64)          # (N, B, KV, D)
    v_cache = torch.tensor(data["v_cache"], dtype=torch.float64)
    block_size, num_kv_heads, head_dim = k_cache.shape[1:]
    group = q.shape[1] // num_kv_heads
    scale = 1.0 / math.sqrt(head_dim) if data["scale"] is None else data["scale"]
    rows, start = [], 0
    for seq, (context, new) in enumerate(zip(data["context_lens"], data["query_lens"])):
        blocks = torch.tensor(data["block_tables"][seq][: -(-context // block_size)])
        k = k_cache[blocks].flatten(0, 1)[:context].repeat_interleave(group, dim=1)  # (C, H, D)
        v = v_cache[blocks].flatten(0, 1)[:context].repeat_interleave(group, dim=1)
        for j in range(new):
            query = {"j": j, "pos": context - new + j, "context": context, "new": new,
                     "tile": data["query_tile"], "block": block_size}
            mask = torch.tensor([bool(visible(key, query)) for key in range(context)])
            scores = torch.einsum("hd,chd->hc", q[start + j], k) * scale         # (H, C)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)       # (H, C)
            rows.append(torch.einsum("hc,chd->hd", weights, v))                  # (H, D)
        start += new
    return torch.stack(rows).flatten().tolist()


def diagnose(data: dict, values) -> str:
    """The rule of the mask the learner's numbers follow instead ("" if none)."""
    right = attend(data, lambda key, query: key <= query["pos"])
    if not isinstance(values, list) or len(values) != len(right) or \
            not all(isinstance(v, (int, float)) for v in values):
        return ""
    for visible, text in MISTAKES.values():
        guess = attend(data, visible)
        close = [abs(v - g) <= 1e-3 if g == g else v != v for v, g in zip(values, guess)]
        if all(close) and any(not (abs(g - r) <= 1e-3) for g, r in zip(guess, right)):
            return text
    return ""
