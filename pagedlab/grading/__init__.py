"""Exercises that grade themselves: ``check`` in the notebook, ``pagedlab grade`` for a class.

- :func:`check` runs an exercise's cases on the learner's code in the notebook.
- :func:`main` is ``pagedlab grade PATH... [--gradescope results.json] [--timeout S]``: each
  notebook runs in a sandbox process of its own; the grader judges what it reports.
- :mod:`pagedlab.tools.exercises` (not the grader) writes ``exercises/`` from ``solutions/``.

See the exercise notebooks in exercises/.
"""
from .feedback import check
from .command import main

__all__ = ["check", "main"]
