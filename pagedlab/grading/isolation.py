"""Choosing the isolation of a run, and checking it before any submission runs.

``auto`` takes the strongest that works here: ``namespace`` (bubblewrap), then ``uid`` (as root),
then ``none``, with a loud warning. A mode works when its probe does: a process started exactly
as a submission would be must run, import the learner copy of pagedlab, and fail to open every
reference file (:meth:`.sandbox.Sandbox.secrets`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .sandbox import IsolationUnavailable, MODES, Sandbox

WARNING = ("WARNING: NOT ISOLATED. Submissions run as {user}, the grader's own user, and can "
           "read pagedlab's reference and change the grader and each other's results. {why}"
           "Run as root (uid mode), or install bubblewrap (namespace mode).")


def probe(sandbox: Sandbox) -> str | None:
    """Why ``sandbox`` does not hold (None when it does)."""
    uid = sandbox.allocate_uid()
    workdir = sandbox.workdir(uid)
    secrets = [str(path) for path in sandbox.secrets()]
    try:
        process = sandbox.start("ex01", uid, workdir)
    except OSError as error:
        sandbox.finish_workdir(workdir)
        return (f"cannot start a sandbox process ({error}): uid {uid} must be able to run "
                f"{sys.executable} (its folders need o+x; Python under /root is not reachable)")
    job = {"kind": "probe", "uid": uid, "gid": sandbox.gid("ex01"), "paths": secrets, "limits": {}}
    try:
        out, err = process.communicate(json.dumps(job).encode(), timeout=60)
    except subprocess.TimeoutExpired:
        out, err = b"", b"the probe did not answer in 60 s"
    finally:
        sandbox.finish(process, uid, workdir)
    try:
        answer = json.loads(out.decode().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return f"a sandbox process (uid {uid}) failed: {tail[0][:300]}"
    if answer.get("opened"):
        return f"a sandbox process could open {', '.join(answer['opened'][:3])}"
    if not answer.get("blocks", "").endswith("/pagedlab/blocks.py") or \
            "lib-ex01" not in answer.get("blocks", "") and not answer["blocks"].startswith("/grader/"):
        return f"a sandbox process imported pagedlab from {answer.get('blocks')}, not the learner copy"
    return None


def _candidates(mode: str) -> list[str]:
    return ["namespace", "uid", "none"] if mode == "auto" else [mode]


def open_sandbox(mode: str, graded: list[Path], quiet: bool = False) -> Sandbox:
    """The sandbox of a run, its boundary probed. Raises IsolationUnavailable when ``mode``
    (other than auto and none) does not work here."""
    if mode not in MODES:
        raise IsolationUnavailable(f"--isolation {mode!r}: choose one of {', '.join(MODES)}")
    reasons = []
    for candidate in _candidates(mode):
        if candidate == "uid" and os.geteuid() != 0:
            reasons.append("uid: needs root, to give each submission a uid of its own")
        elif candidate == "namespace" and shutil.which("bwrap") is None:
            reasons.append("namespace: bubblewrap is not installed (apt-get install bubblewrap)")
        else:
            try:
                sandbox = Sandbox(candidate, graded)
            except IsolationUnavailable as error:
                reasons.append(f"{candidate}: {error}")
                continue
            problem = probe(sandbox) if candidate != "none" else None
            if problem is None:
                if candidate == "none":
                    why = "".join(f"{r}. " for r in reasons)
                    print(WARNING.format(user=_user(), why=why), file=sys.stderr, flush=True)
                elif not quiet and reasons:
                    print(f"isolation: {candidate} ({'; '.join(reasons)})", file=sys.stderr)
                return sandbox
            sandbox.close()
            reasons.append(f"{candidate}: {problem}")
    raise IsolationUnavailable(f"--isolation {mode} does not work here: {'; '.join(reasons)}. "
                               "Use --isolation auto to take the best that works.")


def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return f"uid {os.getuid()}"
