"""What was handed in: notebooks, grouped by student.

A folder whose own level holds no notebook but whose subfolders do is a *class*: each
subfolder is one student's submission, named by the folder (as Gradescope and LMS exports lay
them out). Anything else named on the command line (notebooks, a student's folder) is one
submission.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Submission:
    """One student's notebooks, and what became of them."""

    student: str
    notebooks: list[Path]
    reports: list = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
                  and not p.is_symlink())


def is_class(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.glob("*.ipynb")) and any(
        child.is_dir() and notebooks_in(child) for child in folder.iterdir())


def find_submissions(paths: list[str]) -> tuple[list[Submission], list[str]]:
    """The submissions named, and problems with paths that hold none."""
    students, loose, problems = [], [], []
    for raw in paths:
        path = Path(raw)
        if is_class(path):
            students += [Submission(child.name, notebooks_in(child)) for child in sorted(path.iterdir())
                         if child.is_dir() and notebooks_in(child)]
        elif path.is_dir():
            inside = notebooks_in(path)
            loose += inside
            if not inside:
                problems.append(f"{path}: no .ipynb notebooks in this folder")
        elif path.is_file():
            loose.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    if loose:
        students.insert(0, Submission("submission", loose))
    return students, problems
