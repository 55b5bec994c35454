"""ex05 one scheduler step: grow the running batch, preempt by recompute, admit the waiting.

The learner writes ``schedule_step(running, waiting, block_manager, max_num_seqs)`` returning
``(prefills, decodes, preempted)``; the driver (:func:`.drivers.run_schedule`) runs a workload
step by step around it (appending each scheduled sequence's next token, finishing and admitting
requests) and records who ran. :func:`reference_schedule_step` is the grader's answer (this
module never reaches a sandbox); tests/test_grading.py proves it schedules exactly like
:class:`pagedlab.Scheduler`. Every case is a workload drawn from the seed and kept only if the
reference shows the behaviour the case is about. See notebooks/05_scheduling.ipynb.
"""
from __future__ import annotations

import random
from functools import partial

from .drivers import run_schedule
from .exercise import Case, Exercise, Mismatch, drawn, short

EXERCISE = Exercise(
    id="ex05", title="One scheduler step, with preemption",
    names={"schedule_step": "schedule_step"},
)


def reference_schedule_step(running, waiting, block_manager, max_num_seqs):
    """The grader's answer (never run in the sandbox). running/waiting: oldest first."""
    return _schedule_step(running, waiting, block_manager, max_num_seqs)


def _schedule_step(running, waiting, block_manager, max_num_seqs, mistake: str = ""):
    """The reference, or with one typical ``mistake`` (a key of MISTAKES) to tell a learner's
    step by."""
    bm, size = block_manager, block_manager.block_size
    growth = [1 if len(seq.token_ids) % size == 0 else 0 for seq in running]
    decodes, preempted, reserved = [], [], 0
    lo, hi = 0, len(running)
    while lo < hi:
        seq, need = running[lo], growth[lo]
        lo += 1
        while need > bm.num_free_blocks - reserved:
            if mistake == "no preemption":
                seq = None
                break
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
    if not preempted or mistake == "admits after preempting":
        watermark = 0 if mistake == "no watermark" else bm.watermark_blocks
        cap = 1 << 30 if mistake == "no cap" else max_num_seqs
        for seq in waiting:
            grow = 1 if len(seq.token_ids) % size == 0 and mistake != "no growth block" else 0
            held = 0 if mistake == "reserved blocks admitted" else reserved
            if (len(decodes) + len(prefills) >= cap
                    or bm.blocks_needed(seq) + grow > bm.num_free_blocks - held - watermark):
                if mistake == "skips a misfit":
                    continue
                break
            bm.allocate(seq)
            prefills.append(seq)
            reserved += grow
    return prefills, decodes, preempted


MISTAKES = {   # what a learner's step shows, when it equals the reference's with this mistake
    "admits after preempting": "Waiting requests were admitted in a step that preempted: the "
                               "pool is short then, so nobody is admitted in that step.",
    "no watermark": "The watermark was not kept: admission leaves block_manager.watermark_blocks "
                    "free for the running sequences to grow into.",
    "reserved blocks admitted": "A waiting request got blocks already promised to the running "
                                "sequences' next tokens: admission may use only the free blocks "
                                "not reserved for decodes.",
    "no growth block": "An admitted prompt that exactly fills its blocks needs one more block for "
                       "its first new token, and that block was not counted.",
    "no cap": "The batch grew past max_num_seqs.",
    "skips a misfit": "A request was admitted past an older one that did not fit: first come, "
                      "first served stops at the first that does not fit.",
    "no preemption": "A running sequence whose next token needs a block was dropped instead of "
                     "making room: preempt the newest running sequence (recompute).",
}


def diagnose(data: dict, index: int, got: dict) -> str:
    """The cause of a wrong step ``index``: the one mistake whose step equals the learner's, or,
    when several would, the numbers of the first admission that did not fit. The earlier steps
    agreed, so the reference's state before this step is the learner's."""
    import copy
    found: list[str] = []

    def step_function(running, waiting, bm, max_num_seqs):
        if calls[0] == index:
            matches = [text for mistake, text in MISTAKES.items()
                       if _makes(copy.deepcopy((running, waiting, bm)), max_num_seqs, mistake, got)]
            if len(matches) == 1:
                found.append(matches[0])
            elif matches:
                found.append(_admission_account(copy.deepcopy((running, waiting, bm)),
                                                max_num_seqs, got))
        calls[0] += 1
        return reference_schedule_step(running, waiting, bm, max_num_seqs)
    calls = [0]
    run_schedule({"schedule_step": step_function}, data)
    return found[0] if found else ""


def _makes(state, max_num_seqs: int, mistake: str, got: dict) -> bool:
    """Whether the reference with ``mistake`` makes the learner's step from this state."""
    try:
        out = _schedule_step(*state, max_num_seqs, mistake)
    except Exception:  # noqa: BLE001 - that mistake cannot make this step
        return False
    return (all([seq.seq_id for seq in seqs] == got.get(key)
                for key, seqs in zip(("prefills", "decodes", "preempted"), out))
            and state[2].num_free_blocks == got.get("free"))


