# %% [markdown]
# # Exercise 1: a block manager
#
# The garage attendant from lesson 01 hands out parking spaces (KV-cache **blocks**) to cars
# (**sequences**). Here you write the attendant: a free pool of `num_blocks` blocks of
# `block_size` token slots, and a block table per sequence.
#
# You write four methods of `MyBlockManager`:
#
# - `blocks_needed(seq)`: a prompt of `n` tokens needs `ceil(n / block_size)` blocks;
# - `can_allocate(seq)`: whether that many blocks are free (it changes nothing);
# - `allocate(seq)`: **all or nothing**: if the blocks are not all free, raise
#   `pl.OutOfBlocks` *before* taking any; otherwise take them and set `seq.block_table`;
# - `free(seq)`: give every block of `seq.block_table` back to the pool.
#
# Replace each `raise NotImplementedError(...)`, run the notebook, and read the table the last
# cell prints. See notebooks/01_parking_garage.ipynb.

# %%
import pagedlab as pl
from pagedlab import OutOfBlocks, Sequence

# %% [markdown]
# ## Your block manager
#
# `free_blocks` is the pool: a list of block ids nobody holds. Any order works: which free block
# a sequence gets does not matter, only that no two sequences ever hold the same one.

# %%
class MyBlockManager:
    """A free pool of blocks, and a block table per sequence."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_blocks = list(range(num_blocks))  # the empty parking spaces

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def blocks_needed(self, seq: Sequence) -> int:
        """Blocks that hold all of seq's tokens."""
        ### BEGIN SOLUTION
        # Hint: ceil(n / block_size) in integers is -(-n // block_size).
        return -(-len(seq.token_ids) // self.block_size)
        ### END SOLUTION

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether allocate(seq) would succeed now."""
        ### BEGIN SOLUTION
        # Hint: compare blocks_needed(seq) with num_free_blocks.
        return self.blocks_needed(seq) <= self.num_free_blocks
        ### END SOLUTION

    def allocate(self, seq: Sequence) -> None:
        """Give seq the blocks for all its tokens, or raise OutOfBlocks and change nothing."""
        ### BEGIN SOLUTION
        # Hint: check first, raise OutOfBlocks(...) if short; then pop the blocks into seq.block_table.
        need = self.blocks_needed(seq)
        if need > self.num_free_blocks:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs {need} blocks, "
                              f"{self.num_free_blocks} free")
        seq.block_table = [self.free_blocks.pop() for _ in range(need)]
        ### END SOLUTION

    def free(self, seq: Sequence) -> None:
        """Give seq's blocks back to the pool."""
        ### BEGIN SOLUTION
        # Hint: put seq.block_table's blocks back in free_blocks; leave seq with an empty table.
        self.free_blocks.extend(seq.block_table)
        seq.block_table = []
        ### END SOLUTION

# %% [markdown]
# ## Try it
#
# Two cars park; a third does not fit, and the garage is exactly as it was.

# %%
manager = MyBlockManager(num_blocks=4, block_size=4)
first, second = Sequence(1, range(6)), Sequence(2, range(5))
manager.allocate(first)
manager.allocate(second)
print("tables:", first.block_table, second.block_table, "free:", manager.num_free_blocks)
try:
    manager.allocate(Sequence(3, range(9)))
except OutOfBlocks as error:
    print("OutOfBlocks:", error, "| free:", manager.num_free_blocks)

# %% [markdown]
# ## Check
#
# The same cases the grader runs (with other random inputs): every row should say *passed*.

# %%
pl.check("ex01", BlockManager=MyBlockManager)
