"""The unified kernel (any mix of decodes, prompt chunks and whole prompts) equals the torch
reference, equals the decode kernel on decodes, and never sees a bad input.

Runs compiled on a CUDA GPU when there is one, else in the Triton interpreter, where each
(program, loop step) costs a few ms: batches stay tiny. Tolerances as in tests/test_kernels.py.
"""
import random

import pytest
import torch

pytest.importorskip("triton")

import pagedlab as pl  # noqa: E402
from pagedlab import backend  # noqa: E402
from pagedlab.attention import random_paged_batch  # noqa: E402
from pagedlab.kernels.unified_attention import (  # noqa: E402
    UnifiedLaunch, unified_attention, unified_launch_params)
from pagedlab.paged_batch import PagedBatch, write_and_attend  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=3e-3, rtol=3e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def mixed_lengths(rng: random.Random, max_context: int = 60):
    """Context lengths and query lengths of a step: a decode, a chunk after a prefix, a whole
    prompt, and one more of a random kind."""
    contexts = [rng.randint(2, max_context) for _ in range(4)]
    queries = [1, rng.randint(2, contexts[1]), contexts[2],
               rng.choice([1, contexts[3], rng.randint(1, contexts[3])])]
    return contexts, queries


def assert_matches_reference(batch: dict, **kwargs) -> None:
    out = pl.paged_attention(**batch, backend="triton", **kwargs)
    expected = pl.paged_prefill_reference(**batch, scale=kwargs.get("scale"))
    assert out.shape == batch["q"].shape and out.dtype == batch["q"].dtype
    torch.testing.assert_close(out.float(), expected.float(), **TOLERANCE[out.dtype])


def skip_without_bf16(dtype):
    if dtype == torch.bfloat16 and DEVICE == "cuda" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("this GPU has no bfloat16")


# -- the kernel against the reference ---------------------------------------------------------

# Every pair of (block size, GQA ratio, head dim, dtype) values meets in exactly one case: two
# orthogonal 3x3 Latin squares, 9 batches instead of 81.
BLOCK_SIZES, RATIOS, HEAD_DIMS = [8, 16, 32], [1, 4, 8], [64, 80, 128]
CASES = [(BLOCK_SIZES[i], RATIOS[j], HEAD_DIMS[(i + j) % 3], DTYPES[(i + 2 * j) % 3])
         for i in range(3) for j in range(3)]


@pytest.mark.parametrize("block_size, queries_per_kv, head_dim, dtype", CASES)
def test_mixed_batch_matches_reference(block_size, queries_per_kv, head_dim, dtype):
    skip_without_bf16(dtype)
    rng = random.Random(f"{block_size}-{queries_per_kv}-{head_dim}")
    contexts, queries = mixed_lengths(rng)
    num_kv_heads = 2 if queries_per_kv < 8 else 1
    batch = random_paged_batch(contexts, query_lens=queries, block_size=block_size,
                               num_heads=num_kv_heads * queries_per_kv,
                               num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype,
                               device=DEVICE, seed=rng.randint(0, 10**6))
    assert_matches_reference(batch)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_k_matches_reference_in_dtype(dtype):
    skip_without_bf16(dtype)
    contexts, queries = mixed_lengths(random.Random(1), max_context=90)
    batch = random_paged_batch(contexts, query_lens=queries, block_size=16, num_heads=4,
                               num_kv_heads=2, head_dim=64, dtype=dtype, device=DEVICE, seed=1)
    assert_matches_reference(batch, num_splits=3)


@pytest.mark.parametrize("num_splits", [1, 2, 8])
def test_split_count_does_not_change_the_result(num_splits):
    # Unequal contexts: some splits of the short ones, and of early query rows, have no keys.
    batch = random_paged_batch([1, 70, 150], query_lens=[1, 1, 40], block_size=16, num_heads=4,
                               num_kv_heads=2, head_dim=32, device=DEVICE)
    assert_matches_reference(batch, num_splits=num_splits)


def test_whole_prompts_equal_contiguous_causal_attention():
    batch = random_paged_batch([5, 33], query_lens=[5, 33], block_size=8, num_heads=4,
                               num_kv_heads=2, head_dim=32, device=DEVICE)
    out = pl.paged_attention(**batch, backend="triton")
    for seq, rows in enumerate([slice(0, 5), slice(5, 38)]):
        table, length = batch["block_tables"][seq], int(batch["context_lens"][seq])
        k = pl.attention.gather_kv(batch["k_cache"], table, length)
        v = pl.attention.gather_kv(batch["v_cache"], table, length)
        torch.testing.assert_close(out[rows], pl.attention_reference(batch["q"][rows], k, v),
                                   **TOLERANCE[torch.float32])


