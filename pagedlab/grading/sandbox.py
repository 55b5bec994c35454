"""The sandbox process: run one submitted notebook's code, feed it the grader's inputs, report.

``python -m pagedlab.grading.sandbox JOB.json FD`` is started by :mod:`pagedlab.grading.runner`,
one process per notebook. It reports *observations*, never verdicts, as nonce-tagged frames on
the private pipe ``FD`` (stdout and stderr belong to the learner and are only captured). Before
the learner's code runs it

- sets resource limits (CPU time, memory, file size, no core dumps);
- switches off pagedlab's own answer to this exercise: every method of a forbidden class and
  every forbidden function is replaced by a *tripwire* that reports the use and raises, however
  the learner reached it (alias, subclass, wrapper, ``gc``);
- installs an audit hook (which cannot be removed) that blocks re-reading the forbidden modules'
  files (loading them under another name, ``inspect.getsource``), patching pagedlab's classes or
  functions, starting processes, ``ctypes`` and ``gc`` object walks;
- snapshots pagedlab's module namespaces, to notice any rebinding afterwards.
"""
from __future__ import annotations

import builtins
import importlib
import importlib.util
import inspect
import json
import linecache
import os
import sys
import traceback
from types import FunctionType

from .channel import Channel
from .exercise import root_error

CHANNEL_FD = 250            # where the channel is moved, away from the fds a learner opens first


class ReferenceUnavailable(RuntimeError):
    """pagedlab's own answer to the exercise being graded was used."""


def _limit_resources(limits: dict) -> None:
    import resource
    for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_CPU", limits.get("cpu_seconds")),
                        ("RLIMIT_FSIZE", limits.get("file_bytes")),
                        ("RLIMIT_AS", limits.get("memory_bytes"))):
        if value is not None and hasattr(resource, name):
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError):
                pass  # a platform that refuses a limit still has the grader's wall-clock watchdog


