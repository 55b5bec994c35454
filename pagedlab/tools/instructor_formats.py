"""The solution notebooks in the formats of instructors' tools: nbgrader and otter-grader.

    python -m pagedlab.tools.course make-exercises --format nbgrader --output DIR
    python -m pagedlab.tools.course make-exercises --format otter --output DIR

Both start from ``solutions/exNN_*.ipynb``, as ``exercises/`` does, and end in a check that
*raises*: ``pl.check`` returns a table and never raises, so a tool that scores a cell by whether
it ran without an error would give a stub full marks. Here every case of the exercise is one
point, in a cell of its own that calls :func:`pagedlab.grading.asserts.assert_case`.

- nbgrader: ``DIR/nbgrader_config.py`` and ``DIR/source/<exercise>/<exercise>.ipynb``, with
  nbgrader's cell metadata (solution cells, a locked check cell, a locked grade cell per case).
  Then ``nbgrader generate_assignment <exercise>`` and ``nbgrader autograde <exercise>`` in DIR.
- otter: ``DIR/<exercise>/<exercise>.ipynb`` in otter assign's format (an ``ASSIGNMENT CONFIG``
  cell, one question per exercise, each solution cell in a solution block, a test per case).
  Then ``otter assign DIR/<exercise>/<exercise>.ipynb OUT`` and ``otter run -a OUT/autograder/
  <exercise>-autograder_*.zip SUBMISSION.ipynb``.

Both tools grade in the learner's own kernel, where pagedlab (and so its reference answer) is
importable: they police no more than ``check`` does. The trusted judge is ``pagedlab grade``.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from .exercises import BEGIN, END, HINT, strip_solutions

FORMATS = ("nbgrader", "otter")
NBGRADER_SCHEMA = 3
STUB = 'raise NotImplementedError("your code here")'

NBGRADER_CONFIG = f"""\
# nbgrader's settings for the pagedlab exercises (written by make-exercises --format nbgrader).
c = get_config()  # noqa: F821 - nbgrader defines it
c.CourseDirectory.course_id = "pagedlab"
# The stub that replaces each ### BEGIN SOLUTION ... ### END SOLUTION region (hints stay above it).
c.ClearSolutions.code_stub = {{"python": {json.dumps(STUB)}}}
# ex07 and ex09 run Triton kernels in its interpreter on a CPU: slow, but not stuck.
c.ExecutePreprocessor.timeout = 900
"""


NEXT_STEPS = {
    "nbgrader": """# pagedlab exercises for nbgrader

In this folder, with nbgrader installed (`pip install 'pagedlab[instructor]'`, venv active):

    nbgrader generate_assignment ex01_block_manager     # release/: the student copy
    # submissions go to submitted/<student>/ex01_block_manager/ex01_block_manager.ipynb
    nbgrader autograde ex01_block_manager --create
    nbgrader export                                     # grades.csv

Each case of the exercise is a locked grade cell of 1 point that raises when the case fails.
They run in the student's kernel on the public cases of `pl.check`: for a grade the student
cannot game, use `pagedlab grade` (a sandbox, cases drawn afresh).
""",
    "otter": """# pagedlab exercises for otter-grader

With otter-grader installed (`pip install 'pagedlab[instructor]'`):

    otter assign ex01_block_manager/ex01_block_manager.ipynb dist/ex01
    # dist/ex01/student/: hand it out; dist/ex01/autograder/*.zip: Gradescope or otter run
    otter run -a dist/ex01/autograder/ex01_block_manager-autograder_*.zip SUBMISSION.ipynb

requirements.txt (here) is what otter's Gradescope image installs: pagedlab from the course's
configured source (`python -m pagedlab.tools.course show`), with torch's CPU build when an
exercise needs it. Each case is a test of 1 point, run in the student's kernel on the public cases of
`pl.check`: for a grade the student cannot game, use `pagedlab grade`.
""",
}


class InstructorFormatError(ValueError):
    """A solution notebook that cannot be written in an instructor tool's format."""


# ---------------------------------------------------------------------------- shared
def move_hints_above(text: str, begin: str = BEGIN, end: str = END) -> str:
    """The cell source with each region's leading ``# Hint:`` lines moved above its BEGIN
    marker (so the tool that removes the region keeps them), markers written ``begin``/``end``."""
    strip_solutions(text)                          # raises on markers that do not pair up
    out: list[str] = []
    region: str | None = None                      # indent of the open region
    hints: list[str] | None = None                 # its leading hints, until the code starts
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            region, hints = line[:len(line) - len(line.lstrip())], []
            continue
        if region is not None and hints is not None:
            if stripped.startswith(HINT):
                hints.append(line)
                continue
            out += hints + [region + begin]
            hints = None
        if stripped == END:
            out.append(region + end)
            region = None
        else:
            out.append(line)
    return "\n".join(out)


