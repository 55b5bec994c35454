"""ex08, the chunked-prefill step: the grader's answer spends the budget as pagedlab's Scheduler
does, the cases catch the typical mistakes, and each failing step's hint names what broke."""
import contextlib
import io
import random
from pathlib import Path

import pytest

import pagedlab as pl
from pagedlab.grading import drivers, ex08, notebook
from pagedlab.grading.ex08 import reference_schedule_tokens

ROOT = Path(__file__).resolve().parent.parent
NAME = "ex08_chunked_prefill_step.ipynb"


def defined(folder: str) -> dict:
    """The names the notebook in ``folder`` defines (its prints and the stub's errors swallowed)."""
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(ROOT / folder / NAME)):
            try:
                exec(compile(text, f"<cell {number}>", "exec"), namespace)
            except NotImplementedError:
                pass
    return namespace


def steps(data: dict, step_function=reference_schedule_tokens) -> list[dict]:
    """{seq_id: tokens} per step, as the driver serves the workload around ``step_function``."""
    trace = drivers.run_budget({"schedule_tokens": step_function}, data)
    return [{sid: n for sid, n in step["tokens"] if n} for step in trace]


def with_scheduler(data: dict, prompts: dict | None = None) -> tuple[list[dict], dict]:
    """The same workload served by pl.Scheduler(enable_chunked_prefill=True) over a pool that
    holds every request: its num_scheduled_tokens per step, and each request's cache hit."""
    caching = prompts is not None
    bm = pl.BlockManager(4096, 4, enable_prefix_caching=caching)
    scheduler = pl.Scheduler(bm, max_num_seqs=data["max_num_seqs"],
                             max_num_batched_tokens=data["max_num_batched_tokens"],
                             enable_chunked_prefill=True)
    pending = sorted(data["requests"], key=lambda r: (r["arrival"], r["seq_id"]))
    trace, hits = [], {}
    for step in range(drivers.MAX_BUDGET_STEPS):
        while pending and pending[0]["arrival"] <= step:
            r = pending.pop(0)
            prompt = prompts[r["seq_id"]] if caching else [7] * r["prompt_len"]
            scheduler.add(pl.Sequence(r["seq_id"], prompt), max_new_tokens=r["max_new_tokens"])
        if not (scheduler.has_unfinished() or pending):
            break
        if not scheduler.has_unfinished():
            trace.append({})
            continue
        out = scheduler.schedule()
        trace.append(dict(out.num_scheduled_tokens))
        for seq in out.prefills:
            hits.setdefault(seq.seq_id, seq.num_cached_tokens)
        scheduler.update([5] * len(out.sampled))
    return trace, hits


def test_the_reference_spends_the_budget_like_pagedlab_scheduler():
    for seed in range(25):
        for case in ex08.cases(seed):
            data = {**case.data, "requests": [{**r, "cached": 0} for r in case.data["requests"]]}
            assert steps(data) == with_scheduler(data)[0], (seed, case.name)


def test_the_reference_skips_prefix_cache_hits_like_pagedlab_scheduler():
    """Prompts that share a system prompt: the Scheduler finds it in the prefix cache; the
    driver, told each request's hit, schedules every step the same."""
    seen = 0
    for seed in range(25):
        rng = random.Random(seed)
        system = [rng.randrange(50) for _ in range(rng.choice([4, 8, 12]))]
        data = ex08.cases(seed)[-1].data
        prompts = {r["seq_id"]: system + [rng.randrange(50) for _ in range(r["prompt_len"])]
                   for r in data["requests"]}
        trace, hits = with_scheduler(data, prompts)
        data = {**data, "requests": [{**r, "prompt_len": len(prompts[r["seq_id"]]),
                                      "cached": hits[r["seq_id"]]} for r in data["requests"]]}
        seen += sum(1 for hit in hits.values() if hit)
        assert steps(data) == trace, seed
    assert seen > 25


def test_the_solution_passes_check_and_the_stub_fails_every_case():
    assert pl.check("ex08", schedule_tokens=defined("solutions")["schedule_tokens"]).score == 6
    report = pl.check("ex08", schedule_tokens=defined("exercises")["schedule_tokens"])
    assert report.score == 0
    assert all("NotImplementedError: your code here" in case.got for case in report.cases)


def over_budget(running, waiting, budget, max_num_seqs):
    """Every waiting prompt whole, whatever the budget."""
    scheduled = reference_schedule_tokens(running, [], budget, max_num_seqs)
    for seq in waiting[:max_num_seqs - len(running)]:
        scheduled[seq.seq_id] = len(seq.token_ids) - seq.num_cached_tokens
    return scheduled


@pytest.mark.parametrize("mistake, failing_case, cause", [
    (ex08._prompts_first, "running decodes go first, one token each", "a decode was skipped"),
    (over_budget, "a prompt longer than the budget left is prefilled in chunks",
     "the budget was exceeded"),
    (ex08._whole_prompts, "a prompt longer than the budget left is prefilled in chunks",
     "takes a chunk"),
    (ex08._new_before_partial, "prompts take the budget in arrival order, those part-way through first",
     "the arrival order was broken"),
    (ex08._charges_hits, "prefix-cache hits never count against the budget",
     "a cache hit was charged to the budget"),
    (ex08._hits_spend_budget, "prefix-cache hits never count against the budget",
     "Was a cache hit charged to the budget?"),
    (ex08._no_cap, "max_num_seqs caps the batch", "admitted past the cap"),
], ids=lambda value: getattr(value, "__name__", None))
def test_a_typical_mistake_fails_its_case_with_a_hint_that_names_the_cause(mistake, failing_case, cause):
    for seed in (0, 3, 17):
        module_cases = {case.name: case for case in ex08.cases(seed)}
        report = pl.check("ex08", schedule_tokens=mistake) if seed == 0 else None
        case = module_cases[failing_case]
        mismatch = ex08.compare(case, drivers.run_budget(ex08.reference(), case.data),
                                drivers.run_budget({"schedule_tokens": mistake}, case.data))
        assert mismatch is not None and cause in mismatch.hint, (seed, mismatch)
        assert "max_num_batched_tokens=" in mismatch.where
        if report is not None:
            failed = {c.name: c for c in report.cases if not c.passed}
            assert failing_case in failed and cause in failed[failing_case].hint


def test_both_readmes_list_every_exercise_with_the_time_its_notebook_states():
    import re
    for path in sorted((ROOT / "solutions").glob("ex*.ipynb")):
        minutes = re.search(r"\*Time: about (\d+-\d+) minutes, after lesson (\w+)\.\*",
                            path.read_text()).groups()
        for readme in ("solutions", "exercises"):
            rows = [line for line in (ROOT / readme / "README.md").read_text().splitlines()
                    if line.startswith(f"| `{path.stem}`")]
            assert rows and rows[0].endswith(f"| {minutes[1]} | {minutes[0]} min |"), (readme, path.stem)
