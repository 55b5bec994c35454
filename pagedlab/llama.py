"""A Llama-family model (Llama 2/3, Qwen2, Mistral, SmolLM), as short as model.py's GPT-2.

What changed since GPT-2, one line each:

* **RMSNorm** instead of LayerNorm: scale by the root mean square, no mean, no bias.
* **Rotary embeddings** (RoPE) instead of a learned position table: each query and key is
  rotated by an angle proportional to its position, so ``q . k`` depends on the distance between
  them. A key is rotated once, when it is made, and stored in the KV cache already rotated.
* **SwiGLU MLP**: ``down(silu(gate(x)) * up(x))``.
* **Grouped-query attention** (GQA): ``num_key_value_heads`` K/V heads, each shared by
  ``num_attention_heads // num_key_value_heads`` query heads. The KV cache holds only the K/V
  heads, so the same memory holds that many times more tokens.

Qwen2 adds a bias to q, k and v; Mistral is Llama without one (its sliding window is not
implemented, so a config that needs it is refused). Module names match Hugging Face's
``LlamaForCausalLM``, so :meth:`Llama.from_hf` copies the weights over one for one.
Like :class:`pagedlab.GPT`, the model runs on contiguous tokens (``model(idx)``) or through the
paged KV cache (``model.forward_paged(batch, kv_cache)``). See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InvalidConfig, check_int
from .paged_batch import write_and_attend

ROPE_TYPES = ("default", "linear", "llama3")  # rope_scaling types implemented here
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings")


@dataclass
class LlamaConfig:
    """A Llama-family shape. Defaults: SmolLM2-135M's (30 layers, 9 heads over 3 K/V heads)."""

    vocab_size: int = 49152
    max_position_embeddings: int = 8192  # the longest sequence the model runs
    hidden_size: int = 576
    intermediate_size: int = 1536  # the SwiGLU MLP's width
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3  # K/V heads; as many as query heads is plain multi-head
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 100000.0
    rope_scaling: dict | None = None  # None, or {"rope_type": "linear" | "llama3", ...}
    tie_word_embeddings: bool = True  # the output layer reuses the token embedding
    attention_bias: bool = False  # bias on q, k and v (Qwen2: True)
    o_proj_bias: bool = False  # bias on the attention's output projection
    mlp_bias: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
            check_int(name, getattr(self, name), 1)
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise InvalidConfig(f"hidden_size ({self.hidden_size}) must be a multiple of "
                                    f"num_attention_heads ({self.num_attention_heads}), or set "
                                    "head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        check_int("head_dim", self.head_dim, 2)
        if self.head_dim % 2:
            raise InvalidConfig(f"head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise InvalidConfig(f"num_attention_heads ({self.num_attention_heads}) must be a "
                                f"multiple of num_key_value_heads ({self.num_key_value_heads})")
        if not self.rope_theta > 0 or not self.rms_norm_eps > 0:
            raise InvalidConfig(f"rope_theta and rms_norm_eps must be > 0, got "
                                f"{self.rope_theta!r} and {self.rms_norm_eps!r}")
        self.rope_scaling = check_rope_scaling(self.rope_scaling)


def check_rope_scaling(rope_scaling: dict | None) -> dict | None:
    """None for plain RoPE, else a copy of the dict with its type under "rope_type"."""
    scaling = dict(rope_scaling or {})
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    if kind not in ROPE_TYPES:
        raise InvalidConfig(f"rope_scaling type {kind!r} is not supported: pagedlab's Llama "
                            f"implements {', '.join(ROPE_TYPES)}; use a checkpoint with one of "
                            "those (or rope_scaling=None)")
    needed = {"default": (), "linear": ("factor",), "llama3": LLAMA3_KEYS}[kind]
    missing = [key for key in needed if key not in scaling]
    if missing:
        raise InvalidConfig(f"rope_scaling of type {kind!r} needs {', '.join(missing)}")
    return None if kind == "default" else {"rope_type": kind, **scaling}


def rope_frequencies(config: LlamaConfig) -> torch.Tensor:
    """The angle per position of each rotated pair, (head_dim // 2,) float32, as in transformers."""
    dim = config.head_dim
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, dim, 2).float() / dim)  # (hs/2,)
    scaling = config.rope_scaling or {"rope_type": "default"}
    if scaling["rope_type"] == "linear":  # positions stretched by `factor`
        return inv_freq / scaling["factor"]
    if scaling["rope_type"] == "llama3":  # Llama 3.1: stretch only the long wavelengths
        factor, old_len = scaling["factor"], scaling["original_max_position_embeddings"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq  # (hs/2,) tokens per full turn
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)  # long: / factor
        smooth = (old_len / wavelen - low) / (high - low)  # 0 at the long end, 1 at the short
        between = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        return torch.where(between, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)
    return inv_freq


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[i], x[i + hs/2]) by each position's angles. x: (..., hs) -> same."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., hs/2) each
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin  # (..., hs)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C): x / rms(x) * weight, the mean square taken in float32."""
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., C)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    """Causal self-attention with RoPE and grouped K/V heads, contiguous or through the cache."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv, hs = (config.num_attention_heads, config.num_key_value_heads,
                                      config.head_dim)
        self.head_dim, C = hs, config.hidden_size
        self.q_proj = nn.Linear(C, self.n_head * hs, bias=config.attention_bias)
        self.k_proj = nn.Linear(C, self.n_kv * hs, bias=config.attention_bias)
        self.v_proj = nn.Linear(C, self.n_kv * hs, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.n_head * hs, C, bias=config.o_proj_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C), cos/sin: (T, hs) -> (B, T, C), each token seeing itself and before."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # (B, nh, T, hs), (B, nkv, T, hs)
        k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)  # (B, nh, T, hs) shared K heads
        v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # (T, T)
        att = att.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, nh, T, T)
        y = (att @ v).transpose(1, 2).reshape(B, T, -1)  # (B, nh, T, hs) -> (B, T, nh * hs)
        return self.o_proj(y)  # (B, T, C)

    def forward_paged(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch,
                      kv_cache, layer: int) -> torch.Tensor:
        """x: (N, C) packed tokens, cos/sin: (N, hs) at their positions -> (N, C).

        Keys are rotated before they are stored: the cache holds them ready to use.
        """
        N, _ = x.shape
        q = self.q_proj(x).view(N, self.n_head, self.head_dim)  # (N, nh, hs)
        k = self.k_proj(x).view(N, self.n_kv, self.head_dim)  # (N, nkv, hs)
        v = self.v_proj(x).view(N, self.n_kv, self.head_dim)  # (N, nkv, hs)
        q, k = rotate(q, cos[:, None], sin[:, None]), rotate(k, cos[:, None], sin[:, None])
        y = write_and_attend(q, k, v, batch, kv_cache, layer)  # (N, nh, hs) stores nkv heads
        return self.o_proj(y.reshape(N, -1))  # (N, C)


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        C, hidden, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(C, hidden, bias=bias)
        self.up_proj = nn.Linear(C, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, C, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C), SwiGLU: the gate's SiLU times the up projection."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-RMSNorm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, batch=None, kv_cache=None, layer: int = 0):
        """(B, T, C) contiguous, or (N, C) packed with a batch and a cache -> same shape."""
        h = self.input_layernorm(x)
        if batch is None:
            x = x + self.self_attn(h, cos, sin)
        else:
            x = x + self.self_attn.forward_paged(h, cos, sin, batch, kv_cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """A Llama-family language model. See notebooks/08_serving_a_model.ipynb."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size),
            layers=nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers)),
            norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
        ))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # float32 on purpose and outside the state dict: .half() must not round the angles
        self.inv_freq = rope_frequencies(config)  # (hs/2,)

    # What the engine reads: the KV cache holds num_kv_heads heads of head_dim per layer.
    num_layers = property(lambda self: self.config.num_hidden_layers)
    num_kv_heads = property(lambda self: self.config.num_key_value_heads)
    head_dim = property(lambda self: self.config.head_dim)
    max_seq_len = property(lambda self: self.config.max_position_embeddings)
    vocab_size = property(lambda self: self.config.vocab_size)
    device = property(lambda self: self.lm_head.weight.device)
    dtype = property(lambda self: self.lm_head.weight.dtype)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of every position's angles: positions (...,) -> (..., hs) each."""
        angles = positions.float()[..., None] * self.inv_freq.to(positions.device)  # (..., hs/2)
        angles = torch.cat((angles, angles), dim=-1)  # (..., hs) both halves of each pair
        return angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits for every position, no cache. idx: (B, T) token ids -> (B, T, vocab_size)."""
        B, T = idx.shape
        if T > self.max_seq_len:
            raise InvalidConfig(f"{T} tokens but the model has {self.max_seq_len} positions: "
                                "shorten the input")
        cos, sin = self.rope(torch.arange(T, device=idx.device))  # (T, hs) each
        x = self.model.embed_tokens(idx)  # (B, T, C)
        for block in self.model.layers:
            x = block(x, cos, sin)  # (B, T, C)
        return self.lm_head(self.model.norm(x))  # (B, T, vocab_size)

    def forward_paged(self, batch, kv_cache) -> torch.Tensor:
        """Logits of each sequence's last new token, (num_seqs, vocab_size), via the paged cache."""
        cos, sin = self.rope(batch.positions)  # (N, hs) each
        x = self.model.embed_tokens(batch.input_ids)  # (N, C)
        for layer, block in enumerate(self.model.layers):
            x = block(x, cos, sin, batch, kv_cache, layer)  # (N, C)
        return self.lm_head(self.model.norm(x[batch.last_token_rows]))  # (num_seqs, vocab_size)

    # ------------------------------------------------------------------ weights
    @classmethod
    def from_hf(cls, hf_model) -> "Llama":
        """The same network as a Hugging Face ``LlamaForCausalLM``, ``Qwen2ForCausalLM`` or
        ``MistralForCausalLM``: weights, dtype, device."""
        from .models import llama_config_from_hf

        config = llama_config_from_hf(hf_model.config)
        source = hf_model.state_dict()
        weight = source["model.embed_tokens.weight"]
        model = cls(config).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            for name, param in model.state_dict().items():
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    continue  # tied to model.embed_tokens.weight
                param.copy_(source[name])
        return model.eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "Llama":
        """Load a Llama, Qwen2 or Mistral checkpoint by hub name or from a local folder.

        Needs transformers (``pip install 'pagedlab[model]'``); ``kwargs`` go to its
        ``AutoModelForCausalLM.from_pretrained``.
        """
        from .models import load_hf

        return cls.from_hf(load_hf(name_or_path, **kwargs))

