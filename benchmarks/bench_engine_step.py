"""How much an engine step costs the host: waits for the GPU per decode step, and host time.

A GPU runs ahead of Python until Python asks for a value on the device (``.item()``,
``.tolist()``, ``bool(tensor)``, a boolean-mask index, a copy to the CPU): then the host waits,
and the GPU idles while the host prepares the next launch. This benchmark counts those calls,
made by pagedlab's own code, during each decode step of the engine's Triton path (run here in
the Triton interpreter, so it needs no GPU; the interpreter's own calls are not counted), for a
model of 2 and of 12 layers. The goal: at most 2 per step, whatever the number of layers.

Then it times the host's share of a step with the model stubbed out (the forward returns
zeros at once): scheduling, building the batch, sampling, updating.

    python benchmarks/bench_engine_step.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import pagedlab as pl

SYNCING = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy",
           "nonzero", "unique", "masked_select", "repeat_interleave"}
ON_HOST = {"_draw"}  # pagedlab functions that work on a row already copied to the CPU
PACKAGE = str(Path(pl.__file__).resolve().parent)
KERNELS = str(Path(pl.__file__).resolve().parent.parent / "kernels")


class CountHostWaits(TorchFunctionMode):
    """Counts calls that wait for the device, made from pagedlab's files."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.where: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        syncs = name in SYNCING or (name in ("__getitem__", "__setitem__") and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in _flat(args[1:2])))
        if name == "to" and any(str(a) == "cpu" for a in args[1:]):
            syncs = True
        if syncs:
            caller = sys._getframe(1)
            filename = str(Path(caller.f_code.co_filename).resolve())
            if filename.startswith((PACKAGE, KERNELS)) and caller.f_code.co_name not in ON_HOST:
                self.count += 1
                key = f"{Path(filename).name}:{caller.f_lineno} {name}"
                self.where[key] = self.where.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def _flat(items):
    for item in items:
        if isinstance(item, (tuple, list)):
            yield from item
        else:
            yield item


def tiny_gpt(num_layers: int) -> pl.GPT:
    torch.manual_seed(0)
    return pl.GPT(pl.GPTConfig(vocab_size=256, n_positions=128, n_embd=32, n_layer=num_layers,
                               n_head=2)).eval()


def waits_per_decode_step(num_layers: int, backend: str) -> tuple[float, dict]:
    engine = pl.LLMEngine(tiny_gpt(num_layers), num_blocks=32, block_size=4, backend=backend)
    for prompt in ([1, 2, 3], [4, 5, 6, 7, 8]):
        engine.add_request(prompt, max_new_tokens=6, temperature=0.8, seed=1)
    counts, where = [], {}
    while engine.has_unfinished_requests():
        with CountHostWaits() as counter:
            engine.step()
        if engine.stats.steps[-1].num_prefills == 0:  # a decode step
            counts.append(counter.count)
            for key, value in counter.where.items():
                where[key] = where.get(key, 0) + value
    return sum(counts) / max(len(counts), 1), where


def host_ms_per_step(num_seqs: int = 64, steps: int = 100) -> float:
    model = tiny_gpt(2)
    vocab = model.config.vocab_size

    def stub(batch, kv_cache):  # no model: what remains is the engine's own work
        rows = getattr(batch, "logits_rows", None)
        return torch.zeros(len(rows) if rows is not None else len(batch.query_lens), vocab)

    model.forward_paged = stub
    engine = pl.LLMEngine(model, num_blocks=num_seqs * 8, block_size=16, backend="torch")
    for i in range(num_seqs):
        engine.add_request([i % vocab] * 8, max_new_tokens=steps + 1)
    engine.step()  # the prefills
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    return 1000 * (time.perf_counter() - start) / steps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    figures = {}
    backend = "triton" if pl.backend.triton_status()["available"] else "torch"
    for layers in (2, 12):
        mean, where = waits_per_decode_step(layers, backend)
        figures[f"host_waits_per_decode_step_{layers}_layers"] = round(mean, 1)
        figures[f"where_{layers}_layers"] = dict(sorted(where.items(), key=lambda kv: -kv[1])[:8])
    figures["backend"] = backend
    figures["host_ms_per_decode_step_64_seqs_model_stubbed"] = round(host_ms_per_step(), 3)
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
