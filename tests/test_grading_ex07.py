"""ex07 is judged from outside: the grader launches the learner's own Triton kernel.

The grader reads the notebook's syntax: ``my_paged_decode_kernel`` must be a ``@triton.jit``
function whose body uses only its arguments, ``tl`` and ``triton``, and ``my_paged_attention``
must launch it. The sandbox then defines that kernel alone, and the driver launches it on
buffers it allocated. A plain-torch wrapper (exercise 6's answer) computes nothing there.
"""
import contextlib
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("triton")

import pagedlab as pl  # noqa: E402
from pagedlab.grading import command, judge, kernel_check, notebook  # noqa: E402
from pagedlab.grading.runner import Limits, grade_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "solutions" / "ex07_triton_kernel.ipynb"
EXERCISE = ROOT / "exercises" / "ex07_triton_kernel.ipynb"
LIMITS = Limits(case_timeout=30.0, setup_timeout=60.0)
MUST_LAUNCH = "my_paged_attention must launch your Triton kernel my_paged_decode_kernel"

TORCH_ANSWER = '''
import math, torch
def my_paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    S, H, D = q.shape
    N, B, KV, _ = k_cache.shape
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = torch.empty_like(q)
    for i in range(S):
        n = int(context_lens[i])
        blocks = block_tables[i, : -(-n // B)].long()
        k = k_cache[blocks].flatten(0, 1)[:n].repeat_interleave(H // KV, dim=1)   # (n, H, D)
        v = v_cache[blocks].flatten(0, 1)[:n].repeat_interleave(H // KV, dim=1)
        w = (torch.einsum("hd,nhd->hn", q[i], k) * scale).softmax(-1)
        out[i] = torch.einsum("hn,nhd->hd", w, v)
    return out
'''
SIGNATURE = '''
import triton
import triton.language as tl
from pagedlab import backend

@triton.jit
def my_paged_decode_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, scale,
    stride_q_seq, stride_q_head, stride_k_block, stride_k_token, stride_k_head,
    stride_table_seq, stride_out_seq, stride_out_head,
    QUERIES_PER_KV: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
'''
LAUNCHES = TORCH_ANSWER.replace("    return out", "    my_paged_decode_kernel[(1,)](out)\n    return out")


def cells(*sources: str) -> list[tuple[int, str]]:
    return list(enumerate(sources))


def refused(*sources: str) -> str:
    with pytest.raises(judge.NotSolved) as error:
        kernel_check.kernel_cells(cells(*sources))
    return f"{error.value.where}: {error.value}"


# ------------------------------------------------------------------ read, not run
def test_the_solution_kernel_is_found_and_sent_alone():
    found = kernel_check.kernel_cells(notebook.code_cells(notebook.read(SOLUTION)))
    assert [text for _, text in found][0] == kernel_check.PREAMBLE
    kernel = found[1][1]
    assert "@triton.jit" in kernel and "def my_paged_decode_kernel" in kernel
    assert "def my_paged_attention" not in kernel and "import torch" not in kernel


def test_a_plain_torch_answer_is_not_solved():
    assert refused(TORCH_ANSWER) == f"the kernel: the notebook defines no my_paged_decode_kernel: {MUST_LAUNCH}"


def test_a_kernel_the_wrapper_never_launches_is_not_solved():
    assert "the wrapper:" in refused(SIGNATURE + "    pass\n", TORCH_ANSWER)


def test_a_kernel_name_bound_to_something_else_is_not_solved():
    assert "is not a @triton.jit kernel" in refused("def my_paged_decode_kernel(x):\n    pass\n", LAUNCHES)


@pytest.mark.parametrize("body, says", [
    ("    import torch\n", "import"),
    ("    x = torch.zeros(1)\n", "torch, defined outside the kernel"),
    ("    x = out_ptr.__class__\n", "the attribute .__class__"),
    ("    x = open('/etc/passwd')\n", "open, defined outside the kernel"),
    ("    def helper():\n        pass\n", "functiondef"),
])
def test_a_kernel_body_that_reaches_outside_triton_is_refused(body, says):
    assert says in refused(SIGNATURE + body, LAUNCHES)


def test_check_launches_the_kernel_the_wrapper_names():
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(SOLUTION)):
            exec(compile(text, f"<cell {number}>", "exec"), namespace)
    assert pl.check("ex07", paged_attention=namespace["my_paged_attention"]).score == 6
    exec(TORCH_ANSWER, namespace)            # the kernel is still there, the wrapper is torch
    assert pl.check("ex07", paged_attention=namespace["my_paged_attention"]).score == 6  # self-check
    with pytest.raises(NameError, match="define my_paged_decode_kernel"):
        exec(TORCH_ANSWER, torch_only := {})
        pl.check("ex07", paged_attention=torch_only["my_paged_attention"])


# ------------------------------------------------------------------ graded in a sandbox
def one_cell(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "ex07_triton_kernel.ipynb"
    path.write_text(json.dumps({"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": source}]}))
    return path


def test_the_solution_scores_6_of_6_with_pagedlab_grade(capsys):
    assert command.main([str(SOLUTION), "--seed", "3"]) == 0
    assert "total: 6/6 in 1 notebook(s)" in capsys.readouterr().out


def test_a_kernel_that_writes_nothing_scores_nothing(tmp_path):
    report = grade_notebook(one_cell(tmp_path, SIGNATURE + "    pass\n" + LAUNCHES), LIMITS, seed=1)
    assert report.score == 0 and len(report.cases) == 6
    assert all("nan" in case.got for case in report.cases), report


def test_a_dummy_kernel_launched_with_a_torch_result_scores_nothing(tmp_path):
    dummy = SIGNATURE.split("@triton.jit")[0] + "@triton.jit\ndef my_paged_decode_kernel(x_ptr):\n" \
        "    tl.store(x_ptr, 1.0)\n"
    report = grade_notebook(one_cell(tmp_path, dummy + LAUNCHES), LIMITS, seed=1)
    assert report.score == 0
    assert all("raised" in case.got for case in report.cases), report


def test_the_generated_exercise_scores_0_without_crashing():
    report = grade_notebook(EXERCISE, LIMITS, seed=1)
    assert report.score == 0 and len(report.cases) == 6
    assert all("NotImplementedError: your code here" in case.got for case in report.cases), report


def test_the_kernel_cell_alone_is_enough(tmp_path):
    """Nothing else of the notebook runs: a cell that would crash the sandbox changes nothing."""
    data = json.loads(SOLUTION.read_text())
    data["cells"].insert(3, {"cell_type": "code", "metadata": {}, "execution_count": None,
                             "outputs": [], "source": "import os\nos._exit(1)"})
    path = tmp_path / SOLUTION.name
    path.write_text(json.dumps(data))
    assert grade_notebook(path, LIMITS, seed=2).score == 6
