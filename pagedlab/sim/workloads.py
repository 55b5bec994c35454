"""Synthetic serving workloads: how long the prompts and answers are, and when requests arrive.

The PagedAttention paper (SOSP 2023, Sec. 6.1) serves two datasets. The real traces cannot be
downloaded here, so this module draws lengths from distributions fitted to the facts the paper
reports about them:

============  ==================  ==================  =================================
workload      prompt (tokens)     output (tokens)     shape
============  ==================  ==================  =================================
ShareGPT      mean 161.31         mean 337.99         long conversations, wide spread
Alpaca        mean 19.31          mean 58.45          short instructions, short answers
============  ==================  ==================  =================================

Both lengths are drawn from **log-normal** distributions, independently, rounded to whole
tokens. Why log-normal: lengths are positive, most requests are short and a few are very long
(a long right tail), which is what the paper's length histograms (its Fig. 11) show, and a
log-normal has exactly two knobs: the spread ``sigma`` of log-length, and ``mu``, which sets the
mean. The spreads are our choice: ShareGPT is the wider one (prompt sigma 1.0, output 0.9; the
paper: "higher variance"), Alpaca the narrower (0.6 and 0.8). Each ``mu`` was then solved for so
that the mean *after* the caps below equals the paper's mean (checked on two million draws:
ShareGPT 161.3 / 338.0, medians 98 / 231, 99th percentiles ~1010 / ~1780; Alpaca 19.3 / 58.5,
medians 16 / 42).

Caps: a prompt has at least 1 and at most ``max_seq_len - 1`` tokens, and prompt plus output
at most ``max_seq_len`` (2048, the paper's OPT models), the same cut the real traces get.

Arrivals: ``rate=None`` puts every request at step 0 (the paper's Fig. 2 setting, a full queue);
a number is a Poisson process with that many requests per step (exponential gaps), as in the
paper's serving experiments. Everything is reproducible from ``seed``.
See notebooks/03_where_memory_goes.ipynb.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..errors import InvalidConfig, check_int

# (mu, sigma) of log-length for the prompt and the output; see the module docstring.
SHAREGPT = {"prompt": (4.5881, 1.0), "output": (5.4450, 0.9)}
ALPACA = {"prompt": (2.7801, 0.6), "output": (3.7492, 0.8)}


@dataclass(frozen=True)
class Request:
    """One request to serve: prompt and output lengths in tokens, arrival in steps.

    ``prompt_ids`` may give the prompt's token ids (e.g. to share a prefix); when ``None`` the
    simulator makes up ids unique to the request.
    """

    request_id: int
    prompt_len: int
    output_len: int
    arrival: float = 0.0
    prompt_ids: tuple[int, ...] | None = None

    def __post_init__(self):
        for name in ("prompt_len", "output_len"):
            check_int(name, getattr(self, name), 1)
        if not self.arrival >= 0:
            raise InvalidConfig(f"arrival must be a time >= 0 in steps, got {self.arrival!r}")
        if self.prompt_ids is not None and len(self.prompt_ids) != self.prompt_len:
            raise InvalidConfig(f"prompt_ids has {len(self.prompt_ids)} tokens but prompt_len "
                                f"is {self.prompt_len}: make them agree")


def _check(n: int, rate: float | None, max_seq_len: int = 2) -> None:
    check_int("n (number of requests)", n, 0)
    if rate is not None and not (isinstance(rate, (int, float)) and 0 < rate < math.inf):
        raise InvalidConfig(f"rate is requests per step, a number > 0 (or None: all at "
                            f"step 0), got {rate!r}")
    check_int("max_seq_len", max_seq_len, 2)


def arrivals(n: int, rate: float | None, rng: random.Random) -> list[float]:
    """Arrival steps of ``n`` requests: all 0.0, or a Poisson process of ``rate`` per step."""
    if rate is None:
        return [0.0] * n
    times, now = [], 0.0
    for _ in range(n):
        now += rng.expovariate(rate)
        times.append(now)
    return times


def _lognormal(n: int, seed: int, params: dict, rate: float | None,
               max_seq_len: int) -> list[Request]:
    _check(n, rate, max_seq_len)
    rng = random.Random(seed)
    (mu_p, sigma_p), (mu_o, sigma_o) = params["prompt"], params["output"]
    requests = []
    for i, arrival in enumerate(arrivals(n, rate, random.Random(f"arrivals-{seed}"))):
        prompt = min(max(round(rng.lognormvariate(mu_p, sigma_p)), 1), max_seq_len - 1)
        output = min(max(round(rng.lognormvariate(mu_o, sigma_o)), 1), max_seq_len - prompt)
        requests.append(Request(i, prompt, output, arrival))
    return requests


def sharegpt_like(n: int, seed: int = 0, rate: float | None = None,
                  max_seq_len: int = 2048) -> list[Request]:
    """``n`` requests with ShareGPT's lengths (mean prompt 161.31, output 337.99 tokens).

    ``rate``: ``None`` (all arrive at step 0) or Poisson arrivals, requests per step.
    """
    return _lognormal(n, seed, SHAREGPT, rate, max_seq_len)


def alpaca_like(n: int, seed: int = 0, rate: float | None = None,
                max_seq_len: int = 2048) -> list[Request]:
    """``n`` requests with Alpaca's lengths (mean prompt 19.31, output 58.45 tokens).

    ``rate``: ``None`` (all arrive at step 0) or Poisson arrivals, requests per step.
    """
    return _lognormal(n, seed, ALPACA, rate, max_seq_len)


def fixed(n: int, prompt_len: int, output_len: int, rate: float | None = None,
          seed: int = 0) -> list[Request]:
    """``n`` identical requests (handy for small experiments and tests)."""
    _check(n, rate)
    times = arrivals(n, rate, random.Random(f"arrivals-{seed}"))
    return [Request(i, prompt_len, output_len, t) for i, t in enumerate(times)]


def with_shared_prefix(requests: list[Request], prefix_len: int, num_prefixes: int = 1,
                       seed: int = 0) -> list[Request]:
    """The same requests, each prompt starting with one of ``num_prefixes`` system prompts.

    The first ``prefix_len`` tokens (fewer for shorter prompts) are shared; the rest are unique
    to the request. This is what prefix caching feeds on. See notebooks/04_sharing.ipynb.
    """
    check_int("prefix_len", prefix_len, 0)
    check_int("num_prefixes", num_prefixes, 1)
    rng = random.Random(seed)
    # Token ids: prefixes use ids below 2**20; unique tails use 2**20 + a running counter.
    prefixes = [tuple(p * prefix_len + t for t in range(prefix_len)) for p in range(num_prefixes)]
    shared, next_id = [], 1 << 20
    for request in requests:
        head = prefixes[rng.randrange(num_prefixes)][:request.prompt_len]
        tail = tuple(range(next_id, next_id + request.prompt_len - len(head)))
        next_id += len(tail)
        shared.append(Request(request.request_id, request.prompt_len, request.output_len,
                              request.arrival, head + tail))
    return shared


def mean_lengths(requests: list[Request]) -> tuple[float, float]:
    """(mean prompt length, mean output length) in tokens."""
    if not requests:
        return 0.0, 0.0
    return (sum(r.prompt_len for r in requests) / len(requests),
            sum(r.output_len for r in requests) / len(requests))
