"""Where the course lives: one setting for the Colab badges and the install cells.

Every notebook opens in Colab from a badge and its first code cell installs pagedlab. The badges
open the notebooks from GitHub at ``REPOSITORY`` and ``REF``; the install cell gets pagedlab from
``SOURCE_KIND`` and ``SOURCE`` below: a git repository at ``REF`` (normally the release tag of
this version, so a class's notebooks do not change under it mid-term), a wheel's URL, or a
version on PyPI. One command rewrites all of it everywhere (this file, and the notebooks in
``notebooks/``, ``exercises/`` and ``solutions/``):

    python -m pagedlab.tools.course set-source --git OWNER/NAME [--ref REF]
    python -m pagedlab.tools.course set-source --wheel URL | --pypi VERSION [--repo OWNER/NAME] [--ref REF]
    python -m pagedlab.tools.course set-repo OWNER/NAME [--ref REF]     (the same as --git)
    python -m pagedlab.tools.course refresh      (rewrite the cells from the setting as it is)

``python -m pagedlab.tools.course make-exercises`` regenerates ``exercises/``.
See notebooks/00_start_here.ipynb.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

# -- the one setting (rewritten by `set-source`; keep each on one line) --
# Badges open notebooks at REPOSITORY@REF. Install cells get pagedlab from SOURCE_KIND "git"
# (SOURCE is a git URL, at REF), "wheel" (SOURCE is a wheel's URL) or "pypi" (SOURCE is a version).
REPOSITORY = "pagedlab-course/pagedlab"
REF = "v0.1.0"
SOURCE_KIND = "git"
SOURCE = "https://github.com/pagedlab-course/pagedlab.git"

NOTEBOOK_FOLDERS = ("notebooks", "exercises", "solutions")
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_MARKER = "# pagedlab install cell"
PYPI_JSON = "https://pypi.org/pypi/pagedlab/json"  # PyPI's JSON API: every release of pagedlab
# Colab's own torch, Triton and ipywidgets: an install cell pins them and installs none of them.
KEEP = ("torch", "triton", "ipywidgets")
CHECK_TIMEOUT_S = 30  # for asking a server whether the source exists
_NAME = r"[A-Za-z0-9_.-]+"
_REF = r"[A-Za-z0-9_./-]+?"
_COLAB_URL = re.compile(
    rf"https://colab\.research\.google\.com/github/(?P<repo>{_NAME}/{_NAME})/blob/(?P<ref>{_REF})/"
    rf"(?=(?:{'|'.join(NOTEBOOK_FOLDERS)})/)")  # a ref may hold '/': the folder ends it
_GIT_URL = re.compile(rf"git\+https://github\.com/(?P<repo>{_NAME}/{_NAME})(?:\.git)?@(?P<ref>{_REF})(?=[\"'\s])")
_REPO_ARG = re.compile(rf"^{_NAME}/{_NAME}$")
_REF_ARG = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")
_URL_ARG = re.compile(r"^(https?|file)://[^\s\"'\\]+$")
_VERSION_ARG = re.compile(r"^[0-9]+(\.[0-9]+)*([.+-]?[A-Za-z0-9]+)*$")  # PEP 440, loosely
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Source:
    """Where an install cell gets pagedlab.

    kind "git": ``location`` is a git URL (any: https, file), installed at ``ref``;
    kind "wheel": ``location`` is a wheel's URL; kind "pypi": ``location`` is a version.
    """
    kind: str
    location: str
    ref: str = ""

    def __post_init__(self):
        check = {"git": _URL_ARG, "wheel": _URL_ARG, "pypi": _VERSION_ARG}.get(self.kind)
        if check is None:
            raise ValueError(f"source kind must be 'git', 'wheel' or 'pypi', got {self.kind!r}")
        if not check.match(self.location):
            what = "a version like 0.1.0" if self.kind == "pypi" else "an http(s):// or file:// URL"
            raise ValueError(f"a {self.kind} source needs {what}, got {self.location!r}")
        if self.kind == "wheel" and not self.location.endswith(".whl"):
            raise ValueError(f"a wheel URL ends in .whl, got {self.location!r}")
        if self.kind == "git" and (not _REF_ARG.match(self.ref) or ".." in self.ref):
            raise ValueError(f"not a usable git ref: {self.ref!r}")

    def requirement(self, extras: tuple[str, ...] = ()) -> str:
        """What pip installs: ``pagedlab @ git+URL@REF``, ``pagedlab @ URL`` or ``pagedlab==V``
        (``pagedlab[attention] ...`` with ``extras=("attention",)``)."""
        name = f"pagedlab[{','.join(extras)}]" if extras else "pagedlab"
        if self.kind == "git":
            return f"{name} @ git+{self.location}@{self.ref}"
        return f"{name} @ {self.location}" if self.kind == "wheel" else f"{name}=={self.location}"


def github_source(repository: str, ref: str) -> Source:
    """The git source of a GitHub repository (OWNER/NAME) at ``ref``."""
    if not _REPO_ARG.match(repository):
        raise ValueError(f"repository must look like OWNER/NAME, got {repository!r}")
    return Source("git", f"https://github.com/{repository}.git", ref)


def current_source() -> Source:
    """The source this module's setting names."""
    return Source(SOURCE_KIND, SOURCE, REF if SOURCE_KIND == "git" else "")


