"""How many requests fit: KV bytes per token, blocks from GPU memory, concurrency (lesson 03b).

The arithmetic vLLM does at start-up, in plain Python (no torch):

    kv_bytes_per_token = 2 (K and V) x layers x kv heads x head dim x bytes per number
    kv_cache_bytes     = gpu_memory_utilization x GPU memory - weights - activations
    num_kv_blocks      = kv_cache_bytes // (block_size x kv_bytes_per_token)
    max_concurrency    = num_kv_blocks / ceil(tokens per request / block_size)

vLLM measures the activations with a profiling run (a dummy forward pass over the token budget);
here they are an estimate (:func:`activation_bytes`). The model shapes are the published ones
(each checkpoint's ``config.json`` on the Hugging Face hub, written here by hand, not
downloaded). See notebooks/03b_how_many_requests_fit.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .errors import InvalidConfig, check_choice, check_fraction, check_int

GiB = 2**30

# Bytes per stored number. "auto" stores K/V in the model's dtype (16-bit for every model
# here); "fp8" is vLLM's --kv-cache-dtype fp8 (= fp8_e4m3, one byte plus a per-tensor scale).
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "auto": 2, "fp8": 1}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a checkpoint's config.json that size its weights and its KV cache."""

    name: str
    family: str                    # "gpt2", "opt" (learned positions, LayerNorm, biases) or
                                   # "llama" (Llama, Qwen2: RMSNorm, rotary, SwiGLU, GQA)
    num_layers: int
    num_heads: int                 # query heads
    num_kv_heads: int              # K/V heads (= num_heads without GQA)
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    max_model_len: int             # max_position_embeddings
    tie_word_embeddings: bool
    qkv_bias: bool = False         # Qwen2 has biases on q, k, v
    published_parameters: int = 0  # the count the model's card states, to compare
    source: str = ""


MODELS = {
    "OPT-13B": ModelShape(  # the paper's running example (its section 3)
        "OPT-13B", "opt", num_layers=40, num_heads=40, num_kv_heads=40, head_dim=128,
        hidden_size=5120, intermediate_size=20480, vocab_size=50272, max_model_len=2048,
        tie_word_embeddings=True, published_parameters=13_000_000_000,
        source="facebook/opt-13b config.json (40 layers, 40 heads, hidden 5120, ffn 20480); "
               "the paper: 800 KB of KV per token, 26 GB of weights"),
    "GPT-2": ModelShape(
        "GPT-2", "gpt2", num_layers=12, num_heads=12, num_kv_heads=12, head_dim=64,
        hidden_size=768, intermediate_size=3072, vocab_size=50257, max_model_len=1024,
        tie_word_embeddings=True, published_parameters=124_000_000,
        source="openai-community/gpt2 config.json (n_layer 12, n_head 12, n_embd 768, "
               "n_positions 1024, vocab_size 50257); MLP is 4 x n_embd; card: 124M"),
    "SmolLM2-135M": ModelShape(
        "SmolLM2-135M", "llama", num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
        hidden_size=576, intermediate_size=1536, vocab_size=49152, max_model_len=8192,
        tie_word_embeddings=True, published_parameters=135_000_000,
        source="HuggingFaceTB/SmolLM2-135M config.json; card: 135M"),
    "Qwen2.5-7B": ModelShape(
        "Qwen2.5-7B", "llama", num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
        hidden_size=3584, intermediate_size=18944, vocab_size=152064, max_model_len=32768,
        tie_word_embeddings=False, qkv_bias=True, published_parameters=7_610_000_000,
        source="Qwen/Qwen2.5-7B config.json; card: 7.61B parameters, 28 layers, "
               "28 Q / 4 KV heads"),
    "Llama-3-8B": ModelShape(
        "Llama-3-8B", "llama", num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
        hidden_size=4096, intermediate_size=14336, vocab_size=128256, max_model_len=8192,
        tie_word_embeddings=False, published_parameters=8_030_000_000,
        source="meta-llama/Meta-Llama-3-8B config.json; card: 8B (8.03B)"),
}


@dataclass(frozen=True)
class GPU:
    """A GPU by its label; memory is the label's figure read as GiB (the device reports a
    little less: an A100 40GB shows vLLM 39.50 GiB, vLLM issue #12330's log)."""

    name: str
    memory_bytes: int
    max_num_batched_tokens: int    # vLLM's default for the LLM class on this GPU
    max_num_seqs: int


