"""The block manager, behaviour by behaviour. See pagedlab/blocks.py."""
import copy

import pytest

import pagedlab as pl
from pagedlab.blocks import AlreadyAllocated


def seq(seq_id, n, start=0):
    return pl.Sequence(seq_id, list(range(start, start + n)))


def _plain(value):
    if isinstance(value, pl.Sequence):
        return ("Sequence", value.seq_id, list(value.token_ids), list(value.block_table))
    if isinstance(value, dict):
        return [(k, _plain(v)) for k, v in value.items()]  # order matters (LRU)
    if hasattr(value, "__dict__"):
        return _plain(vars(value))
    return copy.deepcopy(value)


def snapshot(bm, *seqs):
    """Everything observable about a manager and some sequences, to compare before/after."""
    return _plain(vars(bm)), [_plain(s) for s in seqs]


def assert_unchanged(bm, before, *seqs):
    assert snapshot(bm, *seqs) == before


# ---------------------------------------------------------------- allocation
def test_allocate_takes_ceil_len_over_block_size_blocks():
    bm = pl.BlockManager(num_blocks=8, block_size=4)
    s = seq(1, 9)
    assert bm.allocate(s) == 0
    assert len(s.block_table) == 3
    assert bm.num_used_blocks == 3 and bm.num_free_blocks == 5
    assert bm.usage == pytest.approx(3 / 8)


def test_block_tables_of_two_sequences_are_disjoint():
    bm = pl.BlockManager(8, 4)
    a, b = seq(1, 5), seq(2, 6)
    bm.allocate(a)
    bm.allocate(b)
    assert not set(a.block_table) & set(b.block_table)


def test_allocate_is_all_or_nothing():
    # The toy garage leaked 5 of 5 blocks on an 8-token request to a 5-block pool.
    bm = pl.BlockManager(num_blocks=5, block_size=1)
    bm.allocate(seq(1, 2))
    big = seq(2, 4)
    before = snapshot(bm, big)
    with pytest.raises(pl.OutOfBlocks):
        bm.allocate(big)
    assert_unchanged(bm, before, big)
    assert bm.num_free_blocks == 3 and big.block_table == []


def test_out_of_blocks_is_a_memory_error_and_says_what_to_do():
    bm = pl.BlockManager(num_blocks=2, block_size=4)
    bm.allocate(seq(1, 8))
    with pytest.raises(MemoryError, match="free"):
        bm.allocate(seq(2, 1))


def test_request_larger_than_the_whole_pool_raises_and_changes_nothing():
    bm = pl.BlockManager(num_blocks=4, block_size=4)
    big = seq(1, 17)
    before = snapshot(bm, big)
    with pytest.raises(pl.OutOfBlocks, match="never"):
        bm.allocate(big)
    assert_unchanged(bm, before, big)
    assert not bm.can_allocate(big)


def test_can_allocate_matches_allocate():
    bm = pl.BlockManager(4, 4)
    assert bm.can_allocate(seq(1, 16))
    assert not bm.can_allocate(seq(1, 17))


def test_allocating_a_sequence_twice_raises_and_changes_nothing():
    bm = pl.BlockManager(8, 4)
    s = seq(1, 5)
    bm.allocate(s)
    before = snapshot(bm, s)
    with pytest.raises(AlreadyAllocated):
        bm.allocate(s)
    with pytest.raises(pl.PagedLabError):
        bm.allocate(seq(1, 3))  # same id, other object
    assert_unchanged(bm, before, s)


def test_allocating_an_empty_sequence_is_a_value_error():
    bm = pl.BlockManager(8, 4)
    with pytest.raises(ValueError, match="at least one"):
        bm.allocate(pl.Sequence(1, []))
    assert bm.num_free_blocks == 8


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("kwargs", [
    dict(num_blocks=0), dict(num_blocks=-3), dict(block_size=0), dict(block_size=-1),
    dict(num_blocks=2.5), dict(block_size="16"), dict(num_blocks=True), dict(watermark=1.0),
    dict(watermark=-0.1), dict(num_cpu_blocks=-1), dict(watermark="0.1"),
])
def test_bad_configuration_is_a_value_error(kwargs):
    args = dict(num_blocks=8, block_size=4) | kwargs
    with pytest.raises(ValueError) as info:
        pl.BlockManager(**args)
    assert isinstance(info.value, pl.PagedLabError)


def test_ref_count_of_a_block_outside_the_pool_is_a_value_error():
    bm = pl.BlockManager(8, 4)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        bm.ref_count(8)


# ---------------------------------------------------------------- appending
def test_append_uses_the_last_block_until_it_is_full():
    bm = pl.BlockManager(8, 4)
    s = seq(1, 3)
    bm.allocate(s)
    assert bm.append_token(s, 99) is None
    assert len(s.block_table) == 1 and s.token_ids[-1] == 99
    bm.append_token(s, 100)
    assert len(s.block_table) == 2 and bm.num_used_blocks == 2


