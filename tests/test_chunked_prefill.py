"""Chunked prefill (vLLM V1's scheduling): a token budget per step, decodes first, prompt chunks
after, cache hits never counted. Scenarios in the spirit of vLLM's scheduler tests."""
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pagedlab as pl

B = 4


def prompt(seq_id, length, base=None):
    base = seq_id * 1000 if base is None else base
    return pl.Sequence(seq_id, [base + i for i in range(length)])


def make(num_blocks=64, prefix=False, watermark=0.0, num_cpu_blocks=None, block_size=B,
         **kwargs):
    bm = pl.BlockManager(num_blocks, block_size, enable_prefix_caching=prefix, watermark=watermark,
                         num_cpu_blocks=num_cpu_blocks)
    kwargs.setdefault("enable_chunked_prefill", True)
    return bm, pl.Scheduler(bm, **kwargs)


def check_step(sched, out):
    """What every step must satisfy."""
    B = sched.block_manager.block_size  # noqa: N806
    assert set(out.num_scheduled_tokens) == {seq.seq_id for seq in out.scheduled}
    assert all(n >= 1 for n in out.num_scheduled_tokens.values())
    assert sum(out.num_scheduled_tokens.values()) == out.num_batched_tokens
    assert out.num_batched_tokens <= sched.max_num_batched_tokens
    assert len(out.scheduled) <= sched.max_num_seqs
    for seq in out.scheduled:  # every position this step computes has a block
        assert seq.num_computed_tokens <= len(seq.block_table) * B
        assert seq.num_computed_tokens <= len(seq.token_ids)
    for seq in out.sampled:  # a sampled sequence has computed its whole prompt
        assert seq.num_computed_tokens == len(seq.token_ids)


def check_blocks(bm, sched):
    tables = Counter(b for g in sched.running for s in g.seqs for b in s.block_table)
    assert bm.num_used_blocks == len(tables)
    assert all(bm.ref_count(b) == count for b, count in tables.items())


def drive(sched, bm, max_steps=10_000, tokens=None):
    """Run to the end, checking every step; returns (finished groups by id, steps)."""
    done, steps = {}, []
    for _ in range(max_steps):
        if not sched.has_unfinished():
            return done, steps
        out = sched.schedule()
        check_step(sched, out)
        steps.append(out)
        next_tokens = tokens(out) if tokens else [7] * len(out.sampled)
        for group in sched.update(next_tokens).finished:
            done[group.request_id] = group
        check_blocks(bm, sched)
    raise AssertionError("the scheduler did not finish")


# ---------------------------------------------------------------- the budget
def test_decodes_come_first_then_prompt_chunks_in_arrival_order():
    bm, sched = make(max_num_batched_tokens=8)
    a, b = prompt(1, 6), prompt(2, 10)
    sched.add(a, max_new_tokens=4)
    sched.add(b, max_new_tokens=4)
    out = sched.schedule()
    assert out.num_scheduled_tokens == {1: 6, 2: 2}       # a whole, b's first chunk
    assert out.sampled == [a] and out.prefills == [a, b]
    sched.update([5])
    out = sched.schedule()
    assert out.decodes == [a] and out.num_scheduled_tokens == {1: 1, 2: 7}
    assert out.sampled == [a]                              # b still has 1 prompt token left
    sched.update([5])
    out = sched.schedule()
    assert out.num_scheduled_tokens == {1: 1, 2: 1} and set(out.sampled) == {a, b}


