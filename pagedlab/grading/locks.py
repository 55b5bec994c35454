"""Making paths private for a uid-isolated run, shared by every run on the machine at once.

uid isolation hides pagedlab's source, ``solutions/``, ``.git`` and the graded paths from the
sandbox uids by ``chmod go-rwx`` for the run. Two runs at once must not undo each other (the
second would note the first's locked mode as the original and "restore" it), so the original
modes and the runs holding each path live in one registry, edited under a file lock; the last
run to let go restores the original, and a run that died lets go when the next one looks.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Registry:
    """``{path: {"mode": original mode, "holders": [pids]}}`` in ``folder``/locked-paths.json."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _edit(self, change) -> None:
        with open(self.folder / "registry.lock", "a+") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            path = self.folder / "locked-paths.json"
            data = json.loads(path.read_text()) if path.exists() else {}
            for name, entry in list(data.items()):
                entry["holders"] = [pid for pid in entry["holders"] if _alive(pid)]
                if not entry["holders"]:            # its runs are gone: put it back
                    _chmod(name, entry["mode"])
                    del data[name]
            change(data)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(data))
            os.replace(temporary, path)

    def lock(self, paths: list[Path]) -> None:
        def change(data: dict) -> None:
            for path in paths:
                if not path.exists() or path.is_symlink():
                    continue
                entry = data.setdefault(str(path), {"mode": path.stat().st_mode & 0o7777, "holders": []})
                entry["holders"].append(os.getpid())
                os.chmod(path, entry["mode"] & ~0o077)
        self._edit(change)

    def unlock(self, paths: list[Path]) -> None:
        def change(data: dict) -> None:
            for path in map(str, paths):
                entry = data.get(path)
                if entry and os.getpid() in entry["holders"]:
                    entry["holders"].remove(os.getpid())
                    if not entry["holders"]:
                        _chmod(path, entry["mode"])
                        del data[path]
        self._edit(change)


def _chmod(path: str, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError:
        pass
