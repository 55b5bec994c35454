"""Hostile or broken submissions earn nothing they did not solve, and grading still finishes.

Each test hands the grader an ex01 notebook (the solution or the unsolved exercise) with cells
added, and checks the verdict of every case.
"""
import json
from pathlib import Path

import pytest

from pagedlab.grading.runner import Limits, grade_notebook

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "solutions" / "ex01_block_manager.ipynb"
EXERCISE = ROOT / "exercises" / "ex01_block_manager.ipynb"
FAST = Limits(case_timeout=3.0, setup_timeout=20.0)


def submission(tmp_path, base: Path, *cells: str, before_answer: bool = False,
               replace_answer: str | None = None) -> Path:
    """ex01 notebook ``base`` with code ``cells`` added after the answer cell (or before it)."""
    notebook = json.loads(base.read_text())
    answer = next(i for i, c in enumerate(notebook["cells"])
                  if "class MyBlockManager" in "".join(c["source"]))
    if replace_answer is not None:
        notebook["cells"][answer]["source"] = replace_answer
    new = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": text} for text in cells]
    at = answer if before_answer else answer + 1
    notebook["cells"][at:at] = new
    path = tmp_path / "ex01_block_manager.ipynb"
    path.write_text(json.dumps(notebook))
    return path


def grade(path, limits=FAST):
    report = grade_notebook(path, limits, seed=1)
    assert len(report.cases) == 6   # every case is reported, whatever happened
    return report


def test_printing_a_passing_table_or_results_file_earns_nothing(tmp_path):
    fake = ("print('ex01: 6/6 cases passed\\n  [PASS] every case')\n"
            "import json\nprint(json.dumps({'score': 100, 'tests': [{'score': 1, 'max_score': 1}]}))")
    report = grade(submission(tmp_path, EXERCISE, fake))
    assert report.score == 0
    assert "6/6 cases passed" in report.output   # captured, and ignored


def test_sys_exit_at_import_is_reported_and_grading_goes_on(tmp_path):
    report = grade(submission(tmp_path, EXERCISE, "import sys\nsys.exit(0)"))
    assert report.score == 0
    assert any("SystemExit" in note for note in report.notes)
    assert all("NotImplementedError" in case.got for case in report.cases)


def test_os_exit_at_import_fails_every_case_with_the_reason(tmp_path):
    report = grade(submission(tmp_path, SOLUTION, "import os\nos._exit(0)"))
    assert report.score == 0
    assert all("exited with status 0" in case.got for case in report.cases)


def test_an_exception_at_import_names_the_cell(tmp_path):
    report = grade(submission(tmp_path, SOLUTION, "raise RuntimeError('boom')", before_answer=True))
    assert report.score == 6   # later cells still ran: the answer is defined
    assert any("RuntimeError: boom" in note for note in report.notes)
    broken = grade(submission(tmp_path, EXERCISE, "", replace_answer="raise ValueError('no class')"))
    assert broken.score == 0
    assert all("defines no MyBlockManager" in c.got and "ValueError" in c.got for c in broken.cases)


def test_an_endless_loop_at_import_times_out_and_every_case_says_so(tmp_path):
    report = grade(submission(tmp_path, SOLUTION, "while True:\n    pass"),
                   Limits(case_timeout=3.0, setup_timeout=2.0))
    assert report.score == 0
    assert all("notebook's code did not finish in 2 s" in case.got for case in report.cases)


def test_an_endless_loop_times_out_that_case_only(tmp_path):
    loop = ("def endless(self, seq):\n    while True:\n        pass\n"
            "MyBlockManager.can_allocate = endless")
    report = grade(submission(tmp_path, SOLUTION, loop))
    verdicts = {case.name: case for case in report.cases}
    timed_out = [c for c in report.cases if "timed out" in c.got]
    assert [c.name for c in timed_out] == ["can_allocate says whether allocate would succeed",
                                           "random allocations and frees (seed 1)"]
    assert report.score == 4 and all(c.passed for c in verdicts.values() if c not in timed_out)


