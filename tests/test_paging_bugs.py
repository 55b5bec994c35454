"""Each classic paging bug, planted in one LLMEngine by pagedlab.break_it, breaks the shipped tiny
model's answers, and the same engine answers right again once the bug is taken out."""
import pytest

torch = pytest.importorskip("torch")

import pagedlab as pl  # noqa: E402
from pagedlab import break_it  # noqa: E402

BLOCK_SIZE = 8  # prompts of 12-24 letters (14-26 tokens) span 2-4 blocks, answers 2-4 more

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny():
    return pl.tiny_model()


def engine_for(tiny, **settings):
    model, task = tiny
    return pl.LLMEngine(model, num_blocks=256, block_size=BLOCK_SIZE,
                        eos_token_id=task.eos_token_id, **settings)


def sample_accuracy(engine, task, prompts, n=4):
    """Fraction of n samples per prompt (temperature 1, seeded) answered right."""
    samples = engine.generate(prompts, max_new_tokens=task.max_new_tokens, temperature=1.0,
                              seed=0, n=n, progress=False)
    flat = [out for group in samples for out in group]
    return sum(task.correct([p for p in prompts for _ in range(n)], flat)) / len(flat)


@pytest.mark.parametrize("bug", [break_it.reversed_block_tables, break_it.shifted_block_tables],
                         ids=["reversed", "shifted"])
def test_a_wrong_block_table_breaks_the_answers(tiny, bug):
    model, task = tiny
    prompts = task.prompts(16, seed=21, min_len=12)
    engine = engine_for(tiny)
    assert task.evaluate(engine, prompts) == 1.0
    with bug(engine):
        assert task.evaluate(engine, prompts) <= 0.2
    assert task.evaluate(engine, prompts) == 1.0  # taken out again


def test_a_skipped_copy_on_write_breaks_the_samples_that_forked(tiny):
    """4 samples share a prompt's partly filled last block; 3 of them copy it when they write."""
    model, task = tiny
    prompts = [p for p in task.prompts(40, seed=22, min_len=10) if len(p) % BLOCK_SIZE][:8]
    engine = engine_for(tiny)
    assert sample_accuracy(engine, task, prompts) == 1.0
    with break_it.skipped_copy_on_write(engine):
        assert sample_accuracy(engine, task, prompts) <= 0.5
    assert sample_accuracy(engine, task, prompts) == 1.0


def test_a_cache_hit_read_before_its_kv_exist_breaks_the_prompts_that_reuse_it(tiny):
    """Groups of 3 prompts share 10 letters (a block of 8 and more): the first of each computes
    the shared block, the other two find it in the prefix cache in the same step."""
    model, task = tiny
    prompts = break_it.prompts_sharing_a_prefix(task, groups=8, per_group=3, seed=5)
    engine = engine_for(tiny, enable_prefix_caching=True)
    assert task.evaluate(engine, prompts) == 1.0
    assert engine.stats.prefix_hit_tokens >= 16 * BLOCK_SIZE  # every reuser hit the cache
    engine = engine_for(tiny, enable_prefix_caching=True)  # a cold cache again
    with break_it.cache_hits_read_early(engine):
        outputs = engine.generate(prompts, max_new_tokens=task.max_new_tokens, progress=False)
    right = task.correct(prompts, outputs)
    assert all(right[0::3])  # the first of each group computed its own blocks
    assert sum(right) / len(right) <= 0.5
    engine = engine_for(tiny, enable_prefix_caching=True)
    assert task.evaluate(engine, prompts) == 1.0


def test_the_bug_stays_in_its_engine(tiny):
    model, task = tiny
    prompts = task.prompts(8, seed=23, min_len=12)
    broken, other = engine_for(tiny), engine_for(tiny)
    with break_it.reversed_block_tables(broken), break_it.skipped_copy_on_write(broken):
        assert task.evaluate(other, prompts) == 1.0
    assert "_batch" not in vars(broken) and "copy_blocks" not in vars(broken.kv_cache)


def test_every_bug_is_listed_by_name():
    assert set(break_it.BUGS.values()) == {
        break_it.reversed_block_tables, break_it.shifted_block_tables,
        break_it.skipped_copy_on_write, break_it.cache_hits_read_early}
    assert pl.break_it is break_it
