"""What the scheduler hands out: a step's batch, what an update did, and a step being planned.

:class:`SchedulerOutput` is one step for the engine or the simulator to run; :class:`UpdateOutput`
is what :meth:`pagedlab.Scheduler.update` did with the tokens it got back. :class:`StepPlan` is
the scheduler's own scratch paper while it builds a step. See notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .sequence import Sequence
from .sequence_group import SequenceGroup


@dataclass
class SchedulerOutput:
    """What to do this step. Apply block copies, then swap-outs, then swap-ins, then run.

    ``num_scheduled_tokens[seq_id]`` new tokens run for each sequence of ``scheduled``: its
    positions ``seq.num_computed_tokens - n .. seq.num_computed_tokens - 1`` (a prompt chunk, or
    1 for a decode). ``scheduled`` is ``prefills`` then ``decodes``. ``sampled`` are the
    sequences that produce a next token (all but prefills with prompt chunks still to come), the
    order ``update`` expects tokens in; ``groups`` are their requests, in that order.
    Block pairs: ``blocks_to_copy`` (src, dst) GPU copies from copy-on-write in the last update,
    ``blocks_to_swap_out`` (gpu, cpu), ``blocks_to_swap_in`` (cpu, gpu).
    """

    prefills: list[Sequence] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    scheduled: list[Sequence] = field(default_factory=list)
    sampled: list[Sequence] = field(default_factory=list)
    groups: list[SequenceGroup] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    swapped_in: list[Sequence] = field(default_factory=list)
    swapped_out: list[Sequence] = field(default_factory=list)
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_out: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_in: list[tuple[int, int]] = field(default_factory=list)
    prefill_tokens: dict[int, int] = field(default_factory=dict)  # seq_id -> prompt tokens now
    num_batched_tokens: int = 0   # sum of num_scheduled_tokens: prefill chunks + one per decode

    @functools.cached_property
    def num_scheduled_tokens(self) -> dict[int, int]:
        """seq_id -> tokens computed this step, for every scheduled sequence."""
        return {**self.prefill_tokens, **dict.fromkeys([s.seq_id for s in self.decodes], 1)}

    @property
    def num_seqs(self) -> int:
        """Sequences in this step's batch."""
        return len(self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class UpdateOutput:
    """What ``Scheduler.update`` did: requests that produced their first token, requests now
    done, and sequences born by forking."""

    started: list[SequenceGroup] = field(default_factory=list)
    finished: list[SequenceGroup] = field(default_factory=list)
    forked: dict[int, list[Sequence]] = field(default_factory=dict)  # request id -> new sequences


@dataclass
class StepPlan:
    """One step while ``schedule()`` builds it: the running requests it keeps, and the blocks
    it has promised them."""

    kept: list[SequenceGroup] = field(default_factory=list)        # running ones that stay
    prefilling: list[SequenceGroup] = field(default_factory=list)  # kept, part-way through prompt
    short: list[Sequence] = field(default_factory=list)  # decoding, last token without a block
    reserved: int = 0   # free blocks promised to the kept requests' next tokens
    num_seqs: int = 0   # sequences the kept requests run after this step (forks counted)

    def note(self, group: SequenceGroup, prefilling: bool, block_size: int) -> None:
        """A kept request that is not the common case (one sequence, decoding)."""
        if prefilling:
            self.prefilling.append(group)
            return
        for seq in group.seqs:  # its last token is computed now
            if len(seq.block_table) * block_size < len(seq.token_ids):
                self.short.append(seq)
            seq.num_computed_tokens = len(seq.token_ids)

    @property
    def decoding(self) -> list[SequenceGroup]:
        """The kept requests that decode one token each: all but those still prefilling."""
        if not self.prefilling:
            return self.kept
        return [group for group in self.kept if group not in self.prefilling]
