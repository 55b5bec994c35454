"""The KV cache as tensors: fixed-size blocks of keys and values, one pair of tensors per layer.

Layout, per layer, for keys and for values::

    (num_blocks, block_size, num_kv_heads, head_dim)

Slot ``s`` of the pool is row ``s % block_size`` of block ``s // block_size``; the block manager
hands out slots (``slot_mapping``) and this class only moves numbers. A CPU pool of
``num_cpu_blocks`` blocks (pinned memory when the cache is on a GPU) holds swapped-out blocks.

Every method checks its arguments first and raises ``ValueError`` (``InvalidConfig``) naming the
bad one, so a failed call leaves the cache exactly as it was.
See notebooks/06_attention_over_pages.ipynb.
"""
from __future__ import annotations

from numbers import Integral
from typing import Iterable, Sequence

import torch

from . import backend as _backend
from .errors import InvalidConfig, check_index, check_int

Pairs = Iterable[Sequence[int]]  # [(source block, destination block), ...]


class KVCache:
    """Keys and values of every layer, in blocks. ``cache[layer]`` is ``(k_cache, v_cache)``.

    ``dtype`` defaults to float16 on a GPU and float32 on the CPU; ``device`` to the GPU if there
    is one. See notebooks/06_attention_over_pages.ipynb.
    """

    def __init__(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 num_layers: int = 1, dtype: torch.dtype | None = None,
                 device: str | torch.device | None = None, num_cpu_blocks: int | None = None):
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim),
                            ("num_layers", num_layers)):
            check_int(name, value, 1)
        if block_size & (block_size - 1):
            raise InvalidConfig(f"block_size must be a power of two (the kernels need it), "
                                f"got {block_size}")
        num_cpu_blocks = num_blocks if num_cpu_blocks is None else num_cpu_blocks
        check_int("num_cpu_blocks", num_cpu_blocks, 0)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise InvalidConfig(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.num_kv_heads, self.head_dim, self.num_layers = num_kv_heads, head_dim, num_layers
        self.num_cpu_blocks, self.dtype, self.device = num_cpu_blocks, dtype, device
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, blocks, B, kv_heads, hd)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (L, blocks, B, kv_heads, hd)
        # The CPU pool, (L, cpu_blocks, B, kv_heads, hd), is made on the first swap.
        self.cpu_k: torch.Tensor | None = None
        self.cpu_v: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"KVCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
                f"num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"num_layers={self.num_layers}, dtype={self.dtype}, device='{self.device}')")

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(k_cache, v_cache) of one layer: each (num_blocks, block_size, kv_heads, head_dim)."""
        self._check_layer(layer)
        return self.k[layer], self.v[layer]

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def nbytes(self) -> int:
        """Bytes of K and V on the device, all layers."""
        return self.k.nbytes + self.v.nbytes

    # -- writing new tokens ---------------------------------------------------------------------

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor,
              slot_mapping: torch.Tensor | Sequence[int], backend: str | None = None) -> None:
        """Store new tokens' K/V in their slots of one layer; slot -1 skips a token.

        k, v: (num_tokens, num_kv_heads, head_dim) in the cache's dtype; slot_mapping:
        (num_tokens,) ints. ``backend``: None (the Triton store kernel where it runs, else torch),
        "triton" or "torch". See notebooks/06_attention_over_pages.ipynb.
        """
        self._check_layer(layer)
        slots = self._check_tokens(k, v, slot_mapping)
        self.store(layer, k, v, slots, backend)

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor,
              backend: str | None = None, every_slot: bool = False) -> None:
        """:meth:`write` without the checks, for inputs already checked: the engine checks its
        step's slots once (in Python, from the block manager's answers), not once per layer on
        the device, where each check would wait for the GPU. slots: (num_tokens,) int64.
        ``every_slot``: the caller knows no slot is -1, so the torch path skips the mask."""
        k_cache, v_cache = self.k[layer], self.v[layer]

        def torch_write() -> None:
            flat, to, new_k, new_v = (-1, self.num_kv_heads, self.head_dim), slots, k, v
            if not every_slot:  # skip the slots of -1 (every_slot: the caller knows there are none)
                keep = slots >= 0  # (num_tokens,)
                to, new_k, new_v = slots[keep], k[keep], v[keep]
            k_cache.view(flat).index_copy_(0, to, new_k)  # (num_slots, kv_heads, hd)
            v_cache.view(flat).index_copy_(0, to, new_v)  # (num_slots, kv_heads, hd)

        if _backend.choose(backend, self.device) == "torch":
            return torch_write()
        store_kv = _backend.load_kernels().store_kv
        _backend.run_or_fall_back(
            "store kernel",
            lambda: store_kv.store_kv(k.contiguous(), v.contiguous(), k_cache, v_cache, slots),
            torch_write, insisted=backend == "triton", on_gpu=k.is_cuda)

    # -- copy-on-write and swapping: whole blocks, every layer ----------------------------------

    def copy_blocks(self, pairs: Pairs) -> None:
        """Copy block ``src`` to block ``dst`` for every ``(src, dst)`` pair, in all layers.

        Every source is read before any destination is written. This is what the block manager's
        copy-on-write asks for (``append_token`` returns such a pair).
        See notebooks/04_sharing.ipynb.
        """
        src, dst = self._check_pairs(pairs, "pairs", self.num_blocks, self.num_blocks)
        if len(src):
            self.k[:, dst] = self.k[:, src]  # (L, n, B, kv_heads, hd)
            self.v[:, dst] = self.v[:, src]  # (L, n, B, kv_heads, hd)

    def swap_out(self, mapping: Pairs) -> None:
        """Copy device blocks to the CPU pool: ``mapping`` is ``[(gpu_block, cpu_block), ...]``,
        as ``BlockManager.swap_out(seq)`` returns it. See notebooks/05_scheduling.ipynb.
        """
        gpu, cpu = self._check_pairs(mapping, "mapping", self.num_blocks, self.num_cpu_blocks)
        if len(gpu):
            self._ensure_cpu_pool()
            self.cpu_k[:, cpu] = self.k[:, gpu].cpu()  # (L, n, B, kv_heads, hd)
            self.cpu_v[:, cpu] = self.v[:, gpu].cpu()  # (L, n, B, kv_heads, hd)

    def swap_in(self, mapping: Pairs) -> None:
        """Copy CPU-pool blocks back to the device: ``mapping`` is
        ``[(cpu_block, gpu_block), ...]``, as ``BlockManager.swap_in(seq)`` returns it.
        See notebooks/05_scheduling.ipynb.
        """
        cpu, gpu = self._check_pairs(mapping, "mapping", self.num_cpu_blocks, self.num_blocks)
        if len(gpu):
            self._ensure_cpu_pool()
            self.k[:, gpu] = self.cpu_k[:, cpu].to(self.device)  # (L, n, B, kv_heads, hd)
            self.v[:, gpu] = self.cpu_v[:, cpu].to(self.device)  # (L, n, B, kv_heads, hd)

    # -- helpers --------------------------------------------------------------------------------

    def _ensure_cpu_pool(self) -> None:
        if self.cpu_k is None:
            shape = (self.num_layers, self.num_cpu_blocks, *self.k.shape[2:])
            pin = self.device.type == "cuda"  # pinned pages copy faster and asynchronously
            try:
                self.cpu_k = torch.zeros(shape, dtype=self.dtype, pin_memory=pin)
                self.cpu_v = torch.zeros(shape, dtype=self.dtype, pin_memory=pin)
            except RuntimeError:  # pinning can fail (limits, drivers): pageable memory still works
                self.cpu_k = torch.zeros(shape, dtype=self.dtype)
                self.cpu_v = torch.zeros(shape, dtype=self.dtype)

    def _check_layer(self, layer: int) -> None:
        check_index("layer", layer, self.num_layers)

    def _check_tokens(self, k, v, slot_mapping) -> torch.Tensor:
        """Validate a write; return slot_mapping as an int64 tensor on the cache's device."""
        expected = (self.num_kv_heads, self.head_dim)
        for name, tensor in (("k", k), ("v", v)):
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 \
                    or tuple(tensor.shape[1:]) != expected:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
                raise InvalidConfig(f"{name} must be a tensor (num_tokens, num_kv_heads="
                                    f"{expected[0]}, head_dim={expected[1]}), got {shape}")
            if tensor.dtype != self.dtype:
                raise InvalidConfig(f"{name} has dtype {tensor.dtype} but the cache holds "
                                    f"{self.dtype}: pass {name}.to({self.dtype})")
            if tensor.device != self.device:
                raise InvalidConfig(f"{name} is on {tensor.device} but the cache is on "
                                    f"{self.device}: pass {name}.to('{self.device}')")
        if k.shape != v.shape:
            raise InvalidConfig(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have one shape")
        if isinstance(slot_mapping, torch.Tensor):
            if slot_mapping.dtype.is_floating_point or slot_mapping.dtype == torch.bool:
                raise InvalidConfig(f"slot_mapping must hold integers, got {slot_mapping.dtype}")
            slots = slot_mapping.to(self.device, torch.int64)
        else:
            try:
                slots = torch.tensor(list(slot_mapping), dtype=torch.int64, device=self.device)
            except (TypeError, ValueError, RuntimeError) as error:
                raise InvalidConfig(f"slot_mapping must be a list or tensor of ints: {error}")
        if slots.shape != (k.shape[0],):
            raise InvalidConfig(f"slot_mapping must have one slot per token ({k.shape[0]},), "
                                f"got shape {tuple(slots.shape)}")
        if bool(((slots < -1) | (slots >= self.num_slots)).any()):
            raise InvalidConfig(f"slot_mapping entries must be -1 (skip) or in [0, "
                                f"{self.num_slots}), got {slots.tolist()}")
        kept = slots[slots >= 0]
        if kept.unique().numel() != kept.numel():
            raise InvalidConfig("slot_mapping names a slot twice: each slot takes one token")
        return slots.contiguous()

    @staticmethod
    def _check_pairs(pairs, name: str, num_src: int, num_dst: int):
        """Validate [(src, dst), ...]; return two index lists."""
        try:
            items = [tuple(pair) for pair in (pairs.items() if isinstance(pairs, dict) else pairs)]
        except TypeError:
            raise InvalidConfig(f"{name} must be a list of (source, destination) block pairs, "
                                f"e.g. [(3, 5)], got {pairs!r}") from None
        for pair in items:
            if len(pair) != 2 or not all(isinstance(b, Integral) and not isinstance(b, bool)
                                         for b in pair):
                raise InvalidConfig(f"{name} must be a list of (source, destination) int pairs, "
                                    f"e.g. [(3, 5)], got the item {pair!r}")
            src, dst = pair
            if not 0 <= src < num_src or not 0 <= dst < num_dst:
                raise InvalidConfig(f"{name} pair {pair} is out of range: sources are in "
                                    f"[0, {num_src}), destinations in [0, {num_dst})")
        destinations = [dst for _, dst in items]
        if len(set(destinations)) != len(destinations):
            raise InvalidConfig(f"{name} writes one destination block twice: {items}")
        return [int(src) for src, _ in items], [int(dst) for dst in destinations]
