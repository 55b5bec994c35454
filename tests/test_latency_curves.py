"""The latency curves of lesson 05b (the paper's Fig. 12): what the lesson says about them holds,
computed from the package with the lesson's own settings."""
import math

import pytest

import pagedlab as pl
from pagedlab.sim.curves import RATES, SYSTEMS, _serve, latency_curves, memory_for, serve

# The paper (Sec. 6.2): vLLM sustains 1.7-2.7x the request rate of Orca (Oracle) and 2.7-8x that
# of Orca (Max) at similar latency.
PAPER_VS_ORACLE = (1.7, 2.7)
PAPER_VS_MAX = (2.7, 8.0)


@pytest.fixture(scope="module")
def curves():
    return latency_curves()   # the lesson's sweep: 300 requests, rates 0.5-3.5 req/s, budget 512


def test_the_sweep_covers_every_system_at_every_rate(curves):
    assert curves.rates == RATES and list(curves.points) == list(SYSTEMS)
    for system in SYSTEMS:
        assert [p.rate for p in curves.points[system]] == list(RATES)
        assert all(p.normalized_latency > 0 for p in curves.points[system])


def test_at_light_load_every_system_gives_about_one_short_step_per_token(curves):
    paged = curves.values("paged")[0]
    assert pl.StepCost().seconds(1, 0) < paged < 1.5 * pl.StepCost().seconds(1, 0)
    for system in SYSTEMS:
        assert curves.values(system)[0] == pytest.approx(paged, rel=0.1), system


def test_once_loaded_paged_beats_oracle_and_oracle_pow2_max(curves):
    for rate in RATES[1:]:
        at = {system: curves.at(system, rate).normalized_latency for system in SYSTEMS}
        assert at["paged"] < at["Orca (Oracle)"] <= at["Orca (Pow2)"] <= at["Orca (Max)"], (rate, at)


def test_the_knee_comes_later_for_paged_than_for_every_orca(curves):
    knees = {system: curves.knee(system) for system in SYSTEMS}
    assert all(math.isfinite(knee) for knee in knees.values()), knees   # the sweep reaches them
    assert knees["Orca (Max)"] < knees["Orca (Pow2)"] <= knees["Orca (Oracle)"] < knees["paged"]


def test_paged_sustains_the_paper_s_multiple_of_orca_s_rate(curves):
    low, high = PAPER_VS_ORACLE
    assert low <= curves.knee("paged") / curves.knee("Orca (Oracle)") <= high
    low, high = PAPER_VS_MAX
    assert low <= curves.knee("paged") / curves.knee("Orca (Max)") <= high


def test_the_knee_moves_by_less_than_a_fifth_with_the_trace_length(curves):
    for num_requests in (200, 500):
        other = latency_curves(num_requests=num_requests, systems=("paged",))
        assert other.knee("paged") == pytest.approx(curves.knee("paged"), rel=0.2), num_requests


def test_below_the_knee_chunked_and_whole_prompts_give_the_same_latency(curves):
    knee = curves.knee("paged")
    for rate in (r for r in RATES if r < knee):
        whole, chunked = curves.at("paged", rate), curves.at("paged, chunked", rate)
        assert chunked.normalized_latency == pytest.approx(whole.normalized_latency, rel=0.05)


def test_under_load_chunked_prefill_lowers_p99_itl_and_pays_in_ttft(curves):
    loaded = [r for r in RATES if r > curves.knee("paged")]
    assert loaded
    for rate in loaded:
        whole, chunked = curves.at("paged", rate), curves.at("paged, chunked", rate)
        assert chunked.p99_itl < whole.p99_itl, rate
        assert chunked.mean_ttft > whole.mean_ttft, rate
        assert chunked.preemptions > whole.preemptions, rate   # a chunk needs only its blocks


def test_a_smaller_budget_caps_the_longest_step():
    # a step computes at most `budget` tokens, so its time has a ceiling; whole prompts have none
    tight = serve("paged, chunked", 3.0, 300, budget=128)
    loose = serve("paged, chunked", 3.0, 300, budget=512)
    assert tight.p99_itl < loose.p99_itl < serve("paged", 3.0, 300).p99_itl


@pytest.mark.parametrize("system", SYSTEMS)
def test_one_request_takes_the_step_costs_the_lesson_adds_by_hand(system):
    cost = pl.StepCost()
    prompt, output = 100, 5
    result = pl.simulate(pl.workloads.fixed(1, prompt, output), memory_for(system),
                         step_cost=cost, enable_chunked_prefill=system == "paged, chunked",
                         max_num_batched_tokens=512)
    ttft = cost.seconds(prompt, prompt)                    # the prefill step reads its own K/V
    decodes = [cost.seconds(1, prompt + i) for i in range(1, output)]
    assert result.mean_ttft == pytest.approx(ttft)
    assert result.mean_tpot == pytest.approx(sum(decodes) / (output - 1))
    assert result.normalized_latency == pytest.approx((ttft + sum(decodes)) / output)


def test_the_results_are_cached_and_a_new_budget_reruns_only_the_chunked_system():
    latency_curves(rates=(1.0,), num_requests=40, budget=256)
    misses = _serve.cache_info().misses
    latency_curves(rates=(1.0,), num_requests=40, budget=256)
    assert _serve.cache_info().misses == misses
    latency_curves(rates=(1.0,), num_requests=40, budget=128)
    assert _serve.cache_info().misses == misses + 1


def test_an_unknown_system_is_refused_by_name():
    with pytest.raises(ValueError, match="Orca"):
        memory_for("Orca (Min)")


def test_the_widget_moves_its_rate_and_its_budget():
    from pagedlab.widgets import LatencyWidget, latency_figure
    widget = LatencyWidget(num_requests=40, rates=(1.0, 3.0), budget=512, rate=1.0)
    text, image = widget.summary.value, widget.image.value
    assert "At 1 req/s, budget 512" in text and image
    widget.rate.value = 3.0
    assert "At 3 req/s" in widget.summary.value and widget.image.value != image
    widget.budget.value = 128
    assert "budget 128" in widget.summary.value and "(128 tokens)" in widget.summary.value
    assert latency_figure(widget.curves, 3.0).axes
