"""make-exercises --format nbgrader|otter: the instructors' tools, run end to end on what it writes.

nbgrader (generate_assignment, autograde, export) and otter (assign, run) come from the
instructor venv that `make instructor-tools` builds (build/venv-instructor), or from this
interpreter's own folder when they are installed there (`pip install pagedlab[instructor]`).
For each exercise: the solution gets full marks, the student copy (the stub) 0, and no line of
a solution region appears in the student copy.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pagedlab.tools.exercises import BEGIN, END, HINT
from pagedlab.tools.instructor_formats import (InstructorFormatError, check_call,
                                                move_hints_above, write_format)

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ["ex01_block_manager", "ex10_capacity_arithmetic"]   # the torch-free ones, fast


def tool_folder() -> Path | None:
    """The bin folder that holds both nbgrader and otter, if any."""
    candidates = [Path(os.environ["PAGEDLAB_INSTRUCTOR_VENV"]) / "bin"] if os.environ.get(
        "PAGEDLAB_INSTRUCTOR_VENV") else []
    candidates += [Path(sys.executable).parent, ROOT / "build" / "venv-instructor" / "bin"]
    for folder in candidates:
        if (folder / "nbgrader").exists() and (folder / "otter").exists():
            return folder
    return None


def run_tool(folder: Path, *command: str, cwd: Path, timeout: float = 600) -> str:
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(folder / command[0]), *command[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def tools() -> Path:
    folder = tool_folder()
    if folder is None:
        pytest.skip("nbgrader and otter are not installed: run `make instructor-tools` "
                    "(or pip install 'pagedlab[instructor]')")
    return folder


def solution_lines(name: str) -> list[str]:
    """The code lines inside the solution regions of a solution notebook (hints excluded)."""
    notebook = json.loads((ROOT / "solutions" / f"{name}.ipynb").read_text(encoding="utf-8"))
    lines, inside = [], False
    for cell in notebook["cells"]:
        for line in "".join(cell["source"]).split("\n"):
            stripped = line.strip()
            if stripped in (BEGIN, END):
                inside = stripped == BEGIN
            elif inside and stripped and not stripped.startswith(HINT):
                lines.append(stripped)
    assert lines, f"{name} has no solution region"
    return lines


def assert_no_solution(student_copy: Path, name: str) -> None:
    code = "\n".join("".join(cell["source"]) for cell in
                     json.loads(student_copy.read_text(encoding="utf-8"))["cells"]
                     if cell["cell_type"] == "code")
    leaked = [line for line in solution_lines(name) if line in code]
    assert not leaked, f"{student_copy} holds solution lines: {leaked}"
    assert "NotImplementedError" in code or "..." in code


# ------------------------------------------------------------------------ the writers, no tools
def test_hints_move_above_the_region_and_the_markers_are_rewritten():
    text = "def f():\n    ### BEGIN SOLUTION\n    # Hint: add one\n    return 1\n    ### END SOLUTION"
    assert move_hints_above(text, "# BEGIN SOLUTION", "# END SOLUTION") == (
        "def f():\n    # Hint: add one\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION")


def test_a_check_cell_that_is_not_one_call_is_refused():
    notebook = {"cells": [{"cell_type": "code", "metadata": {"tags": ["check"]},
                           "source": ["report = pl.check('ex01', BlockManager=M)\n", "report"]}]}
    with pytest.raises(InstructorFormatError, match="one call"):
        check_call(notebook, "ex01_block_manager.ipynb")


def test_nbgrader_metadata_marks_solutions_and_one_grade_cell_per_case(tmp_path):
    write_format("nbgrader", ROOT / "solutions", tmp_path, "ex01_*.ipynb")
    notebook = json.loads((tmp_path / "source" / EXERCISES[0] / f"{EXERCISES[0]}.ipynb").read_text())
    meta = [cell["metadata"].get("nbgrader") for cell in notebook["cells"]]
    solutions = [m for m in meta if m and m["solution"]]
    grades = [m for m in meta if m and m["grade"]]
    assert solutions and all(not m["grade"] and not m["locked"] for m in solutions)
    assert grades and all(m["locked"] and m["points"] == 1 for m in grades)
    assert len({m["grade_id"] for m in meta if m}) == len([m for m in meta if m])
    assert all(m["schema_version"] == 3 for m in meta if m)
    assert (tmp_path / "nbgrader_config.py").is_file()


def test_unknown_format_is_refused_with_the_choices(tmp_path):
    with pytest.raises(InstructorFormatError, match="nbgrader, otter"):
        write_format("canvas", ROOT / "solutions", tmp_path, "ex01_*.ipynb")


def test_make_exercises_needs_output_for_a_tool_format(capsys):
    from pagedlab.tools.exercises import main
    with pytest.raises(SystemExit):
        main(["--format", "otter"], ROOT)
    assert "--output DIR" in capsys.readouterr().err


# ------------------------------------------------------------------------ nbgrader, end to end
@pytest.mark.slow
def test_nbgrader_gives_the_solution_full_marks_and_the_stub_zero(tools, tmp_path):
    course = tmp_path / "course"
    write_format("nbgrader", ROOT / "solutions", course, "ex[0-9][0-9]_*.ipynb")
    for name in EXERCISES:
        run_tool(tools, "nbgrader", "generate_assignment", name, "--force", cwd=course)
        release = course / "release" / name / f"{name}.ipynb"
        assert_no_solution(release, name)
        for student, notebook in (("solution", course / "source" / name / f"{name}.ipynb"),
                                  ("stub", release)):
            (course / "submitted" / student / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(notebook, course / "submitted" / student / name / f"{name}.ipynb")
        run_tool(tools, "nbgrader", "autograde", name, "--create", "--force", cwd=course)
    run_tool(tools, "nbgrader", "export", "--to", str(tmp_path / "grades.csv"), cwd=course)
    with open(tmp_path / "grades.csv", newline="") as file:
        grades = {(row["assignment"], row["student_id"]): row for row in csv.DictReader(file)}
    for name in EXERCISES:
        solution, stub = grades[name, "solution"], grades[name, "stub"]
        assert float(solution["max_score"]) >= 5
        assert float(solution["score"]) == float(solution["max_score"]), solution
        assert float(stub["score"]) == 0, stub


# ------------------------------------------------------------------------ otter, end to end
def otter_score(tools: Path, autograder: Path, submission: Path, out: Path) -> tuple[float, float]:
    out.mkdir(parents=True)
    run_tool(tools, "otter", "run", "-a", str(autograder), "-o", str(out), "--no-logo",
             str(submission), cwd=submission.parent)
    results = json.loads((out / "results.json").read_text())
    tests = [test for test in results["tests"] if "score" in test]   # not otter's summary
    return sum(t["score"] for t in tests), sum(t["max_score"] for t in tests)


@pytest.mark.slow
def test_otter_gives_the_solution_full_marks_and_the_stub_zero(tools, tmp_path):
    write_format("otter", ROOT / "solutions", tmp_path / "master", "ex[0-9][0-9]_*.ipynb")
    for name in EXERCISES:
        dist = tmp_path / "dist" / name
        run_tool(tools, "otter", "assign", str(tmp_path / "master" / name / f"{name}.ipynb"),
                 str(dist), cwd=tmp_path / "master" / name)
        student = dist / "student" / f"{name}.ipynb"
        assert_no_solution(student, name)
        (autograder,) = (dist / "autograder").glob(f"{name}-autograder_*.zip")
        solution_score = otter_score(tools, autograder, dist / "autograder" / f"{name}.ipynb",
                                     tmp_path / "out" / name / "solution")
        stub_score = otter_score(tools, autograder, student, tmp_path / "out" / name / "stub")
        assert solution_score[1] >= 5 and solution_score[0] == solution_score[1], solution_score
        assert stub_score == (0, solution_score[1]), stub_score


def test_assert_case_and_assert_passes_raise_with_the_failure_and_pass_silently():
    from pagedlab.grading.asserts import assert_case, assert_passes
    from pagedlab.grading.report import CaseResult, Report
    report = Report("ex01", "t", [CaseResult("fits", True),
                                  CaseResult("all or nothing", False, expected="3", got="4")])
    assert assert_case(report, "fits") is None
    with pytest.raises(AssertionError, match="all or nothing: expected 3; got 4"):
        assert_case(report, "all or nothing")
    with pytest.raises(AssertionError, match="no case 'gone'"):
        assert_case(report, "gone")
    with pytest.raises(AssertionError, match="1 of 2 cases failed"):
        assert_passes(report)
    assert assert_passes(Report("ex01", "t", [CaseResult("fits", True)])) is None
    with pytest.raises(AssertionError, match="no case ran"):
        assert_passes(Report("ex01", "t", []))


def test_otters_requirements_follow_the_configured_source_and_bring_torch_where_needed(
        tmp_path, monkeypatch):
    from pagedlab.tools import course
    monkeypatch.setattr(course, "current_source",
                        lambda: course.Source("pypi", "0.2.0"))
    solutions = ROOT / "solutions"
    pure = write_format("otter", solutions, tmp_path / "pure", "ex01_*.ipynb")
    (pure_requirements,) = [path for path in pure if path.name == "requirements.txt"]
    assert pure_requirements.read_text() == "pagedlab==0.2.0\n"
    both = write_format("otter", solutions, tmp_path / "both", "ex0[16]_*.ipynb")
    (requirements,) = [path for path in both if path.name == "requirements.txt"]
    lines = requirements.read_text().splitlines()
    assert lines == ["--extra-index-url https://download.pytorch.org/whl/cpu",
                     "pagedlab[attention]==0.2.0"]
