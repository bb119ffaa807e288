"""Results trees: reading them and the paper's summary numbers.

A results tree is laid out as `<root>/<T>/<dataset>/<method>/<al_iter>/performances.txt`,
each file holding T rows of "top1 top5" test accuracy in percent, one row per target
model in net_id order. This module is the one place that reads that layout.

The paper's numbers, per AL iteration: the mean top-1 accuracy over the T target
models, with their standard deviation as the error bar. Per table cell: the mean over
the iterations of both. The std is the population std (ddof=0): it is what the
authors' table.py computes (np.std) for the published table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diam.errors import UserError
from diam.paths import PAPER_MARKER as PAPER_RESULTS_MARKER

PERFORMANCES_FILE = "performances.txt"

# The order in which the original scripts run the methods.
PAPER_METHODS = ("random", "least_conf", "margin", "entropy", "coreset", "CAL", "DIAM")
# The order of the paper's figure legend and of its table rows: DIAM first.
DISPLAY_ORDER = ("DIAM", "CAL", "entropy", "margin", "least_conf", "coreset", "random")
METHOD_DISPLAY_NAMES = {
    "DIAM": "DIAM",
    "CAL": "CAL",
    "entropy": "Entropy",
    "margin": "Margin",
    "least_conf": "Least conf.",
    "coreset": "Coreset",
    "random": "Random",
}
PAPER_DATASETS = ("mnist", "kmnist")
DATASET_DISPLAY_NAMES = {
    "mnist": "MNIST",
    "kmnist": "Kuzushiji-MNIST",
    "fmnist": "Fashion-MNIST",
    "emnistlet": "EMNIST letters",
    "emnistdig": "EMNIST digits",
}
PAPER_MODEL_NUMS = (2, 4, 6, 8, 12)
PAPER_QUERY_BATCH = 1500

RunKey = tuple[int, str, str]  # (number of target models T, dataset, method)


def method_display_name(method: str) -> str:
    return METHOD_DISPLAY_NAMES.get(method, method)


def dataset_display_name(dataset: str) -> str:
    return DATASET_DISPLAY_NAMES.get(dataset, dataset)


def in_display_order(methods) -> list[str]:
    """The paper's methods in the paper's order, then any others by name."""
    rank = {method: position for position, method in enumerate(DISPLAY_ORDER)}
    return sorted(set(methods), key=lambda m: (rank.get(m, len(rank)), m))


def in_dataset_order(datasets) -> list[str]:
    """The paper's datasets first (MNIST, then KMNIST), then any others by name."""
    rank = {dataset: position for position, dataset in enumerate(PAPER_DATASETS)}
    return sorted(set(datasets), key=lambda d: (rank.get(d, len(rank)), d))


@dataclass
class ResultsTree:
    root: Path
    # (T, dataset, method) -> {al_iter: array (T, 2) of top-1, top-5 in percent}
    accuracies: dict[RunKey, dict[int, np.ndarray]]
    # files under root that look like results but could not be used, each with why
    skipped: list[str]

    @property
    def is_paper(self) -> bool:
        return (self.root / PAPER_RESULTS_MARKER).exists()

    def model_nums(self) -> list[int]:
        return sorted({model_num for model_num, _, _ in self.accuracies})

    def datasets(self, model_num: int | None = None) -> list[str]:
        return in_dataset_order(
            dataset for t, dataset, _ in self.accuracies if model_num in (None, t)
        )

    def methods(self, model_num: int | None = None, dataset: str | None = None) -> list[str]:
        return in_display_order(
            method
            for t, d, method in self.accuracies
            if model_num in (None, t) and dataset in (None, d)
        )

    def expected_iterations(self, dataset: str) -> list[int]:
        """al_iter 0 up to the last one found for this dataset anywhere in the tree.

        A run stopped early, or a method lagging behind the others, then shows as
        missing iterations, while a tree run with fewer iterations than the paper's
        11 is not reported as incomplete everywhere.
        """
        last = max(
            iteration
            for (_, d, _), per_iteration in self.accuracies.items()
            if d == dataset
            for iteration in per_iteration
        )
        return list(range(last + 1))


