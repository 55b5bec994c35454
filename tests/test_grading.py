"""The grader: check() in the notebook, verdicts, seeded cases, reading notebooks, the command
line for one student or a class, Gradescope, and the references."""
import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest

import pagedlab as pl
from pagedlab.grading import command, drivers, exercise, gradescope, judge, notebook, results
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
    assert case.where.startswith("step ") and case.where.endswith(" tokens): result")
    assert (case.expected, case.got) == ("raises OutOfBlocks", "ok")
    assert "succeeded, but" in case.hint and "raises OutOfBlocks" in case.hint   # what broke
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
    uses = [case.name for case in module.cases(0)
            if any(op[0] == "can_allocate" for op in case.data["ops"])]
    assert [c.name for c in report.cases if c.got.startswith("timed out")] == uses and len(uses) == 2


def test_check_polices_nothing_and_says_so():
    """check() is the learner's own feedback: pagedlab's answer passes it (the grader is the
    judge, in a sandbox where that answer is not available)."""
    report = pl.check("ex02", BlockManager=pl.BlockManager)
    assert report.score == 6
    assert any("self-check" in note and "pagedlab grade" in note for note in report.notes)
    from pagedlab.grading import feedback
    assert "polices nothing" in feedback.__doc__


# ------------------------------------------------------------------ every graded case is drawn
@pytest.mark.parametrize("exercise_id", exercise.exercise_ids())
def test_every_case_changes_with_the_seed_and_none_is_a_public_one(exercise_id):
    module = exercise.load(exercise_id)
    public = [json.dumps(case.data, sort_keys=True) for case in module.cases(0)]
    for seed in (1, 2, 12345):
        graded = [json.dumps(case.data, sort_keys=True) for case in module.cases(seed)]
        assert not set(graded) & set(public), (exercise_id, seed)
        assert [c.name.split(" (seed")[0] for c in module.cases(seed)] == \
            [c.name.split(" (seed")[0] for c in module.cases(0)]


@pytest.mark.parametrize("exercise_id", ["ex01", "ex02", "ex03", "ex04"])
def test_every_block_manager_case_draws_its_sizes_from_the_seed(exercise_id):
    """Not only other ids and token values: each case's block size changes with the run too."""
    module = exercise.load(exercise_id)
    for index in range(6):
        sizes = {module.cases(seed)[index].data["block_size"] for seed in range(1, 13)}
        assert len(sizes) > 1, (exercise_id, index)


def _results(module, case) -> list:
    return [step["result"] for step in judge.expected_outputs(module, [case])[0][1:]]


SHOWS = {   # (exercise, case index) -> what the reference must do in that case, whatever the seed
    ("ex01", 1): lambda r: ["raised", "OutOfBlocks"] in [x[:2] for x in r] and ["ok", 0] in r[-2:],
    ("ex01", 2): lambda r: ["ok", True] in r and ["ok", False] in r,
    ("ex01", 3): lambda r: {"DoubleFree", "UnknownSequence"} <= {x[1] for x in r if x[0] == "raised"},
    ("ex01", 4): lambda r: [x[0] for x in r].count("raised") >= 3 and r[-1][0] == "ok",
    ("ex02", 1): lambda r: ["ok", True] in r and ["ok", False] in r,
    ("ex02", 2): lambda r: [x[:2] for x in r[-2:]] == [["ok", None], ["raised", "OutOfBlocks"]]
                            and ["raised", "OutOfBlocks"] in [x[:2] for x in r[:-2]],
    ("ex02", 4): lambda r: ["raised", "ValueError"] in [x[:2] for x in r]
                            and sum(1 for x in r if isinstance(x[1], list)) >= 3,
    ("ex03", 1): lambda r: any(isinstance(x[1], list) for x in r),
    ("ex03", 4): lambda r: ["raised", "OutOfBlocks"] in [x[:2] for x in r] and isinstance(r[-2][1], list),
    ("ex04", 0): lambda r: sum(1 for x in r if x[0] == "ok" and x[1]) >= 2,
    ("ex04", 3): lambda r: r[-1][1] > 0,
}


@pytest.mark.parametrize("exercise_id, index", list(SHOWS), ids=[f"{e}-{i}" for e, i in SHOWS])
def test_a_drawn_case_always_shows_what_it_is_about(exercise_id, index):
    module = exercise.load(exercise_id)
    for seed in range(25):
        case = module.cases(seed)[index]
        assert SHOWS[exercise_id, index](_results(module, case)), (seed, case.name)


def test_a_disguised_script_is_the_same_test():
    """Other ids, other token values and blocks held first: the reference behaves the same way
    (same results and free counts, op by op)."""
    import random
    from pagedlab.grading import blockdriver, ex01, ex02, ex03, ex04
    for module in (ex01, ex02, ex03, ex04):
        for index, (name, hint, make) in enumerate(module.CASES):
            raw = make(random.Random(f"template {index}"))
            features = sorted(module.FEATURES)
            template = exercise.Case(name, hint, "run_script", {**raw, "features": features})
            disguised = exercise.Case(name, hint, "run_script", {**blockdriver.disguise(
                raw, random.Random(index)), "features": features})
            plain = judge.expected_outputs(module, [template])[0]
            hidden = judge.expected_outputs(module, [disguised])[0]
            held = len(hidden) - len(plain)
            assert held in (0, 1)
            assert [s["result"][0] for s in plain[1:]] == [s["result"][0] for s in hidden[1 + held:]]
            assert [s["free"] for s in plain[1:]] == [s["free"] for s in hidden[1 + held:]]


