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

__all__ = ["check", "main"]


def __getattr__(name: str):
    # The judge needs POSIX modules (fcntl, grp, pwd) that Pyodide has not: it loads on first
    # use, so ``check`` runs in the browser too (the JupyterLite site, pagedlab.tools.site).
    if name == "main":
        from .command import main
        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
