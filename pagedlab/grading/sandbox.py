"""The boundary: every submission runs in a process the operating system keeps apart.

One :class:`Sandbox` serves a whole grading run. Each submission gets an unprivileged uid of its
own (from ``FIRST_UID``, held with a lock file so that two runs never share one), the group of
its exercise (the only group that may read that exercise's learner copy of pagedlab, see
:mod:`.learner_copy`), a private working folder, resource limits, and no file descriptor of the
grader's but its three pipes. Modes:

- ``namespace`` (bubblewrap): a file system built from the system's and Python's folders only,
  read-only, with the learner copy bound in and a size-capped home folder; pagedlab's real source, the
  repository (``solutions/``, ``.git``) and the other submissions are not in it. Private /tmp,
  /dev/shm (size-capped), /proc, no network, and its own process tree, which dies with it.
- ``uid`` (no namespaces, e.g. a container without CAP_SYS_ADMIN): the uid drop alone; for the
  run, the grader makes pagedlab's source, ``solutions/``, ``.git`` and the graded paths
  unreadable to others (``chmod go-rwx``, restored by the last run to finish: :mod:`.locks`).
- ``none``: same user as the grader; graded anyway, but reported loudly as not isolated.

After each submission every process of its uid is killed and its files in the shared temporary
folders are removed (:mod:`.reaper`). :func:`.isolation.probe` checks the boundary at start: a
process started as a submission would be must fail to open the reference files.
"""
from __future__ import annotations

import fcntl
import grp
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import learner_copy, locks, reaper

MODES = ("auto", "namespace", "uid", "none")
FIRST_UID, UID_COUNT = 61000, 1000
FIRST_GID = 62000        # + NN: the group of exNN's sandboxes, the only one that may read
                         # that exercise's learner copy (ex05's holds the real BlockManager)
GID_COUNT = 16           # exercise numbers 0..15
HOME = "/home/student"               # the working folder, as a namespace sandbox sees it
HERE = Path(__file__).resolve().parent
UID_LOCKS = Path(tempfile.gettempdir()) / "pagedlab-grade-uids"   # one lock file per uid in use


class IsolationUnavailable(RuntimeError):
    """The isolation asked for cannot be had on this machine (the message says what to do)."""


def _free_uids() -> list[int]:
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    groups = range(FIRST_GID, FIRST_GID + GID_COUNT)
    if {entry.gr_gid for entry in grp.getgrall()} & set(groups):
        raise IsolationUnavailable(f"groups {groups[0]}-{groups[-1]} exist on this machine: "
                                   "the grader needs them free for its sandboxes")
    return [uid for uid in range(FIRST_UID, FIRST_UID + UID_COUNT) if uid not in taken]


