"""Contiguous KV-cache reservation: the baseline that PagedAttention replaces.

Before paging, a serving system (Orca, in the paper) gave each request one contiguous region of
the KV cache, reserved up front for the longest the request might grow. The paper compares
three ways of guessing that length (its Fig. 2):

- ``max``:    the model's maximum sequence length (2048), whatever the request;
- ``pow2``:   the prompt plus the next power of two of the output length (at most 2x too much);
- ``oracle``: the prompt plus the true output length (impossible in practice: a lower bound).

Regions are placed by a buddy allocator, as in the paper's baselines: the pool is cut into
power-of-two blocks, a region takes the smallest block that holds it, and freed blocks merge
with their free "buddy" again. The slots of a block beyond its region, and free blocks too
small for the next request, are the external fragmentation that paging removes.
See notebooks/03_where_memory_goes.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DoubleFree, InvalidConfig, OutOfBlocks, UnknownSequence, check_int

POLICIES = ("max", "pow2", "oracle")


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (x >= 1)."""
    return 1 << (x - 1).bit_length()


@dataclass(frozen=True)
class Region:
    """One request's reservation: ``size`` slots from ``start``, inside a buddy block.

    ``final_len`` is the prompt plus the true output: the slots the request will really fill.
    """

    start: int       # first slot of the region (and of its buddy block)
    size: int        # slots reserved by the policy: prompt + guessed output
    block: int       # slots of the power-of-two buddy block holding it (>= size)
    final_len: int   # prompt + true output length, in tokens


class BuddyAllocator:
    """Power-of-two blocks of a pool of ``num_slots``; split to allocate, merge when freed."""

    def __init__(self, num_slots: int, max_block: int):
        self.num_slots = num_slots
        self.max_order = max_block.bit_length() - 1           # largest block: 2**max_order
        self.free_lists: list[set[int]] = [set() for _ in range(self.max_order + 1)]
        self.num_free = num_slots
        start = 0
        for order in range(self.max_order, -1, -1):           # carve the pool, largest first
            while num_slots - start >= 1 << order:
                self.free_lists[order].add(start)
                start += 1 << order
                if order < self.max_order:                    # below the top, one of each size
                    break

    def free_slots_smaller_than(self, size: int) -> int:
        """Free slots in blocks too small to hold ``size`` slots."""
        want = (size - 1).bit_length()
        return sum(len(self.free_lists[o]) << o for o in range(min(want, self.max_order + 1)))

    def largest_free(self) -> int:
        """Slots of the largest free block (0 when the pool is full)."""
        for order in range(self.max_order, -1, -1):
            if self.free_lists[order]:
                return 1 << order
        return 0

    def alloc(self, size: int) -> int | None:
        """Start of a free block of next_pow2(size) slots, or None if there is none."""
        want = (size - 1).bit_length()
        order = next((o for o in range(want, self.max_order + 1) if self.free_lists[o]), None)
        if order is None:
            return None
        start = min(self.free_lists[order])                   # lowest address: deterministic
        self.free_lists[order].remove(start)
        while order > want:                                   # split, keep the lower half
            order -= 1
            self.free_lists[order].add(start + (1 << order))
        self.num_free -= 1 << want
        return start

    def release(self, start: int, size: int) -> None:
        """Return the block of next_pow2(size) slots at ``start``, merging free buddies."""
        order = (size - 1).bit_length()
        self.num_free += 1 << order
        while order < self.max_order:
            buddy = start ^ (1 << order)
            if buddy not in self.free_lists[order]:
                break
            self.free_lists[order].remove(buddy)
            start = min(start, buddy)
            order += 1
        self.free_lists[order].add(start)


