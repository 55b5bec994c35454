"""Scheduler: continuous batching, first come first served, preemption, groups, errors."""
import random
from collections import Counter

import pytest

import pagedlab as pl
from pagedlab.sequence import SequenceStatus

B = 4  # block size used throughout: small, so blocks fill quickly


def prompt(seq_id, length, arrival=0.0):
    return pl.Sequence(seq_id, [seq_id * 1000 + i for i in range(length)], arrival=arrival)


def make(num_blocks=64, watermark=0.0, num_cpu_blocks=None, prefix=False, **kwargs):
    bm = pl.BlockManager(num_blocks, B, enable_prefix_caching=prefix, watermark=watermark,
                         num_cpu_blocks=num_cpu_blocks)
    return bm, pl.Scheduler(bm, **kwargs)


def one_token_each(out):
    return [7] * len(out.scheduled)


def check_blocks(bm, sched):
    """Every used block is held by a running sequence, with the right reference count."""
    tables = Counter(b for g in sched.running for s in g.seqs for b in s.block_table)
    assert bm.num_used_blocks == len(tables)
    assert all(bm.ref_count(b) == count for b, count in tables.items())


def drive(sched, bm, tokens=one_token_each, max_steps=100_000):
    """Run the scheduler until every request is done; returns the finished groups by id."""
    done = {}
    for _ in range(max_steps):
        if not sched.has_unfinished():
            return done
        out = sched.schedule()
        assert len(out.scheduled) <= sched.max_num_seqs
        assert out.num_batched_tokens <= sched.max_num_batched_tokens
        for group in sched.update(tokens(out)).finished:
            done[group.request_id] = group
        check_blocks(bm, sched)
    raise AssertionError("the scheduler did not finish")


# ---------------------------------------------------------------------- one request
def test_a_new_request_is_prefilled_then_decoded_one_token_per_step():
    bm, sched = make()
    seq = prompt(1, 6)
    sched.add(seq, max_new_tokens=3)
    out = sched.schedule()
    assert out.prefills == [seq] and out.decodes == [] and out.num_batched_tokens == 6
    sched.update([11])
    out = sched.schedule()
    assert out.prefills == [] and out.decodes == [seq] and out.num_batched_tokens == 1
    assert seq.status is SequenceStatus.RUNNING


def test_a_request_finishes_after_max_new_tokens_and_frees_its_blocks():
    bm, sched = make()
    seq = prompt(1, 6)
    sched.add(seq, max_new_tokens=3)
    done = drive(sched, bm, tokens=lambda out: [len(s.token_ids) for s in out.scheduled])
    assert done[1].finished_seqs == [seq]
    assert seq.output_ids == [6, 7, 8]
    assert seq.status is SequenceStatus.FINISHED
    assert bm.num_used_blocks == 0 and not sched.has_unfinished()


def test_update_can_finish_a_sequence_early_by_its_id():
    bm, sched = make()
    seq = prompt(1, 5)
    sched.add(seq, max_new_tokens=50)
    sched.schedule()
    done = sched.update([3], finished={1}).finished
    assert [g.request_id for g in done] == [1] and seq.output_ids == [3]
    assert bm.num_used_blocks == 0


# ---------------------------------------------------------------------- batching
def test_a_request_arriving_later_joins_the_running_batch_at_the_next_step():
    bm, sched = make()
    first, second = prompt(1, 5), prompt(2, 5)
    sched.add(first, max_new_tokens=10)
    sched.schedule()
    sched.update([1])
    sched.add(second, max_new_tokens=10)
    out = sched.schedule()
    assert out.decodes == [first] and out.prefills == [second]
    assert out.scheduled == [second, first]  # prefills first: the order update expects


def test_requests_are_admitted_first_come_first_served():
    bm, sched = make(num_blocks=6)
    for i in range(1, 5):
        sched.add(prompt(i, 8), max_new_tokens=2)   # 2 blocks + 1 to grow each
    out = sched.schedule()
    assert [s.seq_id for s in out.prefills] == [1, 2]
    assert [g.request_id for g in sched.waiting] == [3, 4]


