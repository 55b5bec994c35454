"""ex07, read before anything runs: the kernel the wrapper launches, as the only code to run.

The grader never runs the notebook for ex07. It finds, in the cells' syntax trees, the
``@triton.jit`` function ``my_paged_decode_kernel`` and checks that ``my_paged_attention``
launches it (``my_paged_decode_kernel[grid](...)``); the sandbox then defines only that
function, and the driver launches it on buffers it allocated (:func:`.drivers.run_kernel`).
The kernel's body may use its own names, ``tl``, ``triton`` and a few builtins, as compiled
Triton allows; anything else (imports, other globals, dunder attributes) is refused, so the
body cannot reach torch or the rest of the notebook when the Triton interpreter runs it as
Python.
"""
from __future__ import annotations

import ast

from .judge import NotSolved

KERNEL, WRAPPER = "my_paged_decode_kernel", "my_paged_attention"
BUILTINS = {"range", "float", "int", "min", "max", "abs", "bool", "len", "print",
            "NotImplementedError"}     # the exercise's stub raises it
REFUSED = (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Lambda, ast.ClassDef,
           ast.AsyncFunctionDef, ast.With, ast.AsyncWith, ast.Try, ast.Yield, ast.YieldFrom,
           ast.Await, ast.Delete)
PREAMBLE = "from pagedlab import backend\nimport triton\nimport triton.language as tl\n"


def _is_triton(node: ast.expr) -> bool:
    """``triton.jit``, ``jit``, ``triton.autotune(...)``, ``triton.heuristics(...)``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id == "jit"
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "triton" and node.attr in ("jit", "autotune", "heuristics"))


def _launches(function: ast.FunctionDef, kernel: str = KERNEL) -> bool:
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)
               and isinstance(node.func.value, ast.Name) and node.func.value.id == kernel
               for node in ast.walk(function))


def body_problem(kernel: ast.FunctionDef) -> str | None:
    """Why the kernel's body is not plain Triton, or None."""
    arguments = kernel.args
    own = {a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)}
    own |= {node.id for node in ast.walk(kernel) if isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Store)}
    allowed = own | BUILTINS | {"tl", "triton"}
    # After a raise in the body itself (an exercise's stub) nothing runs: names there are not
    # looked up, so a stub whose later code uses names its missing part defines is not refused.
    raises = [i for i, statement in enumerate(kernel.body) if isinstance(statement, ast.Raise)]
    dead = {id(node) for statement in kernel.body[raises[0] + 1:] for node in ast.walk(statement)} \
        if raises else set()
    for node in ast.walk(kernel):
        if node is not kernel and isinstance(node, (*REFUSED, ast.FunctionDef)):
            return f"{type(node).__name__.lower()} (line {node.lineno})"
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return f"the attribute .{node.attr} (line {node.lineno})"
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
                and node.id not in allowed and id(node) not in dead:
            return f"{node.id}, defined outside the kernel (line {node.lineno})"
    return None


def kernel_cells(cells: list[tuple[int, str]], kernel_name: str = KERNEL,
                 wrapper_name: str = WRAPPER) -> list[tuple[str, str]]:
    """The cells the sandbox runs for ex07 (or ex09, with its names): Triton's imports, then the
    kernel alone (on its own line numbers). Raises :class:`NotSolved` with the reason when the
    notebook has no such kernel, or its wrapper does not launch it."""
    kernel = wrapper = None
    for number, text in cells:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == kernel_name:
                kernel = (number, text, node)
            elif isinstance(node, ast.FunctionDef) and node.name == wrapper_name:
                wrapper = node
    launch = f"{wrapper_name} must launch your Triton kernel {kernel_name}"
    if kernel is None:
        raise NotSolved("the kernel", f"the notebook defines no {kernel_name}: {launch}")
    number, text, node = kernel
    if not node.decorator_list or not all(map(_is_triton, node.decorator_list)):
        raise NotSolved("the kernel", f"{kernel_name} is not a @triton.jit kernel: {launch}")
    if wrapper is None or not _launches(wrapper, kernel_name):
        raise NotSolved("the wrapper", f"{launch} as {kernel_name}[grid](...)")
    problem = body_problem(node)
    if problem:
        raise NotSolved("the kernel", f"{kernel_name} uses {problem}: the grader runs the kernel "
                        "on its own, so it may use only its arguments, tl and triton")
    first = node.decorator_list[0].lineno
    lines = text.split("\n")[first - 1:node.end_lineno]
    return [(f"{number} (imports)", PREAMBLE), (number, "\n" * (first - 1) + "\n".join(lines) + "\n")]
