"""ex07 the Triton kernel's inner loop: block-table loads, masks, online softmax.

Runs in the Triton interpreter on a CPU (tiny shapes). See notebooks/07_triton_kernel.ipynb.

Judged from outside: the grader finds the learner's ``@triton.jit`` kernel
``my_paged_decode_kernel`` in the notebook and checks that ``my_paged_attention`` launches it
(:mod:`.kernel_check`); the sandbox defines that kernel alone, and the driver launches it on
buffers it allocated and reads what it wrote (:func:`.drivers.run_kernel`). A torch answer in
the wrapper, however right, computes nothing here.
"""
from __future__ import annotations

import dataclasses
import math

from . import ex06, kernel_check, notebook, tensors
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex07", title="The paged-attention kernel's inner loop, in Triton",
    names={"paged_attention": "my_paged_attention"},
    case_timeout=30.0,
)
SANDBOX_NAMES = {"kernel": kernel_check.KERNEL}     # what the sandbox hands the driver
REFERENCE_DRIVER = "run_attention"                  # the reference is a function, not a kernel
TOLERANCE = 1e-4

HINTS = [   # what each case tests; the mismatch's own diagnosis (MISTAKES) replaces it
    "Every block of the sequence counts: follow the block table to each one, score its keys "
    "against the query, and fold the scores into the running softmax as you go.",
    "The last block is only partly filled: the rows past context_len hold no context, so they "
    "must take no share of the softmax (and must not be loaded).",
    "Blocks can be anywhere in the cache: where logical block i lives is in the table.",
    "Several query heads share one KV head: the offsets of your loads must pick the keys and "
    "values of this program's kv_head (worked out for you above the loop).",
    "Sequences have different lengths: each program stops after its own sequence's last block.",
    "A later block can hold a larger score than any before it: what was summed under the older "
    "maximum must be brought to the new one.",
]


def cases(seed: int) -> list[Case]:
    return [Case(name, hint, "run_kernel", data)
            for name, hint, data in zip(ex06.NAMES, HINTS, ex06.batches(seed))]


def cells(data: dict) -> list:
    """What the sandbox runs: the kernel alone (see :mod:`.kernel_check`)."""
    return kernel_check.kernel_cells(notebook.code_cells(data))


def check_objects(objects: dict) -> dict:
    """For ``check`` in the notebook: the kernel the wrapper refers to by name."""
    namespace = getattr(objects["paged_attention"], "__globals__", {})
    if kernel_check.KERNEL not in namespace:
        raise NameError(f"define {kernel_check.KERNEL} (a @triton.jit kernel) next to "
                        f"{kernel_check.WRAPPER}")
    return {"kernel": namespace[kernel_check.KERNEL]}


def reference() -> dict:
    from ..attention import paged_attention_reference
    return {"paged_attention": paged_attention_reference}


def compare(case: Case, expected, got):
    mismatch = tensors.compare_attention(expected, got, TOLERANCE)
    if mismatch is None or not isinstance(got, dict) or got.get("shape") != expected["shape"]:
        return mismatch
    return dataclasses.replace(mismatch, hint=diagnose(case.data, got.get("values")))


# ------------------------------------------------------------------ what a wrong output shows
MISTAKES = {   # kernel with one typical mistake -> what it shows
    "query head": "Your loads read the query head's keys and values. With grouped-query attention "
                  "a program reads its kv_head's (worked out above the loop): the offsets into "
                  "the cache must use kv_head.",
    "zeros scored": "The tokens past context_len still take part: masked loads give zeros, which "
                    "still score 0 and take a share of the softmax. Their scores must be -inf.",
    "unmasked": "Tokens past context_len were attended to: the rest of the last block holds no "
                "context, so its rows must be masked (loads and scores).",
    "no table": "The logical block number was used as the physical one: the block table says "
                "where each block of the sequence lives.",
    "no rescale": "The running sum and accumulator were not rescaled when the running max grew: "
                  "what was added under an older max must shrink with it.",
    "no scale": "The scores were not multiplied by scale.",
}


def emulate(data: dict, mistake: str = "") -> list:
    """What the exercise's kernel computes on ``data`` with one typical ``mistake``: the same
    address arithmetic over the flat cache, block by block, with the same online softmax.
    A (sequence, head) whose program would read past the cache (undefined in the real kernel)
    gives None for each of its numbers."""
    k_cache, v_cache = (_flat(data[name]) for name in ("k_cache", "v_cache"))
    num_kv_heads, head_dim = len(data["k_cache"][0][0]), len(data["k_cache"][0][0][0])
    num_heads = len(data["q"][0])
    group = num_heads // num_kv_heads
    scale = 1.0 / math.sqrt(head_dim) if data["scale"] is None else data["scale"]
    scale = 1.0 if mistake == "no scale" else scale
    out = []
    for seq, context_len in enumerate(data["context_lens"]):
        for head in range(num_heads):
            kv_head = head if mistake == "query head" else head // group
            out += _program(data, k_cache, v_cache, seq, head, kv_head, context_len, scale,
                            mistake) or [None] * head_dim
    return out


def _program(data, k_cache, v_cache, seq, head, kv_head, context_len, scale, mistake):
    """One program's output (head_dim numbers), or None if it reads past the cache."""
    block_size, num_kv_heads = len(data["k_cache"][0]), len(data["k_cache"][0][0])
    head_dim = len(data["k_cache"][0][0][0])
    q = data["q"][seq][head]
    m, l, acc = -1.0e30, 0.0, [0.0] * head_dim
    for logical in range(-(-context_len // block_size)):
        physical = logical if mistake == "no table" else data["block_tables"][seq][logical]
        scores, values = [], []
        for row in range(block_size):
            inside = logical * block_size + row < context_len
            start = ((physical * block_size + row) * num_kv_heads + kv_head) * head_dim
            if (inside or mistake == "unmasked") and start + head_dim > len(k_cache):
                return None
            loaded = inside or mistake == "unmasked"
            k = k_cache[start:start + head_dim] if loaded else [0.0] * head_dim
            values.append(v_cache[start:start + head_dim] if loaded else [0.0] * head_dim)
            score = sum(a * b for a, b in zip(k, q)) * scale
            scored = inside or mistake in ("zeros scored", "unmasked")
            scores.append(score if scored else -math.inf)
        m_new = max(m, max(scores))
        alpha = 1.0 if mistake == "no rescale" else math.exp(m - m_new)
        weights = [math.exp(s - m_new) if s != -math.inf else 0.0 for s in scores]
        l = l * alpha + sum(weights)
        acc = [a * alpha + sum(w * v[d] for w, v in zip(weights, values))
               for d, a in enumerate(acc)]
        m = m_new
    return [a / l for a in acc]


def _flat(nested) -> list[float]:
    while nested and isinstance(nested[0], list):
        nested = [x for row in nested for x in row]
    return nested


def diagnose(data: dict, values) -> str:
    """The mistake whose output the learner's equals ("" if none does)."""
    if not isinstance(values, list):
        return ""
    right = emulate(data)
    if len(right) != len(values) or not all(isinstance(v, (int, float)) for v in values):
        return ""
    for mistake, text in MISTAKES.items():
        guess = emulate(data, mistake)   # it must explain every number it can, and some be wrong
        known = [(v, g, r) for v, g, r in zip(values, guess, right) if g is not None]
        if any(abs(g - r) > 1e-3 for _, g, r in known) and all(abs(v - g) <= 1e-3 for v, g, _ in known):
            return text
    return ""
