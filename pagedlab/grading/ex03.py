"""ex03 copy-on-write: fork shares blocks; writing to a shared block copies it first.

See notebooks/04_sharing.ipynb.
"""
from __future__ import annotations

from . import blockdriver
from .ex01 import tokens
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex03", title="Fork and copy-on-write",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset({"tokens", "refs", "copy"})


def cases(seed: int) -> list[Case]:
    return [
        Case("fork shares every block and raises its ref count",
             "The child gets a copy of the parent's block table (a new list, same block ids) "
             "and every block's ref count goes up by one.",
             "run_script", script(seed, 0, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(6)], ["fork", 1, 2], ["fork", 1, 3]]})),
        Case("appending to a shared, partly filled block copies it first",
             "If the last block is partly filled and its ref count is above 1, take a new "
             "block, drop one reference to the old one, and return (old, new) for the cache "
             "to copy.",
             "run_script", script(seed, 1, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(6)], ["fork", 1, 2], ["append", 2, 7], ["append", 2, 8],
                 ["append", 1, 9]]})),
        Case("appending after a shared full block takes a new block without a copy",
             "A full shared block is never written again: the new token goes into a fresh "
             "block and nothing is copied (return None).",
             "run_script", script(seed, 2, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(8)], ["fork", 1, 2], ["append", 1, 5], ["append", 2, 6],
                 ["append", 2, 7]]})),
        Case("free drops one reference; a block returns to the pool at zero",
             "free(seq) lowers the ref count of each of its blocks; only blocks that reach zero "
             "become free.",
             "run_script", script(seed, 3, {"num_blocks": 6, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(5)], ["fork", 1, 2], ["free", 1, None],
                 ["append", 2, 5], ["fork", 2, 3], ["free", 2, None], ["free", 3, None]]})),
        Case("copy-on-write with no free block raises OutOfBlocks and changes nothing",
             "The copy needs a free block: check first, and leave tables, tokens and ref counts "
             "as they were when there is none.",
             "run_script", script(seed, 4, {"num_blocks": 2, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(2)], ["allocate", 2, tokens(1)], ["fork", 1, 3],
                 ["append", 3, 5], ["free", 2, None], ["append", 3, 6], ["append", 1, 7]]})),
        Case(f"random forks, appends and frees (seed {seed})",
             "Parallel samples coming and going: ref counts, copies and free blocks must stay "
             "right.",
             "run_script", script(seed, 5, blockdriver.random_script(
                 seed, num_blocks=14, block_size=4, num_ops=45,
                                       kinds=("allocate", "fork", "fork", "append", "append",
                                              "append", "free"), max_len=10), hide=False)),
    ]


script, reference, compare = blockdriver.exercise_hooks(FEATURES)
