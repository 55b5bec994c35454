"""Break the paging on purpose, one engine at a time, to see what each bug does to the answers.

Each function is a context manager that plants one classic paging bug in one
:class:`~pagedlab.LLMEngine` (that instance only) and takes it out again on exit::

    model, task = pl.tiny_model()
    engine = pl.LLMEngine(model, block_size=8, eos_token_id=task.eos_token_id)
    with pl.break_it.reversed_block_tables(engine):
        task.evaluate(engine, prompts)            # 0.0: the letters come out scrambled
    task.evaluate(engine, prompts)                # 1.0 again

The bugs, and what a sequence reads because of them:

* :func:`reversed_block_tables`: its blocks in the opposite order (block 0 last);
* :func:`shifted_block_tables`: the physical block after each right one (an off-by-one in the
  block ids, as if they were counted from 1);
* :func:`skipped_copy_on_write`: a copied-on-write block that was never copied, so a sample that
  forked off a shared, partly filled block finds its prompt's last tokens missing;
* :func:`cache_hits_read_early`: a block the prefix cache handed out before the K/V in it were
  written (as an engine would that ran a request found in the cache ahead of the prefill that
  fills those blocks).

Each one only changes what attention *reads*: the K/V are stored where the block manager says.
The shipped tiny model copies letters from every block of its prompt (see
:mod:`pagedlab.tiny`), so each bug shows as wrong letters. See notebooks/08_serving_a_model.ipynb.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random

import torch

__all__ = ["reversed_block_tables", "shifted_block_tables", "skipped_copy_on_write",
           "cache_hits_read_early", "BUGS", "prompts_sharing_a_prefix"]


@contextlib.contextmanager
def _patched(obj, name: str, replacement):
    """Set ``obj.name`` (on this instance only) for the ``with`` block, then put it back."""
    had_own = name in vars(obj)
    own = vars(obj).get(name)
    setattr(obj, name, replacement)
    try:
        yield obj
    finally:
        if had_own:
            setattr(obj, name, own)
        else:
            delattr(obj, name)


def _with_tables(engine, change):
    """Patch ``engine._batch`` so that every step's block tables go through ``change(out, batch)``
    after the slots were computed: the K/V land in the right slots, attention reads elsewhere."""
    build = engine._batch

    def batch(out):
        paged = build(out)
        return dataclasses.replace(paged, block_tables=change(out, paged))

    return _patched(engine, "_batch", batch)


def reversed_block_tables(engine):
    """Each sequence reads its blocks last first: logical block j from ``table[used - 1 - j]``."""
    def reverse(out, batch):
        tables = batch.block_tables  # (num_seqs, max_blocks), padded with -1
        used = (tables >= 0).sum(dim=1, keepdim=True)  # (num_seqs, 1) blocks each sequence holds
        j = torch.arange(tables.shape[1], device=tables.device)  # (max_blocks,)
        return tables.gather(1, torch.where(j < used, used - 1 - j, j))  # (num_seqs, max_blocks)

    return _with_tables(engine, reverse)


def shifted_block_tables(engine, shift: int = 1):
    """Each sequence reads physical block ``table[j] + shift`` (modulo the pool) for block j."""
    def shifted(out, batch):
        tables, num_blocks = batch.block_tables, engine.block_manager.num_blocks
        return torch.where(tables >= 0, (tables + shift) % num_blocks, tables)  # same shape

    return _with_tables(engine, shifted)


def skipped_copy_on_write(engine):
    """The engine never performs the block manager's ``blocks_to_copy``: after a fork, a sample
    that writes to a shared, partly filled block gets a fresh block with nothing copied into it.
    Shows with ``n > 1`` samples of a prompt that ends inside a block."""
    return _patched(engine.kv_cache, "copy_blocks", lambda pairs: None)


def cache_hits_read_early(engine):
    """A prompt found in the prefix cache reads those blocks *before* their K/V are written.

    In the step in which one request computes a block and another request takes that same
    block as a prefix-cache hit, the second one reads, in its place, a block holding nothing of
    its own (a free block: zeros, or a finished request's old K/V). Everything it computes on
    top of that prefix in that step is wrong, and stays in its cache. Shows with prefix caching
    on and prompts that share a prefix of at least one block (:func:`prompts_sharing_a_prefix`).
    """
    def early(out, batch):
        bm, size = engine.block_manager, engine.block_manager.block_size
        writer_of: dict[int, set[int]] = {}  # block -> sequences writing into it this step
        slots, start = batch.slot_mapping.tolist(), 0
        for seq in out.scheduled:
            count = out.num_scheduled_tokens[seq.seq_id]
            for slot in slots[start:start + count]:
                if slot >= 0:
                    writer_of.setdefault(slot // size, set()).add(seq.seq_id)
            start += count
        empty = [block for block in bm.free_block_ids if not bm.is_cached(block)]
        tables = batch.block_tables.clone()  # (num_seqs, max_blocks)
        for row, seq in zip(tables, out.scheduled):
            for j in range(seq.num_cached_tokens // size):  # its prefix-cache hits
                if empty and writer_of.get(seq.block_table[j], set()) - {seq.seq_id}:
                    row[j] = empty[0]  # someone else fills this block in this very step
        return tables

    return _with_tables(engine, early)


# name -> context manager, e.g. for a dropdown
BUGS = {
    "reversed block tables": reversed_block_tables,
    "shifted block tables": shifted_block_tables,
    "skipped copy-on-write": skipped_copy_on_write,
    "cache hits read early": cache_hits_read_early,
}


def prompts_sharing_a_prefix(task, groups: int, per_group: int = 3, prefix_len: int = 10,
                             seed: int = 0) -> list[list[int]]:
    """``groups x per_group`` held-out prompts of the tiny model's :class:`~pagedlab.tiny.CopyTask`;
    the prompts of a group start with the same ``prefix_len`` letters (then 4-10 more each), so
    that with prefix caching the later ones find the first's blocks in the cache."""
    rng, prompts = random.Random(seed), []
    for _ in range(groups):
        prefix = rng.sample(task.letters, prefix_len)
        rest = [letter for letter in task.letters if letter not in prefix]
        for _ in range(per_group):
            while True:
                tail = rng.sample(rest, rng.randint(4, min(10, task.max_len - prefix_len)))
                letters = "".join(prefix + tail)
                if task.is_held_out(letters):  # lists the model never saw in training
                    break
            prompts.append(task.prompt(letters))
    return prompts
