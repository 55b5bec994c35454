"""The course's one setting: set-source rewrites every badge and install cell, and only those.

What the install cell does when it runs in Colab: tests/test_colab_install.py."""
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
    """A copy of the parts of the repository that set-source touches, plus a notebook whose
    install cell is an old one (as in a checkout made before the cell changed)."""
    (tmp_path / "pagedlab" / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "pagedlab" / "tools" / "course.py", tmp_path / "pagedlab" / "tools" / "course.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for folder in course.NOTEBOOK_FOLDERS:
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "exercises").mkdir(exist_ok=True)
    old_cell = (f"{course.INSTALL_MARKER}: in Colab it installs the course.\nimport sys\n"
                "print('pagedlab @ git+https://github.com/pagedlab-course/pagedlab@v0.1.0')")
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": [course.badge_markdown("exercises/ex.ipynb")]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": old_cell.splitlines(keepends=True)},
        {"cell_type": "markdown", "metadata": {},
         "source": "pip install 'pagedlab @ git+https://github.com/pagedlab-course/pagedlab@v0.1.0'"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "exercises" / "ex99_extra.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    return tmp_path


def notebooks(root):
    return sorted(p for folder in course.NOTEBOOK_FOLDERS for p in (root / folder).glob("*.ipynb"))


def install_cells(path):
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells
            if c["cell_type"] == "code" and "".join(c["source"]).startswith(course.INSTALL_MARKER)]


def test_badge_and_install_cell_come_from_the_setting():
    badge = course.badge_markdown("notebooks/01_parking_garage.ipynb", "me/course", "v9")
    assert "colab.research.google.com/github/me/course/blob/v9/notebooks/01_parking_garage.ipynb" in badge
    cell = course.install_cell_source(course.github_source("me/course", "v9"), "me/course")
    assert "REPO_URL, REF = 'https://github.com/me/course.git', 'v9'" in cell
    assert "COURSE = 'https://github.com/me/course'" in cell
    default = course.install_cell_source()
    assert f"REPO_URL, REF = {course.SOURCE!r}, {course.REF!r}" in default


def test_the_setting_as_written_is_the_setting_in_use():
    setting = course.read_setting(ROOT / "pagedlab" / "tools" / "course.py")
    assert setting == course.Setting(course.REPOSITORY, course.REF, course.current_source())
    assert course.install_requirement() == course.current_source().requirement()


def test_install_url_is_still_the_github_pip_address():  # the Gradescope and otter images use it
    assert course.install_url("me/course", "v9") == "git+https://github.com/me/course@v9"


def test_install_cell_does_nothing_outside_colab():
    namespace = {}
    exec(compile(course.install_cell_source(), "<install cell>", "exec"), namespace)
    assert "PAGEDLAB" not in namespace  # it stopped at the Colab test


def test_every_lesson_has_a_badge_and_install_cell_first():
    lessons = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert lessons
    for path in lessons:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert course.colab_url(f"notebooks/{path.name}") in "".join(cells[0]["source"]), path.name
        assert "".join(code[0]["source"]) == course.install_cell_source(), (
            f"{path.name}: stale install cell; run `python -m pagedlab.tools.course refresh`")


def test_set_source_git_rewrites_every_notebook_and_the_setting(checkout):
    changed = course.set_repo(checkout, "someone/fork", "main")
    assert set(notebooks(checkout)) <= set(changed)
    expected = course.install_cell_source(course.github_source("someone/fork", "main"), "someone/fork",
                                          light=course.light_dependencies(checkout))
    for path in notebooks(checkout):
        text = path.read_text()
        assert "pagedlab-course/pagedlab" not in text, path.name
        assert "github/someone/fork/blob/main/" in text
        assert install_cells(path) == [expected], path.name
    assert "git+https://github.com/someone/fork@main'" in (checkout / "exercises" / "ex99_extra.ipynb").read_text()
    setting = (checkout / "pagedlab" / "tools" / "course.py").read_text()
    assert 'REPOSITORY = "someone/fork"' in setting and 'REF = "main"' in setting
    assert 'SOURCE_KIND = "git"' in setting and 'SOURCE = "https://github.com/someone/fork.git"' in setting


@pytest.mark.parametrize("source", [
    course.Source("wheel", "https://example.org/dist/pagedlab-0.2.0-py3-none-any.whl"),
    course.Source("pypi", "0.2.0")], ids=lambda s: s.kind)
def test_set_source_wheel_or_pypi_keeps_the_badges_on_github(checkout, source):
    course.set_source(checkout, course.Setting("someone/fork", "v0.2.0", source))
    expected = course.install_cell_source(source, "someone/fork", light=course.light_dependencies(checkout))
    for path in notebooks(checkout):
        assert "github/someone/fork/blob/v0.2.0/" in path.read_text()
        assert install_cells(path) == [expected], path.name
    assert course.read_setting(checkout / "pagedlab" / "tools" / "course.py") == \
        course.Setting("someone/fork", "v0.2.0", source)


