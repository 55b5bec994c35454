# %% [markdown]
# # 07 · The Triton kernel
#
# Lesson 06 gathered each sequence's K/V into a contiguous copy, then attended. A GPU kernel
# skips the copy: it reads keys and values **straight from their blocks**, following the block
# table, and folds them into the answer as it goes. This lesson walks through pagedlab's decode
# kernel (`kernels/paged_attention.py`, one readable file), checks it against the torch
# reference, and measures it.
#
# On a CPU the kernel runs in the **Triton interpreter**: the same code, executed program by
# program with NumPy. Exact, slow, so the shapes here are small.

# %%
import inspect

import torch

import pagedlab as pl

print(pl.backend.triton_status()["reason"])

# %% [markdown]
# ## Programs: who computes what
#
# A Triton kernel runs as a grid of **programs**. Ours has one program per
# (sequence, KV head[, split]). With grouped-query attention, the program for KV head `h`
# computes all query heads that read it, so each key and value is loaded once.
#
# Each program walks its context `TILE` tokens at a time (a power of two, at least 16). For each
# token it loads the physical block id from the block table, then that token's key row. In the
# map below, rows are programs and columns are loop steps; a cell names the blocks read.
# Move the sliders and look for:
#
# * more KV heads or splits = more programs (more of the GPU busy);
# * the last step of a sequence has **masked** lanes: tokens past the context score `-inf`;
# * with 2+ splits, a short sequence leaves some programs with nothing to do.

# %%
from pagedlab.widgets import KernelMapWidget

KernelMapWidget(context_lens=(37, 12, 64), block_size=8)

# %% [markdown]
# ## The loop, in the kernel's own words
#
# Here is the heart of the kernel. Read the banner comments: find the block ids, load keys,
# score, the **online softmax** update, load values, accumulate; then write the result.

# %%
kernel_module = pl.backend.load_kernels().paged_attention
source = inspect.getsource(kernel_module.paged_decode_kernel.fn)
loop = source.find("for tile_start")  # from the main loop to the end (all of it if renamed)
print(source[source.rfind("\n", 0, loop) + 1:] if loop > 0 else source)

# %% [markdown]
# ## Online softmax, by hand
#
# The kernel never holds all scores of a sequence at once. It keeps a running max `m`, a running
# sum `l` of `exp(score - m)`, and a running weighted sum `acc` of values; when a new tile
# raises the max, the old terms are rescaled by `exp(m_old - m_new)`. Check that tile by tile
# gives exactly the softmax of the whole row.

# %%
torch.manual_seed(0)
scores = torch.randn(50) * 3          # one query head against 50 tokens
values = torch.randn(50, 4)           # (tokens, head_dim)
m, l, acc = torch.tensor(-1e30), torch.tensor(0.0), torch.zeros(4)
for start in range(0, 50, 16):        # tiles of 16 tokens; the last one is partial
    tile = scores[start:start + 16]
    m_new = torch.maximum(m, tile.max())
    alpha = torch.exp(m - m_new)      # how much the old terms shrink
    p = torch.exp(tile - m_new)
    l = l * alpha + p.sum()
    acc = acc * alpha + p @ values[start:start + 16]
    m = m_new
print("tile by tile:", (acc / l).tolist())
print("all at once: ", (scores.softmax(0) @ values).tolist())

# %% [markdown]
# ## Verify: the kernel equals the torch reference
#
# Random caches with shuffled blocks, partial last blocks, grouped-query heads (8 query heads
# over 2 KV heads), with and without split-K. Look at the error column: float rounding only.

# %%
def random_case(context_lens, num_heads=8, num_kv_heads=2, head_dim=32, block_size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    per_seq = [-(-n // block_size) for n in context_lens]
    order = torch.randperm(sum(per_seq), generator=gen).tolist()
    width, tables, taken = max(per_seq), [], 0
    for n in per_seq:
        tables.append(order[taken:taken + n] + [-1] * (width - n))
        taken += n
    shape = (sum(per_seq), block_size, num_kv_heads, head_dim)
    return dict(q=torch.randn(len(context_lens), num_heads, head_dim, generator=gen),
                k_cache=torch.randn(shape, generator=gen), v_cache=torch.randn(shape, generator=gen),
                block_tables=torch.tensor(tables, dtype=torch.int32),
                context_lens=torch.tensor(context_lens, dtype=torch.int32))


for context_lens, splits in [([5], 1), ([37, 12, 64], 1), ([37, 12, 64], 2), ([130], 3)]:
    case = random_case(context_lens)
    kernel = pl.paged_attention(**case, backend="triton", num_splits=splits)
    reference = pl.paged_attention_reference(**case)
    print(f"contexts {str(context_lens):<13} splits {splits}: "
          f"max |kernel - reference| = {(kernel - reference).abs().max():.1e}")

# %% [markdown]
# ## Measure: bandwidth
#
# Decoding reads every key and value once and does little arithmetic on each, so its speed is
# set by memory bandwidth. `pagedlab bench` times the kernel against SDPA on contiguous K/V (no
# paging: the ideal) and "gather + SDPA" (copy the blocks first), and reports GB/s next to a
# plain copy (dashed line, the ceiling). On a GPU look for the paged kernel close to
# contiguous SDPA and well above gather + SDPA. On a CPU the interpreter's numbers only show
# that everything runs: they say nothing about speed.

# %%
from IPython.display import Image

from pagedlab import bench
from pagedlab.widgets import bandwidth_png

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
shapes = [(8, 512), (8, 4096), (64, 4096)] if device.type == "cuda" else bench.CPU_SHAPES
result = bench.run(shapes, device, flex=False)
Image(bandwidth_png(result))

# %% [markdown]
# ## Your turn
#
# In `exercises/ex07_triton_kernel.ipynb` you write the kernel's inner loop (block-table load,
# masked key load, online-softmax update) and run it in the interpreter;
# `pl.check("ex07", ...)` compares it with the reference.
#
# ## Summary
#
# * One program per (sequence, KV head[, split]); a GQA group shares each K/V load.
# * The loop loads block ids from the block table, then keys and values, masking tokens past
#   the context; an online softmax in fp32 means no score row is ever stored.
# * Split-K cuts long contexts over more programs when there are few sequences; a second small
#   kernel merges the partial results.
# * The kernel equals the torch reference; on a GPU it runs near memory bandwidth.
#
# Next: [08 · Serving a model](08_serving_a_model.ipynb).
