"""The injection benchmark's paired ratio and its interval for the median (lab/bench/paired.py)."""
import math
import random

import pytest

from lab.bench.paired import median_interval, per_repeat_ratios, verdict


def test_pairing_cancels_a_drift_that_moves_both_sides():
    # the machine slows 3x over the repeats; within a repeat b costs 1.04x a per step and both share a setup
    steps, slow = 8, [1.0, 1.5, 2.0, 3.0]
    short_a = [0.1 + steps * 0.02 * k for k in slow]
    long_a = [0.1 + 2 * steps * 0.02 * k for k in slow]
    short_b = [0.1 + steps * 0.0208 * k for k in slow]
    long_b = [0.1 + 2 * steps * 0.0208 * k for k in slow]
    assert per_repeat_ratios(short_a, long_a, short_b, long_b, steps) == pytest.approx([1.04] * 4)


def test_a_repeat_whose_reference_step_is_not_positive_is_dropped():
    assert per_repeat_ratios([1.0, 1.0], [2.0, 0.9], [1.0, 1.0], [2.1, 2.0], 1) == pytest.approx([1.1])
    with pytest.raises(ValueError, match="one short and one long"):
        per_repeat_ratios([1.0], [2.0, 2.0], [1.0], [2.0], 1)


@pytest.mark.parametrize("n,k", [(6, 1), (10, 2), (15, 4), (20, 6), (30, 10)])
def test_the_interval_uses_the_order_statistics_of_the_binomial_table(n, k):
    # k from the standard table of distribution-free 95% intervals for a median: [x_(k), x_(n+1-k)]
    xs = list(range(1, n + 1))
    random.Random(n).shuffle(xs)
    _, low, high = median_interval(xs)
    assert (low, high) == (k, n + 1 - k)


def test_too_few_values_give_no_interval_and_the_median_still():
    mid, low, high = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (mid, low, high) == (3.0, -math.inf, math.inf)
    assert median_interval([1.0, 2.0, 3.0, 10.0])[0] == 2.5
    with pytest.raises(ValueError):
        median_interval([])


def test_the_interval_covers_the_true_median_about_as_often_as_it_says():
    rng = random.Random(0)
    hits = sum(low <= 1.0 <= high for low, high in
               (median_interval([rng.lognormvariate(0, 0.2) for _ in range(15)])[1:] for _ in range(2000)))
    assert 0.94 <= hits / 2000 <= 0.99  # exact coverage at n=15 is 0.965


def test_verdict():
    assert verdict(0.98, 1.04, 1.05) == "met"
    assert verdict(1.06, 1.2, 1.05) == "refuted"
    assert verdict(1.0, 1.1, 1.05) == "undecided"
    assert verdict(-math.inf, math.inf, 1.05) == "undecided"
