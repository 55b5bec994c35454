"""The Colab install cell, run as Colab would run it, against local stand-ins for the internet.

Each test writes the cell that ``course.install_cell_source`` generates and runs it in a fresh
interpreter inside a real IPython shell, with ``google.colab`` in ``sys.modules`` (as in Colab),
pagedlab not importable, and a runtime of fakes: torch, triton and ipywidgets "installed" at
Colab's versions, and a ``pip`` that records its command line instead of installing. The source
is a bare git repository on disk (``file://``), a wheel file, or a PyPI JSON answer on disk.
Two tests run the real pip in a fresh virtual environment against an offline index of tiny
wheels (the pins hold), one runs the cell in a Jupyter kernel (what Colab's page receives).
"""
import ast
import json
import os
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pip as pip_module  # the real pip, lent to a fresh environment
import pytest

from pagedlab.tools import course

IPYTHON = pytest.importorskip("IPython")
SITE_PACKAGES = str(Path(IPYTHON.__file__).resolve().parents[1])
COLAB = {"torch": "2.11.0+cu126", "triton": "3.6.0", "ipywidgets": "7.7.1", "tqdm": "4.67.1"}
LIGHT = {"numpy": "numpy>=1.24,<3", "matplotlib": "matplotlib>=3.6,<4", "tqdm": "tqdm>=4.60,<5"}

# Runs one cell the way a notebook kernel does: IPython's run_cell, its own output handling.
RUNNER = """\
import sys, types
site_packages, cell, in_colab = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3] == "colab"
sys.path.append(site_packages)
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance(colors="nocolor")
shell.run_cell("pass")
sys.path.remove(site_packages)  # from here on the cell sees only the fake runtime
if in_colab:
    sys.modules["google.colab"] = types.ModuleType("google.colab")
result = shell.run_cell(cell)
error = result.error_in_exec
print("CELL RESULT:", type(error).__name__ if error else "ok")
"""

FAKE_PIP = """\
import json, os, sys
args = sys.argv[1:]
constraints = open(args[args.index("-c") + 1]).read() if "-c" in args else None
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "constraints": constraints}) + "\\n")
if os.environ.get("FAKE_PIP_FAILS"):
    print("Collecting numpy>=1.24,<3")
    print("ERROR: No matching distribution found for numpy>=1.24,<3", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A bare git repository with tags v0.0.9 and v0.1.0 (annotated) and branches main, dev."""
    work = tmp_path_factory.mktemp("course")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work / "src")]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work / "src")], check=True)
    (work / "src" / "README.md").write_text("course\n")
    for step in (["add", "README.md"], ["commit", "-q", "-m", "one"], ["tag", "v0.0.9"],
                 ["commit", "-q", "--allow-empty", "-m", "two"], ["tag", "-a", "v0.1.0", "-m", "0.1.0"],
                 ["branch", "dev"]):
        subprocess.run(git + step, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work / "src"), str(work / "mirror.git")],
                   check=True)
    return (work / "mirror.git").as_uri()


@pytest.fixture
def runtime(tmp_path):
    """A fake Colab runtime's packages: torch, triton, ipywidgets, tqdm at Colab's versions, pip."""
    packages = tmp_path / "packages"
    for name, version in COLAB.items():
        info = packages / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (packages / "pip").mkdir()
    (packages / "pip" / "__init__.py").write_text("")
    (packages / "pip" / "__main__.py").write_text(FAKE_PIP)
    return packages


