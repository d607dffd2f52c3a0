"""Median-of-repeats timing with a time budget, interleaved across methods.

The machine may be shared, so load comes and goes. Every method of one grid row is timed in several
short rounds, round-robin (A B C, A B C, ...): a burst of load then lands on all methods alike instead of
on whichever happened to run during it. The figure kept is the median of all samples of a method.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Timing:
    """Samples of one method: median, spread and count, in seconds."""

    median_s: float
    min_s: float
    p25_s: float
    p75_s: float
    reps: int


def _summary(samples: list[float]) -> Timing:
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
    return Timing(median_s=statistics.median(s), min_s=s[0], p25_s=q[0], p75_s=q[2], reps=len(s))


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    budget_s: float,
    rounds: int = 3,
    min_reps: int = 5,
    max_reps: int = 1000,
    slow_cap_s: float = 2.0,
) -> dict[str, Timing]:
    """Time every zero-argument callable in ``fns`` within about ``budget_s`` seconds each.

    Callables must already be warm (compiled, caches filled). Each of ``rounds`` rounds gives every
    method ``budget_s / rounds`` seconds, round-robin. A method gets at least ``min_reps`` samples
    unless one call alone exceeds the budget (then it gets one sample per round: slow baselines such
    as scipy at 50% density must not stall the grid), and at most ``max_reps``. A method that has spent
    ``max(budget_s, slow_cap_s)`` in all sits out the remaining rounds (at least one sample is kept).
    """
    samples: dict[str, list[float]] = {k: [] for k in fns}
    cap = max(budget_s, slow_cap_s)
    per_round = budget_s / rounds
    want_per_round = -(-min_reps // rounds)
    cap_per_round = max(1, max_reps // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            got = samples[name]
            if got and sum(got) >= cap:
                continue
            start = time.perf_counter()
            n = 0
            while n < cap_per_round:
                t = time.perf_counter()
                fn()
                got.append(time.perf_counter() - t)
                n += 1
                spent = time.perf_counter() - start
                if spent >= per_round and (n >= want_per_round or spent >= 2 * per_round):
                    break
    return {k: _summary(v) for k, v in samples.items()}
