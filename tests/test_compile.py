"""Every kernel configuration the package launches compiles for a T4, an A100 and an H100.

No GPU needed: Triton compiles ahead of time (its wheel ships ptxas and cuobjdump).
``pagedlab.tools.compile_report`` records what the package's own launch code would launch on each
GPU, compiles it, and reads registers, spills and shared memory from the binary. Here it runs the
covering set (``PAGEDLAB_COMPILE_FULL=1`` for every configuration); ``make gpu-compat`` runs this
file again under Triton 3.6, Colab's. The table lands in tests/artifacts/compile_table.md.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

from pagedlab.kernels import launch_config  # noqa: E402
from pagedlab.tools import compile_report, fake_gpu  # noqa: E402

TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
ARTIFACTS = Path(__file__).parent / "artifacts"
KERNELS = ("paged_decode_kernel", "reduce_splits_kernel", "store_kv_kernel",
           "unified_attention_kernel", "merge_splits_kernel")


@pytest.fixture(scope="module")
def report():
    if not (TOOLS / "cuobjdump").exists() or not (TOOLS / "ptxas").exists():
        pytest.skip(f"this Triton wheel has no ptxas/cuobjdump in {TOOLS}")
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"compile-triton-{triton.__version__}"
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "pagedlab.tools.compile_report",
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    print(done.stdout)  # the table, for `pytest -s`
    assert (out / "compile_table.json").exists(), done.stderr[-3000:]
    found = json.loads((out / "compile_table.json").read_text())
    found["returncode"], found["stderr"] = done.returncode, done.stderr
    return found


@pytest.mark.slow
def test_every_kernel_compiles_for_every_target(report):
    compiled = {(row["kernel"], row["arch"]) for row in report["rows"] if "registers" in row}
    missing = [(kernel, arch) for kernel in KERNELS for arch in fake_gpu.GPUS
               if (kernel, arch) not in compiled]
    assert not missing, f"never compiled: {missing}"
    errors = [row for row in report["rows"] if "registers" not in row]
    assert not errors, errors[0]["error"]


@pytest.mark.slow
def test_no_configuration_spills_registers(report):
    spills = [compile_report.failures({"rows": [row]})[0] for row in report["rows"]
              if row.get("stack") or row.get("local")]
    assert not spills, "\n".join(spills)


@pytest.mark.slow
def test_no_configuration_needs_more_shared_memory_than_the_gpu_has(report):
    over = [row for row in report["rows"] if row.get("shared", 0) > row.get("shared_limit", 1e12)]
    assert not over, compile_report.failures({"rows": over})


@pytest.mark.slow
def test_the_report_passes_as_a_whole(report):
    # Also covers what the rows above do not: the occupancy split-K assumes is really there.
    assert report["returncode"] == 0, report["stderr"][-3000:]


@pytest.mark.slow
def test_the_lesson_sees_the_decode_loop_on_a_t4_and_an_h100(report):
    shown = {row["arch"]: row["inner_loop"] for row in report["rows"] if "inner_loop" in row}
    assert {"sm_75", "sm_90"} <= set(shown)
    assert shown["sm_90"]["mix"].get("tensor-core matmul", 0) > 0  # HMMA on an H100


# -- the launch parameters themselves (no compiling) ---------------------------------------------


def test_recording_sees_every_workload_of_every_kernel_kind():
    kinds = {w["kind"] for w in compile_report.workloads()}
    assert kinds == {"decode", "step", "store"}


@pytest.mark.parametrize("arch", list(fake_gpu.GPUS))
def test_decode_tile_is_small_enough_not_to_spill(arch):
    capability = fake_gpu.GPUS[arch].capability
    for head_dim in (64, 128, 256):
        config = launch_config.decode_config(capability, torch.float16, head_dim, 4, 16)
        assert config.tile == 16  # 64 spilled on a T4 at head dim 128


def test_without_tensor_cores_one_or_two_query_heads_skip_the_padded_dot():
    t4 = launch_config.decode_config((7, 5), torch.float16, 64, 1, 16)
    assert not t4.use_dot and t4.head_rows == 1
    fp32 = launch_config.decode_config((9, 0), torch.float32, 128, 2, 16)
    assert not fp32.use_dot and fp32.head_rows == 2
    h100 = launch_config.decode_config((9, 0), torch.float16, 64, 1, 16)
    assert h100.use_dot and h100.head_rows == 16  # a tensor-core dot, even mostly empty


def test_bf16_is_offered_only_from_sm_80():
    assert torch.bfloat16 not in launch_config.supported_dtypes((7, 5))
    assert torch.bfloat16 in launch_config.supported_dtypes((8, 0))


def test_split_k_aims_at_the_programs_that_fit_per_sm():
    # 8 programs on 132 SMs holding 4 each: about 528 wanted, capped by the context.
    assert launch_config.choose_num_splits(1, 8, 65536, 132, programs_per_sm=4) == 64
    assert launch_config.choose_num_splits(1, 8, 16384, 132, programs_per_sm=4) == 32
    assert launch_config.choose_num_splits(2, 8, 65536, 132, programs_per_sm=2) == 17
    assert launch_config.choose_num_splits(64, 8, 4096, 132, programs_per_sm=8) == 1
