"""What a lesson needs beyond the pure-Python core, and one clear line when it is missing.

``pip install pagedlab`` is pure Python: the block manager, scheduler, simulator, widgets and the
grader of the pure exercises (lessons 01-05). The attention lessons need more: torch and Triton
come with the ``attention`` extra, Hugging Face transformers with ``model``, a fast GPU with
Colab. A cell that needs one of them asks first::

    torch = pl.require("torch", "lesson 06")

and where it is missing gets :class:`MissingPart`, an ``ImportError`` whose message is one line
saying what to install. Jupyter shows that line alone, without a traceback.
See notebooks/00_start_here.ipynb.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from .errors import InvalidConfig, PagedLabError

COLAB = "or open this notebook in Colab, where it is ready"

# part -> (what a learner calls it, the module to import, how to get it)
PARTS = {
    "torch": ("PyTorch", "torch", "pip install 'pagedlab[attention]'"),
    "triton": ("Triton", "triton", "pip install 'pagedlab[attention]'"),
    "transformers": ("Hugging Face transformers", "transformers", "pip install 'pagedlab[model]'"),
    "gpu": ("a CUDA GPU", None, "in Colab, Runtime > Change runtime type > T4 GPU"),
}


class MissingPart(PagedLabError, ImportError):
    """An optional part of the course is missing here; the message (one line) says how to get it.

    An ``ImportError``, so code that already catches ``ImportError`` keeps working.
    """

    def __init__(self, part: str, needed_for: str):
        self.part, self.needed_for = part, needed_for
        super().__init__(missing_line(part, needed_for), name=PARTS[part][1])

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines in place of the traceback: the one line is all there is to say.
        return [f"{type(self).__name__}: {self}"]


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise InvalidConfig(f"unknown part {part!r}: choose one of {', '.join(PARTS)}")


def missing_line(part: str, needed_for: str) -> str:
    """The one line a learner reads when ``part`` is missing and ``needed_for`` wants it."""
    _check_part(part)
    name, _, how = PARTS[part]
    if part == "triton" and not sys.platform.startswith("linux"):
        return (f"Triton ships for Linux only (needed for {needed_for}): {COLAB}; "
                f"elsewhere the lessons use the torch reference.")
    if part == "gpu":
        return f"There is no CUDA GPU here (needed for {needed_for}): {how}."
    if part in ("torch", "triton") and sys.version_info >= (3, 14):
        how += " in Python 3.10-3.13 (torch has no wheel for this Python yet)"
    return f"{name} is not installed here (needed for {needed_for}): {how} ({COLAB})."


def as_missing_part(error: ImportError, needed_for: str) -> MissingPart | None:
    """The :class:`MissingPart` an import error means, if the module it could not find is one of
    the course's optional parts (torch, triton, transformers); else None."""
    top = (getattr(error, "name", None) or "").split(".")[0]
    for part, (_, module, _) in PARTS.items():
        if module is not None and module == top:
            return MissingPart(part, needed_for)
    return None


def have(part: str) -> bool:
    """True if ``part`` ("torch", "triton", "transformers" or "gpu") is here; imports nothing
    new except for "gpu", which asks torch."""
    _check_part(part)
    module = PARTS[part][1]
    if module is not None:
        # find_spec is None for a module set to None in sys.modules (how tests hide one)
        return importlib.util.find_spec(module) is not None
    if not have("torch"):
        return False
    import torch
    return torch.cuda.is_available()


def require(part: str, needed_for: str) -> types.ModuleType | None:
    """Import and return ``part``'s module (None for "gpu"), or raise :class:`MissingPart`.

    ``needed_for`` names what wants it, in a learner's words: "lesson 06 (attention over pages)".
    """
    if not have(part):
        raise MissingPart(part, needed_for)
    module = PARTS[part][1]
    if module is None:
        return None
    try:
        return importlib.import_module(module)
    except ImportError as error:  # installed but broken (e.g. a wheel for another machine)
        raise MissingPart(part, needed_for) from error


# ------------------------------------------------------------------ widgets in the browser
def _installed_version(package: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _major(version: str | None) -> int | None:
    return int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else None


def widget_front_end_problem() -> str | None:
    """One line when ipywidgets 7 meets Notebook 7 / JupyterLab 4 without their widget extension.

    The kernel cannot ask the browser which front end it runs in, so this reads the versions
    installed beside it: ipywidgets 7 brings ``jupyterlab_widgets`` 1.x, an extension for
    JupyterLab 3 only, and under Notebook 7 or JupyterLab 4 every widget then stays blank,
    silently. None when the versions fit (or when Jupyter is installed elsewhere and this
    cannot see it). Colab has its own front end and is never a problem.
    See notebooks/00_start_here.ipynb.
    """
    if "google.colab" in sys.modules:
        return None
    if _major(_installed_version("ipywidgets")) != 7:
        return None
    notebook, lab = _installed_version("notebook"), _installed_version("jupyterlab")
    new_front_ends = [name for name, version, first in (("Notebook", notebook, 7),
                                                        ("JupyterLab", lab, 4))
                      if (_major(version) or 0) >= first]
    if not new_front_ends or (_major(_installed_version("jupyterlab_widgets")) or 0) >= 3:
        return None
    found = " and ".join(f"{name} {notebook if name == 'Notebook' else lab}"
                         for name in new_front_ends)
    return (f"ipywidgets {_installed_version('ipywidgets')} cannot draw widgets in {found} "
            f"(its extension is for JupyterLab 3): pip install -U 'ipywidgets>=8', then restart "
            f"Jupyter and reload the page.")
