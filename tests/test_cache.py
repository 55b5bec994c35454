"""KVCache: block-shaped K/V tensors, writes into slots, copy-on-write copies, exact swapping."""
import pytest
import torch

import pagedlab as pl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def filled_cache(num_layers=2, num_blocks=6, seed=0) -> pl.KVCache:
    cache = pl.KVCache(num_blocks=num_blocks, block_size=4, num_kv_heads=2, head_dim=8,
                       num_layers=num_layers, dtype=torch.float32, device=DEVICE)
    generator = torch.Generator().manual_seed(seed)
    cache.k.copy_(torch.randn(cache.k.shape, generator=generator))
    cache.v.copy_(torch.randn(cache.v.shape, generator=generator))
    return cache


def snapshot(cache: pl.KVCache):
    cpu = None if cache.cpu_k is None else (cache.cpu_k.clone(), cache.cpu_v.clone())
    return cache.k.clone(), cache.v.clone(), cpu


def assert_unchanged(cache: pl.KVCache, before) -> None:
    assert torch.equal(cache.k, before[0]) and torch.equal(cache.v, before[1])
    if before[2] is not None:
        assert torch.equal(cache.cpu_k, before[2][0]) and torch.equal(cache.cpu_v, before[2][1])


# -- layout -----------------------------------------------------------------------------------


def test_each_layer_holds_blocks_of_slots_of_heads():
    cache = pl.KVCache(10, 16, 4, 64, num_layers=3, dtype=torch.float16, device=DEVICE)
    k_cache, v_cache = cache[2]
    assert k_cache.shape == v_cache.shape == (10, 16, 4, 64)
    assert k_cache.dtype == torch.float16 and k_cache.is_contiguous()
    assert cache.num_slots == 160 and cache.nbytes == 2 * 3 * 10 * 16 * 4 * 64 * 2


def test_a_new_cache_is_zero():
    cache = pl.KVCache(2, 8, 1, 16, device=DEVICE)
    assert not cache.k.any() and not cache.v.any()


def test_defaults_follow_the_machine():
    cache = pl.KVCache(2, 8, 1, 16)
    assert cache.device.type == DEVICE
    assert cache.dtype == (torch.float16 if DEVICE == "cuda" else torch.float32)


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_blocks=0), "num_blocks"),
    (dict(block_size=12), "power of two"),
    (dict(head_dim=2.5), "head_dim"),
    (dict(num_layers=-1), "num_layers"),
    (dict(dtype=torch.int32), "dtype"),
    (dict(num_cpu_blocks=-1), "num_cpu_blocks"),
])
def test_bad_configuration_raises_value_error_naming_it(kwargs, word):
    config = dict(num_blocks=4, block_size=8, num_kv_heads=1, head_dim=16, device=DEVICE)
    with pytest.raises(ValueError, match=word):
        pl.KVCache(**{**config, **kwargs})


# -- write -------------------------------------------------------------------------------------


def test_write_puts_each_token_in_its_slot():
    cache = pl.KVCache(3, 4, 2, 8, num_layers=2, dtype=torch.float32, device=DEVICE)
    k = torch.randn(5, 2, 8, device=DEVICE)  # (tokens, kv_heads, head_dim)
    v = torch.randn(5, 2, 8, device=DEVICE)
    slots = [9, 10, 11, 0, 1]  # block 2 rows 1-3, then block 0 rows 0-1
    cache.write(1, k, v, slots, backend="torch")
    k_cache, v_cache = cache[1]
    assert torch.equal(k_cache[2, 1:4], k[:3]) and torch.equal(k_cache[0, :2], k[3:])
    assert torch.equal(v_cache[2, 1:4], v[:3]) and torch.equal(v_cache[0, :2], v[3:])
    assert not cache.k[0].any()  # the other layer is untouched


def test_write_skips_slot_minus_one():
    cache = pl.KVCache(2, 4, 1, 8, dtype=torch.float32, device=DEVICE)
    k = torch.ones(3, 1, 8, device=DEVICE)
    cache.write(0, k, k, [2, -1, 5], backend="torch")
    written = cache.k[0].view(-1, 1, 8).any(dim=(1, 2)).nonzero().flatten().tolist()
    assert written == [2, 5]


def test_store_of_every_slot_equals_the_masked_store():
    """The engine passes every_slot=True when no slot is -1; the cache must come out the same."""
    k, v = torch.randn(5, 2, 8, device=DEVICE), torch.randn(5, 2, 8, device=DEVICE)
    slots = torch.tensor([9, 10, 11, 0, 1], device=DEVICE)
    caches = [pl.KVCache(3, 4, 2, 8, dtype=torch.float32, device=DEVICE) for _ in range(2)]
    for cache, every_slot in zip(caches, (False, True)):
        cache.store(0, k, v, slots, backend="torch", every_slot=every_slot)
    assert caches[0].k[0].any() and torch.equal(caches[0].k, caches[1].k)
    assert torch.equal(caches[0].v, caches[1].v)


@pytest.mark.parametrize("backend", ["triton", None])
def test_triton_write_equals_torch_write(backend):
    pytest.importorskip("triton")
    by_torch, by_kernel = (pl.KVCache(4, 8, 2, 16, dtype=torch.float32, device=DEVICE)
                           for _ in range(2))
    k = torch.randn(7, 2, 16, device=DEVICE)
    v = torch.randn(7, 2, 16, device=DEVICE)
    slots = torch.tensor([31, 0, 8, -1, 9, 17, 5], device=DEVICE)
    by_torch.write(0, k, v, slots, backend="torch")
    by_kernel.write(0, k, v, slots, backend=backend)
    assert torch.equal(by_torch.k, by_kernel.k) and torch.equal(by_torch.v, by_kernel.v)


