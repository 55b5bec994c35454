"""What the scheduler moves: requests (sequence groups) and each step's batch.

A request grows into one sequence, ``n`` parallel samples, or ``k`` beams. The scheduler moves
the whole group at once (admit, preempt, swap) because its sequences share blocks: ``n``
samples share the prompt's blocks after they fork on their first token; beams fork and drop
every step, sharing everything they have in common. Copy-on-write keeps each sequence's partly
filled last block its own. See notebooks/04_sharing.ipynb and notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .blocks import BlockManager
from .errors import InvalidConfig
from .sequence import Sequence, SequenceStatus

NO_LIMIT = 1 << 62


def positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1, else InvalidConfig naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfig(f"{name} must be an int >= 1, got {value!r}")
    return value


def _is_token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(eq=False)
class SequenceGroup:
    """One request, scheduled as a unit. See notebooks/04_sharing.ipynb.

    ``seqs`` are the live sequences (one before the first token; then up to ``n`` samples or
    ``beam_width`` beams); ``finished_seqs`` the ones that ended, in the order they ended.
    """

    request_id: int
    seqs: list[Sequence]
    n: int = 1
    beam_width: int = 1
    max_new_tokens: int | None = None
    finished_seqs: list[Sequence] = field(default_factory=list)
    order: int = 0             # admission order: first come, first served
    started: bool = False      # produced its first token(s) (parallel samples fork only then)
    stop_len: int = NO_LIMIT   # a sequence this long (prompt + max_new_tokens) is done
    fan_out: int = field(init=False)   # the most sequences this request runs at once

    def __post_init__(self):
        positive_int("n", self.n)
        positive_int("beam_width", self.beam_width)
        if self.max_new_tokens is not None:
            positive_int("max_new_tokens", self.max_new_tokens)
            self.stop_len = self.seqs[0].prompt_len + self.max_new_tokens
        if self.n > 1 and self.beam_width > 1:
            raise InvalidConfig("choose parallel samples (n) or beam search (beam_width), not both")
        self.fan_out = max(self.n, self.beam_width)

    def blocks_at_end(self, block_size: int) -> int:
        """Blocks the request surely needs at its end (it needs ``max_new_tokens``).

        ``n`` samples share the prompt's full blocks and own the rest; beams may share
        everything, so one sequence is all they surely need.
        """
        prompt_len = len(self.seqs[0].token_ids)
        per_seq = -(-(prompt_len + self.max_new_tokens) // block_size)
        shared = prompt_len // block_size
        return shared + self.n * (per_seq - shared)

    def num_distinct_blocks(self) -> int:
        """Blocks the group holds, each shared block once."""
        return len({block for seq in self.seqs for block in seq.block_table})

    @property
    def can_fork(self) -> bool:
        """Whether the next step may fork: beams always, parallel samples on their first token."""
        return self.beam_width > 1 or (self.n > 1 and not self.started)

    def blocks_to_grow(self, block_manager: BlockManager, on_gpu: bool = False) -> int:
        """Most blocks the group's next step can take (net of the beams it drops).

        A sequence whose last block is full (or shared) needs a new one. A fork needs a copy of
        its parent's partly filled last block, but each dropped beam first frees its own last
        block, so forking only adds room for the sequences the group may grow by.
        """
        size = block_manager.block_size
        need = sum(1 for seq in self.seqs if len(seq.token_ids) % size == 0
                   or (on_gpu and block_manager.ref_count(seq.block_table[-1]) > 1))
        if self.can_fork:
            need += self.fan_out - len(self.seqs)
        return need

    def check_next_tokens(self, tokens: list) -> None:
        """Raise InvalidConfig unless ``tokens`` (one entry per live sequence) is a valid step."""
        live = 0
        for token in tokens:
            choices = [token] if _is_token(token) else token
            if not isinstance(choices, (list, tuple)) or not all(map(_is_token, choices)):
                raise InvalidConfig(f"a next token must be an int or a list of ints, got {token!r}")
            if len(choices) > 1 and not self.can_fork:
                raise InvalidConfig(f"request {self.request_id} cannot fork now: parallel "
                                    "samples fork on their first token only, beams any time")
            live += len(choices)
        if not 1 <= live <= self.fan_out:
            raise InvalidConfig(f"request {self.request_id} would run {live} sequences; it may "
                                f"run 1 to {self.fan_out}: drop or fork fewer")

    def finish(self, seq: Sequence, block_manager: BlockManager) -> None:
        """A live sequence is done: free its blocks, keep it in ``finished_seqs``."""
        block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        self.finished_seqs.append(seq)
        self.seqs = [s for s in self.seqs if s is not seq]

    def advance(self, tokens: list, block_manager: BlockManager, new_seq_id: Callable[[], int],
                finished: set) -> tuple[list[tuple[int, int]], list[Sequence], list[Sequence]]:
        """Apply one step's tokens: drop, then fork, then append (see ``Scheduler.update``).

        Returns the (src, dst) block copies appending needed, the sequences born by forking,
        and the sequences that left (dropped or finished).
        """
        bm, plan, gone = block_manager, [], []
        for seq, token in zip(self.seqs, tokens):  # drop first: their blocks come back
            if _is_token(token):
                plan.append((seq, [token]))
            elif token:
                plan.append((seq, list(token)))
            else:
                bm.free(seq)
                seq.status = SequenceStatus.FINISHED
                gone.append(seq)
        appends, born = [], []
        for seq, choices in plan:  # fork every child before appending: copies happen on append
            appends.append((seq, choices[0]))
            for token in choices[1:]:
                child = bm.fork(seq, new_seq_id())
                child.status = SequenceStatus.RUNNING
                born.append(child)
                appends.append((child, token))
        copies = []
        for seq, token in appends:
            copy = bm.append_token(seq, token)
            if copy is not None:
                copies.append(copy)
        self.seqs = [seq for seq, _ in appends]
        for seq in list(self.seqs):
            if len(seq.token_ids) >= self.stop_len or seq.seq_id in finished:
                self.finish(seq, bm)
                gone.append(seq)
        self.started = True
        return copies, born, gone


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
