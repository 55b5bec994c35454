"""A request as the scheduler sees it: one sequence, ``n`` parallel samples, or ``k`` beams.

The scheduler moves the whole group at once (admit, preempt, swap) because its sequences share
blocks: ``n`` samples share the prompt's blocks after they fork on their first token; beams fork
and drop every step, sharing everything they have in common. Copy-on-write keeps each
sequence's partly filled last block its own.

A :class:`SequenceGroup` is plain data plus arithmetic on it: it never calls the block manager
(only the :class:`~pagedlab.Scheduler` does). See notebooks/04_sharing.ipynb and
notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidConfig, check_int
from .sequence import Sequence

NO_LIMIT = 1 << 62


def is_token(value) -> bool:
    """An int token id (not a bool)."""
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
        check_int("n", self.n, 1)
        check_int("beam_width", self.beam_width, 1)
        if self.max_new_tokens is not None:
            check_int("max_new_tokens", self.max_new_tokens, 1)
            self.stop_len = self.seqs[0].prompt_len + self.max_new_tokens
        if self.n > 1 and self.beam_width > 1:
            raise InvalidConfig("choose parallel samples (n) or beam search (beam_width), not both")
        self.fan_out = max(self.n, self.beam_width)

    @property
    def can_fork(self) -> bool:
        """Whether the next token may fork: beams always, parallel samples on their first token."""
        return self.beam_width > 1 or (self.n > 1 and not self.started)

    @property
    def is_prefilling(self) -> bool:
        """Whether some sequence still has prompt positions to compute before the next token.

        A sequence whose only uncomputed position is its last token is decoding: computing that
        one token and sampling from it is a decode step, whatever came before.
        """
        return any(seq.num_computed_tokens < len(seq.token_ids) - 1 for seq in self.seqs)

    @property
    def num_seqs_after_step(self) -> int:
        """Sequences the group may run after its next token (forks included)."""
        return self.fan_out if self.can_fork else len(self.seqs)

    def blocks_at_end(self, block_size: int) -> int:
        """Blocks the request may need at its end (it needs ``max_new_tokens``).

        Its ``n`` samples or beams share the prompt's full blocks and, at worst, own all the
        rest (beams may share more, but the scheduler must be able to run the worst case).
        """
        prompt_len = len(self.seqs[0].token_ids)
        per_seq = -(-(prompt_len + self.max_new_tokens) // block_size)
        shared = prompt_len // block_size
        return shared + self.fan_out * (per_seq - shared)

    def num_distinct_blocks(self) -> int:
        """Blocks the group holds, each shared block once."""
        return len({block for seq in self.seqs for block in seq.block_table})

    def check_next_tokens(self, tokens: list) -> None:
        """Raise InvalidConfig unless ``tokens`` (one entry per live sequence) is a valid step."""
        live = 0
        for token in tokens:
            choices = [token] if is_token(token) else token
            if not isinstance(choices, (list, tuple)) or not all(map(is_token, choices)):
                raise InvalidConfig(f"a next token must be an int or a list of ints, got {token!r}")
            if len(choices) > 1 and not self.can_fork:
                raise InvalidConfig(f"request {self.request_id} cannot fork now: parallel "
                                    "samples fork on their first token only, beams any time")
            live += len(choices)
        if not 1 <= live <= self.fan_out:
            raise InvalidConfig(f"request {self.request_id} would run {live} sequences; it may "
                                f"run 1 to {self.fan_out}: drop or fork fewer")
