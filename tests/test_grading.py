"""The grader: check() in the notebook, verdicts, the command line, Gradescope, references."""
import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest

import pagedlab as pl
from pagedlab.grading import command, exercise, feedback, gradescope, notebook
from pagedlab.grading.ex05 import reference_schedule_step

ROOT = Path(__file__).resolve().parent.parent
STEMS = {path.name[:4]: path.stem for path in (ROOT / "solutions").glob("ex*.ipynb")}


def solution(exercise_id: str) -> dict:
    """The names the solution notebook defines, run here (its prints swallowed)."""
    data = notebook.read(ROOT / "solutions" / f"{STEMS[exercise_id]}.ipynb")
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(data):
            exec(compile(text, f"<cell {number}>", "exec"), namespace)
    return namespace


def failing(report) -> list[str]:
    return [case.name for case in report.cases if not case.passed]


# ------------------------------------------------------------------ check() in the notebook
def test_check_shows_every_case_as_a_text_and_an_html_table():
    report = pl.check("ex01", BlockManager=solution("ex01")["MyBlockManager"])
    assert report.score == report.max_score == 6
    assert "6/6 cases passed" in str(report) and str(report).count("[PASS]") == 6
    html = report._repr_html_()
    assert html.count("<tr>") == 7 and "passed" in html   # a header row and one per case


def test_a_wrong_answer_gets_what_was_expected_what_came_back_and_a_hint():
    class NotAllOrNothing(solution("ex01")["MyBlockManager"]):
        def allocate(self, seq):
            seq.block_table = [self.free_blocks.pop() for _ in range(self.blocks_needed(seq))
                               if self.free_blocks]
    report = pl.check("ex01", BlockManager=NotAllOrNothing)
    case = next(c for c in report.cases if c.name.startswith("a prompt that does not fit"))
    assert not case.passed
    assert case.where == "step 2: allocate(seq 2, 13 tokens): result"
    assert (case.expected, case.got) == ("raises OutOfBlocks", "ok")
    assert "before* taking any" in case.hint
    assert "<td" in report._repr_html_() and "raises OutOfBlocks" in report._repr_html_()


def test_check_says_which_keyword_it_needs():
    with pytest.raises(TypeError, match=r"BlockManager=MyBlockManager"):
        pl.check("ex01", solution("ex01")["MyBlockManager"])
    with pytest.raises(TypeError, match="missing BlockManager"):
        pl.check("ex01")
    with pytest.raises(exercise.UnknownExercise, match="ex01, ex02"):
        pl.check("ex99", BlockManager=object)


def test_an_endless_loop_in_check_times_out_that_case(monkeypatch):
    class Endless(solution("ex01")["MyBlockManager"]):
        def can_allocate(self, seq):
            while True:
                pass
    module = exercise.load("ex01")
    monkeypatch.setattr(module, "EXERCISE", dataclasses.replace(module.EXERCISE, case_timeout=0.5))
    report = pl.check("ex01", BlockManager=Endless)
    assert [c.got.startswith("timed out") for c in report.cases if not c.passed] == [True, True]


@pytest.mark.parametrize("answer", [
    lambda: pl.BlockManager,
    lambda: type("Sub", (pl.BlockManager,), {}),
    lambda: type("Wrapper", (), {
        "__init__": lambda self, *a: setattr(self, "inner", pl.BlockManager(*a)),
        "__getattr__": lambda self, name: getattr(self.inner, name)}),
])
def test_check_does_not_count_pagedlabs_own_block_manager(answer):
    report = pl.check("ex02", BlockManager=answer())
    assert report.score == 0
    assert all("pagedlab's own" in case.got for case in report.cases)


# ------------------------------------------------------------------ the cases catch real mistakes
def _broken_ex02(ns):
    class OffByOne(ns["MyBlockManager"]):
        def slot_mapping(self, seq):
            return [slot + 1 for slot in super().slot_mapping(seq)]
    return {"BlockManager": OffByOne}


