"""ex01 block manager: allocate all or nothing, free. See notebooks/01_parking_garage.ipynb."""
from __future__ import annotations

from . import blockdriver
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex01", title="A block manager: allocate all or nothing, and free",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset()


def tokens(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


def cases(seed: int) -> list[Case]:
    return [
        Case("each sequence gets ceil(len / block_size) blocks of its own",
             "A prompt of n tokens needs ceil(n / block_size) blocks; take each from the free "
             "pool, so no two sequences ever hold the same block.",
             "run_script", script(seed, 0, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(5)], ["allocate", 2, tokens(4)],
                 ["allocate", 3, tokens(1)], ["allocate", 4, tokens(9)]]})),
        Case("a prompt that does not fit raises OutOfBlocks and changes nothing",
             "Check that enough blocks are free *before* taking any: all or nothing. "
             "Raise pagedlab.OutOfBlocks and leave the free pool as it was.",
             "run_script", script(seed, 1, {"num_blocks": 6, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(10)], ["allocate", 2, tokens(13)],
                 ["allocate", 3, tokens(12)], ["allocate", 4, tokens(1)]]})),
        Case("can_allocate says whether allocate would succeed",
             "can_allocate compares the blocks the prompt needs with num_free_blocks; it "
             "changes nothing.",
             "run_script", script(seed, 2, {"num_blocks": 5, "block_size": 4, "ops": [
                 ["can_allocate", 1, tokens(20)], ["can_allocate", 2, tokens(21)],
                 ["allocate", 3, tokens(8)], ["can_allocate", 4, tokens(13)],
                 ["can_allocate", 5, tokens(12)]]})),
        Case("free returns the blocks to the pool, to be handed out again",
             "free(seq) gives back every block in seq.block_table (and forgets the table).",
             "run_script", script(seed, 3, {"num_blocks": 4, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(16)], ["allocate", 2, tokens(1)], ["free", 1, None],
                 ["allocate", 3, tokens(3)], ["allocate", 4, tokens(12)], ["free", 3, None],
                 ["free", 4, None]]})),
        Case("a prompt longer than the whole pool raises OutOfBlocks",
             "Even an empty pool cannot hold more than num_blocks blocks.",
             "run_script", script(seed, 4, {"num_blocks": 4, "block_size": 2, "ops": [
                 ["allocate", 1, tokens(9)], ["allocate", 2, tokens(8)]]})),
        Case(f"random allocations and frees (seed {seed})",
             "Many sequences coming and going: num_free_blocks must always equal the blocks "
             "nobody holds.",
             "run_script", script(seed, 5, blockdriver.random_script(
                 seed, num_blocks=12, block_size=4, num_ops=40,
                    kinds=("allocate", "allocate", "can_allocate", "free")), hide=False)),
    ]


script, reference, compare = blockdriver.exercise_hooks(FEATURES)
