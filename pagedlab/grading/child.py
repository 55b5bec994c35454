"""The first code of a sandbox process: limits, the submission's cells, the drivers, JSON lines.

``python -s -B child.py`` runs inside the isolation that :mod:`.sandbox` builds, next to a copy
of ``drivers.py`` and a learner copy of pagedlab (on ``PYTHONPATH``). It reads its job from
stdin, prints one JSON object per line on stdout, and sends the learner's own prints to stderr.
Nothing in this file defends anything: the learner's code runs in this same process and may
change all of it. The boundary is the operating system around the process, and the grader
judges whatever comes out of it as untrusted data.

Lines: ``{"event": "ready", "notes": [...], "missing": [...]}`` once the cells ran, then per case
``{"event": "start", "case": i}`` and ``{"event": "case", "case": i, "status": ..., ...}``.
"""
from __future__ import annotations

import builtins
import json
import linecache
import os
import sys
import traceback

MAX_NOTES = 20


def _limit(limits: dict) -> None:
    import resource
    for name, key in (("RLIMIT_CORE", None), ("RLIMIT_CPU", "cpu_seconds"),
                      ("RLIMIT_FSIZE", "file_bytes"), ("RLIMIT_AS", "memory_bytes"),
                      ("RLIMIT_NOFILE", "open_files"), ("RLIMIT_NPROC", "processes")):
        value = 0 if key is None else limits.get(key)
        if value is not None:
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError):
                pass  # the grader's wall clock and the isolation still hold


def describe(error: BaseException, cells: dict) -> str:
    """``Type: message (cell N, line L, in function)``: where in the learner's cells it happened."""
    while type(error).__name__ == "InterpreterError" and error.__cause__ is not None:
        error = error.__cause__       # the Triton interpreter wraps the real error
    frames = [(frame.f_code, line) for frame, line in traceback.walk_tb(error.__traceback__)]
    mine = [(code, line) for code, line in frames if code.co_filename in cells]
    where = [f"{code.co_filename[1:-1]}, line {line}, in {code.co_name}" for code, line in mine[-1:]]
    if frames and frames[-1][0].co_filename not in cells:
        where.append(f"inside {frames[-1][0].co_name} of {os.path.basename(frames[-1][0].co_filename)}")
    text = f"{type(error).__name__}: {str(error)[:400]}"
    return text + (f" ({'; '.join(where)})" if where else "")


def _run(filename: str, text: str, namespace: dict, cells: dict) -> str | None:
    """Run one cell; the note to report if it raised."""
    cells[filename] = text
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)  # Triton reads it
    try:
        exec(compile(text, filename, "exec"), namespace)
    except BaseException as error:  # noqa: BLE001 - SystemExit and all: keep going
        return f"{filename[1:-1]} raised {describe(error, cells)}"
    return None


def _probe(job: dict, emit) -> None:
    """What the sandbox can reach: the files it must not open, and where pagedlab comes from."""
    opened = []
    for path in job["paths"]:
        try:
            with open(path, "rb") as file:
                file.read(1)
            opened.append(path)
        except OSError:
            pass
    import pagedlab.blocks
    emit({"event": "probe", "opened": opened, "uid": os.getuid(),
          "blocks": os.path.realpath(pagedlab.blocks.__file__)})


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    uid = job.get("uid")
    if uid is not None and os.getuid() == 0 and uid != 0:   # namespace mode, started as root
        os.setgroups([])
        os.setgid(job["gid"])
        os.setuid(uid)
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)                    # the learner's prints go to stderr, kept as its output

    def emit(message: dict) -> None:
        _flush()              # the learner's prints first, so none is cut off by the end
        results.write(json.dumps(message, default=repr) + "\n")
        results.flush()

    _limit(job.get("limits", {}))
    if job["kind"] == "probe":
        _probe(job, emit)
        return
    import drivers
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    cells: dict = {}
    notes = [note for number, text in job["cells"]
             if (note := _run(f"<cell {number}>", text, namespace, cells)) is not None]
    missing = [name for name in job["names"].values() if name not in namespace]
    objects = {key: namespace[name] for key, name in job["names"].items() if name in namespace}
    if len(notes) > MAX_NOTES:
        notes = notes[:MAX_NOTES] + [f"... and {len(notes) - MAX_NOTES} more cells raised"]
    emit({"event": "ready", "notes": notes, "missing": missing})
    if missing:
        return
    for case in job["cases"]:
        emit({"event": "start", "case": case["index"]})
        try:
            outcome = {"status": "ok", "output": drivers.DRIVERS[case["driver"]](objects, case["data"])}
        except BaseException as error:  # noqa: BLE001
            outcome = {"status": "raised", "detail": describe(error, cells)}
        emit({"event": "case", "case": case["index"], **outcome})
    emit({"event": "done"})


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a learner may have replaced the streams
            pass


if __name__ == "__main__":
    main()
    _flush()
    os._exit(0)   # skip atexit handlers and threads the learner may have left behind