class Guard:
    """Tripwires, the audit hook and the namespace snapshot, reporting through the channel."""

    def __init__(self, exercise, channel: Channel):
        self.exercise, self.channel = exercise, channel
        self.phase = "setup"               # "setup" | "case N" | "grader"
        self.violations: list[str] = []    # uses of the reference and tampering, this phase
        self.blocked_files: set[str] = set()
        self.snapshot: dict[str, dict[str, int]] = {}
        self.protected: set[int] = set()   # ids of pagedlab's classes and functions at arm time

    # -- tripwires --
    def arm(self) -> None:
        # No new processes: the raw fork/exec that subprocess uses raises no audit event, so
        # take it away (a process in a session of its own would outlive the sandbox).
        sys.modules.pop("_posixsubprocess", None)
        subprocess_module = sys.modules.get("subprocess")
        for name in ("_posixsubprocess", "_fork_exec"):
            if subprocess_module is not None and hasattr(subprocess_module, name):
                setattr(subprocess_module, name, None)
        for module_name, names in self.exercise.forbidden.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:   # not importable here, so not usable either
                continue
            self._block_file(module)
            module.__dict__["__pagedlab_tripwire__"] = self.tripped
            for name in names:
                self._disarm_object(getattr(module, name), f"{module_name}.{name}")

    def _block_file(self, module) -> None:
        path = os.path.realpath(module.__file__)
        self.blocked_files.add(path)
        self.blocked_files.add(os.path.realpath(importlib.util.cache_from_source(path)))

    def _disarm_object(self, obj, qualname: str) -> None:
        if inspect.isclass(obj):
            for name, value in list(vars(obj).items()):
                if isinstance(value, property):
                    setattr(obj, name, property(self._wire(f"{qualname}.{name}")))
                elif isinstance(value, (staticmethod, classmethod, FunctionType)):
                    setattr(obj, name, self._wire(f"{qualname}.{name}"))
        elif isinstance(obj, FunctionType):
            self._rewire_code(obj, qualname)
        elif isinstance(getattr(obj, "fn", None), FunctionType):   # a @triton.jit kernel
            self._rewire_code(obj.fn, qualname)
            for attr in ("run", "warmup"):
                if hasattr(obj, attr):
                    object.__setattr__(obj, attr, self._wire(qualname))

    def _wire(self, qualname: str):
        tripped = self.tripped

        def tripwire(*args, **kwargs):
            tripped(qualname)
        return tripwire

    def _rewire_code(self, function: FunctionType, qualname: str) -> None:
        """Swap the function's code in place, so every alias of it trips too."""
        if function.__closure__:
            return  # only module-level functions are forbidden; leave closures alone
        text = f"def tripwire(*args, **kwargs):\n    __pagedlab_tripwire__({qualname!r})\n"
        namespace: dict = {}
        exec(compile(text, f"<tripwire {qualname}>", "exec"), namespace)
        function.__code__ = namespace["tripwire"].__code__

    def tripped(self, qualname: str) -> None:
        self.violation(f"called pagedlab's own {qualname}")
        raise ReferenceUnavailable(f"pagedlab's own {qualname} is switched off while grading "
                                   f"{self.exercise.id}: the exercise is to write it yourself")

    def violation(self, text: str) -> None:
        if text not in self.violations:
            self.violations.append(text)
            self.channel.send({"type": "violation", "phase": self.phase, "text": text})

    # -- audit hook --
    def audit(self, event: str, args: tuple) -> None:
        if self.phase == "grader":
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            relative_to_a_folder = not os.path.isabs(path) and os.path.basename(path) in {
                os.path.basename(blocked) for blocked in self.blocked_files}  # e.g. dir_fd=
            if os.path.realpath(path) in self.blocked_files or relative_to_a_folder:
                self.violation(f"read pagedlab's own source of the answer ({args[0]})")
                raise ReferenceUnavailable("reading pagedlab's own answer is switched off while grading")
        elif event in ("object.__setattr__", "object.__delattr__"):
            target = args[0]
            if id(target) in self.protected:
                self.violation(f"changed pagedlab's {getattr(target, '__qualname__', target)}"
                               f".{args[1]}")
                raise PermissionError("changing pagedlab is switched off while grading")
        elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                       "os.fork", "os.forkpty", "pty.spawn", "os.kill", "os.killpg",
                       "signal.pthread_kill", "os.link"):
            raise PermissionError(f"{event} is switched off while grading: compute in this process")
        elif event == "import" and args[0] in ("_posixsubprocess", "_ctypes"):
            raise PermissionError(f"importing {args[0]} is switched off while grading")
        elif event.startswith("ctypes.") or event in ("gc.get_objects", "gc.get_referrers",
                                                       "gc.get_referents", "sys._current_frames"):
            raise PermissionError(f"{event} is switched off while grading")

    # -- module snapshot --
    def take_snapshot(self) -> None:
        self.snapshot = {name: self._bindings(module) for name, module in list(sys.modules.items())
                         if name.split(".")[0] == "pagedlab" and module is not None}
        for name, bindings in self.snapshot.items():
            for key in bindings:
                value = vars(sys.modules[name])[key]
                if inspect.isclass(value) or isinstance(value, FunctionType):
                    self.protected.add(id(value))
                    if inspect.isclass(value):
                        self.protected.update(id(v) for v in vars(value).values()
                                              if isinstance(v, FunctionType))

    @staticmethod
    def _bindings(module) -> dict[str, int]:
        return {key: id(value) for key, value in vars(module).items()
                if inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value)}

    def check_snapshot(self) -> None:
        for name, before in self.snapshot.items():
            module = sys.modules.get(name)
            now = self._bindings(module) if module is not None else {}
            for key, ident in before.items():
                if now.get(key) != ident:
                    self.violation(f"changed pagedlab: {name}.{key} was replaced or removed")
        package = sys.modules.get("pagedlab")
        for key, where in getattr(package, "_LAZY", {}).items():   # names loaded on first use
            if key in vars(package):
                genuine = sys.modules.get(f"pagedlab.{where or key}")
                if where is not None:
                    genuine = getattr(genuine, key, None)
                if vars(package)[key] is not genuine:
                    self.violation(f"changed pagedlab: pagedlab.{key} was replaced")


