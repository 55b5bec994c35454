"""What a request may ask for, and choosing its next token: greedy, temperature, top-k, seeded.

Shared by the naive generator (:func:`pagedlab.naive_generate`) and the serving engine
(:class:`pagedlab.LLMEngine`), so both turn the same logits into the same tokens.
See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InvalidConfig, check_int, check_number


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. ``temperature == 0`` is greedy (argmax, no randomness)."""

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_k: int | None = None
    seed: int | None = None
    n: int = 1  # parallel samples of the same prompt (they share its blocks)

    def __post_init__(self):
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_number("temperature (0 means greedy)", self.temperature, 0.0)
        if self.top_k is not None:
            check_int("top_k (None: no limit)", self.top_k, 1)
        if self.seed is not None:
            check_int("seed", self.seed, -(2**63))
        check_int("n (samples per prompt)", self.n, 1)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def request_seed(seed: int | None, index: int) -> int | None:
    """The seed of the index-th prompt of one call (None stays None: fresh randomness)."""
    return None if seed is None else seed + index


def make_generator(seed: int | None, sample_index: int = 0) -> torch.Generator:
    """A CPU random generator for one sample: seeded (seed, sample_index), or fresh from torch's."""
    generator = torch.Generator()
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())  # follows torch.manual_seed
    generator.manual_seed((seed * 1_000_003 + sample_index) % 2**64)  # torch takes 64 bits
    return generator


def sample(logits: torch.Tensor, params: SamplingParams,
           generator: torch.Generator | None = None) -> int:
    """One token id from one row of logits (vocab_size,) under ``params``."""
    if params.greedy:
        return int(logits.argmax())
    return _draw(logits.float().cpu(), params, generator)


def _draw(logits: torch.Tensor, params: SamplingParams, generator) -> int:
    """One random token from a CPU row of fp32 logits (the same numbers on every device)."""
    logits = logits / params.temperature  # (vocab_size,)
    if params.top_k is not None and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))  # (vocab_size,)
    probs = torch.softmax(logits, dim=-1)  # (vocab_size,)
    return int(torch.multinomial(probs, 1, generator=generator))


def sample_batch(logits: torch.Tensor, params: list[SamplingParams],
                 generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of logits (num_seqs, vocab_size). Greedy rows take one batched argmax;
    the others are copied to the CPU together, once: at most two waits for a GPU per step."""
    tokens = logits.argmax(dim=-1).tolist()  # (num_seqs,)
    random_rows = [row for row, p in enumerate(params) if not p.greedy]
    if random_rows:
        rows = logits[random_rows].float().cpu()  # (len(random_rows), vocab_size)
        for row, values in zip(random_rows, rows):
            tokens[row] = _draw(values, params[row], generators[row])
    return tokens


def check_prompts(prompts, model, max_new_tokens: int) -> None:
    """Raise a clear error for prompts a model cannot run (its ``vocab_size`` and
    ``max_seq_len``), before anything runs."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__len__"):
        raise InvalidConfig("prompts must be a list of prompts, each a list of token ids")
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, (str, bytes)) or not hasattr(prompt, "__len__") or \
                any(isinstance(token, bool) or not isinstance(token, int) for token in prompt):
            raise InvalidConfig(f"prompt {index} must be a list of int token ids (tokenize text "
                                f"first), got {prompt!r:.60}")
        if len(prompt) == 0:
            raise InvalidConfig(f"prompt {index} is empty: a prompt needs at least one token")
        if any(not 0 <= token < model.vocab_size for token in prompt):
            raise InvalidConfig(f"prompt {index} has token ids outside [0, {model.vocab_size})")
        if len(prompt) + max_new_tokens > model.max_seq_len:
            raise InvalidConfig(f"prompt {index} has {len(prompt)} tokens; with max_new_tokens="
                                f"{max_new_tokens} it needs {len(prompt) + max_new_tokens} "
                                f"positions but the model has {model.max_seq_len}: shorten it "
                                "or lower max_new_tokens")
