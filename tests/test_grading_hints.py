"""Hints that diagnose: a wrong step of ex05 or a wrong output of ex07 gets the cause it shows,
not the hint of whichever case it happened to fail (issue 14: a missing reservation in ex05 was
told about the watermark; ex07's GQA hint pointed at the kv_head line the exercise gives)."""
import contextlib
import io
from pathlib import Path

import pytest

import pagedlab as pl
from pagedlab.grading import ex05, notebook

ROOT = Path(__file__).resolve().parent.parent


def solution_with(stem: str, old: str, new: str, *, until: str = "", source: bool = False) -> dict:
    """The solution notebook's names, its answer edited as a learner's bug would (old -> new).

    ``until``: stop after the cell that defines this name (the try-it cells after it may crash
    on the bug). ``source``: put each cell's source in linecache (Triton reads the kernel's)."""
    import linecache
    namespace: dict = {}
    edited = False
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(ROOT / "solutions" / f"{stem}.ipynb")):
            if old in text:
                text, edited = text.replace(old, new), True
            filename = f"<hint cell {number}>"
            if source:
                linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
            exec(compile(text, filename, "exec"), namespace)
            if until and until in namespace:
                break
    assert edited, f"{old!r} is not in {stem}"
    return namespace


EX05_BUGS = [   # the bug, and what every failing case's hint must name: its cause, or the
    # numbers of the admission it got wrong (which show the blocks it left out)
    ("reserved_blocks_admitted", "bm.num_free_blocks - reserved - bm.watermark_blocks",
     "bm.num_free_blocks - bm.watermark_blocks", "promised to"),
    ("no_watermark", "bm.num_free_blocks - reserved - bm.watermark_blocks",
     "bm.num_free_blocks - reserved", "watermark"),
    ("no_growth_block", "bm.blocks_needed(seq) + grow >", "bm.blocks_needed(seq) >",
     "first new token"),
    ("skips_a_misfit", "                break\n            bm.allocate(seq)",
     "                continue\n            bm.allocate(seq)", "first come, first served stops"),
]


@pytest.mark.parametrize("old, new, mistake", [b[1:] for b in EX05_BUGS], ids=[b[0] for b in EX05_BUGS])
def test_an_ex05_bug_is_told_its_own_cause_wherever_it_fails(old, new, mistake):
    answer = solution_with("ex05_scheduler_step", old, new)["schedule_step"]
    for seed in (0, 5, 11):
        cases = ex05.cases(seed)
        from pagedlab.grading import judge
        outcomes = [{"status": "ok", "output": pl.grading.drivers.run_schedule(
            {"schedule_step": answer}, case.data)} for case in cases]
        report = judge.report(ex05, cases, judge.expected_outputs(ex05, cases), outcomes)
        failed = [case for case in report.cases if not case.passed]
        assert failed, (mistake, seed)
        assert all(mistake in case.hint for case in failed), (
            mistake, seed, [(c.name, c.hint) for c in failed])


def test_a_missing_reservation_in_ex05_is_not_told_about_the_watermark():
    answer = solution_with("ex05_scheduler_step", *EX05_BUGS[0][1:3])["schedule_step"]
    failed = [case for case in pl.check("ex05", schedule_step=answer).cases if not case.passed]
    assert failed and not any(case.hint in (ex05.MISTAKES["no watermark"], ex05.cases(0)[4].hint)
                              for case in failed)


EX07_BUGS = [
    ("query_head_offsets", "+ kv_head * stride_k_head + dims[None, :])",
     "+ head * stride_k_head + dims[None, :])", "query head"),
    ("zeros_scored", 'scores = tl.where(mask, scores, float("-inf"))', "scores = scores + 0.0",
     "zeros scored"),
    ("no_table", "physical = tl.load(block_tables_ptr + seq * stride_table_seq + logical_block).to(tl.int64)",
     "physical = logical_block", "no table"),
    ("no_rescale", "alpha = tl.exp(m_i - m_new)", "alpha = tl.exp(m_i - m_i)", "no rescale"),
    ("no_scale", "scores = tl.sum(k * q[None, :], axis=1) * scale", "scores = tl.sum(k * q[None, :], axis=1)",
     "no scale"),
]


@pytest.mark.parametrize("old, new, mistake", [b[1:] for b in EX07_BUGS], ids=[b[0] for b in EX07_BUGS])
def test_an_ex07_kernel_bug_is_told_its_own_cause(old, new, mistake):
    pytest.importorskip("triton")
    import linecache
    from pagedlab.grading import ex07
    original = linecache.cache.copy()
    answer = solution_with_source("ex07_triton_kernel", old, new)
    try:
        report = pl.check("ex07", paged_attention=answer["my_paged_attention"])
    finally:
        linecache.cache.clear()
        linecache.cache.update(original)
    failed = [case for case in report.cases if not case.passed]
    assert failed and all(case.hint == ex07.MISTAKES[mistake] for case in failed), \
        [(c.name, c.got, c.hint) for c in failed]


