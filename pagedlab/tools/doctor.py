"""``pagedlab doctor``: what this machine can run, in one table.

Python and library versions, the GPU (name and compute capability), whether the Triton kernels
will run compiled or in the Triton interpreter, and whether this is Colab.
See notebooks/00_start_here.ipynb.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def _gpu() -> tuple[str, str]:
    try:
        import torch
    except ImportError:
        return "unknown (torch is not installed)", "-"
    if not torch.cuda.is_available():
        return "none (CPU only)", "-"
    major, minor = torch.cuda.get_device_capability(0)
    note = "" if (major, minor) >= (8, 0) else " (no bf16; Triton is best effort here)"
    return torch.cuda.get_device_name(0), f"sm_{major}{minor}{note}"


def _triton() -> str:
    try:
        from ..backend import triton_status
    except ImportError as error:  # the kernel layer is missing or broken
        return f"unknown ({error})"
    status = triton_status()
    return f"{status['mode']}: {status['reason']}"


def _attention_lessons() -> str:
    """Whether lessons 06-09 can run here: torch is what they cannot do without."""
    from ..needs import have, missing_line
    if have("torch"):
        return "ready" + ("" if have("transformers") else
                          " (lesson 08 skips the Hugging Face comparison: no transformers)")
    return missing_line("torch", "lessons 06-09 and exercises 6, 7, 9")


def _pure_lessons() -> str:
    """Whether the pure lessons' own packages are here (pagedlab's core dependencies)."""
    import importlib.util
    missing = [name for name in ("numpy", "matplotlib", "ipywidgets")
               if importlib.util.find_spec(name) is None]
    if missing:
        return f"missing {', '.join(missing)}: pip install pagedlab (it brings them)"
    return "ready (pure Python)"


def report() -> list[tuple[str, str]]:
    """(what, value) rows describing this machine."""
    from .. import __version__
    gpu, capability = _gpu()
    return [
        ("pagedlab", __version__),
        ("python", f"{platform.python_version()} ({platform.system()} {platform.machine()})"),
        ("torch", _version("torch")),
        ("triton", _version("triton")),
        ("ipywidgets", _version("ipywidgets")),
        ("matplotlib", _version("matplotlib")),
        ("numpy", _version("numpy")),
        ("transformers", _version("transformers")),
        ("GPU", gpu),
        ("compute capability", capability),
        ("Triton kernels", _triton()),
        ("lessons 01-05", _pure_lessons()),
        ("lessons 06-09", _attention_lessons()),
        ("Colab", "yes" if in_colab() else "no"),
    ]


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagedlab doctor", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print(format_table(report()))
    return 0