def test_os_exit_inside_a_case_fails_that_case_only(tmp_path):
    die = "import os\nMyBlockManager.can_allocate = lambda self, seq: os._exit(3)"
    report = grade(submission(tmp_path, SOLUTION, die))
    assert report.score == 4   # the two cases that call can_allocate
    assert all("exited with status 3" in c.got for c in report.cases if not c.passed)


def test_megabytes_of_output_are_truncated(tmp_path):
    noisy = ("print('x' * 5_000_000)\n_allocate = MyBlockManager.allocate\n"
             "def allocate(self, seq):\n    print('y' * 100_000)\n    return _allocate(self, seq)\n"
             "MyBlockManager.allocate = allocate")
    report = grade(submission(tmp_path, SOLUTION, noisy))
    assert report.score == 6
    assert len(report.output) <= FAST.output_bytes
    assert any("printed" in note and "keeps the first" in note for note in report.notes)


@pytest.mark.parametrize("patch", [
    "pl.check = lambda *args, **kwargs: print('all passed')",
    "import pagedlab.grading.judge as judge\njudge.verdict = lambda *a, **k: None",
    "import pagedlab.grading.blockdriver as driver\ndriver.run_script = lambda *a, **k: []",
    "import pagedlab.errors\npagedlab.errors.OutOfBlocks = Exception",
    "import pagedlab.grading.blockdriver as driver\ndriver.compare.__code__ = (lambda *a: None).__code__",
])
def test_patching_pagedlab_inside_the_submission_earns_nothing(tmp_path, patch):
    report = grade(submission(tmp_path, EXERCISE, "import pagedlab as pl\n" + patch))
    assert report.score == 0
    assert all("changed pagedlab" in case.got for case in report.cases)


@pytest.mark.parametrize("answer, says", [
    ("import pagedlab as pl\nMyBlockManager = pl.BlockManager", "is pagedlab's own"),
    ("from pagedlab.blocks import BlockManager as Mine\nMyBlockManager = Mine", "is pagedlab's own"),
    ("import pagedlab as pl\nclass MyBlockManager(pl.BlockManager):\n    pass", "subclasses"),
    ("import pagedlab as pl\nclass MyBlockManager:\n    allocate = pl.BlockManager.allocate\n",
     "uses pagedlab's code"),
    ("import pagedlab as pl\n"
     "class MyBlockManager:\n"
     "    def __init__(self, *args):\n        self.inner = pl.BlockManager(*args)\n"
     "    def __getattr__(self, name):\n        return getattr(self.inner, name)\n",
     "called pagedlab's own pagedlab.blocks.BlockManager.__init__"),
    ("import importlib.util, pagedlab.blocks\n"
     "spec = importlib.util.spec_from_file_location('pagedlab.copy', pagedlab.blocks.__file__)\n"
     "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
     "MyBlockManager = module.BlockManager", "defines no MyBlockManager"),
    ("import inspect, pagedlab.blocks\nexec(inspect.getsource(pagedlab.blocks))\n"
     "MyBlockManager = BlockManager", "defines no MyBlockManager"),
])
def test_handing_in_pagedlabs_own_block_manager_is_not_solved(tmp_path, answer, says):
    report = grade(submission(tmp_path, EXERCISE, "", replace_answer=answer))
    assert report.score == 0
    assert all(says in case.got for case in report.cases), report


def test_reading_the_reference_source_is_reported(tmp_path):
    answer = ("import pathlib, pagedlab.blocks\n"
              "source = pathlib.Path(pagedlab.blocks.__file__).read_text()")
    report = grade(submission(tmp_path, SOLUTION, answer))
    assert any("read pagedlab's own source" in note for note in report.notes)


