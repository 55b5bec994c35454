"""Simulate serving a workload, step by step, and measure where the KV-cache memory goes.

There is no model: in every step each running sequence gains one token (a prefill computes the
prompt and yields the first token in the same step, as in iteration-level batching). What is
real is the memory management: the paged run goes through the :class:`~pagedlab.Scheduler` and
:class:`~pagedlab.BlockManager` (preemption, copy-on-write and all); the contiguous run
reserves one region per sequence in a :class:`~pagedlab.ContiguousAllocator`, first come first
served, as the paper's Orca baselines did. After every step the pool is split into:

- ``token_states``: slots holding K/V of tokens already in some sequence;
- ``reserved``: slots of a region kept for tokens not generated yet (contiguous only);
- ``internal_fragmentation``: slots that will never hold a token: region minus final length
  (contiguous), the unused tail of each sequence's last block (paged);
- ``external_fragmentation``: slots outside every region that the next request cannot use:
  the buddy blocks' rounding and free blocks too small for the next request (contiguous; 0 when
  paged, where any free block will do);
- the rest is idle (free, and usable).

Each is averaged over the busy steps, while some request still waits for memory (the drain at
the end, when the pool empties because nobody needs it, is left out; see ``SimResult``).

Time: without a ``step_cost`` every step lasts one unit and arrivals are counted in steps. With
a :class:`~pagedlab.sim.latency.StepCost` a step lasts as long as its tokens and K/V reads
make it, the clock is in seconds, and the result also reports time to first token, time per
output token and normalized latency. ``enable_chunked_prefill`` schedules prompts in chunks
(vLLM V1) instead of whole (the paper). See notebooks/03_where_memory_goes.ipynb.
"""
from __future__ import annotations

import argparse
import heapq
import math
import os
import random
import sys
from collections import deque

from ..blocks import BlockManager
from .breakdown import SimResult, Timeline, format_table, idle_steps, summarize
from .contiguous import ContiguousAllocator
from .latency import Latencies, StepCost, mean, percentile
from ..errors import InvalidConfig, OutOfBlocks, check_choice, check_int
from ..scheduler import PREEMPTION_MODES, Scheduler
from ..sequence import Sequence
from .workloads import Request


def _describe(memory) -> str:
    if isinstance(memory, BlockManager):
        return f"paged (block {memory.block_size})"
    return f"Orca ({'Pow2' if memory.policy == 'pow2' else memory.policy.capitalize()})"


def simulate(requests: list[Request], memory: BlockManager | ContiguousAllocator, *, n: int = 1,
             beam_width: int = 1, max_num_seqs: int = 256, preemption: str = "recompute",
             progress: bool = False, max_num_batched_tokens: int = 4096,
             enable_chunked_prefill: bool = False, step_cost: StepCost | None = None,
             seed: int = 0) -> SimResult:
    """Serve ``requests`` with ``memory`` (a fresh BlockManager or ContiguousAllocator).

    ``n`` parallel samples or ``beam_width`` beams per request; ``seed`` drives which beams
    survive. Without ``step_cost`` steps are the time unit; with one, seconds (see the module
    docstring). ``progress`` shows a tqdm bar (never when the environment sets
    PAGEDLAB_PROGRESS=0, as the tests do). See notebooks/03_where_memory_goes.ipynb.
    """
    if not all(isinstance(r, Request) for r in requests):
        raise TypeError("requests must be pagedlab.Request objects, e.g. from "
                        "pl.workloads.sharegpt_like(n, seed)")
    requests = sorted(requests, key=lambda r: r.arrival)
    if len({r.request_id for r in requests}) != len(requests):
        raise InvalidConfig("request ids must be unique")
    for name, value in (("n", n), ("beam_width", beam_width), ("max_num_seqs", max_num_seqs),
                        ("max_num_batched_tokens", max_num_batched_tokens)):
        check_int(name, value, 1)
    if n > 1 and beam_width > 1:
        raise InvalidConfig("choose parallel samples (n) or beam search (beam_width), not both")
    check_choice("preemption", preemption, PREEMPTION_MODES)
    if step_cost is not None and not isinstance(step_cost, StepCost):
        raise TypeError(f"step_cost must be a pagedlab.sim.latency.StepCost or None, "
                        f"got {type(step_cost).__name__}")
    clock = _Clock(step_cost)
    bar = None
    if progress and os.environ.get("PAGEDLAB_PROGRESS", "1") != "0":
        from tqdm.auto import tqdm
        bar = tqdm(total=len(requests), unit="req", desc=_describe(memory))
    try:
        if isinstance(memory, BlockManager):
            if memory.num_used_blocks or memory.sequences:
                raise InvalidConfig("the BlockManager already holds sequences: pass a fresh one")
            sched = Scheduler(memory, max_num_seqs=max_num_seqs, preemption=preemption,
                              max_num_batched_tokens=max_num_batched_tokens,
                              enable_chunked_prefill=enable_chunked_prefill)
            return _simulate_paged(requests, sched, n, beam_width, seed, clock, bar)
        if isinstance(memory, ContiguousAllocator):
            if memory.regions:
                raise InvalidConfig("the ContiguousAllocator already holds regions: pass a fresh one")
            return _simulate_contiguous(requests, memory, max(n, beam_width), max_num_seqs,
                                        max_num_batched_tokens, clock, bar)
        raise TypeError(f"memory must be a BlockManager or a ContiguousAllocator, "
                        f"got {type(memory).__name__}")
    finally:
        if bar is not None:
            bar.close()