def test_the_ex07_gqa_hint_no_longer_points_at_the_given_kv_head_line():
    from pagedlab.grading import ex07
    gqa = next(case for case in ex07.cases(0) if case.name.startswith("grouped-query"))
    assert "kv_head = head // QUERIES_PER_KV" not in gqa.hint and "offsets" in gqa.hint


def test_the_ex07_emulation_without_a_mistake_is_the_reference():
    from pagedlab.grading import ex07, judge
    for seed in (0, 1, 99):
        cases = ex07.cases(seed)
        for case, want in zip(cases, judge.expected_outputs(ex07, cases)):
            assert max(abs(a - b) for a, b in zip(ex07.emulate(case.data), want["values"])) < 1e-4


def solution_with_source(stem: str, old: str, new: str) -> dict:
    return solution_with(stem, old, new, source=True)


# ------------------------------------------------------------------ ex01-ex04, ex06
def answer_with(stem: str, old: str, new: str, name: str):
    """The solution's ``name`` with a learner's bug; the try-it cells after it are not run."""
    return solution_with(stem, old, new, until=name)[name]


def graded_hints(module, objects: dict, seed: int, driver: str) -> list:
    """(case, hint) of every case the answer fails, graded on the cases of ``seed``."""
    from pagedlab.grading import judge
    cases = module.cases(seed)
    outcomes = [{"status": "ok", "output": pl.grading.drivers.DRIVERS[driver](objects, case.data)}
                for case in cases]
    report = judge.report(module, cases, judge.expected_outputs(module, cases), outcomes)
    return [(case, result.hint) for case, result in zip(cases, report.cases) if not result.passed]


BLOCK_BUGS = [   # exercise, the bug, and what the hint of every case it fails names (any of)
    ("ex01", "blocks_one_too_many", "return -(-len(seq.token_ids) // self.block_size)",
     "return len(seq.token_ids) // self.block_size + 1", ("too many", "allocate would succeed", "it fits")),
    ("ex01", "no_watermark", ">= self.watermark_blocks", ">= 0", ("the watermark",)),
    ("ex01", "takes_before_checking", """        if need > self.num_free_blocks - self.watermark_blocks:
            raise OutOfBlocks(f"sequence {seq.seq_id} needs {need} blocks, {self.num_free_blocks} "
                              f"free, {self.watermark_blocks} kept back (the watermark)")
        seq.block_table = [self.free_blocks.pop() for _ in range(need)]""", """        seq.block_table = []
        for _ in range(need):
            if len(self.free_blocks) <= self.watermark_blocks:
                raise OutOfBlocks("no room")
            seq.block_table.append(self.free_blocks.pop())""", ("although allocate raised",)),
    ("ex01", "double_free_accepted", "if seq.seq_id in self.freed:", "if False:",
     ("double free",)),
    ("ex01", "loses_a_block", "self.free_blocks.extend(seq.block_table)",
     "self.free_blocks.extend(seq.block_table[1:])", ("neither free nor held",)),
    # a review found these three passing every case: each now fails with its own rule
    ("ex01", "reallocated_stays_freed", "self.freed.discard(seq.seq_id)", "pass",
     ("forget that it was freed",)),
    ("ex01", "free_keeps_the_table", "        seq.block_table = []\n        del self.holders",
     "        del self.holders", ("free must empty the table",)),
    ("ex01", "free_by_id_only", "if self.holders.get(seq.seq_id) is not seq:",
     "if seq.seq_id not in self.holders:", ("the very object it gave blocks to",)),
    ("ex02", "new_block_too_early", "if len(seq.token_ids) % self.block_size == 0:\n            seq.block_table",
     "if len(seq.token_ids) % self.block_size in (0, 1):\n            seq.block_table",
     ("a block was taken while the last one still had room", "it needed no new block")),
    ("ex02", "can_append_ignores_the_pool", "return has_room or self.num_free_blocks > 0",
     "return has_room", ("block is free", "blocks are free")),
    ("ex02", "slots_are_positions",
     "return [seq.block_table[p // size] * size + p % size for p in range(start, end)]",
     "return list(range(start, end))", ("its own number",)),
    ("ex02", "range_stops_at_the_tokens", "end <= len(seq.block_table) * size", "end <= len(seq.token_ids)",
     ("the empty slots of the last block are slots too",)),
    ("ex03", "no_copy", "shared = filled and self.ref_counts[seq.block_table[-1]] > 1", "shared = False",
     ("copied nothing", "must be copied before")),
    ("ex03", "copies_a_full_block", "shared = filled and self.ref_counts[seq.block_table[-1]] > 1",
     "shared = self.ref_counts[seq.block_table[-1]] > 1", ("its last block was full",)),
    ("ex03", "fork_keeps_counts", "            self.ref_counts[block] += 1\n        return child",
     "            pass\n        return child", ("a block's count is how many tables hold it",)),
    ("ex03", "free_ignores_counts",
     "            if self.ref_counts[block] == 0:\n                self.free_blocks.append(block)",
     "            self.free_blocks.append(block)", ("count as free and held at once",)),
    ("ex04", "no_recompute", "return min(len(hits) * self.block_size, len(seq.token_ids) - 1)",
     "return len(hits) * self.block_size", ("recomputes its last token",)),
    ("ex04", "unchained", "parent = hash((parent, tuple(tokens[start:start + size])))",
     "parent = hash(tuple(tokens[start:start + size]))", ("every block before it match", "really hits")),
    ("ex04", "most_recently_used", "block, _ = self.evictable.popitem(last=False)",
     "block, _ = self.evictable.popitem(last=True)", ("freed longest ago",)),
]
BLOCK_STEMS = {"ex01": "ex01_block_manager", "ex02": "ex02_append_and_slots",
               "ex03": "ex03_copy_on_write", "ex04": "ex04_prefix_cache"}


