"""Why a block manager's step went wrong: the invariant it broke, read from what it did.

:func:`.blockdriver.compare` finds the first step where the learner's manager and the reference
differ; :func:`diagnose` looks at that step's raw observations (every step before it agreed, so
the reference's state before the step is the learner's) and names what broke: a failed call that
changed something, a block on two tickets, a block lost from the pool, a table too short for its
tokens, a second free accepted, a stranger's free accepted, a table kept after free, a
re-allocated sequence still counted as freed, a slot outside its block... It states facts of this step in
numbers, never the formula. An empty answer leaves the case's own hint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CALL_ERRORS = ("OutOfBlocks", "DoubleFree", "UnknownSequence", "ValueError")
ALLOCATES = ("allocate", "reallocate")   # a freed sequence allocated again is an allocate too


@dataclass
class _Step:
    """One step of a script: the op, what both managers observed, and the state before it."""

    kind: str
    sid: int
    arg: Any
    want: dict            # the reference's observation after the op
    have: dict            # the learner's
    free_before: int
    lengths: dict         # seq id -> tokens, before the op
    block_size: int
    num_blocks: int
    watermark_blocks: int
    features: frozenset
    evictions_possible: bool   # a sequence was freed before this step
    allocated_again: frozenset = frozenset()   # ids allocated again after a free, before this step

    def length(self, sid: Any = None) -> int:
        return self.lengths[int(self.sid if sid is None else sid)]

    def blocks_for(self, tokens: int) -> int:
        """What the reference's table holds for that many tokens (a number, for the hint)."""
        return -(-tokens // self.block_size)

    def table(self, side: dict, sid: Any = None) -> Any:
        return side.get("tables", {}).get(str(self.sid if sid is None else sid))

    @property
    def name(self) -> str:
        return f"seq {self.sid}"

    @property
    def kept_back(self) -> str:
        return f" and {self.watermark_blocks} must stay free (the watermark)" if self.watermark_blocks else ""


def diagnose(script: dict, index: int, expected: list, got: list, features: frozenset) -> str:
    """The broken invariant at view ``index`` (step ``index`` of the traces), or ""."""
    if index == 0 or index >= len(got):
        return ""
    try:
        step = _step(script, index, expected, got, features)
        crashed = step.have["result"][:2]
        if crashed[0] == "raised" and crashed[1] not in CALL_ERRORS and step.want["result"][0] == "ok":
            return _crash(step, expected[index - 1])   # the report shows the learner's error
        for rule in RULES:
            text = rule(step)
            if text:
                return text
    except (KeyError, TypeError, IndexError, ValueError, AttributeError):
        pass      # malformed observations: the case's own hint
    return ""


def _step(script: dict, index: int, expected: list, got: list, features: frozenset) -> _Step:
    lengths: dict[int, int] = {}
    freed: set[int] = set()
    again: set[int] = set()
    for op, observed in zip(script["ops"][:index - 1], expected[1:index]):
        kind, sid, arg = op
        if observed["result"][0] != "ok":
            continue
        if kind == "free":
            freed.add(sid)
        elif kind in ALLOCATES and sid in freed:
            again.add(sid)
        if kind == "allocate":
            lengths[sid] = len(arg)
        elif kind == "append":
            lengths[sid] += 1
        elif kind == "fork":
            lengths[arg] = lengths[sid]
    kind, sid, arg = script["ops"][index - 1]
    if kind in ("allocate", "can_allocate", "free_unknown"):
        lengths[sid] = len(arg)
    num_blocks = script["num_blocks"]
    return _Step(kind, sid, arg, expected[index], got[index],
                 expected[index - 1].get("free", num_blocks), lengths, script["block_size"],
                 num_blocks, script.get("watermark_blocks", 0), features,
                 any(op[0] == "free" for op in script["ops"][:index - 1]), frozenset(again))


# ------------------------------------------------------------------ the rules, in order
def _wrong_outcome(s: _Step) -> str:
    """The call should have raised and did not, or the other way round, or raised another error."""
    want, have = s.want["result"], s.have["result"]
    same = want[0] == have[0] and (want[0] != "raised" or want[1] == have[1])
    if want[0] == have[0] == "ok" and s.kind in ("can_allocate", "can_append"):
        same = want[1] == have[1]
    if same or (have[0] == "raised" and have[1] not in CALL_ERRORS and want[0] == "ok"):
        return ""      # same outcome, or the learner's own crash (the report shows it)
    raised, accepted = want[0] == "raised", have[0] == "ok"
    tokens = s.length() if s.kind in ALLOCATES + ("can_allocate", "append", "can_append") else 0
    if s.kind in ALLOCATES and "cached" not in s.features:
        need = s.blocks_for(tokens)
        if raised and accepted and need > s.num_blocks - s.watermark_blocks:
            return (f"allocate({s.name}) accepted {tokens} tokens, which take {need} blocks: more "
                    f"than the pool can ever give ({s.num_blocks} blocks{s.kept_back}). Such a "
                    "prompt must raise OutOfBlocks.")
        if raised and accepted:
            return (f"allocate({s.name}) succeeded, but its {tokens} tokens take {need} blocks, "
                    f"only {s.free_before} were free{s.kept_back}: a prompt that does not fit "
                    "raises OutOfBlocks.")
        if not raised:
            return (f"allocate({s.name}) raised {have[1]}, but its {tokens} tokens take {need} "
                    f"blocks and {s.free_before} were free{s.kept_back}: it fits.")
    if s.kind in ALLOCATES and raised and accepted:
        return (f"allocate({s.name}) succeeded and reported {have[1]} cached tokens, but beyond "
                f"its real cache hits it needed more blocks than the {s.free_before} free ones (a "
                "cached block nobody holds counts as free, and taking it back uses one up): it "
                f"must raise OutOfBlocks. Were all {have[1]} of those tokens really hits?")
    if s.kind == "can_allocate" and accepted and "cached" not in s.features:
        would = "succeed" if want[1] else "raise OutOfBlocks"
        return (f"can_allocate({s.name}) said {have[1]}, but allocate would {would}: its {tokens} "
                f"tokens take {s.blocks_for(tokens)} blocks, {s.free_before} are free{s.kept_back}.")
    if s.kind in ("free", "free_again", "free_unknown", "free_stranger"):
        return _wrong_free(s, want, have)
    if s.kind == "append":
        return _wrong_append(s, want, have, tokens)
    if s.kind == "can_append" and accepted:
        return (f"can_append({s.name}) said {have[1]}: {s.name} has {tokens} tokens in "
                f"{len(s.table(s.want))} blocks of {s.block_size} slots, and "
                f"{_blocks(s.free_before)} free.")
    if s.kind == "slots":
        start, end = s.arg
        blocks = len(s.table(s.want))
        if raised and not accepted:
            return (f"slot_mapping({s.name}, {start}, {end}) raised {have[1]}: positions past "
                    f"{s.name}'s {blocks} blocks have no slot, and asking for one is a ValueError. "
                    "Check the range before looking positions up.")
        if raised and accepted:
            return (f"slot_mapping({s.name}, {start}, {end}) returned slots, but {s.name}'s "
                    f"{blocks} blocks hold positions 0 to {blocks * s.block_size - 1} only: a "
                    "position past them has no slot, so the call must raise ValueError.")
        if not raised:
            return (f"slot_mapping({s.name}, {start}, {end}) raised {have[1]}, but positions "
                    f"{start} to {end - 1} are all inside {s.name}'s {blocks} blocks (the empty "
                    "slots of the last block are slots too).")
    return ""


def _crash(s: _Step, before: dict) -> str:
    """An append that crashed where the reference took no block: it tried to take one."""
    if s.kind != "append" or len(s.table(s.want)) != len(s.table(before) or []):
        return ""
    filled = s.length() % s.block_size
    return (f"append_token({s.name}) raised {s.have['result'][1]}, but it needed no new block: its "
            f"last block had room ({filled} of {s.block_size} slots used).")


def _blocks(count: int) -> str:
    return f"{count} block{'' if count == 1 else 's'} {'is' if count == 1 else 'are'}"


def _wrong_free(s: _Step, want: list, have: list) -> str:
    said = "accepted it" if have[0] == "ok" else f"raised {have[1]}"
    if want[:2] != ["raised", "DoubleFree"] and have[:2] == ["raised", "DoubleFree"] \
            and s.sid in s.allocated_again:
        return (f"{s.name} was freed, then allocated again (as a preempted sequence is when it is "
                "recomputed), so it holds blocks now, yet free raised DoubleFree: allocating a "
                "sequence makes it a holder again, so forget that it was freed before.")
    if s.kind == "free_stranger" and want[:2] == ["raised", "UnknownSequence"]:
        return (f"free was handed a new Sequence object that only carries {s.name}'s id (and copies "
                f"of its tokens and table), and free {said}. {s.name}'s own Sequence still holds "
                "those blocks: a manager frees the very object it gave blocks to, not any object "
                "with the same id. Any other object raises UnknownSequence and changes nothing.")
    if want[:2] == ["raised", "DoubleFree"]:
        if have[0] == "ok":
            return (f"{s.name} was freed already, and free accepted it again: its blocks went back "
                    "to the pool a second time, so two sequences could later get the same block. "
                    "Remember which sequences were freed; a second free raises DoubleFree.")
        return (f"{s.name} was allocated and freed before, and free {said}: freeing it again is a "
                "double free (DoubleFree); UnknownSequence is for sequences never allocated here.")
    if want[:2] == ["raised", "UnknownSequence"]:
        return (f"{s.name} was never allocated by this manager, and free {said}: a manager can "
                "only free what it holds, and a sequence it never saw is unknown (UnknownSequence).")
    return f"free({s.name}) {said}, but {s.name} holds blocks of this manager."


def _table_after_free(s: _Step) -> str:
    """free succeeded on both sides, but the learner's sequence still lists blocks."""
    want, have = s.want["result"], s.have["result"]
    if s.kind != "free" or want[0] != "ok" or have[0] != "ok" or have[1] in ([], None):
        return ""
    left = f"still lists {len(have[1])} block(s)" if _is_table(have[1]) else "is not an empty list"
    return (f"free({s.name}) gave its blocks back, but its block_table {left} afterwards: "
            "free must empty the table too. Those blocks are in the pool now and go to other "
            "sequences; a table that still names them points this sequence at their keys and "
            "values.")


def _wrong_append(s: _Step, want: list, have: list, tokens: int) -> str:
    filled = tokens % s.block_size
    if want[0] == have[0] == "raised":
        return (f"append_token({s.name}) raised {have[1]} where OutOfBlocks was due: the next "
                "token needs a block and none is free. Check for one before taking it.")
    if want[0] == "raised" and have[0] == "ok":
        if filled and "copy" in s.features:
            return (f"append_token({s.name}) succeeded with no free block, but its last block is "
                    "shared: it must be copied before the new token is written, and the copy needs "
                    "a free block.")
        return (f"append_token({s.name}) succeeded, but its {tokens} tokens fill its blocks "
                "exactly and no block was free for the next one: it must raise OutOfBlocks.")
    if want[0] == "ok":
        room = (f"its last block had room ({filled} of {s.block_size} slots used)" if filled
                else f"{_blocks(s.free_before)} free")
        return f"append_token({s.name}) raised {have[1]}, but {room}."
    return ""


def _failed_call_changed_something(s: _Step) -> str:
    if s.want["result"][0] != "raised" or s.have["result"][0] != "raised":
        return ""
    call = {"append": "append_token", "reallocate": "allocate"}.get(s.kind, s.kind)
    call = "free" if call.startswith("free") else call
    if s.have.get("free") != s.free_before:
        return (f"num_free_blocks went from {s.free_before} to {s.have.get('free')} although "
                f"{call} raised: a call that fails changes nothing, so decide whether it can "
                "succeed before taking or giving back any block.")
    tokens = s.have.get("tokens", {}).get(str(s.sid))
    if tokens is not None and tokens != s.want.get("tokens", {}).get(str(s.sid)):
        return (f"{s.name} has {tokens} tokens although append_token raised: when there is no "
                "room, the token is not appended either.")
    if s.table(s.have) is not None and len(s.table(s.have)) != len(s.table(s.want)):
        return f"{s.name}'s block table changed although {call} raised: a failed call changes nothing."
    return ""


def _is_table(value: Any) -> bool:
    """Whether an observed block table is a list of block ids (not a learner's odd value)."""
    return isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) for b in value)


