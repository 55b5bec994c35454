"""ContiguousAllocator: the paper's Orca baselines, one buddy-placed region per request."""
import random

import pytest

import pagedlab as pl
from pagedlab.sim.contiguous import BuddyAllocator, next_pow2


def test_max_policy_reserves_the_maximum_sequence_length():
    alloc = pl.ContiguousAllocator(8192, policy="max", max_seq_len=2048)
    assert alloc.region_size(prompt_len=100, output_len=25) == 2048


def test_pow2_policy_reserves_the_prompt_plus_the_next_power_of_two_of_the_output():
    alloc = pl.ContiguousAllocator(8192, policy="pow2")
    assert alloc.region_size(prompt_len=100, output_len=25) == 100 + 32
    assert alloc.region_size(prompt_len=100, output_len=32) == 100 + 32


def test_pow2_policy_never_reserves_more_than_the_maximum_length():
    alloc = pl.ContiguousAllocator(8192, policy="pow2", max_seq_len=2048)
    assert alloc.region_size(prompt_len=1100, output_len=900) == 2048  # not 1100 + 1024


def test_oracle_policy_reserves_exactly_the_final_length():
    alloc = pl.ContiguousAllocator(8192, policy="oracle")
    assert alloc.region_size(prompt_len=100, output_len=25) == 125


def test_a_region_sits_in_an_aligned_power_of_two_buddy_block():
    alloc = pl.ContiguousAllocator(8192, policy="oracle")
    starts = [alloc.allocate(i, prompt_len=100, output_len=25) for i in range(5)]
    for i, start in enumerate(starts):
        region = alloc.regions[i]
        assert region.block == next_pow2(125) == 128
        assert start % region.block == 0
    assert len(set(starts)) == 5
    assert alloc.num_used_slots == 5 * 128 and alloc.num_reserved_slots == 5 * 125


def test_rounding_slack_counts_as_external_fragmentation():
    alloc = pl.ContiguousAllocator(4096, policy="oracle")
    alloc.allocate(0, prompt_len=100, output_len=29)  # 129 slots -> a 256-slot block
    assert alloc.rounding_slack == 256 - 129
    assert alloc.external_fragmentation() == 256 - 129


def test_free_blocks_too_small_for_the_next_request_are_external_fragmentation():
    alloc = pl.ContiguousAllocator(4096, policy="oracle", max_seq_len=4096)
    for i in range(8):
        alloc.allocate(i, prompt_len=500, output_len=12)  # 512 slots each: the pool is full
    for i in range(0, 8, 2):
        alloc.free(i)  # every other block: 2048 free slots, none of them together
    assert alloc.num_free_slots == 2048
    assert alloc.largest_free_region == 512
    assert not alloc.can_allocate(prompt_len=1000, output_len=24)
    assert alloc.external_fragmentation(region_size=1024) == 2048
    assert alloc.external_fragmentation(region_size=512) == 0


def test_freeing_merges_buddies_back_into_whole_blocks():
    alloc = pl.ContiguousAllocator(3 * 2048, policy="oracle")
    rng = random.Random(0)
    ids = list(range(40))
    for i in ids:
        if alloc.can_allocate(10, 50):
            alloc.allocate(i, prompt_len=10, output_len=rng.randint(1, 50))
    for i in list(alloc.regions):
        alloc.free(i)
    assert alloc.num_free_slots == 3 * 2048
    assert alloc.largest_free_region == 2048
    assert [len(free) for free in alloc._buddy.free_lists][-1] == 3


def test_a_pool_that_is_not_a_power_of_two_is_cut_into_aligned_blocks():
    buddy = BuddyAllocator(2048 + 1024 + 100, max_block=2048)
    blocks = [(start, 1 << order) for order, starts in enumerate(buddy.free_lists)
              for start in starts]
    assert sum(size for _, size in blocks) == 2048 + 1024 + 100
    assert all(start % size == 0 for start, size in blocks)


def test_random_allocations_never_overlap_and_keep_every_slot_accounted_for():
    rng = random.Random(1)
    alloc = pl.ContiguousAllocator(10_000, policy="pow2", max_seq_len=1024)
    live = []
    for step in range(2000):
        if live and rng.random() < 0.45:
            alloc.free(live.pop(rng.randrange(len(live))))
        else:
            prompt = rng.randint(1, 500)
            output = rng.randint(1, 1024 - prompt)
            if alloc.can_allocate(prompt, output):
                alloc.allocate(step, prompt, output)
                live.append(step)
        spans = sorted((r.start, r.start + r.block) for r in alloc.regions.values())
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
        assert alloc.num_used_slots == sum(r.block for r in alloc.regions.values())
        assert alloc.num_used_slots + alloc.num_free_slots == 10_000


def test_a_region_that_does_not_fit_raises_out_of_blocks_and_changes_nothing():
    alloc = pl.ContiguousAllocator(4096, policy="max")
    alloc.allocate(0, 10, 10)
    alloc.allocate(1, 10, 10)
    before = (alloc.num_free_slots, alloc.num_reserved_slots, dict(alloc.regions))
    with pytest.raises(pl.OutOfBlocks, match="largest free one"):
        alloc.allocate(2, 10, 10)
    assert (alloc.num_free_slots, alloc.num_reserved_slots, dict(alloc.regions)) == before


def test_a_region_bigger_than_the_pool_raises_out_of_blocks_naming_the_fix():
    alloc = pl.ContiguousAllocator(1000, policy="max")
    with pytest.raises(pl.OutOfBlocks, match="bigger pool"):
        alloc.allocate(0, 10, 10)
    assert isinstance(pl.OutOfBlocks("x"), MemoryError)


@pytest.mark.parametrize("kwargs", [dict(num_token_slots=0), dict(num_token_slots=-5),
                                    dict(num_token_slots=1.5), dict(num_token_slots=100, policy="lru"),
                                    dict(num_token_slots=100, max_seq_len=0)])
def test_bad_configuration_raises_invalid_config(kwargs):
    with pytest.raises(pl.InvalidConfig):
        pl.ContiguousAllocator(**kwargs)


@pytest.mark.parametrize("prompt_len, output_len", [(0, 5), (5, 0), (-1, 5), (2000, 100), (1.0, 5)])
def test_bad_request_sizes_raise_invalid_config_and_change_nothing(prompt_len, output_len):
    alloc = pl.ContiguousAllocator(4096, policy="oracle", max_seq_len=2048)
    with pytest.raises(pl.InvalidConfig):
        alloc.allocate(0, prompt_len, output_len)
    assert alloc.num_free_slots == 4096 and not alloc.regions


def test_freeing_twice_raises_double_free():
    alloc = pl.ContiguousAllocator(4096)
    alloc.allocate(7, 10, 10)
    alloc.free(7)
    with pytest.raises(pl.DoubleFree):
        alloc.free(7)
    assert alloc.num_free_slots == 4096


def test_freeing_an_unknown_request_raises_unknown_sequence():
    alloc = pl.ContiguousAllocator(4096)
    with pytest.raises(pl.UnknownSequence):
        alloc.free(3)


def test_allocating_the_same_request_twice_is_refused():
    alloc = pl.ContiguousAllocator(8192)
    alloc.allocate(1, 10, 10)
    with pytest.raises(pl.InvalidConfig, match="already holds"):
        alloc.allocate(1, 10, 10)
    assert len(alloc.regions) == 1 and alloc.num_used_slots == 2048
