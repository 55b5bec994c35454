"""Paged attention for a whole engine step, in Triton: decodes, prompt chunks and prefixes at once.

What it computes. A step packs the new tokens of many sequences one after another. Sequence
``seq`` brings its last ``query_len`` tokens of ``context_len`` (a decode brings 1; a prompt, or a
chunk of one after the part already in the cache, brings more); their keys and values are already
in the paged cache (``KVCache.write`` stored them first)::

    q                : (num_tokens, num_heads, head_dim)   num_tokens = sum of the query_lens
    query_start_loc  : (num_seqs + 1,) int32               seq's queries: rows [start, next start)
    k_cache, v_cache : (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables     : (num_seqs, max_blocks) int32        logical block -> physical block
    context_lens     : (num_seqs,) int32
    out[token, head] = softmax(q . K^T * scale) @ V        over the keys at or before the token

Query ``j`` of a sequence sits at position ``context_len - query_len + j``: it sees the cached
prefix and the new tokens up to itself (causal), exactly as :func:`pagedlab.attention_reference`
with ``q_len = query_len`` and ``kv_len = context_len``. A decode is the case ``query_len == 1``,
and then this kernel computes what lesson 07's decode kernel computes.

The grid. One program per (query tile of a sequence, KV head[, split]). A query tile is
``QUERY_TILE`` consecutive new tokens of one sequence times the ``QUERIES_PER_KV`` query heads that
share one KV head (grouped-query attention): ``ROWS = QUERY_TILE * QUERIES_PER_KV`` rows of one
matrix, so every key and value the program loads is used by all of them. Row ``r`` is token
``r // QUERIES_PER_KV`` of the tile and head ``r % QUERIES_PER_KV`` of the group. How many tiles a
sequence has depends on its ``query_len``, which lives on the GPU; rather than copy it back to
count, sequence ``i``'s tiles are numbered from ``query_start_loc[i] // QUERY_TILE + i`` (one spare
number per sequence), and a program whose number falls in a gap returns at once. With
``query_lens`` [1, 40, 1] and ``QUERY_TILE`` 16, sequence 0 takes tile 0, sequence 1 tiles 1-3 and
sequence 2 tile 4; with [16, 16], tiles 0 and 2 work and 1 and 3 return. The grid needs only
``num_tokens // QUERY_TILE + num_seqs`` tile numbers, known without reading the GPU.

The loop. As in the decode kernel: walk the context ``TILE`` keys at a time, find the physical
blocks through the block table (one table load per block, not per token), score the tile, and fold
it into an online softmax kept in fp32 (running max ``m``, running sum ``l``, running ``acc``). A
query tile stops at the last key its last query may see, so the causal part costs only what it
uses.

Split-K. A decode-heavy step with few sequences gives too few programs to fill a GPU; then each
context is cut into ``num_splits`` ranges handled by separate programs, and a second kernel merges
their partial ``(acc, m, l)`` per query row. :func:`unified_launch_params` decides.

Masks. Keys past a query's position, or past the context (the partial last block), score -inf;
rows past the sequence's queries (a partial query tile) are never stored; head dims that are not a
power of two (80, 96) are padded with masked loads.

Dtypes. fp32, fp16 and bf16; scores, softmax and accumulators in fp32. In the interpreter every
``tl.dot`` runs in fp32 (a bf16 ``tl.dot`` there gives wrong numbers); fp32 on a GPU uses exact
fp32 products (not TF32).

Test: tests/test_unified_attention.py (against pagedlab.paged_prefill_reference). The engine
calls it through :func:`pagedlab.paged_batch.write_and_attend`.
See notebooks/07_triton_kernel.ipynb for the decode kernel it generalises.
"""
from __future__ import annotations

from dataclasses import dataclass

import pagedlab.backend  # first: it sets TRITON_INTERPRET before @triton.jit below runs
import torch
import triton
import triton.language as tl

from .launch_config import choose_num_splits

