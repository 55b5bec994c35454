"""The Triton kernels equal the torch references, and bad inputs never reach them.

Runs compiled on a CUDA GPU when there is one (``make gpu-check``), else in the Triton
interpreter. Shapes stay tiny: in the interpreter each (program, loop step) costs a few ms.

Tolerances, kernel vs the fp32 reference rounded to the same dtype: fp32 1e-5; fp16 3e-3 (the GPU
multiplies fp16 softmax weights by fp16 values); bf16 2e-2 (8 bits of mantissa).
"""
import importlib.util
import random

import pytest
import torch

pytest.importorskip("triton")

import pagedlab as pl  # noqa: E402
from pagedlab.attention import random_paged_batch  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=3e-3, rtol=3e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}


def edge_lengths(block_size: int, seed: int = 0) -> list[int]:
    """Context lengths 1, one full block, one block and a token, and one random length."""
    return [1, block_size, block_size + 1, random.Random(seed).randint(2, 3 * block_size)]


def assert_kernel_matches_reference(batch: dict, **kwargs) -> None:
    out = pl.paged_attention(**batch, backend="triton", **kwargs)
    expected = pl.paged_attention_reference(**batch, scale=kwargs.get("scale"))
    assert out.shape == batch["q"].shape and out.dtype == batch["q"].dtype
    torch.testing.assert_close(out.float(), expected.float(), **TOLERANCE[out.dtype])


# -- the decode kernel against the reference ------------------------------------------------------


# 1 and 2 query heads per KV head multiply and sum (no padded dot) where there are no tensor
# cores, which includes the interpreter; 4 and 8 use tl.dot (see kernels/launch_config.py).
@pytest.mark.parametrize("queries_per_kv", [1, 2, 4, 8])
def test_decode_kernel_matches_reference_for_gqa_ratio(queries_per_kv):
    batch = random_paged_batch(edge_lengths(16), block_size=16, num_kv_heads=2,
                               num_heads=2 * queries_per_kv, head_dim=32, device=DEVICE)
    assert_kernel_matches_reference(batch)


# Tiles of 64 tokens: blocks up to 32 put several blocks in a tile, 64 and 128 hold whole tiles
# (one block id per loop step).
@pytest.mark.parametrize("block_size", [8, 16, 32, 64, 128])
def test_decode_kernel_matches_reference_for_block_size(block_size):
    batch = random_paged_batch(edge_lengths(block_size, seed=block_size), block_size=block_size,
                               num_heads=2, num_kv_heads=1, head_dim=32, device=DEVICE)
    assert_kernel_matches_reference(batch)


