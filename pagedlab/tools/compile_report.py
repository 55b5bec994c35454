"""What the Triton kernels become on a T4, an A100 and an H100, compiled on a machine without a GPU.

Triton compiles ahead of time: its wheel ships ``ptxas`` and ``cuobjdump``, so any machine can
turn a kernel into the GPU's own instructions (SASS) and read how many registers and how much
shared memory one program needs. This module does that for every configuration the package
itself would launch:

1. a child process (``TRITON_INTERPRET`` unset) pretends to be each GPU (:mod:`.fake_gpu`) and
   calls the package's own launch functions on many workloads (model shapes, dtypes, block
   sizes, batch sizes); each ``kernel[grid](...)`` is recorded instead of run;
2. every distinct recorded configuration is compiled for that GPU;
3. ``cuobjdump`` reads registers and spills from the binary; the kernel's metadata gives shared
   memory. A register spill (local memory: slow) or shared memory over the GPU's per-block limit
   (the launch would fail) is an error.

By default a covering set is compiled: of configurations that differ only in what cannot change
the code's size (a head dim 80 vs 128 both padded to 128, 5 vs 8 query heads per KV head both
padded to 8 rows, bf16 vs fp16), the largest. ``--full`` compiles all of them.

    python -m pagedlab.tools.compile_report [--full] [--arch sm_75,sm_80,sm_90] [--out DIR]

writes ``compile_table.md`` and ``compile_table.json`` to DIR (default benchmarks/results) and
exits 1 if anything fails. ``tests/test_compile.py`` runs it in ``make test``.
See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import fake_gpu

CHILD_FLAG = "PAGEDLAB_COMPILE_REPORT_CHILD"

# -- the workloads: what the package is asked to do -----------------------------------------------
# (num_heads, num_kv_heads, head_dim): the models pagedlab serves and common checkpoints.
MODELS = {
    "gpt2": (12, 12, 64),
    "tiny-llama-1.1b": (32, 4, 64),
    "qwen2-0.5b": (14, 2, 64),
    "phi-2": (32, 32, 80),
    "phi-3-mini": (32, 32, 96),
    "llama-3-8b": (32, 8, 128),
    "llama-2-7b": (32, 32, 128),
    "qwen2.5-7b": (28, 4, 128),
    "mistral-7b": (32, 8, 128),
    "gemma-2b": (8, 1, 256),
    "head-dim-32": (8, 2, 32),  # the smallest head dim the tests use
    "mqa-16": (16, 1, 128),  # 16 query heads on one KV head: the tallest decode rows
}
BLOCK_SIZES = (8, 16, 32, 128)
# (sequences, context tokens): a full batch (no split-K) and few long contexts (split-K).
BATCHES = ((64, 4096), (1, 16384), (2, 1024))
STORE_TOKENS = (1, 64, 4096)  # a single decode token, a decode batch, a prefill
# A whole engine step for the unified kernel: (sequences, new tokens per sequence, context).
STEPS = ((64, 1, 4096), (1, 1, 16384), (4, 512, 2048), (1, 2048, 2048))


def workloads() -> list[dict]:
    """Every workload the report asks the launch code about, on every GPU."""
    found = []
    for model, (num_heads, num_kv_heads, head_dim) in MODELS.items():
        for dtype in ("float16", "bfloat16", "float32"):
            for block_size in BLOCK_SIZES:
                for num_seqs, context in BATCHES:
                    found.append(dict(kind="decode", model=model, dtype=dtype,
                                      num_heads=num_heads, num_kv_heads=num_kv_heads,
                                      head_dim=head_dim, block_size=block_size,
                                      num_seqs=num_seqs, context=context))
                for num_seqs, query_len, context in STEPS:
                    found.append(dict(kind="step", model=model, dtype=dtype,
                                      num_heads=num_heads, num_kv_heads=num_kv_heads,
                                      head_dim=head_dim, block_size=block_size,
                                      num_seqs=num_seqs, query_len=query_len, context=context))
            for num_tokens in STORE_TOKENS:
                found.append(dict(kind="store", model=model, dtype=dtype,
                                  num_kv_heads=num_kv_heads, head_dim=head_dim,
                                  num_tokens=num_tokens))
    return found


def launch(workload: dict) -> None:
    """Call the package's launch function for one workload, on meta tensors."""
    import torch

    from pagedlab.kernels import launch_config, paged_attention, store_kv, unified_attention

    dtype = getattr(torch, workload["dtype"])
    gpu = fake_gpu.state.gpu
    if dtype not in launch_config.supported_dtypes(gpu.capability):
        return  # pagedlab refuses it before any launch (bf16 below sm_80)
    meta = dict(device="meta")
    if workload["kind"] == "decode":
        num_seqs, context = workload["num_seqs"], workload["context"]
        kv_shape = (num_seqs * context // workload["block_size"], workload["block_size"],
                    workload["num_kv_heads"], workload["head_dim"])
        q = torch.empty(num_seqs, workload["num_heads"], workload["head_dim"], dtype=dtype, **meta)
        k_cache = torch.empty(kv_shape, dtype=dtype, **meta)
        block_tables = torch.empty(num_seqs, context // workload["block_size"],
                                   dtype=torch.int32, **meta)
        context_lens = torch.empty(num_seqs, dtype=torch.int32, **meta)
        paged_attention.paged_attention_decode(q, k_cache, torch.empty_like(k_cache),
                                               block_tables, context_lens,
                                               workload["head_dim"] ** -0.5, context)
    elif workload["kind"] == "step":
        num_seqs, query_len, context = (workload[k] for k in ("num_seqs", "query_len", "context"))
        kv_shape = (num_seqs * context // workload["block_size"], workload["block_size"],
                    workload["num_kv_heads"], workload["head_dim"])
        q = torch.empty(num_seqs * query_len, workload["num_heads"], workload["head_dim"],
                        dtype=dtype, **meta)
        k_cache = torch.empty(kv_shape, dtype=dtype, **meta)
        block_tables = torch.empty(num_seqs, context // workload["block_size"],
                                   dtype=torch.int32, **meta)
        context_lens = torch.empty(num_seqs, dtype=torch.int32, **meta)
        query_start_loc = torch.empty(num_seqs + 1, dtype=torch.int32, **meta)
        unified_attention.unified_attention(q, k_cache, torch.empty_like(k_cache), block_tables,
                                            context_lens, query_start_loc, query_len, context,
                                            workload["head_dim"] ** -0.5)
    elif workload["kind"] == "store":
        rows = (workload["num_tokens"], workload["num_kv_heads"], workload["head_dim"])
        k = torch.empty(rows, dtype=dtype, **meta)
        k_cache = torch.empty(256, 16, *rows[1:], dtype=dtype, **meta)
        slots = torch.empty(rows[0], dtype=torch.int64, **meta)
        store_kv.store_kv(k, torch.empty_like(k), k_cache, torch.empty_like(k_cache), slots)


