"""pagedlab.Llama is Llama / Qwen2 / Mistral: Hugging Face's logits and tokens, contiguous, paged;
the shipped tiny model answers right, and a paging bug shows in its answers."""
import functools
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pagedlab as pl  # noqa: E402
from pagedlab.paged_batch import PagedBatch  # noqa: E402

VOCAB = 256
HF_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}
# name -> (model_type, settings): GQA ratios 1, 2 and 4, head dims 16 and 80, tied and untied
CASES = {
    "llama-mha-llama3-rope": ("llama", dict(num_attention_heads=4, num_key_value_heads=4,
                                            rope_theta=500000.0, rope_scaling=LLAMA3)),
    "llama-gqa4-head80-tied": ("llama", dict(num_attention_heads=4, num_key_value_heads=1,
                                             head_dim=80, tie_word_embeddings=True)),
    "qwen2-gqa2-bias": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2)),
    "qwen2-gqa4-tied": ("qwen2", dict(num_attention_heads=8, num_key_value_heads=2,
                                      tie_word_embeddings=True)),
    "mistral-gqa4": ("mistral", dict(num_attention_heads=8, num_key_value_heads=2,
                                     sliding_window=None)),
    "mistral-gqa2-head80": ("mistral", dict(num_attention_heads=2, num_key_value_heads=1,
                                            head_dim=80, sliding_window=None)),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def tiny_hf_model(model_type: str = "llama", seed: int = 0, **overrides):
    """A random 2-layer model; wide weights, random norms and biases keep greedy far from ties."""
    config_class, model_class = HF_CLASSES[model_type]
    settings = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    initializer_range=0.2, tie_word_embeddings=False, bos_token_id=None,
                    eos_token_id=None, pad_token_id=None)
    settings.update(overrides)
    torch.manual_seed(seed)
    model = model_class(config_class(**settings)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:  # RMSNorm weights (ones) and biases (zeros) made random too
                param.add_(0.3 * torch.randn_like(param))
    return model


@functools.lru_cache(maxsize=None)
def case(name):
    model_type, settings = CASES[name]
    hf_model = tiny_hf_model(model_type, **settings)
    return hf_model, pl.Llama.from_hf(hf_model)


def random_prompts(lengths, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def hf_greedy(hf_model, prompt, max_new_tokens):
    ids = torch.tensor([prompt])
    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=max_new_tokens, pad_token_id=0)
    return out[0, len(prompt):].tolist()


class PagedRunner:
    """A hand-made stand-in for the engine: sequences in scattered blocks, prefilled in chunks,
    then decoded together, every step one PagedBatch through model.forward_paged."""

    def __init__(self, model, block_size=4, num_blocks=64, seed=0):
        self.model, self.block_size = model, block_size
        self.cache = pl.KVCache(num_blocks, block_size, model.num_kv_heads, model.head_dim,
                                num_layers=model.num_layers, dtype=model.dtype, device="cpu")
        self.free = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed))
        self.free = self.free.tolist()  # blocks handed out in a shuffled order on purpose

    def step(self, seqs, tables, starts):
        """Run tokens starts[i]: of each sequence; logits (num_seqs, vocab) of their last."""
        size = self.block_size
        ids, positions, slots, query_lens = [], [], [], []
        for seq, table, start in zip(seqs, tables, starts):
            while len(table) * size < len(seq):
                table.append(self.free.pop())
            ids += seq[start:]
            positions += range(start, len(seq))
            slots += [table[p // size] * size + p % size for p in range(start, len(seq))]
            query_lens.append(len(seq) - start)
        seen = set()  # a slot named twice (blocks shared, no copy-on-write): the first writes
        slots = [-1 if slot in seen or seen.add(slot) else slot for slot in slots]
        width = max(len(t) for t in tables)
        batch = PagedBatch(
            input_ids=torch.tensor(ids), positions=torch.tensor(positions),
            slot_mapping=torch.tensor(slots),
            block_tables=torch.tensor([t + [-1] * (width - len(t)) for t in tables],
                                      dtype=torch.int32),
            context_lens=torch.tensor([len(s) for s in seqs], dtype=torch.int32),
            query_lens=query_lens, block_size=size, backend="torch")
        with torch.no_grad():
            return self.model.forward_paged(batch, self.cache)

    def generate(self, prompts, max_new_tokens, chunk=None, choose=None):
        """New tokens of every prompt; ``choose(logits (vocab,), i)`` picks one (default argmax).
        Returns (outputs, every logits row the runner produced, per sequence)."""
        choose = choose or (lambda logits, i: int(logits.argmax()))
        seqs, tables, done = [list(p) for p in prompts], [[] for _ in prompts], [0] * len(prompts)
        logits_of = [[] for _ in prompts]
        while any(d < len(s) for d, s in zip(done, seqs)):  # prefill, chunk tokens at a time
            active = [i for i in range(len(seqs)) if done[i] < len(seqs[i])]
            ends = [len(seqs[i]) if chunk is None else min(done[i] + chunk, len(seqs[i]))
                    for i in active]
            logits = self.step([seqs[i][:end] for i, end in zip(active, ends)],
                               [tables[i] for i in active], [done[i] for i in active])
            for row, (i, end) in enumerate(zip(active, ends)):
                done[i] = end
                if end == len(seqs[i]):
                    logits_of[i].append(logits[row])
        for _ in range(max_new_tokens):
            for i, seq in enumerate(seqs):
                seq.append(choose(logits_of[i][-1], i))
            logits = self.step(seqs, tables, [len(s) - 1 for s in seqs])  # one token each
            for i, row in enumerate(logits):
                logits_of[i].append(row)
        return [s[len(p):] for s, p in zip(seqs, prompts)], logits_of


# ---------------------------------------------------------------------------- conversion
def test_config_maps_from_hf():
    hf_model, model = case("qwen2-gqa2-bias")
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.head_dim, config.vocab_size) == (2, 4, 2, 16, VOCAB)
    assert config.attention_bias and not config.o_proj_bias  # Qwen2: q, k, v only
    assert (model.num_layers, model.num_kv_heads, model.head_dim, model.max_seq_len,
            model.vocab_size) == (2, 2, 16, 128, VOCAB)
    assert model.lm_head.weight is not model.model.embed_tokens.weight


@pytest.mark.parametrize("name", ["llama-gqa4-head80-tied", "qwen2-gqa4-tied"])
def test_tied_embeddings_share_one_matrix(name):
    _, model = case(name)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_keys_and_values_are_smaller_than_queries_under_gqa():
    _, model = case("mistral-gqa4")
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.out_features == 4 * attn.k_proj.out_features == 8 * 8  # 8 heads of 8


# ---------------------------------------------------------------------------- equality
@pytest.mark.parametrize("name", CASES)
def test_logits_equal_hugging_face(name):
    hf_model, model = case(name)
    idx = torch.randint(0, VOCAB, (2, 45), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf_model(idx).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("block_size, chunk", [(4, None), (16, 7)])
def test_paged_forward_equals_hugging_face(name, block_size, chunk):
    """Prompts prefilled (whole, or in chunks of 7) into shuffled blocks, then 6 decode steps:
    every logit row equals Hugging Face's on the whole sequence, and so do the greedy tokens."""
    hf_model, model = case(name)
    prompts = random_prompts([3, 13, 21])
    outputs, logits_of = PagedRunner(model, block_size).generate(prompts, 6, chunk=chunk)
    for prompt, output, rows in zip(prompts, outputs, logits_of):
        with torch.no_grad():
            expected = hf_model(torch.tensor([prompt + output])).logits[0, len(prompt) - 1:]
        torch.testing.assert_close(torch.stack(rows), expected, rtol=1e-4, atol=1e-4)
        assert output == hf_greedy(hf_model, prompt, 6)


def test_llama3_rope_frequencies_equal_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_model, model = case("llama-mha-llama3-rope")
    expected, scaling = ROPE_INIT_FUNCTIONS["llama3"](hf_model.config, "cpu")
    assert scaling == 1.0
    torch.testing.assert_close(model.inv_freq, expected, rtol=0, atol=0)
    assert not torch.equal(model.inv_freq, pl.Llama(pl.LlamaConfig(
        **{**vars(model.config), "rope_scaling": None})).inv_freq)  # the scaling did something


def test_half_precision_keeps_rope_angles_in_float32():
    _, model = case("qwen2-gqa2-bias")
    half = pl.Llama.from_hf(tiny_hf_model("qwen2")).half()
    assert half.dtype == torch.float16 and half.inv_freq.dtype == torch.float32
    torch.testing.assert_close(half.inv_freq, model.inv_freq, rtol=0, atol=0)


def test_sampling_with_a_seed_is_reproducible():
    _, model = case("qwen2-gqa2-bias")
    prompts = random_prompts([5, 9])

    def sampled(seed):
        from pagedlab.sampling import SamplingParams, make_generator, sample

        params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=seed)
        generators = [make_generator(seed + i) for i in range(len(prompts))]
        return PagedRunner(model).generate(
            prompts, 8, choose=lambda logits, i: sample(logits, params, generators[i]))[0]

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)


