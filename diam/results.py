"""Results trees on disk: reading them, what they hold and what they miss, and how they are named.

A results tree is laid out as `<root>/<T>/<dataset>/<method>/<al_iter>/performances.txt`,
each file holding T rows of "top1 top5" test accuracy in percent, one row per target
model in net_id order. Those are seed 0's results; a repeat with seed S >= 1 is the
same layout under `<root>/seed<S>/`. This module is the one place that reads it; the
numbers drawn from a tree (curves, AULC, verdicts, table cells) are `diam/analysis.py`'s.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diam.datasets import display_name as dataset_display_name  # noqa: F401  (the registries' names in tables)
from diam.errors import UserError
from diam.methods import display_name as method_display_name  # noqa: F401
from diam.paths import PAPER_MARKER as PAPER_RESULTS_MARKER
from diam.paths import seed_folder
from diam.presets import PAPER_DATASETS

PERFORMANCES_FILE = "performances.txt"
MODELS_FILE = "models.json"  # beside performances.txt: per net, its labeled-set size among others
# How a folder name written by diam.paths.seed_folder(S), S >= 1, is read back; seed 0 is the top.
SEED_FOLDER = re.compile(r"seed([1-9][0-9]*)")

# The order of the paper's figure legend and of its table rows: DIAM first.
DISPLAY_ORDER = ("DIAM", "CAL", "entropy", "margin", "least_conf", "coreset", "random")
PAPER_QUERY_BATCH = 1500
# The paper's own numbers, shipped with the project: the tree table.py and plot.py read by default.
PAPER_RESULTS_DIR = Path(__file__).resolve().parents[1] / "extracted_results"

RunKey = tuple[int, str, str]  # (number of target models T, dataset, method)


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
    # (T, dataset, method) -> {seed: {al_iter: array (T, 2) of top-1, top-5 in percent}}
    runs: dict[RunKey, dict[int, dict[int, np.ndarray]]]
    # files under root that look like results but could not be used, each with why
    skipped: list[str]

    @property
    def is_paper(self) -> bool:
        return (self.root / PAPER_RESULTS_MARKER).exists()

    def seeds(self, dataset: str | None = None) -> list[int]:
        """The seeds with runs (of this dataset, when given): a dataset planned with fewer
        repeats than another in the same tree is not short of the other's seeds."""
        return sorted({seed for (_, d, _), per_seed in self.runs.items() if dataset in (None, d)
                       for seed in per_seed})

    @property
    def has_several_seeds(self) -> bool:
        return len(self.seeds()) > 1

    def seed_root(self, seed: int) -> Path:
        return self.root / seed_folder(seed)

    @property
    def accuracies(self) -> dict[RunKey, dict[int, np.ndarray]]:
        """(T, dataset, method) -> {al_iter: array (T, 2)} of a tree holding one seed."""
        if self.has_several_seeds:
            raise ValueError(f"{self.root} holds seeds {self.seeds()}: read tree.runs, per seed")
        return {key: next(iter(per_seed.values())) for key, per_seed in self.runs.items()}

    def model_nums(self) -> list[int]:
        return sorted({model_num for model_num, _, _ in self.runs})

    def datasets(self, model_num: int | None = None) -> list[str]:
        return in_dataset_order(
            dataset for t, dataset, _ in self.runs if model_num in (None, t)
        )

    def holds_any(self, datasets, model_num: int | None = None) -> bool:
        """Whether the tree has runs of any of these datasets (at T = model_num, or at any T)."""
        return bool(set(datasets) & set(self.datasets(model_num)))

    def methods(self, model_num: int | None = None, dataset: str | None = None) -> list[str]:
        return in_display_order(
            method
            for t, d, method in self.runs
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
            for (_, d, _), per_seed in self.runs.items()
            if d == dataset
            for per_iteration in per_seed.values()
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


def _seed_roots(root: Path, skipped: list[str]) -> list[tuple[int, Path]]:
    """(seed, folder holding that seed's <T> folders): the top for seed 0, then seed<S>/."""
    seed_roots = [(0, root)]
    for child in sorted(root.iterdir()):
        match = SEED_FOLDER.fullmatch(child.name)
        if match and child.is_dir():
            seed_roots.append((int(match.group(1)), child))
        elif re.fullmatch(r"seed[0-9]+", child.name):
            skipped.append(f"{child}: not read; seed 0's results live at the top of the tree and"
                           " seed S >= 1's in seed<S>/, written without leading zeros")
    return sorted(seed_roots)


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
    runs: dict[RunKey, dict[int, dict[int, np.ndarray]]] = {}
    skipped: list[str] = []
    for seed, seed_root in _seed_roots(root, skipped):
        for path in sorted(seed_root.glob(f"*/*/*/*/{PERFORMANCES_FILE}")):
            model_num_name, dataset, method, iteration_name = path.relative_to(seed_root).parts[:4]
            if seed == 0 and SEED_FOLDER.fullmatch(model_num_name):
                skipped.append(f"{path}: a seed folder holds <T>/<dataset>/<method>/<al_iter>/ inside it")
                continue
            if not (model_num_name.isdigit() and iteration_name.isdigit()) or int(model_num_name) == 0:
                skipped.append(f"{path}: the T and al_iter folder names must be whole numbers, T >= 1")
                continue
            try:
                run_accuracies = read_performances(path, int(model_num_name))
            except (ValueError, OSError, UnicodeDecodeError) as err:
                skipped.append(f"{path}: {err}")
                continue
            key = (int(model_num_name), dataset, method)
            runs.setdefault(key, {}).setdefault(seed, {})[int(iteration_name)] = run_accuracies
    if not runs:
        detail = f" ({len(skipped)} such files could not be read: {skipped[0]})" if skipped else ""
        raise UserError(
            f"the folder {root} holds no results: no readable {layout} files were found"
            f" under it (nor under seed<S>/ folders in it){detail}. Point --results at the"
            " folder the runs wrote, the one holding the <T> folders."
        )
    return ResultsTree(root=root, runs=runs, skipped=skipped)


def add_results_argument(parser) -> None:
    """--results, the tree table.py and plot.py read (default: the paper's)."""
    parser.add_argument(
        "--results", type=Path, default=PAPER_RESULTS_DIR, metavar="DIR",
        help="results tree <T>/<dataset>/<method>/<al_iter>/performances.txt (default: the paper's, extracted_results/)",
    )


def add_interim_argument(parser, withheld: str) -> None:
    """--interim [CELL ...]: the cells (a tree's dataset) whose `withheld` waits for an analysis plan's seeds."""
    parser.add_argument(
        "--interim", nargs="*", metavar="CELL",
        help=f"withhold {withheld} ('interim'): an analysis plan fixed the seeds and they have not all run; "
             "the differences, CIs and p-values are still printed. Alone, for every cell; followed by cells, "
             "for those only, each DATASET (in every tree) or TREE/DATASET in a folder of trees (corrected/digits)",
    )


def interim_cells(names: list[str] | None, parts: Iterable[tuple[str, ResultsTree]]) -> set[tuple[str, str]]:
    """The (tree label, dataset) cells an --interim list names: none for None, all for []. A name
    that matches no cell is refused: a typo must not release a verdict the plan withholds."""
    cells = {(label, dataset) for label, tree in parts for dataset in tree.datasets()}
    if names is None:
        return set()
    if not names:
        return cells
    chosen = set()
    for name in names:
        label, _, dataset = name.rpartition("/")
        matched = {(l, d) for l, d in cells if d == dataset and (not label or l == label)}
        if not matched:
            there = ", ".join(f"{l}/{d}" if l else d for l, d in sorted(cells))
            raise UserError(f"--interim names '{name}', which is no cell of these results; they hold {there}. "
                            "Name cells as DATASET or TREE/DATASET, or give --interim alone for all of them.")
        chosen |= matched
    return chosen


def load_result_parts(root) -> list[tuple[str, ResultsTree]]:
    """A results tree as [("", tree)]; or, for a folder of trees side by side, [(name, tree), ...].

    The second form holds runs that must not share a tree, such as the corrected and the
    original-quirks runs of one dataset (reproduction/extracted_results/{corrected,original}/):
    a folder that holds no results of its own, whose subfolders each are a results tree.
    """
    root = Path(root)
    try:
        return [("", load_results(root))]
    except UserError:
        if not root.is_dir():
            raise
        parts = []
        for child in sorted(c for c in root.iterdir() if c.is_dir()):
            try:
                parts.append((child.name, load_results(child)))
            except UserError:
                continue
        if not parts:
            raise
        return parts


def recorded_query_batch(tree: ResultsTree, model_num: int, dataset: str) -> int | None:
    """Examples queried per AL iteration, as the runs recorded it; None where they did not.

    The labeled-set size recorded in models.json at al_iter 1 minus that at al_iter 0,
    from the first run of (T, dataset) that has both (the paper's tree has none).
    """
    for (t, d, method), per_seed in sorted(tree.runs.items()):
        if (t, d) != (model_num, dataset):
            continue
        for seed, per_iteration in sorted(per_seed.items()):
            if 0 in per_iteration and 1 in per_iteration:
                folder = tree.seed_root(seed) / str(t) / d / method
                sizes = [_recorded_labeled_size(folder / str(i) / MODELS_FILE) for i in (0, 1)]
                if None not in sizes and sizes[1] > sizes[0]:
                    return sizes[1] - sizes[0]
    return None


def _recorded_labeled_size(path: Path) -> int | None:
    try:
        sizes = {int(net["n_labeled"]) for net in json.loads(path.read_text())}
    except (OSError, ValueError, TypeError, KeyError):
        return None  # not recorded, or not readable: the caller falls back to a default
    return sizes.pop() if len(sizes) == 1 else None


def as_ranges(numbers) -> str:
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
            all_seeds = tree.seeds(dataset)
            present = tree.methods(model_num, dataset)
            absent_methods = [m for m in methods if m not in present]
            if absent_methods:
                lines.append(f"T={model_num} {dataset}: no results for {', '.join(absent_methods)}")
            for method in methods:
                per_seed = tree.runs.get((model_num, dataset, method))
                if not per_seed:
                    continue
                absent_seeds = [seed for seed in all_seeds if seed not in per_seed]
                if absent_seeds:
                    lines.append(
                        f"T={model_num} {dataset} {method}: seed {as_ranges(absent_seeds)} missing"
                        f" (the tree holds seeds {as_ranges(all_seeds)})"
                    )
                for seed, per_iteration in sorted(per_seed.items()):
                    if expected - set(per_iteration):
                        which = f" seed {seed}" if len(all_seeds) > 1 else ""
                        lines.append(
                            f"T={model_num} {dataset} {method}{which}: al_iter"
                            f" {as_ranges(expected - set(per_iteration))} missing"
                            f" (expected {as_ranges(expected)})"
                        )
    lines.extend(f"skipped {reason}" for reason in tree.skipped)
    return lines