class ContiguousAllocator:
    """One contiguous KV region per request, reserved up front (the paper's Orca baselines).

    ``num_token_slots`` is the pool size in tokens; ``policy`` is ``"max"``, ``"pow2"`` or
    ``"oracle"`` (see the module docstring); ``max_seq_len`` is the model's longest sequence.
    See notebooks/03_where_memory_goes.ipynb.
    """

    def __init__(self, num_token_slots: int, policy: str = "max", max_seq_len: int = 2048):
        check_int("num_token_slots", num_token_slots, 1)
        check_int("max_seq_len", max_seq_len, 1)
        if policy not in POLICIES:
            raise InvalidConfig(f"policy must be one of {POLICIES}, got {policy!r}")
        self.num_token_slots = num_token_slots
        self.policy = policy
        self.max_seq_len = max_seq_len
        self._buddy = BuddyAllocator(num_token_slots, next_pow2(max_seq_len))
        self.regions: dict[int, Region] = {}   # request id -> its region
        self._freed: set[int] = set()
        self.num_reserved_slots = 0            # sum of region sizes
        self.num_final_slots = 0               # sum of final lengths (prompt + true output)

    # ------------------------------------------------------------------ sizes
    def region_size(self, prompt_len: int, output_len: int) -> int:
        """Slots the policy reserves for a request: prompt + guessed output, in tokens."""
        check_int("prompt_len", prompt_len, 1)
        check_int("output_len", output_len, 1)
        if prompt_len + output_len > self.max_seq_len:
            raise InvalidConfig(f"prompt_len + output_len = {prompt_len + output_len} exceeds "
                                f"max_seq_len={self.max_seq_len}: shorten the request or raise "
                                "max_seq_len")
        if self.policy == "max":
            return self.max_seq_len
        if self.policy == "pow2":
            return prompt_len + min(next_pow2(output_len), self.max_seq_len - prompt_len)
        return prompt_len + output_len

    def block_size_for(self, prompt_len: int, output_len: int) -> int:
        """Slots of the buddy block the request's region occupies (a power of two)."""
        return next_pow2(self.region_size(prompt_len, output_len))

    # ------------------------------------------------------------------ figures
    @property
    def num_used_slots(self) -> int:
        """Slots inside buddy blocks that hold a region (regions plus their rounding)."""
        return self.num_token_slots - self._buddy.num_free

    @property
    def num_free_slots(self) -> int:
        """Slots in free buddy blocks."""
        return self._buddy.num_free

    @property
    def largest_free_region(self) -> int:
        """The largest region that could be placed now, in slots."""
        return self._buddy.largest_free()

    @property
    def rounding_slack(self) -> int:
        """Slots of buddy blocks beyond their regions: taken, yet no request will use them."""
        return self.num_used_slots - self.num_reserved_slots

    def external_fragmentation(self, region_size: int | None = None) -> int:
        """Slots outside every region that a new region of ``region_size`` slots cannot use.

        The buddy blocks' rounding slack plus the free blocks too small for such a region
        (with no region given, only the slack). The rest of the free slots are idle.
        """
        unusable = 0 if region_size is None else self._buddy.free_slots_smaller_than(region_size)
        return self.rounding_slack + unusable

    @property
    def usage(self) -> float:
        """Fraction of the pool inside some request's buddy block, in [0, 1]."""
        return self.num_used_slots / self.num_token_slots

    # ------------------------------------------------------------------ allocate / free
    def can_allocate(self, prompt_len: int, output_len: int) -> bool:
        """Whether a region for this request fits somewhere right now."""
        return self.block_size_for(prompt_len, output_len) <= self.largest_free_region

    def allocate(self, request_id: int, prompt_len: int, output_len: int) -> int:
        """Reserve a contiguous region for the request; returns its first slot.

        All or nothing: raises OutOfBlocks (nothing changed) when no free block is big enough.
        """
        if request_id in self.regions:
            raise InvalidConfig(f"request {request_id} already holds a region: free it first, "
                                "or use another request id")
        size = self.region_size(prompt_len, output_len)
        block = next_pow2(size)
        if block > self._buddy.num_slots:
            raise OutOfBlocks(f"request {request_id} needs a {block}-slot region (policy="
                              f"{self.policy}) but the pool has only {self.num_token_slots} "
                              "slots: use a bigger pool")
        start = self._buddy.alloc(size)
        if start is None:
            raise OutOfBlocks(f"request {request_id} needs a {block}-slot region, the largest "
                              f"free one has {self.largest_free_region} ({self.num_free_slots} of "
                              f"{self.num_token_slots} slots free, policy={self.policy}): "
                              "free a request or wait")
        self.regions[request_id] = Region(start, size, block, prompt_len + output_len)
        self._freed.discard(request_id)
        self.num_reserved_slots += size
        self.num_final_slots += prompt_len + output_len
        return start

    def free(self, request_id: int) -> None:
        """Give a request's region back to the pool (its buddy block merges if it can)."""
        region = self.regions.get(request_id)
        if region is None:
            if request_id in self._freed:
                raise DoubleFree(f"request {request_id} was already freed: free each request once")
            raise UnknownSequence(f"request {request_id} holds no region: allocate it first")
        del self.regions[request_id]
        self._freed.add(request_id)
        self._buddy.release(region.start, region.size)
        self.num_reserved_slots -= region.size
        self.num_final_slots -= region.final_len

    def __repr__(self) -> str:
        return (f"ContiguousAllocator(num_token_slots={self.num_token_slots}, "
                f"policy={self.policy!r}, max_seq_len={self.max_seq_len}, "
                f"requests={len(self.regions)}, free={self.num_free_slots})")
