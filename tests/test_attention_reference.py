"""The torch references: contiguous attention is right, and paged attention equals it."""
import math

import pytest
import torch
import torch.nn.functional as F

import pagedlab as pl
from pagedlab.attention import gather_kv, random_paged_batch


def contiguous_kv(batch: dict, seq: int):
    """Sequence `seq`'s keys and values through its block table: (context_len, kv_heads, hd)."""
    context_len = int(batch["context_lens"][seq])
    table = batch["block_tables"][seq]
    return (gather_kv(batch["k_cache"], table, context_len),
            gather_kv(batch["v_cache"], table, context_len))


# -- attention_reference -----------------------------------------------------------------------


def test_contiguous_prefill_matches_torch_sdpa():
    q, k, v = (torch.randn(7, 4, 16) for _ in range(3))  # (tokens, heads, head_dim)
    out = pl.attention_reference(q, k, v)
    expected = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True).transpose(0, 1)
    torch.testing.assert_close(out, expected)


def test_decode_query_sees_every_key():
    q = torch.randn(1, 2, 16)  # one new token
    k, v = torch.randn(9, 2, 16), torch.randn(9, 2, 16)
    scores = torch.einsum("hd,khd->hk", q[0], k) / math.sqrt(16)  # (heads, keys)
    expected = torch.einsum("hk,khd->hd", scores.softmax(-1), v)  # (heads, head_dim)
    torch.testing.assert_close(pl.attention_reference(q, k, v)[0], expected)


def test_first_prefill_token_only_sees_itself():
    q, k, v = (torch.randn(5, 2, 8) for _ in range(3))
    torch.testing.assert_close(pl.attention_reference(q, k, v)[0], v[0])


def test_gqa_equals_repeating_kv_heads():
    q = torch.randn(6, 8, 16)  # 8 query heads
    k, v = torch.randn(6, 2, 16), torch.randn(6, 2, 16)  # 2 KV heads: groups of 4
    expected = pl.attention_reference(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))
    torch.testing.assert_close(pl.attention_reference(q, k, v), expected)


def test_queries_are_the_last_positions_of_the_keys():
    q, k, v = (torch.randn(10, 2, 8) for _ in range(3))
    full = pl.attention_reference(q, k, v)
    torch.testing.assert_close(pl.attention_reference(q[6:], k, v), full[6:])


def test_leading_batch_dimension_is_allowed():
    q, k, v = (torch.randn(3, 5, 2, 8) for _ in range(3))  # (batch, tokens, heads, head_dim)
    out = pl.attention_reference(q, k, v)
    torch.testing.assert_close(out[1], pl.attention_reference(q[1], k[1], v[1]))


def test_output_keeps_the_query_dtype():
    q, k, v = (torch.randn(4, 2, 8, dtype=torch.float16) for _ in range(3))
    assert pl.attention_reference(q, k, v).dtype == torch.float16


# -- paged_attention_reference -----------------------------------------------------------------


def test_gather_reads_blocks_in_table_order():
    cache = torch.arange(4 * 2).float().view(4, 2, 1, 1)  # block b holds 2b, 2b+1
    keys = gather_kv(cache, torch.tensor([3, 0, 2]), context_len=5)
    assert keys.flatten().tolist() == [6, 7, 0, 1, 4]


@pytest.mark.parametrize("queries_per_kv", [1, 4])
def test_paged_decode_equals_contiguous_attention(queries_per_kv):
    batch = random_paged_batch([1, 8, 9, 30], block_size=8, num_heads=2 * queries_per_kv,
                               num_kv_heads=2, head_dim=16)
    out = pl.paged_attention_reference(**batch)
    for seq in range(4):
        k, v = contiguous_kv(batch, seq)
        expected = pl.attention_reference(batch["q"][seq:seq + 1], k, v)[0]
        torch.testing.assert_close(out[seq], expected)