# ---------------------------------------------------------------------------- the engine
ENGINE_CONFIGS = {  # name -> LLMEngine settings (block_size 4); prompts 3-21 tokens
    "chunked-budget-7": dict(num_blocks=64, max_num_batched_tokens=7),
    "whole-prompts": dict(num_blocks=64, enable_chunked_prefill=False),
    "prefix-caching": dict(num_blocks=64, enable_prefix_caching=True),
    "tiny-pool-recompute": dict(num_blocks=10, preemption="recompute"),
    "tiny-pool-swap": dict(num_blocks=10, preemption="swap", max_num_batched_tokens=8),
}
ENGINE_PROMPTS = random_prompts([3, 13, 21, 9], seed=4)


@functools.lru_cache(maxsize=None)
def hf_tokens(name):
    return [hf_greedy(case(name)[0], prompt, 6) for prompt in ENGINE_PROMPTS]


@pytest.mark.parametrize("config", ENGINE_CONFIGS)
@pytest.mark.parametrize("name", CASES)
def test_engine_greedy_tokens_equal_hugging_face(name, config):
    """Prompts twice: the copies hit the prefix cache (when on) and crowd the tiny pools."""
    engine = pl.LLMEngine(case(name)[1], block_size=4, **ENGINE_CONFIGS[config])
    out = engine.generate(ENGINE_PROMPTS + ENGINE_PROMPTS[::-1], max_new_tokens=6,
                          progress=False)
    assert out == hf_tokens(name) + hf_tokens(name)[::-1]
    if config.startswith("tiny-pool"):
        assert engine.stats.preemptions > 0
    if config == "prefix-caching":
        assert engine.stats.prefix_hit_tokens > 0
    assert engine.block_manager.num_used_blocks == 0


