# %% [markdown]
# # 03 · Where memory goes
#
# The PagedAttention paper (Kwon et al., SOSP 2023) opens with a measurement: in the serving
# systems of the day, only **20-38%** of the KV-cache memory held actual token states. The rest
# was wasted in three ways, all caused by giving each request one **contiguous** region sized
# up front:
#
# * **reserved**: slots kept for tokens the request has not generated yet (they will be used,
#   but sit empty meanwhile);
# * **internal fragmentation**: slots of the region the request will never use, because it
#   stops before the length it reserved for;
# * **external fragmentation**: free memory in pieces too small for the next request (here a
#   buddy allocator, which also rounds regions up to a power of two).
#
# The paper's baselines are three versions of Orca: **Max** reserves the model's maximum length
# (2048), **Pow2** the next power of two of the output, **Oracle** the true output length
# (impossible in practice: nobody knows it in advance). vLLM pages instead.
#
# | system | token states (paper, Fig. 2) |
# | --- | --- |
# | Orca (Max) | 20.4% |
# | Orca (Pow2) | 26.8% |
# | Orca (Oracle) | 38.2% |
# | vLLM | 96.3% |
#
# This lesson reproduces that comparison with pagedlab's simulator.

# %% [markdown]
# ## The workload
#
# The real ShareGPT traces cannot be downloaded here, so `pl.workloads.sharegpt_like` draws
# lengths from log-normal distributions fitted to what the paper reports: mean prompt 161
# tokens, mean output 338, a long tail, prompt + output capped at 2048. Look at the spread: most
# requests are short, a few are very long. That spread is what makes reserving for the maximum
# so wasteful.

# %%
from IPython.display import HTML, Image, display
from matplotlib.figure import Figure

import pagedlab as pl
from pagedlab.widgets.palette import OKABE_ITO, figure_png

requests = pl.workloads.sharegpt_like(300, seed=0)
prompt, output = pl.workloads.mean_lengths(requests)
print(f"{len(requests)} requests: mean prompt {prompt:.0f} tokens, mean output {output:.0f} tokens")

figure = Figure(figsize=(7, 2.4))
axes = figure.add_subplot()
axes.hist([r.prompt_len + r.output_len for r in requests], bins=40, color=OKABE_ITO["blue"])
axes.set_xlabel("final length of a request (tokens)")
axes.set_ylabel("requests")
figure.tight_layout()
Image(figure_png(figure))

# %% [markdown]
# ## What each policy reserves for one request
#
# Take the first request and ask each contiguous allocator how big a region it would reserve.
# Compare with what the request will finally hold.

# %%
first = requests[0]
print(f"request 0: prompt {first.prompt_len} + output {first.output_len} = "
      f"{first.prompt_len + first.output_len} tokens")
for policy in ["max", "pow2", "oracle"]:
    allocator = pl.ContiguousAllocator(64 * 1024, policy=policy)
    print(f"  Orca ({policy}) reserves {allocator.region_size(first.prompt_len, first.output_len)} slots")
print(f"  paged (block 16) holds at most {-(-(first.prompt_len + first.output_len) // 16) * 16} slots, "
      "and only as the tokens arrive")

# %% [markdown]
# ## Serve the same requests four ways
#
# Every request arrives at once; each system admits what its memory allows and runs until all
# are done. The simulator splits the pool after every step and averages over the busy steps.
# A progress bar follows each run (a second or so in all).

# %%
from pagedlab.widgets.waste import memories

results = {}
for name, memory in memories(pool_tokens=64 * 1024, block_size=16).items():
    results[name] = pl.simulate(requests, memory, progress=True)

# %% [markdown]
# ## The breakdown, next to the paper
#
# Each bar is the whole pool. Look for:
#
# * the green part (token states) against the black triangle (the paper's number);
# * Max loses most to internal fragmentation, Pow2 and Oracle to reservation and external
#   fragmentation; paging leaves only a sliver of internal fragmentation (last blocks);
# * the right panel: memory that holds tokens is memory that **serves** requests, so the paged
#   batch is several times larger. That is where vLLM's 2-4x throughput comes from.
#
# Our numbers are close to, not equal to, the paper's: synthetic lengths, a simulator with no
# model, and a pool of 64K token slots. The paged bar keeps some memory idle because the batch
# is capped at 256 sequences (`max_num_seqs`).

# %%
from pagedlab.widgets.waste import waste_figure, waste_table

display(Image(figure_png(waste_figure(results, title="300 ShareGPT-like requests, 64K token slots"))))
HTML(waste_table(results))

# %% [markdown]
# ## Explore
#
# Change the workload, the block size and the pool size; the four simulations run again (watch
# the progress bar) and the bars are redrawn. Things to try:
#
# * **Alpaca**: short requests; Max reserves 2048 slots for answers of ~60 tokens;
# * block size **128**: paging's own waste (internal fragmentation) grows with the block size;
# * a **small pool**: contiguous systems fit only a handful of requests at a time.

# %%
from pagedlab.widgets import WasteWidget

WasteWidget(num_requests=300)

# %% [markdown]
# ## Summary
#
# * Reserving a contiguous region per request wastes most of the KV cache: reserved slots,
#   internal fragmentation (over-estimated lengths) and external fragmentation (holes).
# * Paging allocates one block at a time, anywhere; the only waste is each sequence's last,
#   partly filled block.
# * Memory that holds token states is what lets more requests run at once: a bigger batch,
#   a higher throughput.
#
# There is no exercise for this lesson. Next: [04 · Sharing](04_sharing.ipynb).
