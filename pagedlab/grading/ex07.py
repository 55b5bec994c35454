"""ex07 the Triton kernel's inner loop: block-table loads, masks, online softmax.

Runs in the Triton interpreter on a CPU (tiny shapes). See notebooks/07_triton_kernel.ipynb.

Judged from outside: the grader finds the learner's ``@triton.jit`` kernel
``my_paged_decode_kernel`` in the notebook and checks that ``my_paged_attention`` launches it
(:mod:`.kernel_check`); the sandbox defines that kernel alone, and the driver launches it on
buffers it allocated and reads what it wrote (:func:`.drivers.run_kernel`). A torch answer in
the wrapper, however right, computes nothing here.
"""
from __future__ import annotations

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

HINTS = [
    "Load the physical block id from the block table, then the block's keys; scores = "
    "sum(k * q) * scale; keep a running max m, sum l and weighted sum acc.",
    "Mask the tokens past context_len: their scores must be -inf (and their loads masked).",
    "Read block_tables[seq, logical_block] for every block: blocks can be anywhere.",
    "kv_head = head // QUERIES_PER_KV picks the keys and values this program reads.",
    "Each program loops over its own sequence's blocks: cdiv(context_len, BLOCK_SIZE).",
    "Online softmax: when the max grows, rescale l and acc by exp(m_old - m_new).",
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
    return tensors.compare_attention(expected, got, TOLERANCE)
