"""The block manager: the garage attendant who hands out KV-cache blocks.

The KV cache is a pool of ``num_blocks`` fixed-size blocks of ``block_size`` token slots. A
sequence's *block table* (its parking ticket) lists the physical block holding each of its
logical blocks, so token position ``p`` lives in slot ``block_table[p // B] * B + p % B``.

Blocks are reference counted: ``fork`` lets sequences share blocks, and appending to a shared,
partly filled last block first copies it (copy-on-write). With prefix caching on, every full
block is also indexed by a hash of its tokens chained to its parent's hash, so a new prompt
that starts the same way reuses those blocks; a cached block nobody references stays in the
pool, reusable, until it is evicted (least recently used first).

Every public method either succeeds or raises leaving all counts, tables and caches as they
were. See notebooks/01_parking_garage.ipynb, 02_pages_and_block_tables.ipynb, 04_sharing.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass
from operator import index as _as_int
from typing import Iterable

from .errors import (DoubleFree, InvalidConfig, OutOfBlocks, PagedLabError, UnknownSequence,
                     check_fraction, check_index, check_int)
from .prefix_cache import PrefixCache, block_hashes, next_block_hash
from .sequence import Sequence


class AlreadyAllocated(PagedLabError, ValueError):
    """The sequence (or its id) already holds blocks in this manager."""


@dataclass
class _AllocationPlan:
    """What allocating a sequence would do: computed once, then checked and carried out."""

    hashes: list[int]  # chained hashes of the sequence's full blocks (prefix caching only)
    hits: list[int]  # cached blocks holding its first tokens, in order
    num_blocks: int  # blocks its table will hold: the hits, then new ones
    taken: int  # free blocks it uses up: new blocks plus cached ones revived from the free count


class _CpuPool:
    """Reference-counted blocks in CPU memory, where swapped-out sequences wait."""

    def __init__(self, num_blocks: int):
        self.free = list(range(num_blocks - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        self.ref = [0] * num_blocks

    def release(self, table: list[int]) -> None:
        """One reference less on each block of a table; unreferenced blocks are free again."""
        for block in table:
            self.ref[block] -= 1
            if self.ref[block] == 0:
                self.free.append(block)


class BlockManager:
    """Hands out KV-cache blocks to sequences; keeps block tables and reference counts.

    ``num_blocks`` blocks of ``block_size`` token slots each. ``watermark`` is the fraction of
    the pool that ``allocate`` keeps free so running sequences can still grow. ``num_cpu_blocks``
    sizes the CPU pool for ``swap_out`` (default: as many as on the GPU).
    See notebooks/01_parking_garage.ipynb.
    """

    def __init__(self, num_blocks: int, block_size: int = 16, enable_prefix_caching: bool = False,
                 watermark: float = 0.0, num_cpu_blocks: int | None = None):
        check_int("num_blocks", num_blocks, 1)
        check_int("block_size", block_size, 1)
        if num_cpu_blocks is None:
            num_cpu_blocks = num_blocks
        check_int("num_cpu_blocks", num_cpu_blocks, 0)
        check_fraction("watermark", watermark, below_one=True)
        self.num_blocks = num_blocks
        self.num_cpu_blocks = num_cpu_blocks
        self.block_size = block_size
        self.enable_prefix_caching = bool(enable_prefix_caching)
        self.watermark = float(watermark)
        self.watermark_blocks = int(watermark * num_blocks)
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        self._ref = [0] * num_blocks
        self._live: dict[int, Sequence] = {}      # seq_id -> sequence holding GPU blocks
        self._swapped: dict[int, Sequence] = {}   # seq_id -> sequence holding CPU blocks
        self._freed: set[int] = set()             # ids freed and not allocated since
        self._cpu = _CpuPool(num_cpu_blocks)
        self._cache = PrefixCache()  # stays empty with prefix caching off
        self._seq_hashes: dict[int, list[int]] = {}  # seq_id -> hashes of its computed full blocks
        self._hit_tokens: dict[int, int] = {}  # seq_id -> tokens its allocation found cached
        # Over all allocations (the prompt, plus the outputs of a sequence recomputed later):
        self.prefix_hit_tokens = 0     # tokens found in the cache
        self.prefix_query_tokens = 0   # tokens looked up

    # ------------------------------------------------------------------ figures
    @property
    def num_free_blocks(self) -> int:
        """Blocks nobody references: never used, freed, or cached and evictable."""
        return len(self._free) + self._cache.num_evictable

    @property
    def num_used_blocks(self) -> int:
        """Blocks with a reference count above zero."""
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of the pool in use, in [0, 1]."""
        return self.num_used_blocks / self.num_blocks

    @property
    def num_free_cpu_blocks(self) -> int:
        return len(self._cpu.free)

    @property
    def free_block_ids(self) -> tuple[int, ...]:
        """Blocks holding nothing (not counting cached ones)."""
        return tuple(self._free)

    @property
    def cached_block_ids(self) -> tuple[int, ...]:
        """Unreferenced blocks kept for the prefix cache, next to be evicted first."""
        return self._cache.evictable_ids

    @property
    def sequences(self) -> list[Sequence]:
        """Sequences holding GPU blocks, in allocation order."""
        return list(self._live.values())

    def ref_count(self, block_id: int) -> int:
        """How many live block tables hold this GPU block."""
        check_index("block_id", block_id, self.num_blocks)
        return self._ref[block_id]

    def is_cached(self, block_id: int) -> bool:
        """Whether the block is indexed by the prefix cache (full and hashed)."""
        return block_id in self._cache

    def blocks_needed(self, seq: Sequence) -> int:
        """Blocks the sequence's tokens fill, ignoring any sharing or cache."""
        return -(-len(seq.token_ids) // self.block_size)

    def slot_mapping(self, seq: Sequence, start: int = 0, end: int | None = None) -> list[int]:
        """Physical slot of token positions ``start .. end - 1`` (default: every token with a block).

        The one slot formula of the package: position p lives in slot
        ``block_table[p // B] * B + p % B``. See notebooks/02_pages_and_block_tables.ipynb.
        """
        if self._live.get(seq.seq_id) is not seq:
            self._require_live(seq, "slot_mapping")
        size, table = self.block_size, seq.block_table
        if end is None:  # every token that has a block (a prompt mid-prefill has only some)
            end = min(len(seq.token_ids), len(table) * size)
        if type(start) is not int or type(end) is not int:
            check_int("start", start, 0)
            check_int("end", end, 0)
        if not 0 <= start <= end <= len(table) * size:
            raise InvalidConfig(f"positions {start}..{end - 1} are not all in sequence "
                                f"{seq.seq_id}'s blocks ({len(table)} blocks of {size}): ask "
                                f"for 0 <= start <= end <= {len(table) * size}")
        return [table[p // size] * size + p % size for p in range(start, end)]

    def slots_to_write(self, seq: Sequence, start: int, end: int) -> list[int]:
        """Where the new K/V of positions ``start .. end - 1`` go; -1 where the cache already
        holds them.

        That happens once: a prompt found whole in the prefix cache recomputes its last token
        (for its logits), whose K/V already sit in a cached block. Writing the same numbers again
        is useless, and two such prompts in one batch would name one slot twice.
        """
        slots = self.slot_mapping(seq, start, end)
        cached_until = self._hit_tokens.get(seq.seq_id, 0)
        return [-1 if start + i < cached_until else slot for i, slot in enumerate(slots)]

    # ------------------------------------------------------------------ allocate
    def _plan(self, seq: Sequence, num_tokens: int | None = None) -> _AllocationPlan:
        """What allocate(seq, num_tokens) would do, without doing it."""
        size = self.block_size
        if num_tokens is None:
            num_tokens = len(seq.token_ids)
        else:
            self._check_num_tokens(seq, num_tokens)
        need = -(-num_tokens // size)
        if not self.enable_prefix_caching:
            return _AllocationPlan([], [], need, need)
        hashes = block_hashes(seq.token_ids, size)
        hits = self._cache.lookup(hashes)
        revived = sum(1 for block in hits if self._ref[block] == 0)  # leave the evictable set
        need = max(need, len(hits))  # cache hits are always taken whole
        return _AllocationPlan(hashes, hits, need, need - len(hits) + revived)

    def blocks_to_allocate(self, seq: Sequence, num_tokens: int | None = None) -> int:
        """Free blocks allocate(seq, num_tokens) would take now: new ones plus revived cached ones."""
        return self._plan(seq, num_tokens).taken

    def cached_prefix_tokens(self, seq: Sequence) -> int:
        """Tokens allocate(seq) would find in the prefix cache now (0 with caching off)."""
        if not self.enable_prefix_caching or not seq.token_ids:
            return 0
        hits = self._cache.lookup(block_hashes(seq.token_ids, self.block_size))
        return self._usable_hit_tokens(seq, hits)

    def _usable_hit_tokens(self, seq: Sequence, hits: list[int]) -> int:
        """Tokens the hits hold, less the last one of a prompt found whole: it is recomputed,
        because a prefill of zero tokens would give no logits."""
        return min(len(hits) * self.block_size, len(seq.token_ids) - 1)

    def can_allocate(self, seq: Sequence, num_tokens: int | None = None) -> bool:
        """Whether allocate(seq, num_tokens) would succeed now, keeping the watermark free."""
        if not seq.token_ids:
            return False
        return self.num_free_blocks - self._plan(seq, num_tokens).taken >= self.watermark_blocks

    def allocate(self, seq: Sequence, num_tokens: int | None = None) -> int:
        """Give a waiting sequence blocks for its first ``num_tokens`` positions (default: all
        its tokens), all or nothing; blocks found in the prefix cache are always taken whole.

        Returns how many of its tokens were found in the prefix cache (0 with caching off); a
        prompt that is entirely cached still recomputes its last token. The step that allocates
        computes the rest of those positions: ``seq.num_computed_tokens`` becomes ``num_tokens``.
        With chunked prefill the scheduler gives a long prompt its first chunk's blocks here and
        the next chunks' with :meth:`extend`.
        """
        if seq.seq_id in self._live or seq.seq_id in self._swapped:
            raise AlreadyAllocated(f"sequence {seq.seq_id} already holds blocks: free it first, "
                                   "or give the new sequence another seq_id")
        if seq.block_table:
            raise AlreadyAllocated(f"sequence {seq.seq_id} already has a block table "
                                   f"{seq.block_table}: it belongs to another manager")
        if not seq.token_ids:
            raise InvalidConfig(f"sequence {seq.seq_id} has no tokens: a prompt needs at least one")
        need = self.blocks_needed(seq)
        if need > self.num_blocks - self.watermark_blocks:
            raise OutOfBlocks(
                f"sequence {seq.seq_id} needs {need} blocks ({len(seq.token_ids)} tokens, "
                f"block_size={self.block_size}) but the pool can never give more than "
                f"{self.num_blocks - self.watermark_blocks} ({self.num_blocks} total, watermark "
                f"{self.watermark_blocks}): use more or bigger blocks, or a shorter prompt")
        plan = self._plan(seq, num_tokens)
        hits, taken = plan.hits, plan.taken
        if self.num_free_blocks - taken < self.watermark_blocks:
            raise OutOfBlocks(
                f"sequence {seq.seq_id} needs {taken} free blocks, {self.num_free_blocks} free "
                f"(block_size={self.block_size}, {self.num_blocks} total, watermark "
                f"{self.watermark_blocks}): free a sequence or wait")
        # Nothing can fail from here on.
        for block in hits:  # claim hits first so making room below cannot evict them
            if self._ref[block] == 0:
                self._cache.revive(block)
            self._ref[block] += 1
        seq.block_table = hits + [self._take_block() for _ in range(plan.num_blocks - len(hits))]
        self._live[seq.seq_id] = seq
        self._freed.discard(seq.seq_id)
        cached = self._usable_hit_tokens(seq, hits)
        seq.num_cached_tokens = cached
        seq.num_computed_tokens = max(cached, num_tokens or len(seq.token_ids))  # by this step
        if self.enable_prefix_caching:
            self._seq_hashes[seq.seq_id] = plan.hashes[:len(hits)]
            self._hit_tokens[seq.seq_id] = len(hits) * self.block_size
            self._cache_computed_blocks(seq, seq.num_computed_tokens)
        self.prefix_hit_tokens += cached
        self.prefix_query_tokens += len(seq.token_ids)
        return cached

    def extend(self, seq: Sequence, num_tokens: int) -> int:
        """Grow a live sequence's block table to cover its first ``num_tokens`` positions, for
        the next chunk of its prefill; all or nothing. Returns the number of blocks taken.
        See notebooks/05_scheduling.ipynb.
        """
        self._require_live(seq, "extend")
        self._check_num_tokens(seq, num_tokens)
        need = self.blocks_to_extend(seq, num_tokens)
        if need > self.num_free_blocks:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs {need} more blocks, "
                              f"{self.num_free_blocks} free (block_size={self.block_size}): "
                              "wait for blocks or preempt a sequence")
        seq.block_table.extend(self._take_block() for _ in range(need))
        seq.num_computed_tokens = max(seq.num_computed_tokens, num_tokens)  # by this step
        if self.enable_prefix_caching:
            self._cache_computed_blocks(seq, seq.num_computed_tokens)
        return need

    def blocks_to_extend(self, seq: Sequence, num_tokens: int) -> int:
        """New blocks extend(seq, num_tokens) would take: those its table lacks for the first
        ``num_tokens`` positions."""
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def _take_block(self) -> int:
        """A block with no reference: a never-used one first, else evict the LRU cached one."""
        block = self._free.pop() if self._free else self._cache.evict()
        self._ref[block] = 1
        return block

    # ------------------------------------------------------------------ grow
    def can_append(self, seq: Sequence) -> bool:
        """Whether append_token(seq, ...) can succeed now (it may need one free block)."""
        self._require_live(seq, "can_append")
        n = len(seq.token_ids)
        needs_block = n % self.block_size == 0 or self._ref[seq.block_table[-1]] > 1
        return not needs_block or self.num_free_blocks > 0

    def append_token(self, seq: Sequence, token_id: int) -> tuple[int, int] | None:
        """Append one token; take a new block only when the last one is full.

        If the last block is partly filled and shared, it is copied first (copy-on-write) and
        the ``(src, dst)`` block copy the KV cache must perform is returned; otherwise None.
        The new token's K/V are computed later (at the next step), every earlier token's are
        in the cache already: that is when a full block may enter the prefix cache.
        """
        if self._live.get(seq.seq_id) is not seq:
            self._require_live(seq, "append_token")
        if type(token_id) is not int:
            token_id = self._as_token(token_id)
        tokens, table = seq.token_ids, seq.block_table
        filled = len(tokens) % self.block_size
        if filled and self._ref[table[-1]] == 1:  # hot path: room in our own last block
            tokens.append(token_id)
            return None
        if self.num_free_blocks == 0:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs 1 more block, 0 free "
                              f"(block_size={self.block_size}, {self.num_blocks} total): "
                              "preempt or free a sequence first")
        copy = None
        if filled:  # the partly filled last block is shared: copy it before writing
            src = table[-1]
            self._ref[src] -= 1  # still >= 1: someone else holds it
            table[-1] = dst = self._take_block()
            copy = (src, dst)
        else:
            if self.enable_prefix_caching:  # the full last block now has all its K/V
                self._cache_computed_blocks(seq, len(tokens))
            table.append(self._take_block())
        tokens.append(token_id)
        return copy

    def _as_token(self, token_id) -> int:
        try:
            return _as_int(token_id)
        except TypeError:
            raise TypeError(f"token_id must be an int, got {token_id!r}") from None

    def _cache_computed_blocks(self, seq: Sequence, num_computed: int) -> None:
        """Index each full block of seq whose tokens (positions < num_computed) have K/V.

        A block is never cached while its last token's K/V are still to be computed: a request
        that ends on that token would otherwise leave a hole that a later prompt reads. (A
        prompt's full blocks are indexed at ``allocate``: the prefill of that same step computes
        them, layer by layer, before any other sequence can read them.)
        """
        hashes = self._seq_hashes[seq.seq_id]
        while len(hashes) < num_computed // self.block_size:
            hashes.append(next_block_hash(hashes, seq.token_ids, self.block_size))
            self._cache.add(seq.block_table[len(hashes) - 1], hashes[-1])

    # ------------------------------------------------------------------ share
    def fork(self, parent: Sequence, child_id: int) -> Sequence:
        """A new sequence that shares every block of ``parent`` (ref counts + 1).

        See notebooks/04_sharing.ipynb.
        """
        self._require_live(parent, "fork")
        if child_id in self._live or child_id in self._swapped:
            raise AlreadyAllocated(f"seq_id {child_id} is already in use: fork to a fresh id")
        child = Sequence(child_id, parent.token_ids, arrival=parent.arrival)
        child.prompt_len = parent.prompt_len
        child.status = parent.status
        child.num_cached_tokens = parent.num_cached_tokens
        child.num_computed_tokens = parent.num_computed_tokens
        child.block_table = list(parent.block_table)
        for block in child.block_table:
            self._ref[block] += 1
        self._live[child_id] = child
        self._freed.discard(child_id)
        if self.enable_prefix_caching:
            self._seq_hashes[child_id] = list(self._seq_hashes[parent.seq_id])
        return child

    # ------------------------------------------------------------------ release
    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks: ref counts - 1; a block nobody holds becomes free.

        A cached block goes to the evictable end of the prefix cache instead; the sequence's
        last blocks are queued first, so they are evicted before its shared prefix.
        """
        if self._swapped.get(seq.seq_id) is seq:
            del self._swapped[seq.seq_id]
            self._cpu.release(seq.block_table)
        else:
            self._require_live(seq, "free")
            del self._live[seq.seq_id]
            self._release(seq.block_table)
        self._seq_hashes.pop(seq.seq_id, None)
        self._hit_tokens.pop(seq.seq_id, None)
        seq.block_table = []
        self._freed.add(seq.seq_id)

    def _release(self, table: list[int]) -> None:
        for block in reversed(table):
            self._ref[block] -= 1
            if self._ref[block] == 0:
                if block in self._cache:
                    self._cache.park(block)
                else:
                    self._free.append(block)

    # ------------------------------------------------------------------ swap
    @staticmethod
    def _group(seqs: Sequence | Iterable[Sequence]) -> list[Sequence]:
        return [seqs] if isinstance(seqs, Sequence) else list(seqs)

    def _distinct_blocks(self, group: list[Sequence]) -> list[int]:
        return list(dict.fromkeys(block for seq in group for block in seq.block_table))

    def can_swap_out(self, seqs: Sequence | Iterable[Sequence]) -> bool:
        """Whether the CPU pool has room for these sequences' blocks."""
        group = self._group(seqs)
        return len(self._distinct_blocks(group)) <= len(self._cpu.free)

    def swap_out(self, seqs: Sequence | Iterable[Sequence]) -> list[tuple[int, int]]:
        """Move sequences' blocks to the CPU pool; returns the (gpu, cpu) copies to perform.

        Pass a whole group (e.g. the samples of one request) to swap blocks they share once.
        The block tables then name CPU blocks until swap_in. See notebooks/05_scheduling.ipynb.
        """
        group = self._group(seqs)
        for seq in group:
            self._require_live(seq, "swap_out")
        if len({seq.seq_id for seq in group}) != len(group):
            raise InvalidConfig("swap_out got the same sequence twice")
        gpu_blocks = self._distinct_blocks(group)
        if len(gpu_blocks) > len(self._cpu.free):
            raise OutOfBlocks(f"swapping out needs {len(gpu_blocks)} CPU blocks, "
                              f"{len(self._cpu.free)} free: raise num_cpu_blocks or preempt "
                              "by recompute")
        mapping = {gpu: self._cpu.free.pop() for gpu in gpu_blocks}
        for seq in group:
            del self._live[seq.seq_id]
            self._release(seq.block_table)
            seq.block_table = [mapping[gpu] for gpu in seq.block_table]
            for cpu in seq.block_table:
                self._cpu.ref[cpu] += 1
            self._swapped[seq.seq_id] = seq
        return list(mapping.items())

    def can_swap_in(self, seqs: Sequence | Iterable[Sequence]) -> bool:
        """Whether the GPU pool has room (above the watermark) for these swapped sequences."""
        group = self._group(seqs)
        need = len(self._distinct_blocks(group))
        return self.num_free_blocks - need >= self.watermark_blocks

    def swap_in(self, seqs: Sequence | Iterable[Sequence]) -> list[tuple[int, int]]:
        """Bring swapped sequences back to GPU blocks; returns the (cpu, gpu) copies to perform."""
        group = self._group(seqs)
        for seq in group:
            if self._swapped.get(seq.seq_id) is not seq:
                self._require_live(seq, "swap_in")  # raises for unknown / freed ones
                raise InvalidConfig(f"sequence {seq.seq_id} is not swapped out: nothing to swap in")
        if len({seq.seq_id for seq in group}) != len(group):
            raise InvalidConfig("swap_in got the same sequence twice")
        cpu_blocks = self._distinct_blocks(group)
        if len(cpu_blocks) > self.num_free_blocks:
            raise OutOfBlocks(f"swapping in needs {len(cpu_blocks)} blocks, "
                              f"{self.num_free_blocks} free: free or preempt a sequence first")
        mapping = {}
        for cpu in cpu_blocks:
            mapping[cpu] = gpu = self._take_block()
            self._ref[gpu] = 0  # counted per table below
        for seq in group:
            del self._swapped[seq.seq_id]
            self._cpu.release(seq.block_table)
            seq.block_table = [mapping[cpu] for cpu in seq.block_table]
            for gpu in seq.block_table:
                self._ref[gpu] += 1
            self._live[seq.seq_id] = seq
            self._hit_tokens.pop(seq.seq_id, None)
            if self.enable_prefix_caching:  # fresh copies: index those fully computed
                self._seq_hashes[seq.seq_id] = []
                self._cache_computed_blocks(seq, seq.num_computed_tokens)
        return list(mapping.items())

    def is_swapped(self, seq: Sequence) -> bool:
        return self._swapped.get(seq.seq_id) is seq

    # ------------------------------------------------------------------ errors
    @staticmethod
    def _check_num_tokens(seq: Sequence, num_tokens) -> None:
        check_int("num_tokens", num_tokens, 1)
        if num_tokens > len(seq.token_ids):
            raise InvalidConfig(f"num_tokens={num_tokens} is more than sequence {seq.seq_id}'s "
                                f"{len(seq.token_ids)} tokens: blocks are given to tokens only")

    def _require_live(self, seq: Sequence, action: str) -> None:
        if not isinstance(seq, Sequence):
            raise TypeError(f"{action} expects a pagedlab.Sequence, got {type(seq).__name__}")
        if self._live.get(seq.seq_id) is seq:
            return
        if self._swapped.get(seq.seq_id) is seq:
            raise PagedLabError(f"sequence {seq.seq_id} is swapped out: swap_in it before {action}")
        if seq.seq_id in self._freed and action == "free":
            raise DoubleFree(f"sequence {seq.seq_id} was already freed: free each sequence once")
        if seq.seq_id in self._freed:
            raise UnknownSequence(f"sequence {seq.seq_id} was freed: allocate it again before {action}")
        raise UnknownSequence(f"sequence {seq.seq_id} is not allocated in this manager: "
                              f"call allocate(seq) before {action}")

    def __repr__(self) -> str:
        return (f"BlockManager(num_blocks={self.num_blocks}, block_size={self.block_size}, "
                f"free={self.num_free_blocks}, used={self.num_used_blocks}, "
                f"sequences={len(self._live)}, swapped={len(self._swapped)})")
