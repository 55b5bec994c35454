"""Prefix caching: full blocks indexed by a hash chain, reused, evicted LRU first."""
import pytest

import pagedlab as pl
from test_blocks import snapshot, assert_unchanged


def cached_manager(num_blocks=16, block_size=4):
    return pl.BlockManager(num_blocks, block_size, enable_prefix_caching=True)


def test_prefix_caching_is_off_by_default():
    bm = pl.BlockManager(8, 4)
    a, b = pl.Sequence(1, list(range(8))), pl.Sequence(2, list(range(8)))
    bm.allocate(a)
    assert bm.allocate(b) == 0
    assert not set(a.block_table) & set(b.block_table)


def test_common_prefix_shares_exactly_the_full_common_blocks():
    bm = cached_manager()
    a = pl.Sequence(1, list(range(10)))              # blocks [0-3] [4-7] [8 9]
    b = pl.Sequence(2, list(range(9)) + [77, 78])    # same first 9 tokens, then differs
    bm.allocate(a)
    assert bm.allocate(b) == 8
    assert b.block_table[:2] == a.block_table[:2]
    assert b.block_table[2] != a.block_table[2]      # partial common block is never shared
    assert [bm.ref_count(x) for x in a.block_table] == [2, 2, 1]


def test_a_partial_block_is_never_shared():
    bm = cached_manager()
    a = pl.Sequence(1, [1, 2, 3])
    bm.allocate(a)
    b = pl.Sequence(2, [1, 2, 3])
    assert bm.allocate(b) == 0
    assert a.block_table != b.block_table


def test_same_block_after_a_different_prefix_is_not_a_hit():
    bm = cached_manager()
    bm.allocate(pl.Sequence(1, [1, 2, 3, 4, 5, 6, 7, 8]))
    b = pl.Sequence(2, [9, 9, 9, 9, 5, 6, 7, 8])  # second block equal, parent differs
    assert bm.allocate(b) == 0


def test_a_fully_cached_prompt_still_recomputes_its_last_token():
    bm = cached_manager()
    prompt = list(range(8))
    a = pl.Sequence(1, prompt)
    bm.allocate(a)
    b = pl.Sequence(2, prompt)
    assert bm.allocate(b) == len(prompt) - 1
    assert b.num_cached_tokens == 7


def test_freed_cached_blocks_stay_reusable_and_count_as_free():
    bm = cached_manager(num_blocks=4)
    a = pl.Sequence(1, list(range(8)))
    bm.allocate(a)
    first = list(a.block_table)
    bm.free(a)
    assert bm.num_free_blocks == 4 and bm.num_used_blocks == 0
    assert set(bm.cached_block_ids) == set(first)
    b = pl.Sequence(2, list(range(8)) + [100])
    assert bm.allocate(b) == 8
    assert b.block_table[:2] == first


def test_a_block_filled_while_decoding_is_cached_once_its_last_token_is_computed():
    bm = cached_manager()
    a = pl.Sequence(1, [1, 2, 3])
    bm.allocate(a)
    bm.append_token(a, 4)        # block full, but token 4's K/V come with the next step
    assert not bm.is_cached(a.block_table[0])
    bm.append_token(a, 5)        # the step that appends 5 computed 4: now it is cached
    assert bm.is_cached(a.block_table[0])
    b = pl.Sequence(2, [1, 2, 3, 4, 6])
    assert bm.allocate(b) == 4
    assert b.block_table[0] == a.block_table[0]


def test_a_block_whose_last_token_was_never_computed_is_not_reused():
    # A request that ends on a block's last token never computes that token's K/V.
    bm = cached_manager()
    a = pl.Sequence(1, [1, 2, 3])
    bm.allocate(a)
    bm.append_token(a, 4)
    bm.free(a)
    assert bm.allocate(pl.Sequence(2, [1, 2, 3, 4, 5])) == 0


def test_eviction_order_is_least_recently_freed_first():
    bm = cached_manager(num_blocks=4, block_size=2)
    seqs = [pl.Sequence(i, [10 * i, 10 * i + 1]) for i in range(1, 4)]
    for s in seqs:
        bm.allocate(s)
    blocks = [s.block_table[0] for s in seqs]
    for s in seqs:  # freed in order 1, 2, 3
        bm.free(s)
    assert bm.cached_block_ids == tuple(blocks)
    # One never-used block and three cached ones: a 2-block request evicts exactly seq 1's.
    bm.allocate(pl.Sequence(9, [0, 0, 0, 0]))
    assert bm.cached_block_ids == tuple(blocks[1:])
    assert bm.allocate(pl.Sequence(11, [20, 21, 5])) == 2   # seq 2's survived


