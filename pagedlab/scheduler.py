"""The scheduler: who runs this step, who waits, and who is pushed out when blocks run out.

Iteration-level (continuous) batching: each step looks at three queues, first come first served:

1. **running** requests each get room for their next token; when the pool cannot hold them
   all, the most recently arrived one is *preempted*, by ``recompute`` (blocks freed, back to
   the front of the waiting queue, its tokens computed again later) or by ``swap`` (blocks moved
   to the CPU pool until there is room again);
2. **swapped** requests come back when they fit (never in a step that preempted);
3. **waiting** requests are *prefilled* while blocks, ``max_num_seqs`` and
   ``max_num_batched_tokens`` allow, keeping the watermark free so running requests can grow.
   Prefix-cache hits shorten the prefill.

A request is a :class:`~pagedlab.sequence_group.SequenceGroup`: one sequence, ``n`` parallel samples or
``beam_width`` beams. One step, as the simulator and the engine run it::

    out = scheduler.schedule()
    # copy out.blocks_to_copy, then swap out.blocks_to_swap_out, then out.blocks_to_swap_in;
    # run the model on out.prefills and out.decodes, sample each one's next token(s)
    finished_groups = scheduler.update(next_tokens)   # one entry per out.scheduled sequence

See notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

import itertools
from collections import deque

from .sequence_group import SchedulerOutput, SequenceGroup, positive_int
from .blocks import BlockManager
from .errors import InvalidConfig, OutOfBlocks
from .sequence import Sequence, SequenceStatus

__all__ = ["Scheduler", "SchedulerOutput", "SequenceGroup", "PREEMPTION_MODES"]

PREEMPTION_MODES = ("recompute", "swap")


class Scheduler:
    """Continuous batching over a :class:`~pagedlab.BlockManager`, first come first served.

    ``max_num_seqs`` caps the sequences in a batch; ``max_num_batched_tokens`` the tokens computed
    in one step (a prompt longer than the budget left runs alone); ``preemption`` is
    ``"recompute"`` or ``"swap"``. Forked sequences get ids from ``first_child_id`` up.
    See notebooks/05_scheduling.ipynb.
    """

    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 4096, preemption: str = "recompute",
                 first_child_id: int = 1_000_000):
        if not isinstance(block_manager, BlockManager):
            raise TypeError(f"Scheduler needs a pagedlab.BlockManager, got {type(block_manager).__name__}")
        positive_int("max_num_seqs", max_num_seqs)
        positive_int("max_num_batched_tokens", max_num_batched_tokens)
        if max_num_batched_tokens < max_num_seqs:
            raise InvalidConfig(f"max_num_batched_tokens={max_num_batched_tokens} is below "
                                f"max_num_seqs={max_num_seqs}: a full batch of decodes would not "
                                "fit; raise it")
        if preemption not in PREEMPTION_MODES:
            raise InvalidConfig(f"preemption must be one of {PREEMPTION_MODES}, got {preemption!r}")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.preemption = preemption
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
        if group.fan_out > self.max_num_seqs:
            raise InvalidConfig(f"request {seq.seq_id} runs {group.fan_out} sequences but "
                                f"max_num_seqs={self.max_num_seqs}: raise max_num_seqs")
        if len(seq.token_ids) > self.max_num_batched_tokens:
            raise InvalidConfig(f"prompt of {len(seq.token_ids)} tokens exceeds "
                                f"max_num_batched_tokens={self.max_num_batched_tokens}: raise it")
        self._check_fits(group, self._blocks_to_admit(group, cache_hits=False))
        if max_new_tokens is not None:
            self._check_fits(group, group.blocks_at_end(self.block_manager.block_size), grow=True)
        return group

    def _new_seq_id(self) -> int:
        return next(self._child_ids)

    def has_unfinished(self) -> bool:
        """Whether any request is still waiting, running or swapped out."""
        return bool(self.waiting or self.running or self.swapped)

    def group_of(self, seq_id: int) -> SequenceGroup:
        """The request a live sequence belongs to."""
        return self._groups[seq_id]

    # ------------------------------------------------------------------ blocks
    def _blocks_to_admit(self, group: SequenceGroup, cache_hits: bool = True) -> int:
        """Free blocks a waiting group needs to be prefilled and grow once.

        With ``cache_hits`` prefix-cache hits on live blocks are not counted (they are shared, not
        taken); without, the answer is what the group needs even if the cache were empty.
        """
        bm = self.block_manager
        needed = bm.blocks_to_allocate if cache_hits else bm.blocks_needed
        return sum(needed(seq) for seq in group.seqs) + group.blocks_to_grow(self.block_manager)

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
        # (as in vLLM) such a request is swapped in both modes while the CPU pool has room.
        if (self.preemption == "swap" or len(group.seqs) > 1) and bm.can_swap_out(group.seqs):
            out.blocks_to_swap_out.extend(bm.swap_out(group.seqs))
            out.swapped_out.extend(group.seqs)
            for seq in group.seqs:
                seq.status = SequenceStatus.SWAPPED
            self._insert(self.swapped, group)
            return
        for seq in group.seqs:  # recompute (also when the CPU pool is full)
            bm.free(seq)
            seq.status = SequenceStatus.WAITING
        self._insert(self.waiting, group)

    # ------------------------------------------------------------------ schedule
    def schedule(self) -> SchedulerOutput:
        """Build this step's batch: decodes for running requests, then swap-ins, then prefills.

        Raises OutOfBlocks (nothing changed) when the next request could never fit the pool.
        """
        if self._last is not None:
            raise InvalidConfig("the last step is not finished: call update() with its tokens "
                                "before scheduling again")
        bm = self.block_manager
        if self.swapped:  # hopeless heads fail before anything moves
            head = self.swapped[0]
            self._check_fits(head, head.num_distinct_blocks() + head.blocks_to_grow(bm))
        if self.waiting:
            self._check_fits(self.waiting[0], self._blocks_to_admit(self.waiting[0], cache_hits=False))
        out = SchedulerOutput(blocks_to_copy=self._pending_copies)
        kept, reserved = self._schedule_running(out)
        self._pending_copies = []  # only now: _schedule_running may still raise
        if not out.preempted:  # a step that preempted admits nobody: the pool is short
            reserved = self._schedule_swapped(out, kept, reserved)
        for group in kept:
            out.decodes.extend(group.seqs)
        out.num_batched_tokens = len(out.decodes)
        admitted = [] if out.preempted or self.swapped else self._schedule_waiting(out, reserved)
        out.groups = admitted + kept
        out.scheduled = out.prefills + out.decodes
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

    def _schedule_running(self, out: SchedulerOutput) -> tuple[list[SequenceGroup], int]:
        """Room for every running request's next token, oldest first; preempt the newest."""
        bm, queue, kept, reserved = self.block_manager, self.running, [], 0
        lo, hi = 0, len(queue)
        size, free = bm.block_size, bm.num_free_blocks
        while lo < hi:
            group = queue[lo]
            lo += 1
            if group.fan_out == 1:  # the common case, kept lean: a new block when the last is full
                need = 0 if len(group.seqs[0].token_ids) % size else 1
            else:
                need = group.blocks_to_grow(bm, on_gpu=True)
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
                reserved += need
                kept.append(group)
        return kept, reserved

    def _schedule_swapped(self, out: SchedulerOutput, kept: list, reserved: int) -> int:
        """Bring swapped requests back, first come first served, while they fit."""
        bm = self.block_manager
        num_seqs = sum(len(group.seqs) for group in kept)
        while self.swapped:
            group = self.swapped[0]
            blocks, need = group.num_distinct_blocks(), group.blocks_to_grow(bm)
            if (num_seqs + len(group.seqs) > min(self.max_num_seqs, self.max_num_batched_tokens)
                    or blocks + need > bm.num_free_blocks - reserved - bm.watermark_blocks):
                break
            self.swapped.popleft()
            out.blocks_to_swap_in.extend(bm.swap_in(group.seqs))
            out.swapped_in.extend(group.seqs)
            for seq in group.seqs:
                seq.status = SequenceStatus.RUNNING
            reserved += need
            kept.append(group)
            num_seqs += len(group.seqs)
        return reserved

    def _schedule_waiting(self, out: SchedulerOutput, reserved: int) -> list[SequenceGroup]:
        """Prefill waiting requests, first come first served, while blocks and limits allow."""
        bm, admitted = self.block_manager, []
        num_seqs = len(out.decodes)
        while self.waiting:
            group = self.waiting[0]
            seqs_after = group.fan_out if group.can_fork else len(group.seqs)
            prompt_tokens = sum(len(seq.token_ids) for seq in group.seqs)
            if (num_seqs + seqs_after > self.max_num_seqs
                    or (out.num_batched_tokens
                        and out.num_batched_tokens + prompt_tokens > self.max_num_batched_tokens)
                    or self._blocks_to_admit(group) > bm.num_free_blocks - reserved
                    - bm.watermark_blocks):
                break
            self.waiting.popleft()
            reserved += group.blocks_to_grow(bm)
            for seq in group.seqs:
                seq.num_cached_tokens = bm.allocate(seq)
                seq.status = SequenceStatus.RUNNING
                out.num_batched_tokens += len(seq.token_ids) - seq.num_cached_tokens
                out.prefills.append(seq)
            admitted.append(group)
            num_seqs += seqs_after
        return admitted

    # ------------------------------------------------------------------ update
    def update(self, next_tokens: list, finished=()) -> list[SequenceGroup]:
        """Append the tokens the model produced for the last step; returns requests now done.

        ``next_tokens[i]`` belongs to ``out.scheduled[i]``: one token id, or a list of token ids
        to fork the sequence into that many (parallel samples on their first token; beams at
        any step), or ``[]`` to drop the sequence (a beam that fell out). ``finished`` holds
        seq ids that end after this token (e.g. end-of-text). Block copies that appending
        required are reported by the next ``schedule()``.
        """
        out = self._last
        if out is None:
            raise InvalidConfig("nothing is scheduled: call schedule() before update()")
        if len(next_tokens) != len(out.scheduled):
            raise InvalidConfig(f"got {len(next_tokens)} next tokens for {len(out.scheduled)} "
                                "scheduled sequences: give one entry per out.scheduled sequence")
        finished = set(finished)
        if not set(map(type, next_tokens)) <= {int} or finished:
            self._validate(out, next_tokens, finished)
        self._last = None
        bm = self.block_manager
        append, copies, done = bm.append_token, self._pending_copies, []
        i = 0
        for group in out.groups:
            seqs = group.seqs
            if len(seqs) == 1 and type(next_tokens[i]) is int:  # the common case, kept lean
                seq = seqs[0]
                copy = append(seq, next_tokens[i])
                i += 1
                if copy is not None:
                    copies.append(copy)
                if len(seq.token_ids) >= group.stop_len or seq.seq_id in finished:
                    group.finish(seq, bm)
                    del self._groups[seq.seq_id]
                group.started = True
            else:
                new_copies, born, gone = group.advance(next_tokens[i:i + len(seqs)], bm,
                                                       self._new_seq_id, finished)
                i += len(seqs)
                copies += new_copies
                for seq in born:
                    self._groups[seq.seq_id] = group
                for seq in gone:
                    del self._groups[seq.seq_id]
            if not group.seqs:
                done.append(group)
        if done:
            self.running = [group for group in self.running if group.seqs]
        return done

    def _validate(self, out: SchedulerOutput, next_tokens: list, finished: set) -> None:
        """Check update's input against the batch before changing anything."""
        unknown = finished - {seq.seq_id for seq in out.scheduled}
        if unknown:
            raise InvalidConfig(f"finished names sequences not in this step: {sorted(unknown)}")
        i = 0
        for group in out.groups:
            group.check_next_tokens(next_tokens[i:i + len(group.seqs)])
            i += len(group.seqs)