def test_engine_cache_holds_only_the_kv_heads():
    _, model = case("mistral-gqa4")  # 8 query heads over 2 K/V heads of 8, 2 layers
    engine = pl.LLMEngine(model, num_blocks=8, block_size=4)
    assert engine.kv_cache.k.shape == (2, 8, 4, 2, 8)  # (layers, blocks, block, kv heads, hd)
    assert engine.kv_bytes_per_token == 2 * 2 * 2 * 8 * 4  # K and V, layers, heads, hd, fp32


def test_engine_sampling_with_a_seed_is_reproducible():
    _, model = case("qwen2-gqa2-bias")
    engine = pl.LLMEngine(model, num_blocks=64, block_size=4)
    kwargs = dict(max_new_tokens=6, temperature=1.0, progress=False)
    first = engine.generate(ENGINE_PROMPTS, seed=3, **kwargs)
    assert engine.generate(ENGINE_PROMPTS, seed=3, **kwargs) == first
    assert engine.generate(ENGINE_PROMPTS, seed=4, **kwargs) != first


# ---------------------------------------------------------------------------- loading
@pytest.mark.parametrize("name", ["qwen2-gqa2-bias", "llama-gqa4-head80-tied"])
def test_from_pretrained_reads_a_local_folder(name, tmp_path):
    hf_model, model = case(name)
    hf_model.save_pretrained(tmp_path)
    for loaded in (pl.from_pretrained(str(tmp_path)), pl.Llama.from_pretrained(str(tmp_path))):
        assert isinstance(loaded, pl.Llama) and loaded.config == model.config
        for (key, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), key