def _broken_ex03(ns):
    class NoCopy(ns["MyBlockManager"]):
        def append_token(self, seq, token_id):
            if len(seq.token_ids) % self.block_size == 0:
                seq.block_table.append(self._take_block())
            seq.token_ids.append(token_id)
    return {"BlockManager": NoCopy}


def _broken_ex04(ns):
    class MostRecentlyUsed(ns["MyBlockManager"]):
        def take_block(self):
            if not self.free_blocks and self.evictable:
                block, _ = self.evictable.popitem(last=True)
                del self.cached[self.hash_of.pop(block)]
                self.free_blocks.append(block)
            return super().take_block()
    return {"BlockManager": MostRecentlyUsed}


def _broken_ex05(ns):
    def greedy(running, waiting, bm, max_num_seqs):
        prefills, decodes, preempted = ns["schedule_step"](running, waiting, bm, max_num_seqs)
        for seq in waiting[len(prefills):]:
            if preempted and bm.can_allocate(seq) and len(decodes) + len(prefills) < max_num_seqs:
                bm.allocate(seq)
                prefills.append(seq)
        return prefills, decodes, preempted
    return {"schedule_step": greedy}


def _broken_ex06(ns):
    return {"paged_attention": lambda q, *rest, scale=None: ns["my_paged_attention"](q, *rest, scale=1.0)}


@pytest.mark.parametrize("exercise_id, broken, failing_case", [
    ("ex02", _broken_ex02, "slot_mapping follows the block table"),
    ("ex03", _broken_ex03, "appending to a shared, partly filled block copies it first"),
    ("ex04", _broken_ex04, "eviction takes the least recently used cached block first"),
    ("ex05", _broken_ex05, "nothing is admitted in a step that preempted"),
    ("ex06", _broken_ex06, "one sequence, one head, inside one block"),
])
def test_a_typical_mistake_fails_the_case_about_it(exercise_id, broken, failing_case):
    report = pl.check(exercise_id, **broken(solution(exercise_id)))
    assert failing_case in failing(report)


def test_the_scheduler_reference_schedules_like_pagedlab_scheduler():
    """The grader's answer to ex05 against the real Scheduler, on many random workloads."""
    from pagedlab.grading import ex05

    def with_scheduler(data):
        bm = pl.BlockManager(data["num_blocks"], data["block_size"], watermark=data["watermark"])
        scheduler = pl.Scheduler(bm, max_num_seqs=data["max_num_seqs"],
                                 max_num_batched_tokens=1 << 20)
        pending = sorted(data["requests"], key=lambda r: (r["arrival"], r["seq_id"]))
        steps = []
        for step in range(ex05.MAX_STEPS):
            while pending and pending[0]["arrival"] <= step:
                r = pending.pop(0)
                scheduler.add(pl.Sequence(r["seq_id"], r["prompt"]), max_new_tokens=r["max_new_tokens"])
            if not (scheduler.has_unfinished() or pending):
                break
            record = {"prefills": [], "decodes": [], "preempted": []}
            out = scheduler.schedule() if scheduler.has_unfinished() else None
            if out is not None:
                record = {key: [s.seq_id for s in getattr(out, key)] for key in record}
            steps.append({**record, "free": bm.num_free_blocks})
            if out is not None:
                scheduler.update([len(s.token_ids) % 50 for s in out.scheduled])
        return steps

    for seed in range(40):
        for case in ex05.cases(seed)[-1:] if seed else ex05.cases(seed):
            mine = exercise.as_json(ex05.run({"schedule_step": reference_schedule_step}, case.data))
            assert mine == exercise.as_json(with_scheduler(case.data)), (seed, case.name)


# ------------------------------------------------------------------ reading notebooks
def test_the_grader_skips_install_and_check_cells_and_ipython_lines():
    cells = [{"cell_type": "code", "source": "# pagedlab install cell: x\nimport sys"},
             {"cell_type": "markdown", "source": "text"},
             {"cell_type": "code", "source": ["%matplotlib inline\n", "x = 1\n", "!ls"]},
             {"cell_type": "code", "source": "%%time\ny = 2"},
             {"cell_type": "code", "source": "pl.check('ex01', BlockManager=X)"},
             {"cell_type": "code", "metadata": {"tags": ["check"]}, "source": "report()"}]
    assert notebook.code_cells({"cells": cells}) == [
        (2, "pass  # IPython line skipped by the grader\nx = 1\npass  # IPython line skipped by the grader")]


