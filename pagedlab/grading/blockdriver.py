"""Judge a block manager by replaying a script of operations on it and on the reference.

A *script* is the grader's choice of inputs: ``{"num_blocks": 8, "block_size": 4, "ops": [...],
"features": [...]}`` (and ``"watermark_blocks"`` for ex01) with ops ``["allocate", seq_id, tokens]``,
``["can_allocate", seq_id, tokens]``, ``["append", seq_id, token]``, ``["can_append", seq_id,
None]``, ``["slots", seq_id, [start, end]]``, ``["fork", parent_id, child_id]``, ``["free",
seq_id, None]``, ``["free_again", seq_id, None]`` (a sequence freed already),
``["free_unknown", seq_id, tokens]`` (one never allocated), ``["free_stranger", seq_id, None]``
(another Sequence object carrying a held sequence's id) and ``["reallocate", seq_id, None]`` (a
freed sequence allocated again, as a preempted one is when it is recomputed).
:func:`.drivers.run_script` runs it (on the learner's manager in the sandbox, on pagedlab's here)
and records raw observations after every op (a free's result: the table it left). :func:`compare` turns both into views that do not depend on *which* free block an
implementation picks (block ids are relabelled per step), reports the first step where they
differ, and asks :mod:`.blockhints` which invariant the learner's step broke. Each exercise draws
its scripts from the run's seed (sizes, lengths, order); :func:`disguise` then changes sequence
ids and token values and takes a few blocks first, so a table of the public cases' answers is
worth nothing.
"""
from __future__ import annotations

import random
from functools import partial
from typing import Any

from . import blockhints
from .exercise import Case, Mismatch, short

ERROR_NAMES = ("OutOfBlocks", "DoubleFree", "UnknownSequence")


# ------------------------------------------------------------------ in the grader
def describe_op(op: list) -> str:
    kind, seq_id, arg = op
    if kind in ("allocate", "can_allocate"):
        return f"{kind}(seq {seq_id}, {len(arg)} token{'s' if len(arg) != 1 else ''})"
    if kind == "append":
        return f"append_token(seq {seq_id}, {arg})"
    if kind == "can_append":
        return f"can_append(seq {seq_id})"
    if kind == "slots":
        return f"slot_mapping(seq {seq_id}, start={arg[0]}, end={arg[1]})"
    if kind == "fork":
        return f"fork(seq {seq_id}) -> seq {arg}"
    if kind == "free_again":
        return f"free(seq {seq_id}) again"
    if kind == "free_unknown":
        return f"free(seq {seq_id}, never allocated)"
    if kind == "free_stranger":
        return f"free(another Sequence object with seq {seq_id}'s id)"
    if kind == "reallocate":
        return f"allocate(seq {seq_id}) again, after its free"
    return f"free(seq {seq_id})"


def _result_view(op: list | None, result: list, features: frozenset[str]) -> str:
    if result[0] == "skipped":
        return "skipped (the sequence is not allocated)"
    if result[0] == "raised":
        name, message = result[1], result[2]
        asked = name == "ValueError" and op is not None and op[0] == "slots"
        return f"raises {name}" if name in ERROR_NAMES or asked else f"raises {name}: {message}"
    value = result[1]
    if op is not None and op[0] in ("can_allocate", "can_append"):
        return f"returns {value}"
    if op is not None and op[0] == "allocate" and "cached" in features:
        return f"returns {value} (tokens found in the prefix cache)"
    if op is not None and op[0] == "fork" and value is not None:
        return f"returns {value[1]}, not a Sequence"
    if op is not None and op[0] == "free" and value not in ([], None):
        return f"ok, but seq.block_table is still {_shown(value, 60)} afterwards"
    return "ok"


