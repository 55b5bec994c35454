"""Drivers: feed a case's inputs to an answer and write down what it did, as plain JSON values.

The same functions run twice: on the learner's objects inside the sandbox (``child.py`` imports
this file from its own folder, next to a learner copy of pagedlab), and on pagedlab's reference
in the grader. They only *observe*; every verdict is computed by the grader. This file uses only
pagedlab's public API (``Sequence``, ``BlockManager``, the errors), never the grading package.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

MAX_ITEMS = 4096           # longest list copied out of a learner's object
MAX_OUTPUT = 1 << 14       # numbers copied out of a learner's tensor
ERROR_NAMES = ("OutOfBlocks", "DoubleFree", "UnknownSequence")


def short(value: Any, limit: int = 160) -> str:
    """A one-line, length-capped description of a value."""
    try:
        text = value if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_error(error: BaseException) -> list:
    """["raised", type name, message]: what an answer raised, as data."""
    import pagedlab
    for name in ERROR_NAMES:
        kind = getattr(pagedlab, name, None)
        if isinstance(kind, type) and isinstance(error, kind):
            return ["raised", name, str(error)[:300]]
    return ["raised", type(error).__name__, str(error)[:300]]


def _int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return ["not an int", short(repr(value), 80)]
    return int(value)


def _ints(value: Any) -> Any:
    try:
        items = list(value) if len(value) <= MAX_ITEMS else None
    except Exception:  # noqa: BLE001 - anything a learner returns is data here
        return ["not a list", short(repr(value), 80)]
    if items is None:
        return ["too long", len(value)]
    return [_int(item) for item in items]


def _bool(value: Any) -> Any:
    return value if isinstance(value, bool) else ["not a bool", short(repr(value), 80)]


def _observe(read: Callable[[], Any], coerce: Callable[[Any], Any]) -> Any:
    try:
        return coerce(read())
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - a learner's property may raise anything
        return describe_error(error)


# ------------------------------------------------------------------ ex01-ex04: block managers
def run_script(objects: dict, script: dict) -> list[dict]:
    """Replay a script of block-manager ops; one raw observation per op (step 0: the constructor).

    Observed: each op's result, ``num_free_blocks``, every live block table, and per
    ``script["features"]`` the slot mappings ("slots"), token counts ("tokens") and ref counts
    ("refs"). A script's ``"watermark_blocks"`` is set on the manager once it is made (the
    attribute ``allocate`` and ``can_allocate`` read, as pagedlab's BlockManager does), so every
    manager is still made as ``BlockManager(num_blocks, block_size)``.
    """
    from pagedlab import Sequence
    features = script.get("features", [])
    try:
        manager = objects["BlockManager"](script["num_blocks"], script["block_size"])
        if "watermark_blocks" in script:
            manager.watermark_blocks = script["watermark_blocks"]
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001
        return [{"result": describe_error(error)}]
    steps = [{"result": ["ok", None]}]
    live: dict[int, Any] = {}
    freed: dict[int, Any] = {}   # sequences freed, kept to free them again ("free_again")
    for op in script["ops"]:
        result = _apply(manager, live, freed, op, Sequence)
        steps.append({"result": result, **_snapshot(manager, live, features)})
    return steps


NEEDS_LIVE = ("append", "can_append", "slots", "fork", "free", "free_stranger")
NEEDS_FREED = ("free_again", "reallocate")


def _apply(manager: Any, live: dict, freed: dict, op: list, Sequence: type) -> list:
    kind, seq_id, arg = op
    if (kind in NEEDS_LIVE and seq_id not in live) or (kind in NEEDS_FREED and seq_id not in freed):
        return ["skipped", None]  # its allocate failed, as it may in a random script
    if kind == "slots":
        return _slots(manager, live[seq_id], *arg)
    try:
        if kind == "allocate":
            seq = Sequence(seq_id, arg)
            value = manager.allocate(seq)
            live[seq_id] = seq
            return ["ok", value if isinstance(value, int) and not isinstance(value, bool) else None]
        if kind == "can_allocate":
            return ["ok", _bool(manager.can_allocate(Sequence(seq_id, arg)))]
        if kind == "append":
            copy = manager.append_token(live[seq_id], arg)
            return ["ok", None if copy is None else _ints(copy)]
        if kind == "fork":
            child = manager.fork(live[seq_id], arg)
            if not isinstance(child, Sequence):
                return ["ok", ["not a Sequence", short(repr(child), 80)]]
            live[arg] = child
            return ["ok", None]
        if kind == "can_append":
            return ["ok", _bool(manager.can_append(live[seq_id]))]
        if kind == "reallocate":              # a freed sequence allocated again (recomputed)
            seq = freed[seq_id]
            manager.allocate(seq)
            live[seq_id] = freed.pop(seq_id)
            return ["ok", None]
        if kind == "free":                    # the value: its block table afterwards
            seq = live[seq_id]
            manager.free(seq)
            freed[seq_id] = live.pop(seq_id)
            return ["ok", _observe(lambda: seq.block_table, _ints)]
        if kind == "free_stranger":           # a look-alike: another object with a held id
            held = live[seq_id]
            stranger = Sequence(seq_id, list(held.token_ids))
            stranger.block_table = list(held.block_table)
            manager.free(stranger)
            return ["ok", None]
        if kind == "free_again":              # a sequence freed already
            manager.free(freed[seq_id])
            return ["ok", None]
        if kind == "free_unknown":            # a sequence this manager never saw
            manager.free(Sequence(seq_id, arg))
            return ["ok", None]
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - SystemExit too: it is the learner's
        return describe_error(error)
    raise ValueError(f"unknown op {kind!r}")


def _slots(manager: Any, seq: Any, start: int, end: int) -> list:
    """slot_mapping(seq, start, end); any ValueError (pagedlab's InvalidConfig is one) is
    recorded as "ValueError", the error the exercise asks for."""
    try:
        return ["ok", _ints(manager.slot_mapping(seq, start, end))]
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001
        described = describe_error(error)
        if isinstance(error, ValueError) and described[1] not in ERROR_NAMES:
            described[1] = "ValueError"
        return described


def _snapshot(manager: Any, live: dict, features: list[str]) -> dict:
    order = sorted(live)
    shot = {"free": _observe(lambda: manager.num_free_blocks, _int),
            "tables": {sid: _observe(lambda s=live[sid]: s.block_table, _ints) for sid in order}}
    if "tokens" in features:
        shot["tokens"] = {sid: len(live[sid].token_ids) for sid in order}
    if "slots" in features:
        shot["slots"] = {sid: _observe(lambda s=live[sid]: manager.slot_mapping(s), _ints)
                         for sid in order}
    if "refs" in features:
        shot["refs"] = {sid: _observe(lambda s=live[sid]: [manager.ref_count(b) for b in s.block_table],
                                      _ints) for sid in order}
    return shot


# ------------------------------------------------------------------ ex05: one scheduler step
MAX_STEPS = 80


def _ids(value: Any, known: dict) -> list | str:
    try:
        items = list(value)
    except Exception:  # noqa: BLE001
        return f"not a list: {short(repr(value), 60)}"
    ids = []
    for item in items[:1000]:
        match = next((sid for sid, seq in known.items() if seq is item), None)
        ids.append(match if match is not None else f"not one of the sequences: {short(repr(item), 40)}")
    return ids


def run_schedule(objects: dict, data: dict) -> list[dict]:
    """Serve ``data["requests"]`` step by step with ``schedule_step``; who ran in each step."""
    from pagedlab import BlockManager, Sequence

    step_function = objects["schedule_step"]
    bm = BlockManager(data["num_blocks"], data["block_size"], watermark=data["watermark"])
    pending = sorted(data["requests"], key=lambda r: (r["arrival"], r["seq_id"]))
    seqs = {r["seq_id"]: Sequence(r["seq_id"], r["prompt"]) for r in pending}
    stop = {r["seq_id"]: len(r["prompt"]) + r["max_new_tokens"] for r in pending}
    order = {sid: n for n, sid in enumerate(seqs)}
    running: list = []
    waiting: list = []
    steps = []
    for step in range(MAX_STEPS):
        while pending and pending[0]["arrival"] <= step:
            waiting.append(seqs[pending.pop(0)["seq_id"]])
        if not (running or waiting or pending):
            break
        try:
            prefills, decodes, preempted = step_function(list(running), list(waiting), bm,
                                                         data["max_num_seqs"])
            record = {"prefills": _ids(prefills, seqs), "decodes": _ids(decodes, seqs),
                      "preempted": _ids(preempted, seqs)}
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001
            steps.append({"error": describe_error(error)})
            break
        record["free"] = bm.num_free_blocks
        steps.append(record)
        if any(not isinstance(i, int) for key in ("prefills", "decodes", "preempted")
               for i in record[key]):
            break
        try:
            scheduled = [seqs[i] for i in record["prefills"] + record["decodes"]]
            for seq in scheduled:
                bm.append_token(seq, len(seq.token_ids) % 50)
            finished = {seq.seq_id for seq in scheduled if len(seq.token_ids) >= stop[seq.seq_id]}
            for sid in finished:
                bm.free(seqs[sid])
            gone = finished | set(record["preempted"])
            running = sorted((s for s in scheduled if s.seq_id not in gone), key=lambda s: order[s.seq_id])
            admitted = set(record["prefills"])
            waiting = sorted([s for s in waiting if s.seq_id not in admitted]
                             + [seqs[i] for i in record["preempted"]], key=lambda s: order[s.seq_id])
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - e.g. a block not reserved for a decode
            steps.append({"error": describe_error(error), "after": "appending the step's tokens"})
            break
    return steps


# ------------------------------------------------------------------ ex08: the token budget
MAX_BUDGET_STEPS = 200


def _token_counts(value: Any) -> Any:
    """A learner's {seq_id: tokens} as [[seq_id, tokens], ...] (ints, or what they were)."""
    if not isinstance(value, dict):
        return ["not a dict", short(repr(value), 80)]
    if len(value) > MAX_ITEMS:
        return ["too long", len(value)]
    return [[_int(key), _int(count)] for key, count in list(value.items())]


def run_budget(objects: dict, data: dict) -> list[dict]:
    """Serve ``data["requests"]`` step by step with ``schedule_tokens``; each step's inputs
    (running: [seq_id, tokens left]; waiting: [seq_id, tokens left past the cache hit, hit])
    and the tokens it gave each sequence.

    The driver keeps the requests' state itself and hands the learner fresh ``Sequence``
    objects every step; a request samples a token once its prompt is computed, and finishes
    after ``max_new_tokens``. Every request's blocks are assumed to fit (this exercise is the
    budget, not the pool)."""
    from pagedlab import Sequence

    step_function = objects["schedule_tokens"]
    budget, max_num_seqs = data["max_num_batched_tokens"], data["max_num_seqs"]
    pending = sorted(data["requests"], key=lambda r: (r["arrival"], r["seq_id"]))
    state = {r["seq_id"]: {"length": r["prompt_len"], "computed": 0, "cached": r["cached"],
                           "stop": r["prompt_len"] + r["max_new_tokens"]} for r in pending}
    running: list[int] = []
    waiting: list[int] = []
    steps = []
    for step in range(MAX_BUDGET_STEPS):
        while pending and pending[0]["arrival"] <= step:
            waiting.append(pending.pop(0)["seq_id"])
        if not (running or waiting or pending):
            break

        def sequence(seq_id: int, computed: int, cached: int) -> Any:
            seq = Sequence(seq_id, [(seq_id + i) % 50 for i in range(state[seq_id]["length"])])
            seq.num_computed_tokens, seq.num_cached_tokens = computed, cached
            return seq
        record: dict = {
            "running": [[sid, state[sid]["length"] - state[sid]["computed"]] for sid in running],
            "waiting": [[sid, state[sid]["length"] - state[sid]["cached"], state[sid]["cached"]]
                        for sid in waiting]}
        try:
            counts = step_function([sequence(sid, state[sid]["computed"], 0) for sid in running],
                                   [sequence(sid, 0, state[sid]["cached"]) for sid in waiting],
                                   budget, max_num_seqs)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001
            steps.append({**record, "error": describe_error(error)})
            break
        record["tokens"] = _token_counts(counts)
        steps.append(record)
        left = {sid: n for sid, n in record["running"]}
        left.update({sid: n for sid, n, _ in record["waiting"]})
        given = record["tokens"] if isinstance(record["tokens"], list) else None
        if given is None or any(not isinstance(sid, int) or sid not in left or not isinstance(n, int)
                                or not 0 <= n <= left[sid] for sid, n in given):
            break          # not something a step can do: the grader says why
        given = dict(given)
        for sid in [sid for sid in running + waiting if given.get(sid)]:   # oldest first
            n = given[sid]
            if sid in waiting:
                waiting.remove(sid)
                running.append(sid)
                state[sid]["computed"] = state[sid]["cached"]
            state[sid]["computed"] += n
            if state[sid]["computed"] == state[sid]["length"]:   # the step samples a token
                state[sid]["length"] += 1
                if state[sid]["length"] >= state[sid]["stop"]:
                    running.remove(sid)
    return steps


# ------------------------------------------------------------------ ex10: capacity arithmetic
def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ["not a number", short(repr(value), 80)]
    if isinstance(value, float) and not math.isfinite(value):
        return ["not a number", repr(value)]
    return value if isinstance(value, int) else float(value)


def run_calls(objects: dict, data: dict) -> list:
    """Call ``objects[name](*args)`` for each ``[name, args]`` of ``data["calls"]``; what each
    returned (a number) or raised."""
    results = []
    for name, args in data["calls"]:
        try:
            results.append(_number(objects[name](*args)))
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001
            results.append(describe_error(error))
    return results


# ------------------------------------------------------------------ ex06, ex07: attention
def _inputs(data: dict, device: str = "cpu") -> dict:
    import torch
    tensors = {name: torch.tensor(data[name], dtype=torch.float32, device=device)
               for name in ("q", "k_cache", "v_cache")}
    for name in ("block_tables", "context_lens"):
        tensors[name] = torch.tensor(data[name], dtype=torch.int32, device=device)
    return tensors


def _kernel_device() -> str:
    """Where a Triton kernel reads its buffers: the GPU, unless it runs in the interpreter."""
    import torch
    compiled = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
    return "cuda" if compiled else "cpu"


def _values(out: Any) -> dict:
    import torch
    if not isinstance(out, torch.Tensor):
        return {"not a tensor": short(repr(out), 100)}
    if out.numel() > MAX_OUTPUT:
        return {"too big": list(out.shape)}
    return {"shape": list(out.shape), "values": [float(x) for x in out.detach().float().cpu().flatten().tolist()]}


def run_attention(objects: dict, data: dict) -> dict:
    """Call ``paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale)``."""
    return _values(objects["paged_attention"](**_inputs(data), scale=data["scale"]))


def run_kernel(objects: dict, data: dict) -> dict:
    """Launch the learner's ``@triton.jit`` kernel on buffers allocated here; read what it wrote.

    The arguments follow the kernel's signature in exercises/ex07_triton_kernel.ipynb; the
    output buffer starts as NaN, so a kernel that writes nothing is seen as wrong.
    """
    import torch
    kernel = objects["kernel"]
    t = _inputs(data, _kernel_device())
    q, k_cache, v_cache = t["q"], t["k_cache"], t["v_cache"]
    num_seqs, num_heads, head_dim = q.shape                      # (S, H, D)
    _, block_size, num_kv_heads, _ = k_cache.shape               # (N, B, KV, D)
    scale = 1.0 / math.sqrt(head_dim) if data["scale"] is None else data["scale"]
    out = torch.full_like(q, float("nan"))                       # (S, H, D)
    tables = t["block_tables"]
    kernel[(num_seqs, num_heads)](
        out, q, k_cache, v_cache, tables, t["context_lens"], scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        tables.stride(0), out.stride(0), out.stride(1),
        QUERIES_PER_KV=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size)
    return _values(out)


def run_prefill(objects: dict, data: dict) -> dict:
    """Call ``paged_attention(q, k_cache, v_cache, block_tables, context_lens, query_lens,
    scale)`` on a packed step (``q``: every sequence's new tokens, one after another)."""
    return _values(objects["paged_attention"](**_inputs(data), query_lens=data["query_lens"],
                                              scale=data["scale"]))


def run_unified_kernel(objects: dict, data: dict) -> dict:
    """Launch the learner's ``@triton.jit`` unified kernel on buffers allocated here; read what
    it wrote. The arguments and the grid (sequence, query tile, query head) follow the kernel's
    signature in exercises/ex09_unified_kernel.ipynb; the output starts as NaN."""
    import torch
    kernel = objects["kernel"]
    device = _kernel_device()
    t = _inputs(data, device)
    q, k_cache, v_cache, tables = t["q"], t["k_cache"], t["v_cache"], t["block_tables"]
    num_tokens, num_heads, head_dim = q.shape                    # (T, H, D)
    _, block_size, num_kv_heads, _ = k_cache.shape               # (N, B, KV, D)
    query_lens, tile = data["query_lens"], data["query_tile"]
    starts = torch.tensor([0] + list(query_lens), dtype=torch.int32).cumsum(0).to(torch.int32)
    scale = 1.0 / math.sqrt(head_dim) if data["scale"] is None else data["scale"]
    out = torch.full_like(q, float("nan"))                       # (T, H, D)
    kernel[(len(query_lens), -(-max(query_lens) // tile), num_heads)](
        out, q, k_cache, v_cache, tables, t["context_lens"], starts.to(device), scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        tables.stride(0), out.stride(0), out.stride(1),
        QUERIES_PER_KV=num_heads // num_kv_heads, QUERY_TILE=tile, HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size)
    return _values(out)


DRIVERS = {"run_script": run_script, "run_schedule": run_schedule, "run_budget": run_budget,
           "run_calls": run_calls, "run_attention": run_attention, "run_kernel": run_kernel,
           "run_prefill": run_prefill, "run_unified_kernel": run_unified_kernel}
