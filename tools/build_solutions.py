"""Build solutions/exNN_name.ipynb from the sources in tools/solutions/exNN_name.py.

A source is a Python file in the "percent" format (as for the lessons): ``# %%`` starts a code
cell, ``# %% [markdown]`` a markdown cell whose lines start with ``# ``. The builder puts the
Colab badge in the first markdown cell and the install cell after it (both from
``pagedlab.course``), tags the install and ``check`` cells, records the exercise id in the
notebook's metadata, and writes it without outputs. Then run ``python -m pagedlab.course
make-exercises`` to regenerate exercises/.

    python tools/build_solutions.py            # write every solution notebook
    python tools/build_solutions.py --check    # fail if one differs from its source
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "tools" / "solutions"
SOLUTIONS = ROOT / "solutions"
sys.path.insert(0, str(ROOT))

from pagedlab import course  # noqa: E402


def parse(text: str) -> list[tuple[str, str]]:
    """(cell type, source) pairs from a percent-format file."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                line = line[2:] if line.startswith("# ") else line.lstrip("#")
            lines.append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build(source: Path) -> dict:
    stem = source.stem
    cells = parse(source.read_text(encoding="utf-8"))
    first_md = next(i for i, (kind, _) in enumerate(cells) if kind == "markdown")
    kind, text = cells[first_md]
    cells[first_md] = (kind, course.badge_markdown(f"solutions/{stem}.ipynb") + "\n\n" + text)
    cells.insert(first_md + 1, ("code", course.install_cell_source()))
    out = []
    for index, (kind, text) in enumerate(cells):
        tags = []
        if kind == "code" and text.startswith(course.INSTALL_MARKER):
            tags = ["install"]
        elif kind == "code" and ".check(" in text:
            tags = ["check"]
        cell = {"cell_type": kind, "id": f"{stem[:4]}-{index:02d}",
                "metadata": {"tags": tags} if tags else {},
                "source": text.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                           "name": "python3"},
            "language_info": {"name": "python"},
            "pagedlab": {"exercise": stem[:4]},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    stale = []
    for source in sorted(SOURCES.glob("ex[0-9][0-9]_*.py")):
        target = SOLUTIONS / f"{source.stem}.ipynb"
        text = render(build(source))
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(target)
        if not args.check:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if args.check and stale:
        print("stale (run python tools/build_solutions.py):", *map(str, stale), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
