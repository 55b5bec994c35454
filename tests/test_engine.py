"""LLMEngine serves the same tokens as Hugging Face, whatever the paging, sharing or preemption."""
import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pagedlab as pl  # noqa: E402
from pagedlab.engine import StepStats  # noqa: E402

VOCAB = 512
NEW = 8  # new tokens per prompt
LENGTHS = [1, 3, 4, 5, 8, 13, 16, 17, 30]  # around block boundaries of 4 and 16

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2,
                                     n_head=4, initializer_range=0.2, bos_token_id=None,
                                     eos_token_id=None, pad_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def model(hf_model):
    return pl.GPT.from_hf(hf_model)


@pytest.fixture(scope="module")
def prompts():
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in LENGTHS]


@pytest.fixture(scope="module")
def hf_tokens(hf_model, prompts):
    """transformers' greedy continuation of each prompt, one prompt at a time (no padding)."""
    tokens = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=NEW, pad_token_id=0)
        tokens.append(out[0, len(prompt):].tolist())
    return tokens


def assert_all_free(engine):
    bm = engine.block_manager
    assert bm.num_used_blocks == 0 and bm.num_free_blocks == bm.num_blocks
    assert bm.num_free_cpu_blocks == bm.num_cpu_blocks
    assert not engine.has_unfinished_requests()


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize("prefix_caching", [False, True])
@pytest.mark.parametrize("num_blocks, preemption", [(64, "recompute"), (10, "recompute"),
                                                    (10, "swap")])
def test_greedy_tokens_equal_hugging_face(model, prompts, hf_tokens, block_size, prefix_caching,
                                          num_blocks, preemption, chunked):
    # Prompts twice: the copies hit the prefix cache (when on) and crowd the small pools.
    engine = pl.LLMEngine(model, num_blocks=num_blocks * 16 // block_size, block_size=block_size,
                          enable_prefix_caching=prefix_caching, preemption=preemption,
                          enable_chunked_prefill=chunked)
    out = engine.generate(prompts + prompts[::-1], max_new_tokens=NEW, progress=False)
    assert out == hf_tokens + hf_tokens[::-1]
    if num_blocks == 10:
        assert engine.stats.preemptions > 0  # the small pool really did push requests out
    if prefix_caching and block_size == 4:
        assert engine.stats.prefix_hit_tokens > 0
    assert_all_free(engine)


@pytest.mark.parametrize("budget", [4, 7, 16, 40, 128])  # one block .. several prompts
@pytest.mark.parametrize("prefix_caching", [False, True])
@pytest.mark.parametrize("num_blocks, preemption", [(64, "recompute"), (12, "recompute"),
                                                    (12, "swap")])
def test_chunked_prefill_serves_hugging_faces_tokens_at_every_budget(
        model, prompts, hf_tokens, budget, prefix_caching, num_blocks, preemption):
    engine = pl.LLMEngine(model, num_blocks=num_blocks, block_size=4,
                          enable_prefix_caching=prefix_caching, preemption=preemption,
                          enable_chunked_prefill=True, max_num_batched_tokens=budget)
    out = engine.generate(prompts + prompts[::-1], max_new_tokens=NEW, progress=False)
    assert out == hf_tokens + hf_tokens[::-1]
    assert max(step.num_batched_tokens for step in engine.stats.steps) <= budget
    if budget < max(LENGTHS):  # the longest prompt really was cut into chunks
        assert any(step.num_prefills and step.num_batched_tokens == budget
                   for step in engine.stats.steps)
    if num_blocks == 12:
        assert engine.stats.preemptions > 0
    assert_all_free(engine)


def test_engine_equals_naive_generator(model, prompts):
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4)
    assert engine.generate(prompts, max_new_tokens=5, progress=False) == \
        pl.naive_generate(model, prompts, max_new_tokens=5)


def test_shared_prefix_is_served_from_the_cache(model, hf_model):
    system = list(range(100, 120))  # 20 tokens every prompt starts with
    prompts = [system + [7], system + [8, 9], system]
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4, enable_prefix_caching=True)
    first = engine.generate(prompts[:1], max_new_tokens=4, progress=False)
    rest = engine.generate(prompts[1:], max_new_tokens=4, progress=False)
    assert engine.stats.prefix_hit_tokens >= 2 * 19
    assert first + rest == pl.naive_generate(model, prompts, max_new_tokens=4)
    assert_all_free(engine)


def test_seeded_sampling_is_reproducible(model, prompts):
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4)
    kwargs = dict(max_new_tokens=NEW, temperature=1.0, top_k=50, progress=False)
    first = engine.generate(prompts, seed=11, **kwargs)
    assert engine.generate(prompts, seed=11, **kwargs) == first
    assert engine.generate(prompts, seed=12, **kwargs) != first
    assert first == pl.naive_generate(model, prompts, NEW, temperature=1.0, top_k=50, seed=11)


