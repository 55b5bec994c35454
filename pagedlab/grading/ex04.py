"""ex04 prefix cache: chained block hashes, hits, and least-recently-used eviction.

See notebooks/04_sharing.ipynb.
"""
from __future__ import annotations

from . import blockdriver
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex04", title="A prefix cache",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset({"cached", "refs"})

SYSTEM = [7, 7, 1, 2, 3, 4, 5, 6]     # a shared "system prompt" of two 4-token blocks


def cases(seed: int) -> list[Case]:
    return [
        Case("a second prompt with the same start reuses its full blocks",
             "Hash each full block chained to its parent's hash; allocate looks the hashes up "
             "in order and stops at the first miss. Return the number of tokens found.",
             "run_script", script(seed, 0, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, SYSTEM + [10, 11]], ["allocate", 2, SYSTEM + [20, 21, 22]]]})),
        Case("only full blocks are cached, and the last token is always recomputed",
             "A partly filled block is never shared. A prompt found entirely in the cache "
             "still reports len - 1 cached tokens (its last token needs computing).",
             "run_script", script(seed, 1, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, SYSTEM], ["allocate", 2, SYSTEM], ["allocate", 3, SYSTEM[:6]],
                 ["allocate", 4, SYSTEM[:3]]]})),
        Case("the same block after a different prefix is a miss",
             "The hash of a block includes its parent's hash, so equal tokens at a different "
             "place in the prompt do not match.",
             "run_script", script(seed, 2, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, [1, 2, 3, 4, 5, 6, 7, 8]], ["allocate", 2, [9, 9, 9, 9, 5, 6, 7, 8]],
                 ["allocate", 3, [1, 2, 3, 4, 9, 9, 9, 9]]]})),
        Case("a freed cached block stays reusable and counts as free",
             "free puts a cached block nobody holds into an evictable set: it counts in "
             "num_free_blocks, and a later prompt can still hit it.",
             "run_script", script(seed, 3, {"num_blocks": 4, "block_size": 4, "ops": [
                 ["allocate", 1, SYSTEM + [1]], ["free", 1, None], ["allocate", 2, SYSTEM + [2, 3]],
                 ["free", 2, None]]})),
        Case("eviction takes the least recently used cached block first",
             "When no never-used block is left, evict the cached block freed longest ago. free "
             "releases a sequence's blocks last-first, so its tail goes before its prefix.",
             "run_script", script(seed, 4, {"num_blocks": 4, "block_size": 2, "ops": [
                 ["allocate", 1, [1, 2, 3, 4]], ["allocate", 2, [5, 6, 7, 8]], ["free", 1, None],
                 ["free", 2, None], ["allocate", 3, [9, 9]], ["allocate", 4, [1, 2, 3, 4]],
                 ["free", 4, None], ["allocate", 5, [5, 6, 7, 8, 0]], ["allocate", 6, [1, 2, 3, 4]]]})),
        Case(f"random prompts sharing prefixes (seed {seed})",
             "Many prompts with shared system prompts coming and going: hits, free blocks and "
             "sharing must match.",
             "run_script", script(seed, 5, blockdriver.random_script(
                 seed, num_blocks=10, block_size=2, num_ops=40,
                                       kinds=("allocate", "allocate", "free"), vocab=4,
                                       max_len=5, prefixes=3), hide=False)),
    ]


script, reference, compare = blockdriver.exercise_hooks(FEATURES, enable_prefix_caching=True)
