"""The course in the browser: a JupyterLite site of the pure lessons, nothing to install.

    make site        # or: python -m pagedlab.tools.site build --output build/site

builds the course's wheel, copies the lessons that need no torch into the site with a first cell
that installs that wheel from the site itself (``piplite``, JupyterLite's ``micropip``), and
runs ``jupyter lite build`` (jupyterlite-core and its Pyodide kernel, in a venv of their own:
``install-tools``). The result is static files: serve it from any web server or GitHub Pages.
Python runs in the browser (Pyodide), whose runtime and binary packages (numpy, matplotlib)
load from Pyodide's CDN unless ``--pyodide`` puts a Pyodide distribution into the site;
pagedlab and the pure wheels it needs beyond Pyodide's own always come from the site.

Once built, it checks the site's wheels against micropip's rules (:func:`micropip_problems`)
and Pyodide's package list (``pyodide-lock.json``, from the ``pyodide`` npm package of the
version the kernel loads). How to publish the site: README.md, "The course in the browser".
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError as error:  # pragma: no cover - packaging comes with every dev install
    raise ImportError("pagedlab.tools.site needs 'packaging': pip install packaging") from error

from .course import INSTALL_MARKER, repository_root

# The lessons that need no torch: they run in Pyodide.
PURE_LESSONS = ("01_parking_garage", "02_pages_and_block_tables", "03_where_memory_goes",
                "03b_how_many_requests_fit", "05_scheduling")

# The build tools, pinned together: jupyterlite-pyodide-kernel 0.8.6 loads Pyodide 314.0.6
# (Python 3.14) from the CDN. jupyterlab_widgets puts the widget manager into the site.
SITE_TOOLS = ("jupyterlite-core==0.8.6", "jupyterlite-pyodide-kernel==0.8.6",
              "jupyter-server>=2,<3", "jupyterlab_widgets==3.0.17")
PYODIDE_VERSION = "314.0.6"
WIDGET_MANAGER = "@jupyter-widgets/jupyterlab-manager"  # the labextension that draws widgets
KERNEL_PLUGIN = "@jupyterlite/pyodide-kernel-extension:kernel"  # its settings in jupyter-lite.json

# Pure wheels pagedlab needs that Pyodide does not ship: bundled, so the site needs no PyPI
# (comm: the kernel installs it at start, from PyPI unless the site has it).
BUNDLED_WHEELS = ("ipywidgets==8.1.9", "jupyterlab_widgets==3.0.17", "comm==0.2.3")

# What the Pyodide kernel installs itself before the first cell runs (its worker does
# ``piplite.install`` of these), whatever the site bundles.
KERNEL_PROVIDES = ("ipykernel", "comm", "pyodide-kernel", "jedi", "ipython")

JUPYTERLITE_INSTALL_CELL = "\n".join([
    f"{INSTALL_MARKER} (JupyterLite): installs the course's wheel, bundled with this site.",
    "import sys",
    "if sys.platform == 'emscripten':",
    "    import piplite",
    "    await piplite.install('pagedlab')",
])
PYODIDE_KERNELSPEC = {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}
_NEEDS_TORCH = re.compile(r"^\s*(?:import|from)\s+(?:torch|triton)\b", re.MULTILINE)


class SiteError(RuntimeError):
    """The site cannot be built; the message says what to do."""


# ---------------------------------------------------------------------------- micropip's rules


def pyodide_environment(lock: dict) -> dict[str, str]:
    """PEP 508 marker values inside Pyodide, from its lock file's ``info``."""
    python = lock["info"]["python"]  # e.g. "3.14.2"
    return {"sys_platform": "emscripten", "platform_system": "Emscripten",
            "platform_machine": "wasm32", "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "implementation_version": python,
            "python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
            "platform_release": "", "platform_version": "", "extra": ""}