def test_sampling_survives_preemption(model, prompts):
    kwargs = dict(max_new_tokens=NEW, temperature=0.8, seed=5, progress=False)
    roomy = pl.LLMEngine(model, num_blocks=64, block_size=4).generate(prompts, **kwargs)
    for preemption in ("recompute", "swap"):
        engine = pl.LLMEngine(model, num_blocks=12, block_size=4, preemption=preemption)
        assert engine.generate(prompts, **kwargs) == roomy
        assert engine.stats.preemptions > 0


def test_parallel_samples_share_the_prompt_blocks(model):
    prompt = list(range(10, 31))  # 21 tokens: five full blocks of 4 the samples can share
    kwargs = dict(max_new_tokens=6, temperature=1.0, seed=3, progress=False)
    shared = pl.LLMEngine(model, num_blocks=64, block_size=4)
    samples = shared.generate([prompt], n=4, **kwargs)[0]
    separate = pl.LLMEngine(model, num_blocks=64, block_size=4)
    separate.generate([prompt] * 4, **kwargs)
    assert len(samples) == 4 and len({tuple(s) for s in samples}) > 1
    assert all(len(s) == 6 for s in samples)
    assert shared.stats.peak_used_blocks < separate.stats.peak_used_blocks
    # Sample 0 draws with the same generator as a lone request with that seed.
    assert samples[0] == pl.naive_generate(model, [prompt], 6, temperature=1.0, seed=3)[0]
    assert_all_free(shared)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_parallel_samples_survive_preemption(model, prompts, preemption):
    kwargs = dict(max_new_tokens=NEW, temperature=1.0, seed=9, n=3, progress=False)
    roomy = pl.LLMEngine(model, num_blocks=128, block_size=4).generate(prompts[4:], **kwargs)
    tight = pl.LLMEngine(model, num_blocks=24, block_size=4, preemption=preemption)
    assert tight.generate(prompts[4:], **kwargs) == roomy
    assert tight.stats.preemptions > 0
    assert_all_free(tight)


def test_add_request_and_step(model, prompts):
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4)
    ids = [engine.add_request(prompts[3], max_new_tokens=2),
           engine.add_request(prompts[5], max_new_tokens=5)]
    finished = {}
    while engine.has_unfinished_requests():
        for result in engine.step():
            finished[result.request_id] = result
    assert sorted(finished) == ids
    assert finished[ids[0]].prompt_token_ids == prompts[3]
    assert finished[ids[1]].outputs == pl.naive_generate(model, [prompts[5]], 5)
    assert_all_free(engine)


def test_stats_and_step_callback(model, prompts):
    seen = []
    engine = pl.LLMEngine(model, num_blocks=10, block_size=4)
    engine.generate(prompts, max_new_tokens=NEW, progress=False, on_step=seen.append)
    stats = engine.stats
    assert seen == stats.steps and all(isinstance(step, StepStats) for step in seen)
    assert len(stats.pool_usage) == len(stats.steps) > NEW
    assert all(0 <= usage <= 1 for usage in stats.pool_usage) and max(stats.pool_usage) > 0.5
    assert stats.generated_tokens == sum(step.new_tokens for step in seen) == len(prompts) * NEW
    assert stats.preemptions > 0 and stats.tokens_per_second > 0
    assert stats.peak_used_blocks <= 10


def test_end_of_text_stops_a_request(model, prompts):
    full = pl.naive_generate(model, prompts[5:6], max_new_tokens=NEW)[0]
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4, eos_token_id=full[2])
    out = engine.generate(prompts[5:6], max_new_tokens=NEW, progress=False)[0]
    assert out == full[:full.index(full[2]) + 1]
    assert_all_free(engine)


@pytest.mark.parametrize("kwargs, error", [
    (dict(prompts=[[1, 2], []]), ValueError),
    (dict(prompts=[[1, 2], list(range(125))]), ValueError),  # beyond n_positions with NEW
    (dict(max_new_tokens=0), ValueError),
    (dict(temperature=-0.5), ValueError),
    (dict(top_k=0), ValueError),
    (dict(n=0), ValueError),
    (dict(prompts=[[1, 2], list(range(60))]), pl.OutOfBlocks),  # more than the pool holds
])
def test_bad_input_raises_before_anything_changes(model, kwargs, error):
    engine = pl.LLMEngine(model, num_blocks=8, block_size=4)
    call = dict(prompts=[[1, 2], [3]], max_new_tokens=4, progress=False)
    call.update(kwargs)
    with pytest.raises(error):
        engine.generate(**call)
    assert_all_free(engine)
    assert engine.stats.steps == []
    assert engine.generate([[1, 2]], max_new_tokens=2, progress=False)  # still serves


