"""Lesson 03b's numbers: each is computed by pagedlab.capacity and checked here against the
multiplication written out by hand, or against the paper's or vLLM's own figure."""
import math

import pytest

from pagedlab import InvalidConfig
from pagedlab import capacity as cap

GiB = 2**30


# -- one token's K and V: 2 x layers x kv heads x head dim x bytes -------------------------
@pytest.mark.parametrize("model, by_hand", [
    ("GPT-2", 2 * 12 * 12 * 64 * 2),            # 36,864
    ("SmolLM2-135M", 2 * 30 * 3 * 64 * 2),      # 23,040
    ("Qwen2.5-7B", 2 * 28 * 4 * 128 * 2),       # 57,344
    ("Llama-3-8B", 2 * 32 * 8 * 128 * 2),       # 131,072 = 128 KiB
    ("OPT-13B", 2 * 40 * 40 * 128 * 2),         # 819,200
])
def test_kv_bytes_per_token_is_two_x_layers_x_kv_heads_x_head_dim_x_bytes(model, by_hand):
    assert cap.kv_bytes_per_token(model) == by_hand
    assert cap.kv_bytes_per_token(model, "fp8") == by_hand // 2


def test_opt_13b_takes_the_papers_800_kb_per_token_and_1_6_gb_per_2048_token_request():
    # Kwon et al. 2023, section 3: 2 (K and V) x 5120 (hidden) x 40 (layers) x 2 (fp16 bytes)
    assert cap.kv_bytes_per_token("OPT-13B") == 2 * 5120 * 40 * 2 == 800 * 1024
    assert cap.kv_bytes_per_token("OPT-13B") * 2048 / 1e9 == pytest.approx(1.6, abs=0.1)


def test_lesson_table_tokens_per_gib():
    assert cap.GiB // cap.kv_bytes_per_token("Llama-3-8B") == 1024 ** 3 // (128 * 1024) == 8192
    assert cap.GiB // cap.kv_bytes_per_token("OPT-13B") == 1310
    assert cap.kv_bytes_per_token("OPT-13B") / cap.kv_bytes_per_token("Llama-3-8B") == 6.25
    assert round(cap.num_parameters("OPT-13B") / cap.num_parameters("Llama-3-8B"), 1) == 1.6
    assert cap.kv_bytes_per_token("SmolLM2-135M") / cap.kv_bytes_per_token("GPT-2") \
        == (30 * 3) / (12 * 12) == 0.625                       # "62% of what it costs in GPT-2"


# -- weights ------------------------------------------------------------------------------
@pytest.mark.parametrize("model, by_hand", [
    # wte + wpe + 12 x (ln1 + qkv + proj + ln2 + fc + proj) + ln_f
    ("GPT-2", 50257 * 768 + 1024 * 768
     + 12 * (2 * 768 + (768 * 2304 + 2304) + (768 * 768 + 768) + 2 * 768
             + (768 * 3072 + 3072) + (3072 * 768 + 768)) + 2 * 768),
    # embeddings (tied) + 30 x (q + k + v + o + gate/up/down + 2 norms) + final norm
    ("SmolLM2-135M", 49152 * 576 + 30 * (576 * 576 + 2 * 576 * 192 + 576 * 576
                                         + 3 * 576 * 1536 + 2 * 576) + 576),
    # untied head; biases on q, k, v
    ("Qwen2.5-7B", 2 * 152064 * 3584 + 28 * (3584 * 3584 + 2 * 3584 * 512 + 3584 * 3584
                                             + (3584 + 2 * 512) + 3 * 3584 * 18944
                                             + 2 * 3584) + 3584),
    ("Llama-3-8B", 2 * 128256 * 4096 + 32 * (4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096
                                             + 3 * 4096 * 14336 + 2 * 4096) + 4096),
])
def test_parameter_count_is_the_sum_of_the_shapes(model, by_hand):
    assert cap.num_parameters(model) == by_hand


@pytest.mark.parametrize("model", ["GPT-2", "SmolLM2-135M", "Qwen2.5-7B", "Llama-3-8B",
                                   "OPT-13B"])
def test_parameter_count_matches_the_model_card_within_one_percent(model):
    published = cap.MODELS[model].published_parameters  # 124M, 135M, 7.61B, 8.03B, 13B
    assert cap.num_parameters(model) == pytest.approx(published, rel=0.012)


