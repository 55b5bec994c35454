"""The repository keeps its promises: layout, metadata, and the conda env matching pip's."""
import importlib.util
import re
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _split(requirement: str) -> tuple[str, str]:
    """'triton>=3.0,<4; sys_platform == "linux"' -> ('triton', '>=3.0,<4')."""
    requirement = requirement.split(";")[0].split("#")[0].strip()
    name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_repository_has_the_promised_top_level():
    for name in ["pagedlab", "kernels", "notebooks", "exercises", "solutions", "tests",
                 "benchmarks", "environment.yml", "pyproject.toml", "Makefile", "README.md",
                 ".ci/run"]:
        assert (ROOT / name).exists(), f"{name} is missing"


def _make_extras() -> list[str]:
    """The extras `make install` installs (the Makefile's EXTRAS)."""
    match = re.search(r"^EXTRAS\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    return match.group(1).split(",")


def _pip_requirements(extras) -> dict[str, str]:
    """name -> version spec for the core and ``extras``, following ``pagedlab[...]`` references."""
    project = _pyproject()["project"]
    wanted, todo, seen = dict(_split(r) for r in project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in project["optional-dependencies"][extra]:
            inner = re.match(r"pagedlab\[([^\]]+)\]", requirement)
            if inner:  # an extra that includes another (model -> attention)
                todo += inner.group(1).split(",")
            else:
                wanted.update([_split(requirement)])
    return wanted


def _conda_requirements(filename: str) -> tuple[dict[str, str], list[str]]:
    """(conda name -> spec with PyPI names, the pip: lines) of one environment file."""
    conda, pip_lines, in_pip = {}, [], False
    text = (ROOT / filename).read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        if line.strip().startswith("- pip:"):
            in_pip = True
            continue
        match = re.match(r"\s*-\s+(.+)", line)
        if not match:
            continue
        if in_pip:
            line = match.group(1).strip()
            pip_lines.append(line[1:-1] if line[:1] == line[-1:] == '"' else line)
            continue
        name, spec = _split(match.group(1))
        if name not in ("python", "pip"):
            conda[CONDA_NAMES.get(name, name)] = spec
    return conda, pip_lines


def _pip_section_requirements(pip_lines: list[str]) -> dict[str, str]:
    return dict(_split(line) for line in pip_lines if not line.startswith("-"))


def test_environment_yml_installs_the_same_packages_as_make_install_minus_the_test_tools():
    extras = [extra for extra in _make_extras() if extra != "dev"]
    conda, pip_lines = _conda_requirements("environment.yml")
    assert {**conda, **_pip_section_requirements(pip_lines)} == _pip_requirements(extras)
    # pip reads conda's pip section as a requirements file, where --no-deps is not an option
    assert "-e ." in pip_lines and not any("--no-deps" in line for line in pip_lines)


def test_the_learners_environment_has_no_test_tools_and_the_dev_file_has_them():
    dev = {name for name, _ in map(_split, _pyproject()["project"]["optional-dependencies"]["dev"])}
    conda, pip_lines = _conda_requirements("environment.yml")
    assert not dev & (set(conda) | set(_pip_section_requirements(pip_lines)))
    dev_conda, dev_pip = _conda_requirements("environment-dev.yml")
    assert dev_conda == dict(map(_split, _pyproject()["project"]["optional-dependencies"]["dev"]))
    assert not dev_pip


def test_triton_in_the_conda_env_is_linux_only_through_a_pip_marker():
    # Conda environment files have no `# [linux]` selectors (that is conda-build's recipe
    # syntax); pip honours a PEP 508 marker in the env's pip: section.
    conda, pip_lines = _conda_requirements("environment.yml")
    assert "triton" not in conda
    (line,) = [line for line in pip_lines if line.startswith("triton")]
    assert line.split(";", 1)[1].strip() == "sys_platform == 'linux'"
    attention = _pyproject()["project"]["optional-dependencies"]["attention"]
    assert any(r.startswith("triton") and "sys_platform == 'linux'" in r for r in attention)


def test_make_install_installs_every_extra_of_the_course():
    assert {"dev", "lab", "model", "attention"} <= set(_make_extras())


def test_the_core_is_pure_python_and_torch_comes_with_the_attention_extra():
    project = _pyproject()["project"]
    core = {name for name, _ in map(_split, project["dependencies"])}
    assert not core & {"torch", "triton", "transformers"}
    assert {"torch", "triton"} <= set(_pip_requirements(["attention"]))
    assert {"torch", "transformers"} <= set(_pip_requirements(["model"]))


def test_python_versions_agree():
    # The core runs on any Python from 3.10; the whole course (torch) stops at 3.13.
    assert _pyproject()["project"]["requires-python"] == ">=3.10"
    assert "python>=3.10,<3.14" in (ROOT / "environment.yml").read_text()


def test_torch_is_never_pinned_in_the_package_metadata():
    project = _pyproject()["project"]
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["attention"]]:
        if requirement.startswith("torch"):
            assert "==" not in requirement
    assert "torch==" in (ROOT / "constraints" / "cpu.txt").read_text()


def test_kernels_folder_is_installed_as_pagedlab_kernels():
    import pagedlab.kernels
    assert Path(pagedlab.kernels.__file__).resolve().parent == ROOT / "kernels"


def test_ci_calls_make_test_and_readme_shows_both_commands():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme


def test_python_dash_m_pagedlab_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "pagedlab", "--help"], capture_output=True,
                         text=True, check=True)
    assert "garage" in out.stdout and "doctor" in out.stdout


def test_every_public_name_resolves_lazily_and_lands_in_dir():
    import pagedlab
    for name in pagedlab.__all__:
        assert getattr(pagedlab, name) is not None, name
        assert name in dir(pagedlab)