def test_the_batch_never_exceeds_max_num_seqs():
    bm, sched = make(max_num_seqs=3)
    for i in range(1, 8):
        sched.add(prompt(i, 3), max_new_tokens=4)
    out = sched.schedule()
    assert len(out.scheduled) == 3
    sched.update(one_token_each(out))
    drive(sched, bm)


def test_prefill_tokens_stay_within_max_num_batched_tokens():
    bm, sched = make(max_num_seqs=4, max_num_batched_tokens=20)
    for i in range(1, 6):
        sched.add(prompt(i, 8), max_new_tokens=2)
    out = sched.schedule()
    assert [s.seq_id for s in out.prefills] == [1, 2] and out.num_batched_tokens == 16


def test_admission_keeps_the_watermark_free():
    bm, sched = make(num_blocks=10, watermark=0.3)  # 3 blocks kept back
    for i in range(1, 5):
        sched.add(prompt(i, 7), max_new_tokens=1)    # 2 blocks each
    sched.schedule()
    assert bm.num_free_blocks == 4 >= bm.watermark_blocks
    assert len(sched.running) == 3


def test_prefix_cache_hits_shorten_the_prefill():
    bm, sched = make(prefix=True)
    shared = list(range(100, 112))
    sched.add(pl.Sequence(1, shared + [1, 2]), max_new_tokens=2)
    drive(sched, bm)
    sched.add(pl.Sequence(2, shared + [3, 4]), max_new_tokens=2)
    out = sched.schedule()
    assert out.prefills[0].num_cached_tokens == 12
    assert out.num_batched_tokens == 2
    assert bm.prefix_hit_tokens == 12


def test_admission_counts_prefix_cache_hits_on_live_blocks_as_free():
    # 6 blocks: request 1 holds 4 (3 full prompt blocks + 1), request 2 shares its 3 full
    # blocks, so it needs only 1 new block (+1 to grow) and is admitted while 1 runs.
    bm, sched = make(num_blocks=6, prefix=True)
    shared = list(range(100, 112))
    sched.add(pl.Sequence(1, shared + [1]), max_new_tokens=2)
    sched.update(one_token_each(sched.schedule()))
    sched.add(pl.Sequence(2, shared + [2]), max_new_tokens=2)
    out = sched.schedule()
    assert [s.seq_id for s in out.prefills] == [2]
    assert out.prefills[0].num_cached_tokens == 12


# ---------------------------------------------------------------------- preemption
def fill_pool(preemption, num_cpu_blocks=None):
    """Two requests whose growth overflows a 6-block pool."""
    bm, sched = make(num_blocks=6, preemption=preemption, num_cpu_blocks=num_cpu_blocks)
    older, newer = prompt(1, 8), prompt(2, 8)     # 2 blocks each, 2 more as they grow
    sched.add(older, max_new_tokens=9)
    sched.add(newer, max_new_tokens=9)
    return bm, sched, older, newer


def run_until_preemption(bm, sched):
    for _ in range(50):
        out = sched.schedule()
        if out.preempted:
            return out
        sched.update(one_token_each(out))
    raise AssertionError("no preemption happened")


def test_recompute_preempts_the_most_recent_request_and_requeues_it_at_the_front():
    bm, sched, older, newer = fill_pool("recompute")
    sched.add(prompt(3, 2), max_new_tokens=1)
    out = run_until_preemption(bm, sched)
    assert out.preempted == [newer] and out.decodes == [older]
    assert newer.block_table == [] and newer.status is SequenceStatus.WAITING
    assert [g.request_id for g in sched.waiting][:1] == [2]
    assert sched.num_preemptions == 1
    assert len(newer.output_ids) > 0   # it keeps its tokens: they are computed again