def test_append_when_pool_is_full_raises_and_changes_nothing():
    bm = pl.BlockManager(1, 2)
    s = seq(1, 2)
    bm.allocate(s)
    before = snapshot(bm, s)
    assert not bm.can_append(s)
    with pytest.raises(pl.OutOfBlocks):
        bm.append_token(s, 5)
    assert_unchanged(bm, before, s)


def test_appending_to_a_freed_sequence_raises_unknown_sequence():
    bm = pl.BlockManager(8, 4)
    s = seq(1, 3)
    bm.allocate(s)
    bm.free(s)
    before = snapshot(bm, s)
    with pytest.raises(pl.UnknownSequence, match="allocate"):
        bm.append_token(s, 1)
    assert_unchanged(bm, before, s)


def test_appending_to_a_never_allocated_sequence_raises_unknown_sequence():
    bm = pl.BlockManager(8, 4)
    with pytest.raises(pl.UnknownSequence):
        bm.append_token(seq(1, 3), 1)


def test_append_rejects_a_token_that_is_not_an_integer():
    bm = pl.BlockManager(8, 4)
    s = seq(1, 3)
    bm.allocate(s)
    before = snapshot(bm, s)
    with pytest.raises(TypeError):
        bm.append_token(s, "fox")
    assert_unchanged(bm, before, s)


def test_slot_mapping_follows_the_block_table():
    bm = pl.BlockManager(8, 4)
    bm.allocate(seq(1, 4))  # takes block 0, so the next one is elsewhere
    s = seq(2, 6)
    bm.allocate(s)
    b0, b1 = s.block_table
    assert bm.slot_mapping(s) == [b0 * 4 + i for i in range(4)] + [b1 * 4, b1 * 4 + 1]


# ---------------------------------------------------------------- sharing
def test_fork_shares_every_block_and_counts_references():
    bm = pl.BlockManager(8, 4)
    parent = seq(1, 6)
    bm.allocate(parent)
    child = bm.fork(parent, 2)
    assert child.block_table == parent.block_table
    assert child.token_ids == parent.token_ids and child.token_ids is not parent.token_ids
    assert all(bm.ref_count(b) == 2 for b in parent.block_table)
    assert bm.num_used_blocks == 2


def test_appending_to_a_shared_partial_block_copies_it_first():
    bm = pl.BlockManager(8, 4)
    parent = seq(1, 6)
    bm.allocate(parent)
    child = bm.fork(parent, 2)
    shared_last = parent.block_table[-1]
    src, dst = bm.append_token(child, 7)
    assert src == shared_last and dst == child.block_table[-1] != shared_last
    assert parent.block_table[-1] == shared_last
    assert bm.ref_count(shared_last) == 1 and bm.ref_count(dst) == 1
    assert bm.ref_count(parent.block_table[0]) == 2  # full blocks stay shared
    assert bm.append_token(parent, 8) is None  # the parent now owns its block alone


def test_appending_after_a_shared_full_block_takes_a_new_block_without_copy():
    bm = pl.BlockManager(8, 4)
    parent = seq(1, 8)
    bm.allocate(parent)
    child = bm.fork(parent, 2)
    assert bm.append_token(child, 1) is None
    assert len(child.block_table) == 3 and child.block_table[:2] == parent.block_table


def test_fork_of_an_unknown_sequence_raises_and_changes_nothing():
    bm = pl.BlockManager(8, 4)
    before = snapshot(bm)
    with pytest.raises(pl.UnknownSequence):
        bm.fork(seq(1, 3), 2)
    assert_unchanged(bm, before)


def test_fork_to_an_id_in_use_raises():
    bm = pl.BlockManager(8, 4)
    a, b = seq(1, 3), seq(2, 3)
    bm.allocate(a)
    bm.allocate(b)
    before = snapshot(bm, a, b)
    with pytest.raises(pl.PagedLabError):
        bm.fork(a, 2)
    assert_unchanged(bm, before, a, b)


def test_copy_on_write_with_no_free_block_raises_and_changes_nothing():
    bm = pl.BlockManager(1, 4)
    parent = seq(1, 2)
    bm.allocate(parent)
    child = bm.fork(parent, 2)
    before = snapshot(bm, parent, child)
    with pytest.raises(pl.OutOfBlocks):
        bm.append_token(child, 3)
    assert_unchanged(bm, before, parent, child)


# ---------------------------------------------------------------- freeing
def test_free_returns_blocks_only_when_the_last_reference_goes():
    bm = pl.BlockManager(8, 4)
    parent = seq(1, 6)
    bm.allocate(parent)
    child = bm.fork(parent, 2)
    bm.free(parent)
    assert bm.num_used_blocks == 2
    bm.free(child)
    assert bm.num_free_blocks == 8 and bm.usage == 0.0


