"""Gradescope: the ``results.json`` it reads, and the autograder files an instructor uploads.

results.json (Gradescope's format): top-level ``score``, ``execution_time``, ``output``, and
``tests``, one per case, each with ``name``, ``score``, ``max_score``, ``output``, ``visibility``.
"""
from __future__ import annotations

import stat
from pathlib import Path

from .report import Report

OUTPUT_CHARS = 4000     # of what a notebook printed, in the top-level output


def best_per_exercise(reports: list[Report]) -> tuple[list[Report], list[str]]:
    """One student's submission counts each exercise once: its best-scoring notebook."""
    best: dict[str, Report] = {}
    for report in reports:
        if report.exercise not in best or report.score > best[report.exercise].score:
            best[report.exercise] = report
    skipped = [f"{r.source}: another notebook for {r.exercise} scored as high; it counts instead"
               for r in reports if best[r.exercise] is not r]
    return sorted(best.values(), key=lambda r: r.exercise), skipped


def results(reports: list[Report], seconds: float, problems: list[str] = ()) -> dict:
    """Gradescope's results for one student's notebooks (each exercise counted once)."""
    reports, duplicates = best_per_exercise(reports)
    problems = [*problems, *duplicates]
    tests = []
    for report in reports:
        for case in report.cases:
            tests.append({"name": f"{report.exercise} {report.title}: {case.name}",
                          "score": case.score, "max_score": case.max_score,
                          "output": case.message, "visibility": "visible"})
    lines = [report.heading() for report in reports]
    for report in reports:
        lines += [f"{report.exercise} note: {note}" for note in report.notes]
        if report.output.strip():
            printed = report.output[:OUTPUT_CHARS]
            lines += [f"{report.exercise} printed (first {len(printed)} characters):", printed]
    lines += list(problems)
    return {"score": sum(report.score for report in reports),
            "execution_time": int(round(seconds)),
            "output": "\n".join(lines) or "no exercise notebooks found in the submission",
            "tests": tests}


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once to build the autograder image (Ubuntu, as root).
set -euo pipefail
# bubblewrap gives each submission a namespace of its own; where the container cannot make
# namespaces, pagedlab grade falls back to a uid of its own per submission (it runs as root).
# No user to create: the sandboxes use uids 61000-61999 and groups 62001-62015 by number.
apt-get update -qq && apt-get install -y -qq python3 python3-pip python3-venv bubblewrap >/dev/null
python3 -m venv /opt/pagedlab
# torch's CPU wheel first, so pip does not pull a multi-gigabyte CUDA build.
/opt/pagedlab/bin/pip install -q --index-url https://download.pytorch.org/whl/cpu torch
/opt/pagedlab/bin/pip install -q "pagedlab @ {install_url}"
# The installed package holds the reference answers: only root (the grader) may read it.
chmod -R go-rwx "$(/opt/pagedlab/bin/python -c 'import os, pagedlab; print(os.path.dirname(pagedlab.__file__))')"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade the notebooks the student uploaded, each in
# a sandbox (--isolation auto: namespaces where the container allows them, else a uid drop).
set -uo pipefail
mkdir -p /autograder/results
/opt/pagedlab/bin/pagedlab grade /autograder/submission --isolation auto \\
    --gradescope /autograder/results/results.json {options}
"""


def write_autograder(folder: str | Path, options: str = "") -> list[Path]:
    """Write ``setup.sh`` and ``run_autograder`` (zip them and upload to Gradescope)."""
    from ..tools.course import install_url

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("setup.sh", SETUP_SH.format(install_url=install_url())),
                       ("run_autograder", RUN_AUTOGRADER.format(options=options).rstrip() + "\n")):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        written.append(path)
    return written
