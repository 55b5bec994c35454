# %% [markdown]
# # Exercise 5: one scheduler step, with preemption
#
# Continuous batching decides, at every step, which sequences run. Here you write one step of
# pagedlab's scheduler (vLLM's policy, preemption by **recompute**), on top of pagedlab's own
# `BlockManager`:
#
# `schedule_step(running, waiting, block_manager, max_num_seqs)` gets the running and waiting
# sequences, **oldest first**, and returns `(prefills, decodes, preempted)`:
#
# 1. **Running sequences grow**, oldest first. One whose next token starts a new block
#    (`len(seq.token_ids) % block_size == 0`) reserves one free block for it. When the free
#    blocks not yet reserved cannot cover that, **preempt the newest running sequence** not yet
#    handled: `block_manager.free(it)` and list it in `preempted` (it will be recomputed later).
#    If the sequence itself is the newest one left, preempt it instead (if it is the only one,
#    give up with an error: the pool is too small). Those that keep running are the `decodes`.
# 2. **Waiting sequences are admitted** (prefilled) only if nothing was preempted this step:
#    from the front, while the batch has fewer than `max_num_seqs` sequences and the sequence's
#    blocks (`block_manager.blocks_needed(seq)`, plus one if its next token starts a new block)
#    fit in the free blocks not reserved, keeping `block_manager.watermark_blocks` back.
#    `block_manager.allocate(seq)` each one admitted; stop at the first that does not fit.
#
# The grader runs a whole workload around your function (appending each scheduled sequence's
# next token, finishing and re-queueing requests) and compares who runs at every step with
# pagedlab's scheduler. See notebooks/05_scheduling.ipynb.

# %%
import pagedlab as pl
from pagedlab import BlockManager, Sequence

# %%
def schedule_step(running: list[Sequence], waiting: list[Sequence], block_manager: BlockManager,
                  max_num_seqs: int):
    """One step of continuous batching; returns (prefills, decodes, preempted)."""
    bm = block_manager
    decodes, preempted, reserved = [], [], 0   # reserved: free blocks promised to decodes
    # -- 1. running sequences grow, oldest first; the newest are preempted when blocks run out --
    lo, hi = 0, len(running)                   # running[lo:hi] are not handled yet
    while lo < hi:
        seq = running[lo]
        lo += 1
        ### BEGIN SOLUTION
        # Hint: need = 1 if len(seq.token_ids) % bm.block_size == 0 else 0; while need > bm.num_free_blocks - reserved: free and record running[hi - 1] (hi -= 1), or seq itself when it is the newest left.
        need = 1 if len(seq.token_ids) % bm.block_size == 0 else 0
        while need > bm.num_free_blocks - reserved:
            if lo < hi:
                hi -= 1
                victim = running[hi]
            elif decodes:
                victim, seq = seq, None
            else:
                raise RuntimeError("a lone sequence cannot grow: the pool is too small")
            bm.free(victim)
            preempted.append(victim)
            if seq is None:
                break
        if seq is not None:
            decodes.append(seq)
            reserved += need
        ### END SOLUTION
    # -- 2. waiting sequences are admitted first come, first served --
    prefills = []
    if not preempted:
        for seq in waiting:
            ### BEGIN SOLUTION
            # Hint: stop when the batch is full or blocks_needed(seq) + growth > free - reserved - watermark_blocks; else allocate, record, and reserve its growth.
            grow = 1 if len(seq.token_ids) % bm.block_size == 0 else 0
            if (len(decodes) + len(prefills) >= max_num_seqs
                    or bm.blocks_needed(seq) + grow > bm.num_free_blocks - reserved - bm.watermark_blocks):
                break
            bm.allocate(seq)
            prefills.append(seq)
            reserved += grow
            ### END SOLUTION
    return prefills, decodes, preempted

# %% [markdown]
# ## Try it
#
# Two 4-token prompts in a pool of 3 blocks of 4: both are admitted, but their next tokens each
# need a new block, and only one is left, so the newer one is preempted.

# %%
bm = BlockManager(num_blocks=3, block_size=4)
first, second = Sequence(1, [1, 2, 3, 4]), Sequence(2, [5, 6, 7, 8])
prefills, decodes, preempted = schedule_step([], [first, second], bm, max_num_seqs=4)
print("step 0: prefills", [s.seq_id for s in prefills], "free blocks", bm.num_free_blocks)
prefills, decodes, preempted = schedule_step([first, second], [], bm, max_num_seqs=4)
print("step 1: decodes", [s.seq_id for s in decodes], "preempted", [s.seq_id for s in preempted])

# %% [markdown]
# ## Check

# %%
pl.check("ex05", schedule_step=schedule_step)