def test_cache_hits_do_not_count_against_the_budget():
    # vLLM's scenario: block 4, budget 12, one request decoding, two 8-token prompts sharing
    # its first block: both are admitted (1 + 4 + 4 = 9 tokens computed).
    for chunked in (True, False):
        bm, sched = make(prefix=True, max_num_batched_tokens=12, max_num_seqs=12,
                         enable_chunked_prefill=chunked)
        first = pl.Sequence(1, [1, 2, 3, 4, 5, 6])
        sched.add(first, max_new_tokens=6)   # whole-prompt mode: prompt + outputs within 12
        sched.schedule()
        sched.update([7])
        second = pl.Sequence(2, [1, 2, 3, 4, 20, 21, 22, 23])
        third = pl.Sequence(3, [1, 2, 3, 4, 30, 31, 32, 33])
        sched.add(second, max_new_tokens=2)
        sched.add(third, max_new_tokens=2)
        out = sched.schedule()
        assert out.prefills == [second, third], chunked
        assert out.num_scheduled_tokens == {1: 1, 2: 4, 3: 4} and out.num_batched_tokens == 9


def test_a_prompt_three_times_the_budget_is_served_over_three_steps_while_others_decode():
    bm, sched = make(max_num_batched_tokens=8)
    short = prompt(1, 3)
    sched.add(short, max_new_tokens=20)
    sched.schedule()
    sched.update([5])
    long = prompt(2, 24)
    sched.add(long, max_new_tokens=2)
    chunks = []
    while not long.output_ids:
        out = sched.schedule()
        check_step(sched, out)
        assert short in out.decodes                      # the decode never stalls
        chunks.append(out.num_scheduled_tokens.get(2, 0))
        sched.update([5] * len(out.sampled))
    assert sum(chunks) == 24 and len(chunks) >= 3 and max(chunks) <= 7


def test_blocks_are_taken_as_the_chunks_need_them():
    bm, sched = make(max_num_batched_tokens=4)
    seq = prompt(1, 16)
    sched.add(seq, max_new_tokens=1)
    for step in range(1, 4):
        sched.schedule()
        assert len(seq.block_table) == step and seq.num_computed_tokens == 4 * step
        sched.update([])
    out = sched.schedule()
    # the last chunk completes the prompt: its blocks, plus room for the token it samples
    assert out.sampled == [seq] and len(seq.block_table) == 4


def test_without_chunked_prefill_a_prompt_over_the_budget_is_refused():
    bm, sched = make(max_num_batched_tokens=8, max_num_seqs=8, enable_chunked_prefill=False)
    with pytest.raises(pl.InvalidConfig, match="enable_chunked_prefill"):
        sched.add(prompt(1, 9))
    # recomputed after a preemption, prompt and outputs are prefilled again in one step
    with pytest.raises(pl.InvalidConfig, match="max_new_tokens=4 may need 10 tokens"):
        sched.add(prompt(2, 6), max_new_tokens=4)
    assert not sched.has_unfinished()


def test_a_budget_below_max_num_seqs_caps_the_running_sequences():
    bm, sched = make(max_num_batched_tokens=4, max_num_seqs=16)
    for seq_id in range(1, 9):
        sched.add(prompt(seq_id, 2), max_new_tokens=6)
    done, steps = drive(sched, bm)
    assert len(done) == 8
    assert max(len(out.scheduled) for out in steps) <= 4
    assert all(out.num_batched_tokens <= 4 for out in steps)


def test_parallel_samples_fork_only_after_the_last_chunk():
    bm, sched = make(max_num_batched_tokens=4)
    seq = prompt(1, 10)
    group = sched.add(seq, max_new_tokens=3, n=3)
    for _ in range(2):
        out = sched.schedule()
        assert out.sampled == [] and group.can_fork
        sched.update([])
    out = sched.schedule()
    assert out.sampled == [seq]
    result = sched.update([[1, 2, 3]])
    assert len(result.forked[1]) == 2 and len(group.seqs) == 3


# ---------------------------------------------------------------- conservation
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.sampled_from([4, 5, 8, 16, 64]),
       prefix=st.booleans(), preemption=st.sampled_from(["recompute", "swap"]),
       num_blocks=st.integers(10, 24), fan=st.sampled_from([(1, 1), (2, 1), (1, 2)]),
       watermark=st.sampled_from([0.0, 0.1]), block_size=st.sampled_from([1, 2, 4]))