def test_exact_published_counts():
    assert cap.num_parameters("GPT-2") == 124_439_808
    assert cap.num_parameters("SmolLM2-135M") == 134_515_008
    assert cap.num_parameters("Llama-3-8B") == 8_030_261_248
    qwen = cap.num_parameters("Qwen2.5-7B")
    assert qwen == 7_615_616_512                      # the card: 7.61B, 6.53B non-embedding
    assert math.floor(qwen / 1e7) / 100 == 7.61 and round((qwen - 2 * 152064 * 3584) / 1e9, 2) == 6.53


def test_opt_13b_weights_are_the_papers_26_gb():
    assert cap.weight_bytes("OPT-13B") / 1e9 == pytest.approx(26, abs=0.5)


def test_llama_3_8b_weights_match_vllms_log_to_a_hundredth_of_a_gib():
    # vLLM issue #12330: "Loading model weights took 14.9595 GB" (vLLM prints GiB)
    assert cap.weight_bytes("Llama-3-8B") == 8_030_261_248 * 2
    assert cap.weight_bytes("Llama-3-8B") / GiB == pytest.approx(14.9595, abs=0.01)


# -- the budget, the blocks, the concurrency ----------------------------------------------
def test_activation_estimate_is_written_out():
    forward = 8192 * (4096 + 3 * 14336) * 2
    logits = 2 * 256 * 128256 * 4
    assert cap.activation_bytes("Llama-3-8B", 8192, 256) == forward + logits == 1_034_420_224


def test_llama_3_8b_on_an_a100_80gb_step_by_step():
    plan = cap.plan("Llama-3-8B", "A100 (80 GB)")
    budget = math.ceil(80 * GiB * 0.92)
    kv = budget - 8_030_261_248 * 2 - 1_034_420_224
    assert plan.budget_bytes == budget
    assert plan.kv_cache_bytes == kv == 61_932_455_527
    assert plan.num_blocks == kv // (16 * 131072) == 29_531
    assert plan.pool_tokens == 29_531 * 16 == 472_496
    assert plan.max_concurrency == pytest.approx(29_531 / (8192 / 16))   # full length 8192
    assert cap.plan("Llama-3-8B", "A100 (80 GB)", tokens_per_request=2048).max_concurrency \
        == pytest.approx(29_531 / 128) == pytest.approx(230.7, abs=0.05)


def test_vllm_start_up_log_is_reproduced_from_its_own_measurements():
    # vLLM issue #12330 (V0): 39.50 GiB x 0.90 = 35.55 GiB; weights 14.96 GiB, non-torch
    # 0.10 GiB, activation peak 9.37 GiB -> 11.12 GiB of KV; "# GPU blocks: 5691";
    # "Maximum concurrency for 8192 tokens per request: 11.12x"
    kv = cap.kv_cache_bytes(int(39.50 * GiB), 0.90, int(14.96 * GiB), int(9.47 * GiB))
    assert kv / GiB == pytest.approx(11.12, abs=0.005)
    blocks = cap.num_kv_blocks(kv, 131072, 16)
    assert blocks == kv // (16 * 131072) == 5693   # 11.12 GiB / 2 MiB per block = 5693.4
    assert blocks == pytest.approx(5691, rel=0.001)
    assert round(cap.max_concurrency(blocks, 8192), 2) == 11.12
    assert round(cap.max_concurrency(5691, 8192, 16), 2) == 11.12


@pytest.mark.parametrize("model", ["Llama-3-8B", "Qwen2.5-7B", "OPT-13B"])
def test_big_models_do_not_fit_a_t4_in_16_bit(model):
    plan = cap.plan(model, "T4 (16 GB)")
    assert not plan.fits and plan.num_blocks == 0 and plan.max_concurrency == 0
    assert plan.kv_cache_bytes < 0


def test_llama_3_8b_on_a_t4_fails_on_its_weights_alone():
    assert cap.weight_bytes("Llama-3-8B") > math.ceil(16 * GiB * 0.92)   # 14.96 > 14.72 GiB


def test_small_models_are_capped_by_max_num_seqs_not_by_the_pool():
    plan = cap.plan("GPT-2", "T4 (16 GB)")
    assert plan.max_concurrency > 256 and plan.batch_limit == 256