WRITE_ERRORS = {
    "layer out of range": (dict(layer=2), "layer"),
    "wrong head count": (dict(k=torch.zeros(3, 1, 8)), "k must be a tensor"),
    "k and v differ": (dict(v=torch.zeros(2, 2, 8)), "one shape"),
    "wrong dtype": (dict(k=torch.zeros(3, 2, 8, dtype=torch.float64)), "dtype"),
    "slot past the pool": (dict(slot_mapping=[0, 1, 8 * 4]), "slot_mapping"),
    "slot below -1": (dict(slot_mapping=[0, 1, -2]), "slot_mapping"),
    "slot twice": (dict(slot_mapping=[3, 3, 4]), "twice"),
    "one slot short": (dict(slot_mapping=[0, 1]), "one slot per token"),
    "float slots": (dict(slot_mapping=torch.tensor([0.0, 1.0, 2.0])), "integers"),
}


@pytest.mark.parametrize("case", WRITE_ERRORS)
def test_bad_write_raises_value_error_and_changes_nothing(case):
    cache = filled_cache(num_blocks=8)
    before = snapshot(cache)
    args = dict(layer=0, k=torch.zeros(3, 2, 8, device=DEVICE), v=torch.zeros(3, 2, 8, device=DEVICE),
                slot_mapping=[0, 1, 2])
    change, word = WRITE_ERRORS[case]
    args.update({name: value.to(DEVICE) if isinstance(value, torch.Tensor) else value
                 for name, value in change.items()})
    with pytest.raises(ValueError, match=word):
        cache.write(**args)
    assert_unchanged(cache, before)


# -- copy_blocks --------------------------------------------------------------------------------


def test_copy_blocks_copies_every_layer():
    cache = filled_cache()
    before = snapshot(cache)
    cache.copy_blocks([(1, 4)])
    assert torch.equal(cache.k[:, 4], before[0][:, 1])
    assert torch.equal(cache.v[:, 4], before[1][:, 1])
    others = [0, 1, 2, 3, 5]
    assert torch.equal(cache.k[:, others], before[0][:, others])


def test_copy_blocks_reads_all_sources_before_writing():
    cache = filled_cache()
    before = snapshot(cache)
    cache.copy_blocks([(0, 1), (1, 0)])  # a swap, not a double copy
    assert torch.equal(cache.k[:, 0], before[0][:, 1])
    assert torch.equal(cache.k[:, 1], before[0][:, 0])


def test_copy_blocks_of_nothing_is_a_no_op():
    cache = filled_cache()
    before = snapshot(cache)
    cache.copy_blocks([])
    assert_unchanged(cache, before)


@pytest.mark.parametrize("pairs, word", [
    ([(0, 6)], "out of range"),
    ([(-1, 2)], "out of range"),
    ([(0, 2), (1, 2)], "twice"),
    ([(0, 1, 2)], "pairs"),
    ((3, 5), "pairs"),  # one bare pair: must be a list of pairs
    ([(0.0, 1)], "pairs"),
])
def test_bad_copy_raises_value_error_and_changes_nothing(pairs, word):
    cache = filled_cache()
    before = snapshot(cache)
    with pytest.raises(ValueError, match=word):
        cache.copy_blocks(pairs)
    assert_unchanged(cache, before)


# -- swapping -------------------------------------------------------------------------------------


def test_swap_round_trip_is_exact():
    cache = filled_cache(num_layers=3)
    before = snapshot(cache)
    cache.swap_out([(1, 0), (4, 3)])
    cache.k[:, [1, 4]] = 0  # the device blocks get reused meanwhile
    cache.v[:, [1, 4]] = 0
    cache.swap_in([(0, 2), (3, 5)])  # back into different device blocks
    for new, old in ((2, 1), (5, 4)):
        assert torch.equal(cache.k[:, new], before[0][:, old])
        assert torch.equal(cache.v[:, new], before[1][:, old])


def test_cpu_pool_lives_on_the_cpu_and_is_pinned_with_a_gpu():
    cache = filled_cache()
    cache.swap_out([(0, 0)])
    assert cache.cpu_k.device.type == "cpu"
    assert cache.cpu_k.is_pinned() == (DEVICE == "cuda")


def test_swap_accepts_the_block_managers_mappings():
    cache = filled_cache(num_blocks=8)
    manager = pl.BlockManager(num_blocks=8, block_size=4)
    seq = pl.Sequence(seq_id=1, token_ids=list(range(10)))  # 3 blocks
    manager.allocate(seq)
    table = list(seq.block_table)
    before = snapshot(cache)
    cache.swap_out(manager.swap_out(seq))  # [(gpu_block, cpu_block), ...]
    cache.k.zero_()
    cache.v.zero_()
    cache.swap_in(manager.swap_in(seq))  # [(cpu_block, gpu_block), ...]
    for old, new in zip(table, seq.block_table):
        assert torch.equal(cache.k[:, new], before[0][:, old])
        assert torch.equal(cache.v[:, new], before[1][:, old])


@pytest.mark.parametrize("method, mapping", [
    ("swap_out", [(6, 0)]),  # no device block 6
    ("swap_out", [(0, 2), (1, 2)]),  # two blocks into one CPU block
    ("swap_in", [(0, 6)]),
    ("swap_in", [(9, 0)]),  # no CPU block 9 (num_cpu_blocks = num_blocks = 6)
])
def test_bad_swap_raises_value_error_and_changes_nothing(method, mapping):
    cache = filled_cache()
    cache.swap_out([(0, 0)])
    before = snapshot(cache)
    with pytest.raises(ValueError):
        getattr(cache, method)(mapping)
    assert_unchanged(cache, before)
