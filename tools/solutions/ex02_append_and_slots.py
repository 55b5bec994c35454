# %% [markdown]
# # Exercise 2: appending tokens and the slot mapping
#
# A running sequence grows by one token per step. The block manager finds room for it, and the
# attention kernel later needs to know the **slot** of every token: where in the KV-cache pool
# its key and value live.
#
# `MyBlockManager` below already allocates and frees (as in exercise 1). You write:
#
# - `append_token(seq, token_id)`: add the token to `seq.token_ids`. A new block is needed only
#   when the last block is full, i.e. when `len(seq.token_ids)` is a multiple of `block_size`
#   *before* the append. No free block: raise `pl.OutOfBlocks` and change nothing (the token is
#   not appended either).
# - `slot_mapping(seq)`: one slot per token, position `p` in slot
#   `block_table[p // block_size] * block_size + p % block_size`.
#
# See notebooks/02_pages_and_block_tables.ipynb.

# %%
import pagedlab as pl
from pagedlab import OutOfBlocks, Sequence

# %%
class MyBlockManager:
    """Allocate, free, grow by one token, and map token positions to slots."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_blocks = list(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def allocate(self, seq: Sequence) -> None:
        need = -(-len(seq.token_ids) // self.block_size)
        if need > self.num_free_blocks:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs {need} blocks, {self.num_free_blocks} free")
        seq.block_table = [self.free_blocks.pop() for _ in range(need)]

    def free(self, seq: Sequence) -> None:
        self.free_blocks.extend(seq.block_table)
        seq.block_table = []

    def append_token(self, seq: Sequence, token_id: int) -> None:
        """Append one token, taking a new block only when the last one is full."""
        ### BEGIN SOLUTION
        # Hint: a full last block means len(seq.token_ids) % block_size == 0; check for a free block before changing anything.
        if len(seq.token_ids) % self.block_size == 0:
            if not self.free_blocks:
                raise OutOfBlocks(f"sequence {seq.seq_id} needs a new block, none is free")
            seq.block_table.append(self.free_blocks.pop())
        seq.token_ids.append(token_id)
        ### END SOLUTION

    def slot_mapping(self, seq: Sequence) -> list[int]:
        """The physical slot of every token position of seq."""
        ### BEGIN SOLUTION
        # Hint: slot = block_table[p // block_size] * block_size + p % block_size for p in range(len(seq.token_ids)).
        size = self.block_size
        return [seq.block_table[p // size] * size + p % size for p in range(len(seq.token_ids))]
        ### END SOLUTION

# %% [markdown]
# ## Try it
#
# A 5-token prompt with blocks of 4 fills one block and starts a second; three more tokens fill
# the second block exactly, and the ninth token needs a third.

# %%
manager = MyBlockManager(num_blocks=4, block_size=4)
seq = Sequence(1, [10, 11, 12, 13, 14])
manager.allocate(seq)
for token in (15, 16, 17, 18):
    manager.append_token(seq, token)
    print(f"{len(seq.token_ids)} tokens -> block table {seq.block_table}, "
          f"free {manager.num_free_blocks}")
print("slots:", manager.slot_mapping(seq))

# %% [markdown]
# ## Check

# %%
pl.check("ex02", BlockManager=MyBlockManager)
