"""Paged attention for decoding, in Triton: one new query token per sequence.

What it computes. Each sequence has one new query token ``q[seq]`` (all heads) and a context of
``context_lens[seq]`` earlier tokens whose keys and values sit in the paged KV cache::

    k_cache, v_cache : (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables     : (num_seqs, max_blocks)   logical block i of seq -> physical block
    out[seq, head]   = softmax(q . K^T * scale) @ V      over the sequence's context

Token ``t`` of a sequence lives in physical block ``block_tables[seq, t // block_size]``, row
``t % block_size``. Nothing else about the cache is assumed: blocks may be anywhere, in any order.

The grid. One program per (sequence, KV head[, split]). With grouped-query attention several
query heads share one KV head; the program handles all of them (``HEAD_ROWS`` rows, its query
heads padded to a power of two), so each key and value is read from memory once and used by
every query head that needs it. The products are ``tl.dot``s, which need 16 rows: with few query
heads on a GPU without tensor cores for the dtype (a T4, any fp32), padding to 16 rows would
multiply mostly zeros, so the program multiplies and sums over its real rows instead (``USE_DOT``
off). Which to use, the tile and the warps come from :mod:`pagedlab.kernels.launch_config`.

The loop. A program walks its context TILE tokens at a time. It looks up where the tile's
tokens live in the block table (once per block: a tile inside one block needs a single block id),
loads their keys and values, and folds the tile into an *online softmax* (kept in fp32): a
running maximum ``m``, a running sum ``l`` of exp(score - m) and a running weighted sum ``acc``
of values, rescaled whenever ``m`` grows. At the end ``acc / l`` is the attention output,
without ever holding all scores at once.

Split-K (flash-decoding). A few sequences with long contexts give too few programs to fill a GPU.
Then each context is cut into ``num_splits`` pieces handled by separate programs, each writing its
partial ``(acc, m, l)``; a second small kernel merges them.
:func:`pagedlab.kernels.launch_config.choose_num_splits` decides.

Masks. Tokens past the context (the partial last block) score -inf; head dims that are not a
power of two (80, 96) are padded up with masked loads; padded query rows are never stored.

Dtypes. fp32, fp16 and bf16 in the cache; scores, softmax and accumulators in fp32. In the
interpreter (CPU) every ``tl.dot`` runs in fp32, because a bf16 ``tl.dot`` there gives wrong
numbers. fp32 caches on a GPU use exact fp32 products (not TF32).

Test: tests/test_kernels.py (against pagedlab.paged_attention_reference); what it compiles to on a
T4, an A100 and an H100: tests/test_compile.py, benchmarks/results/compile_table.md. Benchmark:
``pagedlab bench`` (pagedlab/tools/bench.py). See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import dataclasses

import pagedlab.backend  # first: it sets TRITON_INTERPRET before @triton.jit below runs
import torch
import triton
import triton.language as tl

from .launch_config import DecodeConfig, choose_num_splits, decode_config

LOG2_E = 1.4426950408889634  # exp(x) == exp2(x * log2(e)); exp2 is the GPU's native instruction


@triton.jit
def paged_decode_kernel(
    out_ptr,  # (num_seqs, num_heads, head_dim)                   written when not SPLIT
    part_acc_ptr,  # (num_seqs, num_heads, num_splits, HEAD_DIM_PAD) fp32, written when SPLIT
    part_max_ptr,  # (num_seqs, num_heads, num_splits)              fp32, written when SPLIT
    part_sum_ptr,  # (num_seqs, num_heads, num_splits)              fp32, written when SPLIT
    q_ptr,  # (num_seqs, num_heads, head_dim)
    k_cache_ptr,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache_ptr,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables_ptr,  # (num_seqs, max_blocks) int32
    context_lens_ptr,  # (num_seqs,) int32
    qk_scale,  # softmax scale * log2(e)
    tokens_per_split,  # context tokens each split covers (a multiple of TILE)
    stride_q_seq, stride_q_head,
    stride_block, stride_token, stride_kv_head,  # of k_cache and v_cache alike
    stride_table_seq,
    stride_out_seq, stride_out_head,
    stride_part_seq, stride_part_head, stride_part_split,
    QUERIES_PER_KV: tl.constexpr,  # query heads per KV head (grouped-query attention)
    HEAD_ROWS: tl.constexpr,  # QUERIES_PER_KV padded up to a power of two (>= 16 for tl.dot)
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,  # HEAD_DIM padded up to a power of two >= 16
    BLOCK_SIZE: tl.constexpr,  # tokens per cache block (a power of two)
    TILE: tl.constexpr,  # tokens per loop step (a power of two >= 16)
    SPLIT: tl.constexpr,  # write partial results for the reduce kernel
    USE_DOT: tl.constexpr,  # products by tl.dot (tensor cores), else multiply and sum (FMAs)
    DOT_FP32: tl.constexpr,  # do the matrix products in fp32 (fp32 caches, the interpreter)
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    # -- which query heads and which context tokens this program owns --
    rows = tl.arange(0, HEAD_ROWS)  # (R,) query heads that share this KV head, padded
    dims = tl.arange(0, HEAD_DIM_PAD)  # (D,) head dims, padded
    head = kv_head * QUERIES_PER_KV + rows  # (R,)
    row_mask = rows < QUERIES_PER_KV  # (R,)
    dim_mask = dims < HEAD_DIM  # (D,)
    context_len = tl.load(context_lens_ptr + seq)
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, context_len)
    table = block_tables_ptr + seq * stride_table_seq  # this sequence's block table
    k_head = k_cache_ptr + kv_head * stride_kv_head  # this KV head's keys in block 0
    v_head = v_cache_ptr + kv_head * stride_kv_head

    # -- load the query heads once --
    q_offsets = seq * stride_q_seq + head[:, None] * stride_q_head + dims[None, :]  # (R, D)
    q = tl.load(q_ptr + q_offsets, mask=row_mask[:, None] & dim_mask[None, :], other=0.0)  # (R, D)
    if DOT_FP32 or not USE_DOT:
        q = q.to(tl.float32)

    # -- online-softmax state, fp32 (a finite start keeps exp2 free of inf - inf) --
    m_i = tl.full([HEAD_ROWS], -1.0e30, dtype=tl.float32)  # (R,) running max score
    l_i = tl.zeros([HEAD_ROWS], dtype=tl.float32)  # (R,) running sum of exp2(score - m_i)
    acc = tl.zeros([HEAD_ROWS, HEAD_DIM_PAD], dtype=tl.float32)  # (R, D) running sum of p * v

    for tile_start in range(start, end, TILE):
        tokens = tile_start + tl.arange(0, TILE)  # (T,) positions in the sequence
        token_mask = tokens < end  # (T,) the partial last block ends here

        # -- where this tile's tokens live: one block-table load per block, not per token --
        if TILE <= BLOCK_SIZE:  # the tile lies inside one block: one block id, one base address
            block = tl.load(table + tile_start // BLOCK_SIZE).to(tl.int64)  # physical block
            k_tile = k_head + block * stride_block  # this block's keys
            v_tile = v_head + block * stride_block
            token_offsets = (tile_start % BLOCK_SIZE + tl.arange(0, TILE)) * stride_token  # (T,)
        else:  # the tile spans whole blocks: load their ids once, then give each token its own
            logical = tile_start // BLOCK_SIZE + tl.arange(0, TILE // BLOCK_SIZE)  # (NB,)
            blocks = tl.load(table + logical, mask=logical * BLOCK_SIZE < end, other=0)  # (NB,)
            block = tl.reshape(tl.broadcast_to(blocks[:, None], (TILE // BLOCK_SIZE, BLOCK_SIZE)),
                               (TILE,)).to(tl.int64)  # (T,) each token's physical block
            k_tile, v_tile = k_head, v_head
            token_offsets = block * stride_block + (tokens % BLOCK_SIZE) * stride_token  # (T,)

        # -- load this tile's keys, transposed: one column per token --
        k = tl.load(k_tile + token_offsets[None, :] + dims[:, None],
                    mask=dim_mask[:, None] & token_mask[None, :], other=0.0)  # (D, T)

        # -- scores of every query head against every token, in log2 units --
        if not USE_DOT:  # few query heads: multiply and sum beats a dot padded to 16 rows
            scores = tl.sum(q[:, :, None] * k.to(tl.float32)[None, :, :], axis=1)  # (R, T)
        elif DOT_FP32:
            scores = tl.dot(q, k.to(tl.float32), input_precision="ieee")  # (R, T)
        else:
            scores = tl.dot(q, k)  # (R, T) fp32 accumulate
        scores = scores * qk_scale  # (R, T)
        scores = tl.where(token_mask[None, :], scores, float("-inf"))  # (R, T)

        # -- online softmax: raise the max, rescale what we have, add this tile --
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))  # (R,)
        alpha = tl.exp2(m_i - m_new)  # (R,) how much the old terms shrink
        p = tl.exp2(scores - m_new[:, None])  # (R, T)
        l_i = l_i * alpha + tl.sum(p, axis=1)  # (R,)
        m_i = m_new

        # -- load this tile's values (K and V share the layout) and accumulate p @ V --
        v = tl.load(v_tile + token_offsets[:, None] + dims[None, :],
                    mask=token_mask[:, None] & dim_mask[None, :], other=0.0)  # (T, D)
        if not USE_DOT:
            pv = tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)  # (R, D)
        elif DOT_FP32:
            pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")  # (R, D)
        else:
            pv = tl.dot(p.to(v.dtype), v)  # (R, D) fp32 accumulate
        acc = acc * alpha[:, None] + pv  # (R, D)

    # -- write the result: final output, or this split's partial state --
    out_mask = row_mask[:, None] & dim_mask[None, :]  # (R, D)
    if SPLIT:
        part = seq * stride_part_seq + head * stride_part_head + split * stride_part_split  # (R,)
        tl.store(part_max_ptr + part, m_i, mask=row_mask)
        tl.store(part_sum_ptr + part, l_i, mask=row_mask)
        acc_offsets = part[:, None] * HEAD_DIM_PAD + dims[None, :]  # (R, D)
        tl.store(part_acc_ptr + acc_offsets, acc, mask=row_mask[:, None])
    else:
        out = acc / l_i[:, None]  # (R, D)
        out_offsets = seq * stride_out_seq + head[:, None] * stride_out_head + dims[None, :]
        tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def reduce_splits_kernel(
    out_ptr,  # (num_seqs, num_heads, head_dim)
    part_acc_ptr,  # (num_seqs, num_heads, num_splits, HEAD_DIM_PAD) fp32
    part_max_ptr,  # (num_seqs, num_heads, num_splits) fp32
    part_sum_ptr,  # (num_seqs, num_heads, num_splits) fp32
    num_splits,
    stride_out_seq, stride_out_head,
    stride_part_seq, stride_part_head,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    SPLITS_PAD: tl.constexpr,  # num_splits padded up to a power of two
):
    seq = tl.program_id(0)
    head = tl.program_id(1)

    # -- load every split's (max, sum, acc) for this query head --
    splits = tl.arange(0, SPLITS_PAD)  # (S,)
    dims = tl.arange(0, HEAD_DIM_PAD)  # (D,)
    split_mask = splits < num_splits  # (S,)
    part = seq * stride_part_seq + head * stride_part_head + splits  # (S,)
    m = tl.load(part_max_ptr + part, mask=split_mask, other=float("-inf"))  # (S,)
    l = tl.load(part_sum_ptr + part, mask=split_mask, other=0.0)  # (S,)
    acc = tl.load(part_acc_ptr + part[:, None] * HEAD_DIM_PAD + dims[None, :],
                  mask=split_mask[:, None], other=0.0)  # (S, D)

    # -- rescale every split to the common max and merge --
    weight = tl.exp2(m - tl.max(m, axis=0))  # (S,) an empty split has l = 0, acc = 0
    out = tl.sum(acc * weight[:, None], axis=0) / tl.sum(l * weight, axis=0)  # (D,)
    tl.store(out_ptr + seq * stride_out_seq + head * stride_out_head + dims,
             out.to(out_ptr.dtype.element_ty), mask=dims < HEAD_DIM)


def paged_attention_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float,
                           max_context_len: int, num_splits: int | None = None,
                           tile: int | None = None, dot_fp32: bool | None = None,
                           config: DecodeConfig | None = None) -> torch.Tensor:
    """Launch the decode kernel (and the reduce kernel when split). Returns (num_seqs, num_heads,
    head_dim) in q's dtype. Inputs must already be validated (pagedlab.paged_attention does it).

    Launch parameters come from :func:`pagedlab.kernels.launch_config.decode_config` for this GPU.
    ``config`` (all of them), ``tile`` (tokens per loop step) and ``dot_fp32`` (fp32 matrix
    products; default: for fp32 inputs and in the interpreter) are for tests and experiments.
    """
    num_seqs, num_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    # The kernel walks the last dim with unit stride, reads K and V with one set of offsets and
    # assumes int32 tables.
    assert q.stride(-1) == 1 and k_cache.stride(-1) == 1 and k_cache.stride() == v_cache.stride()
    assert k_cache.shape == v_cache.shape and k_cache.dtype == v_cache.dtype == q.dtype
    assert block_tables.dtype == torch.int32 and block_tables.stride(1) == 1
    assert context_lens.dtype == torch.int32 and context_lens.is_contiguous()
    assert block_size & (block_size - 1) == 0, "block_size must be a power of two"

    queries_per_kv = num_heads // num_kv_heads
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    # The interpreter runs CPU tensors, and CUDA ones too where TRITON_INTERPRET=1 was set.
    interpreting = q.device.type == "cpu" or pagedlab.backend.triton_status()["mode"] == "interpreter"
    capability = None if interpreting else torch.cuda.get_device_capability(q.device)
    if config is None:
        config = decode_config(capability, q.dtype, head_dim, queries_per_kv, block_size)
    if tile is not None:
        config = dataclasses.replace(config, tile=tile)
    assert config.head_rows >= queries_per_kv and config.tile >= 16
    if dot_fp32 is None:
        dot_fp32 = interpreting or q.dtype == torch.float32
    if num_splits is None:
        num_sms = None if interpreting else torch.cuda.get_device_properties(
            q.device).multi_processor_count
        num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context_len, num_sms,
                                       config.programs_per_sm)
    # Whole tiles per split; drop splits that would start past the longest context.
    tile = config.tile
    tokens_per_split = triton.cdiv(triton.cdiv(max_context_len, num_splits), tile) * tile
    num_splits = triton.cdiv(max_context_len, tokens_per_split)

    out = torch.empty_like(q)  # (num_seqs, num_heads, head_dim)
    split = num_splits > 1
    if split:
        part_acc = torch.empty(num_seqs, num_heads, num_splits, head_dim_pad,
                               dtype=torch.float32, device=q.device)  # (S, H, splits, D)
        part_max = torch.empty(num_seqs, num_heads, num_splits,
                               dtype=torch.float32, device=q.device)  # (S, H, splits)
        part_sum = torch.empty_like(part_max)  # (S, H, splits)
        assert part_acc.stride(2) == head_dim_pad and part_max.stride() == part_sum.stride()
    else:
        part_acc = part_max = part_sum = out  # unused when not SPLIT

    grid = (num_seqs, num_kv_heads, num_splits)
    paged_decode_kernel[grid](
        out, part_acc, part_max, part_sum,
        q, k_cache, v_cache, block_tables, context_lens,
        scale * LOG2_E, tokens_per_split,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        part_max.stride(0), part_max.stride(1), part_max.stride(2),
        QUERIES_PER_KV=queries_per_kv, HEAD_ROWS=config.head_rows,
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
        BLOCK_SIZE=block_size, TILE=tile,
        SPLIT=split, USE_DOT=config.use_dot, DOT_FP32=dot_fp32,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if split:
        reduce_splits_kernel[(num_seqs, num_heads)](
            out, part_acc, part_max, part_sum, num_splits,
            out.stride(0), out.stride(1),
            part_max.stride(0), part_max.stride(1),
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
            SPLITS_PAD=triton.next_power_of_2(num_splits),
        )
    return out


# -- try it: the kernel against the torch reference -----------------------------------------------
# python -m pagedlab.kernels.paged_attention   (the benchmark is `pagedlab bench`)
if __name__ == "__main__":
    import pagedlab as pl
    from pagedlab.attention import random_paged_batch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = random_paged_batch([1, 16, 17, 100], block_size=16, num_heads=8, num_kv_heads=2,
                               head_dim=64, device=device)
    out = pl.paged_attention(**batch, backend="triton")  # (4, 8, 64)
    error = (out - pl.paged_attention_reference(**batch)).abs().max().item()
    print(f"{pagedlab.backend.triton_status()['mode']}: max |kernel - reference| = {error:.1e}")
