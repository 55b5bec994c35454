"""ex08 one step of chunked prefill: the token budget, decodes first, prompts in chunks.

The learner writes ``schedule_tokens(running, waiting, max_num_batched_tokens, max_num_seqs)``
returning ``{seq_id: tokens computed this step}``; the driver (:func:`.drivers.run_budget`)
serves a workload step by step around it and records each step's inputs and answer.
:func:`reference_schedule_tokens` is the grader's answer (this module never reaches a sandbox);
tests/test_grading_ex08.py proves its steps equal ``pl.Scheduler(enable_chunked_prefill=True)``'s
``num_scheduled_tokens``, prefix-cache hits included. Every case is a workload drawn from the
seed and kept only if a typical mistake would fail it; a failing step's hint names the
invariant that broke (:func:`diagnose`). See notebooks/05b_chunked_prefill_and_latency.ipynb.
"""
from __future__ import annotations

import random
from functools import partial

from .drivers import run_budget
from .exercise import Case, Exercise, Mismatch, drawn, short

EXERCISE = Exercise(
    id="ex08", title="One step of chunked prefill: the token budget",
    names={"schedule_tokens": "schedule_tokens"},
)


def reference_schedule_tokens(running, waiting, max_num_batched_tokens, max_num_seqs):
    """The grader's answer (never run in the sandbox). running/waiting: oldest first."""
    budget, scheduled = max_num_batched_tokens, {}
    for seq in running:                                  # decodes: one token each
        if len(seq.token_ids) - seq.num_computed_tokens == 1:
            scheduled[seq.seq_id] = 1
            budget -= 1
    for seq in running:                                  # prompts part-way through
        left = len(seq.token_ids) - seq.num_computed_tokens
        if left > 1 and budget > 0:
            scheduled[seq.seq_id] = min(left, budget)
            budget -= scheduled[seq.seq_id]
    num_seqs = len(running)
    for seq in waiting:                                  # new prompts, past their cached prefix
        if budget <= 0 or num_seqs >= max_num_seqs:
            break
        scheduled[seq.seq_id] = min(len(seq.token_ids) - seq.num_cached_tokens, budget)
        budget -= scheduled[seq.seq_id]
        num_seqs += 1
    return scheduled


# ------------------------------------------------------------------ typical mistakes
# Each case's workload is kept only if one of these schedules it differently.
def _prompts_first(running, waiting, budget, max_num_seqs):
    prompts_only = [s for s in running if len(s.token_ids) - s.num_computed_tokens > 1]
    scheduled = reference_schedule_tokens(prompts_only, waiting, budget,
                                          max_num_seqs - len(running) + len(prompts_only))
    left = budget - sum(scheduled.values())
    for seq in running:
        if len(seq.token_ids) - seq.num_computed_tokens == 1 and left > 0:
            scheduled[seq.seq_id], left = 1, left - 1
    return scheduled


def _whole_prompts(running, waiting, budget, max_num_seqs):
    scheduled = reference_schedule_tokens(running, [], budget, max_num_seqs)
    left, num_seqs = budget - sum(scheduled.values()), len(running)
    for seq in waiting:
        need = len(seq.token_ids) - seq.num_cached_tokens
        if need > left or num_seqs >= max_num_seqs:
            break
        scheduled[seq.seq_id], left, num_seqs = need, left - need, num_seqs + 1
    return scheduled


def _new_before_partial(running, waiting, budget, max_num_seqs):
    decodes = [s for s in running if len(s.token_ids) - s.num_computed_tokens == 1]
    partial = [s for s in running if s not in decodes]
    scheduled = reference_schedule_tokens(decodes, waiting, budget, max_num_seqs - len(partial))
    scheduled.update(reference_schedule_tokens(partial, [], budget - sum(scheduled.values()), 0))
    return scheduled


def _charges_hits(running, waiting, budget, max_num_seqs):
    for seq in waiting:
        seq.num_cached_tokens = 0
    return reference_schedule_tokens(running, waiting, budget, max_num_seqs)


def _hits_spend_budget(running, waiting, budget, max_num_seqs):
    scheduled = reference_schedule_tokens(running, [], budget, max_num_seqs)
    left, num_seqs = budget - sum(scheduled.values()), len(running)
    for seq in waiting:
        if left <= 0 or num_seqs >= max_num_seqs:
            break
        scheduled[seq.seq_id] = min(len(seq.token_ids) - seq.num_cached_tokens, left)
        left -= scheduled[seq.seq_id] + seq.num_cached_tokens
        num_seqs += 1
    return scheduled


