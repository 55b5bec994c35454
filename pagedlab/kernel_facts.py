"""What the decode kernel compiles to on a T4 and an H100, and what paging costs it per block size.

No GPU is needed to read a kernel's binary: :mod:`pagedlab.tools.compile_report` compiles the
package's own launches ahead of time and reads registers, shared memory and the SASS instructions
of the main loop. Lesson 07 shows one such run, shipped as ``pagedlab/data/compile_lesson07.json``
(the benchmark's shape: Llama-3-8B's heads, fp16, 64 sequences of 4096 tokens, block sizes 8 to
128, on sm_75 and sm_90). It was made by::

    python -m pagedlab.tools.compile_report --only kind=decode,model=llama-3-8b,dtype=float16,\\
        num_seqs=64,context=4096 --arch sm_75,sm_90 --full --sass --out DIR

and :func:`regenerate` makes it again (about 10 s). These are counts, not times: what a loop step
executes, not how long a GPU takes for it. See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).parent / "data" / "compile_lesson07.json"
ONLY = "kind=decode,model=llama-3-8b,dtype=float16,num_seqs=64,context=4096"
ARCHES = "sm_75,sm_90"


def load(path: str | Path | None = None) -> dict:
    """The compile report lesson 07 reads (default: the one pagedlab ships)."""
    return json.loads(Path(path or SHIPPED).read_text())


def regenerate(path: str | Path = SHIPPED, timeout_s: float = 600) -> dict:
    """Compile the lesson's configurations again with this machine's Triton; write ``path``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-m", "pagedlab.tools.compile_report", "--only", ONLY,
                               "--arch", ARCHES, "--full", "--sass", "--jobs", "1", "--out", out],
                              env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"compile_report failed:\n{done.stderr[-3000:]}")
        shutil.copyfile(Path(out) / "compile_table.json", path)
    return load(path)


@dataclass(frozen=True)
class LoopFacts:
    """One compiled decode kernel: a GPU, a block size, and what its loop step executes."""

    gpu: str  # e.g. "Tesla T4"
    arch: str  # e.g. "sm_75"
    block_size: int
    tile: int  # context tokens per loop step
    registers: int  # per thread
    shared_bytes: int  # per program
    programs_per_sm: int
    loop_instructions: int  # SASS instructions per loop step, per warp
    mix: dict  # instructions per category (tensor-core matmul, global load, ...)
    reading: str  # what the loop's instructions are, in words
    excerpt: list  # a few instructions around the first matrix multiply

    @property
    def instructions_per_token(self) -> float:
        return self.loop_instructions / self.tile

    @property
    def table_loads_per_token(self) -> float:
        """Block ids the kernel loads per context token: one per block a loop step touches."""
        return max(1, self.tile // self.block_size) / self.tile


def loop_facts(report: dict | None = None) -> list[LoopFacts]:
    """The decode kernel's compiled facts per (GPU, block size), sorted by GPU then block size."""
    report = report or load()
    found = []
    for row in report["rows"]:
        if row["kernel"] != "paged_decode_kernel" or "inner_loop" not in row:
            continue
        loop = row["inner_loop"]
        found.append(LoopFacts(gpu=row["gpu"], arch=row["arch"],
                               block_size=row["constexprs"]["BLOCK_SIZE"],
                               tile=row["constexprs"]["TILE"], registers=row["registers"],
                               shared_bytes=row["shared"], programs_per_sm=row["programs_per_sm"],
                               loop_instructions=loop["instructions"], mix=loop["mix"],
                               reading=loop.get("reading", ""), excerpt=loop["excerpt"]))
    return sorted(found, key=lambda f: (f.arch, f.block_size))


def block_size_table(report: dict | None = None) -> str:
    """Text table: per GPU and block size, block-table loads and instructions per context token."""
    lines = [f"{'GPU':<30} {'block':>5} {'table loads/token':>17} {'instr./token':>12} "
             f"{'vs block 16':>11} {'registers':>9}"]
    facts = loop_facts(report)
    for fact in facts:
        base = next(f for f in facts if f.arch == fact.arch and f.block_size == 16)
        change = fact.instructions_per_token / base.instructions_per_token - 1
        lines.append(f"{fact.gpu + ' (' + fact.arch + ')':<30} {fact.block_size:>5} "
                     f"{fact.table_loads_per_token:>17.4f} {fact.instructions_per_token:>12.1f} "
                     f"{change:>+11.1%} {fact.registers:>9}")
    return "\n".join(lines)
