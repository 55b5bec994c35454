"""Where the course lives: one setting for the Colab badges and the install cells.

Every notebook opens in Colab from a badge and its first code cell installs pagedlab from the
repository at a pinned git ref (normally the release tag of this version, so a class's notebooks
do not change under it mid-term). Both come from ``REPOSITORY`` and ``REF`` below, and

    python -m pagedlab.tools.course set-repo OWNER/NAME [--ref REF]

rewrites them everywhere: this file, and the notebooks in ``notebooks/``, ``exercises/`` and
``solutions/``. ``python -m pagedlab.tools.course make-exercises`` regenerates ``exercises/``.
See notebooks/00_start_here.ipynb.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .. import __version__

# -- the one setting (rewritten by `set-repo`; keep each on one line) --
REPOSITORY = "pagedlab-course/pagedlab"
REF = "v0.1.0"

NOTEBOOK_FOLDERS = ("notebooks", "exercises", "solutions")
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_MARKER = "# pagedlab install cell"
_NAME = r"[A-Za-z0-9_.-]+"
_REF = r"[A-Za-z0-9_./-]+?"
_COLAB_URL = re.compile(
    rf"https://colab\.research\.google\.com/github/(?P<repo>{_NAME}/{_NAME})/blob/(?P<ref>{_REF})/"
    rf"(?=(?:{'|'.join(NOTEBOOK_FOLDERS)})/)")  # a ref may hold '/': the folder ends it
_GIT_URL = re.compile(rf"git\+https://github\.com/(?P<repo>{_NAME}/{_NAME})(?:\.git)?@(?P<ref>{_REF})(?=[\"'\s])")
_REPO_ARG = re.compile(rf"^{_NAME}/{_NAME}$")
_REF_ARG = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")

# Light packages the lessons import that a Colab runtime might lack. torch, triton and
# ipywidgets are never in this list: Colab's own versions must stay.
LIGHT_DEPENDENCIES = ("numpy", "matplotlib", "tqdm")


def colab_url(path: str, repository: str = REPOSITORY, ref: str = REF) -> str:
    """The Colab address that opens ``path`` (relative to the repository root) at ``ref``."""
    return f"https://colab.research.google.com/github/{repository}/blob/{ref}/{path}"


def badge_markdown(path: str, repository: str = REPOSITORY, ref: str = REF) -> str:
    """Markdown for the "Open in Colab" badge of the notebook at ``path``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(path, repository, ref)})"


def install_url(repository: str = REPOSITORY, ref: str = REF) -> str:
    """The pip requirement that installs pagedlab from the repository at ``ref``."""
    return f"git+https://github.com/{repository}@{ref}"


def install_cell_source(repository: str = REPOSITORY, ref: str = REF) -> str:
    """The first code cell of every notebook: install pagedlab in Colab, do nothing elsewhere.

    ``--no-deps`` leaves Colab's torch, Triton and ipywidgets alone; only light packages that
    are missing get installed.
    """
    light = ", ".join(repr(name) for name in LIGHT_DEPENDENCIES)
    return "\n".join([
        f"{INSTALL_MARKER}: in Colab it installs the course; elsewhere it does nothing.",
        "import importlib.util, subprocess, sys",
        "if 'google.colab' in sys.modules and importlib.util.find_spec('pagedlab') is None:",
        f"    missing = [name for name in ({light},) if importlib.util.find_spec(name) is None]",
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',",
        f"                    'pagedlab @ {install_url(repository, ref)}', *missing], check=True)",
    ])


# ---------------------------------------------------------------------------- set-repo
def rewrite_text(text: str, repository: str, ref: str) -> str:
    """Point every Colab badge address and pip install address in ``text`` at repository@ref."""
    text = _COLAB_URL.sub(f"https://colab.research.google.com/github/{repository}/blob/{ref}/", text)
    return _GIT_URL.sub(f"git+https://github.com/{repository}@{ref}", text)


def rewrite_notebook(path: Path, repository: str, ref: str) -> bool:
    """Rewrite the badges and install cells of one notebook in place; True if it changed."""
    raw = path.read_text(encoding="utf-8")
    notebook = json.loads(raw)
    changed = False
    for cell in notebook.get("cells", []):
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        new = rewrite_text(text, repository, ref)
        if new != text:
            cell["source"] = new.splitlines(keepends=True) if isinstance(source, list) else new
            changed = True
    if changed:
        # nbformat's layout (indent 1, a final newline) so diffs stay small.
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def rewrite_setting(course_file: Path, repository: str, ref: str) -> bool:
    """Rewrite the REPOSITORY and REF lines of a course.py; True if it changed."""
    text = course_file.read_text(encoding="utf-8")
    new = re.sub(r'^REPOSITORY = ".*"$', f'REPOSITORY = "{repository}"', text, count=1, flags=re.M)
    new = re.sub(r'^REF = ".*"$', f'REF = "{ref}"', new, count=1, flags=re.M)
    if new != text:
        course_file.write_text(new, encoding="utf-8")
    return new != text


def set_repo(root: Path, repository: str, ref: str | None = None) -> list[Path]:
    """Point the course at ``repository`` (owner/name) and ``ref``; returns the files changed.

    ``ref`` defaults to the release tag of this version (``v0.1.0``).
    """
    if not _REPO_ARG.match(repository):
        raise ValueError(f"repository must look like OWNER/NAME, got {repository!r}")
    ref = ref or f"v{__version__}"
    if not _REF_ARG.match(ref) or ".." in ref:
        raise ValueError(f"not a usable git ref: {ref!r}")
    changed = []
    course_file = root / "pagedlab" / "tools" / "course.py"
    if course_file.is_file() and rewrite_setting(course_file, repository, ref):
        changed.append(course_file)
    for folder in NOTEBOOK_FOLDERS:
        for path in sorted((root / folder).glob("*.ipynb")):
            if rewrite_notebook(path, repository, ref):
                changed.append(path)
    return changed


def repository_root() -> Path:
    """The checkout this module belongs to (editable install), else the current folder."""
    here = Path(__file__).resolve().parents[2]  # pagedlab/tools/course.py -> the checkout
    return here if (here / "notebooks").is_dir() else Path.cwd()


# ---------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make-exercises"]:  # the grader's generator parses its own options
        from .exercises import main as make_exercises
        return int(make_exercises(argv[1:], repository_root()) or 0)
    parser = argparse.ArgumentParser(prog="python -m pagedlab.tools.course",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    set_cmd = commands.add_parser("set-repo", help="point badges and install cells at OWNER/NAME")
    set_cmd.add_argument("repository", metavar="OWNER/NAME")
    set_cmd.add_argument("--ref", default=None, help=f"git ref to pin (default v{__version__})")
    set_cmd.add_argument("--root", type=Path, default=None,
                         help="repository checkout to rewrite (default: this one)")
    commands.add_parser("show", help="print the current repository and ref")
    commands.add_parser("make-exercises", help="regenerate exercises/ from solutions/ "
                                               "(options: make-exercises --help)")
    args = parser.parse_args(argv)
    if args.command == "show":
        print(f"{REPOSITORY}@{REF}")
        return 0
    root = args.root or repository_root()
    try:
        changed = set_repo(root, args.repository, args.ref)
    except ValueError as error:
        parser.error(str(error))
    for path in changed:
        print(f"rewrote {path}")
    print(f"{len(changed)} file(s) now point at {args.repository}@{args.ref or 'v' + __version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
