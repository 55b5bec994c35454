"""Grade one submitted notebook: inputs chosen here, code run in a sandbox, outputs judged here.

The grader draws every case from a fresh seed, computes the reference's observations itself,
and hands the sandbox (:mod:`.sandbox`) only the notebook's code and the case inputs. It watches
with wall-clock deadlines: the notebook's own code gets ``setup_timeout`` *in all* (a restart
does not get a fresh one), each case ``case_timeout``, and nothing the sandbox prints extends
them. A case that hangs or ends the process fails alone: the process is killed and a fresh one
goes on with the next case. See the threat model in :mod:`.command`.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import judge, notebook
from .channel import Lines
from .exercise import load
from .report import CaseResult, Report


@dataclass
class Limits:
    """Limits for one submission. ``case_timeout=None`` uses the exercise's own."""

    case_timeout: float | None = None
    setup_timeout: float = 120.0      # the notebook's code, over all restarts
    memory_mb: int = 4096
    cpu_seconds: int = 900
    output_bytes: int = 20_000       # of what the notebook prints, kept for the report
    file_mb: int = 64
    open_files: int = 256
    processes: int = 64              # per uid: only where the submission has a uid of its own


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "the process closed its results pipe"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        return f"the process was killed by {name} (a crash, or a resource limit)"
    return f"the process exited with status {code} (sys.exit/os._exit or a crash)"


def refused(path: Path, reason: str, exercise_id: str, started: float, isolation: str) -> Report:
    """A zero for every case of the exercise, with the reason (e.g. a notebook over a limit)."""
    module = load(exercise_id)
    results = [CaseResult(case.name, passed=False, expected="a notebook the grader can read",
                          got=reason) for case in module.cases(0)]
    return Report(module.EXERCISE.id, module.EXERCISE.title, results, source=str(path),
                  notes=[reason], seconds=time.monotonic() - started, isolation=isolation)


def grade_notebook(path: str | Path, limits: Limits | None = None, seed: int | None = None,
                   sandbox=None) -> Report:
    """Grade one notebook; never raises for anything the submission does.

    ``sandbox``: the run's :class:`~.sandbox.Sandbox`; without one, a sandbox of the best
    isolation this machine has is made for this notebook alone."""
    if sandbox is None:
        from .isolation import open_sandbox
        with open_sandbox("auto", [Path(path)], quiet=True) as own:
            return grade_notebook(path, limits, seed, own)
    limits, path, started = limits or Limits(), Path(path), time.monotonic()
    try:
        data = notebook.read(path)
    except notebook.NotebookTooBig as error:
        exercise_id = path.name[:4] if path.name[:4] in judge.exercise_ids() else None
        if exercise_id is None:
            raise
        return refused(path, str(error), exercise_id, started, sandbox.mode)
    module = load(notebook.exercise_of(path, data))
    exercise = module.EXERCISE
    seed = random.SystemRandom().randrange(1, 1 << 30) if seed is None else seed
    cases, expected = module.cases(seed), None
    try:
        cells = module.cells(data) if hasattr(module, "cells") else notebook.code_cells(data)
    except judge.NotSolved as problem:
        outcome = {"status": "not solved", "where": problem.where, "detail": str(problem)}
        return judge.report(module, cases, judge.expected_outputs(module, cases), [outcome] * len(cases),
                            source=str(path), seconds=time.monotonic() - started, isolation=sandbox.mode)
    case_timeout = limits.case_timeout or exercise.case_timeout
    outcomes: dict[int, dict] = {}
    notes: list[str] = []
    output, printed, dropped = bytearray(), 0, 0
    setup_left, remaining = limits.setup_timeout, list(range(len(cases)))
    uid = sandbox.allocate_uid()
    while remaining:
        workdir = sandbox.workdir(uid)
        process = sandbox.start(exercise.id, uid, workdir)
        job = {"kind": "cells", "uid": uid, "gid": sandbox.gid(exercise.id), "cells": cells,
               "names": _names(module),
               "cases": [{"index": i, "driver": cases[i].driver, "data": cases[i].data}
                         for i in remaining],
               "limits": {"memory_bytes": limits.memory_mb << 20, "cpu_seconds": limits.cpu_seconds,
                          "file_bytes": limits.file_mb << 20, "open_files": limits.open_files,
                          "processes": limits.processes if uid in sandbox.uids else None}}
        lines = Lines(process.stdout, process.stderr, max(0, limits.output_bytes - len(output)),
                      process)
        try:     # from a thread: a process that never reads its job cannot block the grader
            threading.Thread(target=_send, args=(process, job), daemon=True).start()
            if expected is None:    # while the sandbox starts (torch takes seconds to import)
                expected = judge.expected_outputs(module, cases)
            remaining, used = _watch(lines, process, remaining, outcomes, notes, setup_left,
                                     case_timeout)
            setup_left = max(0.0, setup_left - used)
            lines.drain()
        finally:
            sandbox.finish(process, uid, workdir)
            output += lines.output
            printed, dropped = printed + lines.printed, dropped + lines.dropped
    if printed > len(output):
        notes.append(f"the notebook printed {printed:,} bytes; the report keeps the first "
                     f"{len(output):,}")
    if dropped:
        notes.append(f"{dropped} line(s) on the results pipe were not the grader's JSON (ignored)")
    ordered = [outcomes.get(i, {"status": judge.NOT_RUN}) for i in range(len(cases))]
    return judge.report(module, cases, expected, ordered, source=str(path),
                        notes=list(dict.fromkeys(notes)), output=output.decode("utf-8", "replace"),
                        seconds=time.monotonic() - started, isolation=sandbox.mode)