def wheel_tag_problem(filename: str, lock: dict) -> str | None:
    """Why micropip would refuse this wheel file for Pyodide, or None: it takes pure
    ``py3-none-any`` wheels and wasm32 wheels built for this Pyodide's ABI."""
    abi_version, python = lock["info"]["abi_version"], lock["info"]["python"]
    cpython = "cp" + "".join(python.split(".")[:2])
    wasm = {f"pyemscripten_{abi_version}_wasm32", f"pyodide_{abi_version}_wasm32",
            lock["info"]["platform"] + "_wasm32"}
    for tag in parse_wheel_filename(filename)[3]:
        if tag.platform == "any" and tag.abi == "none" and tag.interpreter.startswith("py3"):
            return None
        if tag.platform in wasm and tag.interpreter == cpython:
            return None
    return f"{filename}: not a pure py3-none-any wheel nor a wasm32 wheel for Pyodide {abi_version}"


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return metadata["Name"], metadata["Version"], metadata.get_all("Requires-Dist") or []


def micropip_problems(wheel: Path, lock: dict, others: list[Path] = ()) -> list[str]:
    """What stops ``micropip.install(wheel)`` in the Pyodide of ``lock`` (its pyodide-lock.json);
    an empty list when nothing does.

    micropip's rules: the wheel's tag must be pure or Pyodide's own; each Requires-Dist whose
    marker holds in Pyodide (sys_platform 'emscripten', platform_machine 'wasm32', Pyodide's
    Python; extras not asked for) must be met by a package of the lock or, failing that, by
    one of ``others`` (wheels the site serves), whose own requirements must be met in turn.
    micropip ignores Requires-Python. The Pyodide kernel's own packages count as met.
    """
    environment = pyodide_environment(lock)
    locked = {canonicalize_name(name): entry["version"] for name, entry in lock["packages"].items()}
    served = {canonicalize_name(wheel_metadata(path)[0]): path for path in others}
    problems: list[str] = []
    queue, seen = [Path(wheel)], set()
    while queue:
        path = queue.pop()
        if path.name in seen:
            continue
        seen.add(path.name)
        if problem := wheel_tag_problem(path.name, lock):
            problems.append(problem)
        name, _, requirements = wheel_metadata(path)
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            wanted = canonicalize_name(requirement.name)
            if wanted in locked and requirement.specifier.contains(locked[wanted],
                                                                   prereleases=True):
                continue
            if wanted in served:
                version = wheel_metadata(served[wanted])[1]
                if requirement.specifier.contains(version, prereleases=True):
                    queue.append(served[wanted])
                    continue
            if wanted in KERNEL_PROVIDES:
                continue
            has = (f"Pyodide has {locked[wanted]}" if wanted in locked else
                   "not in Pyodide's packages nor among the site's wheels")
            problems.append(f"{name} requires {requirement}: {has}")
    return problems


# ---------------------------------------------------------------------------- the parts


def _run(command: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SiteError(f"{what} failed ({' '.join(command[:4])} ...):\n{tail}")
    return done


def install_tools(venv: Path) -> Path:
    """Create ``venv`` with the site's build tools (SITE_TOOLS); returns its ``jupyter``."""
    venv = Path(venv)
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], "creating the site's venv")
    _run([str(python), "-m", "pip", "install", "--quiet", *SITE_TOOLS],
         "installing the site's tools")
    return venv / "bin" / "jupyter"


