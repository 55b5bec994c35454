"""Gradescope: the ``results.json`` it reads, and the autograder zip an instructor uploads.

results.json (Gradescope's format): top-level ``score``, ``execution_time``, ``output``, and
``tests``, one per case, each with ``name``, ``score``, ``max_score``, ``output``, ``visibility``.

The autograder zip (``pagedlab grade --gradescope-autograder OUT.zip``) holds ``setup.sh``,
``run_autograder`` and the course's wheel: setup installs that wheel (its dependencies from
PyPI, torch from PyTorch's CPU index), so it needs no git and no address of the repository.
Both scripts take their root from ``AUTOGRADER_ROOT`` (default ``/autograder``) and the venv
from ``PAGEDLAB_VENV`` (default ``/opt/pagedlab``), so they can be tried outside Gradescope.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .report import Report

OUTPUT_CHARS = 4000     # of what a notebook printed, in the top-level output
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")   # Gradescope's words
# Address space per notebook (RLIMIT_AS). Gradescope's default container has 768 MB in all.
# Measured: torch loads in 640 MB (223 MB resident) with the sandbox's one thread, so 768 fits
# exercises 1-6, 8 and 10; Triton's library maps ~800 MB, so exercises 7 and 9 need about 896
# (300 MB resident): give those --memory-mb 1024, and a larger container if Gradescope offers one.
MEMORY_MB = 768
TRITON_MEMORY_MB = 1024
ZIP_NAME = "pagedlab-autograder.zip"


class AutograderError(RuntimeError):
    """The autograder zip could not be built (the message says what to do)."""


def best_per_exercise(reports: list[Report]) -> tuple[list[Report], list[str]]:
    """One student's submission counts each exercise once: its best-scoring notebook."""
    best: dict[str, Report] = {}
    for report in reports:
        if report.exercise not in best or report.score > best[report.exercise].score:
            best[report.exercise] = report
    skipped = [f"{r.source}: another notebook for {r.exercise} scored as high; it counts instead"
               for r in reports if best[r.exercise] is not r]
    return sorted(best.values(), key=lambda r: r.exercise), skipped


def results(reports: list[Report], seconds: float, problems: list[str] = (),
            visibility: str = "visible") -> dict:
    """Gradescope's results for one student's notebooks (each exercise counted once);
    ``visibility`` is every test's (one of :data:`VISIBILITIES`)."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}, got {visibility!r}")
    reports, duplicates = best_per_exercise(reports)
    problems = [*problems, *duplicates]
    tests = []
    for report in reports:
        for case in report.cases:
            tests.append({"name": f"{report.exercise} {report.title}: {case.name}",
                          "score": case.score, "max_score": case.max_score,
                          "output": case.message, "visibility": visibility})
    lines = [report.heading() for report in reports]
    for report in reports:
        lines += [f"{report.exercise} note: {note}" for note in report.notes]
        if report.output.strip():
            printed = report.output[:OUTPUT_CHARS]
            lines += [f"{report.exercise} printed (first {len(printed)} characters):", printed]
    lines += list(problems)
    return {"score": sum(report.score for report in reports),
            "execution_time": int(round(seconds)),
            "output": "\n".join(lines) or "no exercise notebooks found in the submission",
            "tests": tests}


SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once to build the autograder image (Ubuntu, as root), with this zip
# unpacked in $AUTOGRADER_ROOT/source. It installs the course from the wheel beside it.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
VENV="${PAGEDLAB_VENV:-/opt/pagedlab}"
WITH_TORCH={with_torch}   # exercises 6, 7 and 9 need torch (pagedlab grade --autograder-torch)
# PAGEDLAB_SETUP_APT=0 / PAGEDLAB_SETUP_TORCH=0 skip those steps (an image that has them, a test).
# bubblewrap gives each submission a namespace of its own; where the container cannot make
# namespaces, pagedlab grade falls back to a uid of its own per submission (it runs as root).
# No user to create: the sandboxes use uids 61000-61999 and groups 62001-62015 by number.
if [ "${PAGEDLAB_SETUP_APT:-1}" = 1 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip python3-venv bubblewrap >/dev/null
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
EXTRA=""
if [ "${PAGEDLAB_SETUP_TORCH:-1}" = 1 ] && [ "$WITH_TORCH" = 1 ]; then
  # torch's CPU wheel first, so pip does not pull a multi-gigabyte CUDA build.
  "$VENV/bin/python" -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch
  EXTRA="{extra}"
fi
"$VENV/bin/python" -m pip install -q "$ROOT/source/{wheel}$EXTRA"
# The installed package holds the reference answers: only root (the grader) may read it.
chmod -R go-rwx "$("$VENV/bin/python" -c 'import os, pagedlab; print(os.path.dirname(pagedlab.__file__))')"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission: grade the notebooks the student uploaded, each in
# a sandbox (namespaces where the container allows them, else a uid drop).
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
VENV="${PAGEDLAB_VENV:-/opt/pagedlab}"
mkdir -p "$ROOT/results"
rm -f "$ROOT/results/results.json"
"$VENV/bin/pagedlab" grade "$ROOT/submission" --gradescope "$ROOT/results/results.json" {options}
status=$?
# Gradescope shows results.json whenever there is one (a score of 0 with the reason for an
# empty or broken submission); only a run that wrote none is the autograder's own failure.
if [ -s "$ROOT/results/results.json" ]; then exit 0; fi
exit "$status"
"""


