# %% [markdown]
# # Exercise 7: the paged-attention kernel's inner loop, in Triton
#
# Lesson 07 built a Triton kernel that reads the KV cache through the block table. Here you
# write the heart of a simpler one: **one program per (sequence, query head)**, looping over
# the sequence's blocks.
#
# For each logical block of the context, the loop body
#
# 1. loads the **physical block id** from the block table,
# 2. loads that block's keys `(BLOCK_SIZE, HEAD_DIM)`, **masking** the tokens past
#    `context_len` (the last block is usually partly filled),
# 3. computes the scores `sum(k * q) * scale`, with `-inf` for masked tokens,
# 4. folds them into an **online softmax**: a running max `m_i`, a running sum `l_i` of
#    `exp(score - m_i)` and a running weighted sum `acc` of values, rescaling `l_i` and `acc` by
#    `exp(m_old - m_new)` whenever the max grows.
#
# Everything else (the grid, the query load, the final `acc / l_i`, the host wrapper that checks
# its inputs) is given. On a CPU the kernel runs in the **Triton interpreter**: exact but slow,
# so the shapes stay tiny. pagedlab decides this before Triton compiles anything, which is why
# `pagedlab.backend` is imported first. See notebooks/07_triton_kernel.ipynb.

# %%
import math

import torch

import pagedlab as pl
from pagedlab import backend  # decides compiled vs interpreted Triton before any @triton.jit

import triton
import triton.language as tl

print(backend.triton_status()["reason"])

# %% [markdown]
# ## The kernel
#
# `K` and `V` share one layout `(num_blocks, BLOCK_SIZE, num_kv_heads, HEAD_DIM)`, so one set of
# offsets serves both. `tl.arange` needs powers of two: `BLOCK_SIZE` and `HEAD_DIM` are.

# %%
@triton.jit
def my_paged_decode_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, scale,
    stride_q_seq, stride_q_head, stride_k_block, stride_k_token, stride_k_head,
    stride_table_seq, stride_out_seq, stride_out_head,
    QUERIES_PER_KV: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // QUERIES_PER_KV                               # the KV head this query head reads
    dims = tl.arange(0, HEAD_DIM)                                  # (D,)
    rows = tl.arange(0, BLOCK_SIZE)                                # (B,) token rows of a block
    context_len = tl.load(context_lens_ptr + seq)
    q = tl.load(q_ptr + seq * stride_q_seq + head * stride_q_head + dims).to(tl.float32)  # (D,)

    # -- online-softmax state, fp32 --
    m_i = tl.full([1], -1.0e30, dtype=tl.float32)                  # (1,) running max score
    l_i = tl.zeros([1], dtype=tl.float32)                          # (1,) running sum of exp(score - m_i)
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)                   # (D,) running sum of p * v

    for logical_block in range(0, tl.cdiv(context_len, BLOCK_SIZE)):
        ### BEGIN SOLUTION
        # Hint: physical = tl.load(block_tables_ptr + seq * stride_table_seq + logical_block); tokens = logical_block * BLOCK_SIZE + rows; mask = tokens < context_len.
        # -- where this block lives, and which of its rows hold context --
        physical = tl.load(block_tables_ptr + seq * stride_table_seq + logical_block).to(tl.int64)
        tokens = logical_block * BLOCK_SIZE + rows                 # (B,) positions in the sequence
        mask = tokens < context_len                                # (B,)
        offsets = (physical * stride_k_block + rows[:, None] * stride_k_token
                   + kv_head * stride_k_head + dims[None, :])      # (B, D)

        # -- scores of this block's keys --
        k = tl.load(k_cache_ptr + offsets, mask=mask[:, None], other=0.0).to(tl.float32)  # (B, D)
        scores = tl.sum(k * q[None, :], axis=1) * scale            # (B,)
        scores = tl.where(mask, scores, float("-inf"))             # (B,)

        # -- online softmax: raise the max, rescale what we have, add this block --
        m_new = tl.maximum(m_i, tl.max(scores, axis=0))            # (1,)
        alpha = tl.exp(m_i - m_new)                                # (1,) how much old terms shrink
        p = tl.exp(scores - m_new)                                 # (B,)
        l_i = l_i * alpha + tl.sum(p, axis=0)                      # (1,)
        v = tl.load(v_cache_ptr + offsets, mask=mask[:, None], other=0.0).to(tl.float32)  # (B, D)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)         # (D,)
        m_i = m_new
        ### END SOLUTION

    out = acc / l_i                                                # (D,)
    tl.store(out_ptr + seq * stride_out_seq + head * stride_out_head + dims, out)

# %% [markdown]
# ## The host wrapper (given)
#
# It checks everything the kernel trusts: the interpreter does not catch out-of-bounds reads.

# %%
def my_paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    """Decode attention over a paged KV cache with the Triton kernel above."""
    num_seqs, num_heads, head_dim = q.shape                      # (S, H, D)
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape      # (N, B, KV, D)
    for name, size in (("head_dim", head_dim), ("block_size", block_size)):
        if size & (size - 1):
            raise ValueError(f"{name}={size} must be a power of two (tl.arange needs one)")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    q, k_cache, v_cache = q.float().contiguous(), k_cache.float().contiguous(), v_cache.float().contiguous()
    block_tables = block_tables.to(torch.int32).contiguous()     # (S, max_blocks)
    context_lens = context_lens.to(torch.int32).contiguous()     # (S,)
    for i, n in enumerate(context_lens.tolist()):
        used = block_tables[i, : -(-n // block_size)]
        if n < 1 or len(used) * block_size < n or bool(((used < 0) | (used >= num_blocks)).any()):
            raise ValueError(f"sequence {i}: context of {n} tokens does not fit its block table")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    out = torch.empty_like(q)                                    # (S, H, D)
    my_paged_decode_kernel[(num_seqs, num_heads)](
        out, q, k_cache, v_cache, block_tables, context_lens, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        QUERIES_PER_KV=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size)
    return out

# %% [markdown]
# ## Try it
#
# Two sequences (6 and 3 tokens) in shuffled blocks of 4, two query heads sharing one KV head.
# The kernel should match plain torch over the same keys and values laid out contiguously.

# %%
torch.manual_seed(0)
lengths, block_size, head_dim = [6, 3], 4, 8
k_cache = torch.randn(4, block_size, 1, head_dim)
v_cache = torch.randn(4, block_size, 1, head_dim)
block_tables = torch.tensor([[2, 0], [3, -1]], dtype=torch.int32)
q = torch.randn(2, 2, head_dim)
out = my_paged_attention(q, k_cache, v_cache, block_tables, torch.tensor(lengths))
for i, n in enumerate(lengths):
    rows = k_cache[block_tables[i, : -(-n // block_size)].long()].flatten(0, 1)[:n, 0]  # (n, D)
    values = v_cache[block_tables[i, : -(-n // block_size)].long()].flatten(0, 1)[:n, 0]
    expected = (q[i] @ rows.T / math.sqrt(head_dim)).softmax(-1) @ values                # (H, D)
    print(f"sequence {i}: largest difference", float((out[i] - expected).abs().max()))

# %% [markdown]
# ## Check

# %%
pl.check("ex07", paged_attention=my_paged_attention)