def run_cell(tmp_path, runtime, cell, *, in_colab=True, pip_fails=False):
    """Run ``cell``; returns (what it printed, the cell's result, the pip commands it ran)."""
    (tmp_path / "cell.py").write_text(cell)
    (tmp_path / "runner.py").write_text(RUNNER)
    log = tmp_path / "pip.log"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(runtime),
           "FAKE_PIP_LOG": str(log), **({"FAKE_PIP_FAILS": "1"} if pip_fails else {})}
    done = subprocess.run([sys.executable, "-S", str(tmp_path / "runner.py"), SITE_PACKAGES,
                           str(tmp_path / "cell.py"), "colab" if in_colab else "local"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed, _, result = (done.stdout + done.stderr).rpartition("CELL RESULT: ")
    pip_runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return printed, result.strip(), pip_runs


def git_cell(url, ref, **options):
    return course.install_cell_source(course.Source("git", url, ref), "me/course", light=LIGHT,
                                      **options)


def assert_stopped_kindly(printed, result):
    """The cell stopped the notebook (an error result) and printed a message, no traceback."""
    assert result == "CourseNotInstalled"
    assert "\npagedlab could not be installed: " in "\n" + printed
    assert "What to do: " in printed and "The course: https://github.com/me/course" in printed
    assert "Traceback" not in printed and 'File "' not in printed and "raise " not in printed


# ---------------------------------------------------------------------------- git source
def test_ref_present_installs_pagedlab_alone_then_the_missing_light_packages(tmp_path, runtime, mirror):
    printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(mirror, "v0.1.0"))
    assert result == "ok", printed
    assert [run["args"][:3] for run in pip_runs] == [["install", "-c", pip_runs[0]["args"][2]]] * 2
    assert pip_runs[0]["args"][3:] == ["--no-deps", f"pagedlab @ git+{mirror}@v0.1.0"]
    assert pip_runs[1]["args"][3:] == ["numpy>=1.24,<3", "matplotlib>=3.6,<4"]  # tqdm is there
    assert "Installing pagedlab @ git+" in printed and "pagedlab is installed." in printed


def test_every_pip_run_pins_colabs_torch_triton_and_ipywidgets(tmp_path, runtime, mirror):
    _, _, pip_runs = run_cell(tmp_path, runtime, git_cell(mirror, "v0.1.0"))
    assert len(pip_runs) == 2
    for run in pip_runs:
        assert run["constraints"].splitlines() == ["torch==2.11.0+cu126", "triton==3.6.0",
                                                   "ipywidgets==7.7.1"]
        assert not any(arg.split(">")[0].split("=")[0] in course.KEEP for arg in run["args"])


def test_a_branch_is_a_version_too(tmp_path, runtime, mirror):
    _, result, pip_runs = run_cell(tmp_path, runtime, git_cell(mirror, "dev"))
    assert result == "ok" and pip_runs[0]["args"][-1] == f"pagedlab @ git+{mirror}@dev"


def test_missing_ref_names_it_lists_the_refs_there_and_installs_nothing(tmp_path, runtime, mirror):
    printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(mirror, "v9.9.9"))
    assert_stopped_kindly(printed, result)
    assert f"{mirror} has no version 'v9.9.9'" in printed
    assert "Its tags: v0.0.9, v0.1.0\n" in printed and "Its branches: dev, main\n" in printed
    assert "set REF in this cell" in printed
    assert pip_runs == []


def test_missing_repository_says_there_is_none_there(tmp_path, runtime):
    url = (tmp_path / "no-such-repository.git").as_uri()
    printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(url, "v0.1.0"))
    assert_stopped_kindly(printed, result)
    assert f"there is no public course repository at {url}" in printed
    assert "ask your instructor where the course lives now" in printed and pip_runs == []


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nobody listens there once the probe closes


def test_unreachable_server_says_check_the_network(tmp_path, runtime):
    url = f"http://127.0.0.1:{closed_port()}/course.git"
    printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(url, "v0.1.0"))
    assert_stopped_kindly(printed, result)
    assert f"this runtime cannot reach {url}" in printed
    assert "check that this runtime is online" in printed and pip_runs == []


def test_server_that_never_answers_stops_after_the_timeout(tmp_path, runtime):
    with socket.socket() as silent:  # accepts connections (the backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/course.git"
        printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(url, "v0.1.0", timeout=2))
    assert_stopped_kindly(printed, result)
    assert f"{url} did not answer within 2 s" in printed and pip_runs == []


def test_pip_failure_shows_pips_last_lines_and_what_to_do(tmp_path, runtime, mirror):
    printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(mirror, "v0.1.0"), pip_fails=True)
    assert_stopped_kindly(printed, result)
    assert f"pip could not install pagedlab @ git+{mirror}@v0.1.0. It said:" in printed
    assert "  ERROR: No matching distribution found for numpy>=1.24,<3" in printed
    assert "run this cell again" in printed
    assert len(pip_runs) == 1  # it stopped at the first failure


def test_outside_colab_it_does_nothing(tmp_path, runtime, mirror):
    printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(mirror, "v9.9.9"), in_colab=False)
    assert (printed.strip(), result, pip_runs) == ("", "ok", [])


def test_with_pagedlab_importable_it_does_nothing(tmp_path, runtime, mirror):
    (runtime / "pagedlab").mkdir()
    (runtime / "pagedlab" / "__init__.py").write_text("")
    printed, result, pip_runs = run_cell(tmp_path, runtime, git_cell(mirror, "v9.9.9"))
    assert (printed.strip(), result, pip_runs) == ("", "ok", [])


