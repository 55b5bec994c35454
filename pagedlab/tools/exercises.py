"""Write exercises/ from solutions/: each solution region becomes a stub that says what to do.

In a solution notebook, the learner's part of a code cell sits between ``### BEGIN SOLUTION``
and ``### END SOLUTION``. Lines right after BEGIN that start with ``# Hint:`` stay in the
exercise; the rest becomes ``raise NotImplementedError("...")`` carrying the hint, indented like
the markers. Badges point at the exercise, outputs are dropped.

    python -m pagedlab.tools.course make-exercises [--check] [--solutions DIR] [--exercises DIR]
    python -m pagedlab.tools.course make-exercises --format nbgrader|otter --output DIR

``--format`` writes the same exercises for an instructor's tool instead (see
:mod:`pagedlab.tools.instructor_formats`).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HINT = "# Hint:"
NAME = "ex[0-9][0-9]_*.ipynb"


class SolutionMarkerError(ValueError):
    """BEGIN/END SOLUTION markers that do not pair up."""


def strip_solutions(text: str, where: str = "cell") -> str:
    """The cell source with every solution region replaced by its stub."""
    out, region, hints, leading = [], None, [], False
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if region is not None:
                raise SolutionMarkerError(f"{where}, line {number}: {BEGIN} inside another region")
            region, hints, leading = line[:len(line) - len(line.lstrip())], [], True
        elif stripped == END:
            if region is None:
                raise SolutionMarkerError(f"{where}, line {number}: {END} without {BEGIN}")
            hint = " ".join(h[len(HINT):].strip() for h in hints)
            message = "your code here" + (f": {hint}" if hint else "")
            out += [region + h for h in hints]
            out.append(f"{region}raise NotImplementedError({json.dumps(message)})")
            region = None
        elif region is not None:
            leading = leading and stripped.startswith(HINT)
            if leading:
                hints.append(stripped)
        else:
            out.append(line)
    if region is not None:
        raise SolutionMarkerError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def exercise_notebook(solution: dict, solution_name: str) -> dict:
    """The exercise version of a solution notebook (a new dict)."""
    notebook = json.loads(json.dumps(solution))
    for index, cell in enumerate(notebook["cells"]):
        text = "".join(cell.get("source", []))
        if cell.get("cell_type") == "code":
            text = strip_solutions(text, f"{solution_name} cell {index}")
            cell["outputs"], cell["execution_count"] = [], None
        text = re.sub(r"/solutions/(ex[0-9][0-9]_)", r"/exercises/\1", text)
        cell["source"] = text.splitlines(keepends=True)
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


def render(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def _plan(solutions_dir: Path, exercises_dir: Path) -> dict[Path, str | None]:
    """Exercise path -> text it should have (None: remove, its solution is gone)."""
    plan: dict[Path, str | None] = {}
    for path in sorted(solutions_dir.glob(NAME)):
        solution = json.loads(path.read_text(encoding="utf-8"))
        plan[exercises_dir / path.name] = render(exercise_notebook(solution, path.name))
    for path in sorted(exercises_dir.glob(NAME)):
        plan.setdefault(path, None)
    return plan


def stale_exercises(solutions_dir: str | Path, exercises_dir: str | Path) -> list[Path]:
    """Exercise notebooks that differ from what make_exercises would write."""
    stale = []
    for path, text in _plan(Path(solutions_dir), Path(exercises_dir)).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path)
    return stale


def make_exercises(solutions_dir: str | Path, exercises_dir: str | Path) -> list[Path]:
    """Write (or remove) exercise notebooks to match the solutions; returns the files changed."""
    exercises_dir = Path(exercises_dir)
    exercises_dir.mkdir(parents=True, exist_ok=True)
    changed = stale_exercises(solutions_dir, exercises_dir)
    plan = _plan(Path(solutions_dir), exercises_dir)
    for path in changed:
        if plan[path] is None:
            path.unlink()
        else:
            path.write_text(plan[path], encoding="utf-8")
    return changed


def main(argv: list[str] | None, root: Path) -> int:
    """``make-exercises`` for the checkout at ``root`` (called by ``pagedlab.tools.course``)."""
    parser = argparse.ArgumentParser(prog="python -m pagedlab.tools.course make-exercises",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--solutions", type=Path, default=root / "solutions")
    parser.add_argument("--exercises", type=Path, default=root / "exercises")
    parser.add_argument("--check", action="store_true", help="only report stale exercises")
    parser.add_argument("--format", choices=("exercises", "nbgrader", "otter"), default="exercises",
                        help="exercises/ for learners (default), or an instructor tool's format")
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="where --format nbgrader|otter writes (a course folder of its own)")
    args = parser.parse_args(argv)
    if args.format != "exercises":
        return _instructor_format(parser, args)
    try:
        if args.check:
            stale = stale_exercises(args.solutions, args.exercises)
            for path in stale:
                print(f"stale: {path} (run python -m pagedlab.tools.course make-exercises)")
            return 1 if stale else 0
        for path in make_exercises(args.solutions, args.exercises):
            print(f"{'wrote' if path.exists() else 'removed'} {path}")
    except SolutionMarkerError as error:
        print(f"make-exercises: {error}", file=sys.stderr)
        return 1
    return 0


def _instructor_format(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .instructor_formats import InstructorFormatError, write_format

    if args.output is None or args.check:
        parser.error(f"--format {args.format} needs --output DIR (and takes no --check)")
    try:
        written = write_format(args.format, args.solutions, args.output, NAME)
    except (InstructorFormatError, SolutionMarkerError) as error:
        print(f"make-exercises: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0
