"""pagedlab: a course on PagedAttention, from a parking garage to a Triton kernel.

The pure-Python parts (sequences, the block manager, errors) load at once; everything that needs
torch loads on first use, so ``import pagedlab`` is instant and the first lessons start quickly.
See notebooks/00_start_here.ipynb.
"""
from importlib import import_module as _import_module

from .errors import (
    DoubleFree,
    InvalidConfig,
    OutOfBlocks,
    PagedLabError,
    UnknownSequence,
)
from .sequence import Sequence, SequenceStatus
from .blocks import BlockManager

__version__ = "0.1.0"

# Public name -> module that defines it. Loaded on first attribute access (PEP 562).
_LAZY = {
    "ContiguousAllocator": "sim.contiguous",
    "workloads": "sim.workloads",  # a module of its own
    "Request": "sim.workloads",
    "Scheduler": "scheduler",
    "SchedulerOutput": "scheduler",
    "simulate": "sim.simulator",
    "SimResult": "sim.simulator",
    "StepCost": "sim.latency",
    "KVCache": "cache",
    "attention_reference": "attention",
    "paged_attention_reference": "attention",
    "paged_prefill_reference": "attention",
    "paged_attention": "attention",
    "GPT": "model",
    "GPTConfig": "model",
    "naive_generate": "model",
    "Llama": "llama",
    "LlamaConfig": "llama",
    "from_hf": "models",
    "from_pretrained": "models",
    "tiny_model": "tiny",
    "LLMEngine": "engine",
    "check": "grading",
    "require": "needs",  # one line, not a traceback, when torch/Triton/transformers/a GPU is missing
    "have": "needs",
    "MissingPart": "needs",
    "needs": None,
    "widgets": None,
    "break_it": None,  # a module: plant a paging bug in one engine (lesson 08)
    "backend": None,
}

__all__ = [
    "PagedLabError", "OutOfBlocks", "UnknownSequence", "DoubleFree", "InvalidConfig",
    "Sequence", "SequenceStatus", "BlockManager", *_LAZY,
]


# names in _LAZY that are modules, not members
_MODULES = {name for name, module in _LAZY.items() if module is None} | {"workloads"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'pagedlab' has no attribute {name!r}")
    try:
        module = _import_module(f".{_LAZY[name] or name}", __name__)
    except ModuleNotFoundError as error:  # torch, triton or transformers is not installed
        from .needs import as_missing_part
        missing = as_missing_part(error, f"pagedlab.{name}")
        if missing is None:
            raise
        raise missing from None
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value


# Modules that moved when the package was split into the data path (here), the simulator
# (pagedlab.sim) and the tools (pagedlab.tools). Old imports in instructors' notebooks keep
# working: ``import pagedlab.simulator`` gives the module now at pagedlab.sim.simulator.
MOVED = {
    "simulator": "sim.simulator", "contiguous": "sim.contiguous", "breakdown": "sim.breakdown",
    "workloads": "sim.workloads", "cli": "tools.cli", "doctor": "tools.doctor",
    "bench": "tools.bench", "garage": "tools.garage", "course": "tools.course",
    "batch": "sequence_group", "grading.exercises": "tools.exercises",
}


class _MovedModuleFinder:
    """Answers ``import pagedlab.<old name>`` with the module at its new place."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        old = fullname[len(__name__) + 1:] if fullname.startswith(__name__ + ".") else None
        if old not in MOVED:
            return None
        from importlib.machinery import ModuleSpec
        return ModuleSpec(fullname, _MovedModuleFinder(), origin=f"{__name__}.{MOVED[old]}")

    @staticmethod
    def create_module(spec):
        return _import_module(spec.origin)

    @staticmethod
    def exec_module(module):
        pass  # already executed at its new place


import sys as _sys  # noqa: E402

if not any(isinstance(finder, _MovedModuleFinder) for finder in _sys.meta_path):
    _sys.meta_path.insert(0, _MovedModuleFinder())


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
