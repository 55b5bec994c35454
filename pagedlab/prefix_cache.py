"""The prefix cache: full KV-cache blocks found again by what they hold.

A full block is named by a hash of its tokens chained to the hash of the block before it, so
equal hashes mean equal prefixes, not just equal blocks. A new prompt that starts like an
earlier one finds those blocks and shares them instead of computing them again. A cached block
that nobody references any more stays here, still holding its K/V, until the pool needs the
space: then the least recently used one is evicted first.

The :class:`~pagedlab.BlockManager` owns the reference counts; this class only remembers
which block holds which prefix, and which unreferenced blocks may be evicted.
See notebooks/04_sharing.ipynb and exercises/ex04_prefix_cache.ipynb.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence as Tokens


def next_block_hash(hashes: list[int], tokens: Tokens[int], block_size: int) -> int:
    """The hash of the full block after ``hashes``: its tokens, chained to the block before."""
    start = len(hashes) * block_size
    return hash((hashes[-1] if hashes else None, tuple(tokens[start:start + block_size])))


def block_hashes(tokens: Tokens[int], block_size: int) -> list[int]:
    """Chained hashes of every full block of ``tokens``."""
    hashes: list[int] = []
    for _ in range(len(tokens) // block_size):
        hashes.append(next_block_hash(hashes, tokens, block_size))
    return hashes


class PrefixCache:
    """Which block holds which prefix hash, and the unreferenced ones in least-recent order."""

    def __init__(self) -> None:
        self._block_of: dict[int, int] = {}   # prefix hash -> block id
        self._hash_of: dict[int, int] = {}    # block id -> prefix hash
        self._evictable: OrderedDict[int, None] = OrderedDict()  # oldest first

    def __contains__(self, block: int) -> bool:
        return block in self._hash_of

    @property
    def num_evictable(self) -> int:
        return len(self._evictable)

    @property
    def evictable_ids(self) -> tuple[int, ...]:
        """Unreferenced cached blocks, the next to be evicted first."""
        return tuple(self._evictable)

    def lookup(self, hashes: list[int]) -> list[int]:
        """Blocks holding the longest cached prefix of ``hashes``."""
        hits = []
        for block_hash in hashes:
            block = self._block_of.get(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def add(self, block: int, block_hash: int) -> None:
        """Remember that ``block`` holds this prefix (the first block with it wins)."""
        if block_hash not in self._block_of:
            self._block_of[block_hash] = block
            self._hash_of[block] = block_hash

    def park(self, block: int) -> None:
        """A cached block lost its last reference: keep it, most recently used."""
        self._evictable[block] = None

    def revive(self, block: int) -> None:
        """A parked block is referenced again (a cache hit): it may no longer be evicted."""
        del self._evictable[block]

    def evict(self) -> int:
        """Forget the least recently used parked block and hand it back for reuse."""
        block, _ = self._evictable.popitem(last=False)
        del self._block_of[self._hash_of.pop(block)]
        return block