def describe(error: BaseException, cells: dict[str, str]) -> str:
    """``Type: message (cell N, line L, in function)``: where in the learner's cells it happened."""
    error = root_error(error)
    frames = [(frame.f_code, lineno) for frame, lineno in traceback.walk_tb(error.__traceback__)]
    where = []
    mine = [(code, lineno) for code, lineno in frames if code.co_filename in cells]
    if mine:
        code, lineno = mine[-1]
        where.append(f"{code.co_filename[1:-1]}, line {lineno}, in {code.co_name}")
    if frames and frames[-1][0].co_filename not in cells:
        code = frames[-1][0]
        where.append(f"inside {code.co_name} of {os.path.basename(code.co_filename)}")
    text = f"{type(error).__name__}: {str(error)[:400]}"
    return text + (f" ({'; '.join(where)})" if where else "")


MAX_NOTES = 20


def main(argv: list[str]) -> None:
    job_path, fd = argv[0], int(argv[1])
    with open(job_path, encoding="utf-8") as file:
        job = json.load(file)
    os.unlink(job_path)  # the nonce in it is the channel's secret: the learner's code must not read it
    os.dup2(fd, CHANNEL_FD, inheritable=False)
    os.close(fd)
    channel = Channel(CHANNEL_FD, job["nonce"])
    _limit_resources(job.get("limits", {}))

    from .exercise import load
    from .reuse import pagedlab_dirs, reference_fingerprints, static_reuse
    module = load(job["exercise"])
    exercise = module.EXERCISE
    for name in exercise.preload:
        importlib.import_module(name)
    references = reference_fingerprints(exercise)  # before the tripwires replace them
    guard = Guard(exercise, channel)
    guard.arm()
    guard.take_snapshot()
    source_dirs = pagedlab_dirs()
    sys.addaudithook(guard.audit)

    # -- the learner's cells, in a fresh __main__-like namespace --
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    cells: dict[str, str] = {}
    notes = []
    for number, text in job["cells"]:
        filename = f"<cell {number}>"
        cells[filename] = text
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        try:
            exec(compile(text, filename, "exec"), namespace)
        except BaseException as error:  # noqa: BLE001 - SystemExit and all: keep grading
            notes.append(f"cell {number} raised {describe(error, cells)}")
    guard.phase = "grader"
    guard.check_snapshot()
    missing = [variable for variable in exercise.names.values() if variable not in namespace]
    objects = {key: namespace[variable] for key, variable in exercise.names.items()
               if variable in namespace}
    reuse = static_reuse(objects, exercise, source_dirs, references) if not missing else []
    if len(notes) > MAX_NOTES:  # a frame has a size limit: a flood of errors must not pass it
        notes = notes[:MAX_NOTES] + [f"... and {len(notes) - MAX_NOTES} more cells raised"]
    channel.send({"type": "ready", "notes": notes, "missing": missing, "reuse": reuse})
    if missing or reuse:
        channel.send({"type": "done"})
        _flush()
        os._exit(0)

    # -- the cases the grader chose --
    for case in job["cases"]:
        index = case["index"]
        guard.violations = []
        channel.send({"type": "start", "index": index})
        guard.phase = f"case {index}"
        try:
            output = getattr(module, case["driver"])(objects, case["data"])
            outcome = {"status": "ok", "output": output}
        except BaseException as error:  # noqa: BLE001
            outcome = {"status": "raised", "detail": describe(error, cells)}
        guard.phase = "grader"
        guard.check_snapshot()
        _flush()
        channel.send({"type": "case", "index": index, **outcome})
    channel.send({"type": "done"})
    _flush()
    os._exit(0)   # skip atexit handlers and threads the learner may have left behind


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a learner may have replaced the streams
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
