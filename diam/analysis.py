"""The numbers drawn from results trees: learning curves, AULC, verdicts, penalty matrices, table cells.

The paper's numbers, per AL iteration: the mean top-1 accuracy over the T target
models, with their standard deviation as the error bar. Per table cell: the mean over
the iterations of both. The std is the population std (ddof=0): it is what the
authors' table.py computes (np.std) for the published table.

With several seeds (SPEC section 9), the spread that matters is across seeds: the
curves are the mean over seeds of the T-model mean with a 95% confidence interval,
a cell is the area under the learning curve (AULC, the mean over iterations) with
its interval, and methods are compared round by round with paired t-tests. The tests
themselves are `diam/statistics.py`'s; the trees are read by `diam/results.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from diam import statistics
from diam.presets import PAPER_METHODS
from diam.results import ResultsTree
from diam.statistics import Estimate

# The method whose claim the verdicts test against every other method.
REFERENCE_METHOD = "DIAM"
# The method every other is drawn against in the paired-difference figure.
BASELINE_METHOD = "random"
# The analysis plan's family: DIAM against each other method of the paper, Holm-corrected
# together. A method outside it (DIAM_qp, a strategy added later) is compared beside the
# family, uncorrected and marked exploratory, and does not change the family's correction.
FAMILY_METHODS = PAPER_METHODS


@dataclass(frozen=True)
class LearningCurve:
    iterations: np.ndarray  # the al_iter values present, ascending
    mean_top1: np.ndarray  # per iteration: mean top-1 over the T models
    std_top1: np.ndarray  # per iteration: population std (ddof=0) across the T models


def learning_curve(per_iteration: dict[int, np.ndarray]) -> LearningCurve:
    iterations = np.array(sorted(per_iteration), dtype=int)
    top1 = np.stack([per_iteration[i][:, 0] for i in iterations])  # (iterations, T)
    return LearningCurve(iterations, top1.mean(axis=1), top1.std(axis=1, ddof=0))


# ------------------------------------------------------------- across seeds
@dataclass(frozen=True)
class SeedCurve:
    """A learning curve over seeds: per iteration, the seeds that reached it."""

    iterations: np.ndarray  # al_iter values reached by at least one seed, ascending
    estimates: tuple[Estimate, ...]  # per iteration: mean over seeds of the T-model mean top-1, 95% CI

    @property
    def mean_top1(self) -> np.ndarray:
        return np.array([estimate.mean for estimate in self.estimates])

    @property
    def half_widths(self) -> np.ndarray:
        """CI half-width per iteration; nan where fewer than 2 seeds reached it."""
        return np.array([np.nan if e.half_width is None else e.half_width for e in self.estimates])


def model_mean_top1(per_iteration: dict[int, np.ndarray], iteration: int) -> float:
    """The quantity the paper plots: mean top-1 accuracy over the T target models."""
    return float(per_iteration[iteration][:, 0].mean())


def seed_curve(per_seed: dict[int, dict[int, np.ndarray]]) -> SeedCurve:
    iterations = sorted({i for per_iteration in per_seed.values() for i in per_iteration})
    estimates = tuple(
        statistics.mean_with_ci(
            [model_mean_top1(per_iteration, i) for per_iteration in per_seed.values() if i in per_iteration]
        )
        for i in iterations
    )
    return SeedCurve(np.array(iterations, dtype=int), estimates)


def common_iterations(per_iteration_dicts) -> list[int]:
    """The al_iter values every one of the given runs reached."""
    sets = [set(per_iteration) for per_iteration in per_iteration_dicts]
    return sorted(set.intersection(*sets)) if sets else []


def seed_aulcs(per_seed: dict[int, dict[int, np.ndarray]], iterations) -> dict[int, float]:
    """Per seed: area under the learning curve, the mean over `iterations` of the T-model mean."""
    return {
        seed: float(np.mean([model_mean_top1(per_iteration, i) for i in iterations]))
        for seed, per_iteration in per_seed.items()
    }


@dataclass(frozen=True)
class PenaltyMatrix:
    """BADGE's pairwise penalty matrix for one (dataset, T), counted in labeling rounds."""

    model_num: int
    dataset: str
    methods: tuple[str, ...]
    rounds: tuple[int, ...]  # the al_iter values compared: iteration 0 (shared by all) excluded
    seeds: tuple[int, ...]
    wins: np.ndarray  # (methods, methods): rounds at which row method is significantly better than column
    tested: np.ndarray  # (methods, methods): rounds at which the pair shares >= MIN_SEEDS_TO_TEST seeds


