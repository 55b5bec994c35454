"""ex09, the unified kernel's query tile and causal mask: judged from outside like ex07 (the
grader launches the learner's own Triton kernel on a packed step), against
paged_prefill_reference, and a wrong mask is told which rule its numbers follow."""
import contextlib
import io
import json
import linecache
from pathlib import Path

import pytest

pytest.importorskip("triton")

import pagedlab as pl  # noqa: E402
from pagedlab.grading import ex09, judge, notebook  # noqa: E402
from pagedlab.grading.runner import Limits, grade_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "ex09_unified_kernel.ipynb"


def defined(folder: str, old: str = "", new: str = "") -> dict:
    """The notebook's names (its answer edited old -> new, as a learner's bug would), each cell's
    source in linecache (Triton reads the kernel's); prints and the stub's errors swallowed."""
    namespace: dict = {}
    edited = not old
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(ROOT / folder / NAME)):
            if old and old in text:
                text, edited = text.replace(old, new), True
            filename = f"<ex09 {folder} cell {number}>"
            linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
            try:
                exec(compile(text, filename, "exec"), namespace)
            except Exception as error:  # noqa: BLE001 - the stub's demo cell raises
                if "NotImplementedError" not in repr(error):
                    raise
    assert edited, f"{old!r} is not in the solution"
    return namespace


def test_the_solution_passes_check_and_the_stub_fails_every_case():
    assert pl.check("ex09", paged_attention=defined("solutions")["my_unified_attention"]).score == 6
    report = pl.check("ex09", paged_attention=defined("exercises")["my_unified_attention"])
    assert report.score == 0
    assert all("NotImplementedError: your code here" in case.got for case in report.cases)


def test_the_cases_are_the_reference_of_a_step_drawn_from_the_seed():
    for seed in (0, 1, 42):
        cases = ex09.cases(seed)
        for case, want in zip(cases, judge.expected_outputs(ex09, cases)):
            data = case.data
            assert len(data["q"]) == sum(data["query_lens"])
            assert all(1 <= n <= c for n, c in zip(data["query_lens"], data["context_lens"]))
            right = ex09.attend(data, lambda key, query: key <= query["pos"])
            assert max(abs(a - b) for a, b in zip(right, want["values"])) < 1e-4
    decodes = ex09.cases(3)[3].data
    assert decodes["query_lens"] == [1, 1, 1]
    chunk = ex09.cases(3)[1].data
    assert chunk["context_lens"][0] > chunk["query_lens"][0]


BUGS = [
    ("from_zero", "query_pos = context_len - query_len + query_index", "query_pos = query_index",
     "from zero"),
    ("no_causal_mask", "(keys[None, :] <= query_pos[:, None]) & in_context[None, :]",
     "(keys[None, :] < query_pos[:, None] + 1000) & in_context[None, :]", "no causal mask"),
    ("strictly_before", "(keys[None, :] <= query_pos[:, None])", "(keys[None, :] < query_pos[:, None])",
     "strictly before"),
    ("tile_stops_early", "kv_end = context_len - query_len + last_query + 1", "kv_end = last_query + 1",
     "tile stops early"),
]


@pytest.mark.parametrize("old, new, mistake", [b[1:] for b in BUGS], ids=[b[0] for b in BUGS])
def test_a_wrong_mask_is_told_which_rule_its_numbers_follow(old, new, mistake):
    answer = defined("solutions", old, new)["my_unified_attention"]
    failed = [case for case in pl.check("ex09", paged_attention=answer).cases if not case.passed]
    assert failed and all(case.hint == ex09.MISTAKES[mistake][1] for case in failed), \
        [(c.name, c.got, c.hint) for c in failed]


TORCH_ANSWER = '''
import torch, pagedlab as pl
def my_unified_attention(q, k_cache, v_cache, block_tables, context_lens, query_lens, scale=None):
    return pl.paged_prefill_reference(q, k_cache, v_cache, block_tables, context_lens, query_lens, scale)
'''


def test_a_torch_answer_is_not_solved_and_scores_nothing(tmp_path):
    path = tmp_path / NAME
    path.write_text(json.dumps({"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": TORCH_ANSWER}]}))
    report = grade_notebook(path, Limits(case_timeout=30.0, setup_timeout=60.0), seed=1)
    assert report.score == 0
    assert all("my_unified_attention must launch your Triton kernel my_unified_kernel" in case.got
               for case in report.cases)


def test_names_after_a_stubs_raise_are_dead_code_and_names_before_it_are_still_refused():
    import ast
    from pagedlab.grading import kernel_check

    def problem(body: str):
        tree = ast.parse("def kernel(out_ptr):\n" + body)
        return kernel_check.body_problem(tree.body[0])
    assert problem("    raise NotImplementedError('your code here')\n    tl.store(out_ptr, row_mask)\n") is None
    assert "open" in problem("    x = open\n    raise NotImplementedError('x')\n")
    assert "row_mask" in problem("    if out_ptr:\n        raise NotImplementedError('x')\n"
                                 "    tl.store(out_ptr, row_mask)\n")
