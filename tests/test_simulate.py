"""simulate: where the memory goes under contiguous reservation and paging (paper Fig. 2, 15)."""
import math

import pytest

import pagedlab as pl
from pagedlab.sim.simulator import format_table, main

POOL = 32 * 2048  # token slots: ~130 ShareGPT requests at their mean final length


@pytest.fixture(scope="module")
def breakdown():
    """The paper's Fig. 2 experiment, smaller: 2,000 ShareGPT-like requests arrive together."""
    requests = pl.workloads.sharegpt_like(2000, seed=0)
    memories = {"max": pl.ContiguousAllocator(POOL, "max"),
                "pow2": pl.ContiguousAllocator(POOL, "pow2"),
                "oracle": pl.ContiguousAllocator(POOL, "oracle"),
                "paged": pl.BlockManager(POOL // 16, 16)}
    return {name: pl.simulate(requests, memory) for name, memory in memories.items()}


# ---------------------------------------------------------------------- Fig. 2
def test_token_state_share_is_ordered_max_pow2_oracle_paged(breakdown):
    shares = [breakdown[name].token_states for name in ("max", "pow2", "oracle", "paged")]
    assert shares == sorted(shares) and len(set(shares)) == 4


def test_paging_keeps_over_90_percent_of_the_pool_in_token_states(breakdown):
    assert breakdown["paged"].token_states > 0.90


def test_paging_wastes_only_the_tails_of_last_blocks(breakdown):
    paged = breakdown["paged"]
    assert 0 < paged.internal_fragmentation < 0.05
    assert paged.reserved == paged.external_fragmentation == 0.0


def test_max_wastes_most_of_its_regions_inside_them(breakdown):
    assert breakdown["max"].internal_fragmentation > 0.4
    assert breakdown["max"].reserved > 0.05


def test_pow2_and_oracle_suffer_external_fragmentation(breakdown):
    assert breakdown["pow2"].external_fragmentation > 0.1
    assert breakdown["oracle"].external_fragmentation > 0.1
    assert breakdown["oracle"].internal_fragmentation == 0.0


def test_the_fractions_never_add_up_to_more_than_the_pool(breakdown):
    for result in breakdown.values():
        parts = (result.token_states, result.reserved, result.internal_fragmentation,
                 result.external_fragmentation)
        assert all(part >= 0 for part in parts) and sum(parts) <= 1 + 1e-9
        assert result.idle == pytest.approx(1 - sum(parts), abs=1e-9)


def test_paging_batches_several_times_more_sequences_than_max(breakdown):
    paged = breakdown["paged"].mean_batch_size
    assert paged > 3 * breakdown["max"].mean_batch_size
    assert all(paged > breakdown[name].mean_batch_size for name in ("pow2", "oracle"))


def test_every_request_finishes_with_all_its_tokens_in_every_memory(breakdown):
    total = sum(r.output_len for r in pl.workloads.sharegpt_like(2000, seed=0))
    for result in breakdown.values():
        assert result.finished == 2000 and result.generated_tokens == total


def test_the_timeline_has_one_entry_per_step(breakdown):
    for result in breakdown.values():
        timeline = result.timeline
        assert len(timeline.batch_size) == len(timeline.token_states) == result.steps
        assert sum(timeline.finished) == result.finished
        assert 0 < result.busy_steps <= result.steps


# ---------------------------------------------------------------------- Fig. 15
@pytest.fixture(scope="module")
def savings():
    """The paper's Fig. 15 experiment, smaller: Alpaca-like requests, memory the bottleneck."""
    requests = pl.workloads.alpaca_like(300, seed=0)
    result = {}
    for kind in ("n", "beam_width"):
        for k in (2, 4, 6):
            result[kind, k] = pl.simulate(requests, pl.BlockManager(600, 16), **{kind: k},
                                          max_num_seqs=512).sharing_saving
    return result


def test_parallel_sampling_saves_a_few_percent(savings):
    assert all(0.02 < savings["n", k] < 0.15 for k in (2, 4, 6))


def test_beam_search_saves_much_more_than_parallel_sampling(savings):
    assert all(0.3 < savings["beam_width", k] < 0.75 for k in (2, 4, 6))
    assert all(savings["beam_width", k] > 3 * savings["n", k] for k in (2, 4, 6))


def test_sharing_saves_more_with_more_samples_or_beams(savings):
    for kind in ("n", "beam_width"):
        assert savings[kind, 2] < savings[kind, 4] < savings[kind, 6]


def test_without_sharing_nothing_is_saved(breakdown):
    assert breakdown["paged"].sharing_saving == 0.0


# ---------------------------------------------------------------------- conservation
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("kwargs", [{}, {"n": 3}, {"beam_width": 3}])
def test_a_tiny_pool_with_heavy_preemption_finishes_everything_and_leaks_nothing(preemption, kwargs):
    requests = pl.workloads.alpaca_like(60, seed=1, rate=2.0, max_seq_len=96)
    bm = pl.BlockManager(40, 8, num_cpu_blocks=30)   # 3 samples of 96 tokens need 36 blocks
    result = pl.simulate(requests, bm, preemption=preemption, **kwargs)
    fan_out = max(kwargs.values(), default=1)
    assert result.finished == 60 and result.preemptions > 0
    assert result.generated_tokens == fan_out * sum(r.output_len for r in requests)
    assert bm.num_used_blocks == 0 and bm.num_free_cpu_blocks == 30 and not bm.sequences


def test_swap_and_recompute_finish_the_same_workload():
    requests = pl.workloads.sharegpt_like(80, seed=2)
    results = [pl.simulate(requests, pl.BlockManager(200, 16), preemption=mode)
               for mode in ("recompute", "swap")]
    assert [r.finished for r in results] == [80, 80]
    assert results[0].generated_tokens == results[1].generated_tokens
    assert all(r.preemptions > 0 for r in results)


def test_the_simulation_is_deterministic_for_a_seed():
    requests = pl.workloads.alpaca_like(80, seed=3, rate=5.0)
    first, second = (pl.simulate(requests, pl.BlockManager(60, 16), beam_width=2, seed=7)
                     for _ in range(2))
    assert first == second


def test_poisson_arrivals_leave_idle_steps_between_requests():
    requests = pl.workloads.alpaca_like(20, seed=0, rate=0.01)  # one every ~100 steps
    result = pl.simulate(requests, pl.BlockManager(200, 16))
    assert result.finished == 20 and result.steps >= math.floor(requests[-1].arrival)
    assert 0 in result.timeline.batch_size


def test_contiguous_memory_serves_parallel_samples_with_a_region_each():
    requests = pl.workloads.alpaca_like(30, seed=0)
    result = pl.simulate(requests, pl.ContiguousAllocator(8 * 2048, "oracle"), n=2)
    assert result.finished == 30
    assert result.generated_tokens == 2 * sum(r.output_len for r in requests)


def test_prefix_caching_hits_shared_system_prompts():
    requests = pl.workloads.with_shared_prefix(pl.workloads.fixed(20, 80, 5), prefix_len=64)
    result = pl.simulate(requests, pl.BlockManager(400, 16, enable_prefix_caching=True))
    assert result.prefix_hit_rate > 0.5 and result.finished == 20


# ---------------------------------------------------------------------- errors
def test_parallel_samples_that_could_never_fit_together_are_refused_up_front():
    requests = pl.workloads.fixed(2, prompt_len=20, output_len=60)   # 80 tokens: 5 blocks each
    with pytest.raises(pl.OutOfBlocks, match="needs 13 blocks"):       # 1 shared + 3 x 4 own
        pl.simulate(requests, pl.BlockManager(12, 16), n=3)


def test_a_pool_too_small_for_one_request_raises_a_clear_error():
    requests = pl.workloads.fixed(3, prompt_len=100, output_len=50)
    with pytest.raises(pl.OutOfBlocks, match="use more blocks"):
        pl.simulate(requests, pl.BlockManager(4, 16))
    with pytest.raises(pl.OutOfBlocks, match="bigger pool"):
        pl.simulate(requests, pl.ContiguousAllocator(1024, "max"))


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(beam_width=2, n=2), dict(preemption="drop"),
                                    dict(max_num_seqs=0)])