def has_solution(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and any(
        line.strip() == BEGIN for line in _source(cell).split("\n"))


def check_call(notebook: dict, name: str) -> tuple[int, str, list[str]]:
    """(index, source, names) of the cell tagged ``check``: one ``pl.check(...)`` call whose
    keyword values are the notebook's names for the learner's objects."""
    found = [i for i, cell in enumerate(notebook["cells"])
             if "check" in cell.get("metadata", {}).get("tags", [])]
    if len(found) != 1:
        raise InstructorFormatError(f"{name}: needs exactly one cell tagged 'check', has {len(found)}")
    source = _source(notebook["cells"][found[0]]).strip()
    tree = ast.parse(source)
    call = tree.body[0].value if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr) else None
    if not (isinstance(call, ast.Call) and all(isinstance(k.value, ast.Name) for k in call.keywords)):
        raise InstructorFormatError(f"{name}: the check cell must be one call like "
                                    "pl.check('exNN', Name=MyName), got: " + source)
    return found[0], source, [k.value.id for k in call.keywords]


def case_names(exercise: str) -> list[str]:
    """The names of the cases ``pl.check(exercise, ...)`` runs (seed 0)."""
    from ..grading.exercise import load
    from ..grading.feedback import CHECK_SEED

    return [case.name for case in load(exercise).cases(CHECK_SEED)]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _cell(cell_type: str, text: str, **metadata) -> dict:
    cell = {"cell_type": cell_type, "metadata": metadata, "source": text.splitlines(keepends=True)}
    if cell_type == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _with_ids(notebook: dict, cells: list[dict], exercise: str) -> dict:
    """``notebook`` holding ``cells``; the new ones get ids where the format has them (4.5+)."""
    if notebook.get("nbformat", 4) > 4 or notebook.get("nbformat_minor", 0) >= 5:
        for number, cell in enumerate(cells):
            cell.setdefault("id", f"{exercise}-added-{number}")
    notebook["cells"] = cells
    return notebook


def _plain_copy(solution: dict) -> dict:
    """The solution notebook without outputs or widget state, badges pointing at exercises/."""
    notebook = json.loads(json.dumps(solution))
    for cell in notebook["cells"]:
        text = re.sub(r"/solutions/(ex[0-9][0-9]_)", r"/exercises/\1", _source(cell))
        cell["source"] = text.splitlines(keepends=True)
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