def colab_url(path: str, repository: str = REPOSITORY, ref: str = REF) -> str:
    """The Colab address that opens ``path`` (relative to the repository root) at ``ref``."""
    return f"https://colab.research.google.com/github/{repository}/blob/{ref}/{path}"


def badge_markdown(path: str, repository: str = REPOSITORY, ref: str = REF) -> str:
    """Markdown for the "Open in Colab" badge of the notebook at ``path``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(path, repository, ref)})"


def install_url(repository: str = REPOSITORY, ref: str = REF) -> str:
    """The pip address of pagedlab in the GitHub repository at ``ref`` (``git+https://...@ref``)."""
    return f"git+https://github.com/{repository}@{ref}"


def install_requirement(extras: tuple[str, ...] = ()) -> str:
    """The pip requirement of pagedlab from the configured source (any kind)."""
    return current_source().requirement(extras)


def light_dependencies(root: Path | None = None) -> dict[str, str]:
    """pagedlab's runtime requirements, name -> requirement, without torch, triton, ipywidgets.

    Read from the checkout's pyproject.toml, else from the installed package's metadata.
    """
    pyproject = (root or repository_root()) / "pyproject.toml"
    project = {}
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli where the dev tools are, else the installed metadata
        try:
            import tomli as tomllib
        except ImportError:
            tomllib = None
    if pyproject.is_file() and tomllib is not None:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    if project.get("name") == "pagedlab":
        requirements = project["dependencies"]
    else:  # an installed pagedlab, run from some other folder
        from importlib.metadata import requires
        requirements = [r for r in requires("pagedlab") or [] if "extra ==" not in r]
    light = {}
    for requirement in requirements:
        name = _REQUIREMENT_NAME.match(requirement).group(1).lower().replace("_", "-")
        if name not in KEEP:
            light[name] = requirement.strip()
    return light


# ---------------------------------------------------------------------------- the install cell
# The cell is its settings (generated) and then these pieces, used as they are (their braces are
# the cell's own f-strings). Learners read it in every notebook, so it reads top to bottom. It
# runs before pagedlab exists (standard library only), on Python 3.10-3.13, and never shows a
# traceback: CourseNotInstalled renders as its message alone (IPython's _render_traceback_ hook).
_CELL_FIRST_LINES = f'''\
{INSTALL_MARKER}: in Colab it installs the course; elsewhere it does nothing.
import importlib.util, sys
if 'google.colab' in sys.modules and importlib.util.find_spec('pagedlab') is None:'''

_CELL_HELPERS = '''
    import os, subprocess, tempfile
    from importlib.metadata import PackageNotFoundError, version

    class CourseNotInstalled(Exception):
        def _render_traceback_(self):  # IPython shows this message instead of a traceback
            return str(self).splitlines()

    def stop(what, todo):
        raise CourseNotInstalled(f'pagedlab could not be installed: {what}\\n'
                                 f'What to do: {todo}\\nThe course: {COURSE}')

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    NETWORK_TODO = 'check that this runtime is online, then run this cell again.'
    MOVED_TODO = ('open this notebook again from the course page, or ask your instructor where '
                  'the course lives now.')
'''

_CHECK = {
    "git": '''
    # 1. Ask the repository which versions it has (nothing is downloaded yet).
    import re
    PAGEDLAB = f'pagedlab @ git+{REPO_URL}@{REF}'
    try:
        answer = subprocess.run(['git', 'ls-remote', '--tags', '--heads', REPO_URL],
                                capture_output=True, text=True, timeout=TIMEOUT,
                                env={**os.environ, 'GIT_TERMINAL_PROMPT': '0'})
    except subprocess.TimeoutExpired:
        stop(f'{REPO_URL} did not answer within {TIMEOUT} s.', NETWORK_TODO)
    except OSError as error:
        stop(f'git could not run ({error}).', 'install git (apt-get install git) or ask your '
             'instructor.')
    if answer.returncode != 0:
        said = (answer.stderr.strip().splitlines() or ['no answer'])[-1].removeprefix('fatal: ')
        if re.search('resolve host|connect|timed out|unreachable', said, re.I):
            stop(f'this runtime cannot reach {REPO_URL} ({said}).', NETWORK_TODO)
        stop(f'there is no public course repository at {REPO_URL} ({said}).', MOVED_TODO)
    tags, branches = set(), set()
    for line in answer.stdout.splitlines():  # '<commit>\\trefs/tags/v0.1.0' (or refs/heads/...)
        _, kind, name = line.split('\\t')[1].split('/', 2)
        (tags if kind == 'tags' else branches).add(name.removesuffix('^{}'))
    if REF not in tags | branches and not re.fullmatch('[0-9a-f]{7,40}', REF):  # commits: not listed
        stop(f'{REPO_URL} has no version {REF!r}.\\n'
             f'  Its tags: {", ".join(sorted(tags)) or "none"}\\n'
             f'  Its branches: {", ".join(sorted(branches)) or "none"}',
             'set REF in this cell to one of those tags (the newest, unless your instructor '
             'names another) and run this cell again.')
''',
    "wheel": '''
    # 1. Ask the server whether the wheel is there.
    import urllib.error, urllib.request
    PAGEDLAB = f'pagedlab @ {WHEEL_URL}'
    try:
        urllib.request.urlopen(WHEEL_URL, timeout=TIMEOUT).close()
    except urllib.error.HTTPError as error:
        stop(f'there is no wheel at {WHEEL_URL} (the server said {error.code} {error.reason}).',
             MOVED_TODO)
    except (OSError, ValueError) as error:  # no network, or an address nobody answers
        stop(f'this runtime cannot reach {WHEEL_URL} ({getattr(error, "reason", error)}).',
             NETWORK_TODO)
''',
    "pypi": '''
    # 1. Ask the package index which versions of pagedlab it has.
    import json, urllib.error, urllib.request
    PAGEDLAB = f'pagedlab=={VERSION}'
    try:
        with urllib.request.urlopen(INDEX, timeout=TIMEOUT) as answer:
            versions = sorted(json.load(answer)['releases'],  # 0.10 after 0.9
                              key=lambda v: [int(p) if p.isdigit() else -1 for p in v.split('.')])
    except urllib.error.HTTPError as error:
        stop(f'the package index has no pagedlab ({INDEX} said {error.code} {error.reason}).',
             MOVED_TODO)
    except (OSError, ValueError, KeyError) as error:  # no network, or not the index's answer
        stop(f'this runtime got no answer from {INDEX} ({getattr(error, "reason", error)}).',
             NETWORK_TODO)
    if VERSION not in versions:
        stop(f'the package index has no pagedlab {VERSION}; it has: {", ".join(versions) or "none"}.',
             'set VERSION in this cell to one of those (the newest, unless your instructor '
             'names another) and run this cell again.')
''',
}

_CELL_INSTALL = '''
    # 2. Install pagedlab alone (--no-deps), then the packages it needs that are missing, each
    #    with its own dependencies. The constraints file pins the torch, triton and ipywidgets
    #    this runtime has, so no dependency can replace them.
    constraints = os.path.join(tempfile.mkdtemp(), 'constraints.txt')
    with open(constraints, 'w') as file:
        file.writelines(f'{name}=={installed(name)}\\n' for name in KEEP if installed(name))
    missing = [requirement for name, requirement in LIGHT.items() if installed(name) is None]
    pip = [sys.executable, '-m', 'pip', 'install', '-c', constraints]
    print(f'Installing {PAGEDLAB} ...')
    for packages, options in (([PAGEDLAB], ['--no-deps']), (missing, [])):
        if packages:
            done = subprocess.run(pip + options + packages, capture_output=True, text=True)
            if done.returncode != 0:
                said = '\\n  '.join((done.stdout + done.stderr).strip().splitlines()[-15:])
                stop(f'pip could not install {", ".join(packages)}. It said:\\n  {said}',
                     'run this cell again (a download may have been cut off), or start a '
                     'fresh runtime (Runtime > Disconnect and delete runtime) and run the '
                     'notebook again; if it fails the same way, show these lines to your '
                     'instructor.')
    importlib.invalidate_caches()  # so that `import pagedlab` finds what pip just installed
    print('pagedlab is installed.')'''


def install_cell_source(source: Source | None = None, repository: str = REPOSITORY, *,
                        light: dict[str, str] | None = None, timeout: float = CHECK_TIMEOUT_S,
                        index: str = PYPI_JSON) -> str:
    """The first code cell of every notebook: install pagedlab in Colab, do nothing elsewhere.

    ``source`` defaults to the setting's; ``repository`` (OWNER/NAME) is the course page the
    cell's messages name; ``light`` defaults to ``light_dependencies()``; ``index`` is the JSON
    API a PyPI source is checked against.
    """
    source = source or current_source()
    where = {"git": f"REPO_URL, REF = {source.location!r}, {source.ref!r}",
             "wheel": f"WHEEL_URL = {source.location!r}",
             "pypi": f"VERSION, INDEX = {source.location!r}, {index!r}"}[source.kind]
    settings = [
        f"{where}  # where pagedlab comes from",
        f"COURSE = 'https://github.com/{repository}'  # the course's home page",
        "# What pagedlab needs besides torch, triton and ipywidgets (KEEP: Colab's own stay):",
        f"LIGHT = {light if light is not None else light_dependencies()!r}",
        f"KEEP = {KEEP!r}",
        f"TIMEOUT = {timeout!r}  # seconds to wait for a server's answer",
    ]
    return "\n".join([_CELL_FIRST_LINES, *(f"    {line}" for line in settings),
                      _CELL_HELPERS + _CHECK[source.kind] + _CELL_INSTALL])


# ---------------------------------------------------------------------------- set-source
@dataclass(frozen=True)
class Setting:
    """The whole setting: badges at ``repository``@``ref``, install cells from ``source``."""
    repository: str
    ref: str
    source: Source

    def __post_init__(self):
        github_source(self.repository, self.ref)  # checks both


def rewrite_text(text: str, repository: str, ref: str) -> str:
    """Point every Colab badge address and GitHub pip address in ``text`` at repository@ref."""
    text = _COLAB_URL.sub(f"https://colab.research.google.com/github/{repository}/blob/{ref}/", text)
    return _GIT_URL.sub(f"git+https://github.com/{repository}@{ref}", text)


def rewrite_notebook(path: Path, setting: Setting, light: dict[str, str] | None = None) -> bool:
    """Rewrite the badges and install cells of one notebook in place; True if it changed."""
    raw = path.read_text(encoding="utf-8")
    notebook = json.loads(raw)
    cell_text = install_cell_source(setting.source, setting.repository, light=light)
    changed = False
    for cell in notebook.get("cells", []):
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "code" and text.startswith(INSTALL_MARKER):
            new = cell_text
        else:
            new = rewrite_text(text, setting.repository, setting.ref)
        if new != text:
            cell["source"] = new.splitlines(keepends=True) if isinstance(source, list) else new
            changed = True
    if changed:
        # nbformat's layout (indent 1, a final newline) so diffs stay small.
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


_SETTING_LINE = '^{name} = "(.*)"$'


def read_setting(course_file: Path) -> Setting:
    """The setting written in a course.py."""
    text = course_file.read_text(encoding="utf-8")
    values = {}
    for name in ("REPOSITORY", "REF", "SOURCE_KIND", "SOURCE"):
        match = re.search(_SETTING_LINE.format(name=name), text, flags=re.M)
        if match is None:
            raise ValueError(f'{course_file} has no line {name} = "..."; put it back (see git log)')
        values[name] = match.group(1)
    ref = values["REF"] if values["SOURCE_KIND"] == "git" else ""
    return Setting(values["REPOSITORY"], values["REF"],
                   Source(values["SOURCE_KIND"], values["SOURCE"], ref))


def rewrite_setting(course_file: Path, setting: Setting) -> bool:
    """Rewrite the setting's lines of a course.py; True if it changed."""
    read_setting(course_file)  # every line is there
    text = course_file.read_text(encoding="utf-8")
    new = text
    for name, value in (("REPOSITORY", setting.repository), ("REF", setting.ref),
                        ("SOURCE_KIND", setting.source.kind), ("SOURCE", setting.source.location)):
        new = re.sub(_SETTING_LINE.format(name=name), f'{name} = "{value}"', new, count=1, flags=re.M)
    if new != text:
        course_file.write_text(new, encoding="utf-8")
    return new != text


def set_source(root: Path, setting: Setting) -> list[Path]:
    """Point badges and install cells under ``root`` at ``setting``; returns the files changed."""
    changed = []
    course_file = root / "pagedlab" / "tools" / "course.py"
    if course_file.is_file() and rewrite_setting(course_file, setting):
        changed.append(course_file)
    # read once for every notebook: this checkout's, else the one this module belongs to
    light = light_dependencies(root if (root / "pyproject.toml").is_file() else None)
    for folder in NOTEBOOK_FOLDERS:
        for path in sorted((root / folder).glob("*.ipynb")):
            if rewrite_notebook(path, setting, light):
                changed.append(path)
    return changed


def set_repo(root: Path, repository: str, ref: str | None = None) -> list[Path]:
    """Point badges and install cells at the GitHub ``repository`` (owner/name) at ``ref``.

    ``ref`` defaults to the release tag of this version (``v0.1.0``). The same as
    ``set-source --git``.
    """
    ref = ref or f"v{__version__}"
    return set_source(root, Setting(repository, ref, github_source(repository, ref)))


def repository_root() -> Path:
    """The checkout this module belongs to (editable install), else the current folder."""
    here = Path(__file__).resolve().parents[2]  # pagedlab/tools/course.py -> the checkout
    return here if (here / "notebooks").is_dir() else Path.cwd()


# ---------------------------------------------------------------------------- command line
def _setting_from(args: argparse.Namespace, root: Path) -> Setting:
    """The setting a set-source or set-repo command line asks for."""
    ref = args.ref or f"v{__version__}"
    if args.command == "set-repo":
        return Setting(args.repository, ref, github_source(args.repository, ref))
    if args.git:
        if args.repo and args.repo != args.git:
            raise ValueError("--repo is for --wheel and --pypi; with --git the badges follow it")
        return Setting(args.git, ref, github_source(args.git, ref))
    course_file = root / "pagedlab" / "tools" / "course.py"
    repository = args.repo or (read_setting(course_file).repository if course_file.is_file()
                               else REPOSITORY)
    source = Source("wheel", args.wheel) if args.wheel else Source("pypi", args.pypi)
    return Setting(repository, ref, source)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make-exercises"]:  # the grader's generator parses its own options
        from .exercises import main as make_exercises
        return int(make_exercises(argv[1:], repository_root()) or 0)
    parser = argparse.ArgumentParser(prog="python -m pagedlab.tools.course",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    root_help = "repository checkout to rewrite (default: this one)"
    ref_help = f"git ref the badges open (and a git source installs); default v{__version__}"
    source_cmd = commands.add_parser("set-source", help="where install cells get pagedlab from")
    where = source_cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--git", metavar="OWNER/NAME", help="the GitHub repository, at --ref")
    where.add_argument("--wheel", metavar="URL", help="a wheel's http(s):// or file:// URL")
    where.add_argument("--pypi", metavar="VERSION", help="a version of pagedlab on PyPI")
    source_cmd.add_argument("--repo", metavar="OWNER/NAME", default=None,
                            help="with --wheel/--pypi: the repository the badges open "
                                 "(default: as set now)")
    source_cmd.add_argument("--ref", default=None, help=ref_help)
    source_cmd.add_argument("--root", type=Path, default=None, help=root_help)
    repo_cmd = commands.add_parser("set-repo", help="the same as set-source --git OWNER/NAME")
    repo_cmd.add_argument("repository", metavar="OWNER/NAME")
    repo_cmd.add_argument("--ref", default=None, help=ref_help)
    repo_cmd.add_argument("--root", type=Path, default=None, help=root_help)
    refresh_cmd = commands.add_parser("refresh", help="rewrite badges and install cells from "
                                                      "the setting as it is")
    refresh_cmd.add_argument("--root", type=Path, default=None, help=root_help)
    commands.add_parser("show", help="print the current setting")
    commands.add_parser("make-exercises", help="regenerate exercises/ from solutions/ "
                                               "(options: make-exercises --help)")
    args = parser.parse_args(argv)
    if args.command == "show":
        print(f"badges open: {REPOSITORY}@{REF}\ninstall cells: {install_requirement()}")
        return 0
    root = args.root or repository_root()
    try:
        if args.command == "refresh":
            setting = read_setting(root / "pagedlab" / "tools" / "course.py")
        else:
            setting = _setting_from(args, root)
        changed = set_source(root, setting)
    except ValueError as error:
        parser.error(str(error))
    for path in changed:
        print(f"rewrote {path}")
    print(f"{len(changed)} file(s) changed; badges open {setting.repository}@{setting.ref}, "
          f"install cells install {setting.source.requirement()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