def test_bad_options_raise_invalid_config(kwargs):
    with pytest.raises(pl.InvalidConfig):
        pl.simulate(pl.workloads.fixed(2, 5, 5), pl.BlockManager(10, 16), **kwargs)


def test_memory_must_be_a_block_manager_or_contiguous_allocator():
    with pytest.raises(TypeError):
        pl.simulate(pl.workloads.fixed(2, 5, 5), memory=1000)


def test_requests_must_be_request_objects():
    with pytest.raises(TypeError, match="sharegpt_like"):
        pl.simulate([(10, 5)], pl.BlockManager(10, 16))


def test_a_block_manager_already_in_use_is_refused():
    bm = pl.BlockManager(10, 16)
    bm.allocate(pl.Sequence(0, [1, 2, 3]))
    with pytest.raises(pl.InvalidConfig, match="fresh"):
        pl.simulate(pl.workloads.fixed(2, 5, 5), bm)


def test_duplicate_request_ids_are_refused():
    requests = pl.workloads.fixed(2, 5, 5)
    with pytest.raises(pl.InvalidConfig, match="unique"):
        pl.simulate(requests + requests[:1], pl.BlockManager(10, 16))


# ---------------------------------------------------------------------- output
def test_progress_bar_runs_and_is_silent_in_tests(capsys):
    result = pl.simulate(pl.workloads.fixed(3, 5, 5), pl.BlockManager(10, 16), progress=True)
    assert result.finished == 3
    assert capsys.readouterr().err == ""