@pytest.mark.parametrize("queries_per_kv", [1, 4, 8])
def test_decodes_equal_the_decode_kernel(queries_per_kv):
    batch = random_paged_batch([1, 16, 17, 50], block_size=16, num_heads=2 * queries_per_kv,
                               num_kv_heads=2, head_dim=64, device=DEVICE)
    decode = pl.paged_attention(**batch, backend="triton")
    unified = pl.paged_attention(**batch, backend="triton", query_lens=[1, 1, 1, 1])
    torch.testing.assert_close(unified, decode, atol=1e-6, rtol=1e-6)


def test_query_lens_may_be_a_list_or_a_tensor():
    batch = random_paged_batch([6, 20], query_lens=[2, 20], block_size=8, head_dim=32,
                               device=DEVICE)
    out = pl.paged_attention(**batch, backend="triton")
    batch["query_lens"] = [2, 20]
    torch.testing.assert_close(pl.paged_attention(**batch, backend="triton"), out)


def test_uses_the_given_scale_and_accepts_a_strided_query():
    batch = random_paged_batch([9, 30], query_lens=[3, 30], block_size=16, num_heads=4,
                               head_dim=32, device=DEVICE)
    qkv = torch.randn(33, 3, 4, 32, device=DEVICE)  # as a fused QKV projection leaves it
    batch["q"] = qkv[:, 0]  # (num_tokens, num_heads, head_dim), not contiguous
    assert_matches_reference(batch, scale=0.3)


