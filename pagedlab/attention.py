"""Attention over a paged KV cache: plain-torch references and the dispatcher to the Triton kernel.

Shapes (the course's names)::

    q                : (num_seqs, num_heads, head_dim)          one new token per sequence (decode)
                       (num_tokens, num_heads, head_dim)        or packed: query_lens[i] tokens of
                                                                sequence i, one after another
    k_cache, v_cache : (num_blocks, block_size, num_kv_heads, head_dim)
    block_tables     : (num_seqs, max_blocks) int               logical block -> physical block
    context_lens     : (num_seqs,) int                          tokens each sequence attends to
    query_lens       : (num_seqs,) int                          new tokens per sequence (packed q)

``num_heads`` is a multiple of ``num_kv_heads`` (grouped-query attention): query head ``h`` reads
KV head ``h // (num_heads // num_kv_heads)``. Entries of a block table past the blocks its context
needs are ignored (pad them with anything, e.g. -1).

See notebooks/06_attention_over_pages.ipynb and notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from . import backend as _backend
from .errors import InvalidConfig, check_int, check_positive

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
    queries_per_kv = num_heads // num_kv_heads  # grouped-query attention: heads sharing a KV head
    k = k.float().repeat_interleave(queries_per_kv, dim=-2)  # (..., kv_len, num_heads, head_dim)
    v = v.float().repeat_interleave(queries_per_kv, dim=-2)  # (..., kv_len, num_heads, head_dim)
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
    checked = _validate(q, k_cache, v_cache, block_tables, context_lens)
    block_tables, context_lens = checked.block_tables, checked.context_lens
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
    checked = _validate(q, k_cache, v_cache, block_tables, context_lens, query_lens)
    block_tables, context_lens = checked.block_tables, checked.context_lens
    starts = checked.query_start_loc.tolist()  # where each sequence's queries begin
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
                    query_lens: torch.Tensor | Sequence[int] | None = None,
                    num_splits: int | None = None) -> torch.Tensor:
    """Attention through the block tables, by a Triton kernel where it can run.

    ``query_lens`` None: a decode, q (num_seqs, num_heads, head_dim), lesson 07's decode kernel.
    Else q is packed (sum(query_lens), num_heads, head_dim): sequence i's queries are its last
    ``query_lens[i]`` of ``context_lens[i]`` positions, causal (prefills, chunks, prompts after a
    cached prefix, decodes, mixed), one unified kernel; equal to :func:`paged_prefill_reference`.
    Returns q's shape and dtype. ``backend``: None (compiled Triton on a GPU, the Triton
    interpreter on a CPU, else the torch reference with one warning), "triton" or "torch".
    ``num_splits`` forces the split-K count (None: chosen from the GPU's size). Inputs are checked
    first; a bad one raises ``ValueError`` (``InvalidConfig``) before anything runs.
    See notebooks/07_triton_kernel.ipynb.
    """
    checked = _validate(q, k_cache, v_cache, block_tables, context_lens, query_lens)
    if num_splits is not None:
        check_int("num_splits", num_splits, 1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_positive("scale", scale)
    if query_lens is None:
        block_tables, context_lens = checked.block_tables, checked.context_lens
        return _run(
            "decode kernel", q, backend,
            lambda kernels: kernels.paged_attention.paged_attention_decode(
                q, k_cache, v_cache, block_tables, context_lens, scale,
                checked.max_context_len, num_splits),
            lambda: paged_attention_reference(q, k_cache, v_cache, block_tables, context_lens,
                                              scale))
    return attend_packed(q, k_cache, v_cache, checked.block_tables, checked.context_lens,
                         checked.query_start_loc, checked.max_query_len,
                         checked.max_context_len, scale, backend, num_splits,
                         torch_call=lambda: paged_prefill_reference(
                             q, k_cache, v_cache, checked.block_tables, checked.context_lens,
                             checked.query_lens, scale))


def attend_packed(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  block_tables: torch.Tensor, context_lens: torch.Tensor,
                  query_start_loc: torch.Tensor, max_query_len: int, max_context_len: int,
                  scale: float, backend: str | None, num_splits: int | None = None, *,
                  torch_call: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The unified kernel on inputs checked already: by :func:`paged_attention`, or by the engine,
    whose block tables, lengths and slots come from the block manager and whose slots it checks
    once per step. block_tables, context_lens, query_start_loc int32 on q's device.
    ``torch_call()`` computes the same without Triton. Returns q's shape and dtype.
    """
    return _run(
        "unified attention kernel", q, backend,
        lambda kernels: kernels.unified_attention.unified_attention(
            q, k_cache, v_cache, block_tables, context_lens, query_start_loc, max_query_len,
            max_context_len, scale, num_splits),
        torch_call)


def _run(name: str, q: torch.Tensor, backend: str | None, kernel_call, torch_call):
    """Resolve ``backend`` for q's device, then run the kernel (or torch where it cannot run)."""
    choice = _backend.choose(backend, q.device)
    if choice == "triton" and q.dtype == torch.bfloat16 and q.is_cuda \
            and torch.cuda.get_device_capability(q.device)[0] < 8:
        if backend == "triton":
            raise InvalidConfig("q has dtype bfloat16, which this GPU lacks: use float16")
        _backend.warn_once("bf16", "pagedlab: this GPU has no bfloat16; using the torch reference")
        choice = "torch"
    if choice == "torch":
        return torch_call()
    kernels = _backend.load_kernels()
    return _backend.run_or_fall_back(name, lambda: kernel_call(kernels), torch_call,
                                     insisted=backend == "triton", on_gpu=q.is_cuda)


def random_paged_batch(context_lens: Sequence[int], block_size: int = 16, num_heads: int = 4,
                       num_kv_heads: int = 1, head_dim: int = 64,
                       dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                       seed: int = 0, query_lens: Sequence[int] | None = None) -> dict:
    """Random inputs for paged attention: every block of the cache is used, in shuffled order.

    The block tables are one random permutation of all block ids (so block 0 and the last block
    are in use), padded with -1. Returns a dict of ``q, k_cache, v_cache, block_tables,
    context_lens`` that ``paged_attention(**batch)`` accepts: a decode, q (num_seqs, num_heads,
    head_dim); with ``query_lens`` also ``query_lens``, and q packed (sum(query_lens), num_heads,
    head_dim), for ``paged_attention`` and ``paged_prefill_reference``.
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
    num_queries = len(context_lens) if query_lens is None else sum(query_lens)
    batch = {
        "q": torch.randn(num_queries, num_heads, head_dim, generator=generator),
        "k_cache": torch.randn(cache_shape, generator=generator),
        "v_cache": torch.randn(cache_shape, generator=generator),
    }
    batch = {name: tensor.to(device=device, dtype=dtype) for name, tensor in batch.items()}
    batch["block_tables"] = block_tables.to(device)
    batch["context_lens"] = torch.tensor(list(context_lens), dtype=torch.int32, device=device)
    if query_lens is not None:
        batch["query_lens"] = torch.tensor(list(query_lens), dtype=torch.int32, device=device)
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


@dataclass
class CheckedInputs:
    """What :func:`_validate` hands a kernel: int32 tensors on q's device, and their maxima."""

    block_tables: torch.Tensor  # (num_seqs, max_blocks) int32
    context_lens: torch.Tensor  # (num_seqs,) int32
    max_context_len: int
    query_lens: torch.Tensor | None = None  # (num_seqs,) int32, packed q only
    query_start_loc: torch.Tensor | None = None  # (num_seqs + 1,) int32, packed q only
    max_query_len: int = 1


def _validate(q, k_cache, v_cache, block_tables, context_lens, query_lens=None) -> CheckedInputs:
    """Check every input of a paged attention call: a decode (``query_lens`` None, q has one row
    per sequence) or packed queries. Raises InvalidConfig (a ValueError) naming the argument.
    """
    layout = "(num_seqs, num_heads, head_dim)" if query_lens is None \
        else "(sum(query_lens), num_heads, head_dim)"
    for name, tensor, dims in (("q", q, 3), ("k_cache", k_cache, 4), ("v_cache", v_cache, 4)):
        if not isinstance(tensor, torch.Tensor):
            raise InvalidConfig(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != dims:
            shape = layout if dims == 3 else "(num_blocks, block_size, num_kv_heads, head_dim)"
            raise InvalidConfig(f"{name} must be {dims}-D {shape}, "
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
    num_queries, num_heads, head_dim = q.shape
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
    if num_queries < 1:
        raise InvalidConfig("q must hold at least one sequence")

    block_tables = _as_int_tensor(block_tables, "block_tables", q.device)
    context_lens = _as_int_tensor(context_lens, "context_lens", q.device)
    if query_lens is None:
        num_seqs = num_queries
    else:
        query_lens = _check_query_lens(query_lens, context_lens, q.device)
        num_seqs = query_lens.shape[0]
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
    checked = CheckedInputs(block_tables=block_tables.to(torch.int32).contiguous(),
                            context_lens=context_lens.to(torch.int32).contiguous(),
                            max_context_len=max(lens))
    if query_lens is None:
        return checked
    new_tokens = query_lens.tolist()
    too_many = [seq for seq, n in enumerate(new_tokens) if n > lens[seq]]
    if too_many:
        seq = too_many[0]
        raise InvalidConfig(f"query_lens[{seq}] = {new_tokens[seq]} is more than context_lens"
                            f"[{seq}] = {lens[seq]}: a sequence's new tokens are part of its "
                            f"context (write their K/V to the cache first)")
    if sum(new_tokens) != num_queries:
        raise InvalidConfig(f"q has {num_queries} rows but sum(query_lens) = {sum(new_tokens)}: "
                            f"pack every sequence's new tokens into q, one after another")
    checked.query_lens = query_lens.to(torch.int32).contiguous()
    starts = torch.zeros(num_seqs + 1, dtype=torch.int32, device=q.device)
    starts[1:] = torch.cumsum(checked.query_lens, 0)
    checked.query_start_loc = starts  # (num_seqs + 1,)
    checked.max_query_len = max(new_tokens)
    return checked


def _check_query_lens(query_lens, context_lens, device) -> torch.Tensor:
    """query_lens as a 1-D integer tensor with one entry >= 1 per sequence of context_lens."""
    if not isinstance(query_lens, torch.Tensor):
        if isinstance(query_lens, (str, bytes)) or not hasattr(query_lens, "__iter__"):
            raise InvalidConfig(f"query_lens must be a list or tensor of ints, got {query_lens!r}")
        query_lens = [check_int(f"query_lens[{seq}]", n, 1) for seq, n in enumerate(query_lens)]
    query_lens = _as_int_tensor(query_lens, "query_lens", device)
    if query_lens.dim() != 1 or query_lens.shape != context_lens.shape:
        raise InvalidConfig(f"query_lens must have one entry per sequence like context_lens "
                            f"{tuple(context_lens.shape)}, got shape {tuple(query_lens.shape)}")
    if bool((query_lens < 1).any()):
        raise InvalidConfig(f"query_lens must be >= 1 (a sequence with nothing new has no place "
                            f"in the batch), got {query_lens.tolist()}")
    return query_lens
