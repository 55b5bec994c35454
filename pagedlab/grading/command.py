"""``pagedlab grade``: grade exercise notebooks, for one student or a whole class.

    pagedlab grade PATH... [--isolation auto|namespace|uid|none] [--csv FILE] [--json-dir DIR]
                   [--gradescope results.json] [--visibility V] [--timeout S] [--seed N]
                   [--setup-timeout S] [--memory-mb MB] [--jobs N]
    pagedlab grade --gradescope-autograder OUT.zip [--autograder-torch cpu|none] [grading options]

``--gradescope-autograder`` writes the zip Gradescope takes (see :mod:`.gradescope`); every
grading option given with it is what run_autograder passes to ``pagedlab grade``.

A folder whose subfolders hold the notebooks is a class: one record per subfolder (student).

Threat model. A student controls every byte of the notebook. The grader runs as root (under
Gradescope) or as the instructor, and grades a whole class in one run. Guarantees:

- a score depends only on outputs the grader judged, against its own reference, on inputs
  drawn for this run (the public cases ``check()`` shows are not the graded ones);
- pagedlab's reference for the exercise and ``solutions/`` are neither readable nor
  importable by a submission: it sees a copy of pagedlab with them replaced by stubs;
- a submission cannot read or change the grader, the installed package, other submissions or
  the results, and cannot outlive its time: each runs as a uid of its own (namespace or uid
  isolation), every process of that uid is killed when it ends, and the results are written
  after the last one is gone;
- the run takes time bounded by the number of notebooks (each has a setup budget and a budget
  per case; the grader's own reading is linear in a notebook's size, which is capped).

Out of scope: a student who solves the exercise by other means than pagedlab's reference
(copying a classmate's work or the course's public source); the total memory of a submission
(limited per process, up to 64 processes); and, under ``uid`` isolation, which relies on file
permissions, copies of the solutions elsewhere on the machine that others may read, the shared
/tmp and /dev/shm while a submission runs (cleared after it), the disk its working folder fills
(64 MB a file) and the network. With
``--isolation none`` (not root, no bubblewrap) none of the boundary holds: the run says so
loudly and records it in every result. See :mod:`.sandbox` for how each mode is built.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import gradescope, results
from .isolation import IsolationUnavailable, open_sandbox
from .notebook import NotebookError
from .runner import Limits, grade_notebook
from .sandbox import MODES
from .submissions import find_submissions

LOCAL_MEMORY_MB = 4096   # per notebook, when grading on the instructor's own machine


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagedlab grade", description="Grade exercise notebooks "
                                     "in sandboxes, for one student or a class folder.")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="notebooks, a student's folder, or a class folder (a folder per student)")
    parser.add_argument("--isolation", choices=MODES, default="auto",
                        help="how submissions are kept apart (default: the best that works here)")
    parser.add_argument("--csv", metavar="FILE", help="write one row per student")
    parser.add_argument("--json-dir", metavar="DIR", help="write DIR/<student>.json per student")
    parser.add_argument("--gradescope", metavar="RESULTS_JSON",
                        help="write Gradescope's results.json (one submission)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds per case (default: each exercise's own, 10-30 s)")
    parser.add_argument("--setup-timeout", type=float, default=120.0, metavar="S",
                        help="seconds for a notebook's own code, in all (default 120)")
    parser.add_argument("--memory-mb", type=int, default=None, metavar="MB",
                        help=f"memory limit per notebook (default {LOCAL_MEMORY_MB}; "
                             f"{gradescope.MEMORY_MB} in a Gradescope autograder)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the cases (default: a fresh one per notebook; not 0)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="notebooks graded at once (default: the CPUs, up to 4)")
    parser.add_argument("--visibility", choices=gradescope.VISIBILITIES, default="visible",
                        help="when Gradescope shows students each test (default visible)")
    parser.add_argument("--gradescope-autograder", metavar="OUT.zip",
                        help="write Gradescope's autograder zip (a folder: "
                             f"FOLDER/{gradescope.ZIP_NAME}) with these grading options, then stop")
    parser.add_argument("--autograder-wheel", metavar="FILE",
                        help="the course wheel to put in the zip (default: built from this checkout)")
    parser.add_argument("--autograder-torch", choices=("cpu", "none"), default="cpu",
                        help="install torch's CPU build in the autograder (exercises 6, 7, 9 need "
                             "it; default cpu)")
    return parser


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.setup_timeout <= 0:
        parser.error("--setup-timeout must be positive")
    if args.memory_mb is not None and args.memory_mb < 64:
        parser.error("--memory-mb must be at least 64")
    if args.seed == 0:
        parser.error("--seed 0 gives the public cases check() shows: choose another")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")


def _write_autograder(args: argparse.Namespace) -> int:
    memory = args.memory_mb or gradescope.MEMORY_MB
    options = gradescope.grading_options(
        isolation=args.isolation, timeout=args.timeout, setup_timeout=args.setup_timeout,
        memory_mb=memory, seed=args.seed, jobs=args.jobs,
        visibility=args.visibility)
    try:
        path = gradescope.write_autograder(args.gradescope_autograder, options,
                                           wheel=args.autograder_wheel,
                                           torch=args.autograder_torch == "cpu")
    except (gradescope.AutograderError, OSError) as error:
        print(f"pagedlab grade: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}: upload it as the Gradescope autograder")
    if args.autograder_torch == "cpu" and memory < gradescope.TRITON_MEMORY_MB:
        print(f"note: {memory} MB per notebook fits exercises 1-6, 8 and 10; the Triton ones (7, 9) "
              f"need --memory-mb {gradescope.TRITON_MEMORY_MB}")
    print(f"run_autograder runs: pagedlab grade SUBMISSION --gradescope results.json {options}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_options(parser, args)
    if args.gradescope_autograder:
        if args.paths:
            parser.error("--gradescope-autograder writes the zip and grades nothing: drop the paths")
        return _write_autograder(args)
    if not args.paths:
        parser.error("give notebooks or folders to grade (or --gradescope-autograder OUT.zip)")
    jobs = args.jobs or min(4, os.cpu_count() or 1)
    started = time.monotonic()
    submissions, problems = find_submissions(args.paths)
    if args.gradescope and len(submissions) > 1:
        parser.error(f"--gradescope writes one submission's results, and {args.paths[0]} holds "
                     f"{len(submissions)} students: use --csv FILE or --json-dir DIR")
    try:
        outputs = [Path(p) for p in (args.csv, args.json_dir, args.gradescope) if p and Path(p).exists()]
        sandbox = open_sandbox(args.isolation, [Path(p) for p in args.paths] + outputs)
    except IsolationUnavailable as error:
        print(f"pagedlab grade: {error}", file=sys.stderr)
        return 4
    limits = Limits(case_timeout=args.timeout, setup_timeout=args.setup_timeout,
                    memory_mb=args.memory_mb or LOCAL_MEMORY_MB)
    def grade(item: tuple) -> tuple:
        submission, path = item
        try:
            report = grade_notebook(path, limits, seed=args.seed, sandbox=sandbox)
        except NotebookError as error:
            return submission, None, str(error)
        except Exception as error:  # noqa: BLE001 - one bad notebook must not stop a class
            return submission, None, f"{path}: could not be graded ({type(error).__name__}: {error})"
        return submission, report, None

    work = [(s, path) for s in submissions for path in s.notebooks]
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for submission, report, problem in pool.map(grade, work):   # in the order given
                if report is None:
                    submission.problems.append(problem)
                    continue
                submission.reports.append(report)
                print(f"[{submission.student}] {report}\n" if len(submissions) > 1 else f"{report}\n",
                      flush=True)
        left = sandbox.live_processes()
    finally:
        sandbox.close()           # every sandbox process killed, paths unlocked
    if left:
        problems.append(f"{len(left)} sandbox process(es) outlived their submission and were killed")
    return _finish(args, submissions, problems, sandbox.mode, time.monotonic() - started)


def _finish(args, submissions: list, problems: list[str], mode: str, seconds: float) -> int:
    for submission in submissions:
        for problem in submission.problems:
            print(f"skipped: {problem}")
    for problem in problems:
        print(f"skipped: {problem}")
    reports = [r for s in submissions for r in s.reports]
    total, possible = sum(r.score for r in reports), sum(r.max_score for r in reports)
    print(f"total: {total:g}/{possible:g} in {len(reports)} notebook(s), {seconds:.1f} s"
          + (f", {len(submissions)} students" if len(submissions) > 1 else "")
          + f" (isolation: {mode})")
    failed = results.write_all(submissions, problems, mode, seconds, csv_path=args.csv,
                               json_dir=args.json_dir, gradescope_path=args.gradescope,
                               visibility=args.visibility)
    for message in failed:
        print(f"pagedlab grade: {message}", file=sys.stderr)
    if failed:
        return 3
    return 0 if reports or not problems else 2