# Defaults from vLLM 0.33.0, vllm/engine/arg_utils.py, EngineArgs.get_batch_defaults: 8192
# tokens and 256 sequences, or 16384 and 1024 on a GPU of >= 70 GiB that is not an A100.
GPUS = {
    "T4 (16 GB)": GPU("T4 (16 GB)", 16 * GiB, 8192, 256),
    "A100 (40 GB)": GPU("A100 (40 GB)", 40 * GiB, 8192, 256),
    "A100 (80 GB)": GPU("A100 (80 GB)", 80 * GiB, 8192, 256),
    "H100 (80 GB)": GPU("H100 (80 GB)", 80 * GiB, 16384, 1024),
}


def model_shape(model) -> ModelShape:
    """A ModelShape, given one or the name of one in MODELS."""
    if isinstance(model, ModelShape):
        return model
    return MODELS[check_choice("model", model, tuple(MODELS))]


def without_gqa(model) -> ModelShape:
    """The same model as if every query head kept its own K and V (multi-head attention)."""
    shape = model_shape(model)
    return replace(shape, name=f"{shape.name} without GQA", num_kv_heads=shape.num_heads)


def dtype_bytes(dtype: str) -> int:
    """Bytes per number of ``dtype`` (a key of DTYPE_BYTES)."""
    return DTYPE_BYTES[check_choice("dtype", dtype, tuple(DTYPE_BYTES))]


def kv_bytes_per_token(model, dtype: str = "auto") -> int:
    """Bytes one token's K and V take in the cache, all layers:
    2 x layers x kv heads x head dim x bytes per number."""
    shape = model_shape(model)
    return 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * dtype_bytes(dtype)


def num_parameters(model) -> int:
    """The parameter count of the shape (embeddings, attention, MLP, norms, output head)."""
    s = model_shape(model)
    h, q, kv = s.hidden_size, s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    if s.family in ("gpt2", "opt"):  # learned positions; LayerNorms and linears with biases
        per_layer = (2 * h) + (h * 3 * h + 3 * h) + (h * h + h) + (2 * h) \
            + (h * s.intermediate_size + s.intermediate_size) + (s.intermediate_size * h + h)
        positions = s.max_model_len + (2 if s.family == "opt" else 0)  # OPT offsets them by 2
        embeddings = s.vocab_size * h + positions * h
        final_norm = 2 * h
    else:                     # rotary positions; RMSNorms; SwiGLU (gate, up, down)
        attention = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if s.qkv_bias else 0)
        per_layer = attention + 3 * h * s.intermediate_size + 2 * h
        embeddings = s.vocab_size * h
        final_norm = h
    head = 0 if s.tie_word_embeddings else s.vocab_size * h
    return embeddings + s.num_layers * per_layer + final_norm + head


def weight_bytes(model, dtype: str = "auto") -> int:
    """Bytes of the weights in ``dtype`` ("auto": 16-bit, as vLLM loads every model here)."""
    return num_parameters(model) * dtype_bytes(dtype)


def activation_bytes(model, max_num_batched_tokens: int, max_num_seqs: int,
                     dtype: str = "auto") -> int:
    """An estimate of the peak activation memory of one step (vLLM measures it instead).

    The largest tensors alive at once in a forward pass over the token budget: the residual
    stream (hidden) beside the MLP's gate and up outputs and their product (3 x intermediate),
    per token; plus the fp32 logits of every sequence sampled and a softmax of them.
    """
    shape = model_shape(model)
    check_int("max_num_batched_tokens", max_num_batched_tokens, 1)
    check_int("max_num_seqs", max_num_seqs, 1)
    forward = max_num_batched_tokens * (shape.hidden_size + 3 * shape.intermediate_size) \
        * dtype_bytes(dtype)
    logits = 2 * max_num_seqs * shape.vocab_size * 4
    return forward + logits


def budget_bytes(gpu_memory_bytes: int, gpu_memory_utilization: float) -> int:
    """The memory vLLM may use: utilization x memory, rounded up (math.ceil in
    vllm/v1/worker/utils.py, request_memory)."""
    check_int("gpu_memory_bytes", gpu_memory_bytes, 1)
    fraction = check_fraction("gpu_memory_utilization", gpu_memory_utilization)
    if fraction == 0:
        raise InvalidConfig("gpu_memory_utilization must be > 0, got 0")
    return math.ceil(gpu_memory_bytes * fraction)


