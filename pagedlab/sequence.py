"""A request's tokens and its block table: the car and its parking ticket.

See notebooks/01_parking_garage.ipynb and notebooks/02_pages_and_block_tables.ipynb.
"""
from __future__ import annotations

import enum
from typing import Iterable


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life (the scheduler moves it between these)."""

    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"
    FINISHED = "finished"


class Sequence:
    """One sequence of token ids and the block table that says where its K/V live.

    ``block_table[i]`` is the physical block holding logical block ``i``, i.e. token positions
    ``i * block_size`` to ``(i + 1) * block_size - 1``. The :class:`~pagedlab.BlockManager`
    fills and updates it; a sequence never picks its own blocks.
    """

    __slots__ = ("seq_id", "token_ids", "prompt_len", "block_table", "status",
                 "arrival", "num_cached_tokens", "num_computed_tokens")

    def __init__(self, seq_id: int, token_ids: Iterable[int], arrival: float = 0.0):
        token_ids = list(token_ids)
        for token in token_ids:
            if not isinstance(token, int) or isinstance(token, bool):
                raise TypeError(f"token ids must be ints, got {token!r} ({type(token).__name__})")
        self.seq_id = seq_id
        self.token_ids: list[int] = token_ids
        self.prompt_len = len(token_ids)
        self.block_table: list[int] = []
        self.status = SequenceStatus.WAITING
        self.arrival = arrival
        self.num_cached_tokens = 0  # tokens found in the prefix cache at the last allocation
        # Positions whose K/V are in the cache once the step just scheduled has run: a prefill
        # raises it chunk by chunk; between decode steps it is len - 1 (the newest token's K/V
        # are computed by the next step).
        self.num_computed_tokens = 0

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        """Tokens generated after the prompt."""
        return self.token_ids[self.prompt_len:]

    def num_blocks(self, block_size: int) -> int:
        """Logical blocks needed to hold every token: ceil(len / block_size)."""
        return -(-len(self.token_ids) // block_size)

    def __repr__(self) -> str:
        return (f"Sequence(seq_id={self.seq_id!r}, num_tokens={len(self.token_ids)}, "
                f"status={self.status.value}, block_table={self.block_table})")