def penalty_matrix(tree: ResultsTree, model_num: int, dataset: str, methods=None) -> PenaltyMatrix:
    methods = tuple(methods if methods is not None else tree.methods(model_num, dataset))
    rounds = tuple(tree.expected_iterations(dataset)[1:])
    seeds = tuple(tree.seeds(dataset))
    scores = np.full((len(methods), len(rounds), len(seeds)), np.nan)
    for m, method in enumerate(methods):
        for s, seed in enumerate(seeds):
            per_iteration = tree.runs.get((model_num, dataset, method), {}).get(seed, {})
            for r, round_ in enumerate(rounds):
                if round_ in per_iteration:
                    scores[m, r, s] = model_mean_top1(per_iteration, round_)
    wins, tested = statistics.penalty_matrix(scores)
    return PenaltyMatrix(model_num, dataset, methods, rounds, seeds, wins, tested)


@dataclass(frozen=True)
class Verdict:
    """REFERENCE_METHOD (DIAM) against one other method at one (dataset, T)."""

    method: str  # the method DIAM is compared with
    aulc_difference: Estimate  # DIAM's AULC minus the method's, paired by seed, with its 95% CI
    iterations: tuple[int, ...]  # the al_iter values both AULCs cover
    wins: int  # rounds at which DIAM is significantly better (paired t-test, p < 0.05, uncorrected)
    ties: int  # rounds tested with no significant difference
    losses: int  # rounds at which the method is significantly better than DIAM
    untested: int  # rounds with fewer than MIN_SEEDS_TO_TEST seeds in common: no test made
    # The same difference over al_iter >= 1 only. Iteration 0 is shared by every method of a seed,
    # so where it is, this is the AULC difference scaled by len(iterations) / (len(iterations) - 1).
    later_difference: Estimate | None = None
    p_value: float | None = None  # two-sided paired t-test of the AULCs; None: not tested
    p_holm: float | None = None  # Holm-adjusted within the family; None outside it or not tested
    in_family: bool = True  # False: an exploratory comparison, outside the analysis plan's family

    @property
    def tested(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def word(self) -> str:
        """The analysis plan's verdict: from the Holm-adjusted p in the family, the raw p outside it."""
        return statistics.verdict_word(self.aulc_difference, self.p_holm if self.in_family else self.p_value)


def paired_aulc_differences(first_runs, second_runs, iterations=None) -> dict[int, float]:
    """Per seed both have: first's AULC minus second's, over `iterations` (default: the al_iter
    values every one of those runs reached). Empty when they share no seed."""
    seeds = sorted(set(first_runs) & set(second_runs))
    if iterations is None:
        iterations = common_iterations([first_runs[s] for s in seeds] + [second_runs[s] for s in seeds])
    first = seed_aulcs({s: first_runs[s] for s in seeds}, iterations)
    second = seed_aulcs({s: second_runs[s] for s in seeds}, iterations)
    return {s: first[s] - second[s] for s in seeds}


def verdicts(tree: ResultsTree, model_num: int, dataset: str, methods=None) -> list[Verdict]:
    """DIAM against each other method; empty when DIAM has no results at (dataset, T).

    Each AULC difference is tested by a two-sided paired t-test across seeds (on the differences,
    as scipy's ttest_rel); the p-values of the family (FAMILY_METHODS) are Holm-adjusted together.
    """
    methods = tuple(methods if methods is not None else tree.methods(model_num, dataset))
    present = [m for m in methods if (model_num, dataset, m) in tree.runs]
    if REFERENCE_METHOD not in present:
        return []
    matrix = penalty_matrix(tree, model_num, dataset, present)
    reference = present.index(REFERENCE_METHOD)
    reference_runs = tree.runs[(model_num, dataset, REFERENCE_METHOD)]
    found = []
    for other, method in enumerate(present):
        if method == REFERENCE_METHOD:
            continue
        other_runs = tree.runs[(model_num, dataset, method)]
        paired_seeds = sorted(set(reference_runs) & set(other_runs))
        if not paired_seeds:
            continue
        iterations = common_iterations(
            [reference_runs[s] for s in paired_seeds] + [other_runs[s] for s in paired_seeds]
        )
        differences = list(paired_aulc_differences(reference_runs, other_runs, iterations).values())
        later = [i for i in iterations if i >= 1]
        later_differences = list(paired_aulc_differences(reference_runs, other_runs, later).values()) if later else None
        test = statistics.paired_test(differences, np.zeros(len(differences)))
        wins, losses = int(matrix.wins[reference, other]), int(matrix.wins[other, reference])
        tested = int(matrix.tested[reference, other])
        found.append(Verdict(
            method=method,
            aulc_difference=statistics.mean_with_ci(differences),
            iterations=tuple(iterations),
            wins=wins,
            ties=tested - wins - losses,
            losses=losses,
            untested=len(matrix.rounds) - tested,
            later_difference=statistics.mean_with_ci(later_differences) if later_differences else None,
            p_value=test.p_value,
            in_family=method in FAMILY_METHODS,
        ))
    family = [v for v in found if v.in_family]
    for verdict, adjusted in zip(family, statistics.holm_adjusted([v.p_value for v in family])):
        found[found.index(verdict)] = replace(verdict, p_holm=adjusted)
    return found


def chance_significant(matrix: PenaltyMatrix, alpha: float = statistics.ALPHA) -> tuple[int, float, int]:
    """(tests made, "significant" entries expected by chance alone if no method differed from
    any other, entries found): what reading a penalty matrix of uncorrected tests needs."""
    tests = int(np.triu(matrix.tested, 1).sum())
    return tests, tests * alpha, int(matrix.wins.sum())


# ------------------------------------------------------------- the regime and the paired curves
def iteration0_accuracy(tree: ResultsTree, model_num: int, dataset: str) -> tuple[Estimate, bool] | None:
    """The regime: iteration 0's mean top-1 over the T models, mean over seeds with its 95% CI
    (per seed, the mean over methods), and whether every method of a seed has the same value
    (iteration 0 is trained once and shared). None when no run has iteration 0."""
    per_seed: dict[int, list[float]] = {}
    for method in tree.methods(model_num, dataset):
        for seed, per_iteration in tree.runs[(model_num, dataset, method)].items():
            if 0 in per_iteration:
                per_seed.setdefault(seed, []).append(model_mean_top1(per_iteration, 0))
    if not per_seed:
        return None
    shared = all(max(values) - min(values) < 1e-9 for values in per_seed.values())
    # Shared: the seed's one value as it is (a mean of equal values can round differently in its last bit).
    per_seed_value = [values[0] if shared else float(np.mean(values)) for values in per_seed.values()]
    return statistics.mean_with_ci(per_seed_value), shared


@dataclass(frozen=True)
class DifferenceCurve:
    """first minus second per round (al_iter >= 1), paired by seed: the mean over the seeds both
    reached and its 95% CI (None at a round with fewer than 2 such seeds)."""

    first: str
    second: str
    rounds: tuple[int, ...]
    estimates: tuple[Estimate | None, ...]


def difference_curve(tree: ResultsTree, model_num: int, dataset: str, first: str, second: str) -> DifferenceCurve:
    first_runs = tree.runs.get((model_num, dataset, first), {})
    second_runs = tree.runs.get((model_num, dataset, second), {})
    rounds = tuple(tree.expected_iterations(dataset)[1:])
    estimates = []
    for round_ in rounds:
        differences = [model_mean_top1(first_runs[s], round_) - model_mean_top1(second_runs[s], round_)
                       for s in sorted(set(first_runs) & set(second_runs))
                       if round_ in first_runs[s] and round_ in second_runs[s]]
        estimates.append(statistics.mean_with_ci(differences) if differences else None)
    return DifferenceCurve(first, second, rounds, tuple(estimates))


# ------------------------------------------------------------- the table
@dataclass(frozen=True)
class TableCell:
    mean: float  # mean over iterations of the across-model mean top-1 (and of the seed-mean)
    std: float  # mean over iterations of the across-model std (and over seeds)
    iterations_used: int
    iterations_expected: int
    best: bool  # highest mean of its column among the complete cells
    seeds_used: int = 1
    seeds_expected: int = 1
    # with several seeds: the AULC across seeds, whose mean is `mean` and whose 95% CI is the spread
    aulc: Estimate | None = None

    @property
    def complete(self) -> bool:
        return self.iterations_used == self.iterations_expected and self.seeds_used == self.seeds_expected


@dataclass(frozen=True)
class DatasetTable:
    dataset: str
    model_nums: tuple[int, ...]
    methods: tuple[str, ...]
    cells: dict[tuple[str, int], TableCell]  # (method, T); absent where there are no results


def table_cell_values(curve: LearningCurve) -> tuple[float, float]:
    return float(curve.mean_top1.mean()), float(curve.std_top1.mean())


def _single_seed_cell(per_iteration: dict[int, np.ndarray], expected: int) -> dict:
    mean, std = table_cell_values(learning_curve(per_iteration))
    return dict(mean=mean, std=std, iterations_used=len(per_iteration), iterations_expected=expected)


def _several_seeds_cell(per_seed: dict[int, dict[int, np.ndarray]], expected: int, seeds_expected: int) -> dict:
    """Over the iterations every seed of the run reached, so the seeds' AULCs are comparable."""
    iterations = common_iterations(per_seed.values())
    aulc = statistics.mean_with_ci(list(seed_aulcs(per_seed, iterations).values()))
    std = float(np.mean([
        per_iteration[i][:, 0].std(ddof=0) for per_iteration in per_seed.values() for i in iterations
    ]))
    return dict(mean=aulc.mean, std=std, iterations_used=len(iterations), iterations_expected=expected,
                seeds_used=len(per_seed), seeds_expected=seeds_expected, aulc=aulc)


def dataset_table(tree: ResultsTree, dataset: str, model_nums, methods) -> DatasetTable:
    """The paper's table for one dataset: rows methods, columns T.

    A cell missing some iterations (or, in a tree of several seeds, some seeds) is
    still computed over those it has, but cannot be best: its mean covers different
    (usually earlier, lower) iterations or fewer repeats than the others', so
    comparing it would mislead. With several seeds a cell is the mean over seeds of
    the AULC, which is the mean over iterations of the seed-mean curve.
    """
    expected = len(tree.expected_iterations(dataset)) if dataset in tree.datasets() else 0
    several_seeds = tree.has_several_seeds
    cells: dict[tuple[str, int], TableCell] = {}
    for model_num in model_nums:
        column: dict[str, TableCell] = {}
        for method in methods:
            per_seed = tree.runs.get((model_num, dataset, method))
            if not per_seed:
                continue
            if several_seeds:
                fields = _several_seeds_cell(per_seed, expected, len(tree.seeds(dataset)))
            else:
                fields = _single_seed_cell(next(iter(per_seed.values())), expected)
            column[method] = TableCell(best=False, **fields)
        best_mean = max((cell.mean for cell in column.values() if cell.complete), default=None)
        for method, cell in column.items():
            cells[(method, model_num)] = replace(cell, best=cell.complete and cell.mean == best_mean)
    return DatasetTable(dataset, tuple(model_nums), tuple(methods), cells)
