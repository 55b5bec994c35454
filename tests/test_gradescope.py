"""The Gradescope autograder zip: what it holds, and its scripts run in an imitation of
Gradescope's layout (AUTOGRADER_ROOT/source, /submission, /results; the venv in a temp folder).

setup.sh runs for real except apt (PAGEDLAB_SETUP_APT=0: bubblewrap and python3 are here) and
torch (PAGEDLAB_SETUP_TORCH=0: PyTorch's CPU index is not reachable from CI); it installs the
wheel from the zip and its dependencies from PyPI, with no git.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from pagedlab.grading import command, gradescope
from pagedlab.grading.report import CaseResult, Report

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ["--seed", "7", "--memory-mb", "700", "--setup-timeout", "90", "--timeout", "20",
           "--visibility", "after_due_date", "--isolation", "auto"]


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    """The zip, built once: pure exercises only (no torch), with every grading option set."""
    target = tmp_path_factory.mktemp("zip") / "autograder.zip"
    assert command.main(["--gradescope-autograder", str(target), "--autograder-torch", "none",
                         *OPTIONS]) == 0
    return target


def script(zip_path: Path, name: str) -> str:
    return zipfile.ZipFile(zip_path).read(name).decode("utf-8")


# ------------------------------------------------------------------------ the zip
def test_the_zip_holds_both_scripts_executable_and_the_course_wheel(autograder):
    archive = zipfile.ZipFile(autograder)
    names = archive.namelist()
    assert {"setup.sh", "run_autograder"} <= set(names)
    (wheel,) = [n for n in names if n.endswith(".whl")]
    assert wheel.startswith("pagedlab-")
    assert "pagedlab/grading/gradescope.py" in zipfile.ZipFile(archive.open(wheel)).namelist()
    for name in ("setup.sh", "run_autograder"):
        assert (archive.getinfo(name).external_attr >> 16) & 0o111, f"{name} is not executable"


def test_setup_installs_the_wheel_and_needs_no_git(autograder):
    setup = script(autograder, "setup.sh")
    assert "git" not in setup.replace("digit", "")
    assert '"$ROOT/source/pagedlab-' in setup and "WITH_TORCH=0" in setup


def test_torch_comes_from_pytorchs_cpu_index_by_default(tmp_path):
    assert command.main(["--gradescope-autograder", str(tmp_path)]) == 0
    setup = script(tmp_path / gradescope.ZIP_NAME, "setup.sh")
    assert "WITH_TORCH=1" in setup and "download.pytorch.org/whl/cpu torch" in setup


def test_run_autograder_passes_every_grading_option(autograder):
    run = script(autograder, "run_autograder")
    for flag, value in zip(OPTIONS[::2], OPTIONS[1::2]):
        assert f"{flag} {value}" in run, flag


def test_the_default_memory_fits_gradescopes_container(tmp_path):
    assert command.main(["--gradescope-autograder", str(tmp_path / "a.zip")]) == 0
    assert f"--memory-mb {gradescope.MEMORY_MB}" in script(tmp_path / "a.zip", "run_autograder")
    assert gradescope.MEMORY_MB <= 768


def test_a_bad_option_is_refused_before_any_zip_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit):
        command.main(["--gradescope-autograder", str(tmp_path / "a.zip"), "--seed", "0"])
    assert not (tmp_path / "a.zip").exists()
    assert "--seed 0" in capsys.readouterr().err


def test_a_wheel_that_is_not_one_is_refused(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("no")
    assert command.main(["--gradescope-autograder", str(tmp_path / "a.zip"),
                         "--autograder-wheel", str(tmp_path / "x.txt")]) == 1
    assert "not a wheel" in capsys.readouterr().err


def test_visibility_applies_to_every_test():
    report = Report("ex01", "t", [CaseResult("a", True), CaseResult("b", False)])
    data = gradescope.results([report], 1.0, visibility="hidden")
    assert [t["visibility"] for t in data["tests"]] == ["hidden", "hidden"]
    with pytest.raises(ValueError, match="after_due_date"):
        gradescope.results([report], 1.0, visibility="later")


# ------------------------------------------------------------------------ Gradescope, imitated
@pytest.fixture(scope="module")
def image(autograder, tmp_path_factory) -> dict:
    """setup.sh run once: the 'image' Gradescope builds, in a temp folder."""
    root = tmp_path_factory.mktemp("gradescope")
    zipfile.ZipFile(autograder).extractall(root / "autograder" / "source")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root / "autograder"),
           "PAGEDLAB_VENV": str(root / "opt" / "pagedlab"),
           "PAGEDLAB_SETUP_APT": "0", "PAGEDLAB_SETUP_TORCH": "0"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["bash", str(root / "autograder" / "source" / "setup.sh")], env=env,
                          capture_output=True, text=True, timeout=900, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return env


def run_autograder(env: dict, notebooks: list[Path]) -> tuple[int, dict]:
    root = Path(env["AUTOGRADER_ROOT"])
    shutil.rmtree(root / "submission", ignore_errors=True)
    (root / "submission").mkdir()
    for notebook in notebooks:
        shutil.copy(notebook, root / "submission" / notebook.name)
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env,
                          capture_output=True, text=True, timeout=600, cwd=root)
    results = root / "results" / "results.json"
    assert results.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads(results.read_text())


@pytest.mark.slow
def test_gradescope_gives_the_solution_full_marks(image):
    status, data = run_autograder(image, [ROOT / "solutions" / "ex01_block_manager.ipynb"])
    assert status == 0
    assert data["tests"] and data["score"] == sum(t["max_score"] for t in data["tests"])
    assert {t["visibility"] for t in data["tests"]} == {"after_due_date"}
    assert data["extra_data"]["isolation"] in ("namespace", "uid")


@pytest.mark.slow
def test_gradescope_gives_the_stub_zero(image):
    status, data = run_autograder(image, [ROOT / "exercises" / "ex01_block_manager.ipynb"])
    assert status == 0 and data["tests"] and data["score"] == 0


@pytest.mark.slow
def test_an_empty_submission_gets_a_zero_with_the_reason_and_exit_0(image):
    status, data = run_autograder(image, [])
    assert status == 0
    assert data["score"] == 0 and "no .ipynb notebooks" in data["output"]


ATTACK = '''# A hostile student who knows Gradescope's layout: rewrite the grader's reference answers and
# its scripts, and plant a full-marks results.json, before any case runs.
import glob, json, os
TAMPERED = []
for path in glob.glob({venv!r} + "/lib/python*/site-packages/pagedlab/**/*.py", recursive=True):
    try:
        with open(path, "a") as file:
            file.write("\\nraise SystemExit(0)\\n")
        TAMPERED.append(path)
    except OSError:
        pass
for path in ({root!r} + "/source/run_autograder", {root!r} + "/results/results.json"):
    try:
        with open(path, "w") as file:
            file.write(json.dumps({{"score": 100, "tests": []}}) if path.endswith("json") else "exit 0\\n")
        TAMPERED.append(path)
    except OSError:
        pass
print("tampered with", len(TAMPERED), "files")
'''


def _digests(folder: Path) -> dict:
    import hashlib
    return {path: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.py")) + sorted(folder.rglob("run_autograder"))}


@pytest.mark.slow
def test_a_submission_cannot_rewrite_the_graders_package_scripts_or_results(image, tmp_path):
    """An attack of this session: the layout is public, so a notebook tries to append to every
    module of the installed pagedlab, overwrite run_autograder and plant results.json."""
    root, venv = Path(image["AUTOGRADER_ROOT"]), Path(image["PAGEDLAB_VENV"])
    package = next(venv.glob("lib/python*/site-packages/pagedlab"))
    before = {**_digests(package), **_digests(root / "source")}
    notebook = json.loads((ROOT / "exercises" / "ex01_block_manager.ipynb").read_text())
    notebook["cells"].insert(2, {"cell_type": "code", "execution_count": None, "metadata": {},
                                 "outputs": [], "id": "attack",
                                 "source": ATTACK.format(venv=str(venv), root=str(root))})
    hostile = tmp_path / "ex01_block_manager.ipynb"
    hostile.write_text(json.dumps(notebook))
    status, data = run_autograder(image, [hostile])
    assert status == 0 and data["tests"] and data["score"] == 0
    assert "tampered with 0 files" in data["output"]   # the attack ran, and every write failed
    assert {**_digests(package), **_digests(root / "source")} == before
