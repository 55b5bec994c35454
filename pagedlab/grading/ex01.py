"""ex01 block manager: allocate all or nothing, keep the watermark, free once.

Every case's script is drawn from the seed (block size, pool size, prompt lengths, where the
double free and the look-alike sequence fall), then disguised (:func:`.blockdriver.disguise`).
See notebooks/01_parking_garage.ipynb.
"""
from __future__ import annotations

import random

from . import blockdriver
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex01", title="A block manager: allocate all or nothing, the watermark, and free",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset()


def tokens(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


def _blocks(rng: random.Random, size: int, count: int) -> list[int]:
    """A prompt that fills exactly ``count`` blocks, the last one full or partly."""
    return tokens(size * (count - 1) + rng.randint(1, size))


def own_blocks(rng: random.Random) -> dict:
    """Prompts of every kind of length: one token, whole blocks, one past a boundary."""
    size = rng.choice([2, 3, 4, 5, 8])
    prompts = [tokens(1), tokens(size), tokens(size * rng.randint(2, 3)), tokens(size + 1),
               tokens(rng.randint(2, size * 3))]
    rng.shuffle(prompts)
    need = sum(-(-len(p) // size) for p in prompts)
    return {"num_blocks": need + rng.randint(0, 2), "block_size": size,
            "ops": [["allocate", n, p] for n, p in enumerate(prompts, start=1)]}


def does_not_fit(rng: random.Random) -> dict:
    """A pool partly taken; a prompt one block too big; one that fits exactly; then none."""
    size, num_blocks = rng.choice([2, 4, 8]), rng.randint(5, 9)
    left = rng.randint(1, 3)
    return {"num_blocks": num_blocks, "block_size": size, "ops": [
        ["allocate", 1, _blocks(rng, size, num_blocks - left)],
        ["allocate", 2, _blocks(rng, size, left + 1)],
        ["allocate", 3, tokens(size * (num_blocks + rng.randint(0, 2)) + 1)],   # never fits
        ["allocate", 4, _blocks(rng, size, left)],
        ["allocate", 5, tokens(1)]]}


def asks_first(rng: random.Random) -> dict:
    """can_allocate at both sides of the edge (the watermark's), before and after an allocation."""
    size, num_blocks, kept = rng.choice([2, 3, 4]), rng.randint(6, 10), rng.randint(1, 2)
    usable = num_blocks - kept
    taken = rng.randint(1, usable - 2)
    left = usable - taken
    first = [["can_allocate", 1, tokens(usable * size)],
             ["can_allocate", 2, tokens(usable * size + 1)]]
    later = [["can_allocate", 4, tokens(left * size)], ["can_allocate", 5, tokens(left * size + 1)],
             ["can_allocate", 6, tokens(1)]]
    rng.shuffle(first)
    rng.shuffle(later)
    return {"num_blocks": num_blocks, "block_size": size, "watermark_blocks": kept,
            "ops": first + [["allocate", 3, _blocks(rng, size, taken)]] + later
            + [["allocate", 7, tokens(left * size)], ["can_allocate", 8, tokens(1)]]}


def frees(rng: random.Random) -> dict:
    """Free, reuse, then a second free and a sequence never allocated, somewhere in between; a
    look-alike Sequence object carrying a held id; a freed sequence allocated again (as a
    recomputed preemption is), freed once more, and freed a second time."""
    size, num_blocks = rng.choice([2, 4, 8]), rng.randint(4, 7)
    first = rng.randint(1, num_blocks - 2)
    ops = [["allocate", 1, _blocks(rng, size, first)],
           ["allocate", 2, _blocks(rng, size, num_blocks - first)],
           ["free", 1, None],
           ["allocate", 3, _blocks(rng, size, first)],
           ["free", 2, None], ["free", 3, None],
           ["allocate", 4, tokens(num_blocks * size)], ["free", 4, None]]
    ops.insert(rng.randint(3, 5), ["free_again", 1, None])
    ops.insert(rng.randint(1, len(ops)), ["free_unknown", 9, tokens(rng.randint(1, size))])
    ops.insert(len(ops) - rng.randint(0, 1), ["free_again", rng.choice([2, 3]), None])
    held = next(n for n, op in enumerate(ops) if op[:2] == ["allocate", 2]) + 1   # seq 2 holds...
    ops.insert(rng.randint(held, ops.index(["free", 2, None])), ["free_stranger", 2, None])
    back = rng.randint(1, 4)                 # ...and this one comes back at the end
    return {"num_blocks": num_blocks, "block_size": size, "ops": ops + [
        ["reallocate", back, None], ["free_stranger", back, None], ["free", back, None],
        ["free_again", back, None]]}


def watermark(rng: random.Random) -> dict:
    """Admission stops watermark_blocks short of full; a prompt above the line never fits."""
    num_blocks = rng.randint(8, 16)
    kept = rng.randint(1, 3)
    size = rng.choice([2, 4])
    usable = num_blocks - kept
    first = rng.randint(1, usable - 2)
    return {"num_blocks": num_blocks, "block_size": size, "watermark_blocks": kept, "ops": [
        ["allocate", 3, _blocks(rng, size, usable + 1)],          # above the line: never
        ["allocate", 4, _blocks(rng, size, first)],
        ["allocate", 5, _blocks(rng, size, usable - first + 1)],  # one block into the watermark
        ["allocate", 6, _blocks(rng, size, usable - first)],      # up to the line exactly
        ["allocate", 7, tokens(1)],
        ["free", 4, None],
        ["allocate", 8, _blocks(rng, size, first)]]}


CASES = [
    ("each sequence gets the blocks its tokens need, none shared",
     "Count the blocks a prompt fills (its last one may be partly filled). Every block a "
     "sequence gets comes out of the free pool, so no two sequences hold the same one.",
     own_blocks),
    ("a prompt that does not fit raises OutOfBlocks and changes nothing",
     "All or nothing: decide whether the whole prompt fits before taking any block, and on "
     "failure raise pagedlab.OutOfBlocks with the pool and the ticket as they were.",
     does_not_fit),
    ("can_allocate says whether allocate would succeed",
     "can_allocate answers the question allocate asks itself first, watermark included; it "
     "only looks.",
     asks_first),
    ("free returns every block once; a second free or an unknown sequence raises",
     "free gives back the blocks of a sequence this manager holds and empties its block table. "
     "A sequence freed already raises pagedlab.DoubleFree, one it never held (another Sequence "
     "object with a held id too) raises pagedlab.UnknownSequence, and neither changes the pool. "
     "A freed sequence allocated again holds blocks again: its next free is a first one.",
     frees),
    ("the watermark keeps blocks back for running sequences",
     "A new prompt may not take the last watermark_blocks free blocks: running sequences need "
     "them to grow; a prompt above that line can never be placed.",
     watermark),
]


RANDOM = ("random allocations and frees",
          "Many sequences coming and going: every block is free or on exactly one ticket, and "
          "num_free_blocks counts the free ones.",
          lambda rng: {"num_blocks": rng.randint(10, 16), "block_size": rng.choice([2, 3, 4]),
                       "num_ops": 40, "watermark_blocks": rng.randint(1, 2),
                       "kinds": ("allocate", "allocate", "can_allocate", "free", "free",
                                 "free_again", "free_unknown", "free_stranger", "reallocate")})


def cases(seed: int) -> list[Case]:
    return blockdriver.drawn_cases("ex01", seed, CASES, script, RANDOM)


script, reference, compare = blockdriver.exercise_hooks(FEATURES)
