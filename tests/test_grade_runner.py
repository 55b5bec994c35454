"""Grading one notebook in a sandbox: whatever the notebook does, every case gets a verdict,
in bounded time, and the reason is in it.

Each test hands the grader an ex01 notebook (the solution or the unsolved exercise) with cells
added, and checks the verdict of every case.
"""
import json
import time
from pathlib import Path

import pytest

from pagedlab.grading import notebook
from pagedlab.grading.isolation import open_sandbox
from pagedlab.grading.runner import Limits, grade_notebook

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "solutions" / "ex01_block_manager.ipynb"
EXERCISE = ROOT / "exercises" / "ex01_block_manager.ipynb"
FAST = Limits(case_timeout=3.0, setup_timeout=20.0)


@pytest.fixture(scope="module")
def sandbox():
    with open_sandbox("auto", []) as box:    # namespaces in CI; whatever works elsewhere
        yield box


def submission(tmp_path, base: Path, *cells: str, before_answer: bool = False,
               replace_answer: str | None = None) -> Path:
    """ex01 notebook ``base`` with code ``cells`` added after the answer cell (or before it)."""
    data = json.loads(base.read_text())
    answer = next(i for i, c in enumerate(data["cells"]) if "class MyBlockManager" in "".join(c["source"]))
    if replace_answer is not None:
        data["cells"][answer]["source"] = replace_answer
    at = answer if before_answer else answer + 1
    data["cells"][at:at] = [{"cell_type": "code", "metadata": {}, "execution_count": None,
                             "outputs": [], "source": text} for text in cells]
    path = tmp_path / "ex01_block_manager.ipynb"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def grade(sandbox):
    def run(path, limits=FAST):
        report = grade_notebook(path, limits, seed=1, sandbox=sandbox)
        assert len(report.cases) == 6   # every case is reported, whatever happened
        return report
    return run


def test_printing_a_passing_table_or_results_file_earns_nothing(tmp_path, grade):
    fake = ("print('ex01: 6/6 cases passed\\n  [PASS] every case')\n"
            "import json\nprint(json.dumps({'event': 'case', 'case': 0, 'status': 'ok'}))")
    report = grade(submission(tmp_path, EXERCISE, fake))
    assert report.score == 0
    assert "6/6 cases passed" in report.output   # captured, and ignored


def test_sys_exit_at_import_is_reported_and_grading_goes_on(tmp_path, grade):
    report = grade(submission(tmp_path, EXERCISE, "import sys\nsys.exit(0)"))
    assert report.score == 0
    assert any("SystemExit" in note for note in report.notes)
    assert all("NotImplementedError" in case.got for case in report.cases)


def test_os_exit_at_import_fails_every_case_with_the_reason(tmp_path, grade):
    report = grade(submission(tmp_path, SOLUTION, "import os\nos._exit(0)"))
    assert report.score == 0
    assert all("exited with status 0" in case.got for case in report.cases)


def test_an_exception_at_import_names_the_cell(tmp_path, grade):
    report = grade(submission(tmp_path, SOLUTION, "raise RuntimeError('boom')", before_answer=True))
    assert report.score == 6   # later cells still ran: the answer is defined
    assert any("RuntimeError: boom" in note for note in report.notes)
    broken = grade(submission(tmp_path, EXERCISE, "", replace_answer="raise ValueError('no class')"))
    assert broken.score == 0
    assert all("defines no MyBlockManager" in c.got and "ValueError" in c.got for c in broken.cases)


def test_an_endless_loop_at_import_times_out_and_every_case_says_so(tmp_path, grade):
    report = grade(submission(tmp_path, SOLUTION, "while True:\n    pass"),
                   Limits(case_timeout=3.0, setup_timeout=2.0))
    assert report.score == 0
    assert all("did not finish in the 2 s it had left" in case.got for case in report.cases)


def test_an_endless_loop_times_out_that_case_only(tmp_path, grade):
    loop = ("def endless(self, seq):\n    while True:\n        pass\n"
            "MyBlockManager.can_allocate = endless")
    report = grade(submission(tmp_path, SOLUTION, loop))
    timed_out = [c.name for c in report.cases if "timed out" in c.got]
    print([(c.name, c.got) for c in report.cases], report.notes)
    assert timed_out == ["can_allocate says whether allocate would succeed",
                         "random allocations and frees (seed 1)"]
    assert report.score == 4


def test_os_exit_inside_a_case_fails_that_case_only(tmp_path, grade):
    die = "import os\nMyBlockManager.can_allocate = lambda self, seq: os._exit(3)"
    report = grade(submission(tmp_path, SOLUTION, die))
    assert report.score == 4   # the two cases that call can_allocate
    assert all("exited with status 3" in c.got for c in report.cases if not c.passed)


def test_restarts_share_one_setup_budget(tmp_path, grade):
    """Each case kills the process, and each fresh one runs the notebook's slow setup again:
    the setup time is counted across restarts, so the whole notebook stays within budget."""
    slow = ("import os, time\ntime.sleep(1.0)\n"
            "MyBlockManager.__init__ = lambda self, *args: os._exit(5)")
    started = time.monotonic()
    report = grade(submission(tmp_path, SOLUTION, slow), Limits(case_timeout=3.0, setup_timeout=2.5))
    assert time.monotonic() - started < 2.5 + 3.0     # not 6 x (1 s of setup + a case)
    assert report.score == 0
    assert any("s it had left" in case.got for case in report.cases), report


def test_megabytes_of_output_are_truncated(tmp_path, grade):
    noisy = ("print('x' * 5_000_000)\n_allocate = MyBlockManager.allocate\n"
             "def allocate(self, seq):\n    print('y' * 100_000)\n    return _allocate(self, seq)\n"
             "MyBlockManager.allocate = allocate")
    report = grade(submission(tmp_path, SOLUTION, noisy))
    assert report.score == 6
    assert len(report.output) <= FAST.output_bytes
    assert any("printed" in note and "keeps the first" in note for note in report.notes)