def test_writing_on_the_private_channel_voids_the_results(tmp_path):
    forge = ("import os, json\nfor fd in range(3, 256):\n"
             "    try:\n        os.write(fd, b'PLG1' + b'0' * 16 + json.dumps({'type': 'case'}).encode())\n"
             "    except OSError:\n        pass")
    report = grade(submission(tmp_path, SOLUTION, forge))
    assert report.score == 0
    assert all("tampered" in case.got for case in report.cases)


def test_other_processes_and_gc_walks_are_switched_off(tmp_path):
    escape = ("import subprocess, sys, gc, os, signal\n"
              "for attempt in (lambda: subprocess.run([sys.executable, '-c', 'print(1)']),\n"
              "                lambda: gc.get_objects(),\n"
              "                lambda: os.kill(os.getppid(), signal.SIGKILL)):\n"
              "    try:\n        attempt()\n        print('ESCAPED')\n"
              "    except PermissionError as error:\n        print('blocked:', error)")
    report = grade(submission(tmp_path, SOLUTION, escape))
    assert report.score == 6
    assert "ESCAPED" not in report.output and report.output.count("blocked:") == 3


def one_cell_notebook(tmp_path, exercise_id: str, code: str) -> Path:
    path = tmp_path / f"{exercise_id}_answer.ipynb"
    path.write_text(json.dumps({"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": code}]}))
    return path


@pytest.mark.parametrize("exercise_id, answer, says", [
    ("ex04", "from pagedlab.prefix_cache import PrefixCache\n"
             "class MyBlockManager:\n"
             "    def __init__(self, *args, **kwargs):\n"
             "        self.cache = PrefixCache()\n",
     "called pagedlab's own pagedlab.prefix_cache.PrefixCache.__init__"),
    ("ex05", "import pagedlab as pl\n"
             "def schedule_step(running, waiting, bm, max_num_seqs):\n"
             "    scheduler = pl.Scheduler(bm, max_num_seqs=max_num_seqs)\n"
             "    return [], [], []", "called pagedlab's own pagedlab.scheduler.Scheduler.__init__"),
    ("ex05", "from pagedlab.grading.ex05 import reference_schedule_step as schedule_step",
     "is pagedlab's own pagedlab.grading.ex05.reference_schedule_step"),
    ("ex06", "import pagedlab.attention as attention\n"
             "def my_paged_attention(*args, **kwargs):\n"
             "    return attention.paged_attention_reference(*args, **kwargs)",
     "called pagedlab's own pagedlab.attention.paged_attention_reference"),
    ("ex07", "import pagedlab as pl\n"
             "def my_paged_attention(*args, **kwargs):\n"
             "    return pl.paged_attention(*args, **kwargs, backend='triton')",
     "called pagedlab's own pagedlab.attention.paged_attention"),
    ("ex07", "from pagedlab.kernels.paged_attention import paged_decode_kernel\n"
             "def my_paged_attention(*args, **kwargs):\n"
             "    paged_decode_kernel[(1,)](*range(30))",
     "called pagedlab's own pagedlab.kernels.paged_attention.paged_decode_kernel"),
])
def test_handing_in_pagedlabs_scheduler_or_attention_is_not_solved(tmp_path, exercise_id, answer, says):
    report = grade_notebook(one_cell_notebook(tmp_path, exercise_id, answer), FAST, seed=1)
    assert report.score == 0 and len(report.cases) == 6
    assert all(says in case.got for case in report.cases), report


# ------------------------------------------------------------------ odd shapes, still graded
@pytest.mark.parametrize("damage", [
    lambda nb: nb["cells"].insert(0, 1),
    lambda nb: nb.__setitem__("metadata", []),
    lambda nb: nb.__setitem__("metadata", {"pagedlab": {"exercise": ["ex01"]}}),
    lambda nb: nb["cells"][0].__setitem__("metadata", []),
    lambda nb: nb["cells"][0].__setitem__("metadata", {"tags": None}),
    lambda nb: nb["cells"][0].__setitem__("source", [1, 2]),
], ids=["cell-not-a-dict", "metadata-list", "exercise-list", "cell-metadata-list",
        "tags-null", "source-ints"])