def grading_options(*, isolation: str = "auto", timeout: float | None = None,
                    setup_timeout: float | None = None, memory_mb: int = MEMORY_MB,
                    seed: int | None = None, jobs: int | None = None,
                    visibility: str = "visible") -> str:
    """The ``pagedlab grade`` options run_autograder passes, quoted for the shell."""
    options = ["--isolation", isolation, "--memory-mb", str(memory_mb), "--visibility", visibility]
    for flag, value in (("--timeout", timeout), ("--setup-timeout", setup_timeout),
                        ("--seed", seed), ("--jobs", jobs)):
        if value is not None:
            options += [flag, repr(value) if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(option) for option in options)


# What the wheel is built from (pyproject.toml maps pagedlab.kernels to kernels/).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "pagedlab", "kernels")


def course_wheel(folder: Path, checkout: Path | None = None) -> Path:
    """Build the course's wheel into ``folder`` (``pip wheel --no-deps``), from a copy of the
    checkout's package sources: setuptools builds in place, and the checkout is not ours."""
    import importlib.util
    import shutil

    from ..tools.course import repository_root

    checkout = checkout or repository_root()
    if not (checkout / "pyproject.toml").is_file():
        raise AutograderError(f"no pyproject.toml in {checkout}: run this from a checkout of the "
                              "course, or give the wheel with --autograder-wheel FILE")
    source = folder / "source"
    source.mkdir(parents=True)
    for name in WHEEL_SOURCES:
        if (checkout / name).is_dir():
            shutil.copytree(checkout / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (checkout / name).is_file():
            shutil.copy2(checkout / name, source / name)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
                           "-w", str(folder), str(source)], capture_output=True, text=True)
    wheels = sorted(folder.glob("pagedlab-*.whl"))
    if done.returncode != 0 or not wheels:
        raise AutograderError(f"pip wheel failed in {checkout}:\n{done.stderr[-2000:]}")
    return wheels[-1]


def _extras(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode("utf-8").splitlines()
    return {line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")}


def write_autograder(target: str | Path, options: str = "", *, wheel: str | Path | None = None,
                     torch: bool = True) -> Path:
    """Write Gradescope's autograder zip (setup.sh, run_autograder, the wheel); returns its path.

    ``target``: a ``.zip`` path, or a folder that gets ``pagedlab-autograder.zip``. ``torch``:
    install torch's CPU build (exercises 6, 7 and 9 need it; the others grade without).
    """
    target = Path(target)
    if target.suffix != ".zip":
        target = target / ZIP_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = Path(wheel) if wheel else course_wheel(Path(scratch))
        if not wheel.is_file() or wheel.suffix != ".whl":
            raise AutograderError(f"{wheel}: not a wheel file (build one with pip wheel --no-deps .)")
        extra = "[attention]" if torch and "attention" in _extras(wheel) else ""
        setup = SETUP_SH.replace("{with_torch}", "1" if torch else "0").replace(
            "{wheel}", wheel.name).replace("{extra}", extra)
        run = RUN_AUTOGRADER.replace("{options}", options)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in (("setup.sh", setup), ("run_autograder", run)):
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o100755 << 16         # executable, as Gradescope needs
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, text)
            archive.write(wheel, wheel.name)
    return target