def test_reusing_a_cached_block_makes_it_most_recently_used():
    bm = cached_manager(num_blocks=3, block_size=2)
    a, b = pl.Sequence(1, [1, 2]), pl.Sequence(2, [3, 4])
    bm.allocate(a)
    bm.allocate(b)
    block_a, block_b = a.block_table[0], b.block_table[0]
    bm.free(a)
    bm.free(b)
    assert bm.cached_block_ids == (block_a, block_b)
    again = pl.Sequence(3, [1, 2, 0])  # hits a's block
    assert bm.allocate(again) == 2
    bm.free(again)
    assert bm.cached_block_ids[0] == block_b   # b's block is now the oldest
    assert bm.cached_block_ids.index(block_a) > 0


def test_a_failed_allocation_leaves_ref_counts_and_cache_untouched():
    bm = cached_manager(num_blocks=3, block_size=2)
    a = pl.Sequence(1, [1, 2, 3, 4])
    bm.allocate(a)
    bm.free(a)
    bm.allocate(pl.Sequence(2, [5]))
    big = pl.Sequence(3, [1, 2, 3, 4, 5, 6, 7])  # hits 2 cached blocks but needs 2 more
    before = snapshot(bm, big)
    with pytest.raises(pl.OutOfBlocks):
        bm.allocate(big)
    assert_unchanged(bm, before, big)


def test_can_allocate_counts_cache_hits_as_not_needing_new_blocks():
    bm = cached_manager(num_blocks=3, block_size=2)
    a = pl.Sequence(1, [1, 2, 3, 4])
    bm.allocate(a)
    b = pl.Sequence(2, [1, 2, 3, 4, 5])  # shares 2 live blocks, needs 1 new
    assert bm.can_allocate(b)
    bm.allocate(b)
    assert bm.num_free_blocks == 0


def test_hit_rate_counters_add_up_over_allocations():
    bm = cached_manager()
    bm.allocate(pl.Sequence(1, list(range(8))))
    bm.allocate(pl.Sequence(2, list(range(8)) + [1, 2]))
    assert bm.prefix_query_tokens == 18 and bm.prefix_hit_tokens == 8


def test_a_block_filled_by_copy_on_write_is_cached_after_the_next_token():
    bm = cached_manager()
    parent = pl.Sequence(1, [1, 2, 3])
    bm.allocate(parent)
    child = bm.fork(parent, 2)
    assert bm.append_token(child, 4) is not None   # copy-on-write fills the copy
    bm.append_token(child, 5)
    probe = pl.Sequence(3, [1, 2, 3, 4, 5])
    assert bm.allocate(probe) == 4
    assert probe.block_table[0] == child.block_table[0]


def test_swapped_in_blocks_rejoin_the_prefix_cache():
    bm = cached_manager(num_blocks=10)
    a = pl.Sequence(1, list(range(9)))
    bm.allocate(a)
    bm.swap_out(a)                                   # its 2 full blocks stay cached
    other = pl.Sequence(2, [50] * 36)                # 9 blocks: evicts one of a's old blocks
    bm.allocate(other)
    bm.free(other)
    bm.swap_in(a)
    probe = pl.Sequence(3, list(range(8)) + [99])
    assert bm.allocate(probe) == 8                   # the evicted block is found again
    assert probe.block_table[1] == a.block_table[1]


# ---------------------------------------------------------------- the PrefixCache itself
def test_block_hashes_chain_each_block_to_its_prefix():
    from pagedlab.prefix_cache import block_hashes, next_block_hash
    a = block_hashes([1, 2, 3, 4, 5, 6], block_size=2)
    b = block_hashes([9, 9, 3, 4, 5, 6], block_size=2)
    assert len(a) == 3 and a[0] != b[0] and a[1] != b[1]   # same blocks, other prefix
    assert block_hashes([1, 2, 3, 4, 5], block_size=2) == a[:2]  # only full blocks
    assert next_block_hash(a[:2], [1, 2, 3, 4, 5, 6], 2) == a[2]


def test_lookup_stops_at_the_first_miss_and_evict_takes_the_oldest():
    from pagedlab.prefix_cache import PrefixCache
    cache = PrefixCache()
    cache.add(7, 100)
    cache.add(8, 300)
    cache.add(9, 100)                      # the first block with a hash keeps it
    assert cache.lookup([100, 200, 300]) == [7]
    cache.park(8)
    cache.park(7)
    assert cache.evictable_ids == (8, 7) and cache.evict() == 8
    assert 8 not in cache and cache.lookup([300]) == []