def test_paged_decode_does_not_depend_on_where_blocks_are():
    batch = random_paged_batch([13, 21], block_size=4, head_dim=16)
    moved = dict(batch)
    permutation = torch.randperm(batch["k_cache"].shape[0])
    moved["k_cache"] = torch.empty_like(batch["k_cache"])
    moved["v_cache"] = torch.empty_like(batch["v_cache"])
    moved["k_cache"][permutation] = batch["k_cache"]  # block b now lives at permutation[b]
    moved["v_cache"][permutation] = batch["v_cache"]
    table = batch["block_tables"]
    moved["block_tables"] = torch.where(table >= 0, permutation[table.clamp(min=0).long()], -1)
    torch.testing.assert_close(pl.paged_attention_reference(**moved),
                               pl.paged_attention_reference(**batch))


def test_dispatcher_with_torch_backend_is_the_reference():
    batch = random_paged_batch([3, 17], block_size=8, head_dim=16)
    assert torch.equal(pl.paged_attention(**batch, backend="torch"),
                       pl.paged_attention_reference(**batch))


# -- paged_prefill_reference -------------------------------------------------------------------


def test_full_prefill_equals_contiguous_causal_attention():
    batch = random_paged_batch([11], block_size=4, num_heads=4, num_kv_heads=2, head_dim=16)
    k, v = contiguous_kv(batch, 0)
    q = torch.randn(11, 4, 16)  # every token of the prompt is new
    out = pl.paged_prefill_reference(q, batch["k_cache"], batch["v_cache"],
                                     batch["block_tables"], batch["context_lens"], [11])
    torch.testing.assert_close(out, pl.attention_reference(q, k, v))


def test_prefill_after_a_cached_prefix_attends_to_the_prefix():
    batch = random_paged_batch([12], block_size=4, num_heads=2, head_dim=16)
    k, v = contiguous_kv(batch, 0)
    q = torch.randn(12, 2, 16)
    full = pl.attention_reference(q, k, v)
    # The first 8 tokens came from the prefix cache: only the last 4 are computed now.
    out = pl.paged_prefill_reference(q[8:], batch["k_cache"], batch["v_cache"],
                                     batch["block_tables"], batch["context_lens"], [4])
    torch.testing.assert_close(out, full[8:])


def test_prefill_packs_sequences_one_after_another():
    batch = random_paged_batch([5, 9, 3], block_size=4, num_heads=2, head_dim=16)
    query_lens = [5, 2, 1]
    q = torch.randn(sum(query_lens), 2, 16)
    out = pl.paged_prefill_reference(q, batch["k_cache"], batch["v_cache"],
                                     batch["block_tables"], batch["context_lens"], query_lens)
    start = 0
    for seq, query_len in enumerate(query_lens):
        k, v = contiguous_kv(batch, seq)
        expected = pl.attention_reference(q[start:start + query_len], k, v)
        torch.testing.assert_close(out[start:start + query_len], expected)
        start += query_len


def test_prefill_of_one_token_is_a_decode():
    batch = random_paged_batch([6, 10], block_size=4, num_heads=2, head_dim=16)
    out = pl.paged_prefill_reference(batch["q"], batch["k_cache"], batch["v_cache"],
                                     batch["block_tables"], batch["context_lens"], [1, 1])
    torch.testing.assert_close(out, pl.paged_attention_reference(**batch))


@pytest.mark.parametrize("query_lens, q_tokens, word", [
    ([3], 3, "query_lens"),  # one entry for two sequences
    ([0, 3], 3, "query_lens"),
    ([3, 11], 14, "query_lens"),  # more new tokens than the context holds
    ([3, 3], 5, "sum"),
])
def test_bad_prefill_input_raises_value_error(query_lens, q_tokens, word):
    batch = random_paged_batch([6, 10], block_size=4, num_heads=2, head_dim=16)
    with pytest.raises(ValueError, match=word):
        pl.paged_prefill_reference(torch.randn(q_tokens, 2, 16), batch["k_cache"],
                                   batch["v_cache"], batch["block_tables"],
                                   batch["context_lens"], query_lens)
