"""The isolation of a run: chosen, probed at start, recorded, and undone at the end."""
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from pagedlab.grading import command, isolation, learner_copy
from pagedlab.grading.sandbox import IsolationUnavailable, Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hostile_submissions import namespace_problem, python_for_others  # noqa: E402,F401

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "solutions" / "ex01_block_manager.ipynb"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as in CI")
with_bwrap = pytest.mark.skipif(namespace_problem() is not None, reason=str(namespace_problem()))


def test_isolation_none_says_loudly_that_it_is_not_isolated(tmp_path, capsys):
    status = command.main([str(SOLUTION), "--isolation", "none", "--gradescope", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert status == 0
    assert "WARNING: NOT ISOLATED" in captured.err
    assert "NOT ISOLATED" in captured.out and "(isolation: none)" in captured.out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["extra_data"] == {"isolation": "none", "isolated": False, "student": "submission"}
    assert data["output"].startswith("NOT ISOLATED") and data["score"] == 6


def test_an_unknown_isolation_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit):
        command.main([str(SOLUTION), "--isolation", "chroot"])
    assert "invalid choice: 'chroot'" in capsys.readouterr().err


@as_root
@with_bwrap
def test_a_namespace_sandbox_sees_no_reference_and_no_repository():
    with isolation.open_sandbox("namespace", [SOLUTION]) as box:
        secrets = box.secrets()
        assert learner_copy.source_folders()[""] / "blocks.py" in secrets
        assert any(p.suffix == ".ipynb" and p.parent.name == "solutions" for p in secrets)
        assert isolation.probe(box) is None


@as_root
def test_the_probe_refuses_a_boundary_that_leaks(monkeypatch, python_for_others):
    """uid isolation on a machine where a reference file stays readable to everyone (a copy
    outside the locked folders): the run refuses uid mode instead of trusting it."""
    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(folder, 0o755)
        leaked = folder / "blocks.py"
        leaked.write_text("class BlockManager: ...")
        monkeypatch.setattr(Sandbox, "secrets", lambda self: [leaked])
        with pytest.raises(IsolationUnavailable, match=f"could open {leaked}"):
            isolation.open_sandbox("uid", [])
    finally:
        shutil.rmtree(folder)


@as_root
def test_uid_mode_locks_the_reference_for_the_run_and_restores_it(tmp_path, python_for_others):
    package = learner_copy.source_folders()[""]
    notebook = tmp_path / "ex01_block_manager.ipynb"
    notebook.write_text(SOLUTION.read_text())
    os.chmod(notebook, 0o644)
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in (package, notebook)}
    with isolation.open_sandbox("uid", [notebook]) as box:
        assert box.mode == "uid"
        for path in before:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in before} == before


@as_root
def test_two_runs_at_once_never_share_a_uid():
    with Sandbox("uid", []) as first, Sandbox("uid", []) as second:
        mine = {first.allocate_uid() for _ in range(5)}
        theirs = {second.allocate_uid() for _ in range(5)}
        assert len(mine) == len(theirs) == 5 and not mine & theirs
        first.close()


def test_auto_falls_back_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr(isolation.shutil, "which", lambda name: None)   # no bubblewrap
    monkeypatch.setattr(isolation.os, "geteuid", lambda: 1000)          # not root
    with isolation.open_sandbox("auto", []) as box:
        assert box.mode == "none"
    err = capsys.readouterr().err
    assert "NOT ISOLATED" in err and "bubblewrap is not installed" in err and "needs root" in err


@as_root
@with_bwrap
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_container_without_cap_sys_admin_falls_back_to_uid_isolation(tmp_path, python_for_others):
    """Gradescope's container may forbid namespaces: auto then takes uid isolation, and says why."""
    import subprocess
    command_line = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--",
                    sys.executable, "-m", "pagedlab", "grade", str(SOLUTION),
                    "--gradescope", str(tmp_path / "r.json")]
    done = subprocess.run(command_line, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "isolation: uid (namespace: " in done.stderr and "namespace failed" in done.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["extra_data"]["isolation"] == "uid" and data["score"] == 6


@as_root
def test_two_uid_runs_at_once_leave_the_original_modes(tmp_path):
    """The second run must not take the first run's locked mode for the original."""
    package = learner_copy.source_folders()[""]
    original = stat.S_IMODE(package.stat().st_mode)
    first = Sandbox("uid", [])
    second = Sandbox("uid", [])
    first.close()
    assert stat.S_IMODE(package.stat().st_mode) & 0o077 == 0      # the second still runs
    second.close()
    assert stat.S_IMODE(package.stat().st_mode) == original


@as_root
def test_a_run_that_died_gives_its_paths_back_to_the_next_one(tmp_path):
    import subprocess
    from pagedlab.grading import locks
    folder = tmp_path / "private"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "locked-paths.json").write_text(json.dumps(
        {str(folder): {"mode": 0o755, "holders": [dead.pid]}}))
    os.chmod(folder, 0o700)                   # as the dead run left it
    locks.Registry(tmp_path).lock([])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


@as_root
@with_bwrap
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_an_instructor_without_root_still_gets_namespaces(python_for_others):
    """Not root, but bubblewrap and user namespaces: each submission still runs in a view
    without the reference (all as the instructor's own uid, so processes die with the
    namespace rather than by uid)."""
    import subprocess
    from test_hostile_submissions import BLOCKS, READ_REFERENCE, ex01
    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(folder, 0o755)
        (folder / "ex01_block_manager.ipynb").write_text(json.dumps(ex01(READ_REFERENCE.format(blocks=str(BLOCKS)))))
        shutil.copy(SOLUTION, folder / "ex01_solved.ipynb")
        for path in folder.iterdir():
            os.chmod(path, 0o644)
        done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--",
                               "env", "HOME=/tmp", sys.executable, "-m", "pagedlab", "grade", str(folder)],
                              capture_output=True, text=True, timeout=300, cwd="/tmp")
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    # 6/12: the attack would have handed in the real BlockManager and scored 6 more
    assert "total: 6/12 in 2 notebook(s)" in done.stdout and "(isolation: namespace)" in done.stdout
