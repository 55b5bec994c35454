"""Attention over a paged KV cache: plain-torch references and the dispatcher to the Triton kernel.

Shapes (the course's names)::

    q                : (num_seqs, num_heads, head_dim)          one new token per sequence (decode)
    k_cache, v_cache : (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables     : (num_seqs, max_blocks) int               logical block -> physical block
    context_lens     : (num_seqs,) int                          tokens each sequence attends to

``num_heads`` is a multiple of ``num_kv_heads`` (grouped-query attention): query head ``h`` reads
KV head ``h // (num_heads // num_kv_heads)``. Entries of a block table past the blocks its context
needs are ignored (pad them with anything, e.g. -1).

See notebooks/06_attention_over_pages.ipynb and notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import backend as _backend
from .errors import InvalidConfig

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float | None = None, causal: bool = True) -> torch.Tensor:
    """Attention on contiguous K/V in plain torch, computed in fp32.

    q: (q_len, num_heads, head_dim); k, v: (kv_len, num_kv_heads, head_dim); an optional leading
    batch dim on all three. The queries are the *last* q_len positions, so with ``causal`` query i
    sees keys 0 .. kv_len - q_len + i: a prefill when q_len == kv_len, a decode step when
    q_len == 1.
    Returns (q_len, num_heads, head_dim) in q's dtype. See notebooks/06_attention_over_pages.ipynb.
    """
    q_len, num_heads, head_dim = q.shape[-3:]
    kv_len, num_kv_heads = k.shape[-3], k.shape[-2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    group = num_heads // num_kv_heads
    k = k.float().repeat_interleave(group, dim=-2)  # (..., kv_len, num_heads, head_dim)
    v = v.float().repeat_interleave(group, dim=-2)  # (..., kv_len, num_heads, head_dim)
    scores = torch.einsum("...qhd,...khd->...hqk", q.float(), k) * scale  # (..., H, q_len, kv_len)
    if causal:
        query_pos = torch.arange(q_len, device=q.device) + (kv_len - q_len)  # (q_len,)
        key_pos = torch.arange(kv_len, device=q.device)  # (kv_len,)
        future = key_pos[None, :] > query_pos[:, None]  # (q_len, kv_len)
        scores = scores.masked_fill(future, float("-inf"))  # (..., H, q_len, kv_len)
    weights = scores.softmax(dim=-1)  # (..., H, q_len, kv_len)
    out = torch.einsum("...hqk,...khd->...qhd", weights, v)  # (..., q_len, H, head_dim)
    return out.to(q.dtype)


def gather_kv(cache: torch.Tensor, block_table: torch.Tensor, context_len: int) -> torch.Tensor:
    """One sequence's keys (or values), read through its block table into a contiguous tensor.

    cache: (num_blocks, block_size, num_kv_heads, head_dim); block_table: (max_blocks,).
    Returns (context_len, num_kv_heads, head_dim). See notebooks/06_attention_over_pages.ipynb.
    """
    block_size = cache.shape[1]
    num_used = -(-context_len // block_size)  # ceil: blocks that hold the context
    blocks = cache[block_table[:num_used].long()]  # (num_used, block_size, kv_heads, head_dim)
    return blocks.flatten(0, 1)[:context_len]  # (context_len, kv_heads, head_dim)


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              block_tables: torch.Tensor, context_lens: torch.Tensor,
                              scale: float | None = None) -> torch.Tensor:
    """Decode attention through the block tables in plain torch: gather, then attend.

    Shapes as in the module docstring; returns (num_seqs, num_heads, head_dim). Equal to
    :func:`attention_reference` on the same K/V laid out contiguously.
    See notebooks/06_attention_over_pages.ipynb.
    """
    block_tables, context_lens, _ = _validate(q, k_cache, v_cache, block_tables, context_lens)
    out = torch.empty_like(q)  # (num_seqs, num_heads, head_dim)
    for seq, context_len in enumerate(context_lens.tolist()):
        k = gather_kv(k_cache, block_tables[seq], context_len)  # (context_len, kv_heads, head_dim)
        v = gather_kv(v_cache, block_tables[seq], context_len)  # (context_len, kv_heads, head_dim)
        out[seq] = attention_reference(q[seq:seq + 1], k, v, scale)[0]  # (num_heads, head_dim)
    return out


def paged_prefill_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            block_tables: torch.Tensor, context_lens: torch.Tensor,
                            query_lens: torch.Tensor | Sequence[int],
                            scale: float | None = None) -> torch.Tensor:
    """Prefill attention through the block tables: several new tokens per sequence, causal.

    q: (sum(query_lens), num_heads, head_dim), the sequences' new tokens packed one after another.
    Their K/V must already be written to the cache (``KVCache.write``). Sequence i's new tokens are
    the last ``query_lens[i]`` of its ``context_lens[i]`` tokens; the ones before them (a prefix
    found in the prefix cache) are attended to as well. Returns q's shape.
    See notebooks/06_attention_over_pages.ipynb.
    """
    query_lens = _as_int_tensor(query_lens, "query_lens", device=q.device)
    context_lens = _as_int_tensor(context_lens, "context_lens", device=q.device)
    if query_lens.dim() != 1 or query_lens.shape != context_lens.shape:
        raise InvalidConfig(f"query_lens must have one entry per sequence like context_lens "
                            f"{tuple(context_lens.shape)}, got shape {tuple(query_lens.shape)}")
    if bool((query_lens < 1).any()) or bool((query_lens > context_lens).any()):
        raise InvalidConfig(f"query_lens must be in [1, context_lens], got {query_lens.tolist()} "
                            f"with context_lens {context_lens.tolist()}")
    starts = [0] + torch.cumsum(query_lens, 0).tolist()  # where each sequence's queries begin
    if q.dim() != 3 or q.shape[0] != starts[-1]:
        raise InvalidConfig(f"q must be (sum(query_lens)={starts[-1]}, num_heads, head_dim), "
                            f"got shape {tuple(q.shape)}")
    block_tables, context_lens, _ = _validate(q[starts[:-1]], k_cache, v_cache, block_tables,
                                              context_lens)
    out = torch.empty_like(q)  # (num_query_tokens, num_heads, head_dim)
    for seq, context_len in enumerate(context_lens.tolist()):
        k = gather_kv(k_cache, block_tables[seq], context_len)  # (context_len, kv_heads, head_dim)
        v = gather_kv(v_cache, block_tables[seq], context_len)  # (context_len, kv_heads, head_dim)
        rows = slice(starts[seq], starts[seq + 1])
        out[rows] = attention_reference(q[rows], k, v, scale)  # (query_len, num_heads, head_dim)
    return out


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    block_tables: torch.Tensor, context_lens: torch.Tensor,
                    scale: float | None = None, backend: str | None = None, *,
                    num_splits: int | None = None) -> torch.Tensor:
    """Decode attention through the block tables, by the Triton kernel where it can run.

    Shapes as in the module docstring; returns (num_seqs, num_heads, head_dim) in q's dtype.
    ``backend``: None (compiled Triton on a GPU, the Triton interpreter on a CPU, else the torch
    reference with one warning), "triton" or "torch". ``num_splits`` forces the split-K count
    (None: chosen from the GPU's size). Inputs are checked first; a bad one raises ``ValueError``.
    See notebooks/07_triton_kernel.ipynb.
    """
    block_tables, context_lens, max_context_len = _validate(q, k_cache, v_cache, block_tables,
                                                            context_lens)
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        raise InvalidConfig(f"num_splits must be a positive int or None, got {num_splits!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or scale <= 0:
        raise InvalidConfig(f"scale must be a positive number (None: 1/sqrt(head_dim)), "
                            f"got {scale!r}")
    choice = _backend.choose(backend, q.device)
    if choice == "triton" and q.dtype == torch.bfloat16 and q.is_cuda \
            and torch.cuda.get_device_capability(q.device)[0] < 8:
        if backend == "triton":
            raise InvalidConfig("q has dtype bfloat16, which this GPU lacks: use float16")
        _backend.warn_once("bf16", "pagedlab: this GPU has no bfloat16; using the torch reference")
        choice = "torch"
    if choice == "torch":
        return paged_attention_reference(q, k_cache, v_cache, block_tables, context_lens, scale)
    kernel = _backend.load_kernels().paged_attention
    try:
        return kernel.paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens,
                                             scale, max_context_len, num_splits)
    except Exception as error:  # noqa: BLE001  (a GPU Triton cannot compile for, e.g. a T4)
        if backend == "triton" or not q.is_cuda:
            raise
        _backend.warn_once("decode", f"pagedlab: the Triton kernel failed on this GPU ({error}); "
                                     f"using the torch reference from now on")
        return paged_attention_reference(q, k_cache, v_cache, block_tables, context_lens, scale)


def random_paged_batch(context_lens: Sequence[int], block_size: int = 16, num_heads: int = 4,
                       num_kv_heads: int = 1, head_dim: int = 64,
                       dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                       seed: int = 0) -> dict:
    """Random inputs for a paged decode: every block of the cache is used, in shuffled order.

    The block tables are one random permutation of all block ids (so block 0 and the last block
    are in use), padded with -1. Returns a dict of ``q, k_cache, v_cache, block_tables,
    context_lens`` that ``paged_attention(**batch)`` accepts.
    See notebooks/07_triton_kernel.ipynb.
    """
    generator = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(blocks_per_seq)
    order = torch.randperm(num_blocks, generator=generator).tolist()
    block_tables = torch.full((len(context_lens), max(blocks_per_seq)), -1, dtype=torch.int32)
    for seq, count in enumerate(blocks_per_seq):
        block_tables[seq, :count] = torch.tensor(order[:count])
        order = order[count:]
    cache_shape = (num_blocks, block_size, num_kv_heads, head_dim)
    batch = {
        "q": torch.randn(len(context_lens), num_heads, head_dim, generator=generator),
        "k_cache": torch.randn(cache_shape, generator=generator),
        "v_cache": torch.randn(cache_shape, generator=generator),
    }
    batch = {name: tensor.to(device=device, dtype=dtype) for name, tensor in batch.items()}
    batch["block_tables"] = block_tables.to(device)
    batch["context_lens"] = torch.tensor(list(context_lens), dtype=torch.int32, device=device)
    return batch


# -- host-side validation: nothing malformed may reach a kernel --------------------------------


def _as_int_tensor(value, name: str, device) -> torch.Tensor:
    """A list of ints or an integer tensor, as an integer tensor on ``device``."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value, dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise InvalidConfig(f"{name} must be an integer tensor or a list of ints: {error}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise InvalidConfig(f"{name} must hold integers, got dtype {value.dtype}: "
                            f"convert it with .to(torch.int32)")
    if value.device != torch.device(device):
        raise InvalidConfig(f"{name} is on {value.device} but q is on {device}: "
                            f"move it with .to(q.device)")
    return value


def _validate(q, k_cache, v_cache, block_tables, context_lens):
    """Check every input of a paged decode. Returns (block_tables int32, context_lens int32,
    max_context_len) ready for the kernel; raises InvalidConfig (a ValueError) naming the argument.
    """
    for name, tensor, dims in (("q", q, 3), ("k_cache", k_cache, 4), ("v_cache", v_cache, 4)):
        if not isinstance(tensor, torch.Tensor):
            raise InvalidConfig(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != dims:
            layout = ("(num_seqs, num_heads, head_dim)" if dims == 3 else
                      "(num_blocks, block_size, num_kv_heads, head_dim)")
            raise InvalidConfig(f"{name} must be {dims}-D {layout}, "
                                f"got shape {tuple(tensor.shape)}")
        if tensor.dtype not in FLOAT_DTYPES:
            raise InvalidConfig(f"{name} must be float32, float16 or bfloat16, got {tensor.dtype}")
        if tensor.device != q.device:
            raise InvalidConfig(f"{name} is on {tensor.device} but q is on {q.device}: "
                                f"put all tensors on one device")
        if tensor.numel() and tensor.stride(-1) != 1:
            raise InvalidConfig(f"{name} must have unit stride in head_dim: "
                                f"pass {name}.contiguous()")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise InvalidConfig(f"q, k_cache and v_cache must share one dtype, got {q.dtype}, "
                            f"{k_cache.dtype}, {v_cache.dtype}: cast q with .to(k_cache.dtype)")
    if v_cache.shape != k_cache.shape:
        raise InvalidConfig(f"v_cache shape {tuple(v_cache.shape)} must equal k_cache shape "
                            f"{tuple(k_cache.shape)}")
    num_seqs, num_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, cache_head_dim = k_cache.shape
    if head_dim != cache_head_dim or not 1 <= head_dim <= MAX_HEAD_DIM:
        raise InvalidConfig(f"q's head_dim {head_dim} must equal the cache's {cache_head_dim} "
                            f"and be at most {MAX_HEAD_DIM}")
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise InvalidConfig(f"q's num_heads ({num_heads}) must be a multiple of the cache's "
                            f"num_kv_heads ({num_kv_heads})")
    if block_size < 1 or block_size & (block_size - 1) or num_blocks < 1:
        raise InvalidConfig(f"k_cache must have >= 1 block and a power-of-two block_size, got "
                            f"{num_blocks} blocks of {block_size}")
    if num_seqs < 1:
        raise InvalidConfig("q must hold at least one sequence")

    block_tables = _as_int_tensor(block_tables, "block_tables", q.device)
    context_lens = _as_int_tensor(context_lens, "context_lens", q.device)
    if block_tables.dim() != 2 or block_tables.shape[0] != num_seqs:
        raise InvalidConfig(f"block_tables must be (num_seqs={num_seqs}, max_blocks), got shape "
                            f"{tuple(block_tables.shape)}")
    if context_lens.shape != (num_seqs,):
        raise InvalidConfig(f"context_lens must be (num_seqs={num_seqs},), got shape "
                            f"{tuple(context_lens.shape)}")
    capacity = block_tables.shape[1] * block_size
    lens = context_lens.tolist()
    bad = [n for n in lens if not 1 <= n <= capacity]
    if bad:
        raise InvalidConfig(f"context_lens must be in [1, {capacity}] (max_blocks "
                            f"{block_tables.shape[1]} x block_size {block_size}), got {bad[0]}")
    used = torch.arange(block_tables.shape[1], device=q.device)[None, :] \
        < (context_lens[:, None] + block_size - 1) // block_size  # (num_seqs, max_blocks)
    out_of_range = used & ((block_tables < 0) | (block_tables >= num_blocks))
    if bool(out_of_range.any()):
        seq, index = out_of_range.nonzero()[0].tolist()
        raise InvalidConfig(f"block_tables[{seq}, {index}] = {int(block_tables[seq, index])} "
                            f"is not a block id in [0, {num_blocks})")
    return (block_tables.to(torch.int32).contiguous(), context_lens.to(torch.int32).contiguous(),
            max(lens))