def test_format_table_has_a_row_per_result(breakdown):
    table = format_table(list(breakdown.values()))
    assert len(table.splitlines()) == 2 + 4 and "token states" in table and "Orca (Max)" in table


def test_command_line_prints_the_breakdown_table(capsys):
    assert main(["--requests", "50", "--pool-tokens", "16384", "--workload", "alpaca"]) == 0
    out = capsys.readouterr().out
    assert "Orca (Pow2)" in out and "paged (block 16)" in out


def test_command_line_reports_a_pool_too_small_as_an_error(capsys):
    assert main(["--requests", "5", "--pool-tokens", "1000", "--memory", "max"]) == 2
    assert "OutOfBlocks" in capsys.readouterr().err


def test_pagedlab_cli_routes_simulate_here(capsys):
    from pagedlab.tools.cli import main as cli_main
    assert cli_main(["simulate", "--requests", "20", "--memory", "paged", "--beam-width", "2",
                     "--workload", "alpaca"]) == 0
    assert "sharing saved" in capsys.readouterr().out


@pytest.mark.slow
def test_the_benchmark_workload_is_served_whole():
    """benchmarks/bench_simulate.py's setting (~100 requests at a time), on 2,000 requests; its
    speed is measured by the benchmark, not here."""
    requests = pl.workloads.sharegpt_like(2_000, seed=0)
    prompt, output = pl.workloads.mean_lengths(requests)
    bm = pl.BlockManager(math.ceil(100 * (prompt + output) / 16), 16)
    result = pl.simulate(requests, bm)
    assert result.finished == 2_000 and result.token_states > 0.9 and bm.num_used_blocks == 0


def test_a_workload_that_fits_whole_is_averaged_over_every_step():
    # Nothing ever waits, so there is no busy phase to single out: the whole run counts.
    requests = pl.workloads.sharegpt_like(10, seed=0)
    result = pl.simulate(requests, pl.BlockManager(4096, 16))
    batches = result.timeline.batch_size
    assert result.mean_batch_size == pytest.approx(sum(batches) / len(batches))
    assert result.token_states == pytest.approx(
        sum(result.timeline.token_states) / len(batches))