def test_a_notebook_over_the_size_limit_gets_a_clear_zero(tmp_path, grade):
    data = json.loads(SOLUTION.read_text())
    data["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "x" * notebook.MAX_BYTES})
    path = tmp_path / SOLUTION.name
    path.write_text(json.dumps(data))
    report = grade(path)
    assert report.score == 0
    assert all("over the grader's limit" in case.got for case in report.cases)


@pytest.mark.parametrize("damage", [
    lambda nb: nb["cells"].insert(0, 1),
    lambda nb: nb.__setitem__("metadata", []),
    lambda nb: nb["cells"][0].__setitem__("metadata", {"tags": None}),
    lambda nb: nb["cells"][0].__setitem__("source", [1, 2]),
], ids=["cell-not-a-dict", "metadata-list", "tags-null", "source-ints"])
def test_a_notebook_of_odd_shape_is_still_graded(tmp_path, grade, damage):
    data = json.loads(SOLUTION.read_text())
    damage(data)
    path = tmp_path / "ex01_block_manager.ipynb"
    path.write_text(json.dumps(data))
    assert grade(path).score == 6


def test_a_flood_of_failing_cells_is_summarised(tmp_path, grade):
    report = grade(submission(tmp_path, SOLUTION, *["raise ValueError('x' * 200)"] * 60))
    assert report.score == 6
    assert any("more cells raised" in note for note in report.notes)


def test_lines_that_only_look_like_shell_or_check_calls_are_graded_as_code(tmp_path, grade):
    answer = json.loads(SOLUTION.read_text())
    cell = next(c for c in answer["cells"] if "class MyBlockManager" in "".join(c["source"]))
    extra = ("\n\ndef different(a, b):\n    return (a\n            != b)\n\n\n"
             "class Inspector:\n    def check(self, value):\n        return value\n\n\n"
             "Inspector().check(different(1, 2))\n")
    report = grade(submission(tmp_path, EXERCISE, replace_answer="".join(cell["source"]) + extra))
    assert report.score == 6


@pytest.mark.parametrize("exercise_id, answer", [
    ("ex01", "import pagedlab as pl\nMyBlockManager = pl.BlockManager"),
    ("ex01", "import pagedlab as pl\nclass MyBlockManager(pl.BlockManager):\n    pass"),
    ("ex01", "import pagedlab as pl\nclass MyBlockManager:\n"
             "    def __init__(self, *args):\n        self.inner = pl.BlockManager(*args)\n"
             "    def __getattr__(self, name):\n        return getattr(self.inner, name)\n"),
    ("ex04", "from pagedlab.prefix_cache import PrefixCache\nimport pagedlab as pl\n"
             "class MyBlockManager:\n    def __init__(self, *args):\n        self.cache = PrefixCache()\n"),
    ("ex05", "import pagedlab as pl\ndef schedule_step(running, waiting, bm, max_num_seqs):\n"
             "    out = pl.Scheduler(bm, max_num_seqs=max_num_seqs).schedule()\n"
             "    return out.prefills, out.decodes, out.preempted"),
    ("ex05", "from pagedlab.grading.ex05 import reference_schedule_step as schedule_step"),
    ("ex06", "import pagedlab as pl\nmy_paged_attention = pl.paged_attention_reference"),
])
def test_pagedlabs_own_answer_is_not_there_to_hand_in(tmp_path, sandbox, exercise_id, answer):
    path = tmp_path / f"{exercise_id}_answer.ipynb"
    path.write_text(json.dumps({"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": answer}]}))
    report = grade_notebook(path, FAST, seed=1, sandbox=sandbox)
    assert report.score == 0 and len(report.cases) == 6
    assert all(f"is not available while {exercise_id} is graded" in case.got for case in report.cases), report


# ------------------------------------------------------------------------ grading options (CLI)
@pytest.mark.parametrize("argv, limits, seed", [
    ([], {"memory_mb": 4096, "setup_timeout": 120.0, "case_timeout": None}, None),
    (["--memory-mb", "700", "--setup-timeout", "90", "--timeout", "5", "--seed", "9"],
     {"memory_mb": 700, "setup_timeout": 90.0, "case_timeout": 5.0}, 9),
])
def test_grading_options_reach_the_runner(monkeypatch, argv, limits, seed):
    from pagedlab.grading import command
    seen = {}

    def grade(path, given, seed, sandbox):
        seen.update(limits=given, seed=seed)
        raise notebook.NotebookError("stopped here by the test")

    monkeypatch.setattr(command, "grade_notebook", grade)
    command.main([str(SOLUTION), "--isolation", "auto", *argv])
    assert {key: getattr(seen["limits"], key) for key in limits} == limits
    assert seen["seed"] == seed


@pytest.mark.parametrize("argv, message", [
    (["--memory-mb", "10"], "--memory-mb must be at least 64"),
    (["--setup-timeout", "0"], "--setup-timeout must be positive"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--visibility", "later"], "invalid choice"),
])
def test_bad_grading_options_are_refused_with_the_fix(argv, message, capsys):
    from pagedlab.grading import command
    with pytest.raises(SystemExit):
        command.main([str(SOLUTION), *argv])
    assert message in capsys.readouterr().err


def test_visibility_reaches_results_json(tmp_path):
    from pagedlab.grading import command
    out = tmp_path / "results.json"
    assert command.main([str(SOLUTION), "--gradescope", str(out), "--visibility", "hidden"]) == 0
    assert {t["visibility"] for t in json.loads(out.read_text())["tests"]} == {"hidden"}
