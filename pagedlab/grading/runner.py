"""Grade one submitted notebook in a sandbox process, judging its observations here.

The parent (this module) chooses every input, computes the reference's observations itself,
and starts ``python -m pagedlab.grading.sandbox`` with a private pipe for results. It watches
the child with wall-clock deadlines: the notebook's own code gets ``setup_timeout``, each case
``case_timeout``. A case that hangs or kills the process fails alone: the child is killed and a
fresh one resumes with the next case. Output is captured and truncated; the learner's stdout
never carries results, and frames on the private pipe must carry this run's nonce.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import judge, notebook
from .exercise import load
from .report import Report
from .channel import Frames, Tampered

@dataclass
class Limits:
    """Limits for one submission. ``case_timeout=None`` uses the exercise's own."""

    case_timeout: float | None = None
    setup_timeout: float = 120.0      # the notebook's code: imports, definitions, demos
    memory_mb: int = 4096
    cpu_seconds: int = 900
    output_bytes: int = 20_000       # of stdout + stderr kept for the report
    file_mb: int = 64


class _Capture(threading.Thread):
    """Drain a pipe, keeping the first ``limit`` bytes and counting the rest."""

    def __init__(self, stream, limit: int):
        super().__init__(daemon=True)
        self.stream, self.limit, self.kept, self.total = stream, limit, bytearray(), 0
        self.start()

    def run(self) -> None:
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            self.total += len(chunk)
            if len(self.kept) < self.limit:
                self.kept += chunk[:self.limit - len(self.kept)]


def _child_env(workdir: str) -> dict:
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "PAGEDLAB_PROGRESS": "0",
           "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": package_root}
    if "TRITON_INTERPRET" in os.environ:
        env["TRITON_INTERPRET"] = os.environ["TRITON_INTERPRET"]
    return env


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "the process is still running"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        return f"the process was killed by {name} (a crash, or a resource limit)"
    return f"the process exited with status {code} (sys.exit/os._exit or a crash)"


