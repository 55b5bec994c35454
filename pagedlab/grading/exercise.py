"""What an exercise is to the grader: the names it needs, its cases, and its reference.

Each ``exNN`` module defines ``EXERCISE`` (an :class:`Exercise`), ``cases(seed)`` (the inputs the
grader chose, as :class:`Case` objects, every one drawn from the seed), ``reference()``
(pagedlab's own answer, run only in the trusted grader process) and ``compare(case, expected,
got)`` (the judge). A case's ``driver`` names a function of :mod:`.drivers` that feeds the
case's inputs to the learner's objects and returns plain JSON observations; the grader runs it
on the reference too, and compares the two. ``check()`` shows the cases of ``seed=0``; a
graded run never uses seed 0.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Any

EXERCISE_MODULES = {
    "ex01": "pagedlab.grading.ex01",
    "ex02": "pagedlab.grading.ex02",
    "ex03": "pagedlab.grading.ex03",
    "ex04": "pagedlab.grading.ex04",
    "ex05": "pagedlab.grading.ex05",
    "ex06": "pagedlab.grading.ex06",
    "ex07": "pagedlab.grading.ex07",
    "ex08": "pagedlab.grading.ex08",
    "ex09": "pagedlab.grading.ex09",
    "ex10": "pagedlab.grading.ex10",
}


class UnknownExercise(KeyError):
    """The exercise id is not one of the course's exercises."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Case:
    """One graded case: inputs the grader chose, fed to the learner's code by ``driver``."""

    name: str
    hint: str             # shown when the case fails: what to look at
    driver: str           # name of the driver function in drivers.DRIVERS
    data: Any             # JSON-ready inputs


@dataclass(frozen=True)
class Exercise:
    """An exercise's contract with the grader.

    ``names``: keyword of ``check`` -> variable the notebook defines (``{"BlockManager":
    "MyBlockManager"}``). What the sandbox may import instead of writing it is decided by
    :mod:`.learner_copy`, not here.
    """

    id: str
    title: str
    names: dict[str, str]
    case_timeout: float = 10.0     # seconds per case (``--timeout`` overrides)


@dataclass(frozen=True)
class Mismatch:
    """Where a learner's observations first differ from the reference's."""

    where: str
    expected: str
    got: str
    hint: str = ""        # the cause, when the judge can tell it (else the case's own hint)


def exercise_ids() -> list[str]:
    return list(EXERCISE_MODULES)


def load(exercise_id: str) -> ModuleType:
    """The module of one exercise (``"ex01"``, or a notebook stem like ``"ex01_block_manager"``)."""
    key = str(exercise_id)[:4].lower()
    if key not in EXERCISE_MODULES:
        raise UnknownExercise(f"unknown exercise {exercise_id!r}: the exercises are "
                              f"{', '.join(EXERCISE_MODULES)}")
    return import_module(EXERCISE_MODULES[key])


def as_json(value: Any) -> Any:
    """The value as it looks after a JSON round trip (tuples -> lists, int keys -> str)."""
    return json.loads(json.dumps(value))


def short(value: Any, limit: int = 160) -> str:
    """A one-line, length-capped description of a value for the report."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def root_error(error: BaseException) -> BaseException:
    """The learner's own exception inside a wrapper (the Triton interpreter wraps kernel errors
    in an ``InterpreterError`` whose cause is the real one)."""
    while type(error).__name__ == "InterpreterError" and error.__cause__ is not None:
        error = error.__cause__
    return error


def drawn(exercise_id: str, seed: int, index: int, draw, wanted) -> dict:
    """Case ``index``'s input for this run: ``draw(rng)`` from an rng of the exercise, the seed
    and the case, again until ``wanted(data)`` says it shows what the case is about."""
    rng = random.Random(f"{exercise_id}:{seed}:{index}")
    for _ in range(200):
        data = draw(rng)
        if wanted(data):
            return data
    raise RuntimeError(f"no input for {exercise_id} case {index} with seed {seed}")   # never seen
