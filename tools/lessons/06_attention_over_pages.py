# %% [markdown]
# # 06 · Attention over pages
#
# So far blocks held abstract "tokens". On a GPU each slot holds that token's **key** and
# **value** vectors, for every layer and KV head. The cache of one layer is two tensors:
#
# ```
# k_cache, v_cache : (num_blocks, block_size, num_kv_heads, head_dim)
# ```
#
# Slot `s` is row `s % block_size` of block `s // block_size`. This lesson writes K/V into
# slots and computes attention **through the block table**, in plain torch, and checks that the
# answer is exactly the usual, contiguous attention.

# %% [markdown]
# ## A small cache and two sequences
#
# Tiny sizes on purpose (block size 4, 2 KV heads of dimension 8), so you can print things.
# The block manager decides *where* each token goes; the cache only stores numbers. The two
# sequences grow side by side, as in a batch, so their blocks interleave.

# %%
import torch

import pagedlab as pl

torch.manual_seed(0)
block_size, num_kv_heads, num_heads, head_dim = 4, 2, 4, 8
manager = pl.BlockManager(num_blocks=8, block_size=block_size)
cache = pl.KVCache(num_blocks=8, block_size=block_size, num_kv_heads=num_kv_heads,
                   head_dim=head_dim, device="cpu")
a = pl.Sequence(1, [0, 1, 2])
b = pl.Sequence(2, [0, 1, 2])
manager.allocate(a)
manager.allocate(b)
for token in range(3, 10):          # they generate side by side, so their blocks interleave
    if len(a) < 7:
        manager.append_token(a, token)
    manager.append_token(b, token)
print(cache)
print("a:", len(a), "tokens, block table", a.block_table)
print("b:", len(b), "tokens, block table", b.block_table)

# %% [markdown]
# ## Writing K/V into slots
#
# A model layer produces one key and one value per token (per KV head). `cache.write` stores
# them at the slots `slot_mapping` names: the Triton store kernel where it can run (in the
# interpreter here), else `index_copy_`. Look at the slots: they jump between blocks.

# %%
k_a = torch.randn(len(a), num_kv_heads, head_dim)   # (tokens, kv_heads, head_dim)
v_a = torch.randn(len(a), num_kv_heads, head_dim)
k_b = torch.randn(len(b), num_kv_heads, head_dim)
v_b = torch.randn(len(b), num_kv_heads, head_dim)
cache.write(0, k_a, v_a, manager.slot_mapping(a))
cache.write(0, k_b, v_b, manager.slot_mapping(b))
print("slots of a:", manager.slot_mapping(a))
print("slots of b:", manager.slot_mapping(b))

# %% [markdown]
# ## Where each token is read from
#
# To attend over sequence `a`, token position `p` is read from block `block_table[p // 4]`,
# row `p % 4`. Colour = logical block; the numbers are the physical block and slot.

# %%
from IPython.display import HTML

from pagedlab.widgets import token_reads_html

HTML(token_reads_html(a.block_table, len(a), block_size))

# %% [markdown]
# ## Gathering the blocks gives back the contiguous keys
#
# Index the cache with the block table, flatten blocks and rows, cut at the context length:
# that is `a`'s keys, in order. `equal: True` means not a single bit differs.

# %%
k_cache, v_cache = cache[0]
table = torch.tensor(a.block_table)
gathered = k_cache[table].flatten(0, 1)[:len(a)]   # (tokens, kv_heads, head_dim)
print("gathered shape:", tuple(gathered.shape), "| equal:", torch.equal(gathered, k_a))

# %% [markdown]
# ## Paged attention = contiguous attention
#
# Each sequence decodes one new token: a query `q` of shape `(num_seqs, num_heads, head_dim)`.
# With 4 query heads over 2 KV heads (grouped-query attention), heads 0-1 read KV head 0 and
# heads 2-3 read KV head 1. `pl.paged_attention_reference` gathers through the block tables and
# attends; `pl.attention_reference` attends over contiguous K/V. Look at the difference: zero
# up to float rounding.

# %%
q = torch.randn(2, num_heads, head_dim)                        # (num_seqs, num_heads, head_dim)
block_tables = torch.tensor([a.block_table + [-1] * (len(b.block_table) - len(a.block_table)),
                             b.block_table], dtype=torch.int32)  # (num_seqs, max_blocks), -1 = pad
context_lens = torch.tensor([len(a), len(b)], dtype=torch.int32)
paged = pl.paged_attention_reference(q, k_cache, v_cache, block_tables, context_lens)
contiguous = torch.stack([pl.attention_reference(q[0:1], k_a, v_a)[0],
                          pl.attention_reference(q[1:2], k_b, v_b)[0]])
print("output:", tuple(paged.shape), "| max |paged - contiguous|:",
      f"{(paged - contiguous).abs().max():.1e}")

# %% [markdown]
# ## The same thing in a few lines
#
# Nothing magic happens inside: for each sequence, gather its keys and values, repeat KV heads
# for their query heads, softmax of scaled dot products, weighted sum of values.

# %%
def my_paged_attention(q, k_cache, v_cache, block_tables, context_lens):
    out = torch.empty_like(q)                                   # (seqs, heads, hd)
    group = q.shape[1] // k_cache.shape[2]                      # query heads per KV head
    for s, n in enumerate(context_lens.tolist()):
        used = block_tables[s, :-(-n // k_cache.shape[1])].long()
        k = k_cache[used].flatten(0, 1)[:n].repeat_interleave(group, dim=1)  # (n, heads, hd)
        v = v_cache[used].flatten(0, 1)[:n].repeat_interleave(group, dim=1)  # (n, heads, hd)
        scores = torch.einsum("hd,nhd->hn", q[s], k) / q.shape[-1] ** 0.5     # (heads, n)
        out[s] = torch.einsum("hn,nhd->hd", scores.softmax(-1), v)           # (heads, hd)
    return out


mine = my_paged_attention(q, k_cache, v_cache, block_tables, context_lens)
print("max |mine - reference|:", f"{(mine - paged).abs().max():.1e}")

# %% [markdown]
# ## Your turn
#
# In `exercises/ex06_paged_attention_torch.ipynb` you write paged attention in plain torch,
# grouped-query heads and partial last blocks included; `pl.check("ex06", ...)` compares it with
# the reference on cases you have not seen.
#
# ## Summary
#
# * Per layer, K and V live in `(num_blocks, block_size, num_kv_heads, head_dim)` tensors.
# * Writing a token means storing its K/V at `slot_mapping[p]`; reading means following the
#   block table.
# * Attention through the block table gives the same numbers as contiguous attention: paging
#   changes where memory is, not what is computed.
#
# Next: [07 · The Triton kernel](07_triton_kernel.ipynb), which does the gather and the
# attention in one pass without ever building the contiguous copy.
