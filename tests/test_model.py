"""pagedlab.GPT is GPT-2: same logits and same greedy tokens as Hugging Face on the same weights."""
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pagedlab as pl  # noqa: E402
from pagedlab.paged_batch import PagedBatch, paged_attention_torch  # noqa: E402

VOCAB = 512

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def tiny_hf_model(seed: int = 0, **overrides):
    """A randomly initialised 2-layer GPT-2; a wide init keeps greedy choices far from ties."""
    torch.manual_seed(seed)
    settings = dict(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                    initializer_range=0.2, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    settings.update(overrides)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**settings)).eval()


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_model()


@pytest.fixture(scope="module")
def model(hf_model):
    return pl.GPT.from_hf(hf_model)


def prompts_of(lengths, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def hf_greedy(hf_model, prompt, max_new_tokens):
    ids = torch.tensor([prompt])
    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=max_new_tokens, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_config_maps_from_hf(model):
    assert model.config == pl.GPTConfig(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2,
                                        n_head=4)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied embeddings


def test_logits_equal_hugging_face(hf_model, model):
    idx = torch.randint(0, VOCAB, (3, 40))
    with torch.no_grad():
        expected = hf_model(idx).logits  # (3, 40, vocab)
        got = model(idx)  # (3, 40, vocab)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_exact_gelu_variant_also_matches():
    hf_model = tiny_hf_model(seed=3, activation_function="gelu")
    model = pl.GPT.from_hf(hf_model)
    idx = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf_model(idx).logits, rtol=1e-5, atol=1e-4)


def test_naive_generate_equals_hf_generate(hf_model, model):
    prompts = prompts_of([1, 3, 8, 21])
    expected = [hf_greedy(hf_model, prompt, 6) for prompt in prompts]
    assert pl.naive_generate(model, prompts, max_new_tokens=6) == expected


def test_naive_generate_sampling_is_reproducible(model):
    prompts = prompts_of([4, 7])
    first = pl.naive_generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=7)
    again = pl.naive_generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=7)
    other = pl.naive_generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=8)
    assert first == again
    assert first != other


def test_top_k_one_is_greedy(model):
    prompts = prompts_of([5])
    assert pl.naive_generate(model, prompts, 5, temperature=0.7, top_k=1, seed=0) == \
        pl.naive_generate(model, prompts, 5)


def test_from_pretrained_reads_a_local_folder(hf_model, model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    loaded = pl.GPT.from_pretrained(str(tmp_path))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("bad, message", [
    ([[]], "empty"),
    ([[1, 2, VOCAB]], "outside"),
    ([list(range(120))], "positions"),
    (["hello"], "token ids"),
])
def test_bad_prompts_raise_clear_errors(model, bad, message):
    with pytest.raises(ValueError, match=message):
        pl.naive_generate(model, bad, max_new_tokens=10)


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=0), dict(temperature=-1.0),
                                    dict(temperature=float("nan")), dict(top_k=0)])
def test_bad_sampling_settings_raise(model, kwargs):
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError):
        pl.naive_generate(model, [[1, 2]], **kwargs)


def paged_batch(tokens, positions, slots, tables, context_lens, query_lens):
    return PagedBatch(input_ids=torch.tensor(tokens), positions=torch.tensor(positions),
                      slot_mapping=torch.tensor(slots),
                      block_tables=torch.tensor(tables, dtype=torch.int32),
                      context_lens=torch.tensor(context_lens, dtype=torch.int32),
                      query_lens=query_lens, block_size=4, backend="torch")


def test_paged_forward_equals_contiguous(model):
    """Two prompts prefilled into scattered blocks, then one decode step, match model(idx)."""
    cache = pl.KVCache(num_blocks=8, block_size=4, num_kv_heads=4, head_dim=16, num_layers=2,
                       dtype=torch.float32, device="cpu")
    first, second = prompts_of([6, 3])
    tables = [[5, 2], [7, -1]]  # block ids out of order on purpose
    slots = [5 * 4 + 0, 21, 22, 23, 2 * 4 + 0, 9] + [7 * 4 + 0, 29, 30]
    prefill = paged_batch(first + second, [*range(6), *range(3)], slots, tables, [6, 3], [6, 3])
    with torch.no_grad():
        logits = model.forward_paged(prefill, cache)  # (2, vocab)
        torch.testing.assert_close(logits[0], model(torch.tensor([first]))[0, -1])
        torch.testing.assert_close(logits[1], model(torch.tensor([second]))[0, -1])
        # position 6 lives in logical block 1 = block 2, row 2; position 3 in block 7, row 3
        decode = paged_batch([11, 12], [6, 3], [2 * 4 + 2, 7 * 4 + 3], tables, [7, 4], [1, 1])
        logits = model.forward_paged(decode, cache)  # (2, vocab)
        torch.testing.assert_close(logits[0], model(torch.tensor([first + [11]]))[0, -1])
        torch.testing.assert_close(logits[1], model(torch.tensor([second + [12]]))[0, -1])


@pytest.mark.parametrize("num_seqs", [3, 19])  # one group of sequences, and several
def test_batched_torch_attention_equals_the_paged_reference(num_seqs):
    """paged_attention_torch (buckets of sequences at once) = paged_prefill_reference (one at a
    time), with cached prefixes, partial last blocks, padded tables and grouped-query heads."""
    generator = torch.Generator().manual_seed(num_seqs)
    k_cache, v_cache = torch.randn(2, 64, 4, 2, 8, generator=generator).unbind(0)  # (64, 4, 2, 8)
    context_lens = torch.randint(1, 13, (num_seqs,), generator=generator)  # (S,)
    query_lens = [int(torch.randint(1, n + 1, (1,), generator=generator))
                  for n in context_lens.tolist()]
    tables = torch.randperm(64, generator=generator)[:num_seqs * 3].view(num_seqs, 3).int()
    tables[context_lens <= 8, 2] = -1  # padding where a table needs fewer blocks
    q = torch.randn(sum(query_lens), 6, 8, generator=generator)  # (N, 6 heads over 2 KV heads, 8)
    batch = PagedBatch(input_ids=torch.zeros(len(q), dtype=torch.long), positions=None,
                       slot_mapping=None, block_tables=tables, context_lens=context_lens.int(),
                       query_lens=query_lens, block_size=4)
    expected = pl.paged_prefill_reference(q, k_cache, v_cache, tables, context_lens, query_lens)
    torch.testing.assert_close(paged_attention_torch(q, k_cache, v_cache, batch), expected)


def test_import_pagedlab_stays_light():
    code = "import sys, pagedlab; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]


def test_from_pretrained_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pagedlab\[model\]"):
        pl.GPT.from_pretrained("gpt2")
