"""The lab's statistics: differences paired by seed, t intervals, and test-set noise.

Two arms trained with the same seed see the same data subset and order, so their accuracy
difference per seed is one paired sample; the interval on its mean uses Student's t. The
test set is fixed, so seeds cannot average its sampling noise away: that noise comes from
the two arms' disagreements on the same test images (McNemar), and widens the interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t, df = 1..30; above 30 the normal's 1.96 is within 2%.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
Z975 = 1.96


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (scipy when installed)."""
    if df < 1:
        return math.inf
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return T975[df - 1] if df <= len(T975) else Z975


@dataclass(frozen=True)
class Interval:
    """A mean effect with its 95% interval; `se_seed` and `se_test` are its two noise parts."""

    effect: float
    lo: float
    hi: float
    n: int
    se_seed: float
    se_test: float = 0.0

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def mcnemar_se(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> float:
    """Standard error of acc(a) - acc(b) on one test set, from the images where they disagree.

    With b01 images only b gets right and b10 only a gets right out of n, the paired
    difference (b10 - b01) / n has variance ((b10 + b01) - (b10 - b01)**2 / n) / n**2.
    """
    n = len(correct_a)
    if n == 0 or n != len(correct_b):
        raise ValueError("correctness vectors must be non-empty and of equal length")
    b10 = sum(1 for a, b in zip(correct_a, correct_b) if a and not b)
    b01 = sum(1 for a, b in zip(correct_a, correct_b) if b and not a)
    return math.sqrt(max(0.0, (b10 + b01) - (b10 - b01) ** 2 / n)) / n


def paired(a: Sequence[float], b: Sequence[float], se_test: float = 0.0) -> Interval:
    """mean(a - b) over seeds (a[i] and b[i] share seed i) with its 95% interval.

    The seed part is a t interval on the per-seed differences; the test-set part (`se_test`,
    from `mcnemar_se`) adds in quadrature at the normal quantile. With one seed only the
    test-set part is known and the interval is infinite.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired arms need the same seeds, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    effect = sum(diffs) / n
    se_seed = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else math.inf
    half = math.hypot(t975(n - 1) * se_seed, Z975 * se_test)
    return Interval(effect, effect - half, effect + half, n, se_seed, se_test)


def one_sample(values: Sequence[float], se_test: float = 0.0) -> Interval:
    """mean(values) with its 95% interval (a single arm against a fixed target)."""
    return paired(list(values), [0.0] * len(values), se_test)


def binomial_se(p: float, n: int) -> float:
    """Sampling error of an accuracy p measured on n images (one arm against a target)."""
    if n <= 0 or not 0 <= p <= 1:
        return 0.0
    return math.sqrt(p * (1 - p) / n)
