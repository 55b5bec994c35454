"""Token appends per second through the BlockManager, on a replayed serving trace.

The trace keeps about 64 sequences alive: every step appends one token to each of them; a
sequence that reaches its length is freed and a new one allocated (prompts share a system
prompt, so prefix caching finds hits); one new sequence in eight is forked into two samples.
The trace is generated first and only its replay is timed.

    python benchmarks/bench_blocks.py [--appends 2000000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import random
import time

import pagedlab as pl

SYSTEM_PROMPT = list(range(1000, 1064))  # 4 full blocks shared by every prompt


def make_trace(total_appends: int, seed: int = 0, live: int = 64):
    """A list of ("alloc", id, tokens) / ("fork", parent, child) / ("append", ids) / ("free", id)."""
    rng = random.Random(seed)
    ops, remaining, next_id, appends = [], {}, 0, 0

    def admit():
        nonlocal next_id
        next_id += 1
        prompt = SYSTEM_PROMPT + [rng.randrange(50000) for _ in range(rng.randint(1, 200))]
        ops.append(("alloc", next_id, prompt))
        remaining[next_id] = rng.randint(16, 512)
        if rng.random() < 0.125:
            parent = next_id
            next_id += 1
            ops.append(("fork", parent, next_id))
            remaining[next_id] = rng.randint(16, 512)

    while len(remaining) < live:
        admit()
    while appends < total_appends:
        ids = list(remaining)
        ops.append(("append", ids, [rng.randrange(50000) for _ in ids]))
        appends += len(ids)
        for seq_id in ids:
            remaining[seq_id] -= 1
            if remaining[seq_id] == 0:
                del remaining[seq_id]
                ops.append(("free", seq_id))
        while len(remaining) < live:
            admit()
    return ops, appends


def replay(ops, caching: bool) -> float:
    bm = pl.BlockManager(num_blocks=8192, block_size=16, enable_prefix_caching=caching)
    seqs = {}
    append = bm.append_token
    start = time.perf_counter()
    for op in ops:
        kind = op[0]
        if kind == "append":
            for seq_id, token in zip(op[1], op[2]):
                append(seqs[seq_id], token)
        elif kind == "alloc":
            seq = pl.Sequence(op[1], op[2])
            bm.allocate(seq)
            seqs[op[1]] = seq
        elif kind == "fork":
            seqs[op[2]] = bm.fork(seqs[op[1]], op[2])
        else:
            bm.free(seqs.pop(op[1]))
    elapsed = time.perf_counter() - start
    assert bm.num_used_blocks == sum(1 for _ in set(b for s in seqs.values() for b in s.block_table))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ops, appends = make_trace(args.appends)
    print(f"trace: {appends:,} appends, {sum(o[0] == 'alloc' for o in ops):,} allocations, "
          f"{sum(o[0] == 'fork' for o in ops):,} forks")
    for caching in (False, True):
        best = min(replay(ops, caching) for _ in range(args.repeat))
        print(f"prefix caching {'on ' if caching else 'off'}: {appends / best / 1e6:.2f} M appends/s "
              f"({best:.2f} s, best of {args.repeat})")


if __name__ == "__main__":
    main()
