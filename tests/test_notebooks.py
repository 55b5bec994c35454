"""The lessons: each runs top to bottom in a fresh kernel on the CPU, in under a minute, and the
copies in git carry no outputs, execution counts or widget state."""
import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))  # 03, 03b, ...
ALL_NOTEBOOKS = sorted(p for folder in ("notebooks", "exercises", "solutions")
                       for p in (ROOT / folder).glob("*.ipynb"))
BUDGET_S = float(os.environ.get("PAGEDLAB_NOTEBOOK_BUDGET_S", "60"))


def _cell_failure(error, notebook) -> str:
    """Which cell failed (its number and source) and the error, as a learner would see them."""
    failed = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
              and any(o.output_type == "error" for o in cell.get("outputs", []))]
    if not failed:
        return str(error)
    index = failed[0]
    return (f"cell {index}:\n{''.join(notebook.cells[index].source)}\n\n"
            f"{error.ename}: {error.evalue}\n\n{error}")


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_top_to_bottom_on_cpu_in_under_a_minute(path):
    _run_lesson(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["06_attention_over_pages", "07_triton_kernel",
                                  "07b_the_unified_kernel"])
def test_kernel_lessons_run_where_triton_is_missing(name):
    # macOS and Windows have no Triton: the lessons explain and use the torch reference.
    hide_triton = "import sys\nsys.modules['triton'] = None  # as if Triton were not installed"
    notebook = _run_lesson(ROOT / "notebooks" / f"{name}.ipynb", first_cell=hide_triton)
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "Triton is not installed" in text


def _run_lesson(path, first_cell=None):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    if first_cell:
        notebook.cells.insert(0, nbformat.v4.new_code_cell(first_cell))
    client = nbclient.NotebookClient(notebook, timeout=2 * BUDGET_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed in {_cell_failure(error, notebook)}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as error:
        pytest.fail(f"{path.name} timed out: {error}", pytrace=False)
    elapsed = time.perf_counter() - start
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.1f} s (budget {BUDGET_S:.0f} s)"
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    return notebook


CURRICULUM = ["00_start_here", "01_parking_garage", "02_pages_and_block_tables",
              "03_where_memory_goes", "03b_how_many_requests_fit", "04_sharing", "05_scheduling", "05b_chunked_prefill_and_latency",
              "06_attention_over_pages",
              "07_triton_kernel", "07b_the_unified_kernel", "08_serving_a_model",
              "09_from_pagedlab_to_vllm"]


def test_every_lesson_of_the_curriculum_exists_in_order():
    assert [p.stem for p in LESSONS] == CURRICULUM


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_points_to_its_exercise_and_ends_with_a_summary(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    exercises = {"01": ["ex01_block_manager"], "02": ["ex02_append_and_slots"],
                 "04": ["ex03_copy_on_write", "ex04_prefix_cache"], "05": ["ex05_scheduler_step"],
                 "03b": ["ex10_capacity_arithmetic"], "05b": ["ex08_chunked_prefill_step"],
                 "06": ["ex06_paged_attention_torch"], "07": ["ex07_triton_kernel"],
                 "07b": ["ex09_unified_kernel"]}
    for name in exercises.get(path.stem.split("_")[0], []):
        assert name in text, f"{path.name} does not point to {name}"
    assert "## Summary" in "".join(cells[-1]["source"]) or "## Summary" in text


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=[f"{p.parent.name}/{p.stem}" for p in ALL_NOTEBOOKS])
def test_notebook_in_git_has_no_outputs_counts_or_widget_state(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert "widgets" not in notebook.get("metadata", {}), "strip the widget state"
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {index} has outputs"
            assert cell.get("execution_count") is None, f"cell {index} has an execution count"


def test_each_lesson_leads_to_the_next_one():
    import re
    order = [p.name for p in LESSONS]
    for here, there in zip(order, order[1:]):
        cells = json.loads((ROOT / "notebooks" / here).read_text(encoding="utf-8"))["cells"]
        text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert re.search(rf"\]\({re.escape(there)}\)", text.split("## Summary")[-1]), \
            f"{here} does not end by pointing to {there}"
