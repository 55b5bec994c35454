"""ex07 the Triton kernel's inner loop: block-table loads, masks, online softmax.

Runs in the Triton interpreter on a CPU (tiny shapes). See notebooks/07_triton_kernel.ipynb.

The answer is the learner's own Triton kernel ``my_paged_decode_kernel`` launched by the host
wrapper ``my_paged_attention``: a case counts only when the kernel the wrapper refers to by that
name is a ``@triton.jit`` kernel written in the notebook, was launched while the case ran, and
was handed the tensor the wrapper returns. The driver reports what it saw
(:mod:`.kernel_watch`); ``compare`` judges it. A plain-torch wrapper, however right its numbers,
does not solve the exercise.
"""
from __future__ import annotations

from . import ex06, kernel_watch, tensors
from .exercise import Case, Exercise, Mismatch, short

EXERCISE = Exercise(
    id="ex07", title="The paged-attention kernel's inner loop, in Triton",
    names={"paged_attention": "my_paged_attention"},
    forbidden=ex06.ATTENTION_ANSWERS,
    preload=("torch", "pagedlab.backend", "triton", "triton.language"),
    case_timeout=30.0,
)
TOLERANCE = 1e-4
KERNEL = "my_paged_decode_kernel"     # the learner's kernel, looked up in the wrapper's globals
WRAPPER = EXERCISE.names["paged_attention"]
MUST_LAUNCH = f"{WRAPPER} must launch your Triton kernel {KERNEL}"

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
    """The wrapper's output on the case, and what its kernel did meanwhile (``"kernel"``)."""
    function = objects["paged_attention"]
    state, kernel = kernel_watch.find_kernel(function, KERNEL)
    returned = []

    def call(*args, **kwargs):
        returned.append(function(*args, **kwargs))
        return returned[-1]

    with kernel_watch.count_launches(kernel) as launches:
        output = tensors.run_attention(call, data)
    return {**output, "kernel": kernel_watch.kernel_report(state, launches, returned[-1])}


def _kernel_mismatch(seen) -> Mismatch | None:
    """Why the learner's kernel did not compute the answer (None when it did)."""
    if not isinstance(seen, dict):
        return Mismatch("the kernel", f"a launch of your Triton kernel {KERNEL}",
                        f"no report of it: {MUST_LAUNCH}")
    state, launches = seen.get("state"), seen.get("launches")
    if state == "missing":
        return Mismatch("the kernel", f"a @triton.jit kernel named {KERNEL}, launched by {WRAPPER}",
                        f"the notebook defines no {KERNEL}: {MUST_LAUNCH}")
    if isinstance(state, str) and state.startswith("pagedlab's: "):
        return Mismatch("the kernel", "your own Triton kernel",
                        f"{KERNEL} is pagedlab's code ({short(state[12:], 100)}): write your own")
    if isinstance(state, str) and state.startswith("not a kernel: "):
        return Mismatch("the kernel", f"a @triton.jit kernel named {KERNEL}",
                        f"{KERNEL} is a {short(state[14:], 60)}, not a @triton.jit kernel: "
                        f"{MUST_LAUNCH}")
    if state != "ok":
        return Mismatch("the kernel", f"a @triton.jit kernel named {KERNEL}",
                        f"{short(repr(state), 60)}: {MUST_LAUNCH}")
    if not isinstance(launches, int) or isinstance(launches, bool) or launches < 1:
        return Mismatch("the kernel", f"a launch of your Triton kernel {KERNEL}",
                        f"no launch: {MUST_LAUNCH}")
    if seen.get("wrote_output") is not True:
        return Mismatch("the output", f"the tensor {KERNEL} was launched to write",
                        f"a tensor {KERNEL} was never handed: {WRAPPER} must return what your "
                        f"kernel computed")
    return None


def compare(case: Case, expected, got):
    if not isinstance(got, dict):
        return tensors.compare_attention(expected, got, TOLERANCE)
    mismatch = _kernel_mismatch(got.get("kernel"))
    if mismatch is not None:
        return mismatch
    output = {key: value for key, value in got.items() if key != "kernel"}
    return tensors.compare_attention(expected, output, TOLERANCE)