class _Clock:
    """The simulator's time: one unit per step, or each step's cost in seconds."""

    def __init__(self, step_cost: StepCost | None):
        self.step_cost, self.now, self.latencies = step_cost, 0.0, Latencies()

    def tick(self, num_batched_tokens: int, num_kv_tokens_read: int, num_decodes: int) -> None:
        """The step just run is over."""
        duration = 1.0 if self.step_cost is None else \
            self.step_cost.seconds(num_batched_tokens, num_kv_tokens_read)
        self.now += duration
        if num_decodes:
            self.latencies.decode_steps.append((duration, num_decodes))

    def summary(self) -> dict:
        lat = self.latencies
        return dict(time_unit="steps" if self.step_cost is None else "s", duration=self.now,
                    mean_ttft=mean(lat.ttft()), p99_ttft=percentile(lat.ttft(), 99),
                    mean_tpot=mean(lat.tpot()), p99_itl=lat.p99_itl(),
                    normalized_latency=mean(lat.normalized()))


def _beam_tokens(group, rng: random.Random) -> list:
    """Which beams survive a step: each of the k new beams picks a parent beam at random."""
    parents = [rng.randrange(len(group.seqs)) for _ in range(group.beam_width)]
    return [list(range(1, parents.count(i) + 1)) for i in range(len(group.seqs))]


