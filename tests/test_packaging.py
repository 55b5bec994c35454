"""The repository keeps its promises: layout, metadata, and the conda env matching pip's."""
import re
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

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


def test_environment_yml_installs_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    wanted = dict(_split(r) for r in project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.update(_split(r) for r in extra)
    conda = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        match = re.match(r"\s*-\s+([A-Za-z][^\s#]*)", line)
        if match and not line.strip().startswith("- pip:") and match.group(1) not in ("pip",):
            name, spec = _split(match.group(1))
            if name != "python":
                conda[CONDA_NAMES.get(name, name)] = spec
    assert conda == wanted


def test_python_versions_agree():
    assert _pyproject()["project"]["requires-python"] == ">=3.10,<3.14"
    assert "python>=3.10,<3.14" in (ROOT / "environment.yml").read_text()


def test_torch_is_never_pinned_in_the_package_metadata():
    for requirement in _pyproject()["project"]["dependencies"]:
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
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools")
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
