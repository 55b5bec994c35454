"""How long a step takes, and what that means for each request's latency.

The simulator has no model, so it needs a rule for the time a step costs. A serving step is
mostly memory traffic and arithmetic, so three terms cover it:

- ``fixed_ms``: reading every weight of the model once (each step does, whatever its batch);
- ``per_token_ms``: the arithmetic for each token computed (a prompt chunk costs its length, a
  decode one token): about 2 x parameters floating-point operations per token;
- ``per_kv_token_ms``: attention reading each cached key and value it attends to.

The defaults are arithmetic for the paper's OPT-13B on one A100 (fp16; 26 GB of weights at
~1.5 TB/s; 26 GFLOP per token at about half of 312 TFLOP/s; 800 KB of K/V per token at
~1.5 TB/s). They are an order-of-magnitude model for comparing schedules, not a measurement.

With a step cost the simulator keeps a clock in seconds: arrivals are in seconds (a Poisson
``rate`` is requests per second, as on the paper's latency plots) and it reports time to first
token (TTFT: arrival to the end of the step that sampled the first token), time per output
token (TPOT: the gaps between later tokens) and the paper's *normalized latency* (end-to-end
latency divided by output length), and the 99th percentile of inter-token latency (the wait
between two tokens of one answer). See notebooks/05b_chunked_prefill_and_latency.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import check_number


@dataclass(frozen=True)
class StepCost:
    """Duration of one step: ``fixed_ms + per_token_ms * tokens + per_kv_token_ms * kv_read``."""

    fixed_ms: float = 17.0
    per_token_ms: float = 0.17
    per_kv_token_ms: float = 0.00053

    def __post_init__(self):
        for name in ("fixed_ms", "per_token_ms", "per_kv_token_ms"):
            check_number(f"{name} (milliseconds)", getattr(self, name), 0.0)

    def seconds(self, num_batched_tokens: int, num_kv_tokens_read: int) -> float:
        """One step's duration in seconds."""
        return (self.fixed_ms + self.per_token_ms * num_batched_tokens
                + self.per_kv_token_ms * num_kv_tokens_read) / 1000.0


@dataclass
class Latencies:
    """Per-request times on the simulator's clock, filled in as the simulation runs."""

    arrival: dict[int, float] = field(default_factory=dict)
    first_token: dict[int, float] = field(default_factory=dict)
    finish: dict[int, float] = field(default_factory=dict)
    output_len: dict[int, int] = field(default_factory=dict)
    decode_steps: list[tuple[float, int]] = field(default_factory=list)  # (duration, decodes)

    def ttft(self) -> list[float]:
        """Time to first token of every finished request."""
        return [self.first_token[r] - self.arrival[r] for r in self.finish]

    def tpot(self) -> list[float]:
        """Mean time per output token after the first, of every finished request with 2+ tokens."""
        return [(self.finish[r] - self.first_token[r]) / (self.output_len[r] - 1)
                for r in self.finish if self.output_len[r] > 1]

    def p99_itl(self) -> float:
        """Inter-token latency that 99% of decoded tokens beat: the step durations, one per
        decoded token. A whole long prompt prefilled in one step shows up here as a stall."""
        ordered = sorted(self.decode_steps)
        total = sum(count for _, count in ordered)
        seen = 0
        for duration, count in ordered:
            seen += count
            if seen >= 0.99 * total:
                return duration
        return 0.0

    def normalized(self) -> list[float]:
        """End-to-end latency / output tokens of every finished request (the paper's measure)."""
        return [(self.finish[r] - self.arrival[r]) / self.output_len[r] for r in self.finish]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]