def read_performances(path: Path, model_num: int) -> np.ndarray:
    """One performances.txt as an array (T, 2); ValueError saying what is wrong."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) != model_num:
        raise ValueError(
            f"{len(rows)} rows, but T={model_num} target models need {model_num}"
            " (one 'top1 top5' row per model)"
        )
    if any(len(row) != 2 for row in rows):
        raise ValueError("every row must hold two numbers, 'top1 top5'")
    try:
        accuracies = np.array(rows, dtype=float)
    except ValueError:
        raise ValueError("holds something that is not a number") from None
    if not np.all((accuracies >= 0) & (accuracies <= 100)):
        raise ValueError("accuracies must be percentages between 0 and 100")
    return accuracies


def load_results(root) -> ResultsTree:
    root = Path(root)
    layout = f"<T>/<dataset>/<method>/<al_iter>/{PERFORMANCES_FILE}"
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UserError(
            f"the results folder {root} {what}. Give a folder laid out as {layout}, such"
            " as the one the training scripts write, or leave the option out to use the"
            " paper's numbers shipped in extracted_results/."
        )
    accuracies: dict[RunKey, dict[int, np.ndarray]] = {}
    skipped: list[str] = []
    for path in sorted(root.glob(f"*/*/*/*/{PERFORMANCES_FILE}")):
        model_num_name, dataset, method, iteration_name = path.relative_to(root).parts[:4]
        if not (model_num_name.isdigit() and iteration_name.isdigit()) or int(model_num_name) == 0:
            skipped.append(f"{path}: the T and al_iter folder names must be whole numbers, T >= 1")
            continue
        try:
            run_accuracies = read_performances(path, int(model_num_name))
        except (ValueError, OSError, UnicodeDecodeError) as err:
            skipped.append(f"{path}: {err}")
            continue
        key = (int(model_num_name), dataset, method)
        accuracies.setdefault(key, {})[int(iteration_name)] = run_accuracies
    if not accuracies:
        detail = f" ({len(skipped)} such files could not be read: {skipped[0]})" if skipped else ""
        raise UserError(
            f"the folder {root} holds no results: no readable {layout} files were found"
            f" under it{detail}. Point --results at the folder the runs wrote, the one"
            " holding the <T> folders."
        )
    return ResultsTree(root=root, accuracies=accuracies, skipped=skipped)


@dataclass(frozen=True)
class LearningCurve:
    iterations: np.ndarray  # the al_iter values present, ascending
    mean_top1: np.ndarray  # per iteration: mean top-1 over the T models
    std_top1: np.ndarray  # per iteration: population std (ddof=0) across the T models


def learning_curve(per_iteration: dict[int, np.ndarray]) -> LearningCurve:
    iterations = np.array(sorted(per_iteration), dtype=int)
    top1 = np.stack([per_iteration[i][:, 0] for i in iterations])  # (iterations, T)
    return LearningCurve(iterations, top1.mean(axis=1), top1.std(axis=1, ddof=0))


@dataclass(frozen=True)
class TableCell:
    mean: float  # mean over iterations of the across-model mean top-1
    std: float  # mean over iterations of the across-model std
    iterations_used: int
    iterations_expected: int
    best: bool  # highest mean of its column among the complete cells

    @property
    def complete(self) -> bool:
        return self.iterations_used == self.iterations_expected


@dataclass(frozen=True)
class DatasetTable:
    dataset: str
    model_nums: tuple[int, ...]
    methods: tuple[str, ...]
    cells: dict[tuple[str, int], TableCell]  # (method, T); absent where there are no results


def table_cell_values(curve: LearningCurve) -> tuple[float, float]:
    return float(curve.mean_top1.mean()), float(curve.std_top1.mean())


def dataset_table(tree: ResultsTree, dataset: str, model_nums, methods) -> DatasetTable:
    """The paper's table for one dataset: rows methods, columns T.

    A cell missing some iterations is still computed over those it has, but cannot
    be best: its mean covers different (usually earlier, lower) iterations than the
    others', so comparing it would mislead.
    """
    expected = len(tree.expected_iterations(dataset)) if dataset in tree.datasets() else 0
    cells: dict[tuple[str, int], TableCell] = {}
    for model_num in model_nums:
        column = {}
        for method in methods:
            per_iteration = tree.accuracies.get((model_num, dataset, method))
            if per_iteration:
                column[method] = (table_cell_values(learning_curve(per_iteration)), len(per_iteration))
        complete_means = [mean for (mean, _), used in column.values() if used == expected]
        best_mean = max(complete_means, default=None)
        for method, ((mean, std), used) in column.items():
            cells[(method, model_num)] = TableCell(
                mean=mean,
                std=std,
                iterations_used=used,
                iterations_expected=expected,
                best=used == expected and mean == best_mean,
            )
    return DatasetTable(dataset, tuple(model_nums), tuple(methods), cells)


def _as_ranges(numbers) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    numbers = sorted(numbers)
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def missing_parts(tree: ResultsTree, model_nums, datasets, methods) -> list[str]:
    """One line per missing part of the tree, largest parts first, then skipped files."""
    lines = []
    absent_model_nums = [t for t in model_nums if t not in tree.model_nums()]
    if absent_model_nums:
        lines.append(f"no results at all for T={', '.join(map(str, absent_model_nums))}")
    for model_num in model_nums:
        if model_num in absent_model_nums:
            continue
        for dataset in datasets:
            if dataset not in tree.datasets(model_num):
                lines.append(f"T={model_num}: no results for dataset {dataset}")
                continue
            expected = set(tree.expected_iterations(dataset))
            present = tree.methods(model_num, dataset)
            absent_methods = [m for m in methods if m not in present]
            if absent_methods:
                lines.append(f"T={model_num} {dataset}: no results for {', '.join(absent_methods)}")
            for method in methods:
                per_iteration = tree.accuracies.get((model_num, dataset, method))
                if per_iteration and expected - set(per_iteration):
                    lines.append(
                        f"T={model_num} {dataset} {method}: al_iter"
                        f" {_as_ranges(expected - set(per_iteration))} missing"
                        f" (expected {_as_ranges(expected)})"
                    )
    lines.extend(f"skipped {reason}" for reason in tree.skipped)
    return lines