def test_h100_uses_vllms_bigger_default_budget_so_a_little_less_kv():
    a100, h100 = cap.plan("Llama-3-8B", "A100 (80 GB)"), cap.plan("Llama-3-8B", "H100 (80 GB)")
    assert (h100.gpu.max_num_batched_tokens, h100.max_num_seqs) == (16384, 1024)
    assert (a100.gpu.max_num_batched_tokens, a100.max_num_seqs) == (8192, 256)
    assert h100.num_blocks < a100.num_blocks


def test_gqa_cuts_llama_3_8b_kv_by_its_group_size_of_four():
    mha = cap.without_gqa("Llama-3-8B")
    assert mha.num_kv_heads == 32
    assert cap.kv_bytes_per_token(mha) == 2 * 32 * 32 * 128 * 2 == 4 * 131072
    gqa = cap.plan("Llama-3-8B", "A100 (80 GB)", tokens_per_request=2048)
    full = cap.plan(mha, "A100 (80 GB)", tokens_per_request=2048)
    assert gqa.max_concurrency / full.max_concurrency == pytest.approx(4.1, abs=0.05)


def test_fp8_doubles_the_blocks():
    auto = cap.plan("Llama-3-8B", "A100 (40 GB)", tokens_per_request=2048)
    fp8 = cap.plan("Llama-3-8B", "A100 (40 GB)", kv_cache_dtype="fp8", tokens_per_request=2048)
    assert fp8.kv_bytes_per_token == 2 * 32 * 8 * 128 * 1
    assert fp8.num_blocks == auto.kv_cache_bytes // (16 * 65536) == 21_380
    assert auto.num_blocks == 10_690


def test_a_request_holds_whole_blocks():
    assert cap.blocks_per_request(500, 16) == 32        # 500 / 16 = 31.25 -> 32
    assert cap.blocks_per_request(512, 16) == 32
    assert cap.blocks_per_request(513, 16) == 33
    assert cap.blocks_per_request(500, 128) == 4
    assert cap.max_concurrency(320, 500, 16) == 10.0


def test_block_size_barely_changes_the_pool():
    tokens = [cap.plan("Llama-3-8B", "A100 (80 GB)", block_size=b).pool_tokens
              for b in (8, 16, 32, 64, 128)]
    assert max(tokens) - min(tokens) <= 128


# -- bad inputs are refused with typed errors ---------------------------------------------
@pytest.mark.parametrize("call", [
    lambda: cap.kv_bytes_per_token("GPT-3"),
    lambda: cap.kv_bytes_per_token("GPT-2", "int3"),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", kv_cache_dtype="float32"),
    lambda: cap.plan("GPT-2", "V100"),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", gpu_memory_utilization=1.5),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", gpu_memory_utilization=0),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", gpu_memory_utilization=True),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", block_size=0),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", block_size=16.0),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", tokens_per_request=0),
    lambda: cap.plan("GPT-2", "T4 (16 GB)", max_num_seqs=0),
    lambda: cap.num_kv_blocks(-1, 131072, 16),
    lambda: cap.num_kv_blocks(10**9, 0, 16),
    lambda: cap.max_concurrency(100, -5, 16),
    lambda: cap.activation_bytes("GPT-2", 0, 256),
    lambda: cap.kv_cache_bytes(16 * GiB, 0.9, -1, 0),
])
def test_bad_inputs_are_refused_with_invalid_config(call):
    with pytest.raises(InvalidConfig):
        call()


def test_errors_name_the_argument():
    with pytest.raises(InvalidConfig, match="block_size"):
        cap.num_kv_blocks(10**9, 131072, 0)
    with pytest.raises(InvalidConfig, match="gpu_memory_utilization"):
        cap.plan("GPT-2", "T4 (16 GB)", gpu_memory_utilization=2)


def test_capacity_imports_no_torch():
    import subprocess
    import sys
    code = "import sys, pagedlab.capacity; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_widget_answers_its_controls():
    pytest.importorskip("ipywidgets")
    from pagedlab.widgets import CapacityWidget
    widget = CapacityWidget()
    assert "230.7 requests" in widget.answer.value
    widget.kv_dtype.value = "fp8"
    assert "461.4 requests" in widget.answer.value
    widget.gpu.value = "T4 (16 GB)"
    assert "Does not fit" in widget.answer.value
    widget.model.value = "GPT-2"
    assert "--max-num-seqs 256" in widget.answer.value
    assert "1,024 positions" in widget.bar.value           # 2048 tokens clipped to GPT-2's 1024
