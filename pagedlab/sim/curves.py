"""The paper's latency curves (its Fig. 12): normalized latency against request rate.

Each system serves the same ShareGPT-like requests at each Poisson rate (requests per second),
through :func:`~pagedlab.simulate` with a :class:`~pagedlab.sim.latency.StepCost`, over the same
pool of KV-cache slots:

- ``Orca (Max)``, ``Orca (Pow2)``, ``Orca (Oracle)``: one contiguous region per request
  (:class:`~pagedlab.ContiguousAllocator`), prompts prefilled whole;
- ``paged``: the :class:`~pagedlab.BlockManager` with the paper's scheduler (prompts whole);
- ``paged, chunked``: the same with chunked prefill under a token budget (vLLM V1).

The pool defaults to OPT-13B on one A100-40GB, the paper's Fig. 12(a) setting: about 12 GB
left for K/V at 800 KB per token is ~14,600 tokens; 7 x 2048 = 14,336 slots, so that Orca (Max)
holds exactly seven requests. Results are cached, so a widget redrawing a sweep the lesson already
ran costs nothing. See notebooks/05b_chunked_prefill_and_latency.ipynb.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from ..blocks import BlockManager
from ..errors import check_choice
from .contiguous import ContiguousAllocator
from .latency import StepCost
from .simulator import simulate
from .workloads import sharegpt_like

SYSTEMS = ("Orca (Max)", "Orca (Pow2)", "Orca (Oracle)", "paged", "paged, chunked")
RATES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)   # requests per second
POOL_TOKENS = 7 * 2048                        # OPT-13B, one A100-40GB (see the docstring)
WHOLE_PROMPT_BUDGET = 2048                    # a step may prefill up to the longest prompt
_ORCA = {"Orca (Max)": "max", "Orca (Pow2)": "pow2", "Orca (Oracle)": "oracle"}


@dataclass(frozen=True)
class Point:
    """One system at one rate: the latencies (seconds) and what the batch looked like."""

    rate: float
    normalized_latency: float   # mean of (finish - arrival) / output tokens, s/token
    mean_ttft: float
    p99_ttft: float
    mean_tpot: float
    p99_itl: float
    mean_batch_size: float
    preemptions: int


@dataclass
class LatencyCurves:
    """A sweep: ``points[system]`` holds one :class:`Point` per rate of ``rates``."""

    rates: tuple[float, ...]
    points: dict[str, list[Point]]
    num_requests: int
    pool_tokens: int
    budget: int          # the chunked system's max_num_batched_tokens
    block_size: int

    def values(self, system: str, metric: str = "normalized_latency") -> list[float]:
        """One metric of one system, a value per rate."""
        return [getattr(point, metric) for point in self.points[system]]

    def at(self, system: str, rate: float) -> Point:
        """The point of ``system`` at ``rate`` (one of the swept rates)."""
        return self.points[system][self.rates.index(rate)]

    def knee(self, system: str, factor: float = 2.0) -> float:
        """The rate where the system's normalized latency first reaches ``factor`` times its
        value at the lowest rate (linear between swept rates); ``inf`` if it never does."""
        values = self.values(system)
        limit = factor * values[0]
        for (r0, v0), (r1, v1) in zip(zip(self.rates, values), zip(self.rates[1:], values[1:])):
            if v1 >= limit:
                return r0 + (r1 - r0) * (limit - v0) / (v1 - v0) if v1 > v0 else r1
        return math.inf


def memory_for(system: str, pool_tokens: int = POOL_TOKENS, block_size: int = 16):
    """A fresh memory manager for one of :data:`SYSTEMS`, over ``pool_tokens`` slots."""
    if check_choice("system", system, SYSTEMS) in _ORCA:
        return ContiguousAllocator(pool_tokens, _ORCA[system])
    return BlockManager(pool_tokens // block_size, block_size)


def serve(system: str, rate: float, num_requests: int = 300, *, pool_tokens: int = POOL_TOKENS,
          budget: int = 512, block_size: int = 16, seed: int = 0,
          step_cost: StepCost = StepCost()) -> Point:
    """Simulate one system at one rate (requests per second); cached. ``budget`` is the token
    budget of ``"paged, chunked"``; the other systems prefill whole prompts and ignore it."""
    chunked = system == "paged, chunked"
    return _serve(system, float(rate), num_requests, pool_tokens,
                  budget if chunked else WHOLE_PROMPT_BUDGET, block_size, seed, step_cost)


@functools.lru_cache(maxsize=512)
def _serve(system, rate, num_requests, pool_tokens, budget, block_size, seed, step_cost) -> Point:
    requests = sharegpt_like(num_requests, seed=seed, rate=rate)
    result = simulate(requests, memory_for(system, pool_tokens, block_size), step_cost=step_cost,
                      enable_chunked_prefill=system == "paged, chunked",
                      max_num_batched_tokens=budget)
    return Point(rate, result.normalized_latency, result.mean_ttft, result.p99_ttft,
                 result.mean_tpot, result.p99_itl, result.mean_batch_size, result.preemptions)


def latency_curves(rates=RATES, num_requests: int = 300, *, systems=SYSTEMS,
                   pool_tokens: int = POOL_TOKENS, budget: int = 512, block_size: int = 16,
                   seed: int = 0, step_cost: StepCost = StepCost(),
                   progress: bool = False) -> LatencyCurves:
    """Sweep the request rate for each system (same requests, rescaled in time, at each rate).

    ``budget`` is the chunked system's token budget; the others prefill whole prompts.
    See notebooks/05b_chunked_prefill_and_latency.ipynb.
    """
    rates = tuple(float(rate) for rate in rates)
    jobs = [(system, rate) for system in systems for rate in rates]
    bar = None
    if progress:
        import os
        if os.environ.get("PAGEDLAB_PROGRESS", "1") != "0":
            from tqdm.auto import tqdm
            bar = tqdm(total=len(jobs), unit="run", desc="rate sweep")
    points: dict[str, list[Point]] = {system: [] for system in systems}
    for system, rate in jobs:
        points[system].append(serve(system, rate, num_requests, pool_tokens=pool_tokens,
                                    budget=budget, block_size=block_size, seed=seed,
                                    step_cost=step_cost))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return LatencyCurves(rates, points, num_requests, pool_tokens, budget, block_size)
