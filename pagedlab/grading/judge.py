"""The trusted side of grading: compute the reference's observations and judge the learner's.

The learner's code only ever *produces* observations (in a sandbox process, or in the notebook
for ``check``); every verdict is computed here, from pagedlab's reference run on the same inputs.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

from .drivers import DRIVERS
from .exercise import Case, as_json, exercise_ids, short
from .report import CaseResult, Report

__all__ = ["NOT_RUN", "NotSolved", "exercise_ids", "expected_outputs", "verdict", "report"]

# What a case's outcome can be, besides "ok" with observations.
NOT_RUN = "not run"


class NotSolved(Exception):
    """The grader sees, without running anything, that the notebook does not answer the
    exercise (e.g. ex07's wrapper never launches the kernel). ``where`` names the part."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where


def expected_outputs(module: ModuleType, cases: list[Case]) -> list[Any]:
    """The reference's observations for every case (run here, never in the sandbox)."""
    objects = module.reference()
    driver = getattr(module, "REFERENCE_DRIVER", None)
    return [as_json(DRIVERS[driver or case.driver](objects, case.data)) for case in cases]


def verdict(module: ModuleType, case: Case, expected: Any, outcome: dict) -> CaseResult:
    """Judge one case. ``outcome``: {"status": "ok", "output": ...} or {"status": <why not>,
    "detail": ..., "where": ...}."""
    result = CaseResult(case.name, passed=False, hint=case.hint)
    if outcome.get("status") != "ok":
        result.where = str(outcome.get("where", ""))
        result.expected = "the case to run to the end"
        result.got = f"{outcome.get('status')}: {outcome.get('detail', '')}".rstrip(": ")
        return result
    try:
        mismatch = module.compare(case, expected, as_json(outcome.get("output")))
    except Exception as error:  # noqa: BLE001 - malformed observations are a failed case
        result.expected, result.got = "observations the grader can read", short(repr(error))
        return result
    if mismatch is None:
        return CaseResult(case.name, passed=True, hint=case.hint)
    result.where, result.expected, result.got = mismatch.where, mismatch.expected, mismatch.got
    result.hint = mismatch.hint or case.hint
    return result


def report(module: ModuleType, cases: list[Case], expected: list[Any],
           outcomes: list[dict], **fields: Any) -> Report:
    results = [verdict(module, case, want, outcome)
               for case, want, outcome in zip(cases, expected, outcomes)]
    return Report(module.EXERCISE.id, module.EXERCISE.title, results, **fields)
