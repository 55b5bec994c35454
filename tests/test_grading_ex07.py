"""ex07 counts only when the learner's own Triton kernel computed the answer.

The wrapper ``my_paged_attention`` must launch the notebook's ``@triton.jit`` kernel
``my_paged_decode_kernel`` and return the tensor it wrote; a plain-torch wrapper (exercise 6's
answer) scores nothing, in ``pagedlab grade`` and in ``pl.check`` alike.
"""
import contextlib
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("triton")

import pagedlab as pl  # noqa: E402
from pagedlab.grading import command, notebook  # noqa: E402
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
UNUSED_KERNEL = '''
import triton
import triton.language as tl
from pagedlab import backend

@triton.jit
def my_paged_decode_kernel(x_ptr):
    tl.store(x_ptr, 1.0)
'''
# launches the kernel on a scratch buffer, then answers in torch
DUMMY_LAUNCH = UNUSED_KERNEL + TORCH_ANSWER.replace(
    "    return out", "    my_paged_decode_kernel[(1,)](torch.zeros(1))\n    return out")


def one_cell_notebook(tmp_path, source: str) -> Path:
    path = tmp_path / "ex07_triton_kernel.ipynb"
    path.write_text(json.dumps({"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": source}]}))
    return path


def run_cells(path: Path, extra: str = "") -> dict:
    """The names a notebook defines, run here (its prints swallowed)."""
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(path)):
            exec(compile(text, f"<cell {number}>", "exec"), namespace)
        if extra:
            exec(compile(extra, "<extra>", "exec"), namespace)
    return namespace


def test_the_solution_scores_6_of_6_with_pagedlab_grade(capsys):
    assert command.main([str(SOLUTION), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "ex07" in printed and "total: 6/6 in 1 notebook(s)" in printed


def test_the_solution_scores_6_of_6_with_check():
    namespace = run_cells(SOLUTION)
    report = pl.check("ex07", paged_attention=namespace["my_paged_attention"])
    assert report.score == report.max_score == 6


def test_check_leaves_the_learners_kernel_as_it_was():
    namespace = run_cells(SOLUTION)
    kernel = namespace["my_paged_decode_kernel"]
    before = dict(vars(kernel))
    pl.check("ex07", paged_attention=namespace["my_paged_attention"])
    assert "run" not in vars(kernel) and vars(kernel).keys() == before.keys()


def test_a_plain_torch_answer_scores_nothing_with_pagedlab_grade(tmp_path):
    report = grade_notebook(one_cell_notebook(tmp_path, TORCH_ANSWER), LIMITS, seed=1)
    assert report.score == 0 and len(report.cases) == 6
    assert all(MUST_LAUNCH in case.got for case in report.cases), report


def test_a_plain_torch_answer_scores_nothing_with_check():
    namespace = run_cells(SOLUTION, TORCH_ANSWER)   # the kernel is there, but never launched
    report = pl.check("ex07", paged_attention=namespace["my_paged_attention"])
    assert report.score == 0
    assert all(MUST_LAUNCH in case.got for case in report.cases), report


def test_a_kernel_that_is_defined_but_not_launched_scores_nothing(tmp_path):
    path = one_cell_notebook(tmp_path, UNUSED_KERNEL + TORCH_ANSWER)
    report = grade_notebook(path, LIMITS, seed=1)
    assert report.score == 0
    assert all(case.where == "the kernel" and f"no launch: {MUST_LAUNCH}" in case.got
               for case in report.cases), report


def test_a_kernel_name_bound_to_something_else_scores_nothing(tmp_path):
    path = one_cell_notebook(tmp_path, "my_paged_decode_kernel = print\n" + TORCH_ANSWER)
    report = grade_notebook(path, LIMITS, seed=1)
    assert report.score == 0
    assert all("not a @triton.jit kernel" in case.got for case in report.cases), report


def test_a_launch_on_a_scratch_buffer_does_not_count(tmp_path):
    report = grade_notebook(one_cell_notebook(tmp_path, DUMMY_LAUNCH), LIMITS, seed=1)
    assert report.score == 0
    assert all(case.where == "the output" and "must return what your kernel computed" in case.got
               for case in report.cases), report


def test_the_generated_exercise_scores_0_without_crashing():
    report = grade_notebook(EXERCISE, LIMITS, seed=1)
    assert report.score == 0 and len(report.cases) == 6
    assert all("NotImplementedError" in case.got for case in report.cases), report