def test_cache_contents_past_the_context_are_never_read():
    batch = random_paged_batch([3, 17], query_lens=[3, 5], block_size=16, head_dim=32,
                               device=DEVICE)
    expected = pl.paged_prefill_reference(**batch)
    for seq, context_len in enumerate(batch["context_lens"].tolist()):
        last_block = batch["block_tables"][seq, (context_len - 1) // 16]
        for cache in (batch["k_cache"], batch["v_cache"]):
            cache[last_block, context_len % 16 or 16:] = float("nan")
    batch["block_tables"][0, 1:] = 10**6  # table padding past the context: garbage
    out = pl.paged_attention(**batch, backend="triton")
    torch.testing.assert_close(out, expected, **TOLERANCE[torch.float32])


LAUNCHES = {
    # name: (launch, block_size, queries_per_kv)
    "one query per tile, keys inside one block": (UnifiedLaunch(1, 16, 16, 4, 1, 1), 32, 1),
    "tile of eight blocks": (UnifiedLaunch(4, 16, 64, 4, 1, 1), 8, 4),
    "GQA ratio 3 leaves a padded row": (UnifiedLaunch(5, 16, 32, 4, 1, 1), 16, 3),
    "tall query tile": (UnifiedLaunch(64, 64, 16, 4, 1, 1), 16, 1),
}


@pytest.mark.parametrize("case", LAUNCHES)
def test_launch_shape_does_not_change_the_result(case):
    launch, block_size, queries_per_kv = LAUNCHES[case]
    batch = random_paged_batch([7, 40, 23], query_lens=[1, 19, 23], block_size=block_size,
                               num_heads=2 * queries_per_kv, num_kv_heads=2, head_dim=32,
                               device=DEVICE)
    checked = pl.attention._validate(**batch)
    out = unified_attention(batch["q"], batch["k_cache"], batch["v_cache"], checked.block_tables,
                            checked.context_lens, checked.query_start_loc,
                            checked.max_query_len, checked.max_context_len, 32 ** -0.5,
                            launch=launch)
    torch.testing.assert_close(out, pl.paged_prefill_reference(**batch),
                               **TOLERANCE[torch.float32])


def test_float16_products_path_matches_reference():
    # The path a GPU takes for fp16 (fp16 tl.dot, fp32 accumulate); the interpreter normally
    # does fp32 products, so force it here to check that code on a CPU as well.
    batch = random_paged_batch([20, 35], query_lens=[1, 20], block_size=16, num_heads=8,
                               num_kv_heads=2, head_dim=80, dtype=torch.float16, device=DEVICE)
    checked = pl.attention._validate(**batch)
    out = unified_attention(batch["q"], batch["k_cache"], batch["v_cache"], checked.block_tables,
                            checked.context_lens, checked.query_start_loc,
                            checked.max_query_len, checked.max_context_len, 80 ** -0.5,
                            num_splits=2, dot_fp32=False)
    expected = pl.paged_prefill_reference(**batch)
    torch.testing.assert_close(out.float(), expected.float(), atol=1e-2, rtol=1e-2)


def test_launch_params_split_only_decode_batches_that_leave_the_gpu_idle():
    h100_sms = 132
    common = dict(num_kv_heads=8, queries_per_kv=4, head_dim=128, dtype=torch.float16)
    decode = dict(num_seqs=2, max_query_len=1, max_context_len=16384, num_sms=h100_sms)
    assert unified_launch_params(**common, **decode).num_splits > 1
    assert unified_launch_params(**common, **{**decode, "num_seqs": 64}).num_splits == 1
    assert unified_launch_params(**common, **{**decode, "max_query_len": 512}).num_splits == 1
    assert unified_launch_params(**common, **{**decode, "num_sms": None}).num_splits == 1
    for params in (unified_launch_params(**common, **decode),
                   unified_launch_params(**common, **{**decode, "max_query_len": 512})):
        assert params.rows >= 16 and params.rows >= params.query_tile * 4 and params.kv_tile >= 16


@pytest.mark.parametrize("capability", [(7, 5), (8, 0), (9, 0)])
def test_launch_params_are_shapes_a_gpu_compiles(capability):
    # Powers of two, every tl.dot dim >= 16, a tile that holds its queries' rows; smaller tiles
    # where registers are scarcer (fp32, head dims over 128, sm_75).
    for dtype in DTYPES:
        for head_dim in (64, 80, 128, 256):
            for queries_per_kv, max_query_len in ((1, 1), (8, 1), (1, 512), (8, 512), (32, 4)):
                params = unified_launch_params(
                    num_seqs=4, num_kv_heads=2, queries_per_kv=queries_per_kv,
                    head_dim=head_dim, dtype=dtype, max_query_len=max_query_len,
                    max_context_len=4096, num_sms=108, capability=capability)
                for size in (params.rows, params.kv_tile):
                    assert size >= 16 and size & (size - 1) == 0
                assert params.query_tile >= 1
                assert params.query_tile * queries_per_kv <= params.rows
                assert params.num_warps in (2, 4, 8) and params.num_splits >= 1
    small = unified_launch_params(num_seqs=4, num_kv_heads=2, queries_per_kv=1, head_dim=128,
                                  dtype=torch.float16, max_query_len=512, max_context_len=4096,
                                  num_sms=40, capability=(7, 5))
    large = unified_launch_params(num_seqs=4, num_kv_heads=2, queries_per_kv=1, head_dim=128,
                                  dtype=torch.float16, max_query_len=512, max_context_len=4096,
                                  num_sms=132, capability=(9, 0))
    assert small.rows * small.kv_tile < large.rows * large.kv_tile


# -- the engine's layer: write_and_attend -----------------------------------------------------


def test_write_and_attend_on_triton_equals_torch_for_a_mixed_step():
    # Three sequences in blocks of 8: a decode at position 12, a chunk of 6 after 9 cached
    # tokens, and a whole prompt of 10.
    generator = torch.Generator().manual_seed(0)
    contexts, queries = [13, 15, 10], [1, 6, 10]
    tables = [[4, 1], [0, 5], [2, 3]]
    cache = pl.KVCache(num_blocks=6, block_size=8, num_kv_heads=2, head_dim=32, device=DEVICE,
                       dtype=torch.float32)  # fp32 on a GPU too (its default is fp16)
    cache.k.copy_(torch.randn(cache.k.shape, generator=generator))  # the cached prefixes
    cache.v.copy_(torch.randn(cache.v.shape, generator=generator))
    positions = [p for n, c in zip(queries, contexts) for p in range(c - n, c)]
    seq_of = [s for s, n in enumerate(queries) for _ in range(n)]
    slots = [tables[s][p // 8] * 8 + p % 8 for s, p in zip(seq_of, positions)]
    num_tokens = sum(queries)
    q = torch.randn(num_tokens, 4, 32, generator=generator).to(DEVICE)
    k = torch.randn(num_tokens, 2, 32, generator=generator).to(DEVICE)
    v = torch.randn(num_tokens, 2, 32, generator=generator).to(DEVICE)
    outputs = {}
    for name in ("torch", "triton"):
        batch = PagedBatch(
            input_ids=torch.zeros(num_tokens, dtype=torch.long, device=DEVICE),
            positions=torch.tensor(positions, device=DEVICE),
            slot_mapping=torch.tensor(slots, device=DEVICE),
            block_tables=torch.tensor(tables, dtype=torch.int32, device=DEVICE),
            context_lens=torch.tensor(contexts, dtype=torch.int32, device=DEVICE),
            query_lens=queries, block_size=8, backend=name)
        outputs[name] = write_and_attend(q, k, v, batch, cache, layer=0)
    torch.testing.assert_close(outputs["triton"], outputs["torch"], atol=1e-5, rtol=1e-5)


# -- validation: every bad input is refused before launch, and nothing changes ----------------


def _set(name, value):
    return lambda batch: batch.__setitem__(name, value(batch) if callable(value) else value)


BAD_INPUTS = {
    # name of the case: (how to break a good batch, words the error must contain)
    "query_lens too short": (_set("query_lens", [2]), "one entry per sequence"),
    "query_lens 2-D": (_set("query_lens", lambda b: b["query_lens"][None]), "query_lens"),
    "query_len zero": (_set("query_lens", [0, 4]), "query_lens[0] must be >= 1"),
    "query_len zero in a tensor": (_set("query_lens", lambda b: b["query_lens"] * 0), ">= 1"),
    "query_len past the context": (_set("query_lens", [2, 30]), "more than context_lens[1]"),
    "float query_lens": (_set("query_lens", lambda b: b["query_lens"].float()),
                         "query_lens must hold integers"),
    "bool in query_lens": (_set("query_lens", [True, 4]), "query_lens[0] must be an int"),
    "query_lens a string": (_set("query_lens", "24"), "list or tensor of ints"),
    "sum differs from q": (_set("query_lens", [1, 4]), "sum(query_lens)"),
    "q 2-D": (_set("q", lambda b: b["q"][0]), "sum(query_lens), num_heads, head_dim"),
    "q dtype differs from cache": (_set("q", lambda b: b["q"].half()), "share one dtype"),
    "block id out of range": (_set("block_tables", lambda b: b["block_tables"] + 1000),
                              "block_tables["),
    "context_len past the table": (_set("context_lens", lambda b: b["context_lens"] + 1000),
                                   "context_lens"),
    "scale zero": (_set("scale", 0.0), "scale"),
    "num_splits a bool": (_set("num_splits", True), "num_splits"),
    "unknown backend": (_set("backend", "cuda"), "backend"),
}


@pytest.fixture
def launches(monkeypatch):
    """Every launch of the unified kernel from here on (the kernel still runs)."""
    module = backend.load_kernels().unified_attention
    calls = []
    real = module.unified_attention
    monkeypatch.setattr(module, "unified_attention",
                        lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs))
    return calls


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_before_launch_and_changes_nothing(case, launches):
    batch = random_paged_batch([5, 20], query_lens=[2, 20], block_size=16, num_heads=4,
                               num_kv_heads=2, head_dim=32, device=DEVICE)
    batch["backend"] = "triton"
    breaks, words = BAD_INPUTS[case]
    breaks(batch)
    before = {name: value.clone() for name, value in batch.items()
              if isinstance(value, torch.Tensor)}
    with pytest.raises(pl.errors.InvalidConfig, match=words.replace("[", r"\[").replace(
            "(", r"\(").replace(")", r"\)")):
        pl.paged_attention(**batch)
    assert launches == []
    for name, value in before.items():
        assert torch.equal(batch[name], value), f"{name} changed"


def test_a_good_batch_launches_once(launches):
    batch = random_paged_batch([5, 20], query_lens=[2, 20], block_size=16, head_dim=32,
                               device=DEVICE)
    pl.paged_attention(**batch, backend="triton")
    assert len(launches) == 1


def test_random_paged_batch_packs_query_lens_tokens():
    batch = random_paged_batch([4, 9], query_lens=[1, 9], head_dim=16)
    assert batch["q"].shape == (10, 4, 16)
    assert batch["query_lens"].tolist() == [1, 9]
    assert "query_lens" not in random_paged_batch([4, 9], head_dim=16)


def test_query_lens_on_another_device_is_refused(launches):
    batch = random_paged_batch([5, 20], query_lens=[2, 20], block_size=16, head_dim=32,
                               device=DEVICE)
    batch["query_lens"] = torch.tensor([2, 20], device="meta")
    with pytest.raises(pl.errors.InvalidConfig, match="query_lens is on meta"):
        pl.paged_attention(**batch, backend="triton")
    assert launches == []
