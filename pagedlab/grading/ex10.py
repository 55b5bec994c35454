"""ex10 capacity arithmetic: KV bytes per token, blocks from GPU memory, maximum concurrency.

The learner writes three plain-Python functions; the driver (:func:`.drivers.run_calls`) calls
them on arguments drawn from the seed (model shapes like the checkpoints' config.json, GPU
memory, utilization, weights and activations as :mod:`pagedlab.capacity` estimates them) and
records what each returned. The grader's answers are :mod:`pagedlab.capacity`'s own functions
(this module never reaches a sandbox, and the learner copy leaves ``capacity`` out). A failing
call's hint says what the number shows was left out or counted twice (:func:`diagnose`).
See notebooks/03b_how_many_requests_fit.ipynb.
"""
from __future__ import annotations

import random
from dataclasses import replace

from .exercise import Case, Exercise, Mismatch, short

EXERCISE = Exercise(
    id="ex10", title="How many requests fit: the capacity arithmetic",
    names={"kv_bytes_per_token": "kv_bytes_per_token", "num_kv_blocks": "num_kv_blocks",
           "max_concurrency": "max_concurrency"},
)
DTYPES = {1: "fp8", 2: "float16", 4: "float32"}      # bytes per number -> capacity's dtype name
GIB = 2**30
TOLERANCE = 1e-9                                      # relative, for max_concurrency


def reference() -> dict:
    """pagedlab.capacity's answers, behind the exercise's signatures."""
    from .. import capacity as cap

    def kv_bytes_per_token(num_layers, num_heads, num_kv_heads, head_dim, dtype_bytes):
        shape = replace(cap.MODELS["GPT-2"], num_layers=num_layers, num_heads=num_heads,
                        num_kv_heads=num_kv_heads, head_dim=head_dim)
        return cap.kv_bytes_per_token(shape, DTYPES[dtype_bytes])

    def num_kv_blocks(gpu_memory_bytes, gpu_memory_utilization, weights_bytes,
                      activations_bytes, bytes_per_token, block_size):
        left = cap.kv_cache_bytes(gpu_memory_bytes, gpu_memory_utilization, weights_bytes,
                                  activations_bytes)
        return cap.num_kv_blocks(max(left, 0), bytes_per_token, block_size)

    return {"kv_bytes_per_token": kv_bytes_per_token, "num_kv_blocks": num_kv_blocks,
            "max_concurrency": cap.max_concurrency}


# ------------------------------------------------------------------ the judge
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(name: str, want, have) -> bool:
    if not _is_number(have):
        return False
    if name == "max_concurrency":
        return abs(have - want) <= TOLERANCE * max(1.0, abs(want))
    return have == want


def _arg(value) -> str:
    return f"{value:_}" if isinstance(value, int) else repr(value)


def _show(value) -> str:
    if isinstance(value, list) and value[:1] == ["raised"]:
        return f"{value[1]}: {short(value[2], 200)}"
    if isinstance(value, float) and value.is_integer():
        return f"{value:_.1f}"
    return _arg(value) if _is_number(value) else short(value)