def _no_cap(running, waiting, budget, max_num_seqs):
    return reference_schedule_tokens(running, waiting, budget, 1 << 20)


def _trace(data: dict, step_function=reference_schedule_tokens) -> list[dict]:
    return run_budget({"schedule_tokens": step_function}, data)


def _catches(*mistakes):
    return lambda data: all(_trace(data) != _trace(data, mistake) for mistake in mistakes)


# ------------------------------------------------------------------ the judge
def _counts(pairs) -> dict | None:
    """[[seq_id, tokens], ...] as {seq_id: tokens}, zeros left out; None if not ints."""
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p) for p in pairs):
        return None
    return {sid: n for sid, n in pairs if n != 0}


def _show(counts) -> str:
    if not counts:
        return "{} (nothing scheduled)" if counts == {} else "nothing"
    return "{" + ", ".join(f"{sid}: {n}" for sid, n in counts.items()) + "}"


def _inputs(step: dict, budget: int, max_num_seqs: int) -> str:
    """The step's inputs in words: tokens each sequence has left to compute."""
    running = ", ".join(f"{sid}: {left}" for sid, left in step["running"])
    waiting = ", ".join(f"{sid}: {left}" + (f" (+{hit} cached)" if hit else "")
                        for sid, left, hit in step["waiting"])
    return (f"tokens left to compute: running {{{running}}}, waiting {{{waiting}}}; "
            f"max_num_batched_tokens={budget}, max_num_seqs={max_num_seqs}")


def diagnose(step: dict, pairs, budget: int, max_num_seqs: int) -> str:
    """Which invariant of a step the answer broke, in words ("" if none is found)."""
    running = {sid: left for sid, left in step["running"]}
    waiting = {sid: (left, hit) for sid, left, hit in step["waiting"]}
    counts = _counts(pairs)
    if counts is None:
        return ("Return a dict {seq_id: tokens computed this step}, seq ids and counts as ints, "
                "one entry per sequence that runs.")
    left = {**running, **{sid: left for sid, (left, _) in waiting.items()}}
    for sid, n in counts.items():
        if sid not in left:
            return f"Sequence {sid} is neither running nor waiting: only those can be scheduled."
        if n < 0:
            return f"Sequence {sid} got {n} tokens: a count is never negative."
        if sid in waiting and waiting[sid][1] and n > left[sid]:
            return (f"Waiting sequence {sid} got {n} tokens, but only {left[sid]} of its prompt are "
                    f"past its {waiting[sid][1]} cached tokens: a cache hit was charged to the "
                    "budget. Cached tokens are computed already; they cost nothing.")
        if n > left[sid]:
            return (f"Sequence {sid} got {n} tokens but has only {left[sid]} left to compute: a "
                    "sequence never computes more than it has left.")
    total = sum(counts.values())
    if total > budget:
        return (f"The step computes {total} tokens, over max_num_batched_tokens={budget}: the "
                "budget was exceeded.")
    skipped = [sid for sid, n in running.items() if n == 1 and sid not in counts]
    if skipped:
        return (f"Running sequence {skipped[0]} has one token left (it is decoding) and got none: "
                "a decode was skipped. Every decode gets its token before any prompt chunk.")
    admitted = [sid for sid in waiting if sid in counts]
    if len(running) + len(admitted) > max_num_seqs:
        return (f"The batch would hold {len(running) + len(admitted)} sequences, over "
                f"max_num_seqs={max_num_seqs}: a waiting request was admitted past the cap.")
    prompts = [sid for sid, n in running.items() if n > 1] + list(waiting)
    for index, sid in enumerate(prompts):
        if counts.get(sid, 0) < left[sid]:
            newer = [s for s in prompts[index + 1:] if counts.get(s)]
            if newer:
                return (f"Sequence {sid} got {counts.get(sid, 0)} of its {left[sid]} tokens left "
                        f"while the newer {newer[0]} got {counts[newer[0]]}: the arrival order was "
                        "broken. Prompts take the budget oldest first, those part-way through "
                        "before new ones.")
            room = sid in running or len(running) + len(admitted) < max_num_seqs
            if total < budget and room:
                charged = any(waiting[s][1] for s in admitted)
                return (f"{budget - total} tokens of the budget were left unused while sequence "
                        f"{sid} still had {left[sid] - counts.get(sid, 0)} prompt tokens to "
                        "compute." + (" Was a cache hit charged to the budget? Cached tokens "
                                      "cost nothing." if charged else
                                      " A prompt that does not fit whole takes a chunk."))
            break
    return ""