@pytest.mark.parametrize("head_dim", [32, 64, 80, 96, 128, 256])
def test_decode_kernel_matches_reference_for_head_dim(head_dim):
    batch = random_paged_batch(edge_lengths(16), block_size=16, num_heads=4, num_kv_heads=1,
                               head_dim=head_dim, device=DEVICE)
    assert_kernel_matches_reference(batch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_decode_kernel_matches_reference_in_dtype(dtype):
    # Not torch.cuda.is_bf16_supported(): it says True on a T4 (emulation counts).
    if dtype == torch.bfloat16 and DEVICE == "cuda" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("this GPU has no bfloat16 (needs sm_80)")
    batch = random_paged_batch(edge_lengths(16), block_size=16, num_heads=8, num_kv_heads=2,
                               head_dim=64, dtype=dtype, device=DEVICE)
    assert_kernel_matches_reference(batch)


@pytest.mark.parametrize("context_len", [1, 16, 17, 100])
def test_decode_kernel_handles_context_length(context_len):
    batch = random_paged_batch([context_len], block_size=16, num_heads=4, num_kv_heads=1,
                               head_dim=32, device=DEVICE)
    assert_kernel_matches_reference(batch)


def test_block_tables_are_permutations_that_use_the_first_and_last_block():
    batch = random_paged_batch(edge_lengths(16), block_size=16, device=DEVICE)
    used = batch["block_tables"][batch["block_tables"] >= 0].tolist()
    num_blocks = batch["k_cache"].shape[0]
    assert sorted(used) == list(range(num_blocks)) and used != sorted(used)
    assert_kernel_matches_reference(batch)


def test_decode_kernel_uses_the_given_scale():
    batch = random_paged_batch([5, 20], block_size=16, head_dim=32, device=DEVICE)
    assert_kernel_matches_reference(batch, scale=0.3)


def test_decode_kernel_accepts_a_strided_query():
    batch = random_paged_batch([5, 20], block_size=16, num_heads=4, head_dim=32, device=DEVICE)
    qkv = torch.randn(2, 3, 4, 32, device=DEVICE)  # as a fused QKV projection leaves it
    batch["q"] = qkv[:, 0]  # (num_seqs, num_heads, head_dim), not contiguous
    assert_kernel_matches_reference(batch)


def test_cache_contents_past_the_context_are_never_read():
    batch = random_paged_batch([3, 17], block_size=16, head_dim=32, device=DEVICE)
    expected = pl.paged_attention_reference(**batch)
    for seq, context_len in enumerate(batch["context_lens"].tolist()):
        last_block = batch["block_tables"][seq, (context_len - 1) // 16]
        for cache in (batch["k_cache"], batch["v_cache"]):
            cache[last_block, context_len % 16 or 16:] = float("nan")
    out = pl.paged_attention(**batch, backend="triton")
    torch.testing.assert_close(out, expected, **TOLERANCE[torch.float32])


def test_block_table_padding_past_the_context_is_ignored():
    batch = random_paged_batch([3, 40], block_size=16, head_dim=32, device=DEVICE)
    batch["block_tables"][0, 1:] = 10**6  # garbage where no token lives
    assert_kernel_matches_reference(batch)


def test_float16_products_path_matches_reference():
    # The path a GPU takes for fp16 (fp16 tl.dot, fp32 accumulate); the interpreter normally
    # does fp32 products, so force it here to check that code on a CPU as well.
    from pagedlab.kernels.paged_attention import paged_attention_decode

    batch = random_paged_batch(edge_lengths(16), block_size=16, num_heads=8, num_kv_heads=2,
                               head_dim=80, dtype=torch.float16, device=DEVICE)
    out = paged_attention_decode(**batch, scale=80 ** -0.5, max_context_len=int(
        batch["context_lens"].max()), num_splits=2, dot_fp32=False)
    expected = pl.paged_attention_reference(**batch)
    torch.testing.assert_close(out.float(), expected.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("tile", [16, 128])
def test_tile_size_does_not_change_the_result(tile):
    from pagedlab.kernels.paged_attention import paged_attention_decode

    batch = random_paged_batch(edge_lengths(8), block_size=8, num_heads=4, head_dim=32,
                               device=DEVICE)
    out = paged_attention_decode(**batch, scale=32 ** -0.5, max_context_len=int(
        batch["context_lens"].max()), tile=tile)
    torch.testing.assert_close(out, pl.paged_attention_reference(**batch),
                               **TOLERANCE[torch.float32])


# -- split-K (flash-decoding) ---------------------------------------------------------------------


@pytest.mark.parametrize("num_splits", [2, 3, 8])
def test_split_k_matches_reference(num_splits):
    # Sequences of unequal length: some splits of the short ones are empty.
    batch = random_paged_batch([1, 70, 300], block_size=16, num_heads=4, num_kv_heads=2,
                               head_dim=32, device=DEVICE)
    assert_kernel_matches_reference(batch, num_splits=num_splits)


def test_split_k_matches_reference_in_float16():
    batch = random_paged_batch([150, 200], block_size=16, num_heads=4, num_kv_heads=1,
                               head_dim=80, dtype=torch.float16, device=DEVICE)
    assert_kernel_matches_reference(batch, num_splits=3)


def test_split_count_grows_for_few_long_sequences_only():
    from pagedlab.kernels.paged_attention import choose_num_splits

    h100_sms = 132
    assert choose_num_splits(1, 8, 16384, h100_sms) > 8
    assert choose_num_splits(8, 8, 4096, h100_sms) > 1
    assert choose_num_splits(64, 8, 4096, h100_sms) == 1  # 512 programs already fill the GPU
    assert choose_num_splits(1, 8, 300, h100_sms) == 1  # too short to be worth a reduce
    assert choose_num_splits(1, 8, 16384, None) == 1  # the interpreter: no SMs to fill


# -- the store kernel -----------------------------------------------------------------------------


def store_inputs(num_tokens=6, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    cache = pl.KVCache(num_blocks=4, block_size=8, num_kv_heads=2, head_dim=24, dtype=dtype,
                       device=DEVICE)
    k = torch.randn(num_tokens, 2, 24, generator=generator).to(DEVICE, dtype)
    v = torch.randn(num_tokens, 2, 24, generator=generator).to(DEVICE, dtype)
    slots = torch.randperm(cache.num_slots, generator=generator)[:num_tokens].to(DEVICE)
    return cache, k, v, slots


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_store_kernel_matches_index_copy(dtype):
    cache, k, v, slots = store_inputs(dtype=dtype)
    cache.write(0, k, v, slots, backend="triton")
    expected = torch.zeros_like(cache.k[0]).view(-1, 2, 24).index_copy(0, slots, k)
    assert torch.equal(cache.k[0].view(-1, 2, 24), expected)
    expected = torch.zeros_like(cache.v[0]).view(-1, 2, 24).index_copy(0, slots, v)
    assert torch.equal(cache.v[0].view(-1, 2, 24), expected)


def test_store_kernel_skips_slot_minus_one():
    cache, k, v, slots = store_inputs()
    slots[1] = -1
    cache.write(0, k, v, slots, backend="triton")
    flat = cache.k[0].view(-1, 2, 24)
    keep = slots >= 0
    assert torch.equal(flat[slots[keep]], k[keep])
    assert int((flat != 0).any(dim=(1, 2)).sum()) == int(keep.sum())  # nothing else written


def test_store_kernel_writes_many_tokens_in_one_launch():
    cache, k, v, slots = store_inputs(num_tokens=32)
    cache.write(0, k, v, slots, backend="triton")
    assert torch.equal(cache.v[0].view(-1, 2, 24)[slots], v)


def test_store_then_decode_reads_what_was_written():
    cache = pl.KVCache(num_blocks=3, block_size=8, num_kv_heads=1, head_dim=32,
                       dtype=torch.float32, device=DEVICE)
    block_table = torch.tensor([[2, 0]], device=DEVICE)
    k = torch.randn(11, 1, 32, device=DEVICE)  # (tokens, kv_heads, head_dim)
    v = torch.randn(11, 1, 32, device=DEVICE)
    slots = torch.tensor([2 * 8 + i for i in range(8)] + [0, 1, 2], device=DEVICE)
    cache.write(0, k, v, slots, backend="triton")
    q = torch.randn(1, 2, 32, device=DEVICE)  # (seqs, heads, head_dim)
    out = pl.paged_attention(q, *cache[0], block_table, torch.tensor([11], device=DEVICE),
                             backend="triton")
    expected = pl.attention_reference(q, k, v)  # (1, heads, head_dim): one query, 11 keys
    torch.testing.assert_close(out, expected, **TOLERANCE[torch.float32])


# -- validation: a bad input raises ValueError naming it, before any launch -----------------------


def _set(name, value):
    return lambda batch: batch.__setitem__(name, value(batch) if callable(value) else value)


BAD_INPUTS = {
    # name of the case: (how to break a good batch, word the error must contain)
    "q not a tensor": (_set("q", [[1.0]]), "q"),
    "q 2-D": (_set("q", lambda b: b["q"][0]), "q must be 3-D"),
    "k_cache 3-D": (_set("k_cache", lambda b: b["k_cache"][0]), "k_cache must be 4-D"),
    "integer q": (_set("q", lambda b: b["q"].long()), "q must be float"),
    "mixed dtypes": (_set("v_cache", lambda b: b["v_cache"].double()), "v_cache"),
    "q dtype differs from cache": (_set("q", lambda b: b["q"].half()), "share one dtype"),
    "v_cache shape differs": (_set("v_cache", lambda b: b["v_cache"][:-1]), "v_cache shape"),
    "head_dim differs": (_set("q", lambda b: b["q"][..., :16]), "head_dim"),
    "heads not a multiple": (_set("q", lambda b: b["q"][:, :3]), "multiple"),
    "strided head_dim": (_set("k_cache", lambda b: b["k_cache"].transpose(-1, -2).contiguous()
                              .transpose(-1, -2)), "k_cache must have unit stride"),
    "block_size not a power of two": (
        lambda b: b.update(k_cache=b["k_cache"][:, :12], v_cache=b["v_cache"][:, :12]),
        "power-of-two"),
    "float block_tables": (_set("block_tables", lambda b: b["block_tables"].float()),
                           "block_tables must hold integers"),
    "block_tables rows": (_set("block_tables", lambda b: b["block_tables"][:1]), "block_tables"),
    "block id too large": (_set("block_tables", lambda b: b["block_tables"] + 1000),
                           "block_tables["),
    "negative block id": (_set("block_tables", lambda b: b["block_tables"].clamp(max=-1)),
                          "block_tables["),
    "context_lens shape": (_set("context_lens", lambda b: b["context_lens"][:1]), "context_lens"),
    "context_len zero": (_set("context_lens", lambda b: b["context_lens"] * 0), "context_lens"),
    "context_len past the table": (_set("context_lens", lambda b: b["context_lens"] + 1000),
                                   "context_lens"),
    "scale not a number": (_set("scale", "big"), "scale"),
    "num_splits zero": (_set("num_splits", 0), "num_splits"),
    "unknown backend": (_set("backend", "cuda"), "backend"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_value_error_naming_it(case):
    batch = random_paged_batch([5, 20], block_size=16, num_heads=4, num_kv_heads=2, head_dim=32,
                               device=DEVICE)
    batch["backend"] = "triton"
    breaks, words = BAD_INPUTS[case]
    breaks(batch)
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        pl.paged_attention(**batch)


def test_process_is_alive_and_kernel_correct_after_every_bad_input():
    for breaks, _ in BAD_INPUTS.values():
        batch = random_paged_batch([5, 20], block_size=16, num_heads=4, num_kv_heads=2,
                                   head_dim=32, device=DEVICE)
        breaks(batch)
        with pytest.raises(ValueError):
            pl.paged_attention(**{"backend": "triton", **batch})
    good = random_paged_batch([5, 20], block_size=16, num_heads=4, num_kv_heads=2, head_dim=32,
                              device=DEVICE)
    assert_kernel_matches_reference(good)


# -- the benchmark --------------------------------------------------------------------------------


@pytest.mark.skipif(DEVICE == "cuda", reason="make gpu-check runs the full benchmark on a GPU")
def test_bench_runs_a_tiny_version_without_a_gpu_and_writes_json_and_png(tmp_path, capsys):
    import json

    from pagedlab import bench

    assert bench.main(["--out", str(tmp_path)]) == 0
    assert "No CUDA GPU" in capsys.readouterr().out
    (report,) = [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert len(list(tmp_path.glob("*.png"))) == int(has_matplotlib)  # no plot, but no crash
    kernel_rows = [row for row in report["results"] if row["method"] == "paged kernel"]
    assert kernel_rows and all(row["max_abs_error"] < 3e-3 for row in kernel_rows)
    assert report["copy_bandwidth_GBps"] > 0
