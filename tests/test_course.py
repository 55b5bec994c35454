"""The course's one setting: set-repo rewrites every badge and install cell, and only those."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pagedlab import course

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path):
    """A copy of the parts of the repository that set-repo touches."""
    (tmp_path / "pagedlab" / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "pagedlab" / "tools" / "course.py", tmp_path / "pagedlab" / "tools" / "course.py")
    for folder in course.NOTEBOOK_FOLDERS:
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "exercises").mkdir(exist_ok=True)
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": [course.badge_markdown("exercises/ex.ipynb")]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": course.install_cell_source()},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "exercises" / "ex99_extra.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    return tmp_path


def notebooks(root):
    return sorted(p for folder in course.NOTEBOOK_FOLDERS for p in (root / folder).glob("*.ipynb"))


def test_badge_and_install_cell_come_from_the_setting():
    badge = course.badge_markdown("notebooks/01_parking_garage.ipynb", "me/course", "v9")
    assert "colab.research.google.com/github/me/course/blob/v9/notebooks/01_parking_garage.ipynb" in badge
    cell = course.install_cell_source("me/course", "v9")
    assert "git+https://github.com/me/course@v9" in cell and "--no-deps" in cell
    assert "torch" not in cell and "ipywidgets" not in cell


def test_install_cell_does_nothing_outside_colab():
    exec(compile(course.install_cell_source(), "<install cell>", "exec"), {})


def test_every_lesson_has_a_badge_and_install_cell_first():
    lessons = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert lessons
    for path in lessons:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert course.colab_url(f"notebooks/{path.name}") in "".join(cells[0]["source"]), path.name
        assert "".join(code[0]["source"]) == course.install_cell_source(), path.name


def test_set_repo_rewrites_every_notebook_and_the_setting(checkout):
    changed = course.set_repo(checkout, "someone/fork", "main")
    assert set(notebooks(checkout)) <= set(changed)
    for path in notebooks(checkout):
        text = path.read_text()
        assert course.REPOSITORY not in text
        assert "github/someone/fork/blob/main/" in text and "github.com/someone/fork@main" in text
    setting = (checkout / "pagedlab" / "tools" / "course.py").read_text()
    assert 'REPOSITORY = "someone/fork"' in setting and 'REF = "main"' in setting


def test_set_repo_is_idempotent(checkout):
    course.set_repo(checkout, "someone/fork", "v2.0")
    snapshot = {p: p.read_bytes() for p in notebooks(checkout)}
    assert course.set_repo(checkout, "someone/fork", "v2.0") == []
    assert snapshot == {p: p.read_bytes() for p in notebooks(checkout)}


def test_set_repo_round_trip_restores_the_files_byte_for_byte(checkout):
    original = {p: p.read_bytes() for p in [*notebooks(checkout), checkout / "pagedlab" / "tools" / "course.py"]}
    course.set_repo(checkout, "someone/fork", "feature/x")
    course.set_repo(checkout, course.REPOSITORY, course.REF)
    assert original == {p: p.read_bytes() for p in original}


def test_set_repo_rejects_a_malformed_repository(checkout):
    with pytest.raises(ValueError, match="OWNER/NAME"):
        course.set_repo(checkout, "not a repo")


def test_set_repo_command_line(checkout):
    result = subprocess.run([sys.executable, "-m", "pagedlab.tools.course", "set-repo", "cli/demo",
                             "--root", str(checkout)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"cli/demo@v{course.__version__}" in result.stdout
    assert all("github.com/cli/demo@v" in p.read_text() for p in notebooks(checkout))


def test_make_exercises_is_routed_to_the_generator_with_its_arguments(monkeypatch):
    import types
    seen = []
    fake = types.ModuleType("pagedlab.tools.exercises")
    fake.main = lambda argv, root: seen.append((argv, root)) or 0
    monkeypatch.setitem(sys.modules, "pagedlab.tools.exercises", fake)
    assert course.main(["make-exercises", "--check", "--solutions", "s"]) == 0
    assert seen == [(["--check", "--solutions", "s"], course.repository_root())]
