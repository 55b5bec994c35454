"""Checks that raise, for tools that give a cell its points when it runs without an error.

``pl.check`` returns a table and never raises: right for a learner, wrong for nbgrader or otter,
which score a test cell by whether it raised. These turn a report into an ``AssertionError``.
They run in the learner's own kernel, so they police no more than ``check`` does; the judge is
``pagedlab grade``. See ``python -m pagedlab.tools.course make-exercises --format nbgrader``.
"""
from __future__ import annotations

from .report import CaseResult, Report


def _failure(case: CaseResult) -> str:
    return f"{case.name}: {case.message}"


def assert_case(report: Report, name: str) -> None:
    """Raise AssertionError unless the case called ``name`` passed (silent when it did)."""
    for case in report.cases:
        if case.name == name:
            if not case.passed:
                raise AssertionError(_failure(case))
            return
    known = "; ".join(case.name for case in report.cases)
    raise AssertionError(f"{report.exercise} has no case {name!r} (its cases: {known}): "
                         "regenerate the notebook with make-exercises for this pagedlab version")


def assert_passes(report: Report) -> None:
    """Raise AssertionError listing every failed case, unless all of them passed."""
    failed = [case for case in report.cases if not case.passed]
    if not report.cases:
        raise AssertionError(f"{report.exercise}: no case ran")
    if failed:
        lines = [f"{report.exercise}: {len(failed)} of {len(report.cases)} cases failed"]
        raise AssertionError("\n".join(lines + [f"- {_failure(case)}" for case in failed]))
