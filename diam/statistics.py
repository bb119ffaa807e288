"""Statistics over repeated trials (seeds): confidence intervals, paired tests, Holm's correction.

Pure functions over arrays; `diam/analysis.py` feeds them from results trees. The
distributions come from scipy.stats. SPEC section 9: several repeats, a 95%
confidence interval across them, and BADGE's pairwise penalty matrix (Ash et al.,
ICLR 2020): at each labeling round, a two-sided paired t-test across repeats between
every pair of methods. The reproduction's analysis plan (REPRODUCTION.md) adds Holm's
correction over a family of comparisons and the words a verdict may use.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Significance level of the paired tests and coverage of the confidence intervals.
ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
# A pair needs this many seeds in common to be tested: with two, the t distribution has one
# degree of freedom and its p-values say little (the analysis plan's rule).
MIN_SEEDS_TO_TEST = 3
# The smallest difference of AULC, in accuracy points, that the analysis plan cares about: a
# difference whose whole 95% CI lies inside +-SMALLEST_EFFECT is "within" it.
SMALLEST_EFFECT = 0.5


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its confidence interval (Student t, n - 1 degrees of freedom)."""

    mean: float
    n: int  # number of seeds
    half_width: float | None  # CI half-width; None with fewer than 2 seeds (no spread to measure)

    @property
    def has_ci(self) -> bool:
        return self.half_width is not None

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def mean_with_ci(values, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of `values` (one per seed) and the half-width of its t confidence interval."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("mean_with_ci needs a non-empty 1-d array, one value per seed")
    mean = float(values.mean())
    if values.size < 2:
        return Estimate(mean, 1, None)
    t_quantile = stats.t.ppf((1 + confidence) / 2, df=values.size - 1)
    # sem with ddof=1; zero spread gives a zero-width interval, not nan
    return Estimate(mean, int(values.size), float(t_quantile * stats.sem(values)))


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired t-test of `first` against `second`, paired by seed."""

    n: int  # number of seeds both have
    mean_difference: float  # mean over seeds of first - second
    p_value: float | None  # None when untestable (fewer than MIN_SEEDS_TO_TEST pairs) or all differences are zero

    @property
    def testable(self) -> bool:
        return self.n >= MIN_SEEDS_TO_TEST

    def outcome(self, alpha: float = ALPHA) -> int:
        """+1: first significantly better; -1: second significantly better; 0: neither."""
        if self.p_value is None or self.p_value >= alpha:
            return 0
        return 1 if self.mean_difference > 0 else -1


def paired_test(first, second) -> PairedTest:
    """scipy.stats.ttest_rel on the seeds both arrays have (nan marks a missing seed).

    Zero variance of the differences: when the differences are the same for every
    seed, ttest_rel's t is +-inf (p = 0) if they are non-zero and nan (0/0) if they
    are all zero. We follow BADGE's convention (Ash et al. 2020), where a method is
    penalised when its t-score exceeds the threshold: a constant non-zero difference
    is significant (p = 0, as scipy says), and all-zero differences are a tie
    (p_value None: nothing to test, neither method is better).
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    both = ~(np.isnan(first) | np.isnan(second))
    first, second = first[both], second[both]
    n = int(both.sum())
    if n == 0:
        return PairedTest(0, float("nan"), None)
    mean_difference = float(np.mean(first - second))
    if n < MIN_SEEDS_TO_TEST:
        return PairedTest(n, mean_difference, None)
    with warnings.catch_warnings():
        # "catastrophic cancellation" when differences are nearly equal: scipy then
        # returns t = +-inf, which is the convention above.
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_rel(first, second).pvalue)
    return PairedTest(n, mean_difference, None if np.isnan(p_value) else p_value)


def penalty_matrix(scores, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's pairwise penalty matrix, counted in labeling rounds.

    scores: array (methods, rounds, seeds) of accuracies, nan where a seed is missing.
    Returns (wins, tested), both (methods, methods) integer arrays: wins[i, j] = number
    of rounds at which method i is significantly better than method j by a two-sided
    paired t-test across seeds (p < alpha, higher mean); tested[i, j] = number of
    rounds at which the two methods share at least MIN_SEEDS_TO_TEST (3) seeds, so a test
    was made (with fewer, paired_test makes none).
    The diagonal is zero.
    """
    scores = np.asarray(scores, dtype=float)
    n_methods, n_rounds, _ = scores.shape
    wins = np.zeros((n_methods, n_methods), dtype=int)
    tested = np.zeros((n_methods, n_methods), dtype=int)
    for i in range(n_methods):
        for j in range(i + 1, n_methods):
            for round_ in range(n_rounds):
                test = paired_test(scores[i, round_], scores[j, round_])
                if not test.testable:
                    continue
                tested[i, j] += 1
                tested[j, i] += 1
                outcome = test.outcome(alpha)
                if outcome > 0:
                    wins[i, j] += 1
                elif outcome < 0:
                    wins[j, i] += 1
    return wins, tested


def holm_adjusted(p_values) -> list[float | None]:
    """Holm's step-down adjustment of a family's p-values, in the order given (None: not
    tested, left out of the family). The k-th smallest of m p-values becomes
    min(1, max over j <= k of (m - j + 1) p_(j)); rejecting where it is below alpha holds
    the chance of any false rejection in the family at alpha, whatever their dependence."""
    tested = [(p, position) for position, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, position) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[position] = running
    return adjusted


def expected_half_width(sd: float, seeds: int, confidence: float = CONFIDENCE) -> float:
    """The 95% CI half-width of a mean of `seeds` paired differences whose sd is `sd`: what a
    planned seed count buys if the spread seen so far holds."""
    return float(stats.t.ppf((1 + confidence) / 2, df=seeds - 1) * sd / np.sqrt(seeds))


def seeds_for_power(sd: float, effect: float, power: float = 0.8, alpha: float = ALPHA,
                    most: int = 1000) -> int | None:
    """The fewest seeds at which a two-sided paired t-test at `alpha` finds a true mean difference
    of `effect` with probability `power`, when the differences have sd `sd` (the t statistic is
    then noncentral t with n - 1 degrees of freedom and noncentrality effect / sd * sqrt(n)).
    None when even `most` seeds would not do."""
    for seeds in range(MIN_SEEDS_TO_TEST, most + 1):
        df, shift = seeds - 1, effect / sd * np.sqrt(seeds)
        critical = stats.t.ppf(1 - alpha / 2, df)
        if stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift) >= power:
            return seeds
    return None


def verdict_word(difference: Estimate, p_value: float | None, alpha: float = ALPHA,
                 margin: float = SMALLEST_EFFECT) -> str:
    """What the analysis plan lets one say of a paired difference (first minus second), from its
    (adjusted) p-value and 95% CI: "leads", "trails" (with "by less than <margin>" when the whole
    CI is inside the margin), "within <margin>", "not resolved", or "not tested"."""
    if difference.n < MIN_SEEDS_TO_TEST:
        return "not tested"
    if p_value is not None and p_value < alpha:  # None with enough seeds: every difference is 0
        word = "leads" if difference.mean > 0 else "trails"
        inside = -margin < difference.low and difference.high < margin
        return f"{word} by less than {margin:g}" if inside else word
    if -margin <= difference.low and difference.high <= margin:
        return f"within {margin:g}"
    return "not resolved"