def _names(module) -> dict:
    return getattr(module, "SANDBOX_NAMES", module.EXERCISE.names)


def _send(process: subprocess.Popen, job: dict) -> None:
    try:
        process.stdin.write(json.dumps(job).encode())
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass   # it died already: _watch reports why


def _texts(value, limit: int = 50) -> list[str]:
    return [str(item)[:2000] for item in value[:limit]] if isinstance(value, list) else []


def _watch(lines: Lines, process, remaining: list[int], outcomes: dict, notes: list[str],
           setup_left: float, case_timeout: float) -> tuple[list[int], float]:
    """Follow one sandbox process. Returns the cases left for a fresh one, and the setup time
    it used."""
    started = time.monotonic()
    hard = started + setup_left + case_timeout * len(remaining)
    deadline, ready, current = started + setup_left, None, None

    def fail(status: str, detail: str) -> list[int]:
        for i in remaining:
            outcomes.setdefault(i, {"status": status, "detail": detail})
        return []

    def used() -> float:
        return (ready or time.monotonic()) - started

    while True:
        try:
            message = lines.next(min(deadline, hard))
        except TimeoutError:
            if ready is None:
                return fail("timed out", f"the notebook's code did not finish in the "
                            f"{setup_left:g} s it had left, so no case could run"), setup_left
            if current is None:
                return fail("timed out", "the sandbox stopped answering between cases"), used()
            outcomes[current] = {"status": "timed out",
                                 "detail": f"did not finish in {case_timeout:g} s (an endless loop?)"}
            notes.append(f"case {current + 1} timed out; a fresh sandbox ran the rest")
            return [i for i in remaining if i > current and i not in outcomes], used()
        except OverflowError as error:
            return fail("flooded", f"the sandbox sent {error}"), used()
        if message is None:
            try:
                reason = _exit_reason(process.wait(timeout=2))
            except subprocess.TimeoutExpired:
                reason = _exit_reason(None)
            if ready is None:
                return fail("crashed", f"{reason} while running the notebook's code"), used()
            if current is not None:
                outcomes[current] = {"status": "crashed", "detail": reason}
                notes.append(f"case {current + 1} ended the sandbox; a fresh one ran the rest")
                return [i for i in remaining if i > current and i not in outcomes], used()
            return fail("crashed", reason), used()
        event = message.get("event")
        if event == "ready" and ready is None:
            ready, deadline = time.monotonic(), hard
            notes += _texts(message.get("notes"))
            missing = _texts(message.get("missing"))
            if missing:
                cause = next((n for n in notes if "raised" in n), "")
                return fail("not defined", f"the notebook defines no {', '.join(missing)}"
                            + (f" ({cause})" if cause else "")), used()
        elif (event == "start" and ready and current is None and message.get("case") in remaining
              and message.get("case") not in outcomes):
            current, deadline = message["case"], time.monotonic() + case_timeout
        elif event == "case" and current is not None and message.get("case") == current:
            outcomes[current] = {"status": str(message.get("status")), "output": message.get("output"),
                                 "detail": str(message.get("detail", ""))[:2000]}
            current, deadline = None, hard
        elif event == "done" and ready:
            return fail(judge.NOT_RUN, "the sandbox stopped before this case"), used()
        # anything else is ignored: it is data from the submission and judges nothing
