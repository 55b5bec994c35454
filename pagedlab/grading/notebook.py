"""Reading a submitted notebook: which exercise it is, and the code cells the grader runs.

The Colab install cell and the ``check`` cells are skipped (the grader judges on its own), and
IPython-only lines (``%magic``, ``!shell``) become ``pass``: the sandbox runs plain Python.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .exercise import EXERCISE_MODULES

INSTALL_MARKER = "# pagedlab install cell"   # pagedlab.course.INSTALL_MARKER
_CHECK_CALL = re.compile(r"^\s*(?:\w+\.)?check\s*\(", re.M)
_CHECK_NAME = re.compile(r"^\s*(?:\w+\.)?check\s*\(\s*[\"'](ex\d\d)[\"']", re.M)
_MAGIC = re.compile(r"^(\s*)[%!].*$", re.M)


class NotebookError(ValueError):
    """The file is not a notebook the grader can read."""


def read(path: str | Path) -> dict:
    try:
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotebookError(f"{path}: not a readable .ipynb notebook ({error})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotebookError(f"{path}: not a Jupyter notebook (no list of cells)")
    return notebook


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else str(text)


def exercise_of(path: str | Path, notebook: dict) -> str:
    """The exercise id: from the notebook's metadata, else its file name (``ex03_...``), else
    the one exercise its ``check("exNN", ...)`` cells name (a learner may rename the file)."""
    meta = notebook.get("metadata", {}).get("pagedlab", {})
    candidate = meta.get("exercise") if isinstance(meta, dict) else None
    candidate = candidate or Path(path).name[:4]
    if candidate not in EXERCISE_MODULES:
        named = {match.group(1) for cell in notebook.get("cells", [])
                 if isinstance(cell, dict) and cell.get("cell_type") == "code"
                 for match in _CHECK_NAME.finditer(source(cell))}
        if len(named) == 1 and next(iter(named)) in EXERCISE_MODULES:
            return next(iter(named))
        raise NotebookError(f"{path}: cannot tell which exercise this is: name it exNN_..."
                            " or keep the notebook's pagedlab metadata")
    return candidate


def is_skipped(cell: dict) -> bool:
    """Install cells and check cells are not the learner's answer."""
    tags = cell.get("metadata", {}).get("tags", [])
    text = source(cell)
    return ("install" in tags or "check" in tags or text.lstrip().startswith(INSTALL_MARKER)
            or bool(_CHECK_CALL.search(text)))


def code_cells(notebook: dict) -> list[tuple[int, str]]:
    """(cell number, Python source) of the cells the grader executes, in order."""
    cells = []
    for number, cell in enumerate(notebook["cells"]):
        if cell.get("cell_type") != "code" or is_skipped(cell):
            continue
        text = source(cell)
        if text.lstrip().startswith("%%"):
            continue  # a cell magic (%%time, %%bash ...): not plain Python
        cells.append((number, _MAGIC.sub(r"\1pass  # IPython line skipped by the grader", text)))
    return cells
