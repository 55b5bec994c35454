"""Patches that let one set of kernels run on every Triton the course meets (3.6 to the newest),
and stand-ins for Triton where it is missing (macOS, Windows).

Each patch is small, says which Triton versions need it, and does nothing where it is not
needed. :mod:`pagedlab.backend` applies them when it switches to the Triton interpreter.

A notebook that writes a kernel imports ``triton`` and ``tl`` from here::

    from pagedlab.triton_compat import tl, triton

and gets Triton itself, imported after :mod:`pagedlab.backend` chose compiled or interpreted,
or, without Triton, stand-ins: ``@triton.jit`` keeps the function readable, and launching it
raises :class:`pagedlab.needs.MissingPart` (one line: Triton ships for Linux only, open the
notebook in Colab). See solutions/ex07_triton_kernel.ipynb.
"""
from __future__ import annotations

import functools
import sys


class StandInKernel:
    """What ``@triton.jit`` gives where Triton is missing: a kernel to read, not to launch."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __getitem__(self, grid):
        from .needs import MissingPart
        raise MissingPart("triton", f"launching {self.fn.__name__}")

    __call__ = __getitem__


class StandIn:
    """``triton`` or ``triton.language`` where Triton is missing: every attribute exists."""

    def __init__(self, name: str):
        self._name = name

    def jit(self, fn=None, **_options):
        return StandInKernel(fn) if fn is not None else StandInKernel

    def __getattr__(self, name: str):
        return StandIn(f"{self._name}.{name}")

    def __repr__(self) -> str:
        return f"<stand-in for {self._name}: Triton is not installed>"


def __getattr__(name: str):
    """``triton`` and ``tl``: the real modules where Triton runs, stand-ins elsewhere."""
    if name not in ("triton", "tl"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import backend  # first: it sets TRITON_INTERPRET before Triton decorates anything
    if backend.triton_status()["available"]:
        import triton
        import triton.language as tl
        return triton if name == "triton" else tl
    return StandIn("triton" if name == "triton" else "triton.language")


def reinterpret_triton_library() -> None:
    """Make the interpreter work even if ``import triton`` ran before TRITON_INTERPRET was set.

    Triton's own helpers (``tl.sum``, ``tl.zeros``, ...) are ``@triton.jit`` functions decorated
    when Triton is imported; imported in compiled mode they refuse to run in the interpreter.
    Rewrap each one as the interpreter would have. Nothing happens if Triton is not imported yet.
    """
    if "triton.language" not in sys.modules:
        return
    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
        import triton.language as tl
    except ImportError:  # another Triton layout: leave it alone
        return
    rewrapped: dict[int, object] = {}
    owners = [module for name, module in list(sys.modules.items())
              if module is not None and name.startswith("triton.language")] + [tl.core.tensor]
    for owner in owners:
        for name, value in list(vars(owner).items()):
            if isinstance(value, JITFunction):
                if id(value) not in rewrapped:
                    rewrapped[id(value)] = InterpretedFunction(value.fn)
                setattr(owner, name, rewrapped[id(value)])


def squeeze_scalar_loop_bounds() -> None:
    """Let the interpreter of Triton 3.6 and older loop to a bound computed in the kernel.

    Those interpreters hold a scalar as a 1-element array and convert it with ``int(array)``,
    which NumPy 2.4 refuses ("only 0-dimensional arrays can be converted"): every
    ``for i in range(start, end)`` whose bounds come from ``tl.program_id`` or ``tl.load`` then
    fails. Newer Triton squeezes the array first; do the same for the older ones.
    """
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "pagedlab_squeezes", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.pagedlab_squeezes = True
    interpreter._patch_lang_tensor = patch_lang_tensor