def build_wheel(root: Path, dest: Path) -> Path:
    """The course's wheel, built from the checkout at ``root`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    isolation = ["--no-build-isolation"] if _has_setuptools() else []
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, str(root),
          "-w", str(dest)], "building pagedlab's wheel")
    return next(dest.glob("pagedlab-*.whl"))


def _has_setuptools() -> bool:
    """Whether this Python can build the wheel itself (no isolated build: no download)."""
    return importlib.util.find_spec("setuptools") is not None


def download_wheels(requirements: tuple[str, ...], dest: Path, lock: dict) -> list[Path]:
    """Pure wheels from PyPI (no dependencies: those are checked, not fetched)."""
    python = lock["info"]["python"].rsplit(".", 1)[0]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
          "--python-version", python, "-d", str(dest), *requirements], "downloading pure wheels")
    names = {canonicalize_name(Requirement(r).name) for r in requirements}
    return sorted(p for p in dest.glob("*.whl") if canonicalize_name(p.name.split("-")[0]) in names)


def fetch_pyodide(cache: Path, version: str = PYODIDE_VERSION) -> Path:
    """The ``pyodide`` npm package (runtime and pyodide-lock.json), unpacked under ``cache``."""
    package = Path(cache) / f"pyodide-{version}" / "package"
    if (package / "pyodide-lock.json").exists():
        return package
    if shutil.which("npm") is None:
        raise SiteError(f"npm not found: the wheel check needs Pyodide {version}'s package list "
                        f"(npm pack pyodide@{version}); install Node.js and npm "
                        "(apt-get install npm)")
    package.parent.mkdir(parents=True, exist_ok=True)
    done = _run(["npm", "pack", "--silent", f"pyodide@{version}", "--pack-destination",
                 str(package.parent)], f"fetching pyodide@{version} from npm")
    tarball = package.parent / done.stdout.strip().splitlines()[-1]
    shutil.unpack_archive(tarball, package.parent)
    tarball.unlink()
    return package


def site_lesson(notebook: dict, name: str) -> dict:
    """A lesson as the site serves it: the JupyterLite install cell first, no outputs, the
    Pyodide kernel. Refuses a lesson that imports torch or Triton."""
    cells = [dict(cell) for cell in notebook["cells"]]
    for cell in cells:
        if cell["cell_type"] == "code" and _NEEDS_TORCH.search("".join(cell["source"])):
            raise SiteError(f"{name} imports torch or triton: Pyodide has neither; "
                            "leave it out of PURE_LESSONS")
    install = next((i for i, cell in enumerate(cells) if cell["cell_type"] == "code"
                    and "".join(cell["source"]).startswith(INSTALL_MARKER)), None)
    if install is None:
        raise SiteError(f"{name} has no install cell ({INSTALL_MARKER!r}); "
                        "run python -m pagedlab.tools.course set-repo to restore it")
    cells[install] = {"cell_type": "code", "metadata": {}, "source": JUPYTERLITE_INSTALL_CELL}
    for cell in cells:
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
    metadata = {key: value for key, value in notebook["metadata"].items() if key != "widgets"}
    metadata["kernelspec"] = PYODIDE_KERNELSPEC
    return {**notebook, "metadata": metadata, "cells": cells}


def build(output: Path, jupyter: Path, root: Path | None = None, cache: Path | None = None,
          pyodide: str | None = None) -> Path:
    """Build the site into ``output`` (replaced). Returns the site's pagedlab wheel.

    ``pyodide``: a Pyodide distribution to serve from the site instead of the CDN: the URL or
    path of pyodide-PYODIDE_VERSION.tar.bz2 from Pyodide's releases, or an unpacked folder.
    """
    root = Path(root or repository_root())
    cache = Path(cache or root / "build")
    if not Path(jupyter).exists():
        raise SiteError(f"{jupyter} not found: run `make site`, or "
                        "python -m pagedlab.tools.site install-tools --venv build/venv-site")
    if pyodide and "://" not in str(pyodide) and not Path(pyodide).exists():  # before any work
        raise SiteError(f"{pyodide} not found: pass the URL or path of "
                        f"pyodide-{PYODIDE_VERSION}.tar.bz2, or its unpacked folder")
    if pyodide and Path(pyodide).is_dir() and not (Path(pyodide) / "pyodide.mjs").exists():
        raise SiteError(f"{pyodide} holds no pyodide.mjs: pass an unpacked Pyodide "
                        f"{PYODIDE_VERSION} distribution (its folder 'pyodide')")
    lock = json.loads((fetch_pyodide(cache) / "pyodide-lock.json").read_text())
    output = Path(output).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        lite = Path(scratch)
        wheels = lite / "pypi"  # jupyter lite build serves the wheels it finds here
        build_wheel(root, wheels)
        download_wheels(BUNDLED_WHEELS, wheels, lock)
        (lite / "content").mkdir()
        for name in PURE_LESSONS:
            notebook = json.loads((root / "notebooks" / f"{name}.ipynb").read_text())
            (lite / "content" / f"{name}.ipynb").write_text(
                json.dumps(site_lesson(notebook, name), indent=1) + "\n")
        if output.exists():
            shutil.rmtree(output)
        bundle = ["--pyodide", str(pyodide)] if pyodide else []
        if pyodide and Path(pyodide).is_dir():   # jupyter lite build serves lite/static/pyodide
            shutil.copytree(pyodide, lite / "static" / "pyodide")
            bundle = []
        _run([str(Path(jupyter).absolute()), "lite", "build", "--lite-dir", str(lite), "--contents",
              str(lite / "content"), "--output-dir", str(output), *bundle], "jupyter lite build",
             cwd=lite)  # where it keeps its .jupyterlite.doit.db
    if not (output / "extensions" / WIDGET_MANAGER).is_dir():
        shutil.rmtree(output)
        raise SiteError(f"{jupyter} put no widget manager ({WIDGET_MANAGER}) into the site, so the "
                        "lessons' widgets would not show: python -m pagedlab.tools.site "
                        f"install-tools --venv {Path(jupyter).parent.parent}")
    served = site_wheels(output)
    pagedlab_wheel = next(path for path in served if path.name.startswith("pagedlab-"))
    others = [path for path in served if path != pagedlab_wheel]
    if problems := micropip_problems(pagedlab_wheel, lock, others):
        shutil.rmtree(output)
        raise SiteError(f"micropip would refuse pagedlab in Pyodide {lock['info']['python']} "
                        "(no site written):\n  " + "\n  ".join(problems))
    return pagedlab_wheel


def site_wheels(site: Path) -> list[Path]:
    """Every wheel the site's ``piplite`` indexes (jupyter-lite.json's pipliteUrls) list."""
    config = json.loads((Path(site) / "jupyter-lite.json").read_text())["jupyter-config-data"]
    kernel = config["litePluginSettings"][KERNEL_PLUGIN]
    wheels = []
    for url in kernel["pipliteUrls"]:
        index = Path(site) / url.split("?")[0]
        for project in json.loads(index.read_text()).values():
            for files in project["releases"].values():
                wheels += [index.parent / entry["url"] for entry in files]
    return wheels


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pagedlab.tools.site",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tools = commands.add_parser("install-tools", help="a venv with jupyterlite's build tools")
    tools.add_argument("--venv", type=Path, default=Path("build/venv-site"))
    site = commands.add_parser("build", help="build the JupyterLite site")
    site.add_argument("--output", type=Path, default=Path("build/site"))
    site.add_argument("--jupyter", type=Path, default=Path("build/venv-site/bin/jupyter"))
    site.add_argument("--pyodide", metavar="URL_OR_PATH",
                      help=f"serve this Pyodide {PYODIDE_VERSION} distribution from the site "
                           "(pyodide-*.tar.bz2, or its unpacked folder), not from the CDN")
    args = parser.parse_args(argv)
    try:
        if args.command == "install-tools":
            print(f"site tools in {install_tools(args.venv).parent.parent}")
        else:
            wheel = build(args.output, args.jupyter, pyodide=args.pyodide)
            print(f"site in {args.output} ({', '.join(PURE_LESSONS)}; {wheel.name}); "
                  f"serve it: python -m http.server -d {args.output}")
    except SiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