LOG2_E = 1.4426950408889634  # exp(x) == exp2(x * log2(e)); exp2 is the GPU's native instruction
MIN_ROWS = 16  # compiled tl.dot needs every matrix dimension >= 16
SEQ_CHUNK = 64  # sequences whose first tile number a program compares at once


@triton.jit
def unified_attention_kernel(
    out_ptr,  # (num_tokens, num_heads, head_dim)                   written when not SPLIT
    part_acc_ptr,  # (num_tokens, num_heads, num_splits, HEAD_DIM_PAD) fp32, written when SPLIT
    part_max_ptr,  # (num_tokens, num_heads, num_splits)              fp32, written when SPLIT
    part_sum_ptr,  # (num_tokens, num_heads, num_splits)              fp32, written when SPLIT
    q_ptr,  # (num_tokens, num_heads, head_dim)
    k_cache_ptr,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache_ptr,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables_ptr,  # (num_seqs, max_blocks) int32
    context_lens_ptr,  # (num_seqs,) int32
    query_start_loc_ptr,  # (num_seqs + 1,) int32
    num_seqs,
    qk_scale,  # softmax scale * log2(e)
    tokens_per_split,  # context tokens each split covers (a multiple of TILE)
    stride_q_token, stride_q_head,
    stride_k_block, stride_k_token, stride_k_head,
    stride_v_block, stride_v_token, stride_v_head,
    stride_table_seq,
    stride_out_token, stride_out_head,
    stride_part_token, stride_part_head, stride_part_split,
    QUERIES_PER_KV: tl.constexpr,  # query heads per KV head (the GQA group size)
    QUERY_TILE: tl.constexpr,  # new tokens of one sequence per program
    ROWS: tl.constexpr,  # QUERY_TILE * QUERIES_PER_KV, padded up to a power of two >= 16
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,  # HEAD_DIM padded up to a power of two >= 16
    BLOCK_SIZE: tl.constexpr,  # tokens per cache block (a power of two)
    TILE: tl.constexpr,  # keys per loop step (a power of two >= 16)
    BLOCKS_PER_TILE: tl.constexpr,  # cache blocks a loop step touches: max(1, TILE // BLOCK_SIZE)
    SPLIT: tl.constexpr,  # write partial results for the merge kernel
    DOT_FP32: tl.constexpr,  # do the matrix products in fp32 (fp32 inputs, the interpreter)
    SEQ_CHUNK: tl.constexpr,
):
    tile_id = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    # -- which sequence this query tile belongs to: count the sequences that start before it --
    seq_count = 0
    for chunk in range(0, num_seqs, SEQ_CHUNK):
        seqs = chunk + tl.arange(0, SEQ_CHUNK)  # (C,)
        starts = tl.load(query_start_loc_ptr + seqs, mask=seqs < num_seqs, other=0)  # (C,)
        first_tile = starts // QUERY_TILE + seqs  # (C,) number of each sequence's first tile
        seq_count += tl.sum(((first_tile <= tile_id) & (seqs < num_seqs)).to(tl.int32), axis=0)
    seq = seq_count - 1
    query_start = tl.load(query_start_loc_ptr + seq)
    query_len = tl.load(query_start_loc_ptr + seq + 1) - query_start
    q_tile = tile_id - (query_start // QUERY_TILE + seq)  # index of this tile in the sequence
    if q_tile * QUERY_TILE >= query_len:
        return  # a spare tile number: nothing to do

    # -- which query rows (token, head) and which keys this program owns --
    rows = tl.arange(0, ROWS)  # (M,)
    dims = tl.arange(0, HEAD_DIM_PAD)  # (D,)
    query_index = q_tile * QUERY_TILE + rows // QUERIES_PER_KV  # (M,) among the seq's new tokens
    head = kv_head * QUERIES_PER_KV + rows % QUERIES_PER_KV  # (M,)
    row_mask = (rows < QUERY_TILE * QUERIES_PER_KV) & (query_index < query_len)  # (M,)
    dim_mask = dims < HEAD_DIM  # (D,)
    token = (query_start + query_index).to(tl.int64)  # (M,) row of q and out
    context_len = tl.load(context_lens_ptr + seq)
    query_pos = context_len - query_len + query_index  # (M,) position in the sequence
    # The tile's last query sees keys up to its own position: stop there.
    last_query = tl.minimum(query_len, (q_tile + 1) * QUERY_TILE) - 1
    kv_end = context_len - query_len + last_query + 1
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, kv_end)

    # -- load the tile's queries once --
    q_offsets = token[:, None] * stride_q_token + head[:, None] * stride_q_head + dims[None, :]
    q = tl.load(q_ptr + q_offsets, mask=row_mask[:, None] & dim_mask[None, :], other=0.0)  # (M, D)
    if DOT_FP32:
        q = q.to(tl.float32)

    # -- online-softmax state, fp32 (a finite start keeps exp2 free of inf - inf) --
    m_i = tl.full([ROWS], -1.0e30, dtype=tl.float32)  # (M,) running max score
    l_i = tl.zeros([ROWS], dtype=tl.float32)  # (M,) running sum of exp2(score - m_i)
    acc = tl.zeros([ROWS, HEAD_DIM_PAD], dtype=tl.float32)  # (M, D) running sum of p * v

    for tile_start in range(start, end, TILE):
        keys = tile_start + tl.arange(0, TILE)  # (T,) key positions in the sequence
        key_mask = keys < end  # (T,)

        # -- the tile's physical blocks: one block-table load per block, not per key --
        # A tile is either inside one block (TILE <= BLOCK_SIZE) or whole blocks (TILE larger).
        logical = tile_start // BLOCK_SIZE + tl.arange(0, BLOCKS_PER_TILE)  # (NB,)
        physical = tl.load(block_tables_ptr + seq * stride_table_seq + logical,
                           mask=logical * BLOCK_SIZE < end, other=0).to(tl.int64)  # (NB,)
        block = tl.reshape(tl.broadcast_to(physical[:, None],
                                           (BLOCKS_PER_TILE, TILE // BLOCKS_PER_TILE)),
                           (TILE,))  # (T,) each key's physical block
        row_in_block = keys % BLOCK_SIZE  # (T,)

        # -- load this tile's keys, transposed: one column per key --
        k_offsets = (block[None, :] * stride_k_block + row_in_block[None, :] * stride_k_token
                     + kv_head * stride_k_head + dims[:, None])  # (D, T)
        k = tl.load(k_cache_ptr + k_offsets, mask=dim_mask[:, None] & key_mask[None, :],
                    other=0.0)  # (D, T)
        if DOT_FP32:
            k = k.to(tl.float32)

        # -- scores in log2 units; a query sees keys at or before its own position --
        if DOT_FP32:
            scores = tl.dot(q, k, input_precision="ieee")  # (M, T)
        else:
            scores = tl.dot(q, k)  # (M, T) fp32 accumulate
        scores = scores * qk_scale  # (M, T)
        visible = (keys[None, :] <= query_pos[:, None]) & key_mask[None, :]  # (M, T)
        scores = tl.where(visible, scores, float("-inf"))  # (M, T)

        # -- online softmax: raise the max, rescale what we have, add this tile --
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))  # (M,)
        alpha = tl.exp2(m_i - m_new)  # (M,) how much the old terms shrink
        p = tl.exp2(scores - m_new[:, None])  # (M, T)
        l_i = l_i * alpha + tl.sum(p, axis=1)  # (M,)
        m_i = m_new

        # -- load this tile's values and accumulate p @ V --
        v_offsets = (block[:, None] * stride_v_block + row_in_block[:, None] * stride_v_token
                     + kv_head * stride_v_head + dims[None, :])  # (T, D)
        v = tl.load(v_cache_ptr + v_offsets, mask=key_mask[:, None] & dim_mask[None, :],
                    other=0.0)  # (T, D)
        if DOT_FP32:
            pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")  # (M, D)
        else:
            pv = tl.dot(p.to(v.dtype), v)  # (M, D) fp32 accumulate
        acc = acc * alpha[:, None] + pv  # (M, D)

    # -- write the result: final output, or this split's partial state --
    if SPLIT:
        part = token * stride_part_token + head * stride_part_head + split * stride_part_split
        tl.store(part_max_ptr + part, m_i, mask=row_mask)  # (M,)
        tl.store(part_sum_ptr + part, l_i, mask=row_mask)  # (M,)
        tl.store(part_acc_ptr + part[:, None] * HEAD_DIM_PAD + dims[None, :], acc,
                 mask=row_mask[:, None])  # (M, D)
    else:
        out = acc / l_i[:, None]  # (M, D) every stored row saw at least key 0
        out_offsets = token[:, None] * stride_out_token + head[:, None] * stride_out_head \
            + dims[None, :]  # (M, D)
        tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & dim_mask[None, :])


