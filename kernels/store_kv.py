"""Writing new keys and values into their slots of the paged KV cache, in Triton.

What it computes. For every new token ``t`` the block manager has chosen a physical slot
``slot_mapping[t] = block_table[pos // block_size] * block_size + pos % block_size``. The kernel
copies the token's key and value rows there::

    k, v             : (num_tokens, num_kv_heads, head_dim)
    k_cache, v_cache : (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache.view(-1, num_kv_heads, head_dim)[slot_mapping[t]] = k[t]      (same for v)

A slot of -1 means "skip this token" (a padding token, or one whose K/V are already cached).

The grid. One program per TOKENS consecutive tokens. Each token's row (all KV heads, all head
dims: ``num_kv_heads * head_dim`` numbers) is contiguous in ``k`` and in the cache, so one masked
load and one masked store move it: the mask drops skipped tokens, tokens past the end, and the
padding of the row up to a power of two.

Test: tests/test_kernels.py (against ``index_copy``). See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import pagedlab.backend  # noqa: F401  (sets TRITON_INTERPRET before @triton.jit below runs)
import torch
import triton
import triton.language as tl

from .launch_config import store_tokens_per_program


@triton.jit
def store_kv_kernel(
    k_ptr,  # (num_tokens, num_kv_heads, head_dim)
    v_ptr,  # (num_tokens, num_kv_heads, head_dim)
    k_cache_ptr,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache_ptr,  # (num_blocks, block_size, num_kv_heads, head_dim)
    slot_mapping_ptr,  # (num_tokens,) int32 or int64, -1 = skip
    num_tokens,
    ROW: tl.constexpr,  # num_kv_heads * head_dim: the numbers of one token
    ROW_PAD: tl.constexpr,  # ROW padded up to a power of two
    TOKENS: tl.constexpr,  # tokens per program (a power of two)
):
    # -- which tokens this program moves, and where each one goes --
    tokens = tl.program_id(0) * TOKENS + tl.arange(0, TOKENS)  # (T,)
    token_mask = tokens < num_tokens  # (T,)
    slot = tl.load(slot_mapping_ptr + tokens, mask=token_mask, other=-1).to(tl.int64)  # (T,)
    cols = tl.arange(0, ROW_PAD)  # (R,)
    mask = (token_mask & (slot >= 0))[:, None] & (cols < ROW)[None, :]  # (T, R)

    # -- copy the rows: k[t] -> k_cache slot, v[t] -> v_cache slot --
    src = tokens.to(tl.int64)[:, None] * ROW + cols[None, :]  # (T, R)
    dst = slot[:, None] * ROW + cols[None, :]  # (T, R) row `slot` of the flattened cache
    tl.store(k_cache_ptr + dst, tl.load(k_ptr + src, mask=mask), mask=mask)
    tl.store(v_cache_ptr + dst, tl.load(v_ptr + src, mask=mask), mask=mask)


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Launch :func:`store_kv_kernel`. Inputs must already be validated (``KVCache.write`` does
    it): slots within the cache, no slot twice.
    """
    num_tokens, num_kv_heads, head_dim = k.shape
    # The kernel addresses a token's row as `index * ROW`: every row must be dense and in order.
    assert k.is_contiguous() and v.is_contiguous() and k.shape == v.shape
    assert k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.shape == v_cache.shape
    assert k_cache.shape[2:] == k.shape[1:] and k.dtype == k_cache.dtype == v.dtype == v_cache.dtype
    assert slot_mapping.is_contiguous() and slot_mapping.shape == (num_tokens,)
    if num_tokens == 0:
        return
    row = num_kv_heads * head_dim
    row_pad = triton.next_power_of_2(row)
    tokens = store_tokens_per_program(row_pad, num_tokens, on_gpu=k.device.type != "cpu")
    grid = (triton.cdiv(num_tokens, tokens),)
    store_kv_kernel[grid](k, v, k_cache, v_cache, slot_mapping, num_tokens,
                          ROW=row, ROW_PAD=row_pad, TOKENS=tokens)


# -- try it: the kernel against index_copy ---------------------------------------------------------
# python -m pagedlab.kernels.store_kv
if __name__ == "__main__":
    device = "cuda" if torch.cuda.is_available() else "cpu"
    k_cache = torch.zeros(4, 16, 2, 64, device=device)  # (blocks, block_size, kv_heads, hd)
    v_cache = torch.zeros_like(k_cache)
    k, v = torch.randn(2, 5, 2, 64, device=device)  # (tokens, kv_heads, hd) each
    slot_mapping = torch.tensor([17, 3, -1, 60, 0], device=device)  # -1: skip this token
    store_kv(k, v, k_cache, v_cache, slot_mapping)
    keep = slot_mapping >= 0
    expected = torch.zeros_like(k_cache).view(-1, 2, 64).index_copy(0, slot_mapping[keep], k[keep])
    print("matches index_copy:", torch.equal(k_cache.view(-1, 2, 64), expected))
