# %% [markdown]
# # 05 · Scheduling
#
# Paging decides *where* K/V go. The **scheduler** decides *who runs*. vLLM schedules at the
# granularity of one step (one token per running sequence), called **continuous batching**:
#
# * every step, each running request gets room for its next token;
# * a request that finishes leaves at once, and a waiting one can join in the very next step
#   (no waiting for the whole batch to finish);
# * when the pool runs out, the most recently arrived running request is **preempted**: by
#   **recompute** (free its blocks; compute its tokens again later) or by **swap** (copy its
#   blocks to a CPU pool and back later);
# * a **watermark** keeps a few blocks free when admitting new requests, so the running ones
#   can still grow.

# %% [markdown]
# ## A tiny scheduler, step by step
#
# A pool of 6 blocks of 4 tokens, three requests of 5-token prompts that each want 8 new
# tokens. All three fit at first (2 blocks each); as they grow, they need a third block that
# is not there. Look for the step where request 3 is preempted, and when it comes back.

# %%
import pagedlab as pl


def run_tiny(preemption):
    manager = pl.BlockManager(num_blocks=6, block_size=4)
    scheduler = pl.Scheduler(manager, max_num_seqs=8, max_num_batched_tokens=64,
                             preemption=preemption)
    for seq_id in (1, 2, 3):
        scheduler.add(pl.Sequence(seq_id, [1, 2, 3, 4, 5]), max_new_tokens=8)
    step = 0
    while scheduler.has_unfinished():
        out = scheduler.schedule()
        events = [f"prefill {[s.seq_id for s in out.prefills]}" if out.prefills else "",
                  f"decode {[s.seq_id for s in out.decodes]}" if out.decodes else "",
                  f"PREEMPT {[s.seq_id for s in out.preempted]}" if out.preempted else "",
                  f"swap out {out.blocks_to_swap_out}" if out.blocks_to_swap_out else "",
                  f"swap in {out.blocks_to_swap_in}" if out.blocks_to_swap_in else ""]
        finished = scheduler.update([0] * len(out.scheduled))
        events.append(f"done {[g.request_id for g in finished]}" if finished else "")
        print(f"step {step:>2} | free {manager.num_free_blocks} | " + " | ".join(e for e in events if e))
        step += 1


run_tiny("recompute")

# %% [markdown]
# The same with **swap**: the preempted request's blocks go to the CPU pool (pairs are
# `(gpu block, cpu block)`), and come back (`(cpu block, gpu block)`) when there is room,
# without recomputing anything.

# %%
run_tiny("swap")

# %% [markdown]
# ## The scheduler over time
#
# Now 150 ShareGPT-like requests arrive as a Poisson process and the simulator runs the real
# scheduler and block manager. Top: how many requests run (the batch) and how many wait.
# Bottom: how full the pool is; black ticks mark preemptions. Things to try:
#
# * a **bigger pool**: a bigger batch, a shorter queue, fewer preemptions;
# * a **lower arrival rate**: the queue disappears and the pool is never full;
# * a **watermark** of 5%: new requests are admitted a little later, and running ones are
#   preempted much less often.

# %%
from pagedlab.widgets import TimelineWidget

TimelineWidget(num_requests=150, num_blocks=512, rate=1.0)

# %% [markdown]
# ## What the watermark buys
#
# Same requests, same pool, only the watermark changes. Look at the preemptions column: a few
# percent of the pool held back avoids most of them, at little cost in steps.

# %%
requests = pl.workloads.sharegpt_like(150, seed=0, rate=1.0)
for watermark in [0.0, 0.01, 0.05, 0.1]:
    result = pl.simulate(requests, pl.BlockManager(512, 16, watermark=watermark))
    print(f"watermark {100 * watermark:>3.0f}%: {result.preemptions:>4} preemptions, "
          f"{result.steps} steps, mean batch {result.mean_batch_size:.1f}")

# %% [markdown]
# ## Your turn
#
# In `exercises/ex05_scheduler_step.ipynb` you write one scheduling step: grow the running
# requests (preempting the newest when blocks run out), then admit waiting ones above the
# watermark. `pl.check("ex05", ...)` runs it against scenarios like the one above.
#
# ## Summary
#
# * Continuous batching schedules every step: requests join and leave the batch at once.
# * When the pool is full, the newest running request is preempted, by recompute (free, redo
#   later) or swap (park the blocks in CPU memory).
# * A watermark of free blocks at admission time trades a little latency for far fewer
#   preemptions.
#
# Next: [06 · Attention over pages](06_attention_over_pages.ipynb).
