# %% [markdown]
# # Exercise 4: a prefix cache
#
# Many prompts start the same way (a system prompt, a few-shot preamble). With a **prefix
# cache**, a new prompt reuses the blocks that already hold that start, instead of computing
# their keys and values again. vLLM's rules, which you implement here:
#
# - Only **full** blocks are cached. A block's **hash** chains its parent's hash and its own
#   tokens: `hash((parent_hash, tuple(tokens)))`, with `None` as the parent of the first block.
#   Equal tokens after a different prefix are a different block.
# - `allocate(seq)` looks up the prompt's block hashes in order and stops at the first miss. Hit
#   blocks are shared (ref count + 1); the rest come from the pool and full ones are added to
#   the cache (the first block with a given hash stays its cached copy). It returns how many
#   prompt tokens were found, but a prompt found entirely in the cache still recomputes its
#   last token: return `min(hits * block_size, len(tokens) - 1)`. All or nothing, as always.
# - `free(seq)` releases blocks **last first**. A cached block nobody holds is not forgotten: it
#   becomes **evictable** (and counts in `num_free_blocks`); a later prompt can still hit it.
# - A new block comes from the never-used/uncached pool first; when that is empty, the cached
#   evictable block freed **longest ago** is evicted (least recently used) and leaves the cache.
#
# See notebooks/04_sharing.ipynb.

# %%
from collections import OrderedDict

import pagedlab as pl
from pagedlab import OutOfBlocks, Sequence

# %%
class MyBlockManager:
    """A block manager with a prefix cache (LRU eviction of unreferenced cached blocks)."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_blocks = list(range(num_blocks))   # hold nothing reusable
        self.ref_counts = [0] * num_blocks
        self.cached = {}                    # block hash -> block id
        self.hash_of = {}                   # block id -> its hash, for cached blocks
        self.evictable = OrderedDict()      # cached blocks nobody holds, least recently freed first

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks) + len(self.evictable)

    def ref_count(self, block_id: int) -> int:
        return self.ref_counts[block_id]

    def block_hashes(self, tokens: list[int]) -> list[int]:
        """The chained hash of every *full* block of tokens."""
        ### BEGIN SOLUTION
        # Hint: parent = None; for each full block: parent = hash((parent, tuple(block_tokens))).
        hashes, parent, size = [], None, self.block_size
        for start in range(0, len(tokens) - size + 1, size):
            parent = hash((parent, tuple(tokens[start:start + size])))
            hashes.append(parent)
        return hashes
        ### END SOLUTION

    def take_block(self) -> int:
        """A block for new content: an uncached free one, else evict the least recently freed."""
        ### BEGIN SOLUTION
        # Hint: pop from free_blocks if you can; else popitem(last=False) from evictable and forget its hash.
        if self.free_blocks:
            block = self.free_blocks.pop()
        else:
            block, _ = self.evictable.popitem(last=False)
            del self.cached[self.hash_of.pop(block)]
        self.ref_counts[block] = 1
        return block
        ### END SOLUTION

    def allocate(self, seq: Sequence) -> int:
        """Blocks for the whole prompt, reusing cached ones; returns the tokens found cached."""
        ### BEGIN SOLUTION
        # Hint: hits = leading hashes found in self.cached; free blocks taken = new blocks + hits that were evictable.
        hashes = self.block_hashes(seq.token_ids)
        hits = []
        for block_hash in hashes:
            if block_hash not in self.cached:
                break
            hits.append(self.cached[block_hash])
        need = -(-len(seq.token_ids) // self.block_size)
        revived = sum(1 for block in hits if self.ref_counts[block] == 0)
        if need - len(hits) + revived > self.num_free_blocks:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs {need - len(hits) + revived} free "
                              f"blocks, {self.num_free_blocks} free")
        for block in hits:                  # claim hits first: making room must not evict them
            self.evictable.pop(block, None)
            self.ref_counts[block] += 1
        table = hits + [self.take_block() for _ in range(need - len(hits))]
        for block, block_hash in zip(table[len(hits):], hashes[len(hits):]):
            if block_hash not in self.cached:
                self.cached[block_hash] = block
                self.hash_of[block] = block_hash
        seq.block_table = table
        return min(len(hits) * self.block_size, len(seq.token_ids) - 1)
        ### END SOLUTION

    def free(self, seq: Sequence) -> None:
        """Drop seq's references, last block first; cached blocks become evictable."""
        ### BEGIN SOLUTION
        # Hint: for block in reversed(seq.block_table): ref - 1; at 0 -> evictable if cached, else free_blocks.
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                if block in self.hash_of:
                    self.evictable[block] = None
                else:
                    self.free_blocks.append(block)
        seq.block_table = []
        ### END SOLUTION

# %% [markdown]
# ## Try it
#
# Two prompts share an 8-token system prompt (two blocks of 4): the second finds 8 tokens in the
# cache and shares those two blocks.

# %%
manager = MyBlockManager(num_blocks=8, block_size=4)
system = [7, 7, 1, 2, 3, 4, 5, 6]
first, second = Sequence(1, system + [10, 11]), Sequence(2, system + [20])
print("first found", manager.allocate(first), "cached tokens; table", first.block_table)
print("second found", manager.allocate(second), "cached tokens; table", second.block_table)
manager.free(first)
manager.free(second)
print("after both leave:", manager.num_free_blocks, "free, of which",
      len(manager.evictable), "still cached")

# %% [markdown]
# ## Check

# %%
pl.check("ex04", BlockManager=MyBlockManager)
