"""Seeing whether a learner's own Triton kernel ran: find it by name, count its launches.

ex07 asks for a ``@triton.jit`` kernel *and* a host wrapper that launches it; judging only the
wrapper's output would let a plain-torch wrapper pass. The driver finds the kernel the wrapper
refers to (the name in the wrapper's globals, which are the notebook's), and counts its launches
and the buffers they were handed while one case runs, by wrapping the kernel's ``run`` (what
``kernel[grid](...)`` and ``triton.autotune`` call) on that one object, for that one case. The
wrapper's result must be one of those buffers. It only *reports* what it saw
(:func:`kernel_report`); the grader's ``compare`` judges it. See pagedlab/grading/ex07.py.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def _globals_of(function: Any) -> dict:
    """The namespace a learner's function looks its names up in (the notebook's)."""
    for candidate in (function, getattr(function, "func", None),           # functools.partial
                      getattr(getattr(function, "__call__", None), "__func__", None)):
        namespace = getattr(candidate, "__globals__", None)
        if isinstance(namespace, dict):
            return namespace
    return {}


def _kernel_interface():
    try:
        from triton.runtime.jit import KernelInterface
    except ImportError:     # no Triton here: nothing can be a Triton kernel
        return None
    return KernelInterface


def innermost(kernel: Any) -> Any:
    """The JIT (or interpreted) function under ``triton.autotune``/``heuristics`` wrappers."""
    interface = _kernel_interface()
    seen = 0
    while interface is not None and isinstance(getattr(kernel, "fn", None), interface) and seen < 8:
        kernel, seen = kernel.fn, seen + 1
    return kernel


def find_kernel(function: Any, name: str) -> tuple[str, Any]:
    """(state, kernel) of the kernel ``function`` refers to by ``name``. state: "ok",
    "missing", "not a kernel: <type>" or "pagedlab's: <file>"."""
    namespace = _globals_of(function)
    if name not in namespace:
        return "missing", None
    kernel = namespace[name]
    interface = _kernel_interface()
    if interface is None or not isinstance(kernel, interface):
        return f"not a kernel: {type(kernel).__name__}", None
    code = getattr(getattr(innermost(kernel), "fn", None), "__code__", None)
    if code is None:
        return f"not a kernel: {type(kernel).__name__}", None
    from .reuse import pagedlab_dirs
    path = os.path.realpath(code.co_filename)
    for folder in pagedlab_dirs():
        if path.startswith(folder + os.sep):
            return f"pagedlab's: {os.path.relpath(path, os.path.dirname(folder))}", None
    return "ok", kernel


def _storage(value: Any) -> int | None:
    """Where a torch tensor's memory starts (views of one buffer share it), else None."""
    try:
        import torch
        if isinstance(value, torch.Tensor):
            return int(value.untyped_storage().data_ptr())
    except Exception:  # noqa: BLE001 - an odd tensor subclass: not one the kernel could write
        pass
    return None


class Launches:
    """What one kernel did during one case: how often it was launched, on which buffers."""

    def __init__(self) -> None:
        self.count = 0
        self.storages: set[int] = set()

    def saw(self, args: tuple, kwargs: dict) -> None:
        self.count += 1
        for value in (*args, *kwargs.values()):
            where = _storage(value)
            if where is not None:
                self.storages.add(where)

    def wrote(self, output: Any) -> bool:
        """Whether ``output`` lives in a buffer the kernel was handed at a launch."""
        where = _storage(output)
        return where is not None and where in self.storages


@contextmanager
def count_launches(kernel: Any) -> Iterator[Launches]:
    """Note the kernel's launches (not warmups) while the block runs, on that one object."""
    launches = Launches()
    if kernel is None:
        yield launches
        return
    target = innermost(kernel)
    original = target.run            # bound method (or whatever the object holds), unwrapped
    own = vars(target)
    had, previous = "run" in own, own.get("run")

    def run(*args, **kwargs):
        if not kwargs.get("warmup", False):
            launches.saw(args, kwargs)
        return original(*args, **kwargs)

    object.__setattr__(target, "run", run)
    try:
        yield launches
    finally:
        if had:
            object.__setattr__(target, "run", previous)
        else:
            try:
                object.__delattr__(target, "run")
            except AttributeError:   # the learner removed it already
                pass


def kernel_report(state: str, launches: Launches, output: Any) -> dict:
    """What the driver reports about the kernel, for ``compare`` to judge: whether it was found
    (``state``), how often it was launched, and whether the returned tensor is a buffer it was
    handed (so it is the kernel that wrote the answer)."""
    return {"state": state, "launches": launches.count, "wrote_output": launches.wrote(output)}
