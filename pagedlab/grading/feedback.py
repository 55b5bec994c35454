"""``pagedlab.check``: the grader's cases, run right in the learner's notebook.

It runs the learner's code in this process (it is the learner's own kernel), judges it against
pagedlab's reference exactly as ``pagedlab grade`` does, and returns a :class:`Report` that
Jupyter shows as a table. See the check cell at the end of every exercise notebook.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from . import judge
from .exercise import load, root_error, short
from .report import Report
from .reuse import forbidden_codes, static_reuse

CHECK_SEED = 0   # check() uses fixed random cases; the grader draws a fresh seed


class CaseTimeout(KeyboardInterrupt):
    """A case ran past its time limit. Like Ctrl-C, so the drivers pass it on instead of
    recording it as the learner's error, and ``except Exception`` cannot swallow it."""


@contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after ``seconds``, and again every 0.2 s until it gives up (only
    where signals work: the main thread). Yields a list that holds True once time ran out."""
    expired: list[bool] = []
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
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


@contextmanager
def _watch_calls(codes: dict, used: list[str]):
    """Note every call into a forbidden pagedlab function while the block runs."""
    previous = sys.getprofile()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes and codes[frame.f_code] not in used:
            used.append(codes[frame.f_code])

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


def check(exercise: str, /, *positional, **objects) -> Report:
    """Run an exercise's cases on your code: ``check("ex01", BlockManager=MyBlockManager)``.

    Returns a report (a table in Jupyter): each case passed or failed, with what was expected,
    what came back and a hint.
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
    expected = judge.expected_outputs(module, cases)
    reuse = static_reuse(objects, spec)
    codes = forbidden_codes(spec)
    outcomes = []
    for case in cases:
        used: list[str] = []
        outcome = {"reuse": list(reuse)}
        expired: list[bool] = []
        try:
            with _time_limit(spec.case_timeout) as expired, _watch_calls(codes, used):
                outcome.update(status="ok", output=getattr(module, case.driver)(objects, case.data))
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
        outcome["reuse"] += [f"called pagedlab's own {name}" for name in used]
        outcomes.append(outcome)
    return judge.report(module, cases, expected, outcomes)
