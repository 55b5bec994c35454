"""ex05 one scheduler step: grow the running batch, preempt by recompute, admit the waiting.

The learner writes ``schedule_step(running, waiting, block_manager, max_num_seqs)`` returning
``(prefills, decodes, preempted)``; the grader's driver runs a workload step by step around it
(appending each scheduled sequence's next token, finishing and admitting requests) and records
who ran. :func:`reference_schedule_step` is the grader's answer; tests/test_grading.py proves it
schedules exactly like :class:`pagedlab.Scheduler`. See notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

import random

from ..sequence import Sequence
from .blockdriver import describe_error
from .exercise import Case, Exercise, Mismatch, short

EXERCISE = Exercise(
    id="ex05", title="One scheduler step, with preemption",
    names={"schedule_step": "schedule_step"},
    forbidden={"pagedlab.scheduler": ("Scheduler",),
               "pagedlab.grading.ex05": ("reference_schedule_step",)},
)
MAX_STEPS = 80


def reference_schedule_step(running, waiting, block_manager, max_num_seqs):
    """The grader's answer (never run in the sandbox). running/waiting: oldest first."""
    bm, size = block_manager, block_manager.block_size
    growth = [1 if len(seq.token_ids) % size == 0 else 0 for seq in running]
    decodes, preempted, reserved = [], [], 0
    lo, hi = 0, len(running)
    while lo < hi:
        seq, need = running[lo], growth[lo]
        lo += 1
        while need > bm.num_free_blocks - reserved:
            if lo < hi:
                hi -= 1
                victim = running[hi]
            elif decodes:
                victim, seq = seq, None
            else:
                raise RuntimeError("a lone sequence cannot grow: the pool is too small")
            bm.free(victim)
            preempted.append(victim)
            if seq is None:
                break
        if seq is not None:
            decodes.append(seq)
            reserved += need
    prefills = []
    if not preempted:
        for seq in waiting:
            grow = 1 if len(seq.token_ids) % size == 0 else 0
            if (len(decodes) + len(prefills) >= max_num_seqs
                    or bm.blocks_needed(seq) + grow > bm.num_free_blocks - reserved - bm.watermark_blocks):
                break
            bm.allocate(seq)
            prefills.append(seq)
            reserved += grow
    return prefills, decodes, preempted


def _ids(value, known: dict) -> list | str:
    try:
        items = list(value)
    except Exception:  # noqa: BLE001
        return f"not a list: {short(repr(value), 60)}"
    ids = []
    for item in items[:1000]:
        match = next((sid for sid, seq in known.items() if seq is item), None)
        ids.append(match if match is not None else f"not one of the sequences: {short(repr(item), 40)}")
    return ids


def run(objects: dict, data: dict) -> list[dict]:
    """Serve ``data["requests"]`` step by step with the given ``schedule_step``."""
    from ..blocks import BlockManager

    step_function = objects["schedule_step"]
    bm = BlockManager(data["num_blocks"], data["block_size"], watermark=data["watermark"])
    pending = sorted(data["requests"], key=lambda r: (r["arrival"], r["seq_id"]))
    seqs = {r["seq_id"]: Sequence(r["seq_id"], r["prompt"]) for r in pending}
    stop = {r["seq_id"]: len(r["prompt"]) + r["max_new_tokens"] for r in pending}
    running: list[Sequence] = []
    waiting: list[Sequence] = []
    steps = []
    for step in range(MAX_STEPS):
        while pending and pending[0]["arrival"] <= step:
            waiting.append(seqs[pending.pop(0)["seq_id"]])
        if not (running or waiting or pending):
            break
        try:
            result = step_function(list(running), list(waiting), bm, data["max_num_seqs"])
            prefills, decodes, preempted = result
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
            order = {id(seq): n for n, seq in enumerate(seqs.values())}
            scheduled = [seqs[i] for i in record["prefills"] + record["decodes"]]
            for seq in scheduled:
                bm.append_token(seq, len(seq.token_ids) % 50)
            finished = [seq for seq in scheduled if len(seq.token_ids) >= stop[seq.seq_id]]
            for seq in finished:
                bm.free(seq)
            gone = {id(s) for s in finished} | {id(seqs[i]) for i in record["preempted"]}
            running = sorted((s for s in scheduled if id(s) not in gone), key=lambda s: order[id(s)])
            admitted = {id(seqs[i]) for i in record["prefills"]}
            waiting = sorted([s for s in waiting if id(s) not in admitted]
                             + [seqs[i] for i in record["preempted"]], key=lambda s: order[id(s)])
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - e.g. a block not reserved for a decode
            steps.append({"error": describe_error(error), "after": "appending the step's tokens"})
            break
    return steps