def _kv_cause(args, got) -> str:
    layers, heads, kv_heads, head_dim, size = args
    want = 2 * layers * kv_heads * head_dim * size
    if size != 2 and got in (want // size * 2, want // size, want // size * 4):
        return ("The bytes per number were not used: fp8 stores 1 byte a number, fp16 and "
                "bf16 2, fp32 4.")
    if got == want // 2:
        return ("Half the bytes: only K or only V was counted. The cache keeps both, for every "
                "layer and KV head.")
    if heads != kv_heads and got in (want // kv_heads * heads, want // kv_heads * heads // 2):
        return ("The query heads were counted: with grouped-query attention only the "
                "num_kv_heads heads of K and V are cached (the query heads share them).")
    if got in (want // layers, want // layers // 2):
        return "One layer's worth: every layer keeps its own K and V."
    if got == want * 8:
        return "Eight times too many: bits, not bytes."
    return ""


def _blocks_cause(args, got) -> str:
    from .. import capacity as cap
    memory, utilization, weights, activations, per_token, block_size = args
    budget = cap.budget_bytes(memory, utilization)
    if _is_number(got) and got < 0:
        return ("A negative count: when weights and activations take more than the budget, "
                "no block is left (0), and vLLM refuses to start.")
    if isinstance(got, float) and not got.is_integer():
        return "A fraction of a block: the pool holds whole blocks only."
    if budget - weights - activations <= 0:
        return ("The budget is spent before the KV cache: weights and activations take more "
                "than utilization x memory, so no block is left.")
    block_bytes = block_size * per_token
    causes = [
        ((memory - weights - activations) // block_bytes,
         "The whole memory was counted: vLLM takes only gpu_memory_utilization of it."),
        ((budget - weights) // block_bytes,
         "The activations were not subtracted: a step's activations need room too."),
        ((budget - activations) // block_bytes, "The weights were not subtracted."),
        ((budget - weights - activations) // per_token,
         "Tokens, not blocks: a block holds block_size tokens' K and V."),
        (-(-(budget - weights - activations) // block_bytes),
         "One block too many: a partly filled block does not fit, round down."),
    ]
    return next((text for value, text in causes if got == value), "")


def _concurrency_cause(args, got) -> str:
    from .. import capacity as cap
    num_blocks, tokens, block_size = args
    blocks = cap.blocks_per_request(tokens, block_size)
    if _is_number(got) and abs(got - num_blocks * block_size / tokens) <= 1e-6 * max(1, got):
        return ("Each request holds whole blocks: its last block is its own even when partly "
                "filled, so count blocks per request, not tokens.")
    if got == num_blocks // blocks:
        return ("Rounded down: vLLM reports the ratio itself (its log says e.g. '12.57x'); "
                "return it as a float.")
    if _is_number(got) and abs(got - num_blocks / tokens) <= 1e-9 * max(1, got):
        return "Blocks divided by tokens: a request of that many tokens holds fewer blocks."
    return ""


CAUSES = {"kv_bytes_per_token": _kv_cause, "num_kv_blocks": _blocks_cause,
          "max_concurrency": _concurrency_cause}


def diagnose(name: str, args: list, got) -> str:
    """What a wrong number shows was left out or counted twice ("" if it shows nothing)."""
    if isinstance(got, list):
        return ""
    return CAUSES[name](args, got)


def compare(case: Case, expected, got):
    if not isinstance(got, list) or len(got) != len(case.data["calls"]):
        return Mismatch("the whole case", f"{len(case.data['calls'])} results", short(got))
    for (name, args), want, have in zip(case.data["calls"], expected, got):
        if not _same(name, want, have):
            return Mismatch(f"{name}({', '.join(map(_arg, args))})", _show(want), _show(have),
                            hint=diagnose(name, args, have))
    return None


# ------------------------------------------------------------------ the cases
def _shape(rng: random.Random, gqa: bool) -> list[int]:
    """[num_layers, num_heads, num_kv_heads, head_dim] like a checkpoint's config.json."""
    kv_heads = rng.choice([1, 2, 4, 8]) if gqa else rng.choice([8, 12, 16, 25, 32, 40])
    group = rng.choice([2, 3, 4, 7, 8]) if gqa else 1
    return [rng.randint(2, 80), kv_heads * group, kv_heads, rng.choice([64, 80, 96, 128, 256])]


def _memory_calls(rng: random.Random, count: int, fits: bool | None) -> list:
    """num_kv_blocks calls for pagedlab.capacity's models on GPUs of real sizes; ``fits``: keep
    only those whose weights and activations leave room (True), or only those that do not."""
    from .. import capacity as cap
    calls = []
    while len(calls) < count:
        model = cap.MODELS[rng.choice(sorted(cap.MODELS))]
        memory = rng.choice([16, 24, 40, 48, 80, 94, 141]) * GIB
        utilization = rng.choice([0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95])
        weights = int(cap.weight_bytes(model) * rng.uniform(0.95, 1.05))
        activations = cap.activation_bytes(model, rng.choice([2048, 8192, 16384]),
                                           rng.choice([64, 256, 1024]))
        per_token = cap.kv_bytes_per_token(model, rng.choice(["auto", "fp8"]))
        left = cap.kv_cache_bytes(memory, utilization, weights, activations)
        if fits is None or (left > 0) == fits:
            calls.append(["num_kv_blocks", [memory, utilization, weights, activations, per_token,
                                            rng.choice([8, 16, 32])]])
    return calls


def cases(seed: int) -> list[Case]:
    def rng(index: int) -> random.Random:
        return random.Random(f"ex10:{seed}:{index}")

    r = rng(0)
    plain = [["kv_bytes_per_token", _shape(r, gqa=False) + [2]] for _ in range(4)]
    r = rng(1)
    grouped = [["kv_bytes_per_token", _shape(r, gqa=True) + [2]] for _ in range(4)]
    r = rng(2)
    dtypes = [["kv_bytes_per_token", _shape(r, gqa=r.random() < 0.5) + [size]]
              for size in r.sample([1, 4, 1, 4, 2], 4)]
    memory = _memory_calls(rng(3), 4, fits=True)
    r = rng(4)
    no_room = _memory_calls(r, 3, fits=False) + _memory_calls(r, 1, fits=True)
    r.shuffle(no_room)
    r = rng(5)
    concurrency = []
    for _ in range(4):
        block_size = r.choice([8, 16, 32])
        tokens = r.randint(1, 2048) * block_size - r.randint(1, block_size - 1)
        concurrency.append(["max_concurrency", [r.randint(100, 60000), tokens, block_size]])
    return [
        Case("KV bytes per token: K and V, every layer, every head",
             "One token stores a key and a value vector per layer and per KV head.",
             "run_calls", {"calls": plain}),
        Case("grouped-query attention: only the KV heads are cached",
             "With GQA, num_heads query heads share num_kv_heads heads of K and V.",
             "run_calls", {"calls": grouped}),
        Case("the KV cache dtype sets the bytes per number (fp8, fp16, fp32)",
             "dtype_bytes is the size of one stored number.", "run_calls", {"calls": dtypes}),
        Case("blocks from GPU memory: what utilization leaves after weights and activations",
             "vLLM takes gpu_memory_utilization of the memory; weights and a step's activations "
             "come out of it first; the rest is cut into whole blocks.",
             "run_calls", {"calls": memory}),
        Case("a model that does not fit leaves no blocks",
             "When nothing is left for the KV cache, the count is 0.", "run_calls",
             {"calls": no_room}),
        Case("max concurrency: each request holds whole blocks",
             "Requests of tokens_per_request tokens, all at full length, in num_blocks blocks.",
             "run_calls", {"calls": concurrency}),
    ]