def _held(s: _Step, side: dict) -> dict[int, list[int]]:
    """Block id -> the sequences whose tables hold it."""
    holders: dict[int, list[int]] = {}
    for sid, table in side["tables"].items():
        for block in table if _is_table(table) else []:
            if int(sid) not in holders.setdefault(block, []):
                holders[block].append(int(sid))
    return holders


def _shared_block(s: _Step) -> str:
    """A block on two tickets where the reference shares nothing like it."""
    if "cached" in s.features:
        return ""      # prompts share cached blocks: the cache-hit rule speaks for them
    have, want = _held(s, s.have), _held(s, s.want)
    shared_have = {block: sids for block, sids in have.items() if len(sids) > 1}
    if not shared_have or sorted(map(len, have.values())) == sorted(map(len, want.values())):
        return ""
    block, sids = next(iter(shared_have.items()))
    who = ", ".join(f"seq {sid}" for sid in sids[:-1]) + f" and seq {sids[-1]}"
    if s.kind == "append" and s.sid in sids and "copy" in s.features:
        return (f"After append_token({s.name}), {who} share block {block}, which {s.name} just "
                "wrote into: a block that others hold must be copied before it changes, and "
                "(old, new) returned for the cache to copy.")
    if "refs" in s.features:
        return (f"{who} share block {block} after {s.kind}({s.name}), where they should not: a "
                "block is shared only by fork, and stops being shared when one side writes.")
    return (f"{who} both hold block {block}: a block is on one sequence's table at a time. Take "
            "blocks only from the free pool, and put each back once.")


