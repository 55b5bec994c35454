"""Exercises that grade themselves: ``check`` in the notebook, ``pagedlab grade`` for a class.

- :func:`check` runs an exercise's public cases on the learner's code, in the notebook: the
  learner's own feedback, which polices nothing.
- :func:`main` is ``pagedlab grade PATH...``: the judge. Each notebook runs in a sandbox the
  operating system keeps apart (:mod:`.sandbox`), on cases drawn for the run; the grader judges
  the plain data that comes back. Its threat model is in :mod:`.command`.
- :mod:`pagedlab.grading.exercises` writes ``exercises/`` from ``solutions/``.

See the exercise notebooks in exercises/.
"""
from .feedback import check
from .command import main

__all__ = ["check", "main"]
