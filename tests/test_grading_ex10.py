"""ex10, the capacity arithmetic: the grader's answers are pagedlab.capacity's, the solution
gives lesson 03b's numbers, and each typical mistake's hint says what the number left out."""
import contextlib
import io
import math
from pathlib import Path

import pytest

import pagedlab as pl
from pagedlab import capacity as cap
from pagedlab.grading import drivers, ex10, notebook

ROOT = Path(__file__).resolve().parent.parent
NAME = "ex10_capacity_arithmetic.ipynb"
FUNCTIONS = ("kv_bytes_per_token", "num_kv_blocks", "max_concurrency")


def defined(folder: str) -> dict:
    """The three functions the notebook in ``folder`` defines (prints and stub errors swallowed)."""
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for number, text in notebook.code_cells(notebook.read(ROOT / folder / NAME)):
            try:
                exec(compile(text, f"<cell {number}>", "exec"), namespace)
            except NotImplementedError:
                pass
    return {name: namespace[name] for name in FUNCTIONS}


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_the_answers_give_capacity_plans_numbers_for_every_model_and_gpu(answer):
    functions = ex10.reference() if answer == "reference" else defined("solutions")
    for model in cap.MODELS.values():
        for gpu in cap.GPUS:
            for dtype in ("auto", "fp8"):
                plan = cap.plan(model, gpu, kv_cache_dtype=dtype, tokens_per_request=2000)
                per_token = functions["kv_bytes_per_token"](
                    model.num_layers, model.num_heads, model.num_kv_heads, model.head_dim,
                    cap.dtype_bytes(dtype))
                blocks = functions["num_kv_blocks"](
                    plan.gpu.memory_bytes, plan.gpu_memory_utilization, plan.weights_bytes,
                    plan.activations_bytes, per_token, plan.block_size)
                assert (per_token, blocks) == (plan.kv_bytes_per_token, plan.num_blocks)
                assert math.isclose(functions["max_concurrency"](blocks, 2000, 16),
                                    plan.max_concurrency)


def test_the_solution_passes_check_and_the_stub_fails_every_case():
    assert pl.check("ex10", **defined("solutions")).score == 6
    report = pl.check("ex10", **defined("exercises"))
    assert report.score == 0
    assert all("NotImplementedError: your code here" in case.got for case in report.cases)


def mistake(name: str, wrong):
    """The solution with one function replaced by ``wrong``."""
    return {**defined("solutions"), name: wrong}


MISTAKES = [
    ("only_keys", "kv_bytes_per_token", lambda L, H, KV, D, b: L * KV * D * b,
     "KV bytes per token: K and V, every layer, every head", "only K or only V"),
    ("query_heads", "kv_bytes_per_token", lambda L, H, KV, D, b: 2 * L * H * D * b,
     "grouped-query attention: only the KV heads are cached", "query heads were counted"),
    ("dtype_ignored", "kv_bytes_per_token", lambda L, H, KV, D, b: 2 * L * KV * D * 2,
     "the KV cache dtype sets the bytes per number (fp8, fp16, fp32)", "bytes per number"),
    ("whole_memory", "num_kv_blocks", lambda M, u, W, A, P, B: (M - W - A) // (B * P),
     "blocks from GPU memory: what utilization leaves after weights and activations",
     "whole memory was counted"),
    ("no_activations", "num_kv_blocks", lambda M, u, W, A, P, B: (math.ceil(M * u) - W) // (B * P),
     "blocks from GPU memory: what utilization leaves after weights and activations",
     "activations were not subtracted"),
    ("tokens_not_blocks", "num_kv_blocks", lambda M, u, W, A, P, B: (math.ceil(M * u) - W - A) // P,
     "blocks from GPU memory: what utilization leaves after weights and activations",
     "Tokens, not blocks"),
    ("negative_blocks", "num_kv_blocks", lambda M, u, W, A, P, B: (math.ceil(M * u) - W - A) // (B * P),
     "a model that does not fit leaves no blocks", "A negative count"),
    ("tokens_per_block", "max_concurrency", lambda N, T, B: N * B / T,
     "max concurrency: each request holds whole blocks", "whole blocks"),
    ("rounded_down", "max_concurrency", lambda N, T, B: N // -(-T // B),
     "max concurrency: each request holds whole blocks", "Rounded down"),
]


@pytest.mark.parametrize("name, wrong, failing_case, cause", [m[1:] for m in MISTAKES],
                         ids=[m[0] for m in MISTAKES])
def test_a_typical_mistake_fails_its_case_with_a_hint_that_names_the_cause(name, wrong, failing_case, cause):
    answer = mistake(name, wrong)
    failed = {c.name: c for c in pl.check("ex10", **answer).cases if not c.passed}
    assert failing_case in failed and cause in failed[failing_case].hint, failed
    for seed in (3, 17, 12345):   # graded cases too
        case = next(c for c in ex10.cases(seed) if c.name == failing_case)
        mismatch = ex10.compare(case, drivers.run_calls(ex10.reference(), case.data),
                                drivers.run_calls(answer, case.data))
        assert mismatch is not None and cause in mismatch.hint, (seed, mismatch)


def test_an_answer_that_is_not_a_number_fails_with_what_came_back():
    answer = mistake("max_concurrency", lambda N, T, B: f"{N / -(-T // B):.2f}x")
    report = pl.check("ex10", **answer)
    assert report.score == 5
    case = next(c for c in report.cases if not c.passed)
    assert "not a number" in case.got and "x" in case.got