def test_every_request_finishes_with_exactly_its_tokens_and_every_block_is_freed(
        seed, budget, prefix, preemption, num_blocks, fan, watermark, block_size):
    n, beam_width = fan
    rng = random.Random(seed)
    bm, sched = make(num_blocks=num_blocks * 4 // block_size, prefix=prefix,
                     preemption=preemption, max_num_batched_tokens=budget, max_num_seqs=8,
                     num_cpu_blocks=256, watermark=watermark, block_size=block_size)
    wanted = {}
    shared = [rng.randrange(5) for _ in range(8)]
    for seq_id in range(1, 7):
        length = rng.randint(1, 20)
        tokens = (shared + [rng.randrange(50) for _ in range(length)])[:length] \
            if prefix else [rng.randrange(50) for _ in range(length)]
        max_new = rng.randint(1, 8)
        sched.add(pl.Sequence(seq_id, tokens), max_new_tokens=max_new, n=n,
                  beam_width=beam_width)
        wanted[seq_id] = (tokens, max_new)

    def next_tokens(out):
        tokens = []
        for group in out.groups:
            if group.beam_width > 1:
                tokens += [[rng.randrange(50)] * (1 + (i == 0 and len(group.seqs) < 2))
                           for i in range(len(group.seqs))]
            elif group.can_fork:
                tokens.append([rng.randrange(50) for _ in range(group.n)])
            else:
                tokens += [rng.randrange(50) for _ in group.seqs]
        return tokens

    done, steps = drive(sched, bm, tokens=next_tokens)
    assert sorted(done) == sorted(wanted)
    for request_id, group in done.items():
        tokens, max_new = wanted[request_id]
        for seq in group.finished_seqs:
            assert seq.token_ids[:len(tokens)] == tokens
            assert len(seq.output_ids) == max_new
    assert bm.num_used_blocks == 0 and bm.num_free_cpu_blocks == 256
    assert not sched.running and not sched.waiting and not sched.swapped


def test_tiny_pool_preempts_mid_prefill_and_still_conserves_everything():
    for preemption in ("recompute", "swap"):
        bm, sched = make(num_blocks=8, preemption=preemption, max_num_batched_tokens=6,
                         max_num_seqs=4)
        for seq_id in range(1, 5):
            sched.add(prompt(seq_id, 9), max_new_tokens=6)
        done, steps = drive(sched, bm)
        assert sorted(done) == [1, 2, 3, 4]
        assert sum(len(out.preempted) for out in steps) > 0, preemption
        assert all(len(g.finished_seqs[0].output_ids) == 6 for g in done.values())
        assert bm.num_used_blocks == 0


def test_a_chunked_prompt_enters_the_prefix_cache_block_by_block():
    bm, sched = make(prefix=True, max_num_batched_tokens=4)
    seq = pl.Sequence(1, list(range(12)))
    sched.add(seq, max_new_tokens=1)
    sched.schedule()   # positions 0-3: block 0 is computed this step
    sched.update([])
    assert bm.is_cached(seq.block_table[0]) and len(seq.block_table) == 1
    sched.schedule()
    sched.update([])
    assert bm.is_cached(seq.block_table[1])


def test_slots_to_write_skips_the_recomputed_token_of_a_fully_cached_prompt():
    bm, sched = make(prefix=True, max_num_batched_tokens=32, max_num_seqs=8)
    first = pl.Sequence(1, list(range(8)))
    sched.add(first, max_new_tokens=2)
    sched.schedule()
    sched.update([100])
    twins = [pl.Sequence(2, list(range(8))), pl.Sequence(3, list(range(8)))]
    for seq in twins:
        sched.add(seq, max_new_tokens=1)
    out = sched.schedule()
    assert out.num_scheduled_tokens[2] == out.num_scheduled_tokens[3] == 1
    for seq in twins:   # the same slot twice would be refused by KVCache.write
        assert bm.slots_to_write(seq, 7, 8) == [-1]
    assert bm.slots_to_write(first, 8, 9) != [-1]


