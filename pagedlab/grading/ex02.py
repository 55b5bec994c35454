"""ex02 append and slots: grow a sequence token by token; map positions to slots.

See notebooks/02_pages_and_block_tables.ipynb.
"""
from __future__ import annotations

from . import blockdriver
from .ex01 import tokens
from .exercise import Case, Exercise

EXERCISE = Exercise(
    id="ex02", title="Appending tokens and the slot mapping",
    names={"BlockManager": "MyBlockManager"},
)
FEATURES = frozenset({"tokens", "slots"})


def cases(seed: int) -> list[Case]:
    return [
        Case("appending into a block with room takes no new block",
             "append_token adds the token to seq.token_ids; a new block is needed only when "
             "len(seq.token_ids) is a multiple of block_size before the append.",
             "run_script", script(seed, 0, {"num_blocks": 6, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(5)], ["append", 1, 7], ["append", 1, 8], ["append", 1, 9]]})),
        Case("appending to a full last block takes exactly one new block",
             "When the last block is full, take one block from the free pool and add it to "
             "seq.block_table.",
             "run_script", script(seed, 1, {"num_blocks": 6, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(4)], ["append", 1, 7], ["allocate", 2, tokens(8)],
                 ["append", 2, 1], ["append", 1, 2], ["append", 1, 3], ["append", 1, 4],
                 ["append", 1, 5]]})),
        Case("appending with no free block raises OutOfBlocks and changes nothing",
             "Check for a free block before appending the token: on failure the token must not "
             "be in seq.token_ids.",
             "run_script", script(seed, 2, {"num_blocks": 2, "block_size": 2, "ops": [
                 ["allocate", 1, tokens(2)], ["allocate", 2, tokens(2)], ["append", 1, 5],
                 ["free", 2, None], ["append", 1, 6], ["append", 1, 7]]})),
        Case("slot_mapping follows the block table",
             "Position p lives in slot block_table[p // block_size] * block_size + "
             "p % block_size; return one slot per token.",
             "run_script", script(seed, 3, {"num_blocks": 8, "block_size": 4, "ops": [
                 ["allocate", 1, tokens(3)], ["allocate", 2, tokens(9)], ["free", 1, None],
                 ["allocate", 3, tokens(6)], ["append", 3, 1], ["append", 3, 2],
                 ["append", 2, 3]]})),
        Case("block size 1 and a 1-token prompt",
             "Edge cases: every token fills a block when block_size is 1.",
             "run_script", script(seed, 4, {"num_blocks": 3, "block_size": 1, "ops": [
                 ["allocate", 1, tokens(1)], ["append", 1, 5], ["append", 1, 6],
                 ["append", 1, 7]]})),
        Case(f"random appends, allocations and frees (seed {seed})",
             "Sequences grow and leave: tables, slots and num_free_blocks must stay right.",
             "run_script", script(seed, 5, blockdriver.random_script(
                 seed, num_blocks=10, block_size=4, num_ops=45,
                                       kinds=("allocate", "append", "append", "append", "free")), hide=False)),
    ]


script, reference, compare = blockdriver.exercise_hooks(FEATURES)