def record(gpus: list[fake_gpu.GPU], only: dict | None = None) -> list[fake_gpu.Launch]:
    """Every distinct launch of every workload on every GPU, in the order first met
    (``only``: just the workloads with these values)."""
    fake_gpu.install(gpus[0])
    chosen = [w for w in workloads()
              if all(str(w.get(k)) == str(v) for k, v in (only or {}).items())]
    for gpu in gpus:
        for workload in chosen:
            fake_gpu.use(gpu, workload)
            launch(workload)
    distinct = {}
    for found in fake_gpu.state.launches:
        distinct.setdefault(found.key(), found)
    return list(distinct.values())


# -- the covering set ----------------------------------------------------------------------------
# Constexprs that only move a mask bound inside a padded size, or sizes that only make a program
# bigger (more registers, never fewer): of launches that differ only in these, the largest
# stands for all. Every other launch parameter (tiles, rows, warps, stages, paths) is kept apart.
MASK_ONLY = ("HEAD_DIM", "QUERIES_PER_KV", "QUERY_TILE", "ROW")
GROWS = ("HEAD_DIM_PAD", "SPLITS_PAD", "BLOCKS_PER_TILE")


def covering(launches: list[fake_gpu.Launch]) -> list[fake_gpu.Launch]:
    """Two launches per class of launches whose code can differ only in mask bounds, in sizes
    that only grow it, in the block size beyond whether a tile fits in one block, or in bf16 vs
    fp16 (both 16-bit, the same instructions): the largest of each class, and the one with the
    fewest real rows and dims (ptxas is not monotonic: a 1-query-head launch spilled 8 bytes
    where the 16-head one of its class did not)."""
    largest = _covering(launches, smallest_masks=False)
    chosen = {id(found) for found in largest}
    return largest + [found for found in _covering(launches, smallest_masks=True)
                      if id(found) not in chosen]