def compare(case: Case, expected, got):
    if not isinstance(got, list):
        return Mismatch("the whole case", "a list of steps", short(got))
    for index, want in enumerate(expected):
        where = f"step {index}"
        if index >= len(got) or not isinstance(got[index], dict):
            return Mismatch(where, short(want), "no step (the run stopped early)")
        have = got[index]
        if "error" in have and "error" not in want:
            after = f" while {have['after']}" if "after" in have else ""
            return Mismatch(where, short(want), f"{have['error'][1]}{after}: {short(have['error'][2], 200)}")
        for key in ("preempted", "decodes", "prefills", "free"):
            if have.get(key) != want.get(key):
                label = "num_free_blocks after the step" if key == "free" else f"{key} (seq ids)"
                return Mismatch(f"{where}: {label}", short(want.get(key)), short(have.get(key)))
    if len(got) > len(expected):
        return Mismatch(f"step {len(expected)}", "every request finished", short(got[len(expected)]))
    return None


def workload(seed: int, *, count: int, prompt: tuple[int, int], new: tuple[int, int],
             spread: int, num_blocks: int, block_size: int = 4, max_num_seqs: int = 8,
             watermark: float = 0.0) -> dict:
    rng = random.Random(seed)
    requests = [{"seq_id": i + 1, "arrival": rng.randrange(spread + 1),
                 "prompt": [rng.randrange(50) for _ in range(rng.randint(*prompt))],
                 "max_new_tokens": rng.randint(*new)} for i in range(count)]
    requests.sort(key=lambda r: (r["arrival"], r["seq_id"]))
    for number, request in enumerate(requests, start=1):   # ids in arrival order
        request["seq_id"] = number
    return {"num_blocks": num_blocks, "block_size": block_size, "watermark": watermark,
            "max_num_seqs": max_num_seqs, "requests": requests}


def _requests(*specs: tuple[int, int, int]) -> list[dict]:
    """(arrival, prompt length, new tokens) per request, ids 1, 2, ... in that order."""
    return [{"seq_id": i, "arrival": a, "prompt": list(range(10, 10 + n)), "max_new_tokens": m}
            for i, (a, n, m) in enumerate(specs, start=1)]


def cases(seed: int) -> list[Case]:
    def plan(num_blocks, requests, max_num_seqs=8, watermark=0.0, block_size=4):
        return {"num_blocks": num_blocks, "block_size": block_size, "watermark": watermark,
                "max_num_seqs": max_num_seqs, "requests": requests}
    return [
        Case("waiting requests are admitted first come, first served, while blocks last",
             "Admit from the front of waiting while blocks_needed(seq) (plus one if its next "
             "token starts a new block) fits in the free blocks not reserved; stop at the "
             "first that does not fit.", "run",
             plan(6, _requests((0, 6, 2), (0, 7, 2), (0, 3, 2), (1, 2, 1)))),
        Case("max_num_seqs caps the batch",
             "Never schedule more than max_num_seqs sequences in one step.", "run",
             plan(20, _requests((0, 2, 3), (0, 2, 3), (0, 2, 3), (0, 2, 3)), max_num_seqs=2)),
        Case("a running sequence that needs a block preempts the newest one",
             "Running sequences go oldest first; one whose next token needs a new block "
             "reserves it, and when none is left, the newest running sequence is freed "
             "(recompute) and goes back to waiting.", "run",
             plan(4, _requests((0, 4, 5), (0, 4, 5)))),
        Case("nothing is admitted in a step that preempted",
             "After a preemption the pool is short: admit no waiting request in that step.", "run",
             plan(4, _requests((0, 2, 3), (1, 8, 6), (2, 5, 2), (3, 2, 3)))),
        Case("the watermark keeps blocks back for running sequences",
             "Admission leaves block_manager.watermark_blocks free (growth of running "
             "sequences may use them).", "run",
             plan(10, _requests((0, 8, 3), (0, 8, 3), (0, 4, 3)), watermark=0.3)),
        Case(f"random arrivals (seed {seed})",
             "A busy server: preemptions, re-admissions and a full batch.", "run",
             workload(seed, count=10, prompt=(1, 9), new=(1, 8), spread=6, num_blocks=9,
                      max_num_seqs=4)),
    ]


def reference() -> dict:
    return {"schedule_step": reference_schedule_step}