def test_a_recomputed_request_is_prefilled_again_over_prompt_and_output():
    bm, sched, older, newer = fill_pool("recompute")
    out = run_until_preemption(bm, sched)
    sched.update(one_token_each(out))
    while True:
        out = sched.schedule()
        if newer in out.prefills:
            assert out.num_batched_tokens >= len(newer.token_ids)
            break
        sched.update(one_token_each(out))


def test_swap_moves_the_most_recent_request_to_the_cpu_and_back():
    bm, sched, older, newer = fill_pool("swap")
    out = run_until_preemption(bm, sched)
    assert out.swapped_out == [newer] and newer.status is SequenceStatus.SWAPPED
    assert len(out.blocks_to_swap_out) == len(newer.block_table)
    assert bm.is_swapped(newer)
    sched.update(one_token_each(out))
    while True:
        out = sched.schedule()
        if out.swapped_in:
            assert out.swapped_in == [newer] and newer in out.decodes
            assert len(out.blocks_to_swap_in) == len(newer.block_table)
            break
        sched.update(one_token_each(out))
    sched.update(one_token_each(out))
    drive(sched, bm)
    assert older.status is newer.status is SequenceStatus.FINISHED
    assert len(older.output_ids) == len(newer.output_ids) == 9


def test_swap_falls_back_to_recompute_when_the_cpu_pool_is_full():
    bm, sched, older, newer = fill_pool("swap", num_cpu_blocks=0)
    out = run_until_preemption(bm, sched)
    assert out.swapped_out == [] and newer.status is SequenceStatus.WAITING


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("seed", range(4))
def test_under_heavy_preemption_every_request_finishes_with_exactly_its_tokens(preemption, seed):
    rng = random.Random(seed)
    bm, sched = make(num_blocks=12, preemption=preemption, num_cpu_blocks=rng.choice([0, 4, 40]),
                     max_num_seqs=6)
    lengths = {}
    for i in range(1, 25):
        lengths[i] = rng.randint(1, 12)
        sched.add(prompt(i, rng.randint(1, 16)), max_new_tokens=lengths[i])
    done = drive(sched, bm, tokens=lambda out: [len(s.token_ids) for s in out.scheduled])
    assert set(done) == set(lengths)
    for request_id, group in done.items():
        (seq,) = group.finished_seqs
        assert seq.output_ids == list(range(seq.prompt_len, seq.prompt_len + lengths[request_id]))
    assert sched.num_preemptions > 0
    assert bm.num_used_blocks == 0 and bm.num_free_cpu_blocks == bm.num_cpu_blocks


# ---------------------------------------------------------------------- groups
def test_parallel_samples_fork_on_their_first_token_and_share_the_prompt_blocks():
    bm, sched = make()
    parent = prompt(1, 10)   # 2 full blocks + a partly filled one
    group = sched.add(parent, max_new_tokens=5, n=3)
    out = sched.schedule()
    assert out.groups == [group] and out.scheduled == [parent]
    sched.update([[1, 2, 3]])
    assert len(group.seqs) == 3
    full_blocks = parent.block_table[:2]
    assert all(s.block_table[:2] == full_blocks for s in group.seqs)
    assert all(bm.ref_count(b) == 3 for b in full_blocks)
    assert len({s.block_table[2] for s in group.seqs}) == 3   # copy-on-write of the last one
    assert [s.output_ids for s in group.seqs] == [[1], [2], [3]]


def test_copy_on_write_copies_are_reported_by_the_next_schedule():
    bm, sched = make()
    parent = prompt(1, 10)
    sched.add(parent, max_new_tokens=5, n=3)
    sched.schedule()
    shared_last = parent.block_table[-1]
    sched.update([[1, 2, 3]])
    out = sched.schedule()
    assert len(out.blocks_to_copy) == 2
    assert all(src == shared_last for src, _ in out.blocks_to_copy)


def test_parallel_samples_do_not_fork_after_their_first_token():
    bm, sched = make()
    sched.add(prompt(1, 5), max_new_tokens=5, n=2)
    sched.schedule()
    sched.update([[1, 2]])
    sched.schedule()
    with pytest.raises(pl.InvalidConfig, match="cannot fork"):
        sched.update([[1, 2], 3])


