"""Time to first token and time per output token, chunked prefill on versus off (simulated).

ShareGPT-like requests arrive as a Poisson process; the simulator serves them with the real
scheduler and block manager, and the step-cost model of ``pagedlab.sim.latency`` (the paper's
OPT-13B on an A100, by arithmetic) turns each step into seconds. Chunked prefill (vLLM V1)
spends a budget of ``--budget`` tokens per step, decodes first; without it (the paper's
scheduler) a step prefills whole prompts, up to 2048 tokens. Both runs see the same requests.

    python benchmarks/bench_latency.py [--requests 400] [--rate 2.0] [--budget 512]
"""
from __future__ import annotations

import argparse
import json
import time

import pagedlab as pl
from pagedlab.sim.latency import StepCost


def run(requests, chunked: bool, budget: int, num_blocks: int, block_size: int) -> dict:
    start = time.perf_counter()
    result = pl.simulate(requests, pl.BlockManager(num_blocks, block_size),
                         enable_chunked_prefill=chunked, step_cost=StepCost(),
                         max_num_batched_tokens=budget if chunked else 2048)
    return {"chunked_prefill": chunked, "max_num_batched_tokens": budget if chunked else 2048,
            "mean_ttft_s": round(result.mean_ttft, 3), "p99_ttft_s": round(result.p99_ttft, 3),
            "mean_tpot_ms": round(1000 * result.mean_tpot, 2),
            "p99_itl_ms": round(1000 * result.p99_itl, 1),
            "normalized_latency_ms": round(1000 * result.normalized_latency, 2),
            "steps": result.steps, "preemptions": result.preemptions,
            "simulated_s": round(result.duration, 1),
            "wall_s": round(time.perf_counter() - start, 2)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second")
    parser.add_argument("--budget", type=int, default=512, help="tokens per step, chunked")
    parser.add_argument("--num-blocks", type=int, default=3000,
                        help="KV-cache blocks (3000 x 16 = 48k tokens: a roomy pool, about 38 GB of OPT-13B K/V)")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    requests = pl.workloads.sharegpt_like(args.requests, seed=args.seed, rate=args.rate)
    rows = [run(requests, chunked, args.budget, args.num_blocks, args.block_size)
            for chunked in (False, True)]
    print(f"{args.requests} ShareGPT-like requests at {args.rate} req/s, "
          f"{args.num_blocks} blocks of {args.block_size}")
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)
    return rows


if __name__ == "__main__":
    main()