def kv_cache_bytes(gpu_memory_bytes: int, gpu_memory_utilization: float, weights_bytes: int,
                   activations_bytes: int) -> int:
    """What is left for the KV cache: utilization x memory - weights - activations (can be
    negative: then nothing is left and vLLM refuses to start)."""
    budget = budget_bytes(gpu_memory_bytes, gpu_memory_utilization)
    check_int("weights_bytes", weights_bytes, 0)
    check_int("activations_bytes", activations_bytes, 0)
    return budget - weights_bytes - activations_bytes


def num_kv_blocks(kv_cache_bytes: int, kv_bytes_per_token: int, block_size: int = 16) -> int:
    """Whole blocks of ``block_size`` tokens that fit in ``kv_cache_bytes``."""
    check_int("kv_cache_bytes", kv_cache_bytes, 0)
    check_int("kv_bytes_per_token", kv_bytes_per_token, 1)
    check_int("block_size", block_size, 1)
    return kv_cache_bytes // (block_size * kv_bytes_per_token)


def blocks_per_request(tokens_per_request: int, block_size: int = 16) -> int:
    """Blocks one request of ``tokens_per_request`` tokens holds: its last block is whole too."""
    check_int("tokens_per_request", tokens_per_request, 1)
    check_int("block_size", block_size, 1)
    return -(-tokens_per_request // block_size)


def max_concurrency(num_blocks: int, tokens_per_request: int, block_size: int = 16) -> float:
    """How many requests of ``tokens_per_request`` tokens the pool holds at once, all at full
    length (vLLM logs this as "Maximum concurrency for N tokens per request")."""
    check_int("num_blocks", num_blocks, 0)
    return num_blocks / blocks_per_request(tokens_per_request, block_size)


@dataclass(frozen=True)
class Capacity:
    """Everything :func:`plan` worked out, in bytes, blocks and requests."""

    model: ModelShape
    gpu: GPU
    gpu_memory_utilization: float
    kv_cache_dtype: str
    block_size: int
    tokens_per_request: int
    budget_bytes: int              # utilization x memory
    weights_bytes: int
    activations_bytes: int
    kv_cache_bytes: int            # <= 0: the model does not fit
    kv_bytes_per_token: int
    num_blocks: int
    max_concurrency: float
    max_num_seqs: int

    @property
    def fits(self) -> bool:
        return self.num_blocks > 0

    @property
    def pool_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def batch_limit(self) -> int:
        """Requests that can run at once: the smaller of the pool's and --max-num-seqs."""
        return min(int(self.max_concurrency), self.max_num_seqs)


def plan(model, gpu, *, gpu_memory_utilization: float = 0.92, kv_cache_dtype: str = "auto",
         block_size: int = 16, tokens_per_request: int | None = None,
         max_num_batched_tokens: int | None = None, max_num_seqs: int | None = None) -> Capacity:
    """vLLM's start-up sizing for ``model`` on ``gpu`` (names from MODELS and GPUS, or objects).

    Defaults are vLLM's: utilization 0.92, block size 16, the GPU's token budget and sequence
    cap, and requests of the model's full length.
    """
    shape = model_shape(model)
    card = gpu if isinstance(gpu, GPU) else GPUS[check_choice("gpu", gpu, tuple(GPUS))]
    check_choice("kv_cache_dtype", kv_cache_dtype, ("auto", "fp8"))
    tokens = shape.max_model_len if tokens_per_request is None else tokens_per_request
    check_int("tokens_per_request", tokens, 1)
    budget_tokens = card.max_num_batched_tokens if max_num_batched_tokens is None \
        else max_num_batched_tokens
    seqs = card.max_num_seqs if max_num_seqs is None else check_int("max_num_seqs", max_num_seqs, 1)
    weights = weight_bytes(shape)
    activations = activation_bytes(shape, budget_tokens, seqs)
    left = kv_cache_bytes(card.memory_bytes, gpu_memory_utilization, weights, activations)
    per_token = kv_bytes_per_token(shape, kv_cache_dtype)
    blocks = num_kv_blocks(max(left, 0), per_token, block_size)
    return Capacity(shape, card, float(gpu_memory_utilization), kv_cache_dtype, block_size,
                    tokens, budget_bytes(card.memory_bytes, gpu_memory_utilization), weights,
                    activations, left, per_token, blocks,
                    max_concurrency(blocks, tokens, block_size), seqs)