@triton.jit
def merge_splits_kernel(
    out_ptr,  # (num_tokens, num_heads, head_dim)
    part_acc_ptr,  # (num_tokens, num_heads, num_splits, HEAD_DIM_PAD) fp32
    part_max_ptr,  # (num_tokens, num_heads, num_splits) fp32
    part_sum_ptr,  # (num_tokens, num_heads, num_splits) fp32
    num_splits,
    stride_out_token, stride_out_head,
    stride_part_token, stride_part_head,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    SPLITS_PAD: tl.constexpr,  # num_splits padded up to a power of two
):
    token = tl.program_id(0)
    head = tl.program_id(1)

    # -- load every split's (max, sum, acc) for this query row --
    splits = tl.arange(0, SPLITS_PAD)  # (S,)
    dims = tl.arange(0, HEAD_DIM_PAD)  # (D,)
    split_mask = splits < num_splits  # (S,)
    part = token * stride_part_token + head * stride_part_head + splits  # (S,)
    m = tl.load(part_max_ptr + part, mask=split_mask, other=float("-inf"))  # (S,)
    l = tl.load(part_sum_ptr + part, mask=split_mask, other=0.0)  # (S,)
    acc = tl.load(part_acc_ptr + part[:, None] * HEAD_DIM_PAD + dims[None, :],
                  mask=split_mask[:, None], other=0.0)  # (S, D)

    # -- rescale every split to the common max and merge (a split with no keys has l = 0) --
    weight = tl.exp2(m - tl.max(m, axis=0))  # (S,)
    out = tl.sum(acc * weight[:, None], axis=0) / tl.sum(l * weight, axis=0)  # (D,)
    tl.store(out_ptr + token * stride_out_token + head * stride_out_head + dims,
             out.to(out_ptr.dtype.element_ty), mask=dims < HEAD_DIM)