def test_double_free_raises_and_changes_nothing():
    # The toy garage reported 5 free blocks out of 4 after a double free.
    bm = pl.BlockManager(4, 4)
    s = seq(1, 3)
    bm.allocate(s)
    bm.free(s)
    before = snapshot(bm, s)
    with pytest.raises(pl.DoubleFree):
        bm.free(s)
    assert_unchanged(bm, before, s)
    assert bm.num_free_blocks == 4


def test_freeing_an_unknown_sequence_raises():
    bm = pl.BlockManager(4, 4)
    with pytest.raises(pl.UnknownSequence):
        bm.free(seq(7, 3))


def test_a_freed_sequence_can_be_allocated_again():
    bm = pl.BlockManager(4, 4)
    s = seq(1, 3)
    bm.allocate(s)
    bm.free(s)
    bm.allocate(s)  # preemption by recompute does exactly this
    assert bm.num_used_blocks == 1


def test_errors_all_derive_from_pagedlab_error():
    for error in (pl.OutOfBlocks, pl.UnknownSequence, pl.DoubleFree, pl.InvalidConfig):
        assert issubclass(error, pl.PagedLabError)
    assert issubclass(pl.OutOfBlocks, MemoryError) and issubclass(pl.InvalidConfig, ValueError)


# ---------------------------------------------------------------- watermark
def test_watermark_keeps_a_fraction_of_the_pool_free_for_new_requests():
    bm = pl.BlockManager(10, 1, watermark=0.2)
    assert bm.watermark_blocks == 2
    a = seq(1, 8)
    bm.allocate(a)
    assert not bm.can_allocate(seq(2, 1))
    with pytest.raises(pl.OutOfBlocks):
        bm.allocate(seq(2, 1))
    bm.append_token(a, 1)  # running sequences may still grow into the watermark
    assert bm.num_free_blocks == 1


# ---------------------------------------------------------------- swapping
def test_swap_out_and_in_moves_blocks_and_keeps_tokens():
    bm = pl.BlockManager(4, 4, num_cpu_blocks=4)
    s = seq(1, 6)
    bm.allocate(s)
    gpu_before = list(s.block_table)
    out = bm.swap_out(s)
    assert [g for g, _ in out] == gpu_before
    assert bm.num_free_blocks == 4 and bm.num_free_cpu_blocks == 2
    assert bm.is_swapped(s)
    back = bm.swap_in(s)
    assert [c for c, _ in back] == [c for _, c in out]
    assert s.block_table == [g for _, g in back]
    assert bm.num_used_blocks == 2 and bm.num_free_cpu_blocks == 4
    assert bm.append_token(s, 5) is None


def test_swapping_a_group_moves_shared_blocks_once():
    bm = pl.BlockManager(8, 4, num_cpu_blocks=8)
    parent = seq(1, 6)
    bm.allocate(parent)
    child = bm.fork(parent, 2)
    bm.append_token(child, 9)  # copy-on-write: 3 distinct blocks now
    assert len(bm.swap_out([parent, child])) == 3
    assert bm.num_free_cpu_blocks == 5
    bm.swap_in([parent, child])
    assert parent.block_table[0] == child.block_table[0]
    assert bm.ref_count(parent.block_table[0]) == 2


def test_swap_out_without_cpu_room_raises_and_changes_nothing():
    bm = pl.BlockManager(4, 4, num_cpu_blocks=1)
    s = seq(1, 6)
    bm.allocate(s)
    before = snapshot(bm, s)
    assert not bm.can_swap_out(s)
    with pytest.raises(pl.OutOfBlocks, match="num_cpu_blocks"):
        bm.swap_out(s)
    assert_unchanged(bm, before, s)


def test_a_swapped_sequence_cannot_grow_until_swapped_in():
    bm = pl.BlockManager(4, 4)
    s = seq(1, 3)
    bm.allocate(s)
    bm.swap_out(s)
    with pytest.raises(pl.PagedLabError, match="swap_in"):
        bm.append_token(s, 1)


def test_freeing_a_swapped_sequence_returns_its_cpu_blocks():
    bm = pl.BlockManager(4, 4)
    s = seq(1, 6)
    bm.allocate(s)
    bm.swap_out(s)
    bm.free(s)
    assert bm.num_free_cpu_blocks == 4 and bm.num_free_blocks == 4


def test_swap_in_without_gpu_room_raises_and_changes_nothing():
    bm = pl.BlockManager(2, 4, num_cpu_blocks=4)
    s = seq(1, 8)
    bm.allocate(s)
    bm.swap_out(s)
    other = seq(2, 5)
    bm.allocate(other)
    before = snapshot(bm, s, other)
    assert not bm.can_swap_in(s)
    with pytest.raises(pl.OutOfBlocks):
        bm.swap_in(s)
    assert_unchanged(bm, before, s, other)


def test_importing_pagedlab_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, pagedlab; pagedlab.BlockManager(4, 4); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
