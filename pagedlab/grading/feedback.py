"""``pagedlab.check``: the exercise's public cases, run right in the learner's notebook.

It is the learner's own feedback, in the learner's own kernel, and it polices nothing: nothing
stops a notebook from handing pagedlab's own answer to ``check`` and seeing it pass. The judge
is ``pagedlab grade``, which runs each submission in a sandbox without pagedlab's answer, on
cases drawn afresh for every run (these are the cases of seed 0). See the check cell at the end
of every exercise notebook.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from . import judge
from .drivers import DRIVERS
from .exercise import load, root_error, short
from .report import Report

CHECK_SEED = 0   # check() shows the cases of seed 0; pagedlab grade never uses it


class CaseTimeout(KeyboardInterrupt):
    """A case ran past its time limit. Like Ctrl-C, so the drivers pass it on instead of
    recording it as the learner's error, and ``except Exception`` cannot swallow it."""


def _has_timer() -> bool:
    """Whether SIGALRM can interrupt this code: not off the main thread, and not in Pyodide
    (JupyterLite), whose ``signal`` module has no ``setitimer``."""
    return (sys.platform != "emscripten" and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread())


@contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after ``seconds``, and again every 0.2 s until it gives up (only
    where signals work: the main thread, not Pyodide). Yields a list that holds True once time
    ran out; where there is no timer it never does, and an endless loop is stopped by hand."""
    expired: list[bool] = []
    if not _has_timer():
        yield expired
        return

    def expire(signum, frame):
        expired[:] = [True]
        raise CaseTimeout(f"did not finish in {seconds:g} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.2)
    try:
        yield expired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(exercise: str, /, *positional, **objects) -> Report:
    """Run an exercise's cases on your code: ``check("ex01", BlockManager=MyBlockManager)``.

    Returns a report (a table in Jupyter): each case passed or failed, with what was expected,
    what came back and a hint. This is feedback for you, not the grade: ``pagedlab grade`` runs
    other cases, in a sandbox where pagedlab's own answer is not available.
    """
    module = load(exercise)
    spec = module.EXERCISE
    if positional:
        wanted = ", ".join(f"{key}={value}" for key, value in spec.names.items())
        raise TypeError(f"pass your code by name: check({spec.id!r}, {wanted})")
    missing = [name for name in spec.names if name not in objects]
    unknown = [name for name in objects if name not in spec.names]
    if missing or unknown:
        wanted = ", ".join(f"{key}={value}" for key, value in spec.names.items())
        raise TypeError(f"check({spec.id!r}, ...) takes {wanted}; "
                        + (f"missing {', '.join(missing)}" if missing else
                           f"unknown {', '.join(unknown)}"))
    cases = module.cases(CHECK_SEED)
    try:
        expected = judge.expected_outputs(module, cases)
    except ModuleNotFoundError as error:  # the exercise needs torch or Triton, not here
        from ..needs import as_missing_part
        missing = as_missing_part(error, f"check({spec.id!r})")
        if missing is None:
            raise
        raise missing from None
    if hasattr(module, "check_objects"):
        objects = module.check_objects(objects)
    outcomes = []
    for case in cases:
        outcome: dict = {}
        expired: list[bool] = []
        try:
            with _time_limit(spec.case_timeout) as expired:
                outcome.update(status="ok", output=DRIVERS[case.driver](objects, case.data))
        except CaseTimeout as error:
            outcome.update(status="timed out", detail=str(error))
        except KeyboardInterrupt:
            if not expired:
                raise
            outcome.update(status="timed out", detail=f"did not finish in {spec.case_timeout:g} s")
        except BaseException as error:  # noqa: BLE001 - report, never crash the notebook
            error = root_error(error)
            outcome.update(status="raised", detail=f"{type(error).__name__}: {short(str(error), 300)}")
        if expired and outcome["status"] == "ok":   # the learner's code swallowed the timeout
            outcome.update(status="timed out", detail=f"did not finish in {spec.case_timeout:g} s")
        outcomes.append(outcome)
    return judge.report(module, cases, expected, outcomes, notes=[
        "self-check on the public cases (seed 0); pagedlab grade judges new ones, in a sandbox"])
