"""The scheduler: who runs this step, who waits, and who is pushed out when blocks run out.

Iteration-level (continuous) batching under a token budget, ``max_num_batched_tokens`` per
step, first come first served:

1. **running** requests that are decoding each get one token; when the pool cannot hold them
   all, the most recently arrived request is *preempted*, by ``recompute`` (blocks freed, back
   to the waiting queue, its tokens computed again later) or by ``swap`` (blocks moved to the
   CPU pool until there is room again);
2. **swapped** requests come back when they fit (never in a step that preempted);
3. **prefills** take what is left of the budget, in arrival order: first requests part-way
   through their prompt, then waiting ones, keeping the watermark free so running requests can
   grow. Prefix-cache hits shorten a prefill and never count against the budget.

Without chunked prefill (the paper's scheduler, lessons 03-05) a prompt is prefilled whole or
waits. With ``enable_chunked_prefill`` (vLLM V1's default) each prefill takes
``min(prompt tokens left, budget left)``: a long prompt is spread over several steps while the
decodes keep running, and samples its first token after its last chunk.

A request is a :class:`~pagedlab.sequence_group.SequenceGroup`: one sequence, ``n`` parallel
samples or ``beam_width`` beams. One step, as the simulator and the engine run it::

    out = scheduler.schedule()
    # copy out.blocks_to_copy, then swap out.blocks_to_swap_out, then out.blocks_to_swap_in;
    # run the model on out.num_scheduled_tokens[seq.seq_id] new tokens of each out.scheduled seq;
    # sample a next token for each sequence of out.sampled
    result = scheduler.update(next_tokens)   # result.finished, result.forked

The prompt part of a step, how the budget left after the decodes is spent, is in
``prefill.py``; the step's data classes are in ``scheduler_output.py``.
See notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

import itertools
from collections import deque

from .blocks import BlockManager
from .errors import InvalidConfig, OutOfBlocks, check_choice, check_int
from .prefill import PrefillScheduling
from .scheduler_output import SchedulerOutput, StepPlan, UpdateOutput
from .sequence import Sequence, SequenceStatus
from .sequence_group import SequenceGroup, is_token

__all__ = ["Scheduler", "SchedulerOutput", "UpdateOutput", "SequenceGroup", "PREEMPTION_MODES"]

PREEMPTION_MODES = ("recompute", "swap")


class Scheduler(PrefillScheduling):
    """Continuous batching over a :class:`~pagedlab.BlockManager`, first come first served.

    ``max_num_seqs`` caps the sequences in a batch; ``max_num_batched_tokens`` the tokens
    computed in one step; ``preemption`` is ``"recompute"`` or ``"swap"``;
    ``enable_chunked_prefill`` lets prompts be prefilled in budget-sized chunks. With chunked
    prefill the budget may be below ``max_num_seqs``: then at most ``max_num_batched_tokens``
    sequences run at once, so every running decode still gets its token each step. Forked
    sequences get ids from ``first_child_id`` up. See notebooks/05_scheduling.ipynb.
    """

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 4096, preemption: str = "recompute",
                 enable_chunked_prefill: bool = False, first_child_id: int = 1_000_000):
        if not isinstance(block_manager, BlockManager):
            raise TypeError(f"Scheduler needs a pagedlab.BlockManager, got {type(block_manager).__name__}")
        check_int("max_num_seqs", max_num_seqs, 1)
        check_int("max_num_batched_tokens", max_num_batched_tokens, 1)
        check_choice("preemption", preemption, PREEMPTION_MODES)
        if max_num_batched_tokens < max_num_seqs and not enable_chunked_prefill:
            raise InvalidConfig(f"max_num_batched_tokens={max_num_batched_tokens} is below "
                                f"max_num_seqs={max_num_seqs}: a full batch of decodes would not "
                                "fit; raise it (or enable_chunked_prefill=True, which then runs "
                                "at most max_num_batched_tokens sequences at once)")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.preemption = preemption
        self.enable_chunked_prefill = bool(enable_chunked_prefill)
        self.max_running_seqs = min(max_num_seqs, max_num_batched_tokens)
        self.first_child_id = first_child_id
        self.waiting: deque[SequenceGroup] = deque()
        self.running: list[SequenceGroup] = []
        self.swapped: deque[SequenceGroup] = deque()
        self.num_preemptions = 0        # requests preempted, counted once per preemption
        self._groups: dict[int, SequenceGroup] = {}   # seq_id of every live sequence -> request
        self._order = itertools.count()
        self._child_ids = itertools.count(first_child_id)
        self._pending_copies: list[tuple[int, int]] = []
        self._last: SchedulerOutput | None = None     # scheduled, waiting for update()

    # ------------------------------------------------------------------ queue
    def add(self, seq: Sequence, *, max_new_tokens: int | None = None, n: int = 1,
            beam_width: int = 1) -> SequenceGroup:
        """Queue a new request (a prompt in ``seq``); returns its group.

        ``n`` parallel samples or ``beam_width`` beams (not both); the request finishes after
        ``max_new_tokens`` tokens per sequence, or when ``update`` is told so.
        """
        if not isinstance(seq, Sequence):
            raise TypeError(f"add expects a pagedlab.Sequence, got {type(seq).__name__}")
        if seq.seq_id in self._groups or seq.block_table or seq.status != SequenceStatus.WAITING:
            raise InvalidConfig(f"sequence {seq.seq_id} is already queued or holds blocks: "
                                "add a fresh Sequence with an unused seq_id")
        if isinstance(seq.seq_id, int) and seq.seq_id >= self.first_child_id:
            raise InvalidConfig(f"seq_id {seq.seq_id} is reserved for forked sequences (ids from "
                                f"first_child_id={self.first_child_id} up): use a smaller id")
        group = self.check_request(seq, max_new_tokens=max_new_tokens, n=n,
                                   beam_width=beam_width)
        group.order = next(self._order)
        self._groups[seq.seq_id] = group
        self.waiting.append(group)
        return group

    def check_request(self, seq: Sequence, *, max_new_tokens: int | None = None, n: int = 1,
                      beam_width: int = 1) -> SequenceGroup:
        """The group ``add`` would queue for this prompt, or the error it would raise for a
        request that can never run here; changes nothing."""
        if not seq.token_ids:
            raise InvalidConfig(f"sequence {seq.seq_id} has no tokens: a prompt needs at least one")
        group = SequenceGroup(seq.seq_id, [seq], n=n, beam_width=beam_width,
                              max_new_tokens=max_new_tokens)
        if group.fan_out > self.max_running_seqs:
            raise InvalidConfig(f"request {seq.seq_id} runs {group.fan_out} sequences but at "
                                f"most {self.max_running_seqs} run at once (max_num_seqs="
                                f"{self.max_num_seqs}, max_num_batched_tokens="
                                f"{self.max_num_batched_tokens}): raise them")
        # Without chunks a request preempted by recompute is prefilled whole again, prompt and
        # outputs: all of it must fit one step's budget (vLLM V0 asked for a budget of at least
        # the model's length).
        longest = len(seq.token_ids) + (max_new_tokens or 0)
        if longest > self.max_num_batched_tokens and not self.enable_chunked_prefill:
            raise InvalidConfig(f"a prompt of {len(seq.token_ids)} tokens with max_new_tokens="
                                f"{max_new_tokens} may need {longest} tokens in one step, over "
                                f"max_num_batched_tokens={self.max_num_batched_tokens}: raise it, "
                                "or enable_chunked_prefill=True to prefill in chunks")
        self._check_fits(group, self._blocks_to_admit(group, cache_hits=False))
        if max_new_tokens is not None:
            self._check_fits(group, group.blocks_at_end(self.block_manager.block_size), grow=True)
        return group

    def has_unfinished(self) -> bool:
        """Whether any request is still waiting, running or swapped out."""
        return bool(self.waiting or self.running or self.swapped)

    def group_of(self, seq_id: int) -> SequenceGroup:
        """The request a live sequence belongs to."""
        return self._groups[seq_id]

    # ------------------------------------------------------------------ blocks
    def _blocks_to_grow(self, group: SequenceGroup) -> int:
        """Most blocks the group's next token can take (net of the beams it drops).

        A sequence whose last block is full needs a new one. (A partly filled last block is
        never shared between steps: copy-on-write gave each writer its own in ``update``.) A
        fork needs a copy of its parent's partly filled last block, but each dropped beam first
        frees its own last block, so forking only adds room for the sequences the group may
        grow by.
        """
        size = self.block_manager.block_size
        need = sum(1 for seq in group.seqs if len(seq.token_ids) % size == 0)
        return need + (group.fan_out - len(group.seqs) if group.can_fork else 0)

    def _decode_need(self, group: SequenceGroup) -> int:
        """Blocks a decoding group takes this step: its last token's block if a prefill stopped
        one token short of a block boundary, then room for the token it samples."""
        size = self.block_manager.block_size
        missing = sum(1 for seq in group.seqs if len(seq.block_table) * size < len(seq.token_ids))
        return missing + self._blocks_to_grow(group)

    def _blocks_to_admit(self, group: SequenceGroup, cache_hits: bool = True,
                         num_tokens: list[int] | None = None) -> int:
        """Free blocks a waiting group needs for its first ``num_tokens`` positions (default:
        all) and, when that completes its prompt, to grow once.

        With ``cache_hits`` prefix-cache hits on live blocks are not counted (they are shared, not
        taken); without, the answer is what the group needs even if the cache were empty.
        """
        bm, size = self.block_manager, self.block_manager.block_size
        if num_tokens is None:  # the whole prompt (checked every step while requests wait)
            needed = bm.blocks_to_allocate if cache_hits else bm.blocks_needed
            return sum(needed(seq) for seq in group.seqs) + self._blocks_to_grow(group)
        if cache_hits and bm.enable_prefix_caching:
            blocks = sum(bm.blocks_to_allocate(seq, n) for seq, n in zip(group.seqs, num_tokens))
        else:
            blocks = sum(-(-n // size) for n in num_tokens)
        completes = all(n == len(seq.token_ids) for seq, n in zip(group.seqs, num_tokens))
        return blocks + (self._blocks_to_grow(group) if completes else 0)

    def _check_fits(self, group: SequenceGroup, blocks: int, grow: bool = False) -> None:
        """Raise if the request needs more blocks than the pool could ever give it."""
        bm = self.block_manager
        limit = bm.num_blocks if grow else bm.num_blocks - bm.watermark_blocks
        if blocks > limit:
            raise OutOfBlocks(
                f"request {group.request_id} needs {blocks} blocks (block_size={bm.block_size}) "
                f"but the pool can never give it more than {limit} ({bm.num_blocks} blocks, "
                f"watermark {bm.watermark_blocks}): use more blocks, fewer sequences per request "
                "or shorter requests")

    def _insert(self, queue: deque, group: SequenceGroup) -> None:
        """Put a preempted group back in first-come-first-served order (near the front)."""
        i = 0
        while i < len(queue) and queue[i].order < group.order:
            i += 1
        queue.insert(i, group)

    def _preempt(self, group: SequenceGroup, out: SchedulerOutput) -> None:
        bm = self.block_manager
        self.num_preemptions += 1
        out.preempted.extend(group.seqs)
        # Recomputing a request of several sequences would lose the blocks they share, so
        # (as in vLLM V0) such a request is swapped in both modes while the CPU pool has room.
        if (self.preemption == "swap" or len(group.seqs) > 1) and bm.can_swap_out(group.seqs):
            out.blocks_to_swap_out.extend(bm.swap_out(group.seqs))
            out.swapped_out.extend(group.seqs)
            for seq in group.seqs:
                seq.status = SequenceStatus.SWAPPED
            self._insert(self.swapped, group)
            return
        if len(group.seqs) > 1 and self._blocks_to_admit(group, cache_hits=False) > \
                bm.num_blocks - bm.watermark_blocks:
            raise OutOfBlocks(
                f"request {group.request_id} runs {len(group.seqs)} sequences that share blocks and "
                f"must be preempted, but the CPU pool has no room to swap them and recomputed "
                f"apart they would never fit: raise num_cpu_blocks (now {bm.num_cpu_blocks})")
        for seq in group.seqs:  # recompute (also when the CPU pool is full)
            bm.free(seq)
            seq.status = SequenceStatus.WAITING
            seq.num_computed_tokens = 0  # nothing of it is in the cache any more
        self._insert(self.waiting, group)

    # ------------------------------------------------------------------ schedule
    def schedule(self) -> SchedulerOutput:
        """Build this step's batch: decodes, then swap-ins, then prefills (chunks) in the budget.

        Raises OutOfBlocks (nothing changed) when the next request could never fit the pool.
        """
        if self._last is not None:
            raise InvalidConfig("the last step is not finished: call update() with its tokens "
                                "before scheduling again")
        bm = self.block_manager
        if self.swapped:  # hopeless heads fail before anything moves
            head = self.swapped[0]
            self._check_fits(head, head.num_distinct_blocks() + self._blocks_to_grow(head))
        if self.waiting:
            self._check_fits(self.waiting[0], self._blocks_to_admit(self.waiting[0], cache_hits=False))
        out = SchedulerOutput(blocks_to_copy=self._pending_copies)
        plan = self._schedule_running(out)
        self._pending_copies = []  # only now: _schedule_running may still raise
        if not out.preempted:  # a step that preempted admits nobody: the pool is short
            self._schedule_swapped(out, plan)
        decoding, decodes = plan.decoding, out.decodes
        for group in decoding:
            decodes.extend(group.seqs)
        for seq in plan.short:  # a prefill that stopped one token short of a block boundary
            bm.extend(seq, len(seq.token_ids))  # reserved above by _decode_need
        out.num_batched_tokens = len(decodes)
        completing = self._schedule_partial_prefills(out, plan)
        admitted = [] if out.preempted or self.swapped else \
            self._schedule_waiting(out, plan, completing)
        out.scheduled = out.prefills + out.decodes
        out.groups = completing + decoding
        out.sampled = [seq for group in completing for seq in group.seqs] + decodes
        kept = plan.kept
        if admitted and kept and admitted[0].order < kept[-1].order:
            self.running = sorted(kept + admitted, key=lambda g: g.order)  # a recomputed one
        else:
            self.running = kept + admitted
        if out.scheduled:
            self._last = out
        elif self.waiting or self.swapped:  # nothing runs and nothing can: never loop forever
            self._pending_copies = out.blocks_to_copy
            raise OutOfBlocks("no request can be scheduled although the pool is empty: "
                              "check max_num_seqs and max_num_batched_tokens against the requests")
        return out

    def _schedule_running(self, out: SchedulerOutput) -> StepPlan:
        """Room for every decoding request's next token, oldest first; preempt the newest.

        Requests part-way through their prompt are kept (their next chunk comes later, from the
        budget that is left) but may be preempted like any other.
        """
        bm, queue, plan = self.block_manager, self.running, StepPlan()
        kept, reserved, extra_seqs = [], 0, 0  # locals: this loop is hot
        lo, hi = 0, len(queue)
        size, free = bm.block_size, bm.num_free_blocks
        while lo < hi:
            group = queue[lo]
            lo += 1
            prefilling = False
            if group.fan_out == 1:  # the common case, kept lean: a new block when the last is full
                seq = group.seqs[0]
                length = len(seq.token_ids)
                filled = length % size
                # decoding, with a block for its newest token (a prefill that stopped one token
                # short of a block boundary has none yet)
                if seq.num_computed_tokens == length - 1 and len(seq.block_table) * size >= length:
                    need = 0 if filled else 1
                    if need <= free - reserved:  # it fits: keep it and go on
                        kept.append(group)
                        reserved += need
                        seq.num_computed_tokens = length  # its last token is computed now
                        continue
                elif seq.num_computed_tokens < length - 1:
                    prefilling, need = True, 0  # its next chunk comes from the budget left
                else:
                    need = self._decode_need(group)  # a prefill that stopped one token short
            else:
                prefilling = group.is_prefilling
                need = 0 if prefilling else self._decode_need(group)
            if need > free - reserved:  # could it grow with the whole pool to itself?
                self._check_fits(group, group.num_distinct_blocks() + need, grow=True)
                while need > free - reserved:
                    if lo < hi:
                        hi -= 1
                        self._preempt(queue[hi], out)
                    elif kept:
                        self._preempt(group, out)
                        group = None
                        break
                    else:  # alone, yet short of blocks: only a bug could cause it
                        raise OutOfBlocks(f"request {group.request_id} cannot grow: {need} "
                                          f"blocks needed, {free} free")  # pragma: no cover
                    free = bm.num_free_blocks
            if group is not None:
                kept.append(group)
                plan.note(group, prefilling, size)
                reserved += need
                extra_seqs += group.num_seqs_after_step - 1
        plan.kept, plan.reserved, plan.num_seqs = kept, reserved, len(kept) + extra_seqs
        return plan

    def _schedule_swapped(self, out: SchedulerOutput, plan: StepPlan) -> None:
        """Bring swapped requests back, first come first served, while they fit."""
        bm = self.block_manager
        while self.swapped:
            group = self.swapped[0]
            blocks, prefilling = group.num_distinct_blocks(), group.is_prefilling
            need = 0 if prefilling else self._decode_need(group)
            if (plan.num_seqs + len(group.seqs) > self.max_running_seqs
                    or blocks + need > bm.num_free_blocks - plan.reserved - bm.watermark_blocks):
                break
            self.swapped.popleft()
            out.blocks_to_swap_in.extend(bm.swap_in(group.seqs))
            out.swapped_in.extend(group.seqs)
            for seq in group.seqs:
                seq.status = SequenceStatus.RUNNING
            plan.kept.append(group)
            plan.note(group, prefilling, bm.block_size)
            plan.reserved += need
            plan.num_seqs += group.num_seqs_after_step

    # ------------------------------------------------------------------ update
    def update(self, next_tokens: list, finished=()) -> UpdateOutput:
        """Append the tokens the model produced for the last step; returns what finished and
        which sequences were born by forking.

        ``next_tokens[i]`` belongs to ``out.sampled[i]``: one token id, or a list of token ids
        to fork the sequence into that many (parallel samples on their first token; beams at
        any step), or ``[]`` to drop the sequence (a beam that fell out). ``finished`` holds
        seq ids that end after this token (e.g. end-of-text). Block copies that appending
        required are reported by the next ``schedule()``.
        """
        out = self._last
        if out is None:
            raise InvalidConfig("nothing is scheduled: call schedule() before update()")
        if len(next_tokens) != len(out.sampled):
            raise InvalidConfig(f"got {len(next_tokens)} next tokens for {len(out.sampled)} "
                                "sampled sequences: give one entry per out.sampled sequence")
        finished = set(finished)
        forks_or_drops = not set(map(type, next_tokens)) <= {int}  # lists: fork or drop
        if forks_or_drops or finished:
            self._validate(out, next_tokens, finished)
        self._last = None
        bm, result = self.block_manager, UpdateOutput()
        append, copies = bm.append_token, self._pending_copies
        started, done = result.started, result.finished
        if len(out.groups) == len(next_tokens) and not forks_or_drops:
            # Every request samples one sequence, one token: the common case, kept lean (about
            # 6% of bench_simulate.py's instructions saved, against the general loop below).
            for group, seq, token in zip(out.groups, out.sampled, next_tokens):
                copy = append(seq, token)
                if copy is not None:
                    copies.append(copy)
                if len(seq.token_ids) >= group.stop_len or seq.seq_id in finished:
                    self._finish(group, seq)
                    done.append(group)
                if not group.started:
                    group.started = True
                    started.append(group)
        else:
            i = 0
            for group in out.groups:  # a step where some request forks, drops or runs several
                num_seqs = len(group.seqs)
                if not group.started:
                    started.append(group)
                born = self._advance(group, next_tokens[i:i + num_seqs], finished)
                i += num_seqs
                if born:
                    result.forked[group.request_id] = born
                if not group.seqs:
                    done.append(group)
        if done:
            self.running = [group for group in self.running if group.seqs]
        return result

    def _finish(self, group: SequenceGroup, seq: Sequence) -> None:
        """A live sequence is done: free its blocks, keep it in ``group.finished_seqs``."""
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        group.finished_seqs.append(seq)
        group.seqs = [s for s in group.seqs if s is not seq]
        del self._groups[seq.seq_id]

    def _advance(self, group: SequenceGroup, tokens: list, finished: set) -> list[Sequence]:
        """Apply one step's tokens to a group: drop, then fork, then append. Returns the
        sequences born by forking."""
        bm, plan = self.block_manager, []
        for seq, token in zip(group.seqs, tokens):  # drop first: their blocks come back
            if is_token(token):
                plan.append((seq, [token]))
            elif token:
                plan.append((seq, list(token)))
            else:
                bm.free(seq)
                seq.status = SequenceStatus.FINISHED
                del self._groups[seq.seq_id]
        appends, born = [], []
        for seq, choices in plan:  # fork every child before appending: copies happen on append
            appends.append((seq, choices[0]))
            for token in choices[1:]:
                child = bm.fork(seq, next(self._child_ids))
                child.status = SequenceStatus.RUNNING
                self._groups[child.seq_id] = group
                born.append(child)
                appends.append((child, token))
        for seq, token in appends:
            copy = bm.append_token(seq, token)
            if copy is not None:
                self._pending_copies.append(copy)
        group.seqs = [seq for seq, _ in appends]
        for seq in list(group.seqs):
            if len(seq.token_ids) >= group.stop_len or seq.seq_id in finished:
                self._finish(group, seq)
        group.started = True
        return born

    def _validate(self, out: SchedulerOutput, next_tokens: list, finished: set) -> None:
        """Check update's input against the batch before changing anything."""
        unknown = finished - {seq.seq_id for seq in out.sampled}
        if unknown:
            raise InvalidConfig(f"finished names sequences not in this step: {sorted(unknown)}")
        i = 0
        for group in out.groups:
            group.check_next_tokens(next_tokens[i:i + len(group.seqs)])
            i += len(group.seqs)
