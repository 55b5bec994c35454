"""``make gpu-check`` cannot trip on a GPU machine for a reason a CPU could have found.

The dry run (``DRY_RUN=1``) runs every line of benchmarks/gpu_check.sh with CUDA faked and the
kernel launches stubbed (pagedlab.tools.dry_run): the dependency check, the install, the doctor,
the benchmark at every shape with its memory sizing, its JSON and plot, the collection of the GPU
tests, and the engine benchmark's --gpu path.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done, out


@pytest.mark.slow
def test_dry_run_of_the_gpu_check_passes(dry_run):
    done, _ = dry_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for step in ("bench", "gpu_tests", "bench_engine"):
        assert f"gpu-check: {step} took" in done.stdout
    assert "FAILED" not in done.stdout


@pytest.mark.slow
def test_dry_run_writes_what_a_gpu_run_writes(dry_run):
    _, out = dry_run
    (bench,) = out.glob("bench_tesla_t4.json")
    report = json.loads(bench.read_text())
    assert report["targets"] and "error" not in report["targets"]  # the target shape ran first
    assert report["results"][0]["method"] == "paged kernel"
    assert any(row.get("error", "").startswith("skipped: needs") for row in report["results"])
    assert (out / "bench_tesla_t4.png").exists() and (out / "doctor.txt").exists()
    engine = json.loads((out / "bench_engine_gpu.json").read_text())
    assert engine["engine_tokens_per_s"] > 0


@pytest.mark.slow
def test_dry_run_counts_the_compiles_each_step_needs(dry_run):
    _, out = dry_run
    counts = json.loads((out / "gpu_check_compiles.json").read_text())
    assert counts["bench"] >= 2  # the decode kernel and its split-K reduce, at least


def test_the_gpu_check_says_what_is_missing(tmp_path):
    # A Python without the packages: the script stops before doing anything and names them.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = - ]; then echo 'pytest transformers'; exit 0; fi\n"
                    "exit 1\n")
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHON": str(fake)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "missing: pytest transformers" in done.stdout
