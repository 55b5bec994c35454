"""The scheduler: who runs this step, who waits, and who is pushed out when blocks run out.

Iteration-level (continuous) batching: every step the scheduler looks at three queues, first
come first served, and builds one batch:

1. **running** requests each get room for their next token. If the pool cannot hold all of
   them, the most recently arrived running request is *preempted*: by ``recompute`` (its blocks
   are freed; it goes back to the front of the waiting queue and its tokens are computed again
   later) or by ``swap`` (its blocks move to the CPU pool until there is room again).
2. **swapped** requests come back when their blocks fit again (only in a step without
   preemption).
3. **waiting** requests are admitted (their prompt is *prefilled*) while blocks, ``max_num_seqs``
   and ``max_num_batched_tokens`` allow, keeping the block manager's watermark of free blocks
   back so running requests can still grow; prefix-cache hits shorten the prefill.

A request is a :class:`SequenceGroup`: one sequence, ``n`` parallel samples that share the
prompt's blocks (``fork``), or a beam search of ``beam_width`` beams that fork and drop beams
every step (copy-on-write keeps shared blocks correct). See notebooks/05_scheduling.ipynb.

One step, as a caller (the simulator, the engine) runs it::

    out = scheduler.schedule()
    # 1. copy blocks out.blocks_to_copy, 2. swap out.blocks_to_swap_out, 3. out.blocks_to_swap_in
    # 4. run the model: prefills compute positions seq.num_cached_tokens..len(seq)-1,
    #    decodes compute their last position; each samples what comes next
    finished_groups = scheduler.update(next_tokens)   # one entry per out.scheduled sequence
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from .blocks import BlockManager
from .errors import InvalidConfig, OutOfBlocks
from .sequence import Sequence, SequenceStatus

PREEMPTION_MODES = ("recompute", "swap")
_NO_LIMIT = 1 << 62


@dataclass(eq=False)
class SequenceGroup:
    """One request: the sequence(s) it grew into, scheduled together. See notebooks/04_sharing.ipynb.

    ``seqs`` are the live sequences (one before the first token; then up to ``n`` samples or
    ``beam_width`` beams); ``finished_seqs`` the ones that ended, in the order they ended.
    """

    request_id: int
    seqs: list[Sequence]
    n: int = 1
    beam_width: int = 1
    max_new_tokens: int | None = None
    finished_seqs: list[Sequence] = field(default_factory=list)
    order: int = 0          # admission order: first come, first served
    started: bool = False   # produced its first token(s) (parallel samples fork only then)
    stop_len: int = _NO_LIMIT
    fan_out: int = field(init=False)   # the most sequences this request runs at once

    def __post_init__(self):
        self.fan_out = max(self.n, self.beam_width)

    @property
    def can_fork(self) -> bool:
        """Whether the next update may fork: beams always, parallel samples on their first token."""
        return self.beam_width > 1 or (self.n > 1 and not self.started)


@dataclass
class SchedulerOutput:
    """What to do this step. Apply block copies, then swap-outs, then swap-ins, then run.

    ``prefills`` compute K/V for positions ``seq.num_cached_tokens .. len(seq) - 1`` (a whole
    prompt, or prompt plus output again after a recompute preemption); ``decodes`` compute their
    last position. ``scheduled`` is prefills then decodes: the order ``update`` expects tokens in.
    ``groups`` are the scheduled requests in that same order (prefilling ones first).
    Block pairs: ``blocks_to_copy`` (src, dst) GPU copies from copy-on-write in the last update,
    ``blocks_to_swap_out`` (gpu, cpu), ``blocks_to_swap_in`` (cpu, gpu).
    """

    prefills: list[Sequence] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    scheduled: list[Sequence] = field(default_factory=list)
    groups: list[SequenceGroup] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    swapped_in: list[Sequence] = field(default_factory=list)
    swapped_out: list[Sequence] = field(default_factory=list)
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_out: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_in: list[tuple[int, int]] = field(default_factory=list)
    num_batched_tokens: int = 0   # prefill tokens (after cache hits) + one per decode

    @property
    def num_seqs(self) -> int:
        """Sequences in this step's batch."""
        return len(self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfig(f"{name} must be an int >= 1, got {value!r}")
    return value


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
        _positive_int("max_num_seqs", max_num_seqs)
        _positive_int("max_num_batched_tokens", max_num_batched_tokens)
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
        _positive_int("n", n)
        _positive_int("beam_width", beam_width)
        if max_new_tokens is not None:
            _positive_int("max_new_tokens", max_new_tokens)
        if n > 1 and beam_width > 1:
            raise InvalidConfig("choose parallel samples (n) or beam search (beam_width), not both")
        if seq.seq_id in self._groups or seq.block_table or seq.status != SequenceStatus.WAITING:
            raise InvalidConfig(f"sequence {seq.seq_id} is already queued or holds blocks: "
                                "add a fresh Sequence with an unused seq_id")
        if isinstance(seq.seq_id, int) and seq.seq_id >= self.first_child_id:
            raise InvalidConfig(f"seq_id {seq.seq_id} is reserved for forked sequences (ids from "
                                f"first_child_id={self.first_child_id} up): use a smaller id")
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
        self._check_fits(group, self._blocks_to_admit(group))
        if max_new_tokens is not None:
            group.stop_len = seq.prompt_len + max_new_tokens
            # At the end: n samples share the prompt's full blocks and own the rest (beams
            # may share more, so one sequence is all they surely need).
            size = self.block_manager.block_size
            per_seq = -(-(len(seq.token_ids) + max_new_tokens) // size)
            shared = len(seq.token_ids) // size
            self._check_fits(group, shared + n * (per_seq - shared), grow=True)
        group.order = next(self._order)
        self._groups[seq.seq_id] = group
        self.waiting.append(group)
        return group

    def has_unfinished(self) -> bool:
        """Whether any request is still waiting, running or swapped out."""
        return bool(self.waiting or self.running or self.swapped)

    def group_of(self, seq_id: int) -> SequenceGroup:
        """The request a live sequence belongs to."""
        return self._groups[seq_id]

    # ------------------------------------------------------------------ blocks
    def _growth(self, group: SequenceGroup, on_gpu: bool = False) -> int:
        """Most blocks the group's next update can take (net of the beams it drops).

        A sequence whose last block is full (or shared) needs a new one; a fork needs a copy
        of its parent's partly filled last block, but a dropped beam frees its own last block
        first, so a request that may fork only adds room for the sequences it may grow by.
        """
        size, bm = self.block_manager.block_size, self.block_manager
        need = sum(1 for seq in group.seqs if len(seq.token_ids) % size == 0
                   or (on_gpu and bm.ref_count(seq.block_table[-1]) > 1))
        if group.can_fork:
            need += group.fan_out - len(group.seqs)
        return need

    def _blocks_to_admit(self, group: SequenceGroup) -> int:
        """Free blocks a waiting group needs to be prefilled and grow once (ignoring the cache)."""
        needed = self.block_manager.blocks_needed
        return sum(needed(seq) for seq in group.seqs) + self._growth(group)

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

    def _distinct_blocks(self, group: SequenceGroup) -> int:
        return len({block for seq in group.seqs for block in seq.block_table})

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
        for queue in (self.waiting, self.swapped):  # hopeless heads fail before anything moves
            if queue:
                head = queue[0]
                if queue is self.swapped:
                    self._check_fits(head, self._distinct_blocks(head) + self._growth(head))
                else:
                    self._check_fits(head, self._blocks_to_admit(head))
        out = SchedulerOutput(blocks_to_copy=self._pending_copies)
        self._pending_copies = []
        reserved = num_seqs = num_tokens = 0
        # 1. Running requests, oldest first; the newest are preempted when blocks run short.
        queue, kept = self.running, []
        lo, hi = 0, len(queue)
        size, free = bm.block_size, bm.num_free_blocks
        while lo < hi:
            group = queue[lo]
            lo += 1
            if group.fan_out == 1:  # the common case, kept lean: a new block when the last is full
                need = 0 if len(group.seqs[0].token_ids) % size else 1
            else:
                need = self._growth(group, on_gpu=True)
            if need > free - reserved:  # could it grow with the whole pool to itself?
                self._check_fits(group, self._distinct_blocks(group) + need, grow=True)
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
                num_seqs += len(group.seqs)
        preempted = bool(out.preempted)
        # 2. Swapped requests come back while they fit (never in a step that preempted).
        while self.swapped and not preempted:
            group = self.swapped[0]
            blocks, need = self._distinct_blocks(group), self._growth(group)
            if (num_seqs + len(group.seqs) > self.max_num_seqs
                    or num_seqs + len(group.seqs) > self.max_num_batched_tokens
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
        for group in kept:
            out.decodes.extend(group.seqs)
        num_tokens = num_seqs
        # 3. Waiting requests are prefilled while everything fits (none while some are swapped).
        admitted = []
        while self.waiting and not self.swapped and not preempted:
            group = self.waiting[0]
            seqs_after = group.fan_out if group.can_fork else len(group.seqs)
            prompt_tokens = sum(len(seq.token_ids) for seq in group.seqs)
            if (num_seqs + seqs_after > self.max_num_seqs
                    or (num_tokens and num_tokens + prompt_tokens > self.max_num_batched_tokens)
                    or self._blocks_to_admit(group) > bm.num_free_blocks - reserved
                    - bm.watermark_blocks):
                break
            self.waiting.popleft()
            reserved += self._growth(group)
            for seq in group.seqs:
                seq.num_cached_tokens = bm.allocate(seq)
                seq.status = SequenceStatus.RUNNING
                num_tokens += len(seq.token_ids) - seq.num_cached_tokens
                out.prefills.append(seq)
            admitted.append(group)
            num_seqs += seqs_after
        out.groups = admitted + kept
        out.scheduled = out.prefills + out.decodes
        out.num_batched_tokens = num_tokens
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
                    self._finish(group, seq)
            else:
                self._update_group(group, next_tokens[i:i + len(seqs)], finished)
                i += len(seqs)
            group.started = True
            if not group.seqs:
                done.append(group)
        if done:
            self.running = [group for group in self.running if group.seqs]
        return done

    def _finish(self, group: SequenceGroup, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        group.finished_seqs.append(seq)
        group.seqs = [s for s in group.seqs if s is not seq]
        del self._groups[seq.seq_id]

    def _update_group(self, group: SequenceGroup, tokens: list, finished: set) -> None:
        bm = self.block_manager
        plan = []
        for seq, token in zip(group.seqs, tokens):  # drop first: their blocks come back
            if isinstance(token, int):
                plan.append((seq, [token]))
            elif token:
                plan.append((seq, list(token)))
            else:
                bm.free(seq)
                seq.status = SequenceStatus.FINISHED
                del self._groups[seq.seq_id]
        appends = []
        for seq, seq_tokens in plan:  # fork before appending: the copies happen on append
            appends.append((seq, seq_tokens[0]))
            for token in seq_tokens[1:]:
                child = bm.fork(seq, next(self._child_ids))
                child.status = SequenceStatus.RUNNING
                self._groups[child.seq_id] = group
                appends.append((child, token))
        group.seqs = []
        for seq, token in appends:
            copy = bm.append_token(seq, token)
            if copy is not None:
                self._pending_copies.append(copy)
            group.seqs.append(seq)
        for seq in list(group.seqs):
            if len(seq.token_ids) >= group.stop_len or seq.seq_id in finished:
                self._finish(group, seq)

    def _validate(self, out: SchedulerOutput, next_tokens: list, finished: set) -> None:
        """Check update's input against the batch before changing anything."""
        scheduled_ids = {seq.seq_id for seq in out.scheduled}
        unknown = finished - scheduled_ids
        if unknown:
            raise InvalidConfig(f"finished names sequences not in this step: {sorted(unknown)}")
        i = 0
        for group in out.groups:
            live = 0
            for token in next_tokens[i:i + len(group.seqs)]:
                tokens = [token] if isinstance(token, int) and not isinstance(token, bool) \
                    else token
                if not isinstance(tokens, (list, tuple)) or not all(
                        isinstance(t, int) and not isinstance(t, bool) for t in tokens):
                    raise InvalidConfig(f"a next token must be an int or a list of ints, got {token!r}")
                if len(tokens) > 1 and not group.can_fork:
                    raise InvalidConfig(f"request {group.request_id} cannot fork now: parallel "
                                        "samples fork on their first token only, beams any time")
                live += len(tokens)
            if not 1 <= live <= group.fan_out:
                raise InvalidConfig(f"request {group.request_id} would run {live} sequences; it "
                                    f"may run 1 to {group.fan_out}: drop or fork fewer")
            i += len(group.seqs)