def _simulate_paged(requests, sched: Scheduler, n, beam_width, seed, clock: _Clock,
                    bar) -> SimResult:
    bm = sched.block_manager
    size, pool, num_blocks = bm.block_size, bm.num_blocks * bm.block_size, bm.num_blocks
    rng, fan_out, lat = random.Random(seed), max(n, beam_width), clock.latencies
    timeline = Timeline()
    finished = generated = step = j = busy_steps = 0
    next_token_id = 1 << 30   # made-up prompt ids, unique to each request
    while j < len(requests) or sched.has_unfinished():
        while j < len(requests) and requests[j].arrival <= clock.now:
            r = requests[j]
            j += 1
            ids = r.prompt_ids or range(next_token_id, next_token_id + r.prompt_len)
            next_token_id += r.prompt_len
            sched.add(Sequence(r.request_id, ids, arrival=r.arrival), max_new_tokens=r.output_len,
                      n=n, beam_width=beam_width)
            lat.arrival[r.request_id], lat.output_len[r.request_id] = r.arrival, r.output_len
        if not sched.has_unfinished():  # nothing to do until the next arrival
            _wait_for(requests[j], clock, timeline, sched.num_preemptions, paged=True)
            step = len(timeline.batch_size)
            continue
        if sched.waiting or sched.swapped:
            busy_steps = step + 1
        out = sched.schedule()
        if fan_out == 1:
            tokens = [1] * len(out.sampled)
        else:
            tokens = []
            for group in out.groups:
                if group.beam_width > 1:
                    tokens += _beam_tokens(group, rng)
                elif group.can_fork:
                    tokens.append(list(range(1, group.n + 1)))
                else:
                    tokens += [1] * len(group.seqs)
        kv_read = 0 if clock.step_cost is None else \
            sum(seq.num_computed_tokens for seq in out.scheduled)
        update = sched.update(tokens)
        done = update.finished
        clock.tick(out.num_batched_tokens, kv_read, len(out.decodes))
        for group in update.started:
            lat.first_token[group.request_id] = clock.now
        # -- measure the pool after the step --
        tokens_held = waste = 0
        for group in sched.running:
            for seq in group.seqs:
                length = len(seq.token_ids)
                tokens_held += length
                waste += -length % size   # unused tail of the last block (never shared here)
        used = bm.num_used_blocks
        timeline.token_states.append((used * size - waste) / pool)
        timeline.reserved.append(0.0)
        timeline.internal_fragmentation.append(waste / pool)
        timeline.external_fragmentation.append(0.0)
        timeline.usage.append(used / num_blocks)
        timeline.blocks_used.append(used)
        timeline.blocks_unshared.append((tokens_held + waste) // size)
        timeline.batch_size.append(len(out.scheduled))
        timeline.waiting.append(len(sched.waiting) + len(sched.swapped))
        timeline.finished.append(len(done))
        timeline.preemptions.append(sched.num_preemptions)
        for group in done:
            generated += sum(len(seq.token_ids) - seq.prompt_len for seq in group.finished_seqs)
            lat.finish[group.request_id] = clock.now
        finished += len(done)
        if bar is not None and done:
            bar.update(len(done))
        step += 1
    hit_rate = bm.prefix_hit_tokens / bm.prefix_query_tokens if bm.prefix_query_tokens else 0.0
    return summarize(timeline, busy_steps, finished=finished, preemptions=sched.num_preemptions,
                     prefix_hit_rate=hit_rate, memory=_describe(bm), generated_tokens=generated,
                     **clock.summary())


def _wait_for(request: Request, clock: _Clock, timeline: Timeline, preemptions: int,
              paged: bool) -> None:
    """Nothing runs until ``request`` arrives: idle steps, or (with a step cost) idle time."""
    if clock.step_cost is not None:
        clock.now = max(clock.now, request.arrival)
        return
    gap = max(1, math.ceil(request.arrival) - round(clock.now))
    idle_steps(timeline, gap, preemptions, paged=paged)
    clock.now += gap


def _simulate_contiguous(requests, alloc: ContiguousAllocator, fan_out, max_num_seqs,
                         max_num_batched_tokens, clock: _Clock, bar) -> SimResult:
    pool, lat = alloc.num_token_slots, clock.latencies
    timeline = Timeline()
    waiting: deque[Request] = deque()
    ends: list[tuple[int, int, Request]] = []   # heap of (last step, admission order, request)
    tokens_held = num_running = 0               # over running sequences
    finished = generated = step = j = order = busy_steps = 0
    while j < len(requests) or waiting or ends:
        while j < len(requests) and requests[j].arrival <= clock.now:
            waiting.append(requests[j])
            lat.arrival[requests[j].request_id] = requests[j].arrival
            lat.output_len[requests[j].request_id] = requests[j].output_len
            j += 1
        if not waiting and not ends:
            _wait_for(requests[j], clock, timeline, 0, paged=False)
            step = len(timeline.batch_size)
            continue
        if waiting:
            busy_steps = step + 1
        # -- admit first come first served while the head's regions fit --
        prefill_tokens, starting = 0, []
        while waiting and num_running + fan_out <= max_num_seqs:
            r = waiting[0]
            if prefill_tokens and prefill_tokens + r.prompt_len > max_num_batched_tokens:
                break
            keys = [r.request_id * fan_out + i for i in range(fan_out)]
            if alloc.block_size_for(r.prompt_len, r.output_len) * fan_out > pool:
                raise OutOfBlocks(f"request {r.request_id} needs {fan_out} region(s) of "
                                  f"{alloc.block_size_for(r.prompt_len, r.output_len)} slots "
                                  f"(policy={alloc.policy}) but the pool has {pool}: use a "
                                  "bigger pool")
            taken = []
            for key in keys:
                if not alloc.can_allocate(r.prompt_len, r.output_len):
                    break
                alloc.allocate(key, r.prompt_len, r.output_len)
                taken.append(key)
            if len(taken) < fan_out:
                for key in taken:
                    alloc.free(key)
                if not ends:
                    raise OutOfBlocks(f"request {r.request_id}'s {fan_out} regions never fit the "
                                      f"pool of {pool} slots: use a bigger pool")
                break
            waiting.popleft()
            prefill_tokens += r.prompt_len
            starting.append(r.request_id)
            heapq.heappush(ends, (step + r.output_len - 1, order, r))
            order += 1
            tokens_held += fan_out * r.prompt_len
            num_running += fan_out
        # -- every running sequence gains a token; those at their final length leave --
        batch = num_running
        decodes = batch - fan_out * len(starting)
        clock.tick(prefill_tokens + decodes, tokens_held, decodes)
        for request_id in starting:
            lat.first_token[request_id] = clock.now
        tokens_held += batch
        done = 0
        while ends and ends[0][0] <= step:
            _, _, r = heapq.heappop(ends)
            for i in range(fan_out):
                alloc.free(r.request_id * fan_out + i)
            tokens_held -= fan_out * (r.prompt_len + r.output_len)
            num_running -= fan_out
            generated += fan_out * r.output_len
            lat.finish[r.request_id] = clock.now
            done += 1
        # -- measure the pool after the step --
        head = alloc.region_size(waiting[0].prompt_len, waiting[0].output_len) if waiting else None
        timeline.token_states.append(tokens_held / pool)
        timeline.reserved.append((alloc.num_final_slots - tokens_held) / pool)
        timeline.internal_fragmentation.append((alloc.num_reserved_slots - alloc.num_final_slots) / pool)
        timeline.external_fragmentation.append(alloc.external_fragmentation(head) / pool)
        timeline.usage.append(alloc.usage)
        timeline.batch_size.append(batch)
        timeline.waiting.append(len(waiting))
        timeline.finished.append(done)
        timeline.preemptions.append(0)
        finished += done
        if bar is not None and done:
            bar.update(done)
        step += 1
    return summarize(timeline, busy_steps, finished=finished, preemptions=0, prefix_hit_rate=0.0,
                     memory=_describe(alloc), generated_tokens=generated, **clock.summary())


# ---------------------------------------------------------------------- command line
def _memories(args) -> list:
    """The memory managers ``pagedlab simulate --memory`` asked for, over the same pool."""
    kinds = ["max", "pow2", "oracle", "paged"] if args.memory == "all" else [args.memory]
    memories = []
    for kind in kinds:
        if kind == "paged":
            memories.append(BlockManager(args.pool_tokens // args.block_size, args.block_size,
                                         enable_prefix_caching=args.prefix_caching,
                                         watermark=args.watermark))
        else:
            memories.append(ContiguousAllocator(args.pool_tokens, kind, args.max_seq_len))
    return memories


def main(argv: list[str] | None = None) -> int:
    """``pagedlab simulate``: serve a synthetic workload and print where the memory goes."""
    from . import workloads
    parser = argparse.ArgumentParser(
        prog="pagedlab simulate",
        description="Simulate serving a workload and print where the KV-cache memory goes "
                    "(fractions of the pool, averaged over the busy steps).")
    parser.add_argument("--workload", choices=("sharegpt", "alpaca"), default="sharegpt")
    parser.add_argument("--requests", type=int, default=1000, help="number of requests")
    parser.add_argument("--rate", type=float, default=None,
                        help="Poisson arrivals, requests per step (default: all at step 0)")
    parser.add_argument("--memory", choices=("all", "paged", "max", "pow2", "oracle"),
                        default="all", help="memory manager(s) to compare")
    parser.add_argument("--pool-tokens", type=int, default=32 * 2048,
                        help="KV-cache pool size in token slots")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--n", type=int, default=1, help="parallel samples per request")
    parser.add_argument("--beam-width", type=int, default=1)
    parser.add_argument("--preemption", choices=PREEMPTION_MODES, default="recompute")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--prefix-caching", action="store_true")
    parser.add_argument("--watermark", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    make = workloads.sharegpt_like if args.workload == "sharegpt" else workloads.alpaca_like
    try:
        requests = make(args.requests, seed=args.seed, rate=args.rate,
                        max_seq_len=args.max_seq_len)
        results = [simulate(requests, memory, n=args.n, beam_width=args.beam_width,
                            max_num_seqs=args.max_num_seqs, preemption=args.preemption,
                            progress=args.progress, seed=args.seed)
                   for memory in _memories(args)]
    except (InvalidConfig, OutOfBlocks) as error:
        print(f"pagedlab simulate: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    prompt, output = workloads.mean_lengths(requests)
    print(f"{args.requests} {args.workload}-like requests (mean prompt {prompt:.0f}, output "
          f"{output:.0f} tokens), pool of {args.pool_tokens} token slots, n={args.n}, "
          f"beam width {args.beam_width}, preemption by {args.preemption}\n")
    print(format_table(results))
    return 0
