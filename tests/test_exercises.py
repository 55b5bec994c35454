"""The exercise notebooks: generated from the solutions, clean, and graded as they should be."""
import json
import time
from pathlib import Path

import pytest

from pagedlab import course
from pagedlab.grading import exercise
from pagedlab.tools.exercises import (SolutionMarkerError, make_exercises, stale_exercises,
                                        strip_solutions)
from pagedlab.grading.runner import Limits, grade_notebook

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("ex*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("ex*.ipynb"))


def test_there_is_one_solution_and_one_exercise_per_exercise_id():
    assert [path.name[:4] for path in SOLUTIONS] == exercise.exercise_ids()
    assert [path.name for path in EXERCISES] == [path.name for path in SOLUTIONS]


def test_exercises_are_up_to_date_with_the_solutions():
    stale = stale_exercises(ROOT / "solutions", ROOT / "exercises")
    assert not stale, f"run `python -m pagedlab.tools.course make-exercises`: {stale}"


def test_a_stale_exercise_is_found_and_rewritten(tmp_path):
    exercises = tmp_path / "exercises"
    assert make_exercises(ROOT / "solutions", exercises) == [exercises / p.name for p in SOLUTIONS]
    (exercises / SOLUTIONS[0].name).write_text("{}")
    (exercises / "ex99_gone.ipynb").write_text("{}")
    assert stale_exercises(ROOT / "solutions", exercises) == [
        exercises / SOLUTIONS[0].name, exercises / "ex99_gone.ipynb"]
    make_exercises(ROOT / "solutions", exercises)
    assert stale_exercises(ROOT / "solutions", exercises) == []
    assert not (exercises / "ex99_gone.ipynb").exists()


def test_a_solution_region_becomes_a_stub_that_keeps_its_hint():
    text = ("def f(x):\n    ### BEGIN SOLUTION\n    # Hint: double it.\n    return 2 * x\n"
            "    ### END SOLUTION\n")
    assert strip_solutions(text) == ('def f(x):\n    # Hint: double it.\n'
                                     '    raise NotImplementedError("your code here: double it.")\n')
    for broken in ("### BEGIN SOLUTION\nx", "### END SOLUTION",
                   "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"):
        with pytest.raises(SolutionMarkerError):
            strip_solutions(broken)


@pytest.mark.parametrize("path", SOLUTIONS + EXERCISES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebooks_are_clean_open_in_colab_and_end_with_a_check(path):
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    assert notebook["metadata"]["pagedlab"]["exercise"] == path.name[:4]
    assert "widgets" not in notebook["metadata"]
    assert course.badge_markdown(f"{path.parent.name}/{path.name}") in "".join(cells[0]["source"])
    assert "".join(cells[1]["source"]) == course.install_cell_source()
    assert cells[1]["metadata"]["tags"] == ["install"]
    assert f'.check("{path.name[:4]}"' in "".join(cells[-1]["source"])
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    text = path.read_text()
    assert ("### BEGIN SOLUTION" in text) == (path.parent.name == "solutions")


def test_every_solution_scores_full_marks_and_every_exercise_zero():
    """A complete submission of all seven, graded in sandboxes as an instructor would."""
    started = time.monotonic()
    solved = [grade_notebook(path, Limits(), seed=7) for path in SOLUTIONS]
    seconds = time.monotonic() - started
    for report in solved:
        assert report.score == report.max_score == 6, report
    assert seconds < 60, f"grading a full submission took {seconds:.1f} s"
    for path in EXERCISES:
        report = grade_notebook(path, Limits(), seed=7)
        assert report.score == 0 and len(report.cases) == 6
        for case in report.cases:   # a helpful message per case: the stub's hint and the case's
            assert "NotImplementedError: your code here: " in case.got, case
            assert case.hint


@pytest.mark.slow
def test_solution_notebooks_run_in_jupyter_and_their_check_cell_shows_all_passed():
    """The learner's view: run top to bottom in a kernel; the last cell shows the HTML table."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for path in SOLUTIONS:
        notebook = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
        outputs = notebook.cells[-1].outputs
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert "6/6 cases passed" in html, (path.name, outputs)