def _covering(launches: list[fake_gpu.Launch], smallest_masks: bool) -> list[fake_gpu.Launch]:
    classes: dict[tuple, fake_gpu.Launch] = {}

    def size(found):
        named = found.named_constexprs()
        masks = tuple(named.get(k, 0) for k in MASK_ONLY)
        return tuple(named.get(k, 0) for k in GROWS) + (
            tuple(-m for m in masks) if smallest_masks else masks)

    for found in launches:
        named = found.named_constexprs()
        kept = {k: v for k, v in named.items() if k not in MASK_ONLY + GROWS + ("BLOCK_SIZE",)}
        if "BLOCK_SIZE" in named and "TILE" in named:
            kept["TILE_IN_ONE_BLOCK"] = named["TILE"] <= named["BLOCK_SIZE"]
        cls = (found.name, found.gpu.arch, found.options.num_warps, found.options.num_stages,
               tuple(sorted(kept.items())),
               tuple(sorted((k, v.replace("bf16", "fp16")) for k, v in found.signature.items()
                            if v != "constexpr")))
        if cls not in classes or size(found) > size(classes[cls]):
            classes[cls] = found
    return list(classes.values())


# -- compiling and reading the binary --------------------------------------------------------------


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def resource_usage(cubin: bytes) -> dict:
    """Registers, stack (spills) and local memory per thread, from ``cuobjdump``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", file.name],
                              capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text))
    return {"registers": int(found["REG"]), "stack": int(found["STACK"]),
            "local": int(found["LOCAL"])}


def sass(cubin: bytes) -> list[tuple[int, str]]:
    """The binary's instructions as (address, text)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([_tool("cuobjdump"), "-sass", file.name], capture_output=True,
                              text=True, check=True).stdout
    return [(int(address, 16), instruction.strip()) for address, instruction in
            re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", text)]


# What each opcode is for, to read an instruction mix at a glance.
CATEGORIES = [
    ("tensor-core matmul", r"^(HMMA|HGMMA|IMMA|BMMA|DMMA)"),
    ("fp32 math", r"^(FFMA|FMUL|FADD|FMNMX|FSEL|FSETP|FCHK|FRND)"),
    ("fp16 math", r"^(HFMA2|HMUL2|HADD2|HSET2|HMNMX2)"),
    ("exp2 (MUFU)", r"^MUFU"),
    ("global load", r"^(LDG|LDGSTS|LDGDEPBAR)"),
    ("global store", r"^(STG|RED|ATOM)"),
    ("shared memory", r"^(LDS|STS|LDSM|STSM|ATOMS)"),
    ("warp shuffle", r"^SHFL"),
    ("conversion", r"^(F2F|F2FP|I2F|F2I|PRMT)"),
    ("barrier / sync", r"^(BAR|DEPBAR|WARPSYNC|BSSY|BSYNC|NOP)"),
    ("branch", r"^(BRA|EXIT|RET|CALL)"),
    ("integer / address", r"^(IMAD|IADD|LEA|SHF|LOP|ISETP|IMNMX|SEL|IABS|SGXT|LOP3|POPC|FLO|UIADD|"
                          r"ULEA|UIMAD|USHF|ULOP|UISETP|USEL|UMOV|S2R|S2UR|CS2R|MOV|R2UR|PLOP3|"
                          r"P2R|R2P|VOTE|ULDC|LDC|BMSK|IMUL|UPRMT|USGXT|UFLO|UPOPC|BREV|UBREV)"),
]


def inner_loop(instructions: list[tuple[int, str]]) -> list[str]:
    """The instructions of the kernel's main loop: the longest backward branch's body."""
    best: list[str] = []
    for index, (address, text) in enumerate(instructions):
        match = re.search(r"\bBRA\s+(?:`?\(?)?(0x[0-9a-f]+)", text)
        if not match:
            continue
        target = int(match.group(1), 16)
        if target < address:
            body = [t for a, t in instructions[:index + 1] if a >= target]
            if len(body) > len(best):
                best = body
    return best


def instruction_mix(instructions: list[str]) -> dict:
    """How many instructions of each category (predicates like ``@P0`` ignored)."""
    counts: collections.Counter = collections.Counter()
    for text in instructions:
        opcode = re.sub(r"^@!?U?P\w+\s+", "", text).split()[0] if text else ""
        category = next((name for name, pattern in CATEGORIES if re.match(pattern, opcode)),
                        "other")
        counts[category] += 1
    return dict(counts.most_common())


def compile_one(found: fake_gpu.Launch, with_sass: bool = False) -> dict:
    """Compile one launch for its GPU; the row of the report (an ``error`` key if it failed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    major, minor = found.gpu.capability
    named = found.named_constexprs()
    row = {"kernel": found.name, "arch": found.gpu.arch, "gpu": found.gpu.name,
           "dtype": next((v[1:] for k, v in found.signature.items()
                          if k in ("q_ptr", "k_ptr", "out_ptr")), ""),
           "constexprs": named,
           "num_warps": found.options.num_warps, "num_stages": found.options.num_stages,
           "workload": found.workload}
    started = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(found.kernel, found.signature, found.constexprs,
                                            found.attrs),
                                  target=GPUTarget("cuda", 10 * major + minor, 32),
                                  options=found.options.__dict__)
    except Exception as error:  # noqa: BLE001  (reported, and the report fails)
        row["error"] = f"{type(error).__name__}: {error}"[:2000]
        return row
    row["compile_s"] = round(time.perf_counter() - started, 2)
    cubin = compiled.asm["cubin"]
    row.update(resource_usage(cubin))
    row["shared"] = int(compiled.metadata.shared)
    row["shared_limit"] = found.gpu.shared_per_block
    row["programs_per_sm"] = programs_per_sm(found.gpu, row["registers"], row["shared"],
                                             row["num_warps"])
    problems = []
    claimed = _claimed_programs_per_sm(found)
    if claimed is not None and claimed > row["programs_per_sm"]:
        problems.append(f"launch_config.decode_programs_per_sm says {claimed} programs fit on "
                        f"an SM, the compiled kernel allows {row['programs_per_sm']}")
    if row["stack"] or row["local"]:
        problems.append(f"register spill: {row['stack']} bytes of stack per thread")
    if row["shared"] > row["shared_limit"]:
        problems.append(f"shared memory {row['shared']} B over the {row['shared_limit']} B "
                        f"a program may use on {found.gpu.arch}")
    if problems:
        row["error"] = "; ".join(problems)
    if with_sass:
        loop = inner_loop(sass(cubin))
        row["inner_loop"] = {"instructions": len(loop), "mix": instruction_mix(loop),
                             "excerpt": _excerpt(loop), "reading": _reading(loop)}
    return row


def _reading(loop: list[str]) -> str:
    """What a learner should see in the loop's instructions, in one or two sentences."""
    has = lambda opcode: any(re.search(rf"\b{opcode}", text) for text in loop)  # noqa: E731
    if has("HMMA") or has("HGMMA"):
        said = "The two matrix products run on tensor cores (HMMA: a 16x8x16 multiply-add each)."
    else:
        said = ("No tensor cores: the two matrix products are plain fp32 multiply-adds (FFMA), "
                "one number at a time, fed from shared memory (LDS).")
    if has("LDGSTS"):
        said += (" Keys, values and the next block id are copied global -> shared memory "
                 "asynchronously (LDGSTS, cp.async) for tiles ahead of the one being computed.")
    else:
        said += " Keys and values are loaded straight into registers (LDG) for this tile only."
    return said


def _claimed_programs_per_sm(found: fake_gpu.Launch) -> int | None:
    """What the launch code assumed about this decode launch's occupancy (split-K uses it)."""
    if found.name != "paged_decode_kernel" or "dtype" not in found.workload:
        return None
    import torch

    from pagedlab.kernels import launch_config

    w = found.workload
    return launch_config.decode_config(found.gpu.capability, getattr(torch, w["dtype"]),
                                       w["head_dim"], w["num_heads"] // w["num_kv_heads"],
                                       w["block_size"]).programs_per_sm


def _excerpt(loop: list[str], length: int = 14) -> list[str]:
    """A short run of the loop around its first matrix multiply (or its start)."""
    first = next((i for i, t in enumerate(loop) if re.search(r"\b(HMMA|HGMMA|FFMA)", t)), 0)
    start = max(0, first - length // 2)
    return loop[start:start + length]


def programs_per_sm(gpu: fake_gpu.GPU, registers: int, shared: int, num_warps: int) -> int:
    """How many programs of this kernel one SM holds at once (registers, warps, shared memory)."""
    per_warp = -(-registers * 32 // 256) * 256  # registers are allocated 256 per warp at a time
    by_registers = gpu.registers_per_sm // (per_warp * num_warps)
    by_warps = gpu.max_warps_per_sm // num_warps
    reserved = 1024 if gpu.capability >= (8, 0) else 0  # the driver keeps 1 KB per program
    by_shared = gpu.shared_per_sm // (shared + reserved) if shared else gpu.max_blocks_per_sm
    return max(0, min(by_registers, by_warps, by_shared, gpu.max_blocks_per_sm))


# -- the report ------------------------------------------------------------------------------------

# The configuration lesson 07 shows: the benchmark's target shape.
SHOWCASE = dict(kind="decode", model="llama-3-8b", dtype="float16", block_size=16,
                num_seqs=64, context=4096)


def _compile_index(index: int) -> dict:
    found, with_sass = _PENDING[index]
    return compile_one(found, with_sass)


_PENDING: list = []


def build_report(arches: list[str], full: bool, jobs: int, only: dict | None = None,
                 all_sass: bool = False) -> dict:
    """Record, choose, compile; the whole report as a dict (runs in the child process)."""
    import multiprocessing

    import triton

    gpus = [fake_gpu.GPUS[arch] for arch in arches]
    started = time.perf_counter()
    recorded = record(gpus, only)
    chosen = recorded if full else covering(recorded)
    showcase = {}
    for found in recorded:  # the lesson's configuration is always compiled, with its SASS
        if found.name == "paged_decode_kernel" and all(
                found.workload.get(k) == v for k, v in SHOWCASE.items()):
            showcase.setdefault(found.gpu.arch, found)
    _PENDING[:] = [(found, all_sass) for found in chosen if found not in showcase.values()]
    _PENDING.extend((found, True) for found in showcase.values())
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            rows = pool.map(_compile_index, range(len(_PENDING)), chunksize=1)
    else:
        rows = [_compile_index(i) for i in range(len(_PENDING))]
    return {"triton": triton.__version__, "full": full, "arches": arches,
            "launches_recorded": len(recorded), "compiled": len(rows),
            "seconds": round(time.perf_counter() - started, 1), "rows": rows}


def _fmt_constexprs(row: dict) -> str:
    shown = ("HEAD_DIM", "HEAD_DIM_PAD", "QUERIES_PER_KV", "HEAD_ROWS", "QUERY_TILE", "ROWS",
             "BLOCK_SIZE", "TILE", "SPLIT", "USE_DOT", "DOT_FP32", "SPLITS_PAD", "ROW_PAD",
             "TOKENS")
    parts = []
    for name in shown:
        if name in row["constexprs"]:
            value = row["constexprs"][name]
            parts.append(f"{name}={int(value) if isinstance(value, bool) else value}")
    return " ".join(parts)


def markdown(report: dict) -> str:
    """The report as lesson 07 shows it: a summary per kernel and GPU, the decode loop on each
    GPU, then every configuration compiled."""
    lines = ["# Compiled kernels: registers and shared memory per program", "",
             f"Triton {report['triton']}, compiled ahead of time on a machine without a GPU by "
             f"`python -m pagedlab.tools.compile_report{' --full' if report['full'] else ''}` "
             f"({report['compiled']} of {report['launches_recorded']} configurations the package "
             f"launches). A spill means registers ran out and values went "
             f"to slow local memory; programs/SM is how many run at once on one SM.", "",
             "## Summary", "",
             "| kernel | GPU | configurations | registers | spill B (max) | shared B (max) | "
             "programs/SM (min) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list] = {}
    for row in report["rows"]:
        groups.setdefault((row["kernel"], row["arch"]), []).append(row)
    for (kernel, arch), rows in sorted(groups.items()):
        ok = [r for r in rows if "registers" in r]
        if not ok:
            lines.append(f"| {kernel} | {arch} | {len(rows)} | compile failed | | | |")
            continue
        registers = sorted(r["registers"] for r in ok)
        lines.append(f"| {kernel} | {arch} | {len(rows)} | {registers[0]}-{registers[-1]} | "
                     f"{max(r['stack'] for r in ok)} | {max(r['shared'] for r in ok)} of "
                     f"{ok[0]['shared_limit']} | {min(r['programs_per_sm'] for r in ok)} |")
    for row in report["rows"]:
        if "inner_loop" not in row or row["workload"].get("model") != SHOWCASE["model"]:
            continue
        loop = row["inner_loop"]
        lines += ["", f"## The decode loop on {row['gpu']} ({row['arch']})", "",
                  f"fp16, head dim 128, 32 query heads over 8 KV heads, block 16 "
                  f"({_fmt_constexprs(row)}): {row['registers']} registers, {row['shared']} B "
                  f"shared memory. One loop step is {loop['instructions']} instructions per warp "
                  f"({row['constexprs'].get('TILE')} tokens). {loop.get('reading', '')}", "",
                  "| what | instructions |", "| --- | --- |"]
        lines += [f"| {name} | {count} |" for name, count in loop["mix"].items()]
        lines += ["", "```", *loop["excerpt"], "```"]
    lines += ["", "## Every configuration compiled", "",
              "| kernel | GPU | dtype | warps | stages | registers | spill B | shared B | "
              "programs/SM | configuration |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in sorted(report["rows"], key=lambda r: (r["kernel"], r["arch"], r["dtype"],
                                                     _fmt_constexprs(r))):
        if "registers" not in row:
            lines.append(f"| {row['kernel']} | {row['arch']} | {row['dtype']} | "
                         f"{row['num_warps']} | {row['num_stages']} | - | - | - | - | "
                         f"{_fmt_constexprs(row)} **{row['error'][:120]}** |")
            continue
        lines.append(f"| {row['kernel']} | {row['arch']} | {row['dtype']} | {row['num_warps']} | "
                     f"{row['num_stages']} | {row['registers']} | {row['stack']} | "
                     f"{row['shared']} | {row['programs_per_sm']} | {_fmt_constexprs(row)}"
                     f"{' **' + row['error'] + '**' if 'error' in row else ''} |")
    return "\n".join(lines) + "\n"


def failures(report: dict) -> list[str]:
    return [f"{row['kernel']} on {row['arch']} ({row['dtype']}, {_fmt_constexprs(row)}): "
            f"{row['error']}" for row in report["rows"] if "error" in row]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pagedlab.tools.compile_report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        default=os.environ.get("PAGEDLAB_COMPILE_FULL") == "1",
                        help="every configuration, not a covering set (PAGEDLAB_COMPILE_FULL=1)")
    parser.add_argument("--arch", default=",".join(fake_gpu.GPUS),
                        help=f"comma-separated, of {', '.join(fake_gpu.GPUS)}")
    parser.add_argument("--out", default="benchmarks/results",
                        help="folder for compile_table.md and .json ('' for none)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", default="", help="workloads with these values only, e.g. "
                                                   "kind=decode,model=gpt2,dtype=float16")
    parser.add_argument("--sass", action="store_true", help="inner-loop instruction mix of all")
    args = parser.parse_args(argv)
    only = dict(item.split("=", 1) for item in args.only.split(",") if item)
    arches = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in arches if a not in fake_gpu.GPUS]
    if unknown:
        parser.error(f"unknown arch {unknown[0]!r}: choose from {', '.join(fake_gpu.GPUS)}")

    if os.environ.get(CHILD_FLAG) != "1":  # a fresh process, where no kernel is interpreted yet
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env[CHILD_FLAG] = "1"
        env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns while it is unset
        return subprocess.run([sys.executable, "-m", "pagedlab.tools.compile_report",
                               *(argv if argv is not None else sys.argv[1:])], env=env).returncode

    report = build_report(arches, args.full, args.jobs, only, args.sass)
    text = markdown(report)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compile_table.md").write_text(text)
        (out / "compile_table.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    problems = failures(report)
    for problem in problems:
        print("FAIL", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
