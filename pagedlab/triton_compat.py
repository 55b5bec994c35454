"""Patches that let one set of kernels run on every Triton the course meets (3.6 to the newest).

Each patch is small, says which Triton versions need it, and does nothing where it is not
needed. :mod:`pagedlab.backend` applies them when it switches to the Triton interpreter.
"""
from __future__ import annotations

import sys


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
