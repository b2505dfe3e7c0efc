"""Intervals for "is A better than B" over seeds: a paired t-interval (same seeds), Welch's (unpaired), the seeds a
difference needs for 80 % power (noncentral t) and Holm's step-down decisions over a table. ``bigmodel compare`` and
the results table read them; a grid point's choice uses ``lower_is_better``."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


LEVEL = 0.95
POWER = 0.80
MANY_SEEDS = 10_000  # "seeds for 80 % power" beyond this reads "> 10000"
_LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "ece")


def lower_is_better(metric: str) -> bool:
    """Losses, perplexities and errors fall as a model improves; every other metric (accuracy, F1, recall) rises."""
    name = metric.rsplit("/", 1)[-1].lower()
    return any(word in name for word in _LOWER_IS_BETTER)


@dataclass
class Difference:
    """``other − reference`` on one metric."""

    metric: str
    mean: float
    std: float | None  # sample std of the paired differences; None for Welch (two spreads) or one seed
    low: float
    high: float
    n: int  # paired: the seeds both have; Welch: the smaller sweep's seeds
    paired: bool
    seeds_needed: int | None  # per sweep, for 80 % power at the observed effect; None: no difference or no spread
    se: float | None = None  # standard error of the mean difference; None: one seed; 0: no spread
    df: float | None = None  # the t-interval's degrees of freedom
    sizes: tuple[int, int] | None = None  # the seeds with a value: (other, reference)
    left_out: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # paired: the seeds only other / reference has

    @property
    def n_text(self) -> str:
        """n as a table shows it: ``3``; paired on fewer seeds than a sweep has, ``3 (of 4 vs 3)``; Welch with unequal
        sweeps, ``4 vs 3``."""
        if self.sizes is None or self.sizes == (self.n, self.n):
            return str(self.n)
        sizes = f"{self.sizes[0]} vs {self.sizes[1]}"
        return f"{self.n} (of {sizes})" if self.paired else sizes

    @property
    def no_spread(self) -> bool:
        """Every seed gave the same difference: a zero-width interval that says nothing about the seed variance."""
        return self.se is not None and _no_spread(self.se, self.mean)

    @property
    def resolved(self) -> bool:
        return not self.no_spread and (self.low > 0 or self.high < 0)

    @property
    def p_value(self) -> float:
        """The two-sided t-test's p (1 with one seed or no spread): below 5 % exactly when the interval excludes 0."""
        if self.se is None or self.no_spread or self.df is None:
            return 1.0
        from scipy import stats

        return float(2 * stats.t.sf(abs(self.mean) / self.se, self.df))

    def verdict(self, other: str, reference: str, resolved: bool | None = None) -> str:
        """``resolved``: another test's decision (Holm's) instead of this interval's."""
        if self.no_spread:
            return "no spread: cannot assess"
        if not (self.resolved if resolved is None else resolved):
            return f"not resolved at {self.n} seed{'s' * (self.n != 1)}"
        return f"{other if (self.mean > 0) != lower_is_better(self.metric) else reference} better"


def _no_spread(se: float, mean: float) -> bool:
    """A standard error of zero, or of float rounding (accuracies equal in exact arithmetic differ by ~1e-17)."""
    return se <= 1e-9 * max(1.0, abs(mean))


