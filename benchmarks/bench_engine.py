"""Tokens per second: pagedlab's LLMEngine versus Hugging Face ``generate`` on the same prompts.

64 prompts of mixed lengths (ShareGPT-like lengths, scaled down), 64 new tokens each, greedy.
Hugging Face gets the prompts as one batch, left-padded with an attention mask; the engine gets
them as a list and batches them continuously over its paged KV cache, with chunked prefill on
(a token budget of ``--max-num-batched-tokens`` per step, as vLLM V1 serves) and, side by side
in the same run, with it off (whole prompts, the paper's scheduler). Both use the same randomly
initialised GPT-2 weights (no download). Each side runs once to warm up, then ``--repeats`` times,
taking turns; the best run counts (the CPU here is shared, so the best is the least disturbed).

    python benchmarks/bench_engine.py --cpu        # CPU, a small GPT-2 (fp32)
    python benchmarks/bench_engine.py --gpu        # CUDA, the real GPT-2 config (124M, fp16)
    python benchmarks/bench_engine.py --json out.json   # auto: --gpu if there is a GPU

On a busy shared CPU add ``--threads 1``: with two threads, one stalled core stalls both.

The --gpu mode is what ``make gpu-check`` runs. It reports how many prompts got the same tokens
from both (fp16 can flip a near-tie, so exact equality is only required in fp32 on the CPU).
See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

import pagedlab as pl

try:
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError as error:
    sys.exit(f"this benchmark compares against transformers ({error}): "
             "pip install 'pagedlab[model]'")

SIZES = {  # name: (n_layer, n_head, n_embd, vocab_size)
    "tiny": (2, 4, 64, 512),
    "small": (4, 4, 256, 4096),
    "gpt2": (12, 12, 768, 50257),
}


def make_prompts(num_prompts: int, vocab_size: int, scale: int, max_len: int, seed: int = 0):
    """Token ids with ShareGPT-like lengths divided by ``scale`` (at least 1, at most max_len)."""
    requests = pl.workloads.sharegpt_like(num_prompts, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    lengths = [min(max(1, r.prompt_len // scale), max_len) for r in requests]
    return [torch.randint(0, vocab_size, (n,), generator=generator).tolist() for n in lengths]


def hf_generate(hf_model, prompts, max_new_tokens: int, device) -> list[list[int]]:
    """One padded batch through transformers' generate (left padding, attention mask)."""
    longest = max(map(len, prompts))
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = torch.tensor(prompt)
        mask[row, longest - len(prompt):] = 1
    out = hf_model.generate(ids.to(device), attention_mask=mask.to(device), do_sample=False,
                            max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                            pad_token_id=0)
    return out[:, longest:].tolist()


def best_of(runs: dict, repeats: int, device) -> tuple[dict, dict]:
    """Best wall time of each function over ``repeats`` rounds, taking turns so that a busy
    moment on a shared machine hurts every side alike; plus each one's result."""
    results = {name: fn() for name, fn in runs.items()}  # warm-up, and the tokens we compare
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--gpu", action="store_true", help="CUDA, GPT-2 config, fp16")
    where.add_argument("--cpu", action="store_true", help="CPU, small config, fp32")
    parser.add_argument("--size", choices=SIZES, help="model size (default: small; gpt2 on GPU)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--scale", type=int, default=4,
                        help="divide ShareGPT prompt lengths by this")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048,
                        help="the token budget per step with chunked prefill (the engine's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.gpu = args.gpu or (not args.cpu and torch.cuda.is_available())
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA GPU; run without --gpu for the CPU benchmark")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = torch.float16 if args.gpu else torch.float32
    size = args.size or ("gpt2" if args.gpu else "small")
    n_layer, n_head, n_embd, vocab = SIZES[size]

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf_model = GPT2LMHeadModel(config).to(device=device, dtype=dtype).eval()
    model = pl.GPT.from_hf(hf_model)
    prompts = make_prompts(args.prompts, vocab, args.scale, 1024 - args.new_tokens)
    # Room for every sequence at its full length: this compares speed, not preemption.
    blocks = sum(-(-(len(p) + args.new_tokens) // args.block_size) for p in prompts) + 16
    engine = pl.LLMEngine(model, num_blocks=blocks, block_size=args.block_size,
                          max_num_seqs=max(256, args.prompts),
                          max_num_batched_tokens=args.max_num_batched_tokens)
    whole = pl.LLMEngine(model, num_blocks=blocks, block_size=args.block_size,
                         max_num_seqs=max(256, args.prompts), enable_chunked_prefill=False,
                         max_num_batched_tokens=max(8192, args.prompts))

    with torch.no_grad():
        seconds, tokens = best_of({
            "hf": lambda: hf_generate(hf_model, prompts, args.new_tokens, device),
            "engine": lambda: engine.generate(prompts, max_new_tokens=args.new_tokens,
                                              progress=False),
            "engine_whole_prompts": lambda: whole.generate(prompts, max_new_tokens=args.new_tokens,
                                                           progress=False),
        }, args.repeats, device)
    hf_seconds, engine_seconds = seconds["hf"], seconds["engine"]
    hf_tokens, engine_tokens = tokens["hf"], tokens["engine"]
    total = args.prompts * args.new_tokens
    same = sum(a == b for a, b in zip(engine_tokens, hf_tokens))
    same_whole = sum(a == b for a, b in zip(tokens["engine_whole_prompts"], hf_tokens))
    figures = {
        "device": torch.cuda.get_device_name() if args.gpu else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(), "model": size, "dtype": str(dtype),
        "prompts": args.prompts, "new_tokens": args.new_tokens,
        "mean_prompt_len": sum(map(len, prompts)) / len(prompts),
        "max_prompt_len": max(map(len, prompts)), "block_size": args.block_size,
        "backend": engine.backend,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "hf_tokens_per_s": round(total / hf_seconds, 1),
        "engine_tokens_per_s": round(total / engine_seconds, 1),
        "speedup": round(hf_seconds / engine_seconds, 2),
        "same_tokens": f"{same}/{args.prompts}",
        "engine_whole_prompts_tokens_per_s": round(total / seconds["engine_whole_prompts"], 1),
        "speedup_whole_prompts": round(hf_seconds / seconds["engine_whole_prompts"], 2),
        "same_tokens_whole_prompts": f"{same_whole}/{args.prompts}",
        "engine_steps": len(engine.stats.steps) // (args.repeats + 1),
        "engine_peak_blocks": engine.stats.peak_used_blocks, "engine_num_blocks": blocks,
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)
    if not args.gpu and (same != args.prompts or same_whole != args.prompts):
        sys.exit(f"the engine and transformers disagree on {args.prompts - min(same, same_whole)}"
                 " prompts (fp32)")
    return figures


if __name__ == "__main__":
    main()
