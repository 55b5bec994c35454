"""The end of a submission: every process of its uid killed, its files in shared folders removed.

A process can leave a session, its process group and its parent; it cannot leave its uid. So
the grader kills by uid: a forked helper becomes that uid and calls ``kill(-1, SIGKILL)``, which
reaches exactly the processes that uid owns (never the helper itself, never anyone else's).
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

SHARED_TEMP = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")


def kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (the caller must be root, and ``uid`` not its own)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(3):          # a process forking while we kill: once more
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.005)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def remove_files_of(uid: int, folders: tuple[str, ...] = SHARED_TEMP) -> None:
    """Remove what ``uid`` left at the top of the shared temporary folders (never following
    a link it planted)."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def live_processes(uids: set[int]) -> list[int]:
    """Pids of processes of ``uids`` still alive (zombies do not count: they cannot act)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields.get("Uid", "0").split()[0])
        if uid in uids and not fields.get("State", "").strip().startswith("Z"):
            found.append(int(entry.name))
    return found