# -- launch parameters: the one place they are chosen ----------------------------------------------


@dataclass(frozen=True)
class UnifiedLaunch:
    """How to launch :func:`unified_attention_kernel` for one batch."""

    query_tile: int  # new tokens of one sequence per program
    rows: int  # query_tile * queries_per_kv, padded to a power of two >= 16
    kv_tile: int  # keys per loop step (a power of two >= 16)
    num_warps: int
    num_stages: int
    num_splits: int  # split-K pieces per context (1: no merge step)


def unified_launch_params(*, num_seqs: int, num_kv_heads: int, queries_per_kv: int,
                          head_dim: int, dtype: torch.dtype, max_query_len: int,
                          max_context_len: int, num_sms: int | None,
                          capability: tuple[int, int] = (9, 0)) -> UnifiedLaunch:
    """Tiles, warps, stages and split count for one batch on a GPU of ``num_sms`` SMs and
    compute ``capability`` (``num_sms`` None: the interpreter).

    Decode-like batches (every sequence's queries fit one tile of 16 rows) use 16 rows and split
    long contexts when the programs would not fill the GPU; prompt-heavy batches use taller query
    tiles, so each key is loaded for more queries. The tiles shrink where registers would spill
    (measured ahead of time with Triton 3.9: fp32 and head dims over 128 hold twice the registers
    per row; a T4, sm_75, has fewer registers per thread to spare).
    """
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    group_rows = max(MIN_ROWS, triton.next_power_of_2(queries_per_kv))
    if num_sms is None:  # the interpreter: cost is per loop step, so take big steps
        rows = max(group_rows, min(64, triton.next_power_of_2(max_query_len * queries_per_kv)))
        return UnifiedLaunch(query_tile=rows // queries_per_kv, rows=rows, kv_tile=64,
                             num_warps=4, num_stages=1, num_splits=1)
    # How much smaller than fp16/bf16 up to 128 dims on sm_80+ the tiles must be not to spill
    # (tests/test_compile.py: fp32 products are FMAs, head dims over 128 twice the registers per
    # row, and a T4 has no tensor cores: 16 x 16 everywhere there).
    wide = head_dim_pad > 128
    weight = (4 if dtype == torch.float32 else 1) * (2 if wide else 1)
    if capability < (8, 0):
        weight *= 4
    decode_like = max_query_len * queries_per_kv <= group_rows
    rows = group_rows if decode_like else max(group_rows, 64 // weight)
    kv_tile = max(16, 64 // weight)
    # split-K by the decode kernel's rule (one query tile per sequence when decode_like), aiming
    # at 2 programs per SM: these tiles are larger than the decode kernel's
    num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context_len, num_sms,
                                   programs_per_sm=2) if decode_like else 1
    # 8 warps share the work of a tall tile, which with head dims up to 128 then fits the
    # registers. fp32 (16 x 16 tiles) fits 4 warps and one stage, except head dims over 128
    # unsplit on sm_80 (ahead-of-time compile, Triton 3.6 and 3.9, every configuration: with 8
    # warps ptxas keeps to 64 registers and spills 8-16 bytes).
    fp32 = dtype == torch.float32
    tall = not decode_like and not wide and rows > MIN_ROWS
    fp32_exception = fp32 and capability[0] == 8 and wide and num_splits == 1
    num_warps = 8 if tall or fp32_exception else 4
    if fp32 and not wide and capability[0] == 8 and queries_per_kv == 1 and not tall:
        num_warps = 2  # 16 queries of one head: Triton 3.6 spills 8 bytes with 4 warps on sm_80
    num_stages = 1 if wide or fp32 or capability < (8, 0) else 2  # sm_75 has no cp.async
    return UnifiedLaunch(query_tile=rows // queries_per_kv, rows=rows, kv_tile=kv_tile,
                         num_warps=num_warps, num_stages=num_stages, num_splits=num_splits)


# -- the host side: allocate, launch, merge ------------------------------------------------------


def unified_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      block_tables: torch.Tensor, context_lens: torch.Tensor,
                      query_start_loc: torch.Tensor, max_query_len: int, max_context_len: int,
                      scale: float, num_splits: int | None = None,
                      launch: UnifiedLaunch | None = None,
                      dot_fp32: bool | None = None) -> torch.Tensor:
    """Launch the unified kernel (and the merge kernel when split). Returns q's shape and dtype.

    Inputs must already be validated (``pagedlab.paged_attention(..., query_lens=...)`` does it;
    the engine checks its batch once per step). ``num_splits`` forces the split count; ``launch``
    (all parameters) and ``dot_fp32`` (fp32 matrix products) are for tests and experiments.
    """
    num_tokens, num_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    num_seqs = context_lens.shape[0]
    # The kernel walks the last dim with unit stride and assumes int32 tables.
    assert q.stride(-1) == 1 and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1
    assert k_cache.shape == v_cache.shape and k_cache.dtype == v_cache.dtype == q.dtype
    assert block_tables.dtype == torch.int32 and block_tables.stride(1) == 1
    assert block_tables.shape[0] == num_seqs
    assert context_lens.dtype == torch.int32 and context_lens.is_contiguous()
    assert query_start_loc.dtype == torch.int32 and query_start_loc.is_contiguous()
    assert query_start_loc.shape == (num_seqs + 1,)
    assert block_size & (block_size - 1) == 0, "block_size must be a power of two"

    queries_per_kv = num_heads // num_kv_heads
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    # The interpreter runs CPU tensors, and CUDA ones too where TRITON_INTERPRET=1 was set.
    interpreting = (q.device.type == "cpu"
                    or pagedlab.backend.triton_status()["mode"] == "interpreter")
    if dot_fp32 is None:
        dot_fp32 = interpreting or q.dtype == torch.float32
    if launch is None:
        num_sms, capability = None, (0, 0)  # the interpreter
        if not interpreting:
            num_sms = torch.cuda.get_device_properties(q.device).multi_processor_count
            capability = torch.cuda.get_device_capability(q.device)
        launch = unified_launch_params(
            num_seqs=num_seqs, num_kv_heads=num_kv_heads, queries_per_kv=queries_per_kv,
            head_dim=head_dim, dtype=q.dtype, max_query_len=max_query_len,
            max_context_len=max_context_len, num_sms=num_sms, capability=capability)
    assert launch.rows >= max(MIN_ROWS, launch.query_tile * queries_per_kv) >= queries_per_kv
    num_splits = launch.num_splits if num_splits is None else num_splits
    tile = launch.kv_tile
    # Whole tiles per split; drop splits that would start past the longest context.
    tokens_per_split = triton.cdiv(triton.cdiv(max_context_len, num_splits), tile) * tile
    num_splits = triton.cdiv(max_context_len, tokens_per_split)
    # Tile numbers go up to num_tokens // QUERY_TILE + num_seqs (one spare per sequence, see the
    # module docstring): launching that many needs no copy of query_lens from the GPU.
    num_tiles = num_tokens // launch.query_tile + num_seqs

    out = torch.empty_like(q)  # (num_tokens, num_heads, head_dim)
    split = num_splits > 1
    if split:
        part_acc = torch.empty(num_tokens, num_heads, num_splits, head_dim_pad,
                               dtype=torch.float32, device=q.device)  # (N, H, splits, D)
        part_max = torch.empty(num_tokens, num_heads, num_splits,
                               dtype=torch.float32, device=q.device)  # (N, H, splits)
        part_sum = torch.empty_like(part_max)  # (N, H, splits)
        assert part_acc.stride(2) == head_dim_pad and part_max.stride() == part_sum.stride()
    else:
        part_acc = part_max = part_sum = out  # unused when not SPLIT

    unified_attention_kernel[(num_tiles, num_kv_heads, num_splits)](
        out, part_acc, part_max, part_sum,
        q, k_cache, v_cache, block_tables, context_lens, query_start_loc,
        num_seqs, scale * LOG2_E, tokens_per_split,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        part_max.stride(0), part_max.stride(1), part_max.stride(2),
        QUERIES_PER_KV=queries_per_kv, QUERY_TILE=launch.query_tile, ROWS=launch.rows,
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
        BLOCK_SIZE=block_size, TILE=tile, BLOCKS_PER_TILE=max(1, tile // block_size),
        SPLIT=split, DOT_FP32=dot_fp32, SEQ_CHUNK=SEQ_CHUNK,
        num_warps=launch.num_warps, num_stages=launch.num_stages,
    )
    if split:
        merge_splits_kernel[(num_tokens, num_heads)](
            out, part_acc, part_max, part_sum, num_splits,
            out.stride(0), out.stride(1),
            part_max.stride(0), part_max.stride(1),
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
            SPLITS_PAD=triton.next_power_of_2(num_splits),
        )
    return out


# -- try it: the kernel against the torch reference -----------------------------------------------
# python -m pagedlab.kernels.unified_attention
if __name__ == "__main__":
    import pagedlab as pl
    from pagedlab.attention import random_paged_batch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # A decode, a chunk after 20 cached tokens, a whole prompt: one launch.
    batch = random_paged_batch([9, 30, 17], query_lens=[1, 10, 17], block_size=16,
                               num_heads=8, num_kv_heads=2, head_dim=64, device=device)
    out = pl.paged_attention(**batch, backend="triton")  # (28, 8, 64)
    error = (out - pl.paged_prefill_reference(**batch)).abs().max().item()
    print(f"{pagedlab.backend.triton_status()['mode']}: max |kernel - reference| = {error:.1e}")