def _pool_accounting(s: _Step) -> str:
    """Every block is either free or held by some table: num_free_blocks must add up."""
    free = s.have.get("free")
    held = len(_held(s, s.have))
    if not isinstance(free, int) or free + held == s.num_blocks or s.want["free"] + len(
            _held(s, s.want)) != s.num_blocks:
        return ""
    if free + held > s.num_blocks:
        return (f"num_free_blocks is {free} while the live tables hold {held} of the "
                f"{s.num_blocks} blocks: {free + held - s.num_blocks} block(s) count as free and "
                "held at once (taken without leaving the pool, or given back twice).")
    return (f"num_free_blocks is {free} while the live tables hold {held} of the {s.num_blocks} "
            f"blocks: {s.num_blocks - free - held} block(s) are neither free nor held. They leaked: "
            "a block nobody holds any more must go back to the pool.")


def _table_lengths(s: _Step) -> str:
    for sid, want in s.want["tables"].items():
        have = s.have["tables"].get(sid)
        if not _is_table(have) or len(have) == len(want):
            continue
        tokens = s.have.get("tokens", {}).get(sid, s.lengths.get(int(sid), 0) + (
            1 if s.kind == "append" and int(sid) == s.sid else 0))
        missing = len(want) - len(have)
        why = ""
        if s.kind == "append" and int(sid) == s.sid:
            why = (": the new token has no slot" if missing > 0 else
                   ": a block was taken while the last one still had room")
        return (f"seq {sid}'s block table has {len(have)} block(s) for {tokens} tokens at block "
                f"size {s.block_size}: {abs(missing)} too {'few' if missing > 0 else 'many'}{why}.")
    return ""