def test_a_beam_that_falls_out_is_freed_and_a_strong_one_forks():
    bm, sched = make()
    group = sched.add(prompt(1, 6), max_new_tokens=6, beam_width=2)
    sched.schedule()
    sched.update([[1, 2]])
    weak, strong = group.seqs
    weak_last = weak.block_table[-1]
    sched.schedule()
    sched.update([[], [3, 4]])   # both new beams continue the strong one
    assert weak.status is SequenceStatus.FINISHED and weak not in group.seqs
    assert [s.output_ids for s in group.seqs] == [[2, 3], [2, 4]]
    assert bm.ref_count(weak_last) == 0 or weak_last in {s.block_table[-1] for s in group.seqs}
    check_blocks(bm, sched)


@pytest.mark.parametrize("preemption, num_cpu_blocks", [("recompute", 0), ("recompute", None),
                                                        ("swap", None)])
@pytest.mark.parametrize("kind", ["n", "beam_width"])
def test_groups_finish_with_every_sequence_under_heavy_preemption(preemption, num_cpu_blocks, kind):
    """Recompute frees a group's shared blocks; a CPU pool with room keeps them (as in vLLM)."""
    rng = random.Random(5)
    bm, sched = make(num_blocks=16, preemption=preemption, max_num_seqs=9,
                     num_cpu_blocks=num_cpu_blocks)
    for i in range(1, 13):
        sched.add(prompt(i, rng.randint(1, 9)), max_new_tokens=rng.randint(1, 10), **{kind: 3})

    def tokens(out):
        result = []
        for group in out.groups:
            if kind == "beam_width":
                parents = [rng.randrange(len(group.seqs)) for _ in range(3)]
                result += [list(range(parents.count(i))) for i in range(len(group.seqs))]
            elif group.can_fork:
                result.append([1, 2, 3])
            else:
                result += [5] * len(group.seqs)
        return result

    done = drive(sched, bm, tokens=tokens)
    assert len(done) == 12
    for group in done.values():
        assert len(group.finished_seqs) == 3
        assert {len(s.output_ids) for s in group.finished_seqs} == {group.max_new_tokens}
    assert sched.num_preemptions > 0 and bm.num_used_blocks == 0


# ---------------------------------------------------------------------- errors
def test_a_prompt_larger_than_the_pool_is_rejected_when_added():
    bm, sched = make(num_blocks=4)
    with pytest.raises(pl.OutOfBlocks, match="never give it more than 4"):
        sched.add(prompt(1, 40), max_new_tokens=1)
    assert not sched.has_unfinished()


def test_a_request_that_would_outgrow_the_pool_is_rejected_when_added():
    bm, sched = make(num_blocks=4)
    with pytest.raises(pl.OutOfBlocks, match="use more blocks"):
        sched.add(prompt(1, 8), max_new_tokens=20)
    assert not sched.has_unfinished()


def test_a_request_outgrowing_the_pool_at_run_time_raises_instead_of_looping():
    bm, sched = make(num_blocks=4)
    sched.add(prompt(1, 8))   # no max_new_tokens: grows until told to stop
    with pytest.raises(pl.OutOfBlocks, match="never give it more than 4"):
        drive(sched, bm)


@pytest.mark.parametrize("kwargs", [dict(max_num_seqs=0), dict(max_num_batched_tokens=0),
                                    dict(preemption="drop"),
                                    dict(max_num_seqs=8, max_num_batched_tokens=4)])
def test_bad_settings_raise_invalid_config(kwargs):
    with pytest.raises(pl.InvalidConfig):
        pl.Scheduler(pl.BlockManager(8, B), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(beam_width=-1), dict(n=2, beam_width=2),
                                    dict(max_new_tokens=0), dict(n=300)])
