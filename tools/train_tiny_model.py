"""Train the tiny Llama that pagedlab ships (pagedlab/data/tiny_copy.pt): copy a list of letters.

    python tools/train_tiny_model.py            # a few minutes on one CPU core; writes the file
    python tools/train_tiny_model.py --steps 50 --out /tmp/t.pt   # a quick try

The recipe below is the whole story: sizes, vocabulary (from pagedlab.tiny.CopyTask), seed,
steps. Training is deterministic: one thread, seeded data and weights, the same file each run on
the same machine. A quarter of the training answers go backwards ("<"), the rest forwards
(">"); the loss counts only the answer tokens (after "]"). At the end the script prints the
accuracy of greedy answers on held-out lists (never trained on).
"""
from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from pagedlab.llama import Llama, LlamaConfig
from pagedlab.tiny import WEIGHTS, CopyTask

TASK = CopyTask()
CONFIG = LlamaConfig(
    vocab_size=len(TASK.vocab), max_position_embeddings=2 * TASK.max_len + 4,  # prompt + answer
    hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2,  # grouped-query attention, 2 heads per K/V
    rope_theta=10000.0, tie_word_embeddings=True)
RECIPE = dict(seed=0, steps=3000, batch_size=64, lr=3e-3, warmup=100, weight_decay=0.01,
              eval_prompts=500)


def batch_of(rng: random.Random, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, T) and targets (B, T): prompt + answer, padded; -100 = not counted in the loss."""
    rows = []
    for _ in range(batch_size):
        prompt = TASK.prompt(TASK.sample(rng, held_out=False))
        rare = rng.random() < TASK.rare_share  # the answer with the rare separator
        rows.append((prompt, TASK.answers(prompt)[rare]))
    T = max(len(p) + len(a) for p, a in rows) - 1
    idx = torch.zeros(batch_size, T, dtype=torch.long)  # (B, T) padding: "." (masked below)
    targets = torch.full((batch_size, T), -100, dtype=torch.long)  # (B, T)
    for i, (prompt, answer) in enumerate(rows):
        tokens = prompt + answer
        idx[i, :len(tokens) - 1] = torch.tensor(tokens[:-1])
        targets[i, len(prompt) - 1:len(tokens) - 1] = torch.tensor(answer)  # from "]" on
    return idx, targets


@torch.no_grad()
def greedy(model: Llama, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy answers, all prompts of one length at a time (no cache: the model is tiny)."""
    outputs = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_len.setdefault(len(prompt), []).append(i)
    for indices in by_len.values():
        idx = torch.tensor([prompts[i] for i in indices])  # (b, T)
        for _ in range(max_new_tokens):
            next_token = model(idx)[:, -1].argmax(-1, keepdim=True)  # (b, 1)
            idx = torch.cat([idx, next_token], dim=1)
        for row, i in enumerate(indices):
            outputs[i] = idx[row, len(prompts[i]):].tolist()
    return outputs


def train(recipe: dict = RECIPE, log_every: int = 100) -> tuple[Llama, dict]:
    """The trained model and a summary (seconds, final loss, held-out accuracy)."""
    torch.set_num_threads(1)
    torch.manual_seed(recipe["seed"])
    rng = random.Random(recipe["seed"])
    model = Llama(CONFIG)
    with torch.no_grad():  # small init, as GPT-2 and Llama do
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.02)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.98),
                                  weight_decay=recipe["weight_decay"])
    steps, warmup = recipe["steps"], recipe["warmup"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup)
                                                 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    start, loss = time.perf_counter(), torch.tensor(0.0)
    model.train()
    for step in range(steps):
        idx, targets = batch_of(rng, recipe["batch_size"])
        logits = model(idx)  # (B, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f}s",
                  flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    prompts = TASK.prompts(recipe["eval_prompts"], seed=recipe["seed"] + 1)
    accuracy = TASK.evaluate(lambda p, n: greedy(model, p, n), prompts)
    return model, dict(seconds=round(seconds, 1), loss=round(loss.item(), 5), accuracy=accuracy)


def save(model: Llama, summary: dict, recipe: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(config=asdict(CONFIG), task=asdict(TASK), recipe=recipe,
                    summary=summary, state_dict=model.state_dict()), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    recipe = {**RECIPE, "steps": args.steps}
    model, summary = train(recipe)
    print(f"trained in {summary['seconds']} s; held-out accuracy {summary['accuracy']:.1%}")
    save(model, summary, recipe, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
