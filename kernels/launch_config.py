"""How the Triton kernels are launched on each GPU: tiles, warps, pipeline stages and split-K.

A kernel's source says *what* one program computes; these numbers say how big a piece each program
takes and how many run at once. They matter because a GPU has a fixed budget per SM: 65,536
registers, a few dozen warps, 64-228 KB of shared memory. A program that needs more than 255
registers per thread *spills* (keeps values in slow local memory); one that needs more shared
memory than the GPU has cannot launch. Every choice below was checked by compiling the kernels for
a T4 (sm_75), an A100 (sm_80) and an H100 (sm_90) without a GPU:
``python -m pagedlab.tools.compile_report`` (``tests/test_compile.py``), whose table is in
``benchmarks/results/compile_table.md``. What it found:

- Triton compiles the T4's matrix products to plain fp32 FMAs (no tensor cores), as it does fp32
  products (``input_precision="ieee"``) everywhere. Such a product costs an instruction per row,
  so padding 1 query head per KV head to the 16 rows a ``tl.dot`` needs does 16 times the work.
  Multiplying and summing over the real rows instead: 173 instead of 472 instructions per loop
  step for 1 query head (T4, head dim 64), 550 instead of 826 for 2 (head dim 128); at 4 the two
  are equal and the sum needs more registers, so from 3 query heads the dot stays.
- With tensor cores (fp16 and bf16 from sm_80) the dot stays, padded to 16 rows: one tensor-core
  instruction does the work of many FMAs, even with most rows empty (1 query head per KV head:
  165 instructions per step with the padded dot, 186 multiplying and summing; A100, head dim 64).
- Big tiles spill: 64 tokens x head dim 128 took all 255 registers on a T4 and spilled 616 bytes
  per thread; fp32 head dim 128 spilled on an A100. 16 tokens a step (what vLLM's Triton decode
  takes) fits everywhere (at most 239 registers, on a T4 at head dim 256), and a tile inside one
  cache block needs only one block-table load per step.
- From sm_80, ``num_stages=3`` makes Triton copy the next tiles' keys, values and block ids into
  shared memory asynchronously (cp.async) while this tile is computed.

The decode kernel's other launch facts (``programs_per_sm``) feed the split-K choice: split a
context only until the GPU holds as many programs as fit at once.
See notebooks/07_triton_kernel.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MIN_DOT_ROWS = 16  # compiled tl.dot needs every matrix dimension >= 16
SIXTEEN_BIT = (torch.float16, torch.bfloat16)


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def supported_dtypes(capability: tuple[int, int] | None) -> tuple[torch.dtype, ...]:
    """Cache dtypes the kernels run in on a GPU of this compute capability (None: the CPU).

    bf16 needs sm_80: it would even compile for a T4 (as fp32 FMAs), but the GPU has no bf16.
    """
    if capability is not None and capability < (8, 0):
        return (torch.float16, torch.float32)
    return (torch.float16, torch.bfloat16, torch.float32)


def has_tensor_cores(capability: tuple[int, int] | None, dtype: torch.dtype) -> bool:
    """Does Triton turn a ``tl.dot`` in ``dtype`` into tensor-core instructions here?"""
    return capability is not None and capability >= (8, 0) and dtype in SIXTEEN_BIT


@dataclass(frozen=True)
class DecodeConfig:
    """How to launch :func:`pagedlab.kernels.paged_attention.paged_decode_kernel`."""

    tile: int  # context tokens per loop step (a power of two >= 16)
    head_rows: int  # rows of a program's query matrix: its query heads, padded to a power of two
    use_dot: bool  # tl.dot (tensor cores), else multiply and sum over the real rows (FMAs)
    num_warps: int
    num_stages: int  # loads of the next tiles in flight while this one is computed (sm_80+)
    programs_per_sm: int  # programs one SM holds at once (the compile report checks it)


def decode_config(capability: tuple[int, int] | None, dtype: torch.dtype, head_dim: int,
                  queries_per_kv: int, block_size: int) -> DecodeConfig:
    """Launch parameters of the decode kernel on a GPU of ``capability`` (None: the interpreter).

    The interpreter pays per loop step, not per register: it takes big tiles.
    """
    head_dim_pad = max(16, next_power_of_2(head_dim))
    # Multiply-and-sum wins only where a dot would be FMAs anyway and most of its rows empty.
    use_dot = has_tensor_cores(capability, dtype) or queries_per_kv > 2
    head_rows = next_power_of_2(queries_per_kv)
    if use_dot:
        head_rows = max(MIN_DOT_ROWS, head_rows)
    if capability is None:
        return DecodeConfig(tile=64, head_rows=head_rows, use_dot=use_dot, num_warps=4,
                            num_stages=1, programs_per_sm=1)
    # 16 tokens a step fits in registers everywhere; a tile inside one block (block sizes are
    # powers of two) needs one block id per step.
    tile = 16
    # From sm_80 the loads of the next tiles are issued while this one is computed (cp.async).
    num_stages = 3 if capability >= (8, 0) else 1
    sixteen_bit = dtype in SIXTEEN_BIT
    return DecodeConfig(tile=tile, head_rows=head_rows, use_dot=use_dot, num_warps=4,
                        num_stages=num_stages,
                        programs_per_sm=decode_programs_per_sm(capability, sixteen_bit,
                                                               head_dim_pad))


def decode_programs_per_sm(capability: tuple[int, int], sixteen_bit: bool,
                           head_dim_pad: int) -> int:
    """Decode programs one SM holds at once, as compiled (4 warps each; registers or shared
    memory run out first): the fewest over every configuration the compile report compiles
    (``--full``) with Triton 3.6 and 3.9, which checks that none is claimed too high."""
    wide = head_dim_pad > 128  # twice the registers per query row
    if capability >= (8, 0):
        if sixteen_bit:
            return 4 if wide else 6
        return 3 if wide else 4
    if sixteen_bit:  # a T4: no tensor cores, and 64 KB of shared memory per SM
        return 2 if wide else 4
    return 1 if wide else 3


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_context_len: int,
                      num_sms: int | None, programs_per_sm: int = 4,
                      min_tokens_per_split: int = 512) -> int:
    """How many pieces to cut each context into so that every SM gets the programs it can hold.

    1 when every SM already has a (sequence, KV head) program, the contexts are short (a piece
    under ``min_tokens_per_split`` is not worth its merge), or there is no GPU (``num_sms`` None:
    the interpreter runs programs one after another anyway).
    """
    programs = num_seqs * num_kv_heads
    wanted_programs = (num_sms or 0) * programs_per_sm
    if num_sms is None or programs >= num_sms:
        return 1
    wanted = math.ceil(wanted_programs / programs)
    return max(1, min(wanted, math.ceil(max_context_len / min_tokens_per_split), 64))


def store_tokens_per_program(row_pad: int, num_tokens: int, on_gpu: bool) -> int:
    """Tokens one store program copies: about 4K numbers on a GPU (a few registers a thread);
    the interpreter prefers few, large programs."""
    budget = 4096 if on_gpu else 1 << 16
    return max(1, min(next_power_of_2(num_tokens), budget // row_pad))