def test_bad_request_options_raise_invalid_config_and_queue_nothing(kwargs):
    bm, sched = make()
    with pytest.raises(pl.InvalidConfig):
        sched.add(prompt(1, 4), **kwargs)
    assert not sched.has_unfinished()


def test_adding_the_same_sequence_twice_is_refused():
    bm, sched = make()
    seq = prompt(1, 4)
    sched.add(seq)
    with pytest.raises(pl.InvalidConfig, match="already queued"):
        sched.add(seq)


def test_ids_reserved_for_forked_sequences_are_refused():
    bm, sched = make()
    with pytest.raises(pl.InvalidConfig, match="reserved"):
        sched.add(prompt(sched.first_child_id, 4))


def test_scheduling_again_before_update_is_refused():
    bm, sched = make()
    sched.add(prompt(1, 4))
    sched.schedule()
    with pytest.raises(pl.InvalidConfig, match="call update"):
        sched.schedule()


def test_update_without_a_scheduled_step_is_refused():
    bm, sched = make()
    with pytest.raises(pl.InvalidConfig, match="schedule"):
        sched.update([])


@pytest.mark.parametrize("tokens", [[], [1, 2], ["a"], [1.5], [True], [[1, 2]]])
def test_bad_next_tokens_raise_invalid_config_and_change_nothing(tokens):
    bm, sched = make()
    seq = prompt(1, 4)
    sched.add(seq, max_new_tokens=5)
    sched.schedule()
    with pytest.raises(pl.InvalidConfig):
        sched.update(tokens)
    assert seq.token_ids == prompt(1, 4).token_ids
    sched.update([9])
    assert seq.output_ids == [9]


def test_finished_must_name_scheduled_sequences():
    bm, sched = make()
    sched.add(prompt(1, 4))
    sched.schedule()
    with pytest.raises(pl.InvalidConfig, match="not in this step"):
        sched.update([1], finished={99})


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_beams_that_all_follow_one_parent_never_run_out_of_reserved_blocks(preemption):
    bm, sched = make(num_blocks=24, preemption=preemption, num_cpu_blocks=0, max_num_seqs=12)
    for i in range(1, 9):
        sched.add(prompt(i, 3 + i), max_new_tokens=9, beam_width=4)

    def tokens(out):  # the worst case for copies: every new beam continues the first one
        result = []
        for group in out.groups:
            result += [[1, 2, 3, 4]] + [[]] * (len(group.seqs) - 1)
        return result

    done = drive(sched, bm, tokens=tokens)
    assert len(done) == 8 and bm.num_used_blocks == 0
    assert sched.num_preemptions > 0


def _prefix_cached_run(tokens_as_lists: bool):
    """A prefix-cached workload in a tight pool. Tokens as ints take update()'s lean path; the
    same tokens as one-element lists take the general one."""
    bm = pl.BlockManager(8, 2, enable_prefix_caching=True)
    sched = pl.Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64)
    prompts = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [1, 2, 7], [1, 2, 3, 4, 5, 8], [9, 9, 9]]
    for i, prompt in enumerate(prompts * 3):
        sched.add(pl.Sequence(i, list(prompt)), max_new_tokens=1 + (i * 7) % 2)
    trace = []
    while sched.has_unfinished():
        out = sched.schedule()
        tokens = [(seq.seq_id * 3 + len(seq.token_ids)) % 4 for seq in out.sampled]
        sched.update([[t] for t in tokens] if tokens_as_lists else tokens)
        trace.append(sorted((s.seq_id, tuple(s.block_table)) for s in out.scheduled))
    return trace, bm.prefix_hit_tokens, bm.prefix_query_tokens


def test_updates_lean_path_frees_finished_blocks_in_order_as_the_general_path_does():
    """A request that ends in a step frees its blocks before the next request grows, so the
    cache hits and block ids are the same on both paths (a review found they were not)."""
    lean, general = _prefix_cached_run(False), _prefix_cached_run(True)
    assert lean[1:] == general[1:]
    assert lean == general
