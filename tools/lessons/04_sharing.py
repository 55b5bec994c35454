# %% [markdown]
# # 04 · Sharing
#
# Paging has a second gift: because a block table is only a list of block ids, **two sequences
# can point at the same physical block**. That happens all the time:
#
# * **parallel sampling**: one prompt, `n` different answers; all share the prompt's blocks;
# * **beam search**: beams share everything up to where they diverged;
# * **a shared system prompt** (prefix caching): many requests start with the same tokens.
#
# Three mechanisms make it safe: **reference counts** (a block is free only when nobody points
# at it), **fork** (a child shares every block of its parent), and **copy-on-write** (a shared
# block that is about to change is copied first).

# %% [markdown]
# ## Fork: share every block
#
# A 6-token prompt fills one block and half of another (block size 4). Forking it twice makes
# three samples that share both blocks. Look at the reference counts: 3 each, and no new block.

# %%
import pagedlab as pl

manager = pl.BlockManager(num_blocks=8, block_size=4)
prompt = pl.Sequence(1, [11, 12, 13, 14, 15, 16])
manager.allocate(prompt)
samples = [prompt, manager.fork(prompt, 2), manager.fork(prompt, 3)]
for seq in samples:
    print(f"sample {seq.seq_id}: block table {seq.block_table}")
print("reference counts:", {b: manager.ref_count(b) for b in prompt.block_table},
      "| blocks in use:", manager.num_used_blocks)

# %% [markdown]
# ## Copy-on-write
#
# Now each sample writes its own next token. The full block 0 never changes, so it stays
# shared. The half-full block 1 is about to receive *different* tokens, so the first samples
# to write get a private copy: `append_token` returns the `(src, dst)` copy the KV cache must do
# before writing. The last sample to write is then the only holder and writes in place.

# %%
for seq, token in zip(samples, [21, 22, 23]):
    copy = manager.append_token(seq, token)
    print(f"sample {seq.seq_id} appends {token}: copy {copy}, block table {seq.block_table}")
print("reference counts:", {b: manager.ref_count(b) for b in range(manager.num_blocks)
                            if manager.ref_count(b)})

# %% [markdown]
# The copies are real data movement on the GPU: `KVCache.copy_blocks` performs them, in every
# layer at once. Check that the destination block holds the same keys as its source.

# %%
import torch

cache = pl.KVCache(num_blocks=8, block_size=4, num_kv_heads=1, head_dim=4, device="cpu")
cache.k[0, 1] = torch.arange(16.0).view(4, 1, 4)     # pretend block 1 holds the prompt's keys
cache.copy_blocks([(1, 2)])
print("block 2 == block 1:", torch.equal(cache.k[0, 2], cache.k[0, 1]))

# %% [markdown]
# ## Play: fork, append, free
#
# Pick a sequence in the menu, then fork it, append tokens, free it. Look for:
#
# * shared blocks are **yellow with a thick border**, labelled `shared ×N`, and underlined in
#   the block tables;
# * appending to a sequence whose last block is shared and partly full shows the copy;
#   appending when the shared block is full takes a fresh block and copies nothing;
# * freeing a sequence only frees the blocks whose count drops to zero;
# * the line under the pool: blocks in use vs blocks needed without sharing.

# %%
from pagedlab.widgets import SharingWidget

SharingWidget(num_blocks=12, block_size=4, prompt_len=6)

# %% [markdown]
# ## How much does sharing save?
#
# The simulator serves Alpaca-like requests with `n` parallel samples or a beam search of width
# `beam_width`, and measures blocks saved by sharing over blocks needed without it (the paper's
# Fig. 15 measure). The paper reports, on Alpaca, 6.1-9.8% for parallel sampling and
# 37.6-55.2% for beam search. Look at beam search: beams share much more than samples do,
# because they keep sharing long after the prompt.

# %%
requests = pl.workloads.alpaca_like(200, seed=0)
for label, options in [("parallel sampling n=2", dict(n=2)), ("parallel sampling n=4", dict(n=4)),
                       ("beam search width 2", dict(beam_width=2)),
                       ("beam search width 4", dict(beam_width=4))]:
    result = pl.simulate(requests, pl.BlockManager(2048, 16), **options)
    print(f"{label:<22} saves {100 * result.sharing_saving:5.1f}% of the blocks")

# %% [markdown]
# ## Prefix caching: sharing across requests
#
# With `enable_prefix_caching=True`, every **full** block is also indexed by a hash of its tokens
# (chained to the hash of the block before it). A new prompt that starts the same way finds
# those blocks and skips recomputing them; `allocate` returns how many tokens it found. A freed
# cached block stays reusable until the pool needs room (least recently used first).
#
# Two requests start with the same 8-token system prompt (two full blocks of 4). Look at the
# second allocation: 8 tokens found, and it shares the first request's two blocks.

# %%
system_prompt = list(range(100, 108))
cached_manager = pl.BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
first = pl.Sequence(1, system_prompt + [1, 2, 3])
second = pl.Sequence(2, system_prompt + [7, 8])
print("first request found", cached_manager.allocate(first), "tokens in the cache:",
      first.block_table)
print("second request found", cached_manager.allocate(second), "tokens in the cache:",
      second.block_table)
cached_manager.free(first)
cached_manager.free(second)
third = pl.Sequence(3, system_prompt + [9])
print("after both left, a third request still finds", cached_manager.allocate(third), "tokens:",
      third.block_table)

# %% [markdown]
# At scale: ShareGPT-like requests whose prompts start with the same 64-token system prompt.
# The prefix hit rate is the share of prompt tokens found in the cache.

# %%
shared = pl.workloads.with_shared_prefix(pl.workloads.sharegpt_like(200, seed=0), prefix_len=64)
for caching in [False, True]:
    result = pl.simulate(shared, pl.BlockManager(4096, 16, enable_prefix_caching=caching))
    print(f"prefix caching {'on ' if caching else 'off'}: {100 * result.prefix_hit_rate:4.1f}% of "
          f"prompt tokens found in the cache")

# %% [markdown]
# ## Your turn
#
# * `exercises/ex03_copy_on_write.ipynb`: write `fork` and the copy-on-write branch of
#   `append_token`.
# * `exercises/ex04_prefix_cache.ipynb`: hash full blocks, find a prompt's cached prefix, and
#   keep freed cached blocks until they are evicted.
#
# ## Summary
#
# * A block may appear in several block tables; its reference count says how many.
# * `fork` shares everything; a shared block is copied only when it is about to change
#   (copy-on-write), so full blocks stay shared forever.
# * Parallel sampling saves a little, beam search a lot; prefix caching shares across requests
#   and also saves the compute of the shared prefix.
#
# Next: [05 · Scheduling](05_scheduling.ipynb).