def test_set_source_is_idempotent(checkout):
    course.set_repo(checkout, "someone/fork", "v2.0")
    snapshot = {p: p.read_bytes() for p in notebooks(checkout)}
    assert course.set_repo(checkout, "someone/fork", "v2.0") == []
    assert snapshot == {p: p.read_bytes() for p in notebooks(checkout)}


def test_set_source_round_trip_restores_the_files_byte_for_byte(checkout):
    setting_file = checkout / "pagedlab" / "tools" / "course.py"
    course.set_source(checkout, course.read_setting(setting_file))  # the cells as generated now
    original = {p: p.read_bytes() for p in [*notebooks(checkout), setting_file]}
    course.set_repo(checkout, "someone/fork", "feature/x")
    course.set_source(checkout, course.Setting("someone/fork", "v1", course.Source("pypi", "1.0")))
    course.set_repo(checkout, course.REPOSITORY, course.REF)
    assert original == {p: p.read_bytes() for p in original}


def test_set_repo_rejects_a_malformed_repository(checkout):
    with pytest.raises(ValueError, match="OWNER/NAME"):
        course.set_repo(checkout, "not a repo")


def test_a_course_file_without_its_setting_lines_is_refused(checkout):
    setting_file = checkout / "pagedlab" / "tools" / "course.py"
    setting_file.write_text(setting_file.read_text().replace('SOURCE_KIND = "git"', "SOURCE_KIND = 'git'"))
    with pytest.raises(ValueError, match='no line SOURCE_KIND = "..."'):
        course.set_repo(checkout, "someone/fork")


def run_course(*args):
    return subprocess.run([sys.executable, "-m", "pagedlab.tools.course", *args],
                          capture_output=True, text=True)


def test_set_repo_command_line(checkout):
    result = run_course("set-repo", "cli/demo", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    assert f"badges open cli/demo@v{course.__version__}" in result.stdout
    assert all("REPO_URL, REF = 'https://github.com/cli/demo.git', 'v" in p.read_text()
               for p in notebooks(checkout))


def test_set_source_command_line_for_each_kind(checkout):
    setting_file = checkout / "pagedlab" / "tools" / "course.py"
    result = run_course("set-source", "--git", "cli/demo", "--ref", "v3", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    assert course.read_setting(setting_file) == course.Setting("cli/demo", "v3", course.github_source("cli/demo", "v3"))
    wheel = "https://example.org/pagedlab-3.0-py3-none-any.whl"
    result = run_course("set-source", "--wheel", wheel, "--ref", "v3", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    assert f"install cells install pagedlab @ {wheel}" in result.stdout
    assert course.read_setting(setting_file) == course.Setting("cli/demo", "v3", course.Source("wheel", wheel))
    result = run_course("set-source", "--pypi", "3.0", "--repo", "other/place", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    assert course.read_setting(setting_file) == course.Setting(
        "other/place", f"v{course.__version__}", course.Source("pypi", "3.0"))
    assert all("VERSION, INDEX = '3.0'" in p.read_text() for p in notebooks(checkout))


@pytest.mark.parametrize("args, problem", [
    (["--wheel", "pagedlab.whl"], "http(s):// or file:// URL"),
    (["--pypi", "newest"], "a version like 0.1.0"),
    (["--git", "cli/demo", "--repo", "other/place"], "--repo is for --wheel and --pypi"),
    (["--git", "cli/demo", "--pypi", "1.0"], "not allowed with argument"),
])
def test_set_source_command_line_says_what_is_wrong(checkout, args, problem):
    before = {p: p.read_bytes() for p in notebooks(checkout)}
    result = run_course("set-source", *args, "--root", str(checkout))
    assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr
    assert before == {p: p.read_bytes() for p in notebooks(checkout)}


def test_refresh_regenerates_stale_install_cells_from_the_setting(checkout):
    result = run_course("refresh", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    expected = course.install_cell_source(light=course.light_dependencies(checkout))
    assert all(install_cells(p) == [expected] for p in notebooks(checkout))
    assert "pip install 'pagedlab @ git+https://github.com/pagedlab-course/pagedlab@v0.1.0'" in \
        (checkout / "exercises" / "ex99_extra.ipynb").read_text()  # prose keeps its address


def test_make_exercises_is_routed_to_the_generator_with_its_arguments(monkeypatch):
    import types
    seen = []
    fake = types.ModuleType("pagedlab.tools.exercises")
    fake.main = lambda argv, root: seen.append((argv, root)) or 0
    monkeypatch.setitem(sys.modules, "pagedlab.tools.exercises", fake)
    assert course.main(["make-exercises", "--check", "--solutions", "s"]) == 0
    assert seen == [(["--check", "--solutions", "s"], course.repository_root())]


def test_show_prints_where_badges_and_install_cells_point():
    result = run_course("show")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"badges open: {course.REPOSITORY}@{course.REF}",
                                          f"install cells: {course.install_requirement()}"]


def test_without_a_toml_reader_the_light_dependencies_come_from_the_installed_metadata(monkeypatch):
    """Python 3.10 has no tomllib, and tomli is only a dev tool: set-source must still work."""
    from_pyproject = course.light_dependencies()
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    from_metadata = course.light_dependencies()
    assert from_metadata.keys() == from_pyproject.keys() and "numpy" in from_metadata