def test_from_hf_picks_the_class_from_model_type():
    assert isinstance(pl.from_hf(case("mistral-gqa4")[0]), pl.Llama)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()
    assert isinstance(pl.from_hf(gpt2), pl.GPT)


def test_an_unsupported_model_type_is_refused_with_the_supported_list(tmp_path):
    neox = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64))
    for convert in (pl.from_hf, pl.Llama.from_hf):
        with pytest.raises(pl.InvalidConfig, match=r"'gpt_neox'.*llama.*qwen2.*mistral"):
            convert(neox)
    neox.save_pretrained(tmp_path)
    with pytest.raises(pl.InvalidConfig, match=r"gpt2 \(GPT\), llama \(Llama\)"):
        pl.from_pretrained(str(tmp_path))


def test_from_pretrained_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pagedlab\[model\]"):
        pl.from_pretrained("HuggingFaceTB/SmolLM2-135M")


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("model_type, settings, message", [
    ("mistral", dict(sliding_window=16), "sliding window of 16"),
    ("qwen2", dict(use_sliding_window=True, sliding_window=16, max_window_layers=1),
     "sliding window"),
    ("llama", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "'yarn' is not supported"),
    ("llama", dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "default, linear"),
    ("llama", dict(hidden_act="gelu"), "silu"),
])
def test_configs_it_cannot_run_are_refused(model_type, settings, message):
    with pytest.raises(pl.InvalidConfig, match=message):
        pl.Llama.from_hf(tiny_hf_model(model_type, **settings))


def test_a_sliding_window_at_least_as_long_as_every_sequence_is_accepted():
    hf_model = tiny_hf_model("mistral", sliding_window=16)
    hf_model.config.max_position_embeddings = 16  # as the refusal's message suggests
    model = pl.Llama.from_hf(hf_model)
    idx = torch.randint(0, VOCAB, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf_model(idx).logits, rtol=1e-4, atol=1e-4)


def test_qwen2_whose_window_layers_are_all_full_attention_is_accepted():
    hf_model = tiny_hf_model("qwen2", use_sliding_window=True, sliding_window=16,
                             max_window_layers=2)  # layers from 2 on would slide: there are none
    assert pl.Llama.from_hf(hf_model).max_seq_len == 128


@pytest.mark.parametrize("settings, message", [
    (dict(num_attention_heads=6, num_key_value_heads=4), "multiple of num_key_value_heads"),
    (dict(hidden_size=60, num_attention_heads=8), "multiple of num_attention_heads"),
    (dict(head_dim=15), "even"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "low_freq_factor"),
    (dict(rope_scaling={"rope_type": "longrope"}), "not supported"),
])
def test_bad_llama_configs_are_refused(settings, message):
    with pytest.raises(pl.InvalidConfig, match=message):
        pl.LlamaConfig(**settings)


def test_too_many_tokens_are_refused():
    _, model = case("qwen2-gqa2-bias")
    with pytest.raises(pl.InvalidConfig, match="positions"):
        model(torch.zeros(1, 129, dtype=torch.long))