def _shown(value: Any, limit: int = 100) -> str:
    """An observation for a human: errors and bad values spelled out."""
    if isinstance(value, list) and value[:1] == ["raised"]:
        return f"raises {value[1]}: {short(value[2], 200)}"
    if isinstance(value, list) and len(value) == 2 and value[0] in ("not an int", "not a list",
                                                                   "not a bool", "too long"):
        return f"{value[0]}: {short(value[1], limit)}"
    return short(value, limit)


def _layout_view(tables: dict, num_blocks: int) -> str:
    """Block tables with ids relabelled a, b, c... in order of first appearance."""
    labels: dict[int, str] = {}
    parts = []
    for sid, table in tables.items():
        if not isinstance(table, list) or table[:1] in (["raised"], ["not a list"], ["too long"]):
            parts.append(f"seq {sid}: {_shown(table)}")
            continue
        names = []
        for block in table:
            if not isinstance(block, int) or not 0 <= block < num_blocks:
                return f"seq {sid} holds block {short(block, 40)}, not a block id in [0, {num_blocks})"
            labels.setdefault(block, _label(len(labels)))
            names.append(labels[block])
        parts.append(f"seq {sid}: [{' '.join(names)}]")
    return "; ".join(parts) or "no live sequences"


def _label(index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[index] if index < 26 else f"b{index}"


def table_slots(table: list, start: int, end: int, block_size: int) -> list | None:
    """The slots of positions start..end-1 through ``table`` (None where it has no such block)."""
    if not 0 <= start <= end <= len(table) * block_size:
        return None
    return [table[p // block_size] * block_size + p % block_size for p in range(start, end)]


def _wrong_slots(table: Any, got: Any, start: int, end: int, block_size: int) -> str:
    """Why ``got`` is not the slots of positions start..end-1 in ``table`` ("" if it is)."""
    if not isinstance(got, list) or _shown(got) != short(got, 100):
        return _shown(got)
    if not isinstance(table, list) or not all(isinstance(b, int) for b in table):
        return f"block table {_shown(table)}"
    want = table_slots(table, start, min(end, len(table) * block_size), block_size) or []
    if got == want:
        return ""
    first = next((p for p, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    slot = want[first] if first < len(want) else "nothing (past the last block)"
    return f"position {start + first}: slot {slot} expected, got {short(got, 60)}"


def _slots_view(tables: dict, slots: dict, block_size: int) -> str:
    for sid, table in tables.items():
        got = slots.get(sid)
        length = len(got) if isinstance(got, list) else 0
        wrong = _wrong_slots(table, got, 0, length, block_size)
        if wrong:
            return f"seq {sid}: {wrong}"
    return "every position's slot is where its block table puts it"


def _range_view(op: list, result: list, tables: dict, block_size: int) -> str:
    """slot_mapping(seq, start, end): the slots its block table gives, or the error."""
    if result[0] != "ok":
        return _result_view(op, result, frozenset())
    start, end = op[2]
    wrong = _wrong_slots(tables.get(str(op[1])), result[1], start, end, block_size)
    return f"returns {wrong}" if wrong else f"the slots of positions {start}..{end - 1}"


def _copy_view(op: list, result: list, before: dict, after: dict) -> str:
    value = result[1] if result[0] == "ok" else None
    if value is None:
        return "no copy"
    sid = str(op[1])   # observations went through JSON: keys are strings
    old, new = before.get("tables", {}).get(sid), after.get("tables", {}).get(sid)
    if (isinstance(value, list) and len(value) == 2 and isinstance(old, list) and old
            and isinstance(new, list) and new and value == [old[-1], new[-1]] and old[-1] != new[-1]):
        return "copies the shared last block into a new one"
    return f"returns {short(value, 40)}; the last block went {short(old, 40)} -> {short(new, 40)}"


def views(script: dict, steps: list[dict], features: frozenset[str]) -> list[tuple[str, dict]]:
    """(step description, {aspect: text}) for every step, comparable across implementations."""
    out = []
    header = f"MyBlockManager(num_blocks={script['num_blocks']}, block_size={script['block_size']})"
    out.append((header, {"result": _result_view(None, steps[0]["result"], features)}))
    for index, (op, step) in enumerate(zip(script["ops"], steps[1:]), start=1):
        view = {"result": (_range_view(op, step["result"], step["tables"], script["block_size"])
                           if op[0] == "slots" else _result_view(op, step["result"], features)),
                "num_free_blocks": _shown(step["free"]),
                "block tables": _layout_view(step["tables"], script["num_blocks"])}
        if "tokens" in features:
            view["tokens per sequence"] = short(step["tokens"])
        if "slots" in features:
            view["slot_mapping"] = _slots_view(step["tables"], step["slots"], script["block_size"])
        if "refs" in features:
            view["ref counts"] = "; ".join(f"seq {sid}: {_shown(refs)}"
                                           for sid, refs in step["refs"].items()) or "none"
        if "copy" in features and op[0] == "append":
            view["copy-on-write"] = _copy_view(op, step["result"], steps[index - 1], step)
        out.append((f"step {index}: {describe_op(op)}", view))
    return out


def compare(script: dict, expected: list[dict], got: Any, features: frozenset[str]) -> Mismatch | None:
    """The first step where the learner's manager differs from the reference, or None."""
    if not isinstance(got, list) or not got or not all(isinstance(step, dict) for step in got):
        return Mismatch("the whole case", "a list of observations", short(got))
    try:
        want, have = views(script, expected, features), views(script, got, features)
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        return Mismatch("reading the observations", "well-formed observations", f"{error!r}")
    for index, ((where, want_view), (_, have_view)) in enumerate(zip(want, have)):
        for aspect, text in want_view.items():
            if have_view.get(aspect) != text:
                return Mismatch(f"{where}: {aspect}", text, str(have_view.get(aspect)),
                                hint=blockhints.diagnose(script, index, expected, got, features))
    if len(have) < len(want):
        return Mismatch(want[len(have)][0], "an observation", "the script stopped early")
    return None


# ------------------------------------------------------------------ random scripts
def random_script(seed: int, *, num_blocks: int, block_size: int, num_ops: int,
                  kinds: tuple[str, ...], vocab: int = 50, max_len: int = 14,
                  prefixes: int = 0, watermark_blocks: int | None = None) -> dict:
    """A random but valid script (ops only name live sequences, or freed ones for
    "free_again" and "reallocate") chosen by the grader."""
    rng = random.Random(seed)
    live: list[int] = []
    freed: list[int] = []
    next_id = 1
    common = [[rng.randrange(vocab) for _ in range(block_size * 2)] for _ in range(prefixes)]
    ops = []
    while len(ops) < num_ops:
        kind = rng.choice(kinds)
        if kind in ("allocate", "can_allocate") or not live:
            kind = "allocate" if kind not in ("allocate", "can_allocate") else kind
            tokens = [rng.randrange(vocab) for _ in range(rng.randint(1, max_len))]
            if common and rng.random() < 0.6:
                tokens = rng.choice(common)[:rng.randint(1, block_size * 2)] + tokens
            ops.append([kind, next_id, tokens])
            if kind == "allocate":
                live.append(next_id)  # a failed allocate is dropped by the driver's view below
            next_id += 1
        elif kind == "append":
            ops.append(["append", rng.choice(live), rng.randrange(vocab)])
        elif kind == "can_append":
            ops.append(["can_append", rng.choice(live), None])
        elif kind == "slots":      # some ranges reach past the blocks: those must raise
            start = rng.randrange(max_len)
            ops.append(["slots", rng.choice(live), [start, start + rng.randint(1, block_size * 2)]])
        elif kind == "free_again" and freed:
            ops.append(["free_again", rng.choice(freed), None])
        elif kind == "reallocate" and freed:
            seq_id = rng.choice(freed)
            freed.remove(seq_id)
            live.append(seq_id)      # a failed one is skipped by the driver, as allocate's are
            ops.append(["reallocate", seq_id, None])
        elif kind == "free_stranger":
            ops.append(["free_stranger", rng.choice(live), None])
        elif kind == "free_unknown":
            ops.append(["free_unknown", next_id, [rng.randrange(vocab)]])
            next_id += 1
        elif kind == "fork":
            ops.append(["fork", rng.choice(live), next_id])
            live.append(next_id)
            next_id += 1
        elif kind == "free":
            seq_id = rng.choice(live)
            live.remove(seq_id)
            freed.append(seq_id)
            ops.append(["free", seq_id, None])
    script = {"num_blocks": num_blocks, "block_size": block_size, "ops": ops}
    return script if watermark_blocks is None else {**script, "watermark_blocks": watermark_blocks}


TOKEN_LISTS = ("allocate", "can_allocate", "free_unknown")   # ops whose argument is a prompt


def disguise(script: dict, rng: random.Random) -> dict:
    """The same test, with other sequence ids and token values, behind 0-3 blocks already held.

    Token values are mapped one to one (equal tokens stay equal, so prefix hits are kept); the
    blocks held first belong to a sequence that is never touched again, so the rest of the
    script sees the same free pool as the hand-made one."""
    ids = sorted({op[1] for op in script["ops"]} | {op[2] for op in script["ops"] if op[0] == "fork"})
    fresh = rng.sample(range(1, 1000), len(ids) + 1)
    new_id = dict(zip(ids, fresh))
    values = sorted({t for op in script["ops"] if op[0] in TOKEN_LISTS for t in op[2]}
                    | {op[2] for op in script["ops"] if op[0] == "append"})
    drawn = rng.sample(range(1000, 1 << 20), len(values) + 64)
    new_token = dict(zip(values, drawn))
    ops = []
    for kind, seq_id, arg in script["ops"]:
        if kind in TOKEN_LISTS:
            arg = [new_token[t] for t in arg]
        elif kind == "append":
            arg = new_token[arg]
        elif kind == "fork":
            arg = new_id[arg]
        ops.append([kind, new_id[seq_id], arg])
    held = rng.randint(0, 3)
    if held:
        ops.insert(0, ["allocate", fresh[-1], drawn[len(values):len(values) + held * script["block_size"]]])
    return {**script, "num_blocks": script["num_blocks"] + held, "ops": ops}


def drawn_cases(exercise_id: str, seed: int, templates: list, script, random_case: tuple) -> list[Case]:
    """A block-manager exercise's cases for this run: each of ``templates`` ((name, hint,
    make(rng) -> script)) drawn from the seed, then ``random_case`` ((name, hint,
    options(rng) -> random_script keywords)), a random script of this seed."""
    cases = [Case(name, hint, "run_script", script(seed, index, make(
        random.Random(f"{exercise_id}:{seed}:{index}")))) for index, (name, hint, make) in enumerate(templates)]
    name, hint, options = random_case
    drawn = random_script(seed, **options(random.Random(f"{exercise_id}:{seed}:random")))
    return cases + [Case(f"{name} (seed {seed})", hint, "run_script",
                         script(seed, len(templates), drawn, hide=False))]


def exercise_hooks(features: frozenset[str], **manager_options):
    """``script, reference, compare`` of a block-manager exercise judged by replaying scripts.

    ``script(seed, index, template)`` is a case's script for this run; the reference is
    pagedlab's BlockManager (with ``manager_options``); ``compare`` matches the two traces.
    """
    def script(seed: int, index: int, template: dict, hide: bool = True) -> dict:
        data = disguise(template, random.Random(f"{seed}:{index}:{sorted(features)}")) if hide else template
        return {**data, "features": sorted(features)}

    def reference_objects() -> dict:
        from ..blocks import BlockManager
        return {"BlockManager": partial(BlockManager, **manager_options)
                if manager_options else BlockManager}

    def compare_case(case, expected, got):
        return compare(case.data, expected, got, features)

    return script, reference_objects, compare_case
