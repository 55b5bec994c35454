# %% [markdown]
# # Exercise 3: fork and copy-on-write
#
# Parallel sampling and beam search start many sequences from one prompt. They need not copy
# its KV cache: they **share** its blocks, and a reference count says how many block tables
# hold each block. Only when a sequence writes into a block that others still hold does it get
# its own copy first: **copy-on-write**.
#
# `MyBlockManager` below allocates (every block starts with ref count 1), maps slots and reports
# ref counts. You write:
#
# - `fork(parent, child_id)`: a new `Sequence` with the parent's tokens and a *copy* of its block
#   table (same block ids); every block's ref count goes up by one.
# - `append_token(seq, token_id)`: as in exercise 2, plus: if the last block is partly filled
#   and shared (ref count > 1), take a new block, drop one reference to the old one, put the new
#   one in the table and **return `(old, new)`**: the copy the KV cache must make. Otherwise
#   return `None`. A full shared block is never written again: the token goes into a new block.
# - `free(seq)`: lower the ref count of each of its blocks; a block that reaches 0 is free.
#
# Anything that needs a block and finds none raises `pl.OutOfBlocks` and changes nothing.
# See notebooks/04_sharing.ipynb.

# %%
import pagedlab as pl
from pagedlab import OutOfBlocks, Sequence

# %%
class MyBlockManager:
    """Blocks shared between sequences, with reference counts and copy-on-write."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_blocks = list(range(num_blocks))
        self.ref_counts = [0] * num_blocks   # how many block tables hold each block

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def ref_count(self, block_id: int) -> int:
        return self.ref_counts[block_id]

    def _take_block(self) -> int:
        block = self.free_blocks.pop()
        self.ref_counts[block] = 1
        return block

    def allocate(self, seq: Sequence) -> None:
        need = -(-len(seq.token_ids) // self.block_size)
        if need > self.num_free_blocks:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs {need} blocks, {self.num_free_blocks} free")
        seq.block_table = [self._take_block() for _ in range(need)]

    def slot_mapping(self, seq: Sequence) -> list[int]:
        size = self.block_size
        return [seq.block_table[p // size] * size + p % size for p in range(len(seq.token_ids))]

    def fork(self, parent: Sequence, child_id: int) -> Sequence:
        """A new sequence sharing every block of parent."""
        ### BEGIN SOLUTION
        # Hint: Sequence(child_id, parent.token_ids), then a copy of the block table and ref counts + 1.
        child = Sequence(child_id, parent.token_ids)
        child.block_table = list(parent.block_table)
        for block in child.block_table:
            self.ref_counts[block] += 1
        return child
        ### END SOLUTION

    def append_token(self, seq: Sequence, token_id: int) -> tuple[int, int] | None:
        """Append one token; returns the (src, dst) block copy copy-on-write needs, or None."""
        ### BEGIN SOLUTION
        # Hint: three cases: room in an unshared last block; a full last block (new block); a partly filled shared last block (copy).
        filled = len(seq.token_ids) % self.block_size
        shared = filled and self.ref_counts[seq.block_table[-1]] > 1
        copy = None
        if filled == 0 or shared:
            if not self.free_blocks:
                raise OutOfBlocks(f"sequence {seq.seq_id} needs a block, none is free")
            if shared:
                old = seq.block_table[-1]
                self.ref_counts[old] -= 1
                seq.block_table[-1] = new = self._take_block()
                copy = (old, new)
            else:
                seq.block_table.append(self._take_block())
        seq.token_ids.append(token_id)
        return copy
        ### END SOLUTION

    def free(self, seq: Sequence) -> None:
        """Drop seq's references; blocks nobody holds go back to the pool."""
        ### BEGIN SOLUTION
        # Hint: ref count - 1 for each block of seq.block_table; at 0 it goes back to free_blocks.
        for block in seq.block_table:
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free_blocks.append(block)
        seq.block_table = []
        ### END SOLUTION

# %% [markdown]
# ## Try it
#
# Two samples share a 6-token prompt (blocks of 4): the first block is full and stays shared,
# the second is half full, so the first sample to write into it copies it.

# %%
manager = MyBlockManager(num_blocks=6, block_size=4)
prompt = Sequence(1, [3, 1, 4, 1, 5, 9])
manager.allocate(prompt)
sample = manager.fork(prompt, child_id=2)
print("shared:", prompt.block_table, sample.block_table,
      "ref counts:", [manager.ref_count(b) for b in prompt.block_table])
print("sample writes -> copy", manager.append_token(sample, 2))
print("prompt writes -> copy", manager.append_token(prompt, 6))
print("tables:", prompt.block_table, sample.block_table)

# %% [markdown]
# ## Check

# %%
pl.check("ex03", BlockManager=MyBlockManager)