# ---------------------------------------------------------------------------- wheel and PyPI
def test_wheel_source_installs_the_wheel_without_its_dependencies(tmp_path, runtime):
    wheel = tmp_path / "pagedlab-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")  # the fake pip never opens it
    cell = course.install_cell_source(course.Source("wheel", wheel.as_uri()), "me/course", light=LIGHT)
    printed, result, pip_runs = run_cell(tmp_path, runtime, cell)
    assert result == "ok", printed
    assert pip_runs[0]["args"][3:] == ["--no-deps", f"pagedlab @ {wheel.as_uri()}"]
    assert pip_runs[1]["args"][3:] == ["numpy>=1.24,<3", "matplotlib>=3.6,<4"]


def test_missing_wheel_says_so_and_installs_nothing(tmp_path, runtime):
    url = (tmp_path / "gone" / "pagedlab-0.1.0-py3-none-any.whl").as_uri()
    cell = course.install_cell_source(course.Source("wheel", url), "me/course", light=LIGHT)
    printed, result, pip_runs = run_cell(tmp_path, runtime, cell)
    assert_stopped_kindly(printed, result)
    assert f"this runtime cannot reach {url}" in printed and pip_runs == []


def pypi_cell(tmp_path, version):
    index = tmp_path / "pypi.json"  # PyPI's JSON API answer, cut to what the cell reads
    index.write_text(json.dumps({"info": {"name": "pagedlab"}, "releases": {"0.1.0": [], "0.2.0": []}}))
    return course.install_cell_source(course.Source("pypi", version), "me/course", light=LIGHT,
                                      index=index.as_uri())


def test_pypi_source_installs_that_version_without_its_dependencies(tmp_path, runtime):
    printed, result, pip_runs = run_cell(tmp_path, runtime, pypi_cell(tmp_path, "0.2.0"))
    assert result == "ok", printed
    assert pip_runs[0]["args"][3:] == ["--no-deps", "pagedlab==0.2.0"]


def test_pypi_version_missing_lists_the_versions_there(tmp_path, runtime):
    printed, result, pip_runs = run_cell(tmp_path, runtime, pypi_cell(tmp_path, "9.0"))
    assert_stopped_kindly(printed, result)
    assert "the package index has no pagedlab 9.0; it has: 0.1.0, 0.2.0." in printed
    assert "set VERSION in this cell" in printed and pip_runs == []


def test_the_cell_checks_pypi_itself_by_default():
    cell = course.install_cell_source(course.Source("pypi", "0.1.0"))
    assert "'https://pypi.org/pypi/pagedlab/json'" in cell


# ---------------------------------------------------------------------------- with the real pip
def write_wheel(folder, name, version, requires=()):
    """A minimal pure-Python wheel of one empty module (pip checks no hashes on install)."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "",
             f"{info}/METADATA": "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                                          *(f"Requires-Dist: {r}\n" for r in requires)]),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
    return path


@pytest.fixture
def real_pip(tmp_path):
    """A fresh virtual environment holding only "torch 1.0", pip from this one, and an offline
    package index of wheels: pagedlab (which requires torch>=2), light (which requires deep),
    deep, greedy (which requires torch>=2) and torch 2.0."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    torch_info = site_packages / "torch-1.0.dist-info"
    torch_info.mkdir()
    (torch_info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 1.0\n")
    (torch_info / "RECORD").write_text("")
    (tmp_path / "pip-only").mkdir()
    (tmp_path / "pip-only" / "pip").symlink_to(Path(pip_module.__file__).parent)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pagedlab = write_wheel(wheels, "pagedlab", "0.1.0", ["torch>=2"])
    write_wheel(wheels, "light", "1.0", ["deep"])
    write_wheel(wheels, "deep", "1.0")
    write_wheel(wheels, "greedy", "1.0", ["torch>=2"])
    write_wheel(wheels, "torch", "2.0")  # what pip would upgrade to, were torch not pinned
    env = {"PIP_CONFIG_FILE": os.devnull,  # this machine's pip settings stay out of it
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_CACHE_DIR": "1",  # the runner runs without site: name the venv's packages
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "pip-only"), str(site_packages)])}
    return venv / "bin" / "python", env, pagedlab.as_uri(), site_packages


def run_with_real_pip(tmp_path, real_pip, light):
    python, env, wheel, site_packages = real_pip
    cell = course.install_cell_source(course.Source("wheel", wheel), "me/course", light=light)
    (tmp_path / "cell.py").write_text(cell)
    (tmp_path / "runner.py").write_text(RUNNER)
    done = subprocess.run([str(python), "-S", str(tmp_path / "runner.py"), SITE_PACKAGES,
                           str(tmp_path / "cell.py"), "colab"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env})
    printed, _, result = (done.stdout + done.stderr).rpartition("CELL RESULT: ")
    installed = sorted(p.name.split("-")[0] for p in site_packages.glob("*.dist-info"))
    return printed, result.strip(), installed


