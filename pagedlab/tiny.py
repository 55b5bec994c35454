"""A tiny Llama shipped with the package, trained to copy a list of letters: answers you can check.

Prompt ``[qwerty]``, answer ``>qwerty.`` (forwards) or ``<ytrewq.`` (backwards): the direction
is the model's own pick, see :class:`CopyTask`. It was trained by ``tools/train_tiny_model.py``
(a few minutes on one CPU core) on lists of 4 to 24 distinct letters. Each answer letter comes
from a different prompt position, far back in the cache, and every step reads the direction
the answer began with: attention must read every block through the block table, the prompt's
and the answer's own, so a paging bug (a wrong, shifted or reversed block table, a skipped
copy-on-write between samples, a block read before its K/V are written) shows up as wrong
letters or an answer that turns around.

    model, task = pl.tiny_model()
    engine = pl.LLMEngine(model, eos_token_id=task.eos_token_id)
    prompts = task.prompts(8)                      # held-out lists, never seen in training
    outputs = engine.generate(prompts, max_new_tokens=task.max_new_tokens)
    task.report(prompts, outputs)                  # ['[qwerty] -> >qwerty.  ok', ...]
    task.evaluate(engine, prompts)                 # fraction of answers exactly right

See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidConfig

WEIGHTS = Path(__file__).parent / "data" / "tiny_copy.pt"


@dataclass(frozen=True)
class CopyTask:
    """Copy the letters between "[" and "]", forwards after ">" or backwards after "<", then ".".

    The model picks the direction with its first token: ">" mostly (greedy decoding always
    does), "<" in about ``rare_share`` of samples. Token ids are positions in ``vocab``.
    """

    letters: str = "abcdefghijklmnopqrstuvwxyz"
    rare_share: float = 0.25  # share of training answers that go backwards
    min_len: int = 4  # letters per prompt (all different)
    max_len: int = 24
    held_out_every: int = 8  # a list whose checksum is 0 mod this is never trained on

    @property
    def vocab(self) -> list[str]:
        return [".", "[", "]", ">", "<", *self.letters]  # "." ends an answer (end of text)

    @property
    def eos_token_id(self) -> int:
        return 0

    @property
    def max_new_tokens(self) -> int:
        return self.max_len + 2  # the longest answer: direction, every letter, "."

    def encode(self, text: str) -> list[int]:
        """"[ab]" -> [1, 5, 6, 2]; a character outside the vocabulary raises."""
        ids = {char: i for i, char in enumerate(self.vocab)}
        bad = sorted(set(text) - set(ids))
        if bad:
            raise InvalidConfig(f"{bad} not in the tiny model's vocabulary {''.join(self.vocab)!r}")
        return [ids[char] for char in text]

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] if 0 <= i < len(self.vocab) else "?" for i in ids)

    def is_held_out(self, letters: str) -> bool:
        return zlib.crc32(letters.encode()) % self.held_out_every == 0

    def sample(self, rng: random.Random, held_out: bool, min_len: int | None = None,
               max_len: int | None = None) -> str:
        """Random distinct letters, from the held-out share of all lists or from the rest."""
        low, high = min_len or self.min_len, max_len or self.max_len
        if not self.min_len <= low <= high <= self.max_len:
            raise InvalidConfig(f"lengths must lie in [{self.min_len}, {self.max_len}] (what the "
                                f"model was trained on), got {low}..{high}")
        while True:
            letters = "".join(rng.sample(self.letters, rng.randint(low, high)))
            if self.is_held_out(letters) == held_out:
                return letters

    def prompt(self, letters: str) -> list[int]:
        return self.encode(f"[{letters}]")

    def answers(self, prompt: list[int]) -> list[list[int]]:
        """The right new tokens for a prompt: forwards (what greedy gives), then backwards."""
        letters = self.decode(prompt[1:-1])
        return [self.encode(f">{letters}."), self.encode(f"<{letters[::-1]}.")]

    def answer(self, prompt: list[int]) -> list[int]:
        """The answer greedy decoding gives: ">", the letters in order, "."."""
        return self.answers(prompt)[0]

    def prompts(self, n: int, seed: int = 0, min_len: int | None = None,
                max_len: int | None = None) -> list[list[int]]:
        """``n`` held-out prompts (lists the model never saw), the same for the same seed.

        ``min_len``/``max_len`` pick letters per prompt (default: all trained lengths); with
        ``min_len=16`` a prompt and its answer (18 tokens or more each) span 3+ blocks of 16.
        """
        rng = random.Random(seed)
        return [self.prompt(self.sample(rng, True, min_len, max_len)) for _ in range(n)]

    def correct(self, prompts: list[list[int]], outputs: list[list[int]]) -> list[bool]:
        """Whether each output starts with a right answer (what follows "." is ignored)."""
        return [any(list(out[:len(answer)]) == answer for answer in self.answers(prompt))
                for prompt, out in zip(prompts, outputs)]

    def evaluate(self, generate, prompts: list[list[int]]) -> float:
        """Fraction of prompts answered exactly right (either direction counts).

        ``generate``: a :class:`pagedlab.LLMEngine` (greedy unless told otherwise), or a function
        ``(prompts, max_new_tokens) -> outputs``, new tokens only (e.g.
        ``functools.partial(pl.naive_generate, model)``, or a copy of the engine's path with a
        bug in it).
        """
        if hasattr(generate, "generate"):
            outputs = generate.generate(prompts, max_new_tokens=self.max_new_tokens,
                                        progress=False)
        else:
            outputs = generate(prompts, self.max_new_tokens)
        return sum(self.correct(prompts, outputs)) / max(len(prompts), 1)

    def report(self, prompts: list[list[int]], outputs: list[list[int]]) -> list[str]:
        """One line per prompt: ``prompt -> answer`` and ok or WRONG (answer cut after ".")."""
        lines = []
        for prompt, out, ok in zip(prompts, outputs, self.correct(prompts, outputs)):
            text = self.decode(out)
            text = text[:text.index(".") + 1] if "." in text else text
            lines.append(f"{self.decode(prompt)} -> {text}  {'ok' if ok else 'WRONG'}")
        return lines


def tiny_model(device=None, dtype=None):
    """The shipped tiny Llama (GQA: 4 query heads over 2 K/V heads) and its :class:`CopyTask`.

    Returns ``(model, task)``; ``device``/``dtype`` default to the CPU and float32.
    See notebooks/08_serving_a_model.ipynb.
    """
    import torch

    from .llama import Llama, LlamaConfig

    saved = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model = Llama(LlamaConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device=device, dtype=dtype).eval(), CopyTask(**saved["task"])
