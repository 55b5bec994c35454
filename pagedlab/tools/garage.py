"""``pagedlab garage``: the parking-garage story of the KV cache, told in the terminal.

The garage is the KV-cache pool; each parking space is a block of ``block_size`` token slots; a
car is a sequence whose length grows as it generates; the attendant is the
:class:`~pagedlab.BlockManager`; the ticket each car keeps is its block table. The scenes are
those of notebooks/01_parking_garage.ipynb.
"""
from __future__ import annotations

import argparse
import random
import string

from ..blocks import BlockManager
from ..errors import OutOfBlocks
from ..sequence import Sequence

NEXT_WORDS = ["jumps", "over", "the", "lazy", "dog", "again", "and", "waves", "back", "today"]
TEN_TOKENS = "a long request of exactly ten tokens arrives right now".split()


class Garage:
    """A block manager plus the words behind each token id, so tables can be printed."""

    def __init__(self, num_blocks: int, block_size: int, seed: int):
        self.manager = BlockManager(num_blocks, block_size)
        self.rng = random.Random(seed)
        # The attendant hands out spaces in no particular order: shuffle its free list once.
        self.rng.shuffle(self.manager._free)
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []
        self.cars: dict[int, Sequence] = {}

    def token(self, word: str) -> int:
        if word not in self.vocab:
            self.vocab[word] = len(self.words)
            self.words.append(word)
        return self.vocab[word]

    def arrive(self, car_id: int, text: str) -> str:
        seq = Sequence(car_id, [self.token(word) for word in text.split()])
        try:
            self.manager.allocate(seq)
        except OutOfBlocks as error:
            return (f"car {car_id} ({len(seq)} tokens) is turned away, and no space was taken:\n"
                    f"  OutOfBlocks: {error}")
        self.cars[car_id] = seq
        spaces = len(seq.block_table)
        return f"car {car_id} parks {len(seq)} tokens in {spaces} space{'s' * (spaces != 1)}"

    def step(self) -> list[str]:
        lines = []
        for car_id, seq in self.cars.items():
            word = self.rng.choice(NEXT_WORDS)
            before = len(seq.block_table)
            try:
                self.manager.append_token(seq, self.token(word))
            except OutOfBlocks as error:
                lines.append(f"car {car_id} cannot grow: {error}")
                continue
            new = "takes a new space" if len(seq.block_table) > before else "fits in its last space"
            lines.append(f"car {car_id} generates {word!r}: {new}")
        return lines

    def leave(self, car_id: int) -> str:
        seq = self.cars.pop(car_id)
        spaces = list(seq.block_table)
        self.manager.free(seq)
        return f"car {car_id} leaves; spaces {spaces} are free again"

    def render(self) -> str:
        """The garage grid (one cell per space) and every car's ticket."""
        manager, size = self.manager, self.manager.block_size
        owner: dict[int, tuple[str, int]] = {}
        for seq in self.cars.values():
            letter = _letter(seq.seq_id)
            for index, block in enumerate(seq.block_table):
                filled = min(size, len(seq) - index * size)
                owner[block] = (letter, filled)
        cells = []
        for block in range(manager.num_blocks):
            letter, filled = owner.get(block, (".", 0))
            body = letter * filled + ("_" if letter != "." else ".") * (size - filled)
            cells.append(f"{block:>2}[{body}]")
        per_row = max(1, 72 // (len(cells[0]) + 1))
        rows = [" ".join(cells[i:i + per_row]) for i in range(0, len(cells), per_row)]
        lines = ["  " + row for row in rows]
        lines.append(f"  free spaces: {manager.num_free_blocks} of {manager.num_blocks}  "
                     f"(each space holds {size} tokens; '_' = reserved slot not yet used)")
        for seq in self.cars.values():
            text = " ".join(self.words[t] for t in seq.token_ids)
            lines.append(f"  ticket of car {seq.seq_id} ({_letter(seq.seq_id)}): "
                         f"block table {seq.block_table}  <- {text!r}")
        return "\n".join(lines)


def _letter(car_id: int) -> str:
    return string.ascii_uppercase[(car_id - 1) % 26]


def story(num_blocks: int = 20, block_size: int = 2, seed: int = 0) -> str:
    """The whole story as text: the scenes of lesson 01."""
    garage = Garage(num_blocks, block_size, seed)
    out = []

    def scene(title: str, *events: str) -> None:
        out.append(f"\n== {title} ==")
        out.extend(f"  > {event}" for event in events if event)
        out.append(garage.render())

    scene(f"An empty garage: {num_blocks} spaces of {block_size} token slots")
    scene("Car 1 arrives with the prompt 'The quick brown fox'",
          garage.arrive(1, "The quick brown fox"))
    scene("Car 2 arrives with the prompt 'Hello World'", garage.arrive(2, "Hello World"))
    scene("Generation step 1: every parked car adds one token", *garage.step())
    scene("Generation step 2", *garage.step())
    scene("Car 1 is done and leaves", garage.leave(1) if 1 in garage.cars else "")
    scene("A 10-token request arrives", garage.arrive(3, " ".join(TEN_TOKENS)))
    out.append("\nNothing was ever parked half way: a request gets all its spaces or none, and\n"
               "spaces need not be next to each other, because the ticket says where each part is.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagedlab garage", description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20, help="spaces in the garage (default 20)")
    parser.add_argument("--block-size", type=int, default=2, help="token slots per space (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for space order and next words")
    args = parser.parse_args(argv)
    try:
        print(story(args.blocks, args.block_size, args.seed))
    except ValueError as error:
        parser.error(str(error))
    return 0
