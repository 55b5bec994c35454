"""How one step spends what is left of its token budget on prompts (chunked prefill).

After the decodes have their tokens, prompts get the rest of ``max_num_batched_tokens``, first
come first served: first requests part-way through their prompt, then waiting ones. Without
chunked prefill (the paper's scheduler) a prompt runs whole or waits; with it (vLLM V1's) each
takes ``min(prompt tokens left, budget left)``, and its blocks come as its chunks need them.
Cache hits are never charged to the budget: those tokens are not computed.

:class:`PrefillScheduling` is the part of :class:`~pagedlab.Scheduler` that does this; the
scheduler itself (``scheduler.py``) keeps the queues, the decodes, preemption and ``update``.
See notebooks/05b_chunked_prefill_and_latency.ipynb and exercises/ex08_chunked_prefill_step.ipynb.
"""
from __future__ import annotations

from .scheduler_output import SchedulerOutput, StepPlan
from .sequence import SequenceStatus
from .sequence_group import SequenceGroup


class PrefillScheduling:
    """Prompt chunks within the token budget; mixed into :class:`~pagedlab.Scheduler`."""

    def _chunks(self, group: SequenceGroup, budget: int,
                computed: list[int]) -> list[int] | None:
        """New tokens each sequence of a prefilling group computes now, or None if it must wait.

        Whole prompts without chunked prefill. With it, each sequence takes what is left of the
        budget; the sequences of a request of several (recomputed samples or beams) stop one
        token short, so that they all compute their last token, and sample, in one step.
        """
        left = [len(seq.token_ids) - done for seq, done in zip(group.seqs, computed)]
        if not self.enable_chunked_prefill:
            return left if sum(left) <= budget else None
        if len(group.seqs) > 1 and any(n > 1 for n in left):
            left = [n - 1 for n in left]  # stop one short; the last tokens run together later
        chunks = []
        for n in left:
            chunks.append(min(n, budget))
            budget -= chunks[-1]
        return chunks if sum(chunks) else None

    def _schedule_partial_prefills(self, out: SchedulerOutput,
                                   plan: StepPlan) -> list[SequenceGroup]:
        """The next chunk of each running request part-way through its prompt, oldest first.
        Returns those whose prompt is complete after this step (they sample)."""
        bm, size, completing = self.block_manager, self.block_manager.block_size, []
        for group in plan.prefilling:
            chunks = self._chunks(group, self.max_num_batched_tokens - out.num_batched_tokens,
                                  [seq.num_computed_tokens for seq in group.seqs])
            if chunks is None:
                break
            ends = [seq.num_computed_tokens + n for seq, n in zip(group.seqs, chunks)]
            blocks = sum(bm.blocks_to_extend(seq, end) for seq, end in zip(group.seqs, ends))
            completes = all(end == len(seq.token_ids) for seq, end in zip(group.seqs, ends))
            grow = self._blocks_to_grow(group) if completes else 0
            room = bm.num_free_blocks - plan.reserved
            if blocks + grow > room and len(group.seqs) == 1:  # a shorter chunk that fits
                seq = group.seqs[0]
                ends = [min(ends[0], len(seq.token_ids) - 1,
                            (len(seq.block_table) + room) * size)]
                blocks, completes, grow = bm.blocks_to_extend(seq, ends[0]), False, 0
                chunks = [ends[0] - seq.num_computed_tokens]
                if chunks[0] <= 0 or not self.enable_chunked_prefill:
                    break
            if blocks + grow > room:
                break
            for seq, end, n in zip(group.seqs, ends, chunks):
                if n:
                    bm.extend(seq, end)
                    out.prefills.append(seq)
                    out.prefill_tokens[seq.seq_id] = n
                    out.num_batched_tokens += n
            plan.reserved += grow
            if completes:
                completing.append(group)
        return completing

    def _schedule_waiting(self, out: SchedulerOutput, plan: StepPlan,
                          completing: list[SequenceGroup]) -> list[SequenceGroup]:
        """Prefill waiting requests (their first chunk), first come first served, while the
        budget, the blocks and ``max_num_seqs`` allow. Returns the admitted requests; those
        whose whole prompt runs now join ``completing``."""
        bm, admitted = self.block_manager, []
        num_seqs, reserved = plan.num_seqs, plan.reserved
        while self.waiting:
            group = self.waiting[0]
            budget = self.max_num_batched_tokens - out.num_batched_tokens
            if num_seqs + group.num_seqs_after_step > self.max_running_seqs or budget <= 0:
                break
            if not bm.enable_prefix_caching and \
                    bm.num_free_blocks - reserved - bm.watermark_blocks <= 0:
                break  # no room for even one block (only cache hits could need none)
            cached = [bm.cached_prefix_tokens(seq) for seq in group.seqs]
            chunks = self._chunks(group, budget, cached)
            if chunks is None and not self.enable_chunked_prefill and not out.num_batched_tokens:
                chunks = [len(seq.token_ids) - hit for seq, hit in zip(group.seqs, cached)]
            ends = [hit + n for hit, n in zip(cached, chunks or ())]
            # every sequence of the request gets blocks now: a chunk, or all it needs but its
            # last token (a request of several that the prefix cache holds almost whole)
            if chunks is None or any(end == 0 or (n == 0 and end < len(seq.token_ids) - 1)
                                     for seq, n, end in zip(group.seqs, chunks, ends)):
                break
            if self._blocks_to_admit(group, num_tokens=ends) > bm.num_free_blocks - reserved \
                    - bm.watermark_blocks:
                break
            self.waiting.popleft()
            for seq, end in zip(group.seqs, ends):
                bm.allocate(seq, end)  # sets seq.num_cached_tokens and num_computed_tokens
                seq.status = SequenceStatus.RUNNING
                n = end - seq.num_cached_tokens
                if n:
                    out.prefills.append(seq)
                    out.prefill_tokens[seq.seq_id] = n
                    out.num_batched_tokens += n
            if all(end == len(seq.token_ids) for seq, end in zip(group.seqs, ends)):
                reserved += self._blocks_to_grow(group)
                completing.append(group)
            admitted.append(group)
            num_seqs += group.num_seqs_after_step
        return admitted