# ---------------------------------------------------------------------------- the tiny model
@functools.lru_cache(maxsize=None)
def training_script():
    """tools/train_tiny_model.py, imported as a module (its recipe and its train())."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "train_tiny_model.py"
    spec = importlib.util.spec_from_file_location("train_tiny_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    return pl.tiny_model()


def test_shipped_tiny_model_is_what_the_training_recipe_describes(tiny):
    from dataclasses import asdict

    from pagedlab.tiny import WEIGHTS

    script, (model, task) = training_script(), tiny
    saved = torch.load(WEIGHTS, weights_only=True)
    assert saved["config"] == asdict(script.CONFIG) and model.config == script.CONFIG
    assert saved["task"] == asdict(script.TASK) and task == script.TASK
    assert saved["recipe"] == script.RECIPE
    assert model.vocab_size == len(task.vocab) == 31  # ".", "[", "]", ">", "<" and a-z
    assert (model.config.num_attention_heads, model.num_kv_heads) == (4, 2)  # GQA
    assert model.max_seq_len == 2 * task.max_len + 4  # the longest prompt and its answer
    shapes = {name: p.shape for name, p in pl.Llama(script.CONFIG).state_dict().items()}
    assert {name: p.shape for name, p in saved["state_dict"].items()} == shapes
    assert WEIGHTS.stat().st_size < 2_000_000


def test_tiny_task_reads_and_checks_answers():
    from pagedlab.tiny import CopyTask

    task = CopyTask()
    prompt = task.encode("[qwerty]")
    assert task.decode(prompt) == "[qwerty]"
    assert [task.decode(a) for a in task.answers(prompt)] == [">qwerty.", "<ytrewq."]
    assert task.answer(prompt) == task.encode(">qwerty.")  # what greedy decoding gives
    echo = lambda prompts, n: [task.answer(p) + [5, 5] for p in prompts]  # noqa: E731
    assert task.evaluate(echo, [prompt]) == 1.0  # what follows "." does not count
    assert task.evaluate(lambda prompts, n: [p for p in prompts], [prompt]) == 0.0
    outputs = [task.encode(text) for text in ("<ytrewq.ab", "<qwerty.", ">qwert")]
    assert task.report([prompt] * 3, outputs) == [
        "[qwerty] -> <ytrewq.  ok", "[qwerty] -> <qwerty.  WRONG", "[qwerty] -> >qwert  WRONG"]
    with pytest.raises(pl.InvalidConfig, match="vocabulary"):
        task.encode("[QWERTY]")


def test_held_out_lists_are_never_trained_on():
    import random

    task = training_script().TASK
    rng = random.Random(0)
    assert not any(task.is_held_out(task.sample(rng, held_out=False)) for _ in range(2000))
    prompts = task.prompts(50, seed=3)
    assert all(task.is_held_out(task.decode(p[1:-1])) for p in prompts)
    assert prompts == task.prompts(50, seed=3)


@pytest.mark.parametrize("block_size", [4, 16])
def test_tiny_model_copies_held_out_lists_through_the_paged_cache(tiny, block_size):
    """Prompts of 16-24 letters fill 5-7 blocks of 4 (2 of 16); answers run into 5-7 more of 4."""
    model, task = tiny
    prompts = task.prompts(40, seed=11, min_len=16)
    outputs, _ = PagedRunner(model, block_size, num_blocks=40 * 80 // block_size).generate(
        prompts, task.max_new_tokens)
    assert task.evaluate(lambda p, n: outputs, prompts) >= 0.95


def test_tiny_model_copies_held_out_lists_contiguously(tiny):
    model, task = tiny
    prompts = task.prompts(200, seed=12)
    accuracy = task.evaluate(functools.partial(training_script().greedy, model), prompts)
    assert accuracy >= 0.95, accuracy
    assert task.evaluate(functools.partial(pl.naive_generate, model), prompts[:8]) == 1.0


def test_a_wrong_block_table_breaks_the_tiny_models_answers(tiny, monkeypatch):
    """The point of the tiny model: a paging bug shows. Here every table reads its blocks in
    reverse order (the keys were stored through the right table)."""
    import dataclasses

    import pagedlab.llama
    from pagedlab.paged_batch import paged_attention_torch

    def reversed_tables(q, k, v, batch, kv_cache, layer):
        kv_cache.write(layer, k, v, batch.slot_mapping, backend="torch")
        tables = batch.block_tables.clone()
        for row in tables:
            used = int((row >= 0).sum())
            row[:used] = row[:used].flip(0)
        return paged_attention_torch(q, *kv_cache[layer],
                                     dataclasses.replace(batch, block_tables=tables))

    model, task = tiny
    prompts = task.prompts(20, seed=13, min_len=16)
    monkeypatch.setattr(pagedlab.llama, "write_and_attend", reversed_tables)
    outputs, _ = PagedRunner(model, 16, num_blocks=128).generate(prompts, task.max_new_tokens)
    assert task.evaluate(lambda p, n: outputs, prompts) <= 0.2


def forked_samples(model, task, prompt, n, copy_on_write, seed):
    """n samples of one prompt (temperature 1) sharing its blocks, as after a fork. With
    copy_on_write the shared, partly filled last block is copied for each sample before it
    writes there; without, every sample writes its answer into that same block."""
    from pagedlab.sampling import SamplingParams, make_generator, sample

    runner = PagedRunner(model, block_size=16, num_blocks=64, seed=seed)
    table = []
    logits = runner.step([list(prompt)], [table], [0])[0]  # prefill once
    tables = [list(table) for _ in range(n)]
    if copy_on_write:
        for other in tables[1:]:
            other[-1] = runner.free.pop()
            runner.cache.copy_blocks([(table[-1], other[-1])])
    params = SamplingParams(max_new_tokens=task.max_new_tokens, temperature=1.0, seed=seed)
    generators = [make_generator(seed, i) for i in range(n)]
    seqs, rows = [list(prompt) for _ in range(n)], [logits] * n
    for _ in range(task.max_new_tokens):
        for seq, row, generator in zip(seqs, rows, generators):
            seq.append(sample(row, params, generator))
        rows = runner.step(seqs, tables, [len(s) - 1 for s in seqs])
    return [seq[len(prompt):] for seq in seqs]


def test_samples_pick_their_own_direction_and_keep_it(tiny):
    model, task = tiny
    prompts = task.prompts(6, seed=15, min_len=15, max_len=22)  # 1-8 tokens into a block of 16
    outputs = [out for i, prompt in enumerate(prompts)
               for out in forked_samples(model, task, prompt, 4, copy_on_write=True, seed=i)]
    samples = [prompt for prompt in prompts for _ in range(4)]
    assert all(task.correct(samples, outputs)), task.report(samples, outputs)
    assert {task.decode(out)[0] for out in outputs} == {">", "<"}  # both directions drawn


def test_a_skipped_copy_on_write_breaks_the_tiny_models_samples(tiny):
    """Samples that share a block and skip the copy overwrite each other's direction."""
    model, task = tiny
    prompts = task.prompts(6, seed=15, min_len=15, max_len=22)
    samples = [prompt for prompt in prompts for _ in range(4)]
    outputs = [out for i, prompt in enumerate(prompts)
               for out in forked_samples(model, task, prompt, 4, copy_on_write=False, seed=i)]
    assert sum(task.correct(samples, outputs)) <= 0.8 * len(samples)