def _token_counts(s: _Step) -> str:
    for sid, want in s.want.get("tokens", {}).items():
        have = s.have.get("tokens", {}).get(sid)
        if have != want:
            return (f"seq {sid} has {have} tokens after {s.kind}, {want} expected: append_token "
                    "adds the token to seq.token_ids.")
    return ""


def _ref_counts(s: _Step) -> str:
    holders = _held(s, s.have)
    for sid, table in s.have["tables"].items():
        counts = s.have.get("refs", {}).get(sid)
        if not _is_table(counts) or not _is_table(table):
            continue
        for block, count in zip(table, counts):
            if isinstance(block, int) and count != len(holders.get(block, [])):
                return (f"block {block} is on {len(holders[block])} live block table(s), but "
                        f"ref_count({block}) says {count}: a block's count is how many tables "
                        "hold it.")
    return ""


def _copy_on_write(s: _Step) -> str:
    if s.kind != "append" or "copy" not in s.features:
        return ""
    want, have = s.want["result"], s.have["result"]
    if want[0] == have[0] == "ok" and want[1] is None and have[1] is not None:
        if s.length() % s.block_size == 0:
            return (f"append_token({s.name}) returned a copy, but its last block was full: nothing "
                    "is written into a full block, so the token goes into a fresh block and nothing "
                    "is copied.")
        return (f"append_token({s.name}) returned a copy of a block nobody else holds: only a "
                "shared block is copied before writing.")
    if want[0] == have[0] == "ok" and want[1] is not None and have[1] is None:
        return (f"append_token({s.name}) copied nothing, but its last block is partly filled and "
                "shared: the copy's (src, dst) must be returned for the KV cache.")
    return ""


