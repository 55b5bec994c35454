"""The simulator: serving a synthetic workload with no model, to see where KV-cache memory goes.

- :mod:`.workloads` makes requests with ShareGPT-like and Alpaca-like lengths;
- :mod:`.contiguous` is the paper's baseline: one contiguous region per request (Orca);
- :mod:`.simulator` runs either memory manager step by step; :mod:`.breakdown` sums it up.

The paged run uses the same :class:`~pagedlab.Scheduler` and :class:`~pagedlab.BlockManager`
as the engine. See notebooks/03_where_memory_goes.ipynb.
"""
