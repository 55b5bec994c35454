"""The copy of pagedlab a submission imports while it is graded: the answer left out.

For each exercise, a few modules are copied as they are (``KEPT``: what the exercise builds on,
such as ``Sequence`` and the errors); every other module of pagedlab, and every module added
later, becomes a *stub*: the same names, but a class that cannot be made and functions that
raise "not available while exNN is graded: write it yourself". The grading package itself is
a stub too, so no reference, case or judge is in the copy. The sandbox sees only this copy.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import os
import shutil
from pathlib import Path

COMMON = {"__init__", "errors", "sequence", "needs"}  # needs: the one-line "install X" errors
ATTENTION_BASE = COMMON | {"blocks", "prefix_cache", "backend", "triton_compat"}
KEPT = {
    "ex01": COMMON, "ex02": COMMON, "ex03": COMMON, "ex04": COMMON,
    "ex05": COMMON | {"blocks", "prefix_cache"},
    "ex06": ATTENTION_BASE, "ex07": ATTENTION_BASE,
    "ex09": ATTENTION_BASE,
    "ex08": COMMON,                   # the budget alone: no scheduler, no block manager
    "ex10": COMMON,                   # plain arithmetic: no capacity module
}

STUB = '''"""pagedlab.{module} while {exercise} is graded: left out, so that the answer is your own."""
_WHY = "pagedlab.{module}.{{}} is not available while {exercise} is graded: write it yourself"


def _unavailable(name):
    def unavailable(*args, **kwargs):
        raise NotImplementedError(_WHY.format(name))
    unavailable.__name__ = unavailable.__qualname__ = name
    return unavailable


def __getattr__(name):
    raise AttributeError(_WHY.format(name))
'''
CLASS = '''

class {name}:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(_WHY.format({name!r}))
'''


def source_folders() -> dict[str, Path]:
    """Dotted prefix ("" for pagedlab itself, "kernels") -> the real folder of its source."""
    folders = {}
    for prefix in ("", "kernels"):
        spec = importlib.util.find_spec("pagedlab" + (f".{prefix}" if prefix else ""))
        if spec is not None and spec.submodule_search_locations:
            folders[prefix] = Path(list(spec.submodule_search_locations)[0]).resolve()
    return folders


def stub_source(text: str, module: str, exercise: str) -> str:
    """A module with the top-level names of ``text``, none of them usable."""
    return STUB.format(module=module, exercise=exercise) + _stub_body(text)


@functools.lru_cache(maxsize=512)
def _stub_body(text: str) -> str:
    """The stub's definitions (the same for every exercise: parsed once per run)."""
    try:
        body = ast.parse(text).body
    except SyntaxError:
        return ""
    out, seen = [], set()
    for node in body:
        if isinstance(node, ast.ClassDef):
            out.append(CLASS.format(name=node.name))
            seen.add(node.name)
            continue
        for name in _bound_names(node):
            if name not in seen and name.isidentifier() and not name.startswith("__"):
                out.append(f"\n{name} = {_literal(node, name)}\n")
                seen.add(name)
    return "".join(out)


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(alias.asname or alias.name).split(".")[0] for alias in node.names if alias.name != "*"]
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
    return [target.id for target in targets if isinstance(target, ast.Name)]


def _literal(node: ast.stmt, name: str) -> str:
    """A plain constant keeps its value (shapes, names); anything else becomes unusable."""
    value = getattr(node, "value", None)
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and value is not None:
        try:
            return repr(ast.literal_eval(value))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    return f"_unavailable({name!r})"


def build(exercise: str, destination: Path) -> Path:
    """Write the learner copy for ``exercise`` into ``destination``/pagedlab; returns destination."""
    kept = KEPT[exercise]
    for prefix, folder in source_folders().items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(folder)
            parts = [p for p in (prefix, *relative.with_suffix("").parts) if p]
            module = ".".join(parts) or "__init__"
            target = destination / "pagedlab" / (Path(prefix) / relative if prefix else relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            if module in kept:
                shutil.copyfile(path, target)
            else:
                dotted = module.removesuffix(".__init__").removesuffix("__init__") or "pagedlab"
                text = path.read_text(encoding="utf-8")
                target.write_text(stub_source(text, dotted, exercise), encoding="utf-8")
    for root, dirs, files in os.walk(destination):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    return destination