# ------------------------------------------------------------------ the cases catch real mistakes
def _broken_ex02(ns):
    class OffByOne(ns["MyBlockManager"]):
        def slot_mapping(self, seq, start=0, end=None):
            return [slot + 1 for slot in super().slot_mapping(seq, start, end)]
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
    ("ex02", _broken_ex02, "slot_mapping follows the block table, whatever order the blocks are in"),
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
        for step in range(drivers.MAX_STEPS):
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
            mine = exercise.as_json(drivers.run_schedule({"schedule_step": reference_schedule_step},
                                                         case.data))
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


def test_reading_a_cell_of_60000_blank_lines_is_linear():
    """The patterns once matched across newlines; a cell of blank lines stalled the grader."""
    import time
    for lines in (60_000, 120_000):
        text = "\n" * lines + "%magic"
        started = time.monotonic()
        notebook.plain_python(text)
        list(notebook._CHECK_NAME.finditer(text))
        notebook._is_check_cell(text + "\ncheck('ex01')")
        assert time.monotonic() - started < 0.5, lines


def test_a_notebook_over_a_limit_is_refused_unread(tmp_path):
    long_cell = {"cells": [{"cell_type": "code", "source": "\n" * 60_000}]}
    (tmp_path / "ex01_long.ipynb").write_text(json.dumps(long_cell))
    with pytest.raises(notebook.NotebookTooBig, match="60,001 lines, over the grader's limit"):
        notebook.read(tmp_path / "ex01_long.ipynb")
    (tmp_path / "ex01_big.ipynb").write_text(" " * (notebook.MAX_BYTES + 1))
    with pytest.raises(notebook.NotebookTooBig, match="clear the outputs"):
        notebook.read(tmp_path / "ex01_big.ipynb")


# ------------------------------------------------------------------ command line and Gradescope
def test_grade_prints_scores_and_writes_gradescope_results(tmp_path, capsys):
    results_path = tmp_path / "out" / "results.json"
    status = command.main([str(ROOT / "solutions" / "ex01_block_manager.ipynb"),
                           str(ROOT / "exercises" / "ex02_append_and_slots.ipynb"),
                           str(tmp_path / "missing.ipynb"), "--gradescope", str(results_path),
                           "--seed", "3"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "6/6 cases passed" in printed and "0/6 cases passed" in printed
    assert "skipped:" in printed and "total: 6/12 in 2 notebook(s)" in printed
    data = json.loads(results_path.read_text())
    assert set(data) == {"score", "execution_time", "output", "tests", "extra_data"}
    assert data["score"] == 6 and isinstance(data["execution_time"], int)
    assert data["extra_data"]["isolated"] is True
    assert len(data["tests"]) == 12
    for test in data["tests"]:
        assert set(test) == {"name", "score", "max_score", "output", "visibility"}
    failed = [t for t in data["tests"] if t["score"] == 0]
    assert all("NotImplementedError" in t["output"] and "Hint:" in t["output"] for t in failed)


def class_folder(tmp_path) -> Path:
    klass = tmp_path / "class"
    for student, folder in (("ann", "solutions"), ("ben", "exercises")):
        (klass / student / "nested").mkdir(parents=True)
        for name in ("ex01_block_manager.ipynb", "ex02_append_and_slots.ipynb"):
            (klass / student / "nested" / name).write_text((ROOT / folder / name).read_text())
    return klass


def test_a_class_folder_gives_one_record_per_student(tmp_path, capsys):
    klass = class_folder(tmp_path)
    status = command.main([str(klass), "--csv", str(tmp_path / "grades.csv"),
                           "--json-dir", str(tmp_path / "per_student")])
    assert status == 0, capsys.readouterr().out
    rows = (tmp_path / "grades.csv").read_text().splitlines()
    blanks = "," * (len(exercise.exercise_ids()) - 2)
    assert rows[0].startswith(f"student,{','.join(exercise.exercise_ids())},score,max_score,isolation")
    assert rows[1].startswith(f"ann,6,6{blanks},12,12,") and rows[2].startswith(f"ben,0,0{blanks},0,12,")
    ann = json.loads((tmp_path / "per_student" / "ann.json").read_text())
    assert ann["score"] == 12 and ann["extra_data"]["student"] == "ann"
    assert "2 students" in capsys.readouterr().out


def test_gradescope_results_are_for_one_submission_only(tmp_path, capsys):
    with pytest.raises(SystemExit):
        command.main([str(class_folder(tmp_path)), "--gradescope", str(tmp_path / "r.json")])
    assert "use --csv FILE or --json-dir DIR" in capsys.readouterr().err


def test_a_results_path_that_cannot_be_written_is_reported_and_the_others_are_written(tmp_path, capsys):
    folder = tmp_path / "results.json"
    folder.mkdir()            # a folder where the results file should go
    status = command.main([str(ROOT / "solutions" / "ex01_block_manager.ipynb"),
                           "--gradescope", str(folder), "--csv", str(tmp_path / "grades.csv")])
    captured = capsys.readouterr()
    assert status == 3
    assert f"cannot write {folder}: it is a folder; give a file name" in captured.err
    assert "6/6 cases passed" in captured.out
    assert (tmp_path / "grades.csv").read_text().splitlines()[1].startswith("submission,6,")


def test_results_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")
    monkeypatch.setattr(results.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(results.ResultsError, match="No space"):
        results.write_atomic(target, "new")
    assert target.read_text() == "old"


def test_grade_without_notebooks_fails_with_a_message(tmp_path, capsys):
    assert command.main([str(tmp_path)]) == 2
    assert "no .ipynb notebooks" in capsys.readouterr().out


def test_the_csv_does_not_hand_a_spreadsheet_a_formula():
    from pagedlab.grading.submissions import Submission
    text = results.csv_text([Submission("=HYPERLINK(1)", [])], "namespace")
    assert text.splitlines()[1].startswith("'=HYPERLINK(1)")


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