def _admission_account(state, max_num_seqs: int, got: dict) -> str:
    """The blocks at the first admission the learner made and the reference would not."""
    running, waiting, bm = state
    prefills, decodes, preempted = reference_schedule_step(running, waiting, bm, max_num_seqs)
    size = bm.block_size
    reserved = sum(1 for seq in decodes + prefills if len(seq.token_ids) % size == 0)
    extra = [seq for seq in waiting if seq.seq_id in (got.get("prefills") or [])
             and seq not in prefills]
    if preempted or not extra:
        return ""
    seq = extra[0]
    grow = 1 if len(seq.token_ids) % size == 0 else 0
    return (f"Request {seq.seq_id} was admitted needing {bm.blocks_needed(seq)} block(s)"
            + (" plus 1 for its first new token" if grow else "")
            + f", when {bm.num_free_blocks} were free: {reserved} of them promised to the next "
            f"tokens of sequences already in this step, and {bm.watermark_blocks} kept back as "
            "the watermark.")


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
                return Mismatch(f"{where}: {label}", short(want.get(key)), short(have.get(key)),
                                hint=diagnose(case.data, index, have))
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


def _trace(data: dict) -> list[dict]:
    return run_schedule({"schedule_step": reference_schedule_step}, data)


def _preemptions(data: dict) -> int:
    return sum(1 for step in _trace(data) if step.get("preempted"))


def _fcfs(data: dict) -> bool:
    """No preemption, and some request had to wait for blocks while the batch had room."""
    trace = _trace(data)
    arrived = sum(1 for r in data["requests"] if r["arrival"] == 0)
    return not any(s.get("preempted") for s in trace) and len(trace[0].get("prefills", [])) < arrived


def _capped(data: dict) -> bool:
    return not _preemptions(data) and any(
        len(s.get("prefills", [])) + len(s.get("decodes", [])) == data["max_num_seqs"]
        and len(s.get("prefills", [])) for s in _trace(data)[1:])


def _admits_after_preempting(running, waiting, bm, max_num_seqs):
    """The typical mistake of case 4: admitting waiting requests in a step that preempted."""
    return _schedule_step(running, waiting, bm, max_num_seqs, "admits after preempting")


def _admission_matters(data: dict) -> bool:
    return _trace(data) != run_schedule({"schedule_step": _admits_after_preempting}, data)


def _watermarked(data: dict) -> bool:
    return _trace(data) != _trace({**data, "watermark": 0.0})


def _requests(rng: random.Random, count: int, arrivals: int, prompt: tuple[int, int],
              new: tuple[int, int], block_size: int = 4, whole_blocks: bool = False) -> list[dict]:
    ids = sorted(rng.sample(range(1, 1000), count))
    requests = []
    for seq_id, arrival in zip(ids, sorted(rng.randint(0, arrivals) for _ in range(count))):
        length = rng.randint(*prompt) * (block_size if whole_blocks else 1)
        requests.append({"seq_id": seq_id, "arrival": arrival, "max_new_tokens": rng.randint(*new),
                         "prompt": [rng.randrange(50) for _ in range(length)]})
    return requests


_drawn = partial(drawn, "ex05")   # a case's workload, drawn from the seed


def cases(seed: int) -> list[Case]:
    def plan(num_blocks, requests, max_num_seqs=8, watermark=0.0, block_size=4):
        return {"num_blocks": num_blocks, "block_size": block_size, "watermark": watermark,
                "max_num_seqs": max_num_seqs, "requests": requests}
    first_come = _drawn(seed, 0, lambda r: plan(r.randint(4, 8), _requests(r, 4, 1, (2, 9), (1, 3))),
                        _fcfs)
    capped = _drawn(seed, 1, lambda r: plan(40, _requests(r, r.randint(4, 6), 0, (1, 4), (2, 4)),
                                            max_num_seqs=r.randint(2, 3)), _capped)
    preempt = _drawn(seed, 2, lambda r: plan(r.randint(3, 5), _requests(
        r, r.randint(2, 3), 0, (1, 1), (4, 7), whole_blocks=True)), lambda d: _preemptions(d) > 0)
    no_admit = _drawn(seed, 3, lambda r: plan(r.randint(4, 6), _requests(r, 4, 3, (2, 8), (2, 6))),
                      _admission_matters)
    watermark = _drawn(seed, 4, lambda r: plan(r.randint(9, 12), _requests(r, 3, 0, (4, 8), (2, 3)),
                                               watermark=r.choice([0.2, 0.3, 0.4])), _watermarked)
    return [
        Case("waiting requests are admitted first come, first served, while blocks last",
             "Admit from the front of waiting while blocks_needed(seq) (plus one if its next "
             "token starts a new block) fits in the free blocks not reserved; stop at the "
             "first that does not fit.", "run_schedule", first_come),
        Case("max_num_seqs caps the batch",
             "Never schedule more than max_num_seqs sequences in one step.", "run_schedule", capped),
        Case("a running sequence that needs a block preempts the newest one",
             "Running sequences go oldest first; one whose next token needs a new block "
             "reserves it, and when none is left, the newest running sequence is freed "
             "(recompute) and goes back to waiting.", "run_schedule", preempt),
        Case("nothing is admitted in a step that preempted",
             "After a preemption the pool is short: admit no waiting request in that step.",
             "run_schedule", no_admit),
        Case("the watermark keeps blocks back for running sequences",
             "Admission leaves block_manager.watermark_blocks free (growth of running "
             "sequences may use them).", "run_schedule", watermark),
        Case(f"random arrivals (seed {seed})",
             "A busy server: preemptions, re-admissions and a full batch.", "run_schedule",
             workload(seed, count=10, prompt=(1, 9), new=(1, 8), spread=6, num_blocks=9,
                      max_num_seqs=4)),
    ]


def reference() -> dict:
    return {"schedule_step": reference_schedule_step}
