"""Hints that diagnose: a wrong step of ex05 or a wrong output of ex07 gets the cause it shows,
not the hint of whichever case it happened to fail (issue 14: a missing reservation in ex05 was
told about the watermark; ex07's GQA hint pointed at the kv_head line the exercise gives)."""
import contextlib
import io
from pathlib import Path

import pytest

import pagedlab as pl
from pagedlab.grading import ex05, notebook

ROOT = Path(__file__).resolve().parent.parent


def solution_with(stem: str, old: str, new: str) -> dict:
    """The solution notebook's names, its answer edited as a learner's bug would (old -> new)."""
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(ROOT / "solutions" / f"{stem}.ipynb")):
            if old in text:
                text = text.replace(old, new)
                namespace["__edited__"] = True
            exec(compile(text, f"<cell {number}>", "exec"), namespace)
    assert namespace.pop("__edited__", False), f"{old!r} is not in {stem}"
    return namespace


EX05_BUGS = [   # the bug, and what every failing case's hint must name: its cause, or the
    # numbers of the admission it got wrong (which show the blocks it left out)
    ("reserved_blocks_admitted", "bm.num_free_blocks - reserved - bm.watermark_blocks",
     "bm.num_free_blocks - bm.watermark_blocks", "promised to"),
    ("no_watermark", "bm.num_free_blocks - reserved - bm.watermark_blocks",
     "bm.num_free_blocks - reserved", "watermark"),
    ("no_growth_block", "bm.blocks_needed(seq) + grow >", "bm.blocks_needed(seq) >",
     "first new token"),
    ("skips_a_misfit", "                break\n            bm.allocate(seq)",
     "                continue\n            bm.allocate(seq)", "first come, first served stops"),
]


@pytest.mark.parametrize("old, new, mistake", [b[1:] for b in EX05_BUGS], ids=[b[0] for b in EX05_BUGS])
def test_an_ex05_bug_is_told_its_own_cause_wherever_it_fails(old, new, mistake):
    answer = solution_with("ex05_scheduler_step", old, new)["schedule_step"]
    for seed in (0, 5, 11):
        cases = ex05.cases(seed)
        from pagedlab.grading import judge
        outcomes = [{"status": "ok", "output": pl.grading.drivers.run_schedule(
            {"schedule_step": answer}, case.data)} for case in cases]
        report = judge.report(ex05, cases, judge.expected_outputs(ex05, cases), outcomes)
        failed = [case for case in report.cases if not case.passed]
        assert failed, (mistake, seed)
        assert all(mistake in case.hint for case in failed), (
            mistake, seed, [(c.name, c.hint) for c in failed])


def test_a_missing_reservation_in_ex05_is_not_told_about_the_watermark():
    answer = solution_with("ex05_scheduler_step", *EX05_BUGS[0][1:3])["schedule_step"]
    failed = [case for case in pl.check("ex05", schedule_step=answer).cases if not case.passed]
    assert failed and not any(case.hint in (ex05.MISTAKES["no watermark"], ex05.cases(0)[4].hint)
                              for case in failed)


EX07_BUGS = [
    ("query_head_offsets", "+ kv_head * stride_k_head + dims[None, :])",
     "+ head * stride_k_head + dims[None, :])", "query head"),
    ("zeros_scored", 'scores = tl.where(mask, scores, float("-inf"))', "scores = scores + 0.0",
     "zeros scored"),
    ("no_table", "physical = tl.load(block_tables_ptr + seq * stride_table_seq + logical_block).to(tl.int64)",
     "physical = logical_block", "no table"),
    ("no_rescale", "alpha = tl.exp(m_i - m_new)", "alpha = tl.exp(m_i - m_i)", "no rescale"),
    ("no_scale", "scores = tl.sum(k * q[None, :], axis=1) * scale", "scores = tl.sum(k * q[None, :], axis=1)",
     "no scale"),
]


@pytest.mark.parametrize("old, new, mistake", [b[1:] for b in EX07_BUGS], ids=[b[0] for b in EX07_BUGS])
def test_an_ex07_kernel_bug_is_told_its_own_cause(old, new, mistake):
    pytest.importorskip("triton")
    import linecache
    from pagedlab.grading import ex07
    original = linecache.cache.copy()
    answer = solution_with_source("ex07_triton_kernel", old, new)
    try:
        report = pl.check("ex07", paged_attention=answer["my_paged_attention"])
    finally:
        linecache.cache.clear()
        linecache.cache.update(original)
    failed = [case for case in report.cases if not case.passed]
    assert failed and all(case.hint == ex07.MISTAKES[mistake] for case in failed), \
        [(c.name, c.got, c.hint) for c in failed]


def test_the_ex07_gqa_hint_no_longer_points_at_the_given_kv_head_line():
    from pagedlab.grading import ex07
    gqa = next(case for case in ex07.cases(0) if case.name.startswith("grouped-query"))
    assert "kv_head = head // QUERIES_PER_KV" not in gqa.hint and "offsets" in gqa.hint


def test_the_ex07_emulation_without_a_mistake_is_the_reference():
    from pagedlab.grading import ex07, judge
    for seed in (0, 1, 99):
        cases = ex07.cases(seed)
        for case, want in zip(cases, judge.expected_outputs(ex07, cases)):
            assert max(abs(a - b) for a, b in zip(ex07.emulate(case.data), want["values"])) < 1e-4


def solution_with_source(stem: str, old: str, new: str) -> dict:
    """Like solution_with, with each cell's source in linecache (Triton reads the kernel's)."""
    import linecache
    namespace: dict = {}
    edited = False
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(ROOT / "solutions" / f"{stem}.ipynb")):
            if old in text:
                text, edited = text.replace(old, new), True
            filename = f"<hint cell {number}>"
            linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
            exec(compile(text, filename, "exec"), namespace)
    assert edited, f"{old!r} is not in {stem}"
    return namespace