@pytest.mark.parametrize("exercise_id, old, new, causes", [(b[0], *b[2:]) for b in BLOCK_BUGS],
                         ids=[f"{b[0]}-{b[1]}" for b in BLOCK_BUGS])
def test_a_block_manager_bug_is_told_the_invariant_it_broke(exercise_id, old, new, causes):
    from pagedlab.grading import exercise
    module = exercise.load(exercise_id)
    answer = answer_with(BLOCK_STEMS[exercise_id], old, new, "MyBlockManager")
    failed = [hint for seed in (0, 5, 11)
              for _, hint in graded_hints(module, {"BlockManager": answer}, seed, "run_script")]
    assert failed, exercise_id
    assert all(any(cause in hint for cause in causes) for hint in failed), failed


def test_a_block_manager_hint_states_numbers_of_the_step_not_the_formula():
    from pagedlab.grading import ex01
    answer = answer_with("ex01_block_manager", *BLOCK_BUGS[0][2:4], "MyBlockManager")
    hints = [hint for _, hint in graded_hints(ex01, {"BlockManager": answer}, 3, "run_script")]
    assert any("block(s) for" in hint and "at block size" in hint for hint in hints), hints
    assert not any(sign in hint for hint in hints for sign in ("//", "ceil", "len("))


EX06_BUGS = [
    ("no_scale", 'scores = torch.einsum("hd,thd->ht", q[i], k) * scale',
     'scores = torch.einsum("hd,thd->ht", q[i], k)', "no scale"),
    ("repeat_not_interleave", "k = k.repeat_interleave(group, dim=1)                  # (T, num_heads, head_dim)\n"
     "        v = v.repeat_interleave(group, dim=1)", "k = k.repeat(1, group, 1)\n        v = v.repeat(1, group, 1)",
     "repeat"),
    ("whole_last_block", "return blocks.flatten(0, 1)[:context_len]", "return blocks.flatten(0, 1)", "unmasked"),
    ("no_table", "blocks = cache[block_table[:used].long()]", "blocks = cache[torch.arange(used)]", "no table"),
]


@pytest.mark.parametrize("old, new, mistake", [b[1:] for b in EX06_BUGS], ids=[b[0] for b in EX06_BUGS])
def test_an_ex06_bug_is_told_its_own_cause(old, new, mistake):
    pytest.importorskip("torch")
    from pagedlab.grading import ex06
    answer = answer_with("ex06_paged_attention_torch", old, new, "my_paged_attention")
    failed = [hint for seed in (0, 4)
              for _, hint in graded_hints(ex06, {"paged_attention": answer}, seed, "run_attention")]
    assert failed and all(hint == ex06.MISTAKES[mistake] for hint in failed), failed


@pytest.mark.parametrize("exercise_id", ["ex01", "ex02", "ex03", "ex04", "ex06", "ex07"])
def test_no_case_hint_gives_the_formula_away(exercise_id):
    from pagedlab.grading import exercise
    module = exercise.load(exercise_id)
    texts = [case.hint for seed in (0, 1) for case in module.cases(seed)]
    texts += list(getattr(module, "MISTAKES", {}).values())
    for text in texts:
        assert not any(sign in text for sign in ("//", "ceil(", "cdiv(", "block_table[", "sqrt",
                                                 "% ", " * ", "exp(")), text


def test_a_block_manager_hint_survives_any_observations():
    """What a learner's manager reports is data: odd values give the case's own hint, not a crash."""
    import random
    from pagedlab.grading import blockhints, ex02, judge
    rng = random.Random(5)
    odd = [None, -1, True, "x", [], [1, "a"], ["not a list", "x"], {"1": 2}, 10 ** 9]
    for case in ex02.cases(3):
        expected = judge.expected_outputs(ex02, [case])[0]
        for _ in range(40):
            got = [dict(step) for step in expected]
            step = got[rng.randrange(1, len(got))]
            key = rng.choice(["result", "free", "tables", "tokens", "slots"])
            step[key] = rng.choice(odd) if key != "tables" else {"1": rng.choice(odd)}
            for index in range(len(got)):
                assert isinstance(blockhints.diagnose(case.data, index, expected, got, ex02.FEATURES), str)