def grade_notebook(path: str | Path, limits: Limits | None = None, seed: int | None = None,
                   python: str = sys.executable) -> Report:
    """Grade one notebook; never raises for anything the submission does."""
    limits = limits or Limits()
    started = time.monotonic()
    data = notebook.read(path)
    module = load(notebook.exercise_of(path, data))
    exercise = module.EXERCISE
    seed = random.SystemRandom().randrange(1 << 30) if seed is None else seed
    cases = module.cases(seed)
    expected = judge.expected_outputs(module, cases)
    case_timeout = limits.case_timeout or exercise.case_timeout
    outcomes: dict[int, dict] = {}
    notes: list[str] = []
    output = bytearray()
    printed = 0
    remaining = list(range(len(cases)))
    cells = notebook.code_cells(data)
    with tempfile.TemporaryDirectory(prefix="pagedlab-grade-") as workdir:
        while remaining:
            nonce = secrets.token_hex(16)
            job = {"exercise": exercise.id, "cells": cells, "nonce": nonce,
                   "cases": [{"index": i, "driver": cases[i].driver, "data": cases[i].data}
                             for i in remaining],
                   "limits": {"memory_bytes": limits.memory_mb << 20,
                              "cpu_seconds": limits.cpu_seconds,
                              "file_bytes": limits.file_mb << 20}}
            job_path = Path(workdir) / "job.json"
            job_path.write_text(json.dumps(job), encoding="utf-8")
            read_fd, write_fd = os.pipe()
            process = subprocess.Popen(
                [python, "-s", "-m", "pagedlab.grading.sandbox", str(job_path), str(write_fd)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(write_fd,), cwd=workdir, env=_child_env(workdir), start_new_session=True)
            os.close(write_fd)
            capture = _Capture(process.stdout, max(0, limits.output_bytes - len(output)))
            try:
                remaining = _watch(Frames(read_fd, nonce), process, remaining, outcomes, notes,
                                   limits.setup_timeout, case_timeout)
            finally:
                os.close(read_fd)
                _kill(process)
                capture.join(timeout=5)
                output += capture.kept
                printed += capture.total
    if printed > len(output):
        notes.append(f"the notebook printed {printed:,} bytes; the report keeps the first "
                     f"{len(output):,}")
    notes = list(dict.fromkeys(notes))   # a restarted sandbox repeats its setup notes
    ordered = [outcomes.get(i, {"status": judge.NOT_RUN}) for i in range(len(cases))]
    return judge.report(module, cases, expected, ordered, source=str(path), notes=notes,
                        output=output.decode("utf-8", "replace"),
                        seconds=time.monotonic() - started)


def _strings(message: dict, key: str) -> list[str]:
    """A list of strings from a sandbox message; anything else means the channel was forged."""
    value = message.get(key, [])
    if not isinstance(value, list) or len(value) > 1000:
        raise Tampered(f"a {key!r} field that is not a list of texts")
    return [str(item)[:2000] for item in value]


def _watch(frames: Frames, process: subprocess.Popen, remaining: list[int],
           outcomes: dict[int, dict], notes: list[str], setup_timeout: float,
           case_timeout: float) -> list[int]:
    """Follow one sandbox run; returns the cases still to run in a fresh sandbox."""

    def fail_all(status: str, detail: str, reuse: list[str] | None = None) -> list[int]:
        for i in remaining:
            outcomes.setdefault(i, {"status": status, "detail": detail, "reuse": reuse or []})
        return []

    current, violations = None, []
    deadline = time.monotonic() + setup_timeout
    ready = False
    try:
        while True:
            try:
                message = frames.next(deadline)
            except TimeoutError:
                if current is None:
                    return fail_all("timed out", f"the notebook's code did not finish in "
                                    f"{setup_timeout:g} s, so no case could run")
                outcomes[current] = {"status": "timed out", "reuse": violations,
                                     "detail": f"did not finish in {case_timeout:g} s (an endless loop?)"}
                notes.append(f"case {current + 1} timed out; the sandbox was restarted for the rest")
                return [i for i in remaining if i > current]
            if message is None:   # the sandbox ended without saying "done"
                reason = _exit_reason(process.wait(timeout=10))
                if not ready:
                    return fail_all("crashed", f"{reason} while running the notebook's code")
                if current is not None:
                    outcomes[current] = {"status": "crashed", "detail": reason, "reuse": violations}
                    notes.append(f"case {current + 1} ended the sandbox; it was restarted for the rest")
                    return [i for i in remaining if i > current]
                return fail_all("crashed", reason)
            kind = message.get("type")
            if kind == "violation":
                text = str(message.get("text"))
                if current is None:
                    notes.append(f"while the notebook's code ran, it {text} (switched off while "
                                 "grading)")
                    if "changed pagedlab" in text:
                        violations.append(text)
                else:
                    violations.append(text)
            elif kind == "ready" and not ready:
                ready = True
                notes += _strings(message, "notes")
                missing = _strings(message, "missing")
                if missing:
                    cause = next((n for n in notes if "raised" in n), "")
                    return fail_all("not defined", f"the notebook defines no {', '.join(missing)}"
                                    + (f" ({cause})" if cause else ""))
                reuse = _strings(message, "reuse") + violations
                if reuse:
                    return fail_all("reused", "", reuse)
            elif kind == "start" and ready and message.get("index") in remaining \
                    and message.get("index") not in outcomes and current is None:
                current = message["index"]
                deadline = time.monotonic() + case_timeout
                violations = [v for v in violations if "changed pagedlab" in v]
            elif kind == "case" and message.get("index") == current:
                outcomes[current] = {"status": message.get("status"), "output": message.get("output"),
                                     "detail": message.get("detail", ""), "reuse": violations}
                current, violations = None, [v for v in violations if "changed pagedlab" in v]
            elif kind == "done" and ready and current is None:
                return fail_all(judge.NOT_RUN, "the sandbox stopped before this case")
            else:
                raise Tampered(f"an unexpected {kind!r} message")
    except Tampered as error:
        for i in remaining:
            outcomes[i] = {"status": "tampered",
                           "detail": f"the grader's private channel carried {error}: results "
                                     "cannot be trusted", "reuse": []}
        notes.append(f"the private result channel was tampered with ({error})")
        return []