def compare(case: Case, expected, got):
    if not isinstance(got, list):
        return Mismatch("the whole case", "a list of steps", short(got))
    budget, max_num_seqs = case.data["max_num_batched_tokens"], case.data["max_num_seqs"]
    for index, want in enumerate(expected):
        where = f"step {index}: tokens per seq_id"
        if index >= len(got) or not isinstance(got[index], dict):
            return Mismatch(where, _show(_counts(want["tokens"])), "no step (the run stopped early)")
        have = got[index]
        where += f" ({_inputs(want, budget, max_num_seqs)})"
        if "error" in have:
            error = have["error"]
            return Mismatch(where, _show(_counts(want["tokens"])), f"{error[1]}: {short(error[2], 200)}")
        mine, theirs = _counts(have.get("tokens")), _counts(want["tokens"])
        if mine != theirs:
            return Mismatch(where, _show(theirs), _show(mine) if mine is not None else
                            short(have.get("tokens")),
                            hint=diagnose(want, have.get("tokens"), budget, max_num_seqs))
    if len(got) > len(expected):
        return Mismatch(f"step {len(expected)}", "every request finished", short(got[len(expected)]))
    return None


# ------------------------------------------------------------------ the cases
def _requests(rng: random.Random, count: int, arrivals: int, prompt: tuple[int, int],
              new: tuple[int, int], cached: float = 0.0, block_size: int = 4) -> list[dict]:
    """``count`` requests, seq ids in arrival order; a share ``cached`` of them find a prefix
    of whole blocks in the cache (always shorter than the prompt: its last token is computed)."""
    ids = sorted(rng.sample(range(1, 1000), count))
    requests = []
    for seq_id, arrival in zip(ids, sorted(rng.randint(0, arrivals) for _ in range(count))):
        length = rng.randint(*prompt)
        hit = rng.randrange(length) // block_size * block_size if rng.random() < cached else 0
        requests.append({"seq_id": seq_id, "arrival": arrival, "prompt_len": length,
                         "cached": hit, "max_new_tokens": rng.randint(*new)})
    return requests


def _plan(budget: int, max_num_seqs: int, requests: list[dict]) -> dict:
    return {"max_num_batched_tokens": budget, "max_num_seqs": max_num_seqs, "requests": requests}


_drawn = partial(drawn, "ex08")   # a case's workload, drawn from the seed


def cases(seed: int) -> list[Case]:
    decodes = _drawn(seed, 0, lambda r: _plan(r.randint(4, 8), 8, _requests(
        r, r.randint(3, 4), 3, (6, 20), (3, 6))), _catches(_prompts_first))
    chunks = _drawn(seed, 1, lambda r: _plan(r.randint(4, 8), 8, _requests(
        r, r.randint(2, 3), 2, (10, 30), (1, 3))), _catches(_whole_prompts))
    order = _drawn(seed, 2, lambda r: _plan(r.randint(5, 10), 8, _requests(
        r, r.randint(3, 5), 4, (8, 24), (1, 4))), _catches(_new_before_partial))
    hits = _drawn(seed, 3, lambda r: _plan(r.randint(6, 12), 8, _requests(
        r, r.randint(3, 4), 3, (6, 24), (1, 4), cached=0.8)), _catches(_charges_hits, _hits_spend_budget))
    capped = _drawn(seed, 4, lambda r: _plan(16, r.randint(2, 3), _requests(
        r, r.randint(4, 6), 1, (1, 6), (2, 5))), _catches(_no_cap))
    rng = random.Random(f"ex08:{seed}:5")
    busy = _plan(rng.randint(6, 16), rng.randint(3, 6),
                 _requests(rng, 8, 8, (1, 30), (1, 8), cached=0.4))
    return [
        Case("running decodes go first, one token each",
             "Decodes are scheduled before any prompt chunk, one token each.", "run_budget", decodes),
        Case("a prompt longer than the budget left is prefilled in chunks",
             "A prompt that does not fit whole takes what is left of the budget now and the rest "
             "in later steps.", "run_budget", chunks),
        Case("prompts take the budget in arrival order, those part-way through first",
             "Running sequences part-way through their prompt are older than every waiting one.",
             "run_budget", order),
        Case("prefix-cache hits never count against the budget",
             "A waiting sequence's first num_cached_tokens tokens are computed already.",
             "run_budget", hits),
        Case("max_num_seqs caps the batch",
             "Running sequences count towards max_num_seqs, whether they get tokens this step "
             "or not.", "run_budget", capped),
        Case(f"random arrivals (seed {seed})",
             "A busy server: decodes, chunks, cache hits and a full batch.", "run_budget", busy),
    ]


def reference() -> dict:
    return {"schedule_tokens": reference_schedule_tokens}
