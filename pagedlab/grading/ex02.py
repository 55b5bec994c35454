"""ex02 append and slots: grow a sequence token by token; map positions to slots.

Every case's script is drawn from the seed (block size, prompt lengths, how far each sequence
grows, which ranges are asked for), then disguised (:func:`.blockdriver.disguise`). See
notebooks/02_pages_and_block_tables.ipynb.
"""
from __future__ import annotations

import random

from . import blockdriver
from .ex01 import tokens
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex02", title="Appending tokens, can_append and the slot mapping",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset({"tokens", "slots"})


def grows(rng: random.Random) -> dict:
    """One sequence grows across two block boundaries; a second one starts on a boundary."""
    size = rng.choice([2, 3, 4, 5])
    prompt = rng.randint(1, size * 2)
    ops = [["allocate", 1, tokens(prompt)], ["allocate", 2, tokens(size * rng.randint(1, 2))]]
    for step in range(2 * size + rng.randint(1, size)):
        ops.append(["append", 1 if step % 3 else rng.choice([1, 2]), 40 + step])
    return {"num_blocks": 20, "block_size": size, "ops": ops}


def asks_first(rng: random.Random) -> dict:
    """can_append with room in the last block, on a full block with and without a free one."""
    size = rng.choice([2, 3, 4])
    full, partial = size * rng.randint(1, 2), size * rng.randint(0, 1) + rng.randint(1, size - 1)
    spare = rng.randint(0, 1)
    num_blocks = -(-full // size) + -(-partial // size) + spare
    ops = [["allocate", 1, tokens(full)], ["allocate", 2, tokens(partial)],
           ["can_append", 1, None], ["can_append", 2, None]]
    if spare:      # the spare block goes to seq 1: now seq 1 has room and nothing is free
        ops += [["append", 1, 7], ["can_append", 1, None]]
    ops += [["append", 2, 8]] * (size - partial % size) + [["can_append", 2, None],
                                                           ["free", 1, None], ["can_append", 2, None]]
    return {"num_blocks": num_blocks, "block_size": size, "ops": ops}


def no_room(rng: random.Random) -> dict:
    """A full pool: an append on a block boundary fails and changes nothing; once a sequence
    leaves, the other grows into exactly its blocks, and the next append fails again."""
    size = rng.choice([1, 2, 3, 4])
    first, second = size * rng.randint(1, 2), size * rng.randint(1, 2)
    num_blocks = (first + second) // size
    return {"num_blocks": num_blocks, "block_size": size, "ops": [
        ["allocate", 1, tokens(first)], ["allocate", 2, tokens(second)], ["append", 1, 5],
        ["append", 2, 6], ["free", 2, None]] + [["append", 1, 9]] * (second + 1)}


def interleaved(rng: random.Random) -> dict:
    """Sequences growing side by side, so their blocks interleave in the pool; one leaves."""
    size = rng.choice([2, 3, 4, 8])
    ops = [["allocate", n, tokens(rng.randint(1, size * 2))] for n in (1, 2, 3)]
    leaves = rng.randint(1, 3)               # after the first `leaves` sequences arrived
    ops.insert(leaves, ["free", rng.randint(1, leaves), None])
    alive = [n for n in (1, 2, 3) if ["free", n, None] not in ops]
    for step in range(size * 3):
        ops.append(["append", rng.choice(alive), 60 + step])
    return {"num_blocks": 24, "block_size": size, "ops": ops}


def ranges(rng: random.Random) -> dict:
    """slot_mapping(seq, start, end): inside the tokens, into the last block's empty slots, and
    past the last block (ValueError)."""
    size = rng.choice([3, 4, 5, 8])
    length = size * rng.randint(1, 2) + rng.randint(1, size - 1)
    blocks = -(-length // size)
    asks = [[0, length], [rng.randint(1, length - 1), length], [length - 1, length],
            [rng.randint(0, length - 1), blocks * size],            # the empty slots too
            [rng.randint(0, length - 1), blocks * size + rng.randint(1, size)],   # past: raises
            [blocks * size, blocks * size + 1]]                     # past: raises
    rng.shuffle(asks)
    ops = [["allocate", 2, tokens(rng.randint(1, size))], ["allocate", 1, tokens(length)]]
    ops += [["slots", 1, ask] for ask in asks[:3]] + [["append", 1, 70]]
    ops += [["slots", 1, ask] for ask in asks[3:]]
    return {"num_blocks": blocks + 4, "block_size": size, "ops": ops}


CASES = [
    ("appending takes a new block exactly when the last one is full",
     "Look at the last block before the token goes in: a token that still has a slot there "
     "takes no block; one that has none takes exactly one.", grows),
    ("can_append says whether the next token fits now, and changes nothing",
     "can_append answers the question append_token asks itself first: is there a slot for the "
     "next token, or a free block to make one?", asks_first),
    ("appending with no free block raises OutOfBlocks and changes nothing",
     "Check before changing anything: on failure the token is not in seq.token_ids and the "
     "table and pool are as they were.", no_room),
    ("slot_mapping follows the block table, whatever order the blocks are in",
     "A position's slot is in the physical block its table names, not where the position would "
     "be if the sequence were contiguous.", interleaved),
    ("slot_mapping(seq, start, end) gives a range's slots; past the last block is a ValueError",
     "Only positions inside the sequence's blocks have slots (the last block's empty slots "
     "included); a range that reaches past them raises ValueError.", ranges),
]


RANDOM = ("random appends, allocations and frees",
          "Sequences grow and leave: tables, slots and num_free_blocks must stay right.",
          lambda rng: {"num_blocks": rng.randint(8, 12), "block_size": rng.choice([2, 3, 4]),
                       "num_ops": 45, "kinds": ("allocate", "append", "append", "append",
                                                "can_append", "slots", "free")})


def cases(seed: int) -> list[Case]:
    return blockdriver.drawn_cases("ex02", seed, CASES, script, RANDOM)


script, reference, compare = blockdriver.exercise_hooks(FEATURES)
