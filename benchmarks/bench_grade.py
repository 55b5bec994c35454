"""How long ``pagedlab grade`` takes, isolated: every solution, then a class.

1. Every solution notebook in one run (the probe, a sandbox each, torch in three): the
   budget is 10 s on the 2-core course machine, twice what the grader took without isolation.
2. A class folder of ``--students`` submissions, one notebook each (ex01-ex05 in turn, half
   solved, half not), graded with ``--jobs`` at once; ``--full`` gives every student every exercise.

    python benchmarks/bench_grade.py [--isolation auto] [--students 100] [--jobs 2] [--full]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

from pagedlab.grading import command

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 10.0


def timed_grade(argv: list[str]) -> tuple[float, str]:
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        status = command.main(argv)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"pagedlab grade {' '.join(argv)} failed ({status}):\n{printed.getvalue()[-2000:]}")
    return seconds, printed.getvalue().strip().splitlines()[-1]


def make_class(folder: Path, students: int, full: bool) -> None:
    solutions = sorted((ROOT / "solutions").glob("ex*.ipynb"))
    exercises = sorted((ROOT / "exercises").glob("ex*.ipynb"))
    for number in range(students):
        student = folder / f"student{number:03d}"
        student.mkdir(parents=True)
        pick = (solutions if number % 2 == 0 else exercises)
        for source in (pick if full else [pick[number % 5]]):
            shutil.copy(source, student / source.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isolation", default="auto")
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="every student hands in every exercise")
    args = parser.parse_args(argv)

    seconds, total = timed_grade([str(ROOT / "solutions"), "--isolation", args.isolation])
    verdict = "within" if seconds <= BUDGET_S else "OVER"
    count = len(list((ROOT / "solutions").glob("ex*.ipynb")))
    print(f"{count} solutions: {seconds:.1f} s ({verdict} the {BUDGET_S:g} s budget)  [{total}]")

    with tempfile.TemporaryDirectory() as scratch:
        klass = Path(scratch) / "class"
        make_class(klass, args.students, args.full)
        notebooks = len(list(klass.rglob("*.ipynb")))
        seconds, total = timed_grade([str(klass), "--isolation", args.isolation, "--jobs",
                                      str(args.jobs), "--csv", str(Path(scratch) / "grades.csv")])
        print(f"class of {args.students} ({notebooks} notebooks, --jobs {args.jobs}): {seconds:.1f} s, "
              f"{seconds / notebooks:.2f} s a notebook  [{total}]")


if __name__ == "__main__":
    main()
