"""Writing the results of a run: Gradescope's results.json, a JSON per student, a CSV.

Each file is written whole or not at all (a temporary file in the same folder, then renamed),
after every sandbox process of the run is gone. A path that cannot be written is reported and
the other outputs are still written.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from . import gradescope
from .exercise import exercise_ids


class ResultsError(OSError):
    """A results file could not be written (the message says which and why)."""


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"cannot write {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        raise ResultsError(f"cannot write {path}: {error.strerror or error}") from None


def student_results(submission, problems: list[str], mode: str, seconds: float,
                    visibility: str = "visible") -> dict:
    data = gradescope.results(submission.reports, seconds, [*submission.problems, *problems],
                              visibility)
    if mode == "none":
        data["output"] = "NOT ISOLATED: graded without a sandbox.\n" + data["output"]
    data["extra_data"] = {"isolation": mode, "isolated": mode != "none", "student": submission.student}
    return data


def csv_text(submissions: list, mode: str) -> str:
    ids = exercise_ids()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["student", *ids, "score", "max_score", "isolation", "problems"])
    for submission in submissions:
        best, _ = gradescope.best_per_exercise(submission.reports)
        scores = {r.exercise: r.score for r in best}
        writer.writerow([_cell(submission.student), *(f"{scores[i]:g}" if i in scores else "" for i in ids),
                         f"{sum(r.score for r in best):g}", f"{sum(r.max_score for r in best):g}",
                         mode, _cell("; ".join(submission.problems))])
    return out.getvalue()


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _safe_name(student: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in student).lstrip(".")
    return name or "student"


def write_all(submissions: list, problems: list[str], mode: str, seconds: float, *,
              csv_path: str | None = None, json_dir: str | None = None,
              gradescope_path: str | None = None, visibility: str = "visible") -> list[str]:
    """Write every output asked for; returns one message per output that failed."""
    jobs = []
    if gradescope_path:
        from .submissions import Submission
        only = submissions[0] if submissions else Submission("submission", [])
        jobs.append((gradescope_path, json.dumps(student_results(only, problems, mode, seconds,
                                                                 visibility), indent=2) + "\n"))
    if json_dir:
        for submission in submissions:
            data = student_results(submission, problems, mode, seconds, visibility)
            jobs.append((Path(json_dir) / f"{_safe_name(submission.student)}.json",
                         json.dumps(data, indent=2) + "\n"))
    if csv_path:
        jobs.append((csv_path, csv_text(submissions, mode)))
    failed = []
    for path, text in jobs:
        try:
            write_atomic(path, text)
            print(f"wrote {path}")
        except ResultsError as error:
            failed.append(str(error))
    return failed
