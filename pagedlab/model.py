"""A GPT-2 small enough to read in one sitting, whose attention can read and write a paged KV cache.

The architecture is GPT-2's: learned position embeddings, pre-LayerNorm blocks, a GELU MLP and
an output layer tied to the token embedding. Module names match Hugging Face's
``GPT2LMHeadModel``, so :meth:`GPT.from_hf` copies the weights over one for one.

The model runs two ways:

* ``model(idx)``: plain causal attention over contiguous tokens, no cache. :func:`naive_generate`
  uses it to recompute the whole sequence for every new token: the baseline, and a second
  reference next to Hugging Face's ``generate``.
* ``model.forward_paged(batch, kv_cache)``: the tokens of many sequences packed into one row.
  Each layer calls :func:`pagedlab.paged_batch.write_and_attend`: store the new keys and values
  in the slots the block manager chose, then attend through the block tables (the Triton kernels
  on a GPU, for decodes, prompt chunks and mixed batches alike; batched torch on a CPU).
  :class:`pagedlab.LLMEngine` builds the batches.

See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .paged_batch import PagedBatch, paged_attention_torch, write_and_attend  # noqa: F401
from .errors import InvalidConfig
from .sampling import SamplingParams, check_prompts, make_generator, request_seed, sample

INSTALL_HINT = ("transformers is not installed: pip install 'pagedlab[model]' "
                "(or pip install transformers)")


@dataclass
class GPTConfig:
    """GPT-2's shape. The defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257
    n_positions: int = 1024  # the longest sequence the position embedding covers
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    activation: str = "gelu_new"  # GPT-2's tanh approximation of GELU; or "gelu" (exact)

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise InvalidConfig(f"n_embd ({self.n_embd}) must be a multiple of n_head "
                                f"({self.n_head})")
        if self.activation not in ("gelu_new", "gelu"):
            raise InvalidConfig(f"activation must be 'gelu_new' or 'gelu', got {self.activation!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, on contiguous tokens or through the paged cache."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C), each token seeing itself and the tokens before it."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # (T, T)
        att = att.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, nh, T, T)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C) heads side by side again
        return self.c_proj(y)  # (B, T, C)

    def forward_paged(self, x: torch.Tensor, batch: PagedBatch, kv_cache, layer: int):
        """x: (N, C), N tokens of several sequences packed -> (N, C). Stores their K/V first."""
        N, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=1)  # (N, C) each
        q = q.view(N, self.n_head, self.head_dim)  # (N, nh, hs)
        k = k.reshape(N, self.n_head, self.head_dim)  # (N, nh, hs)
        v = v.reshape(N, self.n_head, self.head_dim)  # (N, nh, hs)
        y = write_and_attend(q, k, v, batch, kv_cache, layer)  # (N, nh, hs) store, then attend
        return self.c_proj(y.reshape(N, C))  # (N, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.approximate = "tanh" if config.activation == "gelu_new" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)"""
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, batch: PagedBatch | None = None, kv_cache=None, layer: int = 0):
        """(B, T, C) contiguous, or (N, C) packed with a batch and a cache -> same shape."""
        h = self.ln_1(x)
        if batch is None:
            x = x + self.attn(h)
        else:
            x = x + self.attn.forward_paged(h, batch, kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2 language model. See notebooks/08_serving_a_model.ipynb."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.n_positions, config.n_embd),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix reads and writes

    # What the engine needs to know to serve a model (pagedlab.Llama has the same names).
    @property
    def num_layers(self) -> int:
        return self.config.n_layer

    @property
    def num_kv_heads(self) -> int:
        return self.config.n_head  # GPT-2 has one KV head per query head

    @property
    def head_dim(self) -> int:
        return self.config.head_dim

    @property
    def max_seq_len(self) -> int:
        return self.config.n_positions

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits for every position, no cache. idx: (B, T) token ids -> (B, T, vocab_size)."""
        B, T = idx.shape
        if T > self.config.n_positions:
            raise InvalidConfig(f"{T} tokens but the model has {self.config.n_positions} "
                                "positions: shorten the input")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)

    def forward_paged(self, batch: PagedBatch, kv_cache) -> torch.Tensor:
        """Logits of each sequence's last new token, (num_seqs, vocab_size), via the paged cache."""
        x = self.transformer.wte(batch.input_ids) + self.transformer.wpe(batch.positions)  # (N, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, batch, kv_cache, layer)  # (N, C)
        return self.lm_head(self.transformer.ln_f(x[batch.last_token_rows]))  # (num_seqs, vocab_size)

    # ------------------------------------------------------------------ weights
    @classmethod
    def from_hf(cls, hf_model) -> "GPT":
        """The same network as a Hugging Face ``GPT2LMHeadModel``: weights, dtype, device."""
        hf = hf_model.config
        if getattr(hf, "model_type", None) != "gpt2":
            raise InvalidConfig(f"from_hf expects a GPT2LMHeadModel, got model_type "
                                f"{getattr(hf, 'model_type', None)!r}")
        unsupported = {"n_inner": (None, 4 * hf.n_embd), "scale_attn_weights": (True,),
                       "scale_attn_by_inverse_layer_idx": (False,),
                       "add_cross_attention": (False,)}
        for name, allowed in unsupported.items():
            if getattr(hf, name, allowed[0]) not in allowed:
                raise InvalidConfig(f"this GPT-2 variant sets {name}={getattr(hf, name)!r}, "
                                    f"which pagedlab's GPT does not implement")
        activation = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu"}
        if hf.activation_function not in activation:
            raise InvalidConfig(f"activation_function {hf.activation_function!r} is not supported: "
                                f"use one of {sorted(activation)}")
        config = GPTConfig(vocab_size=hf.vocab_size, n_positions=hf.n_positions, n_embd=hf.n_embd,
                           n_layer=hf.n_layer, n_head=hf.n_head,
                           layer_norm_epsilon=hf.layer_norm_epsilon,
                           activation=activation[hf.activation_function])
        source = hf_model.state_dict()
        weight = next(iter(source.values()))
        model = cls(config).to(device=weight.device, dtype=weight.dtype)
        # Hugging Face's GPT-2 stores its linear layers as Conv1D, (in, out): transpose those.
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                  "mlp.c_proj.weight")
        with torch.no_grad():
            for name, param in model.state_dict().items():
                if name == "lm_head.weight":
                    continue  # tied to transformer.wte.weight
                value = source[name]
                param.copy_(value.t() if name.endswith(conv1d) else value)
        return model.eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str = "gpt2", **kwargs) -> "GPT":
        """Load GPT-2 weights by hub name ("gpt2", "distilgpt2", ...) or from a local folder.

        Needs transformers (``pip install 'pagedlab[model]'``); ``kwargs`` go to its
        ``GPT2LMHeadModel.from_pretrained``.
        """
        try:
            from transformers import GPT2LMHeadModel
        except ImportError as error:
            raise ImportError(INSTALL_HINT) from error
        return cls.from_hf(GPT2LMHeadModel.from_pretrained(name_or_path, **kwargs))


@torch.no_grad()
def naive_generate(model: GPT, prompts: list[list[int]], max_new_tokens: int = 16,
                   temperature: float = 0.0, top_k: int | None = None,
                   seed: int | None = None) -> list[list[int]]:
    """Generate with no KV cache: rerun the model on the whole sequence for every new token.

    The baseline the course starts from (its cost grows with the square of the length) and a
    second reference for the engine. Returns the new tokens of each prompt, in order.
    See notebooks/08_serving_a_model.ipynb.
    """
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            seed=seed)
    check_prompts(prompts, model, max_new_tokens)
    outputs = []
    for index, prompt in enumerate(prompts):
        # prompt i draws with seed + i, as in LLMEngine.generate
        generator = None if params.greedy else make_generator(request_seed(seed, index))
        tokens = list(prompt)
        for _ in range(max_new_tokens):
            idx = torch.tensor([tokens], device=model.device)  # (1, T)
            logits = model(idx)[0, -1]  # (vocab_size,) the last position predicts the next token
            tokens.append(sample(logits, params, generator))
        outputs.append(tokens[len(prompt):])
    return outputs

