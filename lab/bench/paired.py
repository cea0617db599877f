"""Paired per-step ratios of two interleaved timings, and a distribution-free confidence interval for their median.

A shared virtual machine changes speed between minutes by tens of percent, which moves the median of each side
on its own. Pairing the two sides within one repeat (the calls ran seconds apart) cancels that drift; the
median of the per-repeat ratios with a distribution-free interval then says whether a target is met, refuted,
or still undecided at the number of repeats run.
"""
from __future__ import annotations

import math
import statistics


def per_repeat_ratios(short_a, long_a, short_b, long_b, steps: int) -> list[float]:
    """The ratio b/a of the per-step time in each repeat.

    short_x, long_x: wall seconds of the calls of `steps` and 2 x `steps` steps, one per repeat, same order.
    A repeat whose per-step time of a is not positive (the long call ran faster than the short one) has no
    ratio and is dropped.
    """
    if not len(short_a) == len(long_a) == len(short_b) == len(long_b):
        raise ValueError("each side needs one short and one long call per repeat")
    ratios = []
    for sa, la, sb, lb in zip(short_a, long_a, short_b, long_b, strict=True):
        step_a, step_b = (la - sa) / steps, (lb - sb) / steps
        if step_a > 0:
            ratios.append(step_b / step_a)
    return ratios


def median_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the sample median and a distribution-free interval for the true median.

    The interval is the pair of order statistics x_(k), x_(n+1-k) with the largest k for which
    P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2; with fewer than 6 values no such k exists at 95% and
    the interval is the whole range (-inf, inf).
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    mid = statistics.median(xs)
    tail = (1 - confidence) / 2
    k, cdf = 0, 0.0
    while k < n // 2:
        # cdf = P(Binomial(n, 1/2) <= k); the interval may start at x_(k+1) when that stays within the tail
        cdf += math.comb(n, k) / 2 ** n
        if cdf > tail:
            break
        k += 1
    if k == 0:
        return mid, -math.inf, math.inf
    return mid, xs[k - 1], xs[n - k]


def verdict(low: float, high: float, target: float) -> str:
    """'met' when the whole interval is at or below the target, 'refuted' when above it, else 'undecided'."""
    if high <= target:
        return "met"
    if low > target:
        return "refuted"
    return "undecided"
