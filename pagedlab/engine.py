"""The serving engine: the scheduler, the block manager and a paged KV cache driving a real model.

One :meth:`LLMEngine.step`::

    out = scheduler.schedule()               # the token budget: decodes, then prompt chunks
    kv_cache.copy_blocks / swap_out / swap_in  # the block manager's decisions, done to tensors
    batch = PagedBatch(...)                  # every slot from block_manager.slots_to_write
    logits = model.forward_paged(batch, kv_cache)   # one forward for the whole mixed batch
    tokens = sample(logits)                  # for out.sampled: greedy, or seeded sampling
    scheduler.update(tokens)                 # append (copy-on-write), fork samples, free finished

It is the same :class:`~pagedlab.Scheduler` that drives the simulator in lesson 05; here every
decision lands on real tensors. For a live picture, pass ``on_step``: it gets a
:class:`StepStats` after every step (pool usage, batch, preemptions), and ``engine.block_manager``
shows the blocks themselves. See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import backend as _backend
from .blocks import BlockManager
from .cache import KVCache
from .errors import InvalidConfig, PagedLabError, check_choice
from .paged_batch import PagedBatch
from .sampling import SamplingParams, check_prompts, make_generator, request_seed, sample_batch
from .scheduler import Scheduler
from .sequence import Sequence


@dataclass
class StepStats:
    """What one engine step did: the record ``on_step`` receives (e.g. to redraw a widget)."""

    step: int
    num_prefills: int  # sequences prefilled this step (a whole prompt or a chunk of one)
    num_decodes: int  # sequences that computed one token
    num_batched_tokens: int  # tokens run through the model (within max_num_batched_tokens)
    num_used_blocks: int  # blocks held while the model ran
    num_free_blocks: int
    usage: float  # num_used_blocks / num_blocks, in [0, 1]
    num_preempted: int  # sequences pushed out this step (by recompute or swap)
    num_finished: int  # requests finished this step
    new_tokens: int  # tokens generated this step
    seconds: float  # wall time of the step


@dataclass
class EngineStats:
    """Totals and per-step records since the engine was made (``engine.stats = EngineStats()``
    starts over)."""

    steps: list[StepStats] = field(default_factory=list)
    preemptions: int = 0  # requests preempted (a request pushed out twice counts twice)
    prefix_hit_tokens: int = 0  # prompt tokens found in the prefix cache
    prefix_query_tokens: int = 0  # prompt tokens looked up there
    generated_tokens: int = 0
    seconds: float = 0.0  # wall time spent in step()
    peak_used_blocks: int = 0

    @property
    def pool_usage(self) -> list[float]:
        """Fraction of the pool in use at each step."""
        return [step.usage for step in self.steps]

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hit_tokens / max(self.prefix_query_tokens, 1)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


@dataclass
class RequestOutput:
    """A finished request: its prompt and its ``n`` outputs (new tokens only), sample 0 first."""

    request_id: int
    prompt_token_ids: list[int]
    outputs: list[list[int]]


# What LLMEngine needs of a model (pagedlab.GPT and pagedlab.Llama have all of it).
MODEL_INTERFACE = ("forward_paged", "num_layers", "num_kv_heads", "head_dim", "max_seq_len",
                   "vocab_size", "dtype", "device")
DEFAULT_CHUNKED_BUDGET = 2048  # tokens per step when prompts may be chunked


class LLMEngine:
    """Serve a model (:class:`~pagedlab.GPT` or :class:`~pagedlab.Llama`) with continuous
    batching over a paged KV cache.

    ``num_blocks`` blocks of ``block_size`` tokens hold every layer's K/V (``num_kv_heads``
    heads each); ``preemption`` is "recompute" or "swap". ``enable_chunked_prefill`` (on, as in
    vLLM V1) spreads long prompts over steps of ``max_num_batched_tokens`` tokens (default 2048;
    without chunking, the model's length). ``backend``: None (the Triton kernels on a GPU,
    falling back to torch with a warning where they fail; batched torch on a CPU, where the
    Triton interpreter is too slow to serve), "triton" (insist; on a CPU the interpreter, for
    tests) or "torch". ``eos_token_id`` ends a sequence early (not on the first token of
    ``n > 1`` samples). ``on_step(StepStats)`` runs after every step.
    See notebooks/08_serving_a_model.ipynb.
    """

    def __init__(self, model, num_blocks: int = 512, block_size: int = 16,
                 enable_prefix_caching: bool = False, preemption: str = "recompute",
                 max_num_seqs: int = 256, max_num_batched_tokens: int | None = None,
                 enable_chunked_prefill: bool = True,
                 watermark: float = 0.0, num_cpu_blocks: int | None = None,
                 backend: str | None = None, eos_token_id: int | None = None,
                 on_step: Callable[[StepStats], None] | None = None):
        missing = [name for name in MODEL_INTERFACE if not hasattr(model, name)]
        if not isinstance(model, torch.nn.Module) or missing:
            raise TypeError(f"LLMEngine serves a pagedlab model (pl.GPT or pl.Llama), got "
                            f"{type(model).__name__}: convert a Hugging Face model with "
                            "pl.from_hf(model)")
        if backend is not None:
            check_choice("backend", backend, _backend.BACKENDS)
        self.model = model.eval()
        self.config = model.config
        # Resolved once: batched torch serves on a CPU, the Triton kernels on a GPU. Unless
        # "triton" was insisted on, a kernel that fails on this GPU falls back to torch.
        if backend == "triton":
            _backend.choose("triton", model.device)  # raises here if it cannot run
        on_gpu = model.device.type == "cuda"
        self.backend = backend or ("triton" if on_gpu else "torch")
        self._batch_backend = None if backend is None and on_gpu else self.backend
        self.eos_token_id, self.on_step = eos_token_id, on_step
        self._settings = dict(num_blocks=num_blocks, block_size=block_size,
                              enable_prefix_caching=enable_prefix_caching, watermark=watermark,
                              num_cpu_blocks=num_cpu_blocks)
        if max_num_batched_tokens is None:
            max_num_batched_tokens = max(DEFAULT_CHUNKED_BUDGET if enable_chunked_prefill
                                         else model.max_seq_len, max_num_seqs)
        self._limits = dict(max_num_seqs=max_num_seqs, preemption=preemption,
                            max_num_batched_tokens=max_num_batched_tokens,
                            enable_chunked_prefill=enable_chunked_prefill)
        self._reset()  # BlockManager and Scheduler check the settings
        self.kv_cache = KVCache(num_blocks, block_size, model.num_kv_heads, model.head_dim,
                                num_layers=model.num_layers, dtype=model.dtype,
                                device=model.device, num_cpu_blocks=num_cpu_blocks)
        self.stats = EngineStats()
        self._next_request_id = 0
        self._generate_on_step: Callable[[StepStats], None] | None = None

    def _reset(self) -> None:
        """A fresh block manager and scheduler: every block free, no request queued."""
        self.block_manager = BlockManager(**self._settings)
        # request ids are sequence ids; forked samples get ids far above any request's
        self.scheduler = Scheduler(self.block_manager, first_child_id=1 << 48, **self._limits)
        self._requests: dict[int, tuple[Sequence, SamplingParams, list]] = {}
        self._generator_of: dict[int, torch.Generator | None] = {}  # seq_id -> its sample's RNG

    # ------------------------------------------------------------------ requests
    def add_request(self, prompt_token_ids: list[int], max_new_tokens: int = 16,
                    temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                    n: int = 1) -> int:
        """Queue one prompt (token ids); returns its request id. Bad input raises first."""
        params = SamplingParams(max_new_tokens, temperature, top_k, seed, n)
        self._check_request(prompt_token_ids, params)
        generators = [None if params.greedy else make_generator(seed, i) for i in range(n)]
        request_id = self._next_request_id
        seq = Sequence(request_id, prompt_token_ids)
        self.scheduler.add(seq, max_new_tokens=max_new_tokens, n=n)
        self._next_request_id += 1
        self._requests[request_id] = (seq, params, generators)
        self._generator_of[request_id] = generators[0]
        return request_id

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V one token takes in the cache, all layers (2 x layers x kv heads x
        head dim x bytes per number): grouped-query attention divides it by the group size."""
        cache = self.kv_cache
        return 2 * cache.num_layers * cache.num_kv_heads * cache.head_dim * cache.k.element_size()

    @property
    def pool_tokens(self) -> int:
        """Tokens the whole pool holds: num_blocks x block_size."""
        return self.kv_cache.num_slots

    def _check_request(self, prompt: list[int], params: SamplingParams) -> None:
        """What Scheduler.add would reject, checked first so that generate is all-or-nothing."""
        check_prompts([prompt], self.model, params.max_new_tokens)
        self.scheduler.check_request(Sequence(0, prompt), max_new_tokens=params.max_new_tokens,
                                     n=params.n)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model on the prefills and on the decodes, sample, update.

        Returns the requests that finished in this step. A step that fails (an error, or an
        interrupt) drops every queued request, so the engine is usable again at once.
        """
        start, before = time.perf_counter(), self._counters()
        out = self.scheduler.schedule()
        if not out.scheduled:  # nothing queued, or nothing can run
            return []
        try:
            return self._step(out, start, before)
        except BaseException:
            self._reset()
            raise

    def _step(self, out, start: float, before) -> list[RequestOutput]:
        used = self.block_manager.num_used_blocks
        self.kv_cache.copy_blocks(out.blocks_to_copy)  # copy-on-write first, then the swaps
        self.kv_cache.swap_out(out.blocks_to_swap_out)
        self.kv_cache.swap_in(out.blocks_to_swap_in)
        logits = self.model.forward_paged(self._batch(out), self.kv_cache)  # (sampled, vocab)
        next_tokens, finished = self._sample(out.sampled, logits) if out.sampled else ([], ())
        update = self.scheduler.update(next_tokens, finished)
        for request_id, children in update.forked.items():  # sample i draws from generator i
            for child, generator in zip(children, self._requests[request_id][2][1:]):
                self._generator_of[child.seq_id] = generator
        results = [self._finish(group) for group in update.finished]
        new_tokens = sum(len(t) if isinstance(t, list) else 1 for t in next_tokens)
        self._record(out, before, used, len(results), new_tokens, time.perf_counter() - start)
        return results

    def _batch(self, out) -> PagedBatch:
        """This step's tokens, packed: each scheduled sequence's new positions, their slots from
        the block manager, and which rows' logits to sample from (out.sampled's order)."""
        bm, device = self.block_manager, self.model.device
        input_ids, positions, slots, query_lens, row_of = [], [], [], [], {}
        for seq in out.scheduled:
            end = seq.num_computed_tokens  # this step computes positions start .. end - 1
            start = end - out.num_scheduled_tokens[seq.seq_id]
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            slots.extend(bm.slots_to_write(seq, start, end))
            query_lens.append(end - start)
            row_of[seq.seq_id] = len(input_ids) - 1  # its last new token
        written = [slot for slot in slots if slot >= 0]  # checked once here, not per layer
        if len(set(written)) != len(written) or (written and max(written) >= self.pool_tokens):
            raise PagedLabError("the block manager named a slot twice or outside the pool: a bug, "
                                "please report it")  # pragma: no cover
        context_lens = [seq.num_computed_tokens for seq in out.scheduled]
        max_blocks = max(len(seq.block_table) for seq in out.scheduled)
        tables = [seq.block_table + [-1] * (max_blocks - len(seq.block_table))
                  for seq in out.scheduled]
        return PagedBatch(
            input_ids=torch.tensor(input_ids, device=device),  # (num_tokens,)
            positions=torch.tensor(positions, device=device),  # (num_tokens,)
            slot_mapping=torch.tensor(slots, device=device),  # (num_tokens,)
            block_tables=torch.tensor(tables, dtype=torch.int32, device=device),  # (S, max_blocks)
            context_lens=torch.tensor(context_lens, dtype=torch.int32, device=device),  # (S,)
            query_lens=query_lens, block_size=bm.block_size, backend=self._batch_backend,
            max_context_len=max(context_lens), every_slot=len(written) == len(slots),
            logits_rows=torch.tensor([row_of[seq.seq_id] for seq in out.sampled],
                                     dtype=torch.long, device=device))  # (num_sampled,)

    def _sample(self, sampled: list[Sequence], logits: torch.Tensor):
        """Next token per sampled sequence (a list of n for samples about to fork), and the
        ids of sequences that drew the end-of-text token."""
        groups = [self.scheduler.group_of(seq.seq_id) for seq in sampled]
        params = [self._requests[group.request_id][1] for group in groups]
        rows = sample_batch(logits, params, [self._generator_of[s.seq_id] for s in sampled])
        next_tokens, finished = [], set()
        for i, (seq, group, p) in enumerate(zip(sampled, groups, params)):
            if group.can_fork:  # first token of n samples: one draw per sample, same logits
                others = sample_batch(logits[i:i + 1].expand(p.n - 1, -1), [p] * (p.n - 1),
                                      self._requests[group.request_id][2][1:])
                next_tokens.append([rows[i], *others])
                continue
            next_tokens.append(rows[i])
            if rows[i] == self.eos_token_id:
                finished.add(seq.seq_id)
        return next_tokens, finished

    def _finish(self, group) -> RequestOutput:
        seq = self._requests.pop(group.request_id)[0]
        samples = sorted(group.finished_seqs, key=lambda s: s.seq_id)  # sample 0 is the parent
        for sample in samples:
            self._generator_of.pop(sample.seq_id, None)
        return RequestOutput(group.request_id, seq.token_ids[:seq.prompt_len],
                             [sample.output_ids for sample in samples])

    def _counters(self) -> tuple[int, int, int]:
        bm = self.block_manager
        return self.scheduler.num_preemptions, bm.prefix_hit_tokens, bm.prefix_query_tokens

    def _record(self, out, before, used: int, finished: int, new_tokens: int, seconds: float):
        bm, stats = self.block_manager, self.stats
        preemptions, hits, queries = (now - then for now, then in zip(self._counters(), before))
        stats.preemptions += preemptions
        stats.prefix_hit_tokens += hits
        stats.prefix_query_tokens += queries
        stats.generated_tokens += new_tokens
        stats.seconds += seconds
        stats.peak_used_blocks = max(stats.peak_used_blocks, used, bm.num_used_blocks)
        record = StepStats(len(stats.steps), len(out.prefills), len(out.decodes),
                           out.num_batched_tokens, used, bm.num_blocks - used,
                           used / bm.num_blocks, len(out.preempted), finished, new_tokens, seconds)
        stats.steps.append(record)
        for callback in (self.on_step, self._generate_on_step):
            if callback is not None:
                callback(record)

    # ------------------------------------------------------------------ many prompts
    def generate(self, prompts: list[list[int]], max_new_tokens: int = 16,
                 temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                 n: int = 1, progress: bool | None = None,
                 on_step: Callable[[StepStats], None] | None = None) -> list:
        """Serve all prompts together until every one finishes; the new tokens of each, in order.

        With ``n > 1`` each entry is a list of ``n`` samples. ``seed`` makes sampling
        reproducible (prompt i draws with seed + i, as :func:`pagedlab.naive_generate` does).
        ``progress``: a tqdm bar (default on, unless PAGEDLAB_PROGRESS=0 is set);
        ``on_step(StepStats)`` runs after each step. Bad input raises before anything is queued,
        and at the end (or on an error) every block is free again.
        See notebooks/08_serving_a_model.ipynb.
        """
        if self.has_unfinished_requests():
            raise InvalidConfig("requests queued with add_request are unfinished: call step() "
                                "until has_unfinished_requests() is False, then generate")
        SamplingParams(max_new_tokens, temperature, top_k, seed, n)  # checks them
        check_prompts(prompts, self.model, max_new_tokens)
        params = [SamplingParams(max_new_tokens, temperature, top_k, request_seed(seed, i), n)
                  for i in range(len(prompts))]
        for prompt, p in zip(prompts, params):
            self._check_request(prompt, p)
        if progress is None:
            progress = os.environ.get("PAGEDLAB_PROGRESS", "1") != "0"
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts) * n * max_new_tokens, unit="tok", desc="generate",
                   disable=not progress)
        results: dict[int, RequestOutput] = {}
        self._generate_on_step = on_step
        try:
            ids = [self.add_request(prompt, p.max_new_tokens, p.temperature, p.top_k, p.seed, p.n)
                   for prompt, p in zip(prompts, params)]
            while self.has_unfinished_requests():
                results.update((result.request_id, result) for result in self.step())
                last = self.stats.steps[-1]
                bar.update(last.new_tokens)
                bar.set_postfix(pool=f"{last.usage:.0%}", batch=last.num_decodes, refresh=False)
        except BaseException:
            self._reset()  # an error or an interrupt leaves no request and no block behind
            raise
        finally:
            self._generate_on_step = None
            bar.close()
        return [results[i].outputs[0] if n == 1 else results[i].outputs for i in ids]
