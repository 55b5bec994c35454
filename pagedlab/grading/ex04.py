"""ex04 prefix cache: chained block hashes, hits, and least-recently-used eviction.

See notebooks/04_sharing.ipynb.
"""
from __future__ import annotations

import random

from . import blockdriver
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex04", title="A prefix cache",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset({"cached", "refs"})

def _words(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, 40) for _ in range(n)]


def reuses(rng: random.Random) -> dict:
    size = rng.choice([2, 3, 4])
    system = _words(rng, size * 2)           # a shared "system prompt" of two full blocks
    return {"num_blocks": 12, "block_size": size, "ops": [
        ["allocate", 1, system + _words(rng, rng.randint(1, size))],
        ["allocate", 2, system + _words(rng, rng.randint(1, size * 2))],
        ["allocate", 3, system[:size] + _words(rng, rng.randint(1, size))]]}


def full_blocks_only(rng: random.Random) -> dict:
    size = rng.choice([3, 4])
    system = _words(rng, size * 2)
    partial = system[:size + rng.randint(2, size - 1)]     # asked twice: still one hit block
    asks = [system, system, partial, partial, system[:rng.randint(1, size - 1)], system[:size]]
    return {"num_blocks": 14, "block_size": size,
            "ops": [["allocate", n, prompt] for n, prompt in enumerate(asks, start=1)]}


def chained(rng: random.Random) -> dict:
    size = rng.choice([2, 3, 4])
    a, b, c = (_words(rng, size) for _ in range(3))
    order = [a + b, c + b, a + c]
    rng.shuffle(order)
    return {"num_blocks": 10, "block_size": size,
            "ops": [["allocate", n, prompt] for n, prompt in enumerate([a + b] + order, start=1)]}


def kept_after_free(rng: random.Random) -> dict:
    size = rng.choice([2, 3, 4])
    system = _words(rng, size * 2)
    return {"num_blocks": 4, "block_size": size, "ops": [
        ["allocate", 1, system + _words(rng, 1)], ["free", 1, None],
        ["allocate", 2, system + _words(rng, rng.randint(2, size))], ["free", 2, None],
        ["allocate", 3, system[:size]]]}


def evicts_lru(rng: random.Random) -> dict:
    size = rng.choice([2, 3])
    first, second = _words(rng, size * 2), _words(rng, size * 2)
    other = [99] * size
    return {"num_blocks": 4, "block_size": size, "ops": [
        ["allocate", 1, first], ["allocate", 2, second], ["free", 1, None], ["free", 2, None],
        ["allocate", 3, other], ["allocate", 4, first], ["free", 4, None],
        ["allocate", 5, second + [0]], ["allocate", 6, first]]}


CASES = [
    ("a second prompt with the same start reuses its full blocks",
     "A new prompt looks its full blocks up from the start and keeps the ones found, up to the "
     "first that is not in the cache; allocate returns the tokens found.", reuses),
    ("only full blocks are cached, and the last token is always recomputed",
     "A partly filled block is never shared. A prompt found entirely in the cache still has its "
     "last token computed (the model needs its logits).", full_blocks_only),
    ("the same block after a different prefix is a miss",
     "A block's key stands for its tokens and everything before them: equal tokens after "
     "another start are a different block.", chained),
    ("a freed cached block stays reusable and counts as free",
     "A cached block nobody holds is free (it counts in num_free_blocks) and still findable, "
     "until its space is needed.", kept_after_free),
    ("eviction takes the least recently used cached block first",
     "When no never-used block is left, the cached block unused the longest goes first; a "
     "sequence's tail is released before its prefix.", evicts_lru),
]


RANDOM = ("random prompts sharing prefixes",
          "Many prompts with shared system prompts coming and going: hits, free blocks and "
          "sharing must match.",
          lambda rng: {"num_blocks": rng.randint(8, 12), "block_size": rng.choice([2, 3]),
                       "num_ops": 40, "kinds": ("allocate", "allocate", "free"), "vocab": 4,
                       "max_len": 5, "prefixes": 3})


def cases(seed: int) -> list[Case]:
    return blockdriver.drawn_cases("ex04", seed, CASES, script, RANDOM)


script, reference, compare = blockdriver.exercise_hooks(FEATURES, enable_prefix_caching=True)
