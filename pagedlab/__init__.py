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
    "ContiguousAllocator": "contiguous",
    "workloads": None,  # a module of its own
    "Request": "workloads",
    "Scheduler": "scheduler",
    "SchedulerOutput": "scheduler",
    "simulate": "simulator",
    "SimResult": "simulator",
    "KVCache": "cache",
    "attention_reference": "attention",
    "paged_attention_reference": "attention",
    "paged_prefill_reference": "attention",
    "paged_attention": "attention",
    "GPT": "model",
    "GPTConfig": "model",
    "naive_generate": "model",
    "LLMEngine": "engine",
    "check": "grading",
    "widgets": None,
    "backend": None,
}

__all__ = [
    "PagedLabError", "OutOfBlocks", "UnknownSequence", "DoubleFree", "InvalidConfig",
    "Sequence", "SequenceStatus", "BlockManager", *_LAZY,
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'pagedlab' has no attribute {name!r}")
    module = _import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