@pytest.mark.parametrize("settings", [dict(block_size=4), dict(block_size=16),
                                      dict(block_size=8, enable_prefix_caching=True,
                                           max_num_batched_tokens=16)])
def test_tiny_model_through_the_engine(tiny, settings):
    model, task = tiny
    engine = pl.LLMEngine(model, num_blocks=1024 // settings["block_size"],
                          eos_token_id=task.eos_token_id, **settings)
    assert task.evaluate(engine, task.prompts(30, seed=14, min_len=12)) >= 0.95


def test_tiny_models_samples_through_the_engine_are_right_and_differ(tiny):
    model, task = tiny
    engine = pl.LLMEngine(model, num_blocks=128, block_size=8, eos_token_id=task.eos_token_id)
    prompts = task.prompts(4, seed=16, min_len=12)
    samples = engine.generate(prompts, max_new_tokens=task.max_new_tokens, temperature=1.0,
                              seed=0, n=4, progress=False)
    flat = [out for group in samples for out in group]
    assert all(task.correct([p for p in prompts for _ in range(4)], flat))
    assert {task.decode(out)[0] for out in flat} == {">", "<"}  # both directions drawn


def test_training_is_deterministic():
    script = training_script()
    recipe = {**script.RECIPE, "steps": 4, "batch_size": 8, "eval_prompts": 2}
    (first, _), (again, _) = script.train(recipe, log_every=0), script.train(recipe, log_every=0)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
