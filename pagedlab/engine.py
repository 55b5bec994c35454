"""The serving engine: the scheduler, the block manager and a paged KV cache driving a real model.

One :meth:`LLMEngine.step`::

    out = scheduler.schedule()             # who runs: prefills, decodes; preemptions
    kv_cache.copy_blocks / swap_out / swap_in   # what the block manager decided, done to tensors
    logits = model.forward_paged(batch)    # prompts (prefill), then one token per sequence (decode)
    tokens = sample(logits)                # greedy, or temperature/top-k with a seed per sample
    scheduler.update(tokens)               # append (copy-on-write), fork n samples, free finished

It is the same :class:`~pagedlab.Scheduler` that drives the simulator in lesson 05: here every
decision lands on real tensors. See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .blocks import BlockManager
from .cache import KVCache
from .errors import InvalidConfig, OutOfBlocks
from .model import GPT, PagedBatch, check_prompts
from .sampling import SamplingParams, make_generator, sample_batch
from .scheduler import Scheduler
from .sequence import Sequence


@dataclass
class StepStats:
    """What one engine step did: the record a live widget draws (``on_step`` receives it)."""

    step: int
    num_prefills: int  # sequences prefilled this step
    num_decodes: int  # sequences that computed one token
    num_batched_tokens: int  # tokens run through the model
    num_used_blocks: int  # blocks held while the model ran
    num_free_blocks: int
    usage: float  # num_used_blocks / num_blocks, in [0, 1]
    num_preempted: int  # sequences pushed out this step (recompute or swap)
    num_finished: int  # requests finished this step
    new_tokens: int  # tokens generated this step
    seconds: float  # wall time of the step


@dataclass
class EngineStats:
    """Running totals and per-step records since the engine started (or ``stats.reset()``)."""

    steps: list[StepStats] = field(default_factory=list)
    preemptions: int = 0  # requests preempted, counted once per preemption
    prefix_hit_tokens: int = 0  # prompt tokens found in the prefix cache
    prefix_query_tokens: int = 0  # prompt tokens looked up in it
    generated_tokens: int = 0
    seconds: float = 0.0  # wall time spent in step()
    peak_used_blocks: int = 0

    @property
    def pool_usage(self) -> list[float]:
        """Fraction of the pool in use at each step."""
        return [step.usage for step in self.steps]

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hit_tokens / self.prefix_query_tokens if self.prefix_query_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0

    def reset(self) -> None:
        self.__init__()


@dataclass
class RequestOutput:
    """A finished request: its prompt and its ``n`` outputs (new tokens only), sample 0 first."""

    request_id: int
    prompt_token_ids: list[int]
    outputs: list[list[int]]


class LLMEngine:
    """Serve a :class:`~pagedlab.GPT` with continuous batching over a paged KV cache.

    ``num_blocks`` blocks of ``block_size`` tokens hold every layer's K/V; ``preemption`` is
    "recompute" or "swap"; ``backend`` picks the store and decode kernels: None (compiled Triton
    on a GPU, batched torch on a CPU, where the Triton interpreter is too slow to serve),
    "triton" or "torch". ``on_step(StepStats)`` is called after every step (e.g. by a widget
    that shows the pool filling). See notebooks/08_serving_a_model.ipynb.
    """

    def __init__(self, model: GPT, num_blocks: int = 512, block_size: int = 16,
                 enable_prefix_caching: bool = False, preemption: str = "recompute",
                 max_num_seqs: int = 256, max_num_batched_tokens: int | None = None,
                 watermark: float = 0.0, num_cpu_blocks: int | None = None,
                 backend: str | None = None, eos_token_id: int | None = None,
                 on_step: Callable[[StepStats], None] | None = None):
        if not isinstance(model, GPT):
            raise TypeError(f"LLMEngine serves a pagedlab.GPT, got {type(model).__name__}: "
                            "convert a Hugging Face model with pagedlab.GPT.from_hf(model)")
        if backend not in (None, "triton", "torch"):
            raise InvalidConfig(f"backend must be None (choose), 'triton' or 'torch', got {backend!r}")
        self.model = model.eval()
        self.config = config = model.config
        self.backend = backend or ("triton" if model.device.type == "cuda" else "torch")
        self.eos_token_id = eos_token_id
        self.on_step = on_step
        if max_num_batched_tokens is None:
            max_num_batched_tokens = max(config.n_positions, max_num_seqs)
        self._settings = dict(num_blocks=num_blocks, block_size=block_size,
                              enable_prefix_caching=enable_prefix_caching, watermark=watermark,
                              num_cpu_blocks=num_cpu_blocks)
        self._scheduler_settings = dict(max_num_seqs=max_num_seqs, preemption=preemption,
                                        max_num_batched_tokens=max_num_batched_tokens)
        self._reset()  # validates the settings (BlockManager, Scheduler raise on bad ones)
        self.kv_cache = KVCache(num_blocks, block_size, config.n_head, config.head_dim,
                                num_layers=config.n_layer, dtype=model.dtype, device=model.device,
                                num_cpu_blocks=self.block_manager._cpu.num_blocks)
        self.stats = EngineStats()
        self._next_request_id = 0
        self._generate_on_step: Callable[[StepStats], None] | None = None

    def _reset(self) -> None:
        """A fresh block manager and scheduler: every block free, no request queued."""
        self.block_manager = BlockManager(**self._settings)
        self.scheduler = Scheduler(self.block_manager, **self._scheduler_settings)
        self._requests: dict[int, tuple[Sequence, SamplingParams, list[torch.Generator | None]]] = {}
        self._generator_of: dict[int, torch.Generator | None] = {}  # seq_id -> its sample's RNG

    # ------------------------------------------------------------------ requests
    def add_request(self, prompt_token_ids: list[int], max_new_tokens: int = 16,
                    temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                    n: int = 1) -> int:
        """Queue one prompt (token ids); returns its request id. Raises before queuing if bad."""
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, seed=seed, n=n)
        self._check_request(prompt_token_ids, params)
        request_id = self._next_request_id
        seq = Sequence(request_id, prompt_token_ids)
        self.scheduler.add(seq, max_new_tokens=max_new_tokens, n=n)
        self._next_request_id += 1
        generators = [None if params.greedy else make_generator(seed, i) for i in range(n)]
        self._requests[request_id] = (seq, params, generators)
        self._generator_of[request_id] = generators[0]
        return request_id

    def _check_request(self, prompt: list[int], params: SamplingParams) -> None:
        """Everything Scheduler.add would reject, checked first so a batch is all-or-nothing."""
        check_prompts([prompt], self.config, params.max_new_tokens)
        bm, limits = self.block_manager, self._scheduler_settings
        if params.n > limits["max_num_seqs"]:
            raise InvalidConfig(f"n={params.n} samples exceed max_num_seqs={limits['max_num_seqs']}")
        if len(prompt) > limits["max_num_batched_tokens"]:
            raise InvalidConfig(f"a prompt of {len(prompt)} tokens exceeds max_num_batched_tokens="
                                f"{limits['max_num_batched_tokens']}: raise it")
        size, n = bm.block_size, params.n
        # Admission: the prompt's blocks plus room for the first token of every sample.
        admit = -(-len(prompt) // size) + n - (1 if len(prompt) % size else 0)
        # At the end: the full prompt blocks, shared, plus each sample's own blocks after them.
        shared = len(prompt) // size
        total = shared + n * (-(-(len(prompt) + params.max_new_tokens) // size) - shared)
        if admit > bm.num_blocks - bm.watermark_blocks or total > bm.num_blocks:
            raise OutOfBlocks(f"a request of {len(prompt)} prompt tokens, max_new_tokens="
                              f"{params.max_new_tokens} and n={n} needs up to {total} blocks of "
                              f"{size} tokens but the pool has {bm.num_blocks} (watermark "
                              f"{bm.watermark_blocks}): raise num_blocks or shorten the request")

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model once on prefills and once on decodes, sample, update.

        Returns the requests that finished in this step.
        """
        start = time.perf_counter()
        bm, before = self.block_manager, self._counters()
        out = self.scheduler.schedule()
        used = bm.num_used_blocks
        self.kv_cache.copy_blocks(out.blocks_to_copy)  # copy-on-write, then swaps, in this order
        self.kv_cache.swap_out(out.blocks_to_swap_out)
        self.kv_cache.swap_in(out.blocks_to_swap_in)
        logits = [self._run(out.prefills, prefill=True)] if out.prefills else []
        if out.decodes:
            logits.append(self._run(out.decodes, prefill=False))
        logits = torch.cat(logits) if logits else None  # (num_scheduled, vocab_size)
        next_tokens, finished_ids, new_tokens = self._sample(out.scheduled, logits)
        forking = [g for g in out.groups if g.can_fork]
        done = self.scheduler.update(next_tokens, finished_ids)
        for group in forking:  # children of n samples: give each its own generator
            seqs = sorted(group.seqs + group.finished_seqs, key=lambda s: s.seq_id)
            generators = self._requests[group.request_id][2]
            for index, seq in enumerate(seqs):
                self._generator_of[seq.seq_id] = generators[index]
        results = [self._finish(group) for group in done]
        self._record(out, before, used, len(results), new_tokens, time.perf_counter() - start)
        return results

    def _run(self, seqs: list[Sequence], prefill: bool) -> torch.Tensor:
        """Logits (len(seqs), vocab_size) of the next token of each sequence."""
        bm, size, device = self.block_manager, self.block_manager.block_size, self.model.device
        input_ids, positions, slots, query_lens = [], [], [], []
        for seq in seqs:
            first = seq.num_cached_tokens if prefill else len(seq) - 1  # first position to compute
            table = seq.block_table
            input_ids.extend(seq.token_ids[first:])
            positions.extend(range(first, len(seq)))
            slots.extend(table[p // size] * size + p % size for p in range(first, len(seq)))
            query_lens.append(len(seq) - first)
        if prefill and bm.enable_prefix_caching:
            # A prompt found entirely in the prefix cache recomputes its last token, in a block
            # it shares. Its K/V equal what that slot holds (same tokens, same positions), and
            # writing them fills the slot if the block was cached before its last token's K/V
            # were computed. Two such tokens in one batch write once (-1: skip the rest).
            seen: set[int] = set()
            for i, slot in enumerate(slots):
                if slot in seen:
                    slots[i] = -1
                seen.add(slot)
        max_blocks = max(len(seq.block_table) for seq in seqs)
        tables = [seq.block_table + [-1] * (max_blocks - len(seq.block_table)) for seq in seqs]
        batch = PagedBatch(
            input_ids=torch.tensor(input_ids, device=device),  # (num_tokens,)
            positions=torch.tensor(positions, device=device),  # (num_tokens,)
            slot_mapping=torch.tensor(slots, device=device),  # (num_tokens,)
            block_tables=torch.tensor(tables, dtype=torch.int32, device=device),  # (S, max_blocks)
            context_lens=torch.tensor([len(seq) for seq in seqs], dtype=torch.int32, device=device),
            query_lens=query_lens, block_size=size, backend=self.backend)
        return self.model.forward_paged(batch, self.kv_cache)  # (S, vocab_size)

    def _sample(self, scheduled: list[Sequence], logits: torch.Tensor | None):
        """Next token(s) per scheduled sequence: a list of n for a request about to fork."""
        if logits is None:
            return [], set(), 0
        params = [self._requests[self.scheduler.group_of(s.seq_id).request_id][1] for s in scheduled]
        rows = sample_batch(logits, params, [self._generator_of[s.seq_id] for s in scheduled])
        next_tokens, finished = [], set()
        for row, (seq, p) in enumerate(zip(scheduled, params)):
            group = self.scheduler.group_of(seq.seq_id)
            if group.can_fork:  # first token of n samples: one draw per sample, same logits
                generators = self._requests[group.request_id][2]
                tokens = [rows[row]] + sample_batch(logits[row:row + 1].expand(p.n - 1, -1),
                                                    [p] * (p.n - 1), generators[1:])
                next_tokens.append(tokens)
            else:
                next_tokens.append(rows[row])
            if self.eos_token_id is not None and rows[row] == self.eos_token_id and not group.can_fork:
                finished.add(seq.seq_id)
        new_tokens = sum(len(t) if isinstance(t, list) else 1 for t in next_tokens)
        return next_tokens, finished, new_tokens

    def _finish(self, group) -> RequestOutput:
        seq, params, _ = self._requests.pop(group.request_id)
        samples = sorted(group.finished_seqs, key=lambda s: s.seq_id)
        for s in samples:
            self._generator_of.pop(s.seq_id, None)
        return RequestOutput(group.request_id, seq.token_ids[:seq.prompt_len],
                             [s.output_ids for s in samples])

    def _counters(self) -> tuple[int, int, int]:
        bm = self.block_manager
        return self.scheduler.num_preemptions, bm.prefix_hit_tokens, bm.prefix_query_tokens

    def _record(self, out, before, used: int, finished: int, new_tokens: int,
                seconds: float) -> None:
        bm, stats = self.block_manager, self.stats
        preemptions, hits, queries = (now - then for now, then in zip(self._counters(), before))
        stats.preemptions += preemptions
        stats.prefix_hit_tokens += hits
        stats.prefix_query_tokens += queries
        stats.generated_tokens += new_tokens
        stats.seconds += seconds
        stats.peak_used_blocks = max(stats.peak_used_blocks, used, bm.num_used_blocks)
        record = StepStats(step=len(stats.steps), num_prefills=len(out.prefills),
                           num_decodes=len(out.decodes), num_batched_tokens=out.num_batched_tokens,
                           num_used_blocks=used, num_free_blocks=bm.num_blocks - used,
                           usage=used / bm.num_blocks, num_preempted=len(out.preempted),
                           num_finished=finished, new_tokens=new_tokens, seconds=seconds)
        stats.steps.append(record)
        for callback in (self.on_step, self._generate_on_step):
            if callback is not None:
                callback(record)

    # ------------------------------------------------------------------ many prompts
    def generate(self, prompts: list[list[int]], max_new_tokens: int = 16,
                 temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                 n: int = 1, progress: bool | None = None,
                 on_step: Callable[[StepStats], None] | None = None) -> list:
        """Serve every prompt together until all finish; the new tokens of each, in prompt order.

        With ``n > 1`` each entry is a list of ``n`` samples. ``seed`` makes sampling
        reproducible (prompt i uses seed + i). ``progress`` shows a tqdm bar (default: on, unless
        the environment sets PAGEDLAB_PROGRESS=0); ``on_step(StepStats)`` runs after each step.
        Bad input raises before anything is queued; afterwards every block is free again.
        See notebooks/08_serving_a_model.ipynb.
        """
        if self.has_unfinished_requests():
            raise InvalidConfig("requests queued with add_request are still unfinished: run "
                                "step() until has_unfinished_requests() is False, then generate")
        check_prompts(prompts, self.config, max_new_tokens)
        params = [SamplingParams(max_new_tokens, temperature, top_k, request_seed(seed, i), n)
                  for i in range(len(prompts))]
        for prompt, p in zip(prompts, params):
            self._check_request(prompt, p)
        if progress is None:
            progress = os.environ.get("PAGEDLAB_PROGRESS", "1") != "0"
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts) * n * max_new_tokens, unit="tok", disable=not progress,
                   desc="generate")
        results: dict[int, RequestOutput] = {}
        self._generate_on_step = on_step
        try:
            ids = [self.add_request(prompt, p.max_new_tokens, p.temperature, p.top_k, p.seed, p.n)
                   for prompt, p in zip(prompts, params)]
            while self.has_unfinished_requests():
                for result in self.step():
                    results[result.request_id] = result
                last = self.stats.steps[-1]
                bar.update(last.new_tokens)
                bar.set_postfix(pool=f"{last.usage:.0%}", running=last.num_decodes, refresh=False)
        except BaseException:
            self._reset()  # an error or an interrupt leaves no request and no block behind
            raise
        finally:
            self._generate_on_step = None
            bar.close()
        return [results[i].outputs[0] if n == 1 else results[i].outputs for i in ids]


def request_seed(seed: int | None, index: int) -> int | None:
    """The seed of the index-th prompt of a call (None stays None: fresh randomness)."""
    return None if seed is None else seed + index
