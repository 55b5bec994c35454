"""Where the memory went: a simulation's per-step timeline, its averages, and a table of them.

See notebooks/03_where_memory_goes.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Timeline:
    """Per-step arrays for plots (index = step); fractions are of the whole pool."""

    batch_size: list[int] = field(default_factory=list)      # sequences computed in the step
    waiting: list[int] = field(default_factory=list)         # requests arrived and not running
    token_states: list[float] = field(default_factory=list)
    reserved: list[float] = field(default_factory=list)
    internal_fragmentation: list[float] = field(default_factory=list)
    external_fragmentation: list[float] = field(default_factory=list)
    usage: list[float] = field(default_factory=list)         # held by some request
    finished: list[int] = field(default_factory=list)        # requests finished in the step
    preemptions: list[int] = field(default_factory=list)     # requests preempted so far
    blocks_used: list[int] = field(default_factory=list)     # paged: physical blocks in use
    blocks_unshared: list[int] = field(default_factory=list)  # paged: the same without sharing


@dataclass
class SimResult:
    """Where the memory went and what it bought. See notebooks/03_where_memory_goes.ipynb.

    Fractions of the pool and the mean batch size are averaged over the *busy* steps: from the
    start until the last step in which a request was still waiting to be admitted. The drain
    after it (the last requests finishing, the pool emptying because nobody needs it) says
    nothing about the memory manager; it is in ``timeline`` and in ``steps``. A workload that
    fits the pool whole at the first step has no such phase and is averaged over all steps.
    """

    token_states: float
    reserved: float
    internal_fragmentation: float
    external_fragmentation: float
    sharing_saving: float       # blocks saved by sharing / blocks needed without sharing
    mean_batch_size: float      # sequences per step
    max_batch_size: int
    steps: int                  # all steps, drain included
    finished: int               # requests finished
    preemptions: int            # requests preempted (each time)
    prefix_hit_rate: float      # prompt tokens found in the prefix cache / tokens looked up
    timeline: Timeline
    memory: str = ""            # which memory manager, in words
    generated_tokens: int = 0   # output tokens of the finished sequences
    busy_steps: int = 0         # the steps the averages cover
    # Latency, in time_unit: "steps" (each step lasts 1) or "s" (with a StepCost). Means over
    # the finished requests; TTFT from arrival to the first token, TPOT between later tokens.
    time_unit: str = "steps"
    duration: float = 0.0       # the clock at the end
    mean_ttft: float = 0.0
    p99_ttft: float = 0.0
    mean_tpot: float = 0.0
    p99_itl: float = 0.0        # inter-token latency 99% of decoded tokens beat
    normalized_latency: float = 0.0   # mean of (finish - arrival) / output tokens (the paper's)

    @property
    def idle(self) -> float:
        """Fraction of the pool free and usable."""
        return max(0.0, 1.0 - self.token_states - self.reserved
                   - self.internal_fragmentation - self.external_fragmentation)

    @property
    def throughput(self) -> float:
        """Requests finished per step."""
        return self.finished / self.steps if self.steps else 0.0


def summarize(timeline: Timeline, busy_steps: int, **fields) -> SimResult:
    """Average the timeline over its busy steps (all steps if everything fit at once)."""
    window = busy_steps if busy_steps > 1 else max(len(timeline.batch_size), 1)

    def mean(values: list) -> float:
        return sum(values[:window]) / window

    unshared = sum(timeline.blocks_unshared[:window])
    return SimResult(
        token_states=mean(timeline.token_states), reserved=mean(timeline.reserved),
        internal_fragmentation=mean(timeline.internal_fragmentation),
        external_fragmentation=mean(timeline.external_fragmentation),
        sharing_saving=(unshared - sum(timeline.blocks_used[:window])) / unshared if unshared else 0.0,
        mean_batch_size=mean(timeline.batch_size), max_batch_size=max(timeline.batch_size, default=0),
        steps=len(timeline.batch_size), timeline=timeline, busy_steps=busy_steps, **fields)


def idle_steps(timeline: Timeline, count: int, preemptions: int, paged: bool) -> None:
    """Steps with nothing to run (waiting for the next arrival)."""
    for name, values in vars(timeline).items():
        if name == "preemptions":
            values.extend([preemptions] * count)
        elif paged or not name.startswith("blocks_"):
            values.extend([0] * count)


def format_table(results: list[SimResult]) -> str:
    """Results as a text table, one row per memory manager (percentages of the pool)."""
    header = ("memory", "token states", "reserved", "internal", "external", "idle",
              "batch mean/max", "steps", "preempted", "sharing saved")
    rows = [header]
    for r in results:
        rows.append((r.memory, f"{r.token_states:.1%}", f"{r.reserved:.1%}",
                     f"{r.internal_fragmentation:.1%}", f"{r.external_fragmentation:.1%}",
                     f"{r.idle:.1%}", f"{r.mean_batch_size:.1f}/{r.max_batch_size}",
                     str(r.steps), str(r.preemptions), f"{r.sharing_saving:.1%}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
