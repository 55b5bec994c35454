"""Random allocate / append / fork / free / swap, checking the invariants after every step."""
from collections import Counter

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pagedlab as pl


class BlockManagerMachine(RuleBasedStateMachine):
    @initialize(num_blocks=st.integers(1, 12), block_size=st.sampled_from([1, 2, 4]),
                caching=st.booleans(), num_cpu_blocks=st.integers(0, 12))
    def setup(self, num_blocks, block_size, caching, num_cpu_blocks):
        self.bm = pl.BlockManager(num_blocks, block_size, enable_prefix_caching=caching,
                                  num_cpu_blocks=num_cpu_blocks)
        self.live: dict[int, pl.Sequence] = {}
        self.swapped: dict[int, pl.Sequence] = {}
        self.expected_tokens: dict[int, list[int]] = {}
        self.next_id = 0

    def _new_id(self):
        self.next_id += 1
        return self.next_id

    # Small vocabularies make shared prefixes (and so cache hits) common.
    @rule(tokens=st.lists(st.integers(0, 2), min_size=1, max_size=12))
    def allocate(self, tokens):
        seq = pl.Sequence(self._new_id(), tokens)
        fits = self.bm.can_allocate(seq)
        try:
            cached = self.bm.allocate(seq)
        except pl.OutOfBlocks:
            assert not fits
            return
        assert fits and 0 <= cached < len(tokens)
        self.live[seq.seq_id] = seq
        self.expected_tokens[seq.seq_id] = list(tokens)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), token=st.integers(0, 2))
    def append(self, data, token):
        seq = data.draw(st.sampled_from(sorted(self.live.values(), key=lambda s: s.seq_id)))
        shared_partial = (len(seq) % self.bm.block_size
                          and self.bm.ref_count(seq.block_table[-1]) > 1)
        old_last = seq.block_table[-1]
        try:
            copy = self.bm.append_token(seq, token)
        except pl.OutOfBlocks:
            assert self.bm.num_free_blocks == 0
            return
        self.expected_tokens[seq.seq_id].append(token)
        if shared_partial:
            assert copy == (old_last, seq.block_table[-1])
        else:
            assert copy is None

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.live.values(), key=lambda s: s.seq_id)))
        child = self.bm.fork(parent, self._new_id())
        self.live[child.seq_id] = child
        self.expected_tokens[child.seq_id] = list(parent.token_ids)

    @precondition(lambda self: self.live or self.swapped)
    @rule(data=st.data())
    def free(self, data):
        pool = sorted({**self.live, **self.swapped}.values(), key=lambda s: s.seq_id)
        seq = data.draw(st.sampled_from(pool))
        self.bm.free(seq)
        self.live.pop(seq.seq_id, None)
        self.swapped.pop(seq.seq_id, None)
        del self.expected_tokens[seq.seq_id]
        try:
            self.bm.free(seq)
            raise AssertionError("double free accepted")
        except pl.DoubleFree:
            pass

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def swap_out(self, data):
        seq = data.draw(st.sampled_from(sorted(self.live.values(), key=lambda s: s.seq_id)))
        if not self.bm.can_swap_out(seq):
            return
        self.bm.swap_out(seq)
        self.swapped[seq.seq_id] = self.live.pop(seq.seq_id)

    @precondition(lambda self: self.swapped)
    @rule(data=st.data())
    def swap_in(self, data):
        seq = data.draw(st.sampled_from(sorted(self.swapped.values(), key=lambda s: s.seq_id)))
        if not self.bm.can_swap_in(seq):
            return
        self.bm.swap_in(seq)
        self.live[seq.seq_id] = self.swapped.pop(seq.seq_id)

    # ------------------------------------------------------------ invariants
    @invariant()
    def each_block_is_free_cached_or_referenced_never_two(self):
        if not hasattr(self, "bm"):
            return
        free = set(self.bm.free_block_ids)
        cached = set(self.bm.cached_block_ids)
        referenced = {b for b in range(self.bm.num_blocks) if self.bm.ref_count(b) > 0}
        assert len(free) == len(self.bm.free_block_ids)  # no block twice in the free list
        assert not free & cached and not free & referenced and not cached & referenced
        assert free | cached | referenced == set(range(self.bm.num_blocks))

    @invariant()
    def ref_count_equals_number_of_live_tables_holding_the_block(self):
        if not hasattr(self, "bm"):
            return
        holders = Counter(b for s in self.live.values() for b in set(s.block_table))
        for block in range(self.bm.num_blocks):
            assert self.bm.ref_count(block) == holders[block]

    @invariant()
    def free_plus_used_is_total(self):
        if not hasattr(self, "bm"):
            return
        assert self.bm.num_free_blocks + self.bm.num_used_blocks == self.bm.num_blocks
        assert 0.0 <= self.bm.usage <= 1.0

    @invariant()
    def slots_never_collide_except_on_shared_blocks(self):
        if not hasattr(self, "bm"):
            return
        owner = {}
        size = self.bm.block_size
        for seq in self.live.values():
            slots = self.bm.slot_mapping(seq)
            assert len(slots) == len(seq) == len(set(slots))
            assert len(seq.block_table) == -(-len(seq) // size)
            for slot in slots:
                block = slot // size
                if slot in owner and owner[slot] != seq.seq_id:
                    assert self.bm.ref_count(block) > 1, "two sequences write one private slot"
                owner.setdefault(slot, seq.seq_id)

    @invariant()
    def a_shared_block_holds_the_same_tokens_for_every_holder(self):
        if not hasattr(self, "bm"):
            return
        size, content = self.bm.block_size, {}
        for seq in self.live.values():
            for index, block in enumerate(seq.block_table):
                tokens = tuple(seq.token_ids[index * size:(index + 1) * size])
                other = content.setdefault(block, tokens)
                shorter = min(len(other), len(tokens))
                assert other[:shorter] == tokens[:shorter], f"block {block} holds two contents"

    @invariant()
    def tokens_are_exactly_what_was_appended(self):
        if not hasattr(self, "bm"):
            return
        for seq_id, seq in {**self.live, **self.swapped}.items():
            assert seq.token_ids == self.expected_tokens[seq_id]

    @invariant()
    def cpu_pool_holds_exactly_the_swapped_blocks(self):
        if not hasattr(self, "bm"):
            return
        distinct = {b for s in self.swapped.values() for b in s.block_table}
        assert self.bm.num_free_cpu_blocks == self.bm.num_cpu_blocks - len(distinct)


BlockManagerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                                 deadline=None)
TestBlockManagerMachine = BlockManagerMachine.TestCase