def test_a_notebook_of_odd_shape_is_still_graded(tmp_path, damage):
    notebook = json.loads(SOLUTION.read_text())
    damage(notebook)
    path = tmp_path / "ex01_block_manager.ipynb"
    path.write_text(json.dumps(notebook))
    assert grade(path).score == 6


def test_one_ungradable_notebook_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    from pagedlab.grading import command, runner
    good = submission(tmp_path, SOLUTION)
    bad = tmp_path / "ex02_broken.ipynb"
    bad.write_text(json.dumps({"cells": []}))
    real = runner.grade_notebook

    def explode_on_bad(path, *args, **kwargs):
        if Path(path) == bad:
            raise RuntimeError("boom")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(command, "grade_notebook", explode_on_bad)
    results = tmp_path / "results.json"
    assert command.main([str(bad), str(good), "--gradescope", str(results)]) == 0
    out = capsys.readouterr().out
    assert "could not be graded (RuntimeError: boom)" in out and "6/6 cases passed" in out
    assert json.loads(results.read_text())["score"] == 6


def test_the_learners_code_cannot_read_the_channels_secret(tmp_path):
    report = grade(submission(tmp_path, SOLUTION, "secret = open('job.json').read()"))
    assert report.score == 6
    assert any("FileNotFoundError" in note for note in report.notes)


def test_lines_that_only_look_like_shell_or_check_calls_are_graded_as_code(tmp_path):
    answer = json.loads(SOLUTION.read_text())
    cell = next(c for c in answer["cells"] if "class MyBlockManager" in "".join(c["source"]))
    code = "".join(cell["source"])
    extra = ("\n\ndef different(a, b):\n    return (a\n            != b)\n\n\n"
             "class Inspector:\n    def check(self, value):\n        return value\n\n\n"
             "Inspector().check(different(1, 2))\n")
    report = grade(submission(tmp_path, EXERCISE, replace_answer=code + extra))
    assert report.score == 6


def test_a_flood_of_failing_cells_is_summarised_not_called_tampering(tmp_path):
    cells = ["raise ValueError('x' * 200)"] * 60
    report = grade(submission(tmp_path, SOLUTION, *cells))
    assert report.score == 6
    assert any("more cells raised" in note for note in report.notes)


def test_a_copy_of_pagedlabs_own_code_under_another_name_is_not_solved(tmp_path):
    import inspect
    import textwrap

    import pagedlab.blocks
    source = inspect.getsource(pagedlab.blocks.BlockManager)
    copy = ("from pagedlab.blocks import *\nfrom pagedlab.blocks import _CpuPool, check_int\n"
            + textwrap.dedent(source).replace("class BlockManager", "class MyBlockManager", 1)
            .replace("Block manager", "My own manager"))
    report = grade(submission(tmp_path, EXERCISE, "", replace_answer=copy))
    assert report.score == 0
    assert all("is a copy of pagedlab's own" in case.got for case in report.cases), report


def test_reading_the_reference_relative_to_its_folder_is_blocked(tmp_path):
    sneak = ("import os, pagedlab.blocks as b\n"
             "folder = os.open(os.path.dirname(b.__file__), os.O_RDONLY)\n"
             "fd = os.open('blocks.py', os.O_RDONLY, dir_fd=folder)\n")
    report = grade(submission(tmp_path, SOLUTION, sneak))
    assert any("read pagedlab's own source" in note for note in report.notes)


def test_no_process_can_be_started_that_would_outlive_the_sandbox(tmp_path):
    escape = ("import subprocess\n"
              "assert subprocess._fork_exec is None\n"
              "import _posixsubprocess\n")
    report = grade(submission(tmp_path, SOLUTION, escape))
    assert report.score == 6
    assert any("importing _posixsubprocess is switched off" in note for note in report.notes)