def test_engine_rejects_a_hugging_face_model(hf_model):
    with pytest.raises(TypeError, match="from_hf"):
        pl.LLMEngine(hf_model)


def test_triton_kernels_serve_the_same_tokens(model, prompts):
    """The store and decode kernels inside the engine, in the Triton interpreter on a CPU."""
    if pl.backend.triton_status()["mode"] != "interpreter":
        pytest.skip("Triton is compiled for the GPU here: test_engine_on_the_gpu covers it")
    engine = pl.LLMEngine(model, num_blocks=16, block_size=4, backend="triton")
    assert engine.generate(prompts[1:3], max_new_tokens=3, progress=False) == \
        pl.naive_generate(model, prompts[1:3], max_new_tokens=3)


def test_the_unified_kernel_serves_chunks_cached_prefixes_and_mixed_batches(model, prompts):
    """A 5-token budget cuts the 13-token prompt into chunks next to running decodes; the
    repeated prompt starts after a cached prefix. All through the Triton kernels (interpreter)."""
    if pl.backend.triton_status()["mode"] != "interpreter":
        pytest.skip("Triton is compiled for the GPU here: test_engine_on_the_gpu covers it")
    chosen = [prompts[3], prompts[5], prompts[3]]  # 5, 13 and 5 tokens
    engine = pl.LLMEngine(model, num_blocks=16, block_size=4, backend="triton",
                          enable_prefix_caching=True, max_num_batched_tokens=5)
    assert engine.generate(chosen, max_new_tokens=3, progress=False) == \
        pl.naive_generate(model, chosen, max_new_tokens=3)
    mixed = [s for s in engine.stats.steps if s.num_prefills and s.num_decodes]
    assert mixed and engine.stats.prefix_hit_tokens > 0


@pytest.mark.gpu
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_engine_on_the_gpu_equals_hugging_face(model, prompts, hf_tokens, preemption):
    """Compiled Triton kernels, a pinned CPU pool for swapping, the prefix cache: same tokens."""
    engine = pl.LLMEngine(copy.deepcopy(model).cuda(), num_blocks=40, block_size=4,
                          enable_prefix_caching=True, preemption=preemption)
    assert engine.backend == "triton"
    out = engine.generate(prompts + prompts[::-1], max_new_tokens=NEW, progress=False)
    assert out == hf_tokens + hf_tokens[::-1]
    assert engine.stats.preemptions > 0
    assert_all_free(engine)


def test_follow_up_prompt_reuses_a_finished_answer(model, prompts):
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4, enable_prefix_caching=True)
    prompt = prompts[4]  # 8 tokens; with 8 new ones the answer's last token fills a block
    answer = engine.generate([prompt], max_new_tokens=8, progress=False)[0]
    follow_up = prompt + answer + [7, 9]
    assert engine.generate([follow_up], max_new_tokens=4, progress=False) == \
        pl.naive_generate(model, [follow_up], max_new_tokens=4)


def test_progress_bar_counts_tokens(model, prompts, capsys):
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4)
    engine.generate(prompts[:2], max_new_tokens=3, progress=True)
    assert "6/6" in capsys.readouterr().err


def test_sampling_without_a_seed_works_everywhere(model, prompts):
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4)
    out = engine.generate(prompts[:2], max_new_tokens=3, temperature=1.0, progress=False)
    assert [len(tokens) for tokens in out] == [3, 3]
    assert len(pl.naive_generate(model, prompts[:1], max_new_tokens=2, temperature=1.0)[0]) == 2
    assert_all_free(engine)


def test_a_step_on_an_idle_engine_does_nothing(model):
    engine = pl.LLMEngine(model, num_blocks=16, block_size=4)
    assert engine.step() == [] and not engine.has_unfinished_requests()


def test_a_failed_step_leaves_the_engine_usable(model, prompts, monkeypatch):
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4)
    engine.add_request(prompts[0], max_new_tokens=3)
    real_run = engine._batch

    def fail_once(*args, **kwargs):
        monkeypatch.setattr(engine, "_batch", real_run)
        raise KeyboardInterrupt   # the learner pressed Stop mid-step

    monkeypatch.setattr(engine, "_batch", fail_once)
    with pytest.raises(KeyboardInterrupt):
        engine.step()
    assert not engine.has_unfinished_requests()
    assert_all_free(engine)
    assert engine.generate([prompts[0]], max_new_tokens=3, progress=False) == \
        pl.naive_generate(model, [prompts[0]], max_new_tokens=3)