def test_an_unknown_attribute_is_an_attribute_error():
    import pagedlab
    try:
        pagedlab.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_every_subpackage_is_listed_for_the_wheel():
    # Editable installs find any folder; a wheel (Colab's git install) ships only listed ones.
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"pagedlab." + ".".join(p.parent.relative_to(ROOT / "pagedlab").parts)
             for p in (ROOT / "pagedlab").rglob("__init__.py")}
    found = {name.rstrip(".") for name in found} | {"pagedlab.kernels"}
    assert found == listed


def test_a_built_wheel_holds_every_module(tmp_path):
    import zipfile

    import pytest
    # find_spec, not importorskip: importing setuptools here fails once another test has
    # imported the standard library's distutils (setuptools' distutils shim asserts)
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel offline needs setuptools")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(ROOT)], check=True,
                   capture_output=True)
    (wheel,) = tmp_path.glob("pagedlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"pagedlab/{p.relative_to(ROOT / 'pagedlab').as_posix()}"
                for p in (ROOT / "pagedlab").rglob("*.py")}
    expected |= {f"pagedlab/kernels/{p.name}" for p in (ROOT / "kernels").glob("*.py")}
    expected |= {"pagedlab/py.typed"}  # PEP 561: the type hints ship too
    assert expected <= names, sorted(expected - names)


def test_old_module_paths_still_import_the_moved_modules():
    import importlib

    import pagedlab

    for old, new in pagedlab.MOVED.items():
        assert importlib.import_module(f"pagedlab.{old}") is importlib.import_module(f"pagedlab.{new}")
    from pagedlab.simulator import simulate  # an instructor's notebook from the first version
    assert simulate is pagedlab.simulate


def test_the_course_says_how_it_may_be_reused_and_cited():
    license_text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in license_text and "CC BY 4.0" in license_text
    citation = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in citation
    assert "Efficient Memory Management for Large Language Model Serving with PagedAttention" \
        in citation and "SOSP" in citation
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    project = _pyproject()["project"]
    assert {"Homepage", "Repository"} <= set(project["urls"]) and "license" in project


# ------------------------------------------------------------------ where torch comes from
CPU_PINNED = "-c constraints/cpu.txt"


def _torch_source(path=None, **env):
    import os
    run_env = {**os.environ, **env}
    if path is not None:
        run_env["PATH"] = path
    return subprocess.run(["/bin/sh", str(ROOT / "tools" / "torch_source.sh")], cwd=ROOT,
                          env=run_env, capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


@pytest.fixture
def cpu_index(tmp_path):
    """A stand-in for PyTorch's CPU index: an HTTP server with a torch/ page, on localhost."""
    import functools
    import http.server
    import threading
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<a>torch-2.13.0+cpu</a>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _closed_port_url() -> str:
    import socket
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_linux_without_a_gpu_takes_torch_from_the_cpu_index_where_it_answers(cpu_index):
    out = _torch_source(TORCH_SOURCE_OS="Linux", TORCH_SOURCE_GPU="no", TORCH_CPU_INDEX=cpu_index)
    assert out == (f"--index-url {cpu_index} --extra-index-url https://pypi.org/simple "
                   f"{CPU_PINNED}")


def test_linux_without_a_gpu_falls_back_to_the_pinned_wheel_where_the_index_is_unreachable():
    out = _torch_source(TORCH_SOURCE_OS="Linux", TORCH_SOURCE_GPU="no",
                        TORCH_CPU_INDEX=_closed_port_url())
    assert out == CPU_PINNED


def test_the_probe_works_without_curl(tmp_path, cpu_index):
    bin_dir = tmp_path / "bin"  # a PATH with Python and no curl
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    common = dict(path=str(bin_dir), TORCH_SOURCE_OS="Linux", TORCH_SOURCE_GPU="no")
    assert _torch_source(TORCH_CPU_INDEX=cpu_index, **common).startswith("--index-url")
    assert _torch_source(TORCH_CPU_INDEX=_closed_port_url(), **common) == CPU_PINNED


def test_a_gpu_machine_takes_pypis_default_torch(cpu_index):
    assert _torch_source(TORCH_SOURCE_OS="Linux", TORCH_SOURCE_GPU="yes",
                         TORCH_CPU_INDEX=cpu_index) == ""


@pytest.mark.parametrize("system", ["Darwin", "MINGW64_NT-10.0"])
def test_macos_and_windows_keep_the_pinned_wheel_and_never_probe(cpu_index, system):
    assert _torch_source(TORCH_SOURCE_OS=system, TORCH_SOURCE_GPU="no",
                         TORCH_CPU_INDEX=cpu_index) == CPU_PINNED


def test_make_install_uses_the_decision_and_make_prints_it(cpu_index):
    import os
    import shutil
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {**os.environ, "TORCH_SOURCE_OS": "Linux", "TORCH_SOURCE_GPU": "no",
           "TORCH_CPU_INDEX": cpu_index}

    def make(*args):
        return subprocess.run(["make", "-s", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True, timeout=60).stdout

    assert make("print-torch-source").strip() == (
        f"torch from: --index-url {cpu_index} --extra-index-url https://pypi.org/simple "
        f"{CPU_PINNED}")
    plan = make("-n", "-B", "install", "VENV=build/no-such-venv")
    assert f"pip install --quiet --index-url {cpu_index}" in plan and " torch" in plan
    assert "-e '.[dev,lab,model,attention]'" in plan
    light = make("-n", "-B", "install", "VENV=build/no-such-venv", "EXTRAS=lab")
    assert "torch" not in light  # the light course installs no torch
