"""Where the Triton kernels run: compiled on a CUDA GPU, in the Triton interpreter, or not at all.

Triton reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates a kernel, so the choice must be
made *before* a kernel module is imported. Importing this module makes it: with no CUDA GPU it
sets ``TRITON_INTERPRET=1`` and the same kernels then run on the CPU, slowly. Every
kernel file imports this module first, so any way of reaching a kernel is safe.

See notebooks/00_start_here.ipynb (the doctor table) and notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types
import warnings

from . import triton_compat

BACKENDS = ("triton", "torch")  # what `backend=` accepts; None means "choose for me"

_status: dict | None = None
_kernels: types.SimpleNamespace | None = None
_warned: set[str] = set()
_failed: set[str] = set()  # kernels that failed on this GPU: torch serves them from now on


def _cuda_device() -> tuple[str, tuple[int, int]] | None:
    """(name, compute capability) of the current CUDA GPU, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    return torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)


def _decide() -> dict:
    """Look at the machine once and set TRITON_INTERPRET to match."""
    if importlib.util.find_spec("torch") is None:  # the kernels take torch tensors
        return {"available": False, "mode": "missing", "version": None,
                "reason": "torch is not installed, so neither the Triton kernels nor the torch "
                          "reference can run (lessons 01-05 need neither): "
                          "pip install 'pagedlab[attention]'."}
    if importlib.util.find_spec("triton") is None:
        where = ("pip install 'pagedlab[attention]' brings it" if sys.platform.startswith("linux")
                 else "it ships for Linux only")
        return {"available": False, "mode": "missing", "version": None,
                "reason": f"Triton is not installed ({where}), so pagedlab uses "
                          f"the torch reference for attention."}
    version = importlib.metadata.version("triton")
    gpu = _cuda_device()
    if gpu is None:
        os.environ["TRITON_INTERPRET"] = "1"
        triton_compat.reinterpret_triton_library()
        triton_compat.squeeze_scalar_loop_bounds()
        return {"available": True, "mode": "interpreter", "version": version,
                "reason": "No CUDA GPU found, so the Triton kernels run in the Triton interpreter "
                          "on the CPU (slow: keep shapes small; matrix products are done in fp32 there)."}
    name, (major, minor) = gpu
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return {"available": True, "mode": "interpreter", "version": version,
                "reason": f"TRITON_INTERPRET=1 is set, so the Triton kernels run in the "
                          f"interpreter even though {name} (sm_{major}{minor}) is present."}
    caveat = ("" if major >= 8 else
              f"; Triton support for sm_{major}{minor} is best effort, so a kernel that fails "
              f"falls back to the torch reference with a warning")
    return {"available": True, "mode": "compiled", "version": version,
            "reason": f"The Triton kernels are compiled for {name} (sm_{major}{minor}){caveat}."}


def triton_status() -> dict:
    """How Triton runs here: ``available``, ``mode`` ("compiled" | "interpreter" | "missing"),
    ``version`` (str or None) and ``reason`` (one sentence for a human). Decided once per process.

    See notebooks/00_start_here.ipynb.
    """
    global _status
    if _status is None:
        _status = _decide()
    return dict(_status)


def load_kernels() -> types.SimpleNamespace:
    """Import the kernel modules (after :func:`triton_status` has set the mode).

    Returns a namespace with ``paged_attention`` (decode), ``unified_attention`` (any step) and
    ``store_kv``; raises ``RuntimeError`` with
    the reason when Triton is missing or fails to import.
    """
    global _kernels, _status
    if _kernels is None:
        status = triton_status()
        if not status["available"]:
            raise RuntimeError(status["reason"])
        try:
            _kernels = types.SimpleNamespace(
                paged_attention=importlib.import_module("pagedlab.kernels.paged_attention"),
                unified_attention=importlib.import_module("pagedlab.kernels.unified_attention"),
                store_kv=importlib.import_module("pagedlab.kernels.store_kv"),
            )
        except ImportError as error:  # e.g. a Triton wheel that does not match this machine
            _status = {"available": False, "mode": "missing", "version": status["version"],
                       "reason": f"Triton is installed but failed to import ({error}), so "
                                 f"pagedlab uses the torch reference for attention."}
            raise RuntimeError(_status["reason"]) from error
    return _kernels


def warn_once(key: str, message: str) -> None:
    """Warn about a fallback the first time it happens in this process, then stay quiet."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def run_or_fall_back(name: str, kernel_call, torch_call, *, insisted: bool, on_gpu: bool):
    """``kernel_call()``, or ``torch_call()`` where a Triton kernel fails on a GPU.

    Triton's support for some GPUs (a T4, sm_75) is best effort, so a kernel that fails there
    (compile error, out of resources) is replaced by torch for the rest of the process, with one
    warning naming ``name``. Nothing is caught when the caller ``insisted`` on
    ``backend="triton"`` or off a GPU (the interpreter): there a failure is a bug to see.
    """
    if name in _failed and not insisted:
        return torch_call()
    try:
        return kernel_call()
    except Exception as error:  # noqa: BLE001  (whatever Triton raises for this GPU)
        if insisted or not on_gpu:
            raise
        _failed.add(name)
        warn_once(f"failed:{name}", f"pagedlab: the Triton {name} failed on this GPU ({error}); "
                                    f"using torch for it from now on")
        return torch_call()


def choose(backend: str | None, device) -> str:
    """Resolve ``backend=`` ("triton", "torch" or None) for tensors on ``device``.

    None picks Triton where it can run on that device and the torch reference (with one warning)
    where it cannot. An explicit "triton" that cannot run raises ``ValueError`` saying why.
    """
    from .errors import InvalidConfig, check_choice

    check_choice("backend (None: choose automatically)", backend, (None, *BACKENDS))
    if backend == "torch":
        return "torch"
    status = triton_status()
    problem = None
    if not status["available"]:
        problem = status["reason"]
    elif status["mode"] == "compiled" and device.type != "cuda":
        problem = (f"The tensors are on {device.type} but Triton is compiled for the GPU here, "
                   f"so pagedlab uses the torch reference (move them with .cuda() to use the "
                   f"kernel, or pass backend='torch' to silence this).")
    if problem is None:
        return "triton"
    if backend == "triton":
        raise InvalidConfig(f"backend='triton' cannot run here. {problem}")
    warn_once(f"choose:{problem}", f"pagedlab: {problem}")
    return "torch"


# Decide on import, so that whoever imports a kernel module next gets the right mode.
triton_status()
