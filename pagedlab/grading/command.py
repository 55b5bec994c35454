"""``pagedlab grade``: grade exercise notebooks, print the verdicts, write Gradescope results.

    pagedlab grade PATH... [--gradescope results.json] [--timeout S]
    pagedlab grade --gradescope-autograder DIR
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import gradescope
from .notebook import NotebookError
from .runner import Limits, grade_notebook


def find_notebooks(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Notebooks named, or found in named folders; plus problems with paths that are neither."""
    found, problems = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            found += inside
            if not inside:
                problems.append(f"{path}: no .ipynb notebooks in this folder")
        elif path.is_file():
            found.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return found, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagedlab grade", description="Grade exercise notebooks, "
                                     "print the verdicts, write Gradescope results.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="notebooks, or folders of them")
    parser.add_argument("--gradescope", metavar="RESULTS_JSON", help="also write Gradescope results")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds per case (default: each exercise's own, 10-30 s)")
    parser.add_argument("--setup-timeout", type=float, default=120.0, metavar="S",
                        help="seconds for a notebook's own code to run (default 120)")
    parser.add_argument("--memory-mb", type=int, default=4096, help="memory limit per notebook")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the random cases (default: a fresh one per notebook)")
    parser.add_argument("--gradescope-autograder", metavar="DIR",
                        help="write setup.sh and run_autograder for Gradescope into DIR, then stop")
    args = parser.parse_args(argv)
    if args.gradescope_autograder:
        options = f"--timeout {args.timeout:g}" if args.timeout else ""
        for path in gradescope.write_autograder(args.gradescope_autograder, options):
            print(f"wrote {path}")
        print("zip these two files and upload them as the Gradescope autograder")
        return 0
    if not args.paths:
        parser.error("give notebooks or folders to grade (or --gradescope-autograder DIR)")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    started = time.monotonic()
    notebooks, problems = find_notebooks(args.paths)
    limits = Limits(case_timeout=args.timeout, setup_timeout=args.setup_timeout,
                    memory_mb=args.memory_mb)
    reports = []
    for path in notebooks:
        try:
            report = grade_notebook(path, limits, seed=args.seed)
        except NotebookError as error:
            problems.append(str(error))
            continue
        except Exception as error:  # noqa: BLE001  (one bad notebook must not stop a class)
            problems.append(f"{path}: could not be graded ({type(error).__name__}: {error})")
            continue
        reports.append(report)
        print(report, flush=True)
        print(flush=True)
    seconds = time.monotonic() - started
    for problem in problems:
        print(f"skipped: {problem}")
    total = sum(r.score for r in reports)
    possible = sum(r.max_score for r in reports)
    print(f"total: {total:g}/{possible:g} in {len(reports)} notebook(s), {seconds:.1f} s")
    if args.gradescope:
        gradescope.write_results(args.gradescope, reports, seconds, problems)
        print(f"wrote {args.gradescope}")
    return 0 if reports or not problems else 2