class Sandbox:
    """Starts sandbox processes for one grading run; :meth:`close` undoes everything."""

    def __init__(self, mode: str, graded: list[Path] = ()):
        self.mode, self.graded = mode, [Path(p).resolve() for p in graded]
        self.root = Path(tempfile.mkdtemp(prefix="pagedlab-grade-"))
        os.chmod(self.root, 0o711)            # others may pass through, not list
        self.bin = self.root / "bin"
        self.bin.mkdir(mode=0o755)
        for name in ("child.py", "drivers.py"):
            shutil.copyfile(HERE / name, self.bin / name)
            os.chmod(self.bin / name, 0o644)
        self.libs: dict[str, Path] = {}
        self.uids = _free_uids() if os.geteuid() == 0 and mode != "none" else []
        self.next_uid, self.used_uids = random.randrange(max(1, len(self.uids))), set()
        self.held: dict[int, int] = {}       # uid -> fd of its lock: no other run may use it
        self.mutex = threading.Lock()
        self.locked: list[Path] = []
        if mode == "uid":
            self._lock()

    # -- what a submission may see --
    def gid(self, exercise: str) -> int:
        return FIRST_GID + int(exercise[2:]) if self.uids else os.getgid()

    def lib(self, exercise: str) -> Path:
        """The learner copy of pagedlab for ``exercise`` (built once per run), readable by that
        exercise's sandboxes only."""
        with self.mutex:
            if exercise not in self.libs:
                lib = learner_copy.build(exercise, self.root / f"lib-{exercise}")
                if self.uids:
                    for folder, _, files in os.walk(lib):
                        for path in [folder, *(os.path.join(folder, f) for f in files)]:
                            os.chown(path, 0, self.gid(exercise))
                            os.chmod(path, 0o750 if path == folder else 0o640)
                self.libs[exercise] = lib
            return self.libs[exercise]

    def secrets(self) -> list[Path]:
        """Files a submission must not open: the reference, the solutions, the repository."""
        folders = learner_copy.source_folders()
        package = folders.get("")
        paths = [package / "blocks.py", package / "attention.py", package / "grading" / "ex05.py"]
        if "kernels" in folders:
            paths.append(folders["kernels"] / "paged_attention.py")
        repository = package.parent
        paths += sorted((repository / "solutions").glob("ex*.ipynb"))[:2]
        paths += [repository / ".git" / "HEAD", *self.graded[:3], Path(f"/proc/{os.getpid()}/environ")]
        return [p for p in paths if p.exists()]

    def _lock(self) -> None:
        folders = learner_copy.source_folders()
        repository = folders[""].parent
        paths = [*folders.values(), *self.graded]
        if (repository / "solutions").is_dir():
            paths += [repository / name for name in ("solutions", ".git", "build")]
        self._ensure_lock_folder()
        self.locked = [p for p in paths if p.exists() and not p.is_symlink()]
        locks.Registry(UID_LOCKS).lock(self.locked)

    # -- one process --
    def allocate_uid(self) -> int:
        """A uid for the next submission, held for this run (other runs skip it)."""
        if self.mode == "none" or not self.uids:
            return os.getuid()
        with self.mutex:
            for _ in range(len(self.uids)):
                uid = self.uids[self.next_uid % len(self.uids)]
                self.next_uid += 1
                if uid in self.held or self._reserve(uid):
                    break
            else:
                raise IsolationUnavailable("every sandbox uid is held by other grading runs")
            self.used_uids.add(uid)
        self.sweep(uid)
        return uid

    @staticmethod
    def _ensure_lock_folder() -> None:
        if not UID_LOCKS.is_dir() or UID_LOCKS.is_symlink() or UID_LOCKS.stat().st_uid != 0:
            if UID_LOCKS.exists() or UID_LOCKS.is_symlink():
                os.rename(UID_LOCKS, f"{UID_LOCKS}.{os.getpid()}.unsafe")   # not ours: set aside
            UID_LOCKS.mkdir(mode=0o700, exist_ok=True)

    def _reserve(self, uid: int) -> bool:
        self._ensure_lock_folder()
        fd = os.open(UID_LOCKS / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.held[uid] = fd
        return True

    def workdir(self, uid: int) -> Path:
        path = Path(tempfile.mkdtemp(prefix="work-", dir=self.root))
        if uid != os.getuid():
            os.chown(path, uid, uid)
        os.chmod(path, 0o700)
        return path

    def start(self, exercise: str, uid: int, workdir: Path) -> subprocess.Popen:
        """A sandbox process for ``exercise``, waiting for its job on stdin."""
        lib = self.lib(exercise)
        inside = self.mode == "namespace"
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "USER": "student",
               "LOGNAME": "student", "HOME": HOME if inside else str(workdir),
               "TMPDIR": "/tmp" if inside else str(workdir),
               "PYTHONPATH": "/grader/lib" if inside else str(lib),
               "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "PAGEDLAB_PROGRESS": "0",
               "OMP_NUM_THREADS": "1", "TRITON_CACHE_DIR": f"{HOME if inside else workdir}/.triton"}
        if "TRITON_INTERPRET" in os.environ:
            env["TRITON_INTERPRET"] = os.environ["TRITON_INTERPRET"]
        child = "/grader/bin/child.py" if inside else str(self.bin / "child.py")
        argv = [sys.executable, "-s", "-B", child]
        options = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, start_new_session=True, close_fds=True)
        if inside:
            argv = self._bwrap(lib, uid) + argv
        else:
            options["cwd"] = workdir
            if uid != os.getuid():
                options.update(user=uid, group=self.gid(exercise), extra_groups=[], umask=0o077)
        return subprocess.Popen(argv, **options)

    def _bwrap(self, lib: Path, uid: int) -> list[str]:
        """bubblewrap's arguments: a read-only view of the system and of Python, the learner
        copy, and size-capped private /tmp, /dev/shm and home folder (nothing written there
        reaches the grader's disk)."""
        argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--die-with-parent", "--new-session"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        # Private /tmp and /dev/shm before Python's folders: a checkout (and its .venv) that lives
        # under /tmp must still be bound on top of the private /tmp, or Python is not there.
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(256 << 20), "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", str(64 << 20), "--tmpfs", "/dev/shm"]
        made = set()
        for folder in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix,
                              os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}):
            if folder.startswith("/usr/"):
                continue
            for parent in reversed(Path(folder).parents[:-1]):   # made 0700 by default
                if str(parent) not in made:
                    argv += ["--perms", "0755", "--dir", str(parent)]
                    made.add(str(parent))
            argv += ["--ro-bind", folder, folder]
        for real in learner_copy.source_folders().values():   # an installed (non-editable) copy
            argv += ["--tmpfs", str(real)] if any(
                str(real).startswith(f + os.sep) for f in (sys.prefix, sys.base_prefix, "/usr")) else []
        for device in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(device), str(device)]
        argv += ["--perms", "0755", "--dir", "/grader", "--perms", "0755", "--dir", "/home",
                 "--ro-bind", str(lib), "/grader/lib", "--ro-bind", str(self.bin), "/grader/bin",
                 "--perms", "1777", "--size", str(256 << 20), "--tmpfs", HOME, "--chdir", HOME]
        if uid != os.getuid():   # root: keep only the right to drop to the submission's uid
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--unshare-user"]
        return argv + ["--"]

    def finish(self, process: subprocess.Popen, uid: int, workdir: Path) -> None:
        """Kill the process and everything it started; remove what it left."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        self.sweep(uid)
        shutil.rmtree(workdir, ignore_errors=True)

    def finish_workdir(self, workdir: Path) -> None:
        shutil.rmtree(workdir, ignore_errors=True)

    def sweep(self, uid: int) -> None:
        """Kill every process of ``uid`` and remove its files from the shared temp folders."""
        if uid != os.getuid() and uid in self.held:
            reaper.kill_uid(uid)
            reaper.remove_files_of(uid)

    def live_processes(self) -> list[int]:
        """Pids of this run's sandbox processes still alive: should always be empty."""
        return reaper.live_processes(self.used_uids)

    def close(self) -> None:
        for uid in sorted(self.used_uids):
            self.sweep(uid)
        for fd in self.held.values():
            os.close(fd)
        self.held = {}
        if self.locked:
            locks.Registry(UID_LOCKS).unlock(self.locked)
        self.locked = []
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
