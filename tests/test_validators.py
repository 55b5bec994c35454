"""One set of validators (pagedlab.errors): every constructor refuses the same bad values the
same way, with InvalidConfig naming the argument, and changes nothing."""
import pytest

import pagedlab as pl
from pagedlab.errors import check_choice, check_fraction, check_index, check_int, check_number


@pytest.mark.parametrize("make, name", [
    (lambda: pl.BlockManager(True), "num_blocks"),
    (lambda: pl.BlockManager(8, num_cpu_blocks=True), "num_cpu_blocks"),
    (lambda: pl.BlockManager(8, watermark=True), "watermark"),
    (lambda: pl.BlockManager(8, watermark=1.0), "watermark"),
    (lambda: pl.Scheduler(pl.BlockManager(8), max_num_seqs=True), "max_num_seqs"),
    (lambda: pl.Scheduler(pl.BlockManager(8), preemption="pause"), "preemption"),
    (lambda: pl.workloads.sharegpt_like(True), "number of requests"),
    (lambda: pl.workloads.Request(0, True, 4), "prompt_len"),
    (lambda: pl.simulate([], pl.BlockManager(8), max_num_batched_tokens=0), "max_num_batched_tokens"),
])
def test_pure_constructors_refuse_bools_and_out_of_range_values(make, name):
    with pytest.raises(pl.InvalidConfig, match=name):
        make()


def test_tensor_constructors_refuse_them_too():
    torch = pytest.importorskip("torch")
    for kwargs, name in ((dict(num_cpu_blocks=True), "num_cpu_blocks"),
                         (dict(num_layers=True), "num_layers")):
        with pytest.raises(pl.InvalidConfig, match=name):
            pl.KVCache(4, 4, 1, 8, device="cpu", dtype=torch.float32, **kwargs)
    cache = pl.KVCache(4, 4, 1, 8, num_layers=2, device="cpu", dtype=torch.float32)
    with pytest.raises(pl.InvalidConfig, match=r"layer must be an int in \[0, 2\)"):
        cache[True]
    from pagedlab.sampling import SamplingParams
    for kwargs in (dict(max_new_tokens=True), dict(temperature=float("nan")), dict(top_k=0),
                   dict(n=1.0)):
        with pytest.raises(pl.InvalidConfig):
            SamplingParams(**kwargs)


def test_each_validator_says_what_it_wanted():
    assert check_int("a", 3, 1) == 3 and check_index("b", 0, 1) == 0
    assert check_fraction("c", 1) == 1.0 and check_number("d", 0, 0.0) == 0.0
    assert check_choice("e", "x", ("x", "y")) == "x"
    for call, words in ((lambda: check_int("a", 0, 1), "a must be >= 1"),
                        (lambda: check_index("b", 2, 2), r"b must be an int in \[0, 2\)"),
                        (lambda: check_fraction("c", 1, below_one=True), r"\[0, 1\)"),
                        (lambda: check_number("d", float("inf")), "finite"),
                        (lambda: check_choice("e", "z", ("x", "y")), "one of")):
        with pytest.raises(pl.InvalidConfig, match=words):
            call()
