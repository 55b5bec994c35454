"""ex03 copy-on-write: fork shares blocks; writing to a shared block copies it first.

See notebooks/04_sharing.ipynb.
"""
from __future__ import annotations

import random

from . import blockdriver
from .ex01 import tokens
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex03", title="Fork and copy-on-write",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset({"tokens", "refs", "copy"})


def _partial(rng: random.Random, size: int, blocks: int) -> list[int]:
    """A prompt of ``blocks`` blocks whose last one is partly filled."""
    return tokens(size * (blocks - 1) + rng.randint(1, size - 1))


def shares(rng: random.Random) -> dict:
    size = rng.choice([2, 3, 4])
    ops = [["allocate", 1, tokens(rng.randint(size + 1, size * 3))], ["fork", 1, 2]]
    ops += [["fork", rng.choice([1, 2]), 3]] + ([["fork", 3, 4]] if rng.random() < 0.5 else [])
    return {"num_blocks": 10, "block_size": size, "ops": ops}


def copies(rng: random.Random) -> dict:
    size = rng.choice([3, 4, 5])
    parent, child = rng.sample([1, 2], 2)    # either side may write first
    return {"num_blocks": 10, "block_size": size, "ops": [
        ["allocate", 1, _partial(rng, size, rng.randint(1, 2))], ["fork", 1, 2],
        ["append", child, 7], ["append", child, 8], ["append", parent, 9]]}


def full_shared(rng: random.Random) -> dict:
    size = rng.choice([2, 3, 4])
    first, second = rng.sample([1, 2], 2)
    return {"num_blocks": 10, "block_size": size, "ops": [
        ["allocate", 1, tokens(size * rng.randint(1, 2))], ["fork", 1, 2], ["append", first, 5],
        ["append", second, 6], ["append", second, 7]]}


def frees(rng: random.Random) -> dict:
    size = rng.choice([2, 3, 4])
    leaves, stays = rng.sample([2, 3], 2)
    return {"num_blocks": 8, "block_size": size, "ops": [
        ["allocate", 1, _partial(rng, size, 2)], ["fork", 1, 2], ["free", 1, None],
        ["append", 2, 5], ["fork", 2, 3], ["free", leaves, None], ["append", stays, 6],
        ["free", stays, None]]}


def no_room(rng: random.Random) -> dict:
    size = rng.choice([2, 3, 4])
    other = rng.randint(1, 2)
    return {"num_blocks": 1 + other, "block_size": size, "ops": [
        ["allocate", 1, tokens(rng.randint(1, size - 1))], ["allocate", 2, tokens(size * other)],
        ["fork", 1, 3], ["append", 3, 5], ["free", 2, None], ["append", 3, 6], ["append", 1, 7]]}


CASES = [
    ("fork shares every block and raises its ref count",
     "The child gets its own block table naming the same blocks as the parent's; every block on "
     "it has one more holder.", shares),
    ("appending to a shared, partly filled block copies it first",
     "A shared block that is about to change is copied first: the writer gets a block of its "
     "own, and append_token returns (old, new) for the KV cache to copy.", copies),
    ("appending after a shared full block takes a new block without a copy",
     "Nothing new is written into a full block, so sharing it is harmless: the new token goes "
     "into a fresh block, and nothing is copied (None).", full_shared),
    ("free drops one reference; a block returns to the pool at zero",
     "free takes this sequence's hold off each of its blocks; a block others still hold stays "
     "where it is.", frees),
    ("copy-on-write with no free block raises OutOfBlocks and changes nothing",
     "The copy needs a free block: without one, tables, tokens and ref counts stay as they were.",
     no_room),
]


RANDOM = ("random forks, appends and frees",
          "Parallel samples coming and going: ref counts, copies and free blocks must stay right.",
          lambda rng: {"num_blocks": rng.randint(12, 16), "block_size": rng.choice([2, 3, 4]),
                       "num_ops": 45, "max_len": 10,
                       "kinds": ("allocate", "fork", "fork", "append", "append", "append", "free")})


def cases(seed: int) -> list[Case]:
    return blockdriver.drawn_cases("ex03", seed, CASES, script, RANDOM)


script, reference, compare = blockdriver.exercise_hooks(FEATURES)
