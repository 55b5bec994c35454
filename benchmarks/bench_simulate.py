"""Benchmark: 10,000 ShareGPT-like requests through the paged serving simulation.

The pool holds about 100 requests at their mean final length (prompt 161 + output 338 tokens),
block size 16; every request arrives at step 0. Target: under 10 s on one core.

    python benchmarks/bench_simulate.py [--requests 10000] [--repeat 3] [--target 10]
"""
from __future__ import annotations

import argparse
import math
import time

import pagedlab as pl


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=100, help="requests the pool holds")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--target", type=float, default=10.0, help="seconds; exit 1 above it")
    args = parser.parse_args()

    requests = pl.workloads.sharegpt_like(args.requests, seed=0)
    prompt, output = pl.workloads.mean_lengths(requests)
    num_blocks = math.ceil(args.concurrent * (prompt + output) / args.block_size)
    best = math.inf
    for _ in range(args.repeat):
        bm = pl.BlockManager(num_blocks, args.block_size)
        start = time.perf_counter()
        result = pl.simulate(requests, bm)
        best = min(best, time.perf_counter() - start)
    print(f"{args.requests} requests, {num_blocks} blocks of {args.block_size}: "
          f"{best:.2f} s ({result.steps} steps, {result.generated_tokens / best / 1e6:.2f} M "
          f"tokens/s simulated)")
    print(f"token states {result.token_states:.1%}, internal fragmentation "
          f"{result.internal_fragmentation:.1%}, mean batch {result.mean_batch_size:.1f}, "
          f"preemptions {result.preemptions}, finished {result.finished}")
    verdict = "within" if best <= args.target else "OVER"
    print(f"{verdict} the {args.target:g} s target")
    return 0 if best <= args.target else 1


if __name__ == "__main__":
    raise SystemExit(main())