@pytest.mark.slow
def test_real_pip_installs_pagedlab_alone_and_light_packages_with_their_dependencies(tmp_path, real_pip):
    printed, result, installed = run_with_real_pip(tmp_path, real_pip, {"light": "light>=1"})
    assert result == "ok", printed
    assert installed == ["deep", "light", "pagedlab", "torch"]
    assert (real_pip[3] / "torch-1.0.dist-info").is_dir()  # pagedlab's torch>=2 was not followed


@pytest.mark.slow
def test_real_pip_refuses_a_dependency_that_would_replace_the_runtimes_torch(tmp_path, real_pip):
    printed, result, installed = run_with_real_pip(tmp_path, real_pip, {"greedy": "greedy"})
    assert_stopped_kindly(printed, result)
    assert "pip could not install greedy. It said:" in printed
    assert "greedy 1.0 depends on torch>=2" in printed and "(constraint) torch==1.0" in printed
    assert installed == ["pagedlab", "torch"] and (real_pip[3] / "torch-1.0.dist-info").is_dir()


# ---------------------------------------------------------------------------- in a real kernel
@pytest.mark.slow
def test_in_a_jupyter_kernel_a_failure_is_one_error_output_with_the_message_only(tmp_path, mirror):
    """What Colab's frontend gets: an error whose traceback is the message; later cells do not run."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pretend = textwrap.dedent("""\
        import sys, types
        sys.modules['google.colab'] = types.ModuleType('google.colab')  # as in Colab
        sys.modules['pagedlab'] = None  # as if pagedlab were not installed""")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(pretend), nbformat.v4.new_code_cell(git_cell(mirror, "v9.9.9")),
        nbformat.v4.new_code_cell("print('the lesson')")])
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError):
        client.execute()
    outputs = notebook.cells[1].outputs
    assert [output.output_type for output in outputs] == ["error"]
    assert outputs[0].ename == "CourseNotInstalled"
    message = "\n".join(outputs[0].traceback)
    assert message.startswith("pagedlab could not be installed: ")
    assert "has no version 'v9.9.9'" in message and "Its tags: v0.0.9, v0.1.0" in message
    assert "Traceback" not in message and "File " not in message
    assert notebook.cells[2].outputs == []


# ---------------------------------------------------------------------------- the generator
@pytest.mark.parametrize("source", [course.Source("git", "https://github.com/me/course.git", "v1"),
                                    course.Source("wheel", "https://example.org/pagedlab-1-py3-none-any.whl"),
                                    course.Source("pypi", "1.0")], ids=lambda s: s.kind)
def test_the_cell_is_python_3_10_code_that_imports_only_the_standard_library(source):
    tree = ast.parse(course.install_cell_source(source), feature_version=(3, 10))
    imported = {node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert imported and {name.split(".")[0] for name in imported} <= sys.stdlib_module_names


def test_light_dependencies_are_pyprojects_less_torch_triton_ipywidgets():
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((course.repository_root() / "pyproject.toml").read_text())
    expected = [r for r in declared["project"]["dependencies"]
                if not r.startswith(("torch", "triton", "ipywidgets"))]
    assert list(course.light_dependencies().values()) == expected
    assert {"numpy", "matplotlib", "tqdm"} <= set(course.light_dependencies())


@pytest.mark.parametrize("kind, location, ref, problem", [
    ("svn", "https://example.org/x", "", "'git', 'wheel' or 'pypi'"),
    ("git", "github.com/me/course", "v1", "URL"),
    ("git", "https://github.com/me/course.git", "v1 --upload-pack=x", "git ref"),
    ("wheel", "https://example.org/pagedlab.tar.gz", "", "ends in .whl"),
    ("pypi", "latest", "", "a version like 0.1.0"),
])
def test_a_source_that_cannot_work_is_refused_with_what_it_needs(kind, location, ref, problem):
    with pytest.raises(ValueError, match=problem):
        course.Source(kind, location, ref)


def test_light_dependencies_outside_a_checkout_come_from_the_installed_metadata(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "another"\ndependencies = ["x"]\n')
    light = course.light_dependencies(tmp_path)
    assert "x" not in light and {"numpy", "matplotlib", "tqdm"} <= set(light)
    assert not set(light) & set(course.KEEP)
