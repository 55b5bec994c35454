# %% [markdown]
# # Exercise 6: paged attention in plain torch
#
# At every decode step each sequence has one new query token. It attends to all the keys and
# values of its context, which sit in the paged KV cache: token `t` of sequence `i` lives in
# physical block `block_tables[i, t // block_size]`, row `t % block_size`.
#
# Write `my_paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None)`:
#
# | tensor | shape |
# | --- | --- |
# | `q` | `(num_seqs, num_heads, head_dim)` |
# | `k_cache`, `v_cache` | `(num_blocks, block_size, num_kv_heads, head_dim)` |
# | `block_tables` | `(num_seqs, max_blocks)`, padded with -1 |
# | `context_lens` | `(num_seqs,)` |
# | returns | `(num_seqs, num_heads, head_dim)` |
#
# For each sequence: **gather** its keys and values through the block table into contiguous
# `(context_len, num_kv_heads, head_dim)` tensors, then `softmax(q . K^T * scale) @ V` with
# `scale = 1 / sqrt(head_dim)` when not given. With grouped-query attention (`num_heads` a
# multiple of `num_kv_heads`), query head `h` reads KV head `h // (num_heads // num_kv_heads)`.
# Use plain torch (pagedlab's own attention functions are the answer, so they do not count).
# See notebooks/06_attention_over_pages.ipynb.

# %%
import math

import torch

import pagedlab as pl

# %% [markdown]
# ## Step 1: gather one sequence's keys (or values)

# %%
def gather(cache: torch.Tensor, block_table: torch.Tensor, context_len: int) -> torch.Tensor:
    """(context_len, num_kv_heads, head_dim): the sequence's tokens, read through its table."""
    ### BEGIN SOLUTION
    # Hint: take the first ceil(context_len / block_size) entries of block_table, index the cache with them, flatten blocks x rows, cut to context_len.
    block_size = cache.shape[1]
    used = -(-context_len // block_size)                       # blocks holding the context
    blocks = cache[block_table[:used].long()]                  # (used, block_size, kv_heads, head_dim)
    return blocks.flatten(0, 1)[:context_len]                  # (context_len, kv_heads, head_dim)
    ### END SOLUTION

# %% [markdown]
# ## Step 2: attend

# %%
def my_paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    """Decode attention over a paged KV cache; returns (num_seqs, num_heads, head_dim)."""
    num_seqs, num_heads, head_dim = q.shape
    group = num_heads // k_cache.shape[2]                      # query heads per KV head
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    out = torch.empty_like(q)                                  # (num_seqs, num_heads, head_dim)
    for i in range(num_seqs):
        ### BEGIN SOLUTION
        # Hint: gather k and v, repeat_interleave them `group` times on the head dim, then softmax(scores) @ v per head.
        context_len = int(context_lens[i])
        k = gather(k_cache, block_tables[i], context_len)      # (T, kv_heads, head_dim)
        v = gather(v_cache, block_tables[i], context_len)      # (T, kv_heads, head_dim)
        k = k.repeat_interleave(group, dim=1)                  # (T, num_heads, head_dim)
        v = v.repeat_interleave(group, dim=1)                  # (T, num_heads, head_dim)
        scores = torch.einsum("hd,thd->ht", q[i], k) * scale   # (num_heads, T)
        weights = scores.softmax(dim=-1)                       # (num_heads, T)
        out[i] = torch.einsum("ht,thd->hd", weights, v)        # (num_heads, head_dim)
        ### END SOLUTION
    return out

# %% [markdown]
# ## Try it
#
# Lay out two sequences' keys and values in shuffled blocks, and compare with attention over
# the same keys and values kept contiguous (the answer should not depend on where blocks are).

# %%
torch.manual_seed(0)
block_size, kv_heads, head_dim = 4, 1, 8
lengths = [6, 3]
k_seqs = [torch.randn(n, kv_heads, head_dim) for n in lengths]
v_seqs = [torch.randn(n, kv_heads, head_dim) for n in lengths]
k_cache = torch.zeros(5, block_size, kv_heads, head_dim)
v_cache = torch.zeros(5, block_size, kv_heads, head_dim)
block_tables = torch.tensor([[3, 0], [4, -1]], dtype=torch.int32)
for i, n in enumerate(lengths):
    for t in range(n):
        block, row = block_tables[i, t // block_size], t % block_size
        k_cache[block, row], v_cache[block, row] = k_seqs[i][t], v_seqs[i][t]
q = torch.randn(2, 2, head_dim)
paged = my_paged_attention(q, k_cache, v_cache, block_tables, torch.tensor(lengths))
for i in range(2):
    scores = torch.einsum("hd,td->ht", q[i], k_seqs[i][:, 0]) / math.sqrt(head_dim)
    contiguous = scores.softmax(-1) @ v_seqs[i][:, 0]
    print(f"sequence {i}: largest difference from contiguous attention",
          float((paged[i] - contiguous).abs().max()))

# %% [markdown]
# ## Check

# %%
pl.check("ex06", paged_attention=my_paged_attention)