def test_bad_chunk_requests_to_the_block_manager_change_nothing():
    bm = pl.BlockManager(3, B)
    seq = prompt(1, 12)
    with pytest.raises(pl.InvalidConfig, match="num_tokens"):
        bm.allocate(seq, 0)
    assert seq.block_table == [] and bm.num_free_blocks == 3
    bm.allocate(seq, 4)
    bm.allocate(prompt(2, 2))
    before = (list(seq.block_table), bm.num_free_blocks, seq.num_computed_tokens)
    with pytest.raises(pl.OutOfBlocks):
        bm.extend(seq, 12)                 # needs 2 more blocks, 1 is free
    with pytest.raises(pl.InvalidConfig, match="more than"):
        bm.extend(seq, 13)
    with pytest.raises(pl.InvalidConfig):
        bm.slot_mapping(seq, 0, 9)         # position 8 has no block yet
    assert (list(seq.block_table), bm.num_free_blocks, seq.num_computed_tokens) == before
    bm.extend(seq, 8)
    assert len(seq.block_table) == 2 and seq.num_computed_tokens == 8


# ---------------------------------------------------------------- the simulator
def test_the_simulator_serves_the_same_workload_with_chunks():
    requests = pl.workloads.sharegpt_like(200, seed=3)
    whole = pl.simulate(requests, pl.BlockManager(800, 16))
    chunked = pl.simulate(requests, pl.BlockManager(800, 16), enable_chunked_prefill=True,
                          max_num_batched_tokens=128)
    assert whole.finished == chunked.finished == 200
    assert whole.generated_tokens == chunked.generated_tokens
    assert chunked.time_unit == whole.time_unit == "steps"
    assert 0 < chunked.token_states <= 1


def test_with_a_step_cost_the_clock_runs_in_seconds_and_latencies_follow_it():
    requests = pl.workloads.fixed(20, prompt_len=100, output_len=10, rate=2.0)
    cost = pl.StepCost(fixed_ms=10.0, per_token_ms=0.1, per_kv_token_ms=0.0)
    result = pl.simulate(requests, pl.BlockManager(400, 16), step_cost=cost)
    assert result.time_unit == "s" and result.finished == 20
    # alone, a request's first step prefills 100 tokens: 10 + 100 * 0.1 = 20 ms
    assert result.mean_ttft == pytest.approx(0.020, abs=0.01)
    assert result.mean_tpot >= 0.010 and result.p99_itl >= 0.010
    assert result.normalized_latency > result.mean_tpot
    assert result.duration >= requests[-1].arrival


def test_chunked_prefill_caps_the_stalls_between_tokens():
    # A long prompt arriving while others decode: whole, it stalls every decode for one long
    # step; in chunks of 64, no step is long.
    requests = pl.workloads.fixed(8, prompt_len=20, output_len=60) + [
        pl.workloads.Request(100, 1500, 5, arrival=0.5)]
    cost = pl.StepCost()
    results = {chunked: pl.simulate(requests, pl.BlockManager(400, 16), step_cost=cost,
                                    enable_chunked_prefill=chunked,
                                    max_num_batched_tokens=64 if chunked else 2048)
               for chunked in (False, True)}
    # whole: the 8 decodes wait for one step of 1,500 prompt tokens (+ 8 decode tokens)
    assert results[False].p99_itl >= cost.seconds(1500 + 8, 0)
    # chunked: no decode ever waits for more than a step of 64 tokens (plus the K/V it reads)
    assert results[True].p99_itl < cost.seconds(64, 0) + 0.005
    assert results[True].mean_ttft > results[False].mean_ttft  # the price: a later first token


def test_a_bad_step_cost_is_refused():
    with pytest.raises(pl.InvalidConfig, match="fixed_ms"):
        pl.StepCost(fixed_ms=-1)
    with pytest.raises(TypeError, match="StepCost"):
        pl.simulate([], pl.BlockManager(8), step_cost=17.0)
