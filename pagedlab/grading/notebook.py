"""Reading a submitted notebook: which exercise it is, and the code cells the grader runs.

The Colab install cell and the ``check`` cells are skipped (the grader judges on its own), and
in a cell that is not plain Python, IPython-only lines (``%magic``, ``!shell``) become ``pass``.
A notebook of any odd shape is read into plain cells or refused with a ``NotebookError``; one
too big to grade (``MAX_BYTES``, ``MAX_CELL_LINES``) with a ``NotebookTooBig``. Everything here
takes time linear in the notebook's size (the patterns match within one line, never across).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from .exercise import EXERCISE_MODULES

INSTALL_MARKER = "# pagedlab install cell"   # pagedlab.tools.course.INSTALL_MARKER
# [ \t]*, not \s*: \s also matches newlines, and a cell of blank lines then made these quadratic.
_CHECK_NAME = re.compile(r"^[ \t]*(?:\w+\.)?check[ \t]*\([ \t]*[\"'](ex\d\d)[\"']", re.M)
_MAGIC = re.compile(r"^([ \t]*)(?:%{1,2}[A-Za-z]|!(?!=)).*$", re.M)  # not "% x" or "!= x"
MAX_BYTES = 4 << 20          # a notebook file larger than this is not graded
MAX_CELL_LINES = 5_000       # nor one with a code cell longer than this (ours are under 100)


class NotebookError(ValueError):
    """The file is not a notebook the grader can read."""


class NotebookTooBig(NotebookError):
    """The notebook is over a size limit: it gets a zero with this reason, unread."""


def read(path: str | Path) -> dict:
    """The notebook as plain dicts: metadata, and cells each with a type, a source string and
    a list of string tags (whatever odd shapes the file had)."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_BYTES:
            raise NotebookTooBig(f"{path}: {size:,} bytes, over the grader's limit of "
                                 f"{MAX_BYTES:,}: clear the outputs (Edit > Clear All Outputs)")
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise NotebookError(f"{path}: not a readable .ipynb notebook ({error})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotebookError(f"{path}: not a Jupyter notebook (no list of cells)")
    metadata = notebook.get("metadata")
    cells = []
    for cell in notebook["cells"]:
        if not isinstance(cell, dict):
            continue
        cell_meta = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        tags = cell_meta.get("tags") if isinstance(cell_meta.get("tags"), list) else []
        text = source(cell)
        if cell.get("cell_type") == "code" and text.count("\n") >= MAX_CELL_LINES:
            raise NotebookTooBig(f"{path}: cell {len(cells)} has {text.count(chr(10)) + 1:,} lines, "
                                 f"over the grader's limit of {MAX_CELL_LINES:,}: split or shorten it")
        cells.append({"cell_type": cell.get("cell_type"), "source": text,
                      "metadata": {"tags": [tag for tag in tags if isinstance(tag, str)]}})
    return {"metadata": metadata if isinstance(metadata, dict) else {}, "cells": cells}


def source(cell: dict) -> str:
    text = cell.get("source", "")
    if isinstance(text, list):
        return "".join(part for part in text if isinstance(part, str))
    return text if isinstance(text, str) else ""


def exercise_of(path: str | Path, notebook: dict) -> str:
    """The exercise id: from the notebook's metadata, else its file name (``ex03_...``), else
    the one exercise its ``check("exNN", ...)`` cells name (a learner may rename the file)."""
    meta = notebook.get("metadata", {}).get("pagedlab", {})
    candidate = meta.get("exercise") if isinstance(meta, dict) else None
    if not isinstance(candidate, str) or not candidate:
        candidate = Path(path).name[:4]
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
            or _is_check_cell(text))


def _is_check_cell(text: str) -> bool:
    """Whether the cell only calls ``check(...)`` (maybe keeping or showing the result)."""
    if "check" not in text:
        return False
    try:
        body = ast.parse(plain_python(text)).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False

    def is_check(node) -> bool:
        return (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "check"
                or isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check")

    def harmless(statement) -> bool:
        value = getattr(statement, "value", None)
        if isinstance(statement, (ast.Expr, ast.Assign)) and is_check(value):
            return True
        return isinstance(statement, ast.Expr) and isinstance(value, (ast.Name, ast.Attribute))

    return bool(body) and all(map(harmless, body)) and any(
        is_check(getattr(statement, "value", None)) for statement in body)


def plain_python(text: str) -> str:
    """The cell as plain Python: IPython-only lines become ``pass`` if it does not compile."""
    try:
        compile(text, "<cell>", "exec")
        return text
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _MAGIC.sub(r"\1pass  # IPython line skipped by the grader", text)


def code_cells(notebook: dict) -> list[tuple[int, str]]:
    """(cell number, Python source) of the cells the grader executes, in order."""
    cells = []
    for number, cell in enumerate(notebook["cells"]):
        if cell.get("cell_type") != "code" or is_skipped(cell):
            continue
        text = source(cell)
        if text.lstrip().startswith("%%"):
            continue  # a cell magic (%%time, %%bash ...): not plain Python
        cells.append((number, plain_python(text)))
    return cells
