"""The numbers lessons print next to the paper's, computed from the package (not typed in)."""
import pytest

import pagedlab as pl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sharing():
    """Lesson 04's Fig. 15 run: 1,000 Alpaca-like requests, block 16."""
    requests = pl.workloads.alpaca_like(1000, seed=0)
    return {(kind, size): pl.simulate(requests, pl.BlockManager(2048, 16),
                                      **{kind: size}).sharing_saving
            for kind in ("n", "beam_width") for size in (2, 6)}


def test_two_samples_and_two_beams_save_what_the_paper_measured(sharing):
    assert 0.061 <= sharing["n", 2] <= 0.098       # paper: 6.1-9.8% for parallel sampling
    assert 0.376 <= sharing["beam_width", 2] <= 0.552   # paper: 37.6-55.2% for beam search


def test_the_wider_ones_save_more_than_the_paper_as_lesson_04_says(sharing):
    assert 0.098 < sharing["n", 6] < 0.15
    assert 0.552 < sharing["beam_width", 6] < 0.70
    assert sharing["beam_width", 2] > 3 * sharing["n", 2]   # beams share far more than samples


def test_a_short_run_overstates_the_saving_as_lesson_04_warns():
    requests = pl.workloads.alpaca_like(200, seed=0)
    short = pl.simulate(requests, pl.BlockManager(2048, 16), n=2).sharing_saving
    assert 0.13 <= short <= 0.145   # the lesson quotes 13.7%