def _t_quantile(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def _power(n: int, noncentrality: float, df: float) -> float:
    """A two-sided t-test's power at level 1 − ``LEVEL``: P(|T| > t_crit) for T noncentral t."""
    from scipy import stats

    t = _t_quantile(df)
    return float(stats.nct.sf(t, df, noncentrality) + stats.nct.cdf(-t, df, noncentrality))


def _seeds_needed(difference: float, variance: float, groups: int = 1) -> int | None:
    """The smallest n (per sweep) whose t-test has 80 % power for a true difference ``difference`` at spread
    ``variance``: paired (``groups`` 1: variance of the differences, df n − 1) or two sweeps of n seeds each
    (``groups`` 2: the sum of the two variances, df 2n − 2, Welch's with equal n). The noncentral t, not the normal
    approximation, which at a few seeds claims too few (d = 2: 2 seeds, whose power is 18 %; it needs 5)."""
    if difference == 0 or variance == 0:
        return None
    from scipy import stats

    z = stats.norm.ppf(0.5 + LEVEL / 2) + stats.norm.ppf(POWER)
    power = lambda k: _power(k, abs(difference) / math.sqrt(variance / k), groups * (k - 1))  # noqa: E731
    n = max(2, math.ceil(z * z * variance / difference ** 2))  # the normal approximation: a start near the answer
    if n > MANY_SEEDS:  # a difference next to nothing; the search (and scipy at such df) would take ages
        return MANY_SEEDS + 1
    while power(n) < POWER:
        n += 1
    while n > 2 and power(n - 1) >= POWER:
        n -= 1
    return n


def paired(metric: str, other: dict[str, float], reference: dict[str, float]) -> Difference:
    """The paired t-interval over the seeds both sweeps have (seed values as keys); a seed only one has is left out
    (and recorded)."""
    seeds = [s for s in reference if s in other]
    if not seeds:
        raise ValueError(f"{metric}: the sweeps share no seed; compare them unpaired")
    record = {"sizes": (len(other), len(reference)), "left_out": (tuple(s for s in other if s not in reference),
                                                                  tuple(s for s in reference if s not in other))}
    differences = [other[s] - reference[s] for s in seeds]
    n, mean = len(differences), statistics.fmean(differences)
    std = statistics.stdev(differences) if n > 1 else None
    if std is None:
        return Difference(metric, mean, None, -math.inf, math.inf, n, True, None, **record)
    se = std / math.sqrt(n)
    if _no_spread(se, mean):
        return Difference(metric, mean, std, mean, mean, n, True, None, se, n - 1, **record)
    half = _t_quantile(n - 1) * se
    return Difference(metric, mean, std, mean - half, mean + half, n, True, _seeds_needed(mean, std ** 2), se, n - 1,
                      **record)


def welch(metric: str, other: list[float], reference: list[float]) -> Difference:
    """Welch's t-interval (unequal variances, Welch–Satterthwaite degrees of freedom) for unpaired sweeps."""
    sizes = (len(other), len(reference))
    if len(other) < 2 or len(reference) < 2:
        mean = statistics.fmean(other) - statistics.fmean(reference)
        return Difference(metric, mean, None, -math.inf, math.inf, min(sizes), False, None, sizes=sizes)
    va, vb = statistics.variance(other) / len(other), statistics.variance(reference) / len(reference)
    mean = statistics.fmean(other) - statistics.fmean(reference)
    se = math.sqrt(va + vb)
    n = min(sizes)
    if _no_spread(se, mean):
        return Difference(metric, mean, None, mean, mean, n, False, None, se, None, sizes=sizes)
    df = (va + vb) ** 2 / (va ** 2 / (len(other) - 1) + vb ** 2 / (len(reference) - 1))
    low, high = mean - _t_quantile(df) * se, mean + _t_quantile(df) * se
    variance = statistics.variance(other) + statistics.variance(reference)  # per-sweep n for two groups
    return Difference(metric, mean, None, low, high, n, False, _seeds_needed(mean, variance, groups=2), se, df, sizes)


def holm(differences: list[Difference]) -> list[bool]:
    """Holm's step-down decisions at 1 − ``LEVEL`` over the family ``differences`` (familywise error ≤ 5 %): the
    k-th smallest p is compared with 5 % / (m − k + 1), stopping at the first that fails. In the given order."""
    alpha, m = 1 - LEVEL, len(differences)
    decided = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda j: differences[j].p_value)):
        if differences[i].no_spread or differences[i].p_value > alpha / (m - rank):
            break
        decided[i] = True
    return decided
