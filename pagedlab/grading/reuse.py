"""Spotting pagedlab's own answer handed in as the learner's: aliases, subclasses, wrappers.

An exercise lists the pagedlab objects that *are* its answer (``Exercise.forbidden``). Handing
one in, subclassing it, borrowing its methods, or calling it while a case runs counts as not
solved. This module finds the first three by looking at the objects; calls are caught by the
sandbox's tripwires (and by a profiler in ``check``).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
from types import CodeType
from typing import Any, Iterator

from .exercise import Exercise


def pagedlab_dirs() -> tuple[str, ...]:
    """Folders holding pagedlab's source (the package, and kernels/ installed as pagedlab.kernels)."""
    dirs = []
    for name in ("pagedlab", "pagedlab.kernels"):
        spec = importlib.util.find_spec(name)
        dirs += [os.path.realpath(path) for path in (spec.submodule_search_locations or [])]
    return tuple(dirs)


def forbidden_objects(exercise: Exercise) -> Iterator[tuple[str, Any]]:
    """(qualified name, object) of every pagedlab object that is this exercise's answer."""
    for module_name, names in exercise.forbidden.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:   # e.g. the Triton kernels where Triton is missing: nothing to reuse
            continue
        for name in names:
            yield f"{module_name}.{name}", getattr(module, name)


def _functions(obj: Any) -> Iterator[Any]:
    """The plain functions behind a class's methods/properties, a function, or a Triton kernel."""
    if isinstance(obj, functools.partial):
        yield from _functions(obj.func)
    elif inspect.isclass(obj):
        for klass in obj.__mro__:
            if klass is object:
                continue
            for value in vars(klass).values():
                if isinstance(value, property):
                    yield from (f for f in (value.fget, value.fset, value.fdel) if f is not None)
                elif isinstance(value, (staticmethod, classmethod)):
                    yield value.__func__
                elif inspect.isfunction(value):
                    yield value
    elif inspect.isfunction(obj) or inspect.ismethod(obj):
        yield inspect.unwrap(getattr(obj, "__func__", obj))
    elif inspect.isfunction(getattr(obj, "fn", None)):  # a @triton.jit kernel
        yield obj.fn


def code_objects(obj: Any) -> Iterator[CodeType]:
    for function in _functions(obj):
        code = getattr(function, "__code__", None)
        if isinstance(code, CodeType):
            yield code


MIN_COPY_BYTES = 200  # shorter functions can agree by chance (`return -(-n // size)`)


def fingerprint(code: CodeType) -> tuple:
    """What a function does, whatever its file, line numbers, local names or message texts."""
    consts = tuple(fingerprint(c) if isinstance(c, CodeType) else
                   "str" if isinstance(c, str) else repr(c) for c in code.co_consts)
    return code.co_code, code.co_names, consts


def reference_fingerprints(exercise: Exercise) -> dict[tuple, str]:
    """Fingerprint -> name of every sizeable function of the exercise's forbidden objects.

    Take them before the sandbox arms its tripwires (which replace those functions)."""
    return {fingerprint(code): f"{qualname}.{code.co_name}"
            for qualname, reference in forbidden_objects(exercise)
            for code in code_objects(reference) if len(code.co_code) >= MIN_COPY_BYTES}


def _copies(target: Any, references: dict[tuple, str]) -> str | None:
    """The forbidden function that one of target's functions is a copy of, if any."""
    for code in code_objects(target):
        if len(code.co_code) >= MIN_COPY_BYTES and fingerprint(code) in references:
            return f"{code.co_name} is a copy of pagedlab's own {references[fingerprint(code)]}"
    return None


def static_reuse(objects: dict[str, Any], exercise: Exercise,
                 source_dirs: tuple[str, ...] | None = None,
                 references: dict[tuple, str] | None = None) -> list[str]:
    """Why the handed-in objects are pagedlab's own answer (empty when they are not)."""
    source_dirs = pagedlab_dirs() if source_dirs is None else source_dirs
    references = reference_fingerprints(exercise) if references is None else references
    forbidden = list(forbidden_objects(exercise))
    problems = []
    for keyword, obj in objects.items():
        shown = exercise.names.get(keyword, keyword)
        target = obj.func if isinstance(obj, functools.partial) else obj
        for qualname, reference in forbidden:
            if target is reference:
                problems.append(f"{shown} is pagedlab's own {qualname}: write your own")
            elif inspect.isclass(target) and inspect.isclass(reference) \
                    and issubclass(target, reference):
                problems.append(f"{shown} subclasses pagedlab's own {qualname}: write your own")
        if problems:
            continue
        for code in code_objects(target):
            path = os.path.realpath(code.co_filename)
            if any(path.startswith(folder + os.sep) for folder in source_dirs):
                where = os.path.relpath(path, os.path.dirname(source_dirs[0]))
                problems.append(f"{shown} uses pagedlab's code for {code.co_name} ({where}): "
                                "the exercise is to write it yourself")
                break
        else:
            copied = _copies(target, references)
            if copied:
                problems.append(f"{shown}: {copied}: the exercise is to write it yourself")
    return problems


def forbidden_codes(exercise: Exercise) -> dict[CodeType, str]:
    """Code object -> qualified name, for every function of the forbidden objects."""
    codes = {}
    for qualname, obj in forbidden_objects(exercise):
        for code in code_objects(obj):
            codes[code] = f"{qualname}.{code.co_name}" if inspect.isclass(obj) else qualname
    return codes
