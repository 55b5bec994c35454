"""Synthetic workloads: the paper's mean lengths, long tails, caps and arrivals."""
import statistics

import pytest

import pagedlab as pl
from pagedlab.sim.workloads import Request, fixed, mean_lengths, with_shared_prefix


@pytest.fixture(scope="module")
def sharegpt():
    return pl.workloads.sharegpt_like(20_000, seed=0)


@pytest.fixture(scope="module")
def alpaca():
    return pl.workloads.alpaca_like(20_000, seed=0)


def test_sharegpt_means_match_the_paper(sharegpt):
    prompt, output = mean_lengths(sharegpt)
    assert prompt == pytest.approx(161.31, rel=0.03)
    assert output == pytest.approx(337.99, rel=0.03)


def test_alpaca_means_match_the_paper(alpaca):
    prompt, output = mean_lengths(alpaca)
    assert prompt == pytest.approx(19.31, rel=0.03)
    assert output == pytest.approx(58.45, rel=0.03)


def test_sharegpt_is_longer_and_more_spread_out_than_alpaca(sharegpt, alpaca):
    (sp, so), (ap, ao) = mean_lengths(sharegpt), mean_lengths(alpaca)
    assert 7 < sp / ap < 10 and 5 < so / ao < 7   # the paper: 8.4x and 5.8x
    assert statistics.pstdev(r.output_len for r in sharegpt) > \
        5 * statistics.pstdev(r.output_len for r in alpaca)


def test_lengths_have_a_long_right_tail(sharegpt):
    outputs = sorted(r.output_len for r in sharegpt)
    median, p99 = outputs[len(outputs) // 2], outputs[int(len(outputs) * 0.99)]
    assert statistics.fmean(outputs) > 1.2 * median
    assert p99 > 4 * median


def test_every_request_fits_the_maximum_sequence_length(sharegpt):
    assert all(r.prompt_len >= 1 and r.output_len >= 1 for r in sharegpt)
    assert max(r.prompt_len + r.output_len for r in sharegpt) <= 2048
    short = pl.workloads.sharegpt_like(2000, seed=1, max_seq_len=256)
    assert max(r.prompt_len + r.output_len for r in short) <= 256


def test_the_same_seed_gives_the_same_requests():
    assert pl.workloads.sharegpt_like(50, seed=3, rate=2.0) == \
        pl.workloads.sharegpt_like(50, seed=3, rate=2.0)
    assert pl.workloads.sharegpt_like(50, seed=3) != pl.workloads.sharegpt_like(50, seed=4)


def test_without_a_rate_every_request_arrives_at_step_zero():
    assert {r.arrival for r in pl.workloads.alpaca_like(100, seed=0)} == {0.0}


def test_a_rate_gives_poisson_arrivals_at_that_many_requests_per_step():
    requests = pl.workloads.alpaca_like(20_000, seed=0, rate=4.0)
    times = [r.arrival for r in requests]
    assert times == sorted(times)
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 4.0, rel=0.03)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 4.0, rel=0.05)  # exponential: sd = mean


def test_request_ids_count_from_zero():
    assert [r.request_id for r in pl.workloads.sharegpt_like(5)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kwargs", [dict(n=-1), dict(n=2.5), dict(n=5, rate=0),
                                    dict(n=5, rate=-1.0), dict(n=5, rate=float("inf")),
                                    dict(n=5, max_seq_len=1)])
def test_bad_arguments_raise_invalid_config(kwargs):
    with pytest.raises(pl.InvalidConfig):
        pl.workloads.sharegpt_like(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(prompt_len=0, output_len=1), dict(prompt_len=1, output_len=0),
                                    dict(prompt_len=2, output_len=1, arrival=-1.0),
                                    dict(prompt_len=2, output_len=1, prompt_ids=(1,))])
def test_a_request_with_bad_fields_is_refused(kwargs):
    with pytest.raises(pl.InvalidConfig):
        Request(0, **kwargs)


def test_pl_request_is_the_workloads_request():
    assert pl.Request is Request


def test_fixed_gives_identical_requests():
    requests = fixed(4, prompt_len=10, output_len=20)
    assert {(r.prompt_len, r.output_len, r.arrival) for r in requests} == {(10, 20, 0.0)}


def test_shared_prefix_requests_start_with_the_same_tokens_and_keep_their_lengths():
    requests = with_shared_prefix(fixed(6, 40, 5), prefix_len=32, num_prefixes=1)
    assert all(len(r.prompt_ids) == r.prompt_len == 40 for r in requests)
    assert len({r.prompt_ids[:32] for r in requests}) == 1
    assert len({r.prompt_ids[32:] for r in requests}) == 6