def test_the_exercise_comes_from_metadata_or_the_file_name(tmp_path):
    assert notebook.exercise_of("anything.ipynb", {"metadata": {"pagedlab": {"exercise": "ex03"}}}) == "ex03"
    assert notebook.exercise_of("ex05_mine.ipynb", {"metadata": {}}) == "ex05"
    with pytest.raises(notebook.NotebookError, match="cannot tell which exercise"):
        notebook.exercise_of("homework.ipynb", {"metadata": {}})
    (tmp_path / "bad.ipynb").write_text("not json")
    with pytest.raises(notebook.NotebookError, match="not a readable"):
        notebook.read(tmp_path / "bad.ipynb")


def test_a_renamed_notebook_without_metadata_is_known_by_its_check_cell():
    def cell(text):
        return {"cell_type": "code", "source": text, "metadata": {}}
    renamed = {"metadata": {}, "cells": [cell("x = 1"), cell('pl.check("ex04", BlockManager=B)')]}
    assert notebook.exercise_of("homework.ipynb", renamed) == "ex04"
    two = {"metadata": {}, "cells": [cell('check("ex01", A)'), cell('check("ex02", B)')]}
    with pytest.raises(notebook.NotebookError, match="cannot tell which exercise"):
        notebook.exercise_of("homework.ipynb", two)


# ------------------------------------------------------------------ command line and Gradescope
def test_grade_prints_scores_and_writes_gradescope_results(tmp_path, capsys):
    results = tmp_path / "out" / "results.json"
    status = command.main([str(ROOT / "solutions" / "ex01_block_manager.ipynb"),
                           str(ROOT / "exercises" / "ex02_append_and_slots.ipynb"),
                           str(tmp_path / "missing.ipynb"), "--gradescope", str(results),
                           "--seed", "3"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "6/6 cases passed" in printed and "0/6 cases passed" in printed
    assert "skipped:" in printed and "total: 6/12 in 2 notebook(s)" in printed
    data = json.loads(results.read_text())
    assert set(data) == {"score", "execution_time", "output", "tests"}
    assert data["score"] == 6 and isinstance(data["execution_time"], int)
    assert len(data["tests"]) == 12
    for test in data["tests"]:
        assert set(test) == {"name", "score", "max_score", "output", "visibility"}
    failed = [t for t in data["tests"] if t["score"] == 0]
    assert all("NotImplementedError" in t["output"] and "Hint:" in t["output"] for t in failed)


def test_grade_without_notebooks_fails_with_a_message(tmp_path, capsys):
    assert command.main([str(tmp_path)]) == 2
    assert "no .ipynb notebooks" in capsys.readouterr().out


def test_gradescope_autograder_files(tmp_path):
    assert command.main(["--gradescope-autograder", str(tmp_path), "--timeout", "20"]) == 0
    setup, run = (tmp_path / "setup.sh").read_text(), (tmp_path / "run_autograder").read_text()
    assert "pip install" in setup and "git+https://github.com/" in setup
    assert "pagedlab grade . --gradescope /autograder/results/results.json --timeout 20" in run
    assert (tmp_path / "run_autograder").stat().st_mode & 0o111


def test_an_empty_submission_still_gives_gradescope_a_result():
    data = gradescope.results([], 0.4, ["x.ipynb: no such file or folder"])
    assert data["score"] == 0 and data["tests"] == [] and "no such file" in data["output"]


def test_gradescope_counts_each_exercise_once(tmp_path):
    from pagedlab.grading.report import CaseResult, Report
    twice = [Report("ex01", "t", [CaseResult("a", passed=False)], source="first.ipynb"),
             Report("ex01", "t", [CaseResult("a", passed=True)], source="second.ipynb")]
    data = gradescope.results(twice, 1.0)
    assert data["score"] == 1 and len(data["tests"]) == 1
    assert "first.ipynb: another notebook for ex01" in data["output"]
