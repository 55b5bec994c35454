"""Tokens per second on a Llama: pagedlab's LLMEngine versus Hugging Face ``generate``, and the KV
bytes per token of every model family pagedlab serves.

1. A tiny random Llama with grouped-query attention (8 query heads over 2 K/V heads), the same
   weights on both sides: Hugging Face gets the prompts as one left-padded batch with an attention
   mask; the engine gets them as a list and batches them continuously over its paged KV cache
   (chunked prefill on, as vLLM V1 serves). Each side runs once to warm up, then ``--repeats``
   times, taking turns; the best run counts. Greedy tokens are compared prompt by prompt.
2. KV bytes per token of the tiny shipped model and of the published shapes of SmolLM2-135M,
   Qwen2.5-0.5B, Llama-3.1-8B, Mistral-7B (v0.3, no sliding window) and GPT-2: transformers
   configs built here (no download), each model made on PyTorch's ``meta`` device (shapes, no
   weights), converted by ``pl.from_hf`` and asked by an ``LLMEngine``: ``kv_bytes_per_token``.

    python benchmarks/bench_llama.py --threads 1          # CPU, fp32
    python benchmarks/bench_llama.py --json out.json      # also write the figures

See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

import pagedlab as pl

try:
    import transformers
except ImportError as error:
    sys.exit(f"this benchmark compares against transformers ({error}): "
             "pip install 'pagedlab[model]'")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import best_of, hf_generate, make_prompts  # noqa: E402

TINY_LLAMA = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                  initializer_range=0.2, tie_word_embeddings=False, bos_token_id=None,
                  eos_token_id=None, pad_token_id=0)

# Published shapes (each checkpoint's config.json on the Hugging Face hub), as transformers configs.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
FAMILIES = {
    "SmolLM2-135M": (transformers.LlamaConfig, dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        rope_theta=100000.0, tie_word_embeddings=True)),
    "Qwen2.5-0.5B": (transformers.Qwen2Config, dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False)),
    "Llama-3.1-8B": (transformers.LlamaConfig, dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
        rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, tie_word_embeddings=False)),
    "Mistral-7B-v0.3": (transformers.MistralConfig, dict(
        vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
        rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False)),
    "GPT-2 (124M)": (transformers.GPT2Config, dict()),  # transformers' defaults are GPT-2's
}


def tiny_llama(device, dtype) -> transformers.LlamaForCausalLM:
    """A random Llama with GQA; wide weights and random norms keep greedy far from ties."""
    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    with torch.no_grad():
        for param in hf_model.parameters():
            if param.dim() == 1:  # RMSNorm weights (ones) made random too
                param.add_(0.3 * torch.randn_like(param))
    return hf_model.to(device=device, dtype=dtype).eval()


def kv_row(name: str, model, dtype=torch.float16) -> dict:
    """What the engine says one token of this model costs in its KV cache."""
    engine = pl.LLMEngine(model.to(dtype=dtype), num_blocks=1, block_size=16)
    config = model.config
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    return {"model": name, "layers": model.num_layers, "query_heads": heads,
            "kv_heads": model.num_kv_heads, "head_dim": model.head_dim,
            "dtype": str(dtype).replace("torch.", ""),
            "kv_bytes_per_token": engine.kv_bytes_per_token,
            "tokens_per_gib": 2**30 // engine.kv_bytes_per_token}


def kv_bytes_per_token_table() -> list[dict]:
    """KV bytes per token of the shipped tiny model and each family's published shape."""
    tiny, _ = pl.tiny_model()
    rows = [kv_row("pagedlab tiny model", tiny, torch.float32)]
    with torch.device("meta"):  # shapes only: an 8B model costs no memory here
        for name, (config_class, settings) in FAMILIES.items():
            hf_model = transformers.AutoModelForCausalLM.from_config(config_class(**settings))
            rows.append(kv_row(name, pl.from_hf(hf_model)))
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--scale", type=int, default=4,
                        help="divide ShareGPT prompt lengths by this")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512,
                        help="the token budget per step (chunked prefill)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device, dtype = torch.device("cpu"), torch.float32

    hf_model = tiny_llama(device, dtype)
    model = pl.from_hf(hf_model)
    prompts = make_prompts(args.prompts, TINY_LLAMA["vocab_size"], args.scale,
                           TINY_LLAMA["max_position_embeddings"] - args.new_tokens)
    # Room for every sequence at its full length: this compares speed, not preemption.
    blocks = sum(-(-(len(p) + args.new_tokens) // args.block_size) for p in prompts) + 16
    engine = pl.LLMEngine(model, num_blocks=blocks, block_size=args.block_size,
                          max_num_seqs=max(256, args.prompts),
                          max_num_batched_tokens=args.max_num_batched_tokens)
    with torch.no_grad():
        seconds, tokens = best_of({
            "hf": lambda: hf_generate(hf_model, prompts, args.new_tokens, device),
            "engine": lambda: engine.generate(prompts, max_new_tokens=args.new_tokens,
                                              progress=False),
        }, args.repeats, device)
    total = args.prompts * args.new_tokens
    same = sum(a == b for a, b in zip(tokens["engine"], tokens["hf"]))
    figures = {
        "device": platform.processor() or "cpu", "torch_threads": torch.get_num_threads(),
        "model": "random Llama, {num_hidden_layers} layers, {num_attention_heads} query heads "
                 "over {num_key_value_heads} K/V heads, hidden {hidden_size}".format(**TINY_LLAMA),
        "dtype": str(dtype), "prompts": args.prompts, "new_tokens": args.new_tokens,
        "mean_prompt_len": round(sum(map(len, prompts)) / len(prompts), 1),
        "max_prompt_len": max(map(len, prompts)), "block_size": args.block_size,
        "backend": engine.backend, "max_num_batched_tokens": args.max_num_batched_tokens,
        "hf_tokens_per_s": round(total / seconds["hf"], 1),
        "engine_tokens_per_s": round(total / seconds["engine"], 1),
        "speedup": round(seconds["hf"] / seconds["engine"], 2),
        "same_tokens": f"{same}/{args.prompts}",
        "engine_kv_bytes_per_token": engine.kv_bytes_per_token,
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")

    rows = kv_bytes_per_token_table()
    print(f"\n{'KV cache per token':<22}{'layers':>7}{'q heads':>8}{'kv heads':>9}{'head dim':>9}"
          f"{'dtype':>9}{'bytes/token':>13}{'tokens/GiB':>12}")
    for row in rows:
        print(f"{row['model']:<22}{row['layers']:>7}{row['query_heads']:>8}{row['kv_heads']:>9}"
              f"{row['head_dim']:>9}{row['dtype']:>9}{row['kv_bytes_per_token']:>13,}"
              f"{row['tokens_per_gib']:>12,}")
    figures["kv_bytes_per_token"] = rows
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)
    if same != args.prompts:
        sys.exit(f"the engine and transformers disagree on {args.prompts - same} prompts (fp32)")
    return figures


if __name__ == "__main__":
    main()
