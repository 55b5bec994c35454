"""The command line: `pagedlab garage` tells the story, `pagedlab doctor` reports the machine."""
import pytest

from pagedlab import cli, garage
from pagedlab.tools.doctor import report


def test_garage_tells_every_scene(capsys):
    assert cli.main(["garage"]) == 0
    out = capsys.readouterr().out
    for scene in ["An empty garage: 20 spaces", "The quick brown fox", "Hello World",
                  "Generation step 1", "Generation step 2", "Car 1 is done and leaves",
                  "A 10-token request arrives", "car 3 parks 10 tokens"]:
        assert scene in out


def test_garage_options_change_the_garage(capsys):
    cli.main(["garage", "--blocks", "12", "--block-size", "4", "--seed", "3"])
    out = capsys.readouterr().out
    assert "12 spaces of 4 token slots" in out


def test_garage_same_seed_same_story_other_seed_other_story():
    assert garage.story(seed=1) == garage.story(seed=1)
    assert garage.story(seed=1) != garage.story(seed=2)


def test_garage_turns_away_a_car_that_does_not_fit_without_taking_spaces():
    text = garage.story(num_blocks=6, block_size=2)
    assert "turned away, and no space was taken" in text
    assert "OutOfBlocks" in text


def test_garage_rejects_a_bad_size_with_a_usage_message(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["garage", "--blocks", "0"])
    assert info.value.code == 2
    assert "num_blocks must be >= 1" in capsys.readouterr().err


def test_doctor_reports_versions_gpu_and_triton_mode(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for row in ["python", "torch", "triton", "ipywidgets", "GPU", "Triton kernels", "Colab"]:
        assert row in out
    rows = dict(report())
    assert rows["Colab"] in ("yes", "no")


def test_doctor_without_torch_names_torch_and_the_extra(monkeypatch):
    import sys

    from pagedlab import backend
    monkeypatch.setitem(sys.modules, "torch", None)   # `pip install pagedlab`, no extra
    monkeypatch.setattr(backend, "_status", None)      # decide again, for this machine
    rows = dict(report())
    assert rows["GPU"] == "unknown (torch is not installed)"
    assert rows["Triton kernels"].startswith("missing: torch is not installed")
    assert "Triton is not installed" not in rows["Triton kernels"]
    assert rows["lessons 01-05"].startswith("ready")
    assert "PyTorch is not installed" in rows["lessons 06-09"]
    assert "pip install 'pagedlab[attention]'" in rows["lessons 06-09"]


def test_doctor_names_a_missing_package_of_the_pure_lessons(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    row = dict(report())["lessons 01-05"]
    assert row.startswith("missing matplotlib") and "pip install pagedlab" in row


def test_doctor_with_torch_says_the_attention_lessons_are_ready():
    pytest.importorskip("torch")
    assert dict(report())["lessons 06-09"].startswith("ready")


def test_unknown_command_exits_2(capsys):
    assert cli.main(["fly"]) == 2
    assert "unknown command" in capsys.readouterr().err