# ---------------------------------------------------------------------------- nbgrader
def _nbgrader(grade_id: str, *, solution=False, grade=False, locked=False, points=0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked,
            "schema_version": NBGRADER_SCHEMA, "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def nbgrader_notebook(solution: dict, name: str) -> dict:
    """nbgrader's source version of a solution notebook: solution cells, the check cell locked
    and keeping its report, then a locked grade cell per case (1 point, raises on failure)."""
    exercise = name[:4]
    index, call, _ = check_call(solution, name)
    notebook = _plain_copy(solution)
    cells = []
    for number, cell in enumerate(notebook["cells"]):
        if has_solution(cell):
            cell["source"] = move_hints_above(_source(cell)).splitlines(keepends=True)
            cell["metadata"].update(_nbgrader(f"{exercise}_solution_{number}", solution=True))
        cells.append(cell)
        if number != index:
            continue
        cell["source"] = f"report = {call}\nreport".splitlines(keepends=True)
        cell["metadata"].update(_nbgrader(f"{exercise}_check", locked=True))
        for case, case_name in enumerate(case_names(exercise)):
            text = (f"# Graded, 1 point: {case_name}\n"
                    "from pagedlab.grading.asserts import assert_case\n"
                    f"assert_case(report, {json.dumps(case_name)})")
            cells.append(_cell("code", text, **_nbgrader(f"{exercise}_case_{case}", grade=True,
                                                          locked=True, points=1)))
    return _with_ids(notebook, cells, exercise)


# ---------------------------------------------------------------------------- otter
def otter_notebook(solution: dict, name: str, requirements: str = "requirements.txt") -> dict:
    """otter assign's master version of a solution notebook: one question for the exercise,
    from its first solution cell to its last, each solution cell in a solution block, and a
    test per case (1 point) that raises unless the case passes."""
    exercise = name[:4]
    _, call, names = check_call(solution, name)
    notebook = _plain_copy(solution)
    solutions = [i for i, cell in enumerate(notebook["cells"]) if has_solution(cell)]
    if not solutions:
        raise InstructorFormatError(f"{name}: no {BEGIN} region")
    cases = case_names(exercise)
    config = {"name": name, "requirements": requirements, "generate": True,
              "export_cell": False, "run_tests": True, "tests": {"files": False, "ok_format": False}}
    cells = [_cell("raw", "# ASSIGNMENT CONFIG\n" + _yaml(config))]
    for number, cell in enumerate(notebook["cells"]):
        if number == solutions[0]:
            cells.append(_cell("raw", f"# BEGIN QUESTION\nname: {exercise}\npoints: {len(cases)}"))
        if number in solutions:
            text = move_hints_above(_source(cell), "# BEGIN SOLUTION", "# END SOLUTION")
            cell["source"] = text.splitlines(keepends=True)
            cells += [_cell("raw", "# BEGIN SOLUTION"), cell, _cell("raw", "# END SOLUTION")]
        else:
            cells.append(cell)
        if number == solutions[-1]:
            cells.append(_cell("raw", "# BEGIN TESTS"))
            cells += [_cell("code", _otter_test(case, case_name, call, names))
                      for case, case_name in enumerate(cases)]
            cells += [_cell("raw", "# END TESTS"), _cell("raw", "# END QUESTION")]
    return _with_ids(notebook, cells, exercise)


def _otter_test(case: int, case_name: str, call: str, names: list[str]) -> str:
    """An exception-based otter test: a function of the notebook's names, and its call."""
    arguments = ", ".join(names)
    first, *rest = call.split("\n")          # a call may span lines (inside its parentheses)
    body = ["import pagedlab as pl", "from pagedlab.grading.asserts import assert_case",
            f"report = {first}", *rest, f"assert_case(report, {json.dumps(case_name)})"]
    lines = [f"def test_case_{case}({arguments}):", f'    """{case_name}"""']
    return "\n".join(lines + ["    " + line for line in body] + ["", f"test_case_{case}({arguments})"])


def _yaml(config: dict, indent: str = "") -> str:
    """Plain YAML for the flat config above (strings, booleans, one nested mapping)."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_yaml(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {json.dumps(value)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- writing
def write_format(fmt: str, solutions_dir: Path, output: Path, pattern: str) -> list[Path]:
    """Write every solution notebook in ``fmt`` under ``output``; returns the files written."""
    if fmt not in FORMATS:
        raise InstructorFormatError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    paths = sorted(Path(solutions_dir).glob(pattern))
    if not paths:
        raise InstructorFormatError(f"no {pattern} in {solutions_dir}")
    written = [_write(output / "README.md", NEXT_STEPS[fmt])]
    if fmt == "nbgrader":
        written.append(_write(output / "nbgrader_config.py", NBGRADER_CONFIG))
    else:
        written.append(_write(output / "requirements.txt", otter_requirements(paths)))
    for path in paths:
        solution = json.loads(path.read_text(encoding="utf-8"))
        if fmt == "nbgrader":
            notebook = nbgrader_notebook(solution, path.name)
            target = output / "source" / path.stem / path.name
        else:
            notebook = otter_notebook(solution, path.name, requirements="../requirements.txt")
            target = output / path.stem / path.name
        written.append(_write(target, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"))
    return written


def otter_requirements(solution_paths: list[Path]) -> str:
    """What otter's autograder image installs: pagedlab from the course's configured source,
    with torch and Triton (the ``attention`` extra, torch's CPU build) when an exercise needs
    them (its notebook asks for torch)."""
    from .course import install_requirement

    def asks_for_torch(path: Path) -> bool:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        code = "\n".join("".join(cell.get("source", [])) for cell in cells
                         if cell.get("cell_type") == "code")
        return re.search(r"require\(\s*['\"]torch|^\s*(import|from) torch\b", code, re.M) is not None

    needs_torch = any(asks_for_torch(path) for path in solution_paths)
    if not needs_torch:
        return install_requirement() + "\n"
    return ("--extra-index-url https://download.pytorch.org/whl/cpu\n"  # torch's CPU build
            + install_requirement(("attention",)) + "\n")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