def _cache_hits(s: _Step) -> str:
    want, have = s.want["result"], s.have["result"]
    if s.kind != "allocate" or "cached" not in s.features or want[0] != "ok" or have[:1] != ["ok"] \
            or have[1] == want[1] or not isinstance(have[1], int):
        return ""
    tokens, found, right = s.length(), have[1], want[1]
    if found == tokens and right == tokens - 1:
        return (f"allocate({s.name}) reported all {tokens} tokens cached: a prompt found whole "
                "still recomputes its last token (its logits are needed), so one fewer counts.")
    if found > right and found > (tokens // s.block_size) * s.block_size:
        return (f"allocate({s.name}) reported {found} cached tokens, more than its full blocks "
                "hold: a partly filled block is never cached.")
    chain = ("a block is a hit only when it and every block before it match, in order (the "
             "same tokens after another prefix are a miss)")
    only = f"only the first {right} are" if right else "none are"
    if found > right and not s.evictions_possible:
        return f"allocate({s.name}) reported {found} cached tokens, but {only}: {chain}."
    if found > right:
        return (f"allocate({s.name}) reported {found} cached tokens, but {only}. Either the next block was evicted before (when no never-used block is "
                "left, the cached block freed longest ago goes first, a sequence's tail before "
                f"its prefix), or it never matched: {chain}.")
    return (f"allocate({s.name}) found {found} cached tokens, but the first {right} are still "
            "in the cache: a cached block stays reusable after free until it is evicted; a "
            "never-used block is taken first, then the cached block freed longest ago.")


def _wrong_slot(s: _Step) -> str:
    """The first slot that is not where the sequence's own table puts its position."""
    ranges = [(sid, 0, slots, s.want["slots"].get(sid))
              for sid, slots in s.have.get("slots", {}).items()]
    if s.kind == "slots" and s.have["result"][0] == s.want["result"][0] == "ok":
        ranges.insert(0, (str(s.sid), s.arg[0], s.have["result"][1], s.want["result"][1]))
    for sid, start, slots, wanted in ranges:
        table = s.have["tables"].get(sid)
        if not _is_table(slots) or not _is_table(table) or not isinstance(wanted, list):
            continue
        count = len(wanted)
        if len(slots) != count:
            return (f"slot_mapping(seq {sid}) returned {len(slots)} slots for {count} positions: "
                    "one slot per position asked for.")
        for position, slot in enumerate(slots, start=start):
            text = _slot_text(sid, table, position, slot, s.block_size)
            if text:
                return text
    return ""


def _slot_text(sid: str, table: list, position: int, slot: Any, size: int) -> str:
    logical, row = divmod(position, size)
    if logical >= len(table) or not isinstance(slot, int):
        return ""
    block = table[logical]
    if slot == block * size + row:
        return ""
    if slot == position and block * size != position - row:
        return (f"seq {sid}'s position {position} got slot {position}, its own number: a "
                f"position lives in the physical block its table names (here block {block}), "
                "wherever that block is in the pool.")
    where = f"position {position} of seq {sid} is row {row} of its logical block {logical}, block {block}"
    if slot // size == block:
        return f"{where}; slot {slot} is row {slot % size} of that block."
    if slot // size in table:
        return (f"{where}; slot {slot} is in block {slot // size}, the sequence's logical block "
                f"{table.index(slot // size)}.")
    return f"{where}; slot {slot} is in block {slot // size}, which seq {sid} does not hold."


RULES = (_wrong_outcome, _table_after_free, _failed_call_changed_something, _copy_on_write, _cache_hits,
         _shared_block, _pool_accounting, _ref_counts, _table_lengths, _token_counts, _wrong_slot)
