"""``pagedlab bench``: time the paged decode kernel against what it replaces, and the copy speed.

For each batch x context (fp16, block 16, head dim 128, 32 query heads over 8 KV heads):

- ``paged kernel``   our Triton decode kernel reading K/V through the block tables;
- ``sdpa contiguous`` torch SDPA on the same K/V laid out contiguously: no paging, the ideal;
- ``gather + sdpa``  copy each sequence's blocks into a contiguous tensor, then SDPA: a first try;
- ``flex paged``     ``flex_attention`` walking the block tables (where this torch has it).

Decode attention is limited by memory: every key and value is read once. So each time is also
given as bandwidth (bytes of K, V, q and out / time) and as a fraction of the device's copy
bandwidth, measured in the same run. Results go to ``OUT/bench_<device>.json`` and ``.png``.
Without a GPU a tiny version runs in the Triton interpreter: it checks the plumbing, not speed.

    pagedlab bench [--out benchmarks/results] [--quick]

See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from pathlib import Path

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16
TARGET_SHAPE = (64, 4096)
# The target first: a run cut short by a timeout still has the number that matters most.
GPU_SHAPES = [TARGET_SHAPE] + [(b, c) for b in (1, 8, 64) for c in (512, 4096, 16384)
                               if (b, c) != TARGET_SHAPE]
CPU_SHAPES = [(1, 64), (2, 128)]
TARGETS = {"copy_fraction": 0.70, "vs_sdpa_contiguous": 1.2, "speedup_vs_gather": 3.0}
GPU_COPY_BYTES = 1 << 30  # the copy whose speed is the yardstick (1 GiB: far beyond any cache)
# Copies of K and V a shape holds at once: the paged cache, the contiguous copy for SDPA, the
# gather's temporary, flex's pool; a shape that would not fit in free memory is skipped.
KV_COPIES = 4


def bytes_needed(batch: int, context: int) -> int:
    """Device memory one shape of the benchmark needs at its peak (fp16)."""
    kv = 2 * batch * context * NUM_KV_HEADS * HEAD_DIM * 2  # K and V, fp16
    return KV_COPIES * kv + 4 * batch * NUM_HEADS * HEAD_DIM * 2


def make_inputs(batch: int, context: int, dtype, device) -> dict:
    """Random q and a paged cache holding `batch` sequences of `context` tokens, blocks shuffled."""
    import torch

    blocks_per_seq = context // BLOCK_SIZE
    num_blocks = batch * blocks_per_seq
    cache_shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    order = torch.randperm(num_blocks, device=device)
    return {
        "q": torch.randn(batch, NUM_HEADS, HEAD_DIM, dtype=dtype, device=device),
        "k_cache": torch.randn(cache_shape, dtype=dtype, device=device),
        "v_cache": torch.randn(cache_shape, dtype=dtype, device=device),
        "block_tables": order.view(batch, blocks_per_seq).to(torch.int32),  # (batch, blocks)
        "context_lens": torch.full((batch,), context, dtype=torch.int32, device=device),
    }


def methods(inputs: dict, flex: bool) -> dict:
    """name -> a no-argument function computing (batch, num_heads, head_dim) attention."""
    import torch
    import torch.nn.functional as F

    from .. import backend

    q, k_cache, v_cache = inputs["q"], inputs["k_cache"], inputs["v_cache"]
    tables, lens = inputs["block_tables"], inputs["context_lens"]
    batch, context = q.shape[0], int(lens[0])
    queries_per_kv = NUM_HEADS // NUM_KV_HEADS
    scale = 1.0 / math.sqrt(HEAD_DIM)
    # SDPA with the query heads of each KV head folded into the query length:
    # q (batch, kv_heads, queries_per_kv, hd).
    q_folded = q.view(batch, NUM_KV_HEADS, queries_per_kv, HEAD_DIM)

    def unfold(out):  # (batch, kv_heads, queries_per_kv, hd) -> (batch, num_heads, hd)
        return out.reshape(batch, NUM_HEADS, HEAD_DIM)

    def logical(cache):  # (blocks, B, kv_heads, hd) -> (batch, kv_heads, context, hd), a copy
        return cache[tables.long()].view(batch, context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)

    k_contig, v_contig = logical(k_cache).contiguous(), logical(v_cache).contiguous()
    kernel = backend.load_kernels().paged_attention
    found = {
        "paged kernel": lambda: kernel.paged_attention_decode(
            q, k_cache, v_cache, tables, lens, scale, context),
        "sdpa contiguous": lambda: unfold(F.scaled_dot_product_attention(
            q_folded, k_contig, v_contig, scale=scale)),
        "gather + sdpa": lambda: unfold(F.scaled_dot_product_attention(
            q_folded, logical(k_cache), logical(v_cache), scale=scale)),
    }
    if flex:
        found["flex paged"] = _flex_paged(q, k_cache, v_cache, tables, scale)
    return found


def _flex_paged(q, k_cache, v_cache, tables, scale):
    """flex_attention over the physical pool, its block mask listing each sequence's blocks."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    batch, blocks_per_seq = tables.shape
    num_blocks = k_cache.shape[0]
    num_slots = num_blocks * BLOCK_SIZE
    # flex wants (batch, heads, tokens, hd): the pool as one batch-1 "sequence", head-major.
    k_pool = k_cache.view(1, num_slots, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()
    v_pool = v_cache.view(1, num_slots, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()
    owner = torch.empty(num_blocks, dtype=torch.int64, device=q.device)  # block -> its sequence
    owner[tables.long()] = torch.arange(batch, device=q.device)[:, None]

    def same_sequence(b, h, q_idx, kv_idx):  # the exact rule; the block lists below skip work
        return owner[kv_idx // BLOCK_SIZE] == b

    listed = F.pad(tables, (0, num_blocks - blocks_per_seq)).view(batch, 1, 1, num_blocks)
    no_blocks = torch.zeros(batch, 1, 1, dtype=torch.int32, device=q.device)
    mask = BlockMask.from_kv_blocks(
        kv_num_blocks=no_blocks, kv_indices=torch.zeros_like(listed),  # no partial blocks
        full_kv_num_blocks=no_blocks + blocks_per_seq, full_kv_indices=listed,
        BLOCK_SIZE=(128, BLOCK_SIZE), mask_mod=same_sequence, seq_lengths=(1, num_slots))
    compiled = torch.compile(flex_attention, dynamic=False)
    q4 = q.unsqueeze(2)  # (batch, num_heads, 1, hd)
    return lambda: compiled(q4, k_pool, v_pool, block_mask=mask, scale=scale,
                            enable_gqa=True, kernel_options={"BLOCK_N": BLOCK_SIZE})[:, :, 0]


def time_ms(fn, device) -> float:
    """Median milliseconds per call (triton.testing.do_bench on a GPU: it also flushes L2)."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[1]


def copy_bandwidth(device, nbytes: int) -> float:
    """Bytes per second of a plain device-to-device copy (read + write both count)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / (time_ms(lambda: dst.copy_(src), device) / 1000)


def run(shapes, device, flex: bool, save=None, flex_budget_s: float = 60.0) -> dict:
    """Benchmark every (batch, context) in `shapes`; call save(report) after each one."""
    import torch

    import triton

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()} (Triton interpreter)"
    copy_bw = copy_bandwidth(device, GPU_COPY_BYTES if device.type == "cuda" else 1 << 26)
    rows: list[dict] = []
    report = {"device": name, "torch": torch.__version__, "triton": triton.__version__,
              "dtype": "float16", "block_size": BLOCK_SIZE, "head_dim": HEAD_DIM,
              "num_heads": NUM_HEADS, "num_kv_heads": NUM_KV_HEADS,
              "copy_bandwidth_GBps": copy_bw / 1e9, "results": rows, "targets": None}
    flex_spent, flex_failed = 0.0, False
    for batch, context in shapes:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if bytes_needed(batch, context) > 0.8 * free:
                rows.append({"batch": batch, "context": context, "method": "all",
                             "error": f"skipped: needs {bytes_needed(batch, context) / 2**30:.1f}"
                                      f" GiB, {free / 2**30:.1f} GiB free"})
                if save is not None:
                    save(report)
                continue
        inputs = make_inputs(batch, context, torch.float16, device)
        moved = (2 * inputs["k_cache"].nbytes + 2 * inputs["q"].nbytes
                 + inputs["block_tables"].nbytes)  # K and V once, q in, out
        use_flex = flex and not flex_failed and flex_spent < flex_budget_s
        if flex and not use_flex:
            rows.append({"batch": batch, "context": context, "method": "flex paged",
                         "error": "skipped: it failed before or used up its time budget"})
        started = time.perf_counter()
        try:
            candidates = methods(inputs, use_flex)
        except Exception as error:  # noqa: BLE001  (flex setup on an older torch)
            candidates, flex_failed = methods(inputs, False), True
            rows.append({"batch": batch, "context": context, "method": "flex paged",
                         "error": f"{type(error).__name__}: {error}"[:300]})
        expected = candidates["sdpa contiguous"]().float()
        for method, fn in candidates.items():
            row = {"batch": batch, "context": context, "method": method}
            try:
                row["max_abs_error"] = float((fn().float() - expected).abs().max())
                row["ms"] = time_ms(fn, device)
                row["GBps"] = moved / row["ms"] / 1e6
                row["copy_fraction"] = moved / (row["ms"] / 1000) / copy_bw
            except Exception as error:  # noqa: BLE001  (report it; the other methods still run)
                row["error"] = f"{type(error).__name__}: {error}"[:300]
                flex_failed = flex_failed or method == "flex paged"
            rows.append(row)
        if use_flex:
            flex_spent += time.perf_counter() - started
        del inputs, candidates, expected
        if device.type == "cuda":
            torch.cuda.empty_cache()
            report["targets"] = check_targets(rows)
        if save is not None:
            save(report)
    return report


def check_targets(rows: list[dict]) -> dict:
    """The issue's targets at batch 64 x context 4096, each with its measured value."""
    at = {r["method"]: r for r in rows if (r["batch"], r["context"]) == TARGET_SHAPE and "ms" in r}
    if not {"paged kernel", "sdpa contiguous", "gather + sdpa"} <= set(at):
        return {"error": "the target shape did not run"}
    ours = at["paged kernel"]
    values = {"copy_fraction": ours["copy_fraction"],
              "vs_sdpa_contiguous": ours["ms"] / at["sdpa contiguous"]["ms"],
              "speedup_vs_gather": at["gather + sdpa"]["ms"] / ours["ms"]}
    return {name: {"value": round(value, 3), "target": TARGETS[name],
                   "met": value <= TARGETS[name] if name == "vs_sdpa_contiguous"
                   else value >= TARGETS[name]} for name, value in values.items()}


def table(report: dict) -> str:
    lines = [f"{report['device']}: copy bandwidth {report['copy_bandwidth_GBps']:.0f} GB/s",
             f"{'batch':>5} {'context':>7}  {'method':<16} {'ms':>9} {'GB/s':>8} {'of copy':>7}"
             f" {'max err':>8}"]
    for r in report["results"]:
        head = f"{r['batch']:>5} {r['context']:>7}  {r['method']:<16}"
        lines.append(f"{head} {r['ms']:>9.3f} {r['GBps']:>8.0f} {r['copy_fraction']:>7.0%}"
                     f" {r['max_abs_error']:>8.1e}" if "ms" in r else f"{head} {r['error']}")
    for name, target in (report["targets"] or {}).items():
        lines.append(f"target {name}: {target}")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    """Draw the report; False (and no file) where matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "ms" in r]
    shapes = list(dict.fromkeys((r["batch"], r["context"]) for r in rows))
    names = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        by_shape = {(r["batch"], r["context"]): r for r in rows if r["method"] == name}
        xs = [j + i * width for j, s in enumerate(shapes) if s in by_shape]
        axes[0].bar(xs, [by_shape[s]["ms"] for s in shapes if s in by_shape], width, label=name)
        axes[1].bar(xs, [by_shape[s]["copy_fraction"] for s in shapes if s in by_shape], width,
                    label=name)
    for ax, label in zip(axes, ("time per decode step (ms, log)", "bandwidth / copy bandwidth")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
        ax.set_xticklabels([f"{b}x{c}" for b, c in shapes], rotation=45)
        ax.set_xlabel("batch x context")
        ax.set_title(label)
    axes[0].set_yscale("log")
    axes[1].axhline(TARGETS["copy_fraction"], color="gray", linestyle="--", linewidth=1)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"paged decode attention, fp16, {NUM_HEADS}q/{NUM_KV_HEADS}kv heads, "
                 f"head dim {HEAD_DIM}, block {BLOCK_SIZE}: {report['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def stem(report: dict) -> str:
    """File name for a report: bench_ and the device name, e.g. bench_nvidia_h100_80gb_hbm3."""
    return "bench_" + re.sub(r"[^a-z0-9]+", "_", report["device"].lower()).strip("_")[:60]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagedlab bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for JSON and PNG")
    parser.add_argument("--quick", action="store_true", help="64 x context 4096 (the target), then batch 1 only")
    parser.add_argument("--no-flex", action="store_true", help="skip flex_attention")
    args = parser.parse_args(argv)

    import torch

    from .. import backend

    status = backend.triton_status()
    if not status["available"]:
        print(f"pagedlab bench needs Triton: {status['reason']}")
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        shapes = [TARGET_SHAPE, (1, 4096)] if args.quick else GPU_SHAPES
    else:
        print("No CUDA GPU: a tiny run in the Triton interpreter, to check that everything works. "
              "Its times say nothing about GPU speed; run this on a GPU for the real benchmark.")
        shapes = CPU_SHAPES
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    drew = []

    def save(report: dict) -> None:  # after every shape, so a cut-short run still leaves data
        (out / f"{stem(report)}.json").write_text(json.dumps(report, indent=2) + "\n")
        drew.append(plot(report, out / f"{stem(report)}.png"))

    report = run(shapes, device, flex=device.type == "cuda" and not args.no_flex, save=save)
    print(table(report))
    print(f"wrote {out / stem(report)}.json" + (" and .png" if all(drew) else
                                                 " (no .png: matplotlib is missing)"))
    return 0
