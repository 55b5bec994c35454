"""Where kernels run: the backend decides before Triton compiles anything, and falls back loudly."""
import subprocess
import sys
import warnings

import pytest
import torch

import pagedlab as pl
from pagedlab import backend
from pagedlab.attention import random_paged_batch

HAS_TRITON = backend.triton_status()["available"]


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def test_triton_status_reports_four_fields():
    status = backend.triton_status()
    assert set(status) == {"available", "mode", "version", "reason"}
    assert status["mode"] in ("compiled", "interpreter", "missing")
    assert status["available"] == (status["mode"] != "missing")
    assert isinstance(status["reason"], str) and status["reason"].endswith(".")
    assert (status["version"] is None) == (status["mode"] == "missing")


@pytest.mark.skipif(torch.cuda.is_available() or not HAS_TRITON, reason="CPU machines with Triton")
def test_without_a_gpu_kernels_run_in_the_interpreter():
    assert backend.triton_status()["mode"] == "interpreter"
    out = run_python("import os, pagedlab.kernels.paged_attention; "
                     "print(os.environ.get('TRITON_INTERPRET'))")
    assert out.strip() == "1"


@pytest.mark.gpu
def test_with_a_gpu_kernels_are_compiled():
    assert backend.triton_status()["mode"] == "compiled"


@pytest.mark.skipif(torch.cuda.is_available() or not HAS_TRITON, reason="CPU machines with Triton")
def test_interpreter_works_even_if_triton_was_imported_first():
    out = run_python(
        "import triton, torch, pagedlab as pl\n"
        "from pagedlab.attention import random_paged_batch\n"
        "batch = random_paged_batch([3, 20], block_size=16, head_dim=32)\n"
        "out = pl.paged_attention(**batch, backend='triton')\n"
        "print(float((out - pl.paged_attention_reference(**batch)).abs().max()))")
    assert float(out) < 1e-5


def test_unknown_backend_is_a_value_error():
    batch = random_paged_batch([3], head_dim=16)
    with pytest.raises(ValueError, match="backend"):
        pl.paged_attention(**batch, backend="numpy")


def test_missing_triton_falls_back_to_torch_with_one_warning(monkeypatch):
    monkeypatch.setattr(backend, "_status", {"available": False, "mode": "missing",
                                             "version": None, "reason": "Triton is gone."})
    monkeypatch.setattr(backend, "_warned", set())
    batch = random_paged_batch([3, 9], head_dim=16)
    with pytest.warns(RuntimeWarning, match="Triton is gone"):
        out = pl.paged_attention(**batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        pl.paged_attention(**batch)
    assert torch.equal(out, pl.paged_attention_reference(**batch))


def test_forcing_triton_where_it_cannot_run_is_a_value_error(monkeypatch):
    monkeypatch.setattr(backend, "_status", {"available": False, "mode": "missing",
                                             "version": None, "reason": "Triton is gone."})
    with pytest.raises(ValueError, match="Triton is gone"):
        pl.paged_attention(**random_paged_batch([3], head_dim=16), backend="triton")


def test_cpu_tensors_on_a_gpu_machine_use_torch_with_a_warning(monkeypatch):
    monkeypatch.setattr(backend, "_status", {"available": True, "mode": "compiled",
                                             "version": "3.6.0", "reason": "A GPU."})
    monkeypatch.setattr(backend, "_warned", set())
    batch = random_paged_batch([3, 9], head_dim=16, device="cpu")
    with pytest.warns(RuntimeWarning, match="cpu"):
        out = pl.paged_attention(**batch)
    assert torch.equal(out, pl.paged_attention_reference(**batch))


def test_import_pagedlab_does_not_load_triton_or_torch():
    out = run_python("import sys, pagedlab; "
                     "print(sorted({'torch', 'triton'} & set(sys.modules)))")
    assert out.strip() == "[]"


def test_a_kernel_loop_bounded_by_a_loaded_length_runs_in_the_interpreter():
    # Triton 3.6's interpreter converts such bounds with int(1-element array), which NumPy 2.4
    # refuses; pagedlab.backend squeezes them first. Learners write exactly this loop (ex07).
    code = (
        "import pagedlab.backend, torch, triton, triton.language as tl\n"
        "@triton.jit\n"
        "def count_tiles(lens_ptr, out_ptr):\n"
        "    seq = tl.program_id(0)\n"
        "    n = tl.load(lens_ptr + seq)\n"
        "    total = 0\n"
        "    for start in range(seq * 0, n, 4):\n"
        "        total += 1\n"
        "    tl.store(out_ptr + seq, total)\n"
        "lens = torch.tensor([9, 4, 0], dtype=torch.int32)\n"
        "out = torch.zeros(3, dtype=torch.int32)\n"
        "count_tiles[(3,)](lens, out)\n"
        "print(out.tolist())\n")
    if backend.triton_status()["mode"] != "interpreter":
        pytest.skip("runs only where Triton is interpreted")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[3, 1, 0]"


# -- one fallback helper for every kernel -----------------------------------------------------


def _broken_kernel():
    raise RuntimeError("out of resources")


def test_a_kernel_failing_on_a_gpu_falls_back_to_torch_with_one_warning(monkeypatch):
    monkeypatch.setattr(backend, "_warned", set())
    monkeypatch.setattr(backend, "_failed", set())
    with pytest.warns(RuntimeWarning, match="store kernel failed.*out of resources"):
        assert backend.run_or_fall_back("store kernel", _broken_kernel, lambda: "torch",
                                        insisted=False, on_gpu=True) == "torch"
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent and skips the kernel
        assert backend.run_or_fall_back("store kernel", lambda: calls.append(1), lambda: "torch",
                                        insisted=False, on_gpu=True) == "torch"
    assert calls == []


@pytest.mark.parametrize("insisted, on_gpu", [(True, True), (False, False)])
def test_a_kernel_failure_is_raised_when_triton_was_asked_for_or_off_a_gpu(insisted, on_gpu,
                                                                          monkeypatch):
    monkeypatch.setattr(backend, "_failed", set())
    with pytest.raises(RuntimeError, match="out of resources"):
        backend.run_or_fall_back("decode kernel", _broken_kernel, lambda: "torch",
                                 insisted=insisted, on_gpu=on_gpu)


def test_a_working_kernel_is_what_runs():
    assert backend.run_or_fall_back("decode kernel", lambda: "kernel", lambda: "torch",
                                    insisted=False, on_gpu=True) == "kernel"


def test_load_kernels_exposes_decode_unified_and_store_kernels():
    if not HAS_TRITON:
        pytest.skip("needs Triton")
    kernels = backend.load_kernels()
    assert callable(kernels.paged_attention.paged_attention_decode)
    assert callable(kernels.unified_attention.unified_attention)
    assert callable(kernels.store_kv.store_kv)


def test_without_torch_the_status_blames_torch_not_triton(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as in `pip install pagedlab` (no extra)
    status = backend._decide()
    assert status["mode"] == "missing" and not status["available"]
    assert status["reason"].startswith("torch is not installed")
    assert "pip install 'pagedlab[attention]'" in status["reason"]
    assert "uses the torch reference" not in status["reason"]


def test_without_triton_on_linux_the_status_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setattr(sys, "platform", "linux")
    reason = backend._decide()["reason"]
    assert reason.startswith("Triton is not installed") and "pagedlab[attention]" in reason
    monkeypatch.setattr(sys, "platform", "darwin")
    assert "ships for Linux only" in backend._decide()["reason"]
