"""One engine step's tokens, packed, and the attention layer every model calls on them.

A step runs many sequences at once. Sequence ``i`` brings its last ``query_lens[i]`` tokens of
``context_lens[i]``: one for a decode, a chunk of its prompt for a prefill (after any prefix the
cache already holds). Their tokens sit one after another in one row::

    input_ids, positions, slot_mapping : (num_tokens,)   num_tokens = sum(query_lens)
    block_tables                       : (num_seqs, max_blocks) int32, padded with -1
    context_lens, query_lens           : (num_seqs,) int32
    query_start_loc                    : (num_seqs + 1,) int32, where sequence i's tokens start

The engine builds a :class:`PagedBatch` once per step from the block manager's answers (every
slot comes from :meth:`pagedlab.BlockManager.slot_mapping`), and checks it once there, so the
layers do not check it again. Each attention layer then calls :func:`write_and_attend`: store the
new K/V in their slots, attend through the block tables, on the backend the engine resolved once
("triton": the Triton kernels; "torch": :func:`paged_attention_torch`).

See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BUCKET = 16  # sequences per padding bucket on the torch path (measured: 8-16 serve best)


@dataclass
class PagedBatch:
    """One step's packed tokens and where their K/V live in the paged cache (shapes above).

    Sequence i brings its last ``query_lens[i]`` tokens of ``context_lens[i]``; the ones before
    are already in the cache. A slot of -1 means "do not store". ``backend`` is "triton" or
    "torch" (resolved once by the engine), or None to let each call choose.
    """

    input_ids: torch.Tensor  # (num_tokens,) the new tokens of every sequence, one after another
    positions: torch.Tensor  # (num_tokens,) each token's position in its sequence
    slot_mapping: torch.Tensor  # (num_tokens,) where each token's K/V go; -1 = skip
    block_tables: torch.Tensor  # (num_seqs, max_blocks) int32, padded with -1
    context_lens: torch.Tensor  # (num_seqs,) int32 tokens each sequence attends to
    query_lens: list[int]  # (num_seqs,) new tokens per sequence
    block_size: int = 16  # tokens per block of the cache
    backend: str | None = None  # "triton", "torch" or None (choose per call)
    max_context_len: int | None = None  # max(context_lens), known to the engine without a sync
    logits_rows: torch.Tensor | None = None  # rows whose logits are sampled (None: each last row)
    every_slot: bool = False  # True when the engine knows no slot is -1 (the store needs no mask)

    @property
    def is_decode(self) -> bool:
        return len(self.query_lens) == self.input_ids.shape[0]  # one new token per sequence

    @functools.cached_property
    def query_lens_tensor(self) -> torch.Tensor:
        """(num_seqs,) int32 on the batch's device."""
        return torch.tensor(self.query_lens, dtype=torch.int32, device=self.input_ids.device)

    @functools.cached_property
    def query_start_loc(self) -> torch.Tensor:
        """(num_seqs + 1,) int32: sequence i's tokens are rows query_start_loc[i] .. [i + 1] - 1."""
        starts = [0, *itertools.accumulate(self.query_lens)]
        return torch.tensor(starts, dtype=torch.int32, device=self.input_ids.device)

    @functools.cached_property
    def last_token_rows(self) -> torch.Tensor:
        """The packed rows whose logits are sampled: ``logits_rows``, else each sequence's last
        new token. (A prompt chunk with more chunks to come samples nothing.)"""
        if self.logits_rows is not None:
            return self.logits_rows
        return self.query_start_loc[1:].long() - 1

    @functools.cached_property
    def buckets(self) -> list[tuple[torch.Tensor, ...]]:
        """The sequences sorted by new tokens, then context length, in buckets of ``BUCKET``, so
        that padding each bucket to its longest wastes little. Made once per step, shared by
        every layer.

        Per bucket of s sequences with n new tokens: tokens (n,) their rows in the packed batch;
        seq_of (n,), row (n,) where each sits in the padded (s, T) grid; bias (s, T, L) 0 at the
        cache positions each query may see, -inf elsewhere (float32: SDPA adds it to the scores as
        it is, where a boolean mask would be converted again in every layer); table
        (s, L // block_size) with -1 read as block 0.
        """
        device, lens = self.input_ids.device, self.context_lens.tolist()
        starts = [0, *itertools.accumulate(self.query_lens)]  # first packed row of each sequence
        # decodes with decodes, prompt chunks with chunks: padding to a bucket's longest wastes little
        order = sorted(range(len(lens)), key=lambda i: (self.query_lens[i], lens[i]))
        buckets = []
        for first in range(0, len(order), BUCKET):
            seqs = order[first:first + BUCKET]
            query_lens = torch.tensor([self.query_lens[i] for i in seqs], device=device)  # (s,)
            tokens = torch.tensor([t for i in seqs for t in range(starts[i], starts[i + 1])],
                                  device=device)  # (n,)
            seq_of = torch.repeat_interleave(torch.arange(len(seqs), device=device), query_lens)
            row = torch.arange(len(tokens), device=device) \
                - (query_lens.cumsum(0) - query_lens)[seq_of]  # (n,) index among its queries
            max_blocks = -(-max(lens[i] for i in seqs) // self.block_size)
            table = self.block_tables[seqs, :max_blocks].clamp(min=0).long()  # (s, max_blocks)
            context = torch.tensor([lens[i] for i in seqs], device=device)  # (s,)
            q_pos = (context - query_lens)[:, None] \
                + torch.arange(int(query_lens.max()), device=device)  # (s, T)
            k_pos = torch.arange(max_blocks * self.block_size, device=device)  # (L,)
            visible = k_pos[None, None, :] <= q_pos[:, :, None]  # (s, T, L) causal; hides padding
            bias = torch.zeros(visible.shape, device=device).masked_fill_(~visible, -math.inf)
            buckets.append((tokens, seq_of, row, bias, table))
        return buckets


def paged_attention_torch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                          batch: PagedBatch) -> torch.Tensor:
    """Paged attention in plain torch, a bucket of sequences at a time: gather blocks, pad, mask.

    The same numbers as ``pagedlab.paged_prefill_reference`` (which loops over sequences one by
    one) in a few batched operations, fast enough to serve on a CPU.
    q: (N, nh, hs) the batch's new tokens, packed -> (N, nh, hs).
    """
    N, nh, hs = q.shape
    n_kv = k_cache.shape[2]
    y = torch.empty_like(q)  # (N, nh, hs)
    for tokens, seq_of, row, bias, table in batch.buckets:
        s, T, L = bias.shape
        if T == 1:  # decode: one query per sequence, nothing to pad
            qp = q.index_select(0, tokens).view(s, 1, nh, hs)  # (s, 1, nh, hs)
        else:
            qp = q.new_zeros(s, T, nh, hs)  # (s, T, nh, hs) the bucket's queries, padded
            qp[seq_of, row] = q.index_select(0, tokens)
        # Each table's blocks, in order. (index_select of whole blocks, not k_cache[table]: the
        # same gather, about twice as fast on a CPU, where this is the engine's largest cost.)
        blocks = table.flatten()  # (s * L // block_size,)
        k = k_cache.index_select(0, blocks).view(s, L, n_kv, hs)  # (s, L, n_kv, hs)
        v = v_cache.index_select(0, blocks).view(s, L, n_kv, hs)  # (s, L, n_kv, hs)
        if n_kv != nh:  # grouped-query attention: each KV head serves nh // n_kv query heads
            k = k.repeat_interleave(nh // n_kv, dim=2)  # (s, L, nh, hs)
            v = v.repeat_interleave(nh // n_kv, dim=2)  # (s, L, nh, hs)
        out = F.scaled_dot_product_attention(qp.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), attn_mask=bias[:, None].to(q.dtype))
        if T == 1:  # (s, nh, 1, hs) -> (s, nh, hs), already in the bucket's order
            y.index_copy_(0, tokens, out.squeeze(2))
        else:  # (s, nh, T, hs) -> (n, nh, hs) packed
            y.index_copy_(0, tokens, out.transpose(1, 2)[seq_of, row])
    return y


def write_and_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: PagedBatch,
                     kv_cache, layer: int) -> torch.Tensor:
    """One attention layer over the paged cache: store the new K/V, then attend through pages.

    q: (N, nh, hs); k, v: (N, n_kv, hs), the batch's new tokens (positions already encoded).
    Returns (N, nh, hs). Every model's attention calls this, so GPT-2 and Llama share one path.
    """
    kv_cache.store(layer, k, v, batch.slot_mapping, backend=batch.backend,  # checked once a step
                   every_slot=batch.every_slot)
    k_cache, v_cache = kv_cache[layer]  # (num_blocks, block_size, n_kv, hs) each
    if batch.backend == "torch":
        return paged_attention_torch(q, k_cache, v_cache, batch)  # (N, nh, hs)
    from .attention import attend_packed  # the engine checked the batch once for the step
    max_context_len = batch.max_context_len
    if max_context_len is None:
        max_context_len = int(batch.context_lens.max())
    return attend_packed(q, k_cache, v_cache, batch.block_tables, batch.context_lens,
                         batch.query_start_loc, max(batch.query_lens), max_context_len,
                         q.shape[-1] ** -0.5, batch.backend,
                         torch_call=lambda: paged_attention_torch(q, k_cache, v_cache, batch))
