"""Learning curves: mean top-1 accuracy of the T target models vs number of queried examples.

With no arguments it redraws the paper's figure (T=12, MNIST and Kuzushiji-MNIST) from
the paper's own numbers shipped in extracted_results/. Error bars: std across the T
models. --compare DIR adds a second row drawn from DIR (e.g. our runs) under the first.
A folder of trees side by side (e.g. reproduction/extracted_results/{corrected,original}/)
draws one row per tree; --each_dataset writes one figure per dataset, PREFIX_<dataset>,
whose rows are the trees that hold it.

A tree holding several seeds (seed<S>/ folders beside seed 0's <T> folders) is drawn as
the mean over seeds with a band for the 95% confidence interval across seeds, and
BADGE's pairwise penalty matrix is drawn beside it in PREFIX_penalty.png and .pdf.
Bands of two methods overlap even where their difference, paired by seed, is clear;
so the paired differences per round are drawn too, in PREFIX_differences.png and .pdf:
each method minus random, and DIAM minus each other method, with their paired 95% CIs.
"""
import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # writes files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diam import analysis, presets, results  # noqa: E402
from diam.errors import UserError, run_cli  # noqa: E402
from diam.paths import atomic_write, refuse_paper_results  # noqa: E402
from diam.statistics import ALPHA  # noqa: E402

HERE = Path(__file__).resolve().parent

# The paper's figure: DIAM solid, thick and red; the baselines thin and dashed.
METHOD_STYLES = {
    "DIAM": dict(color="#F71E35", linestyle="-", linewidth=2.8, marker="D"),
    "DIAM_qp": dict(color="#9467BD", linestyle="-", linewidth=2.0, marker="s"),
    "CAL": dict(color="#274C5E", linestyle="--", linewidth=1.5, marker="^"),
    "entropy": dict(color="#0080FF", linestyle="--", linewidth=1.5, marker="^"),
    "margin": dict(color="#BF209F", linestyle="--", linewidth=1.5, marker="^"),
    "least_conf": dict(color="#79BD9A", linestyle="--", linewidth=1.5, marker="o"),
    "coreset": dict(color="gray", linestyle="--", linewidth=1.3, marker="^"),
    "random": dict(color="black", linestyle="--", linewidth=1.3, marker="^"),
}
EXTRA_METHOD_COLORS = ("#679B00", "#E08A00", "#8C564B", "#17BECF")
# The paper's y-limits, read off its figure; used only when every mean fits inside.
PAPER_Y_LIMITS = {"mnist": (90.0, 99.5), "kmnist": (59.0, 97.0)}
# The paper's font sizes (one 6.4 x 4.8 inch figure per dataset).
PAPER_RC = {"axes.labelsize": 20, "xtick.labelsize": 14, "ytick.labelsize": 14, "legend.fontsize": 14}
PANEL_SIZE = (6.4, 4.8)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    results.add_results_argument(parser)
    parser.add_argument(
        "--compare", type=Path, metavar="DIR",
        help="a second results tree (e.g. ours), drawn as a second row under --results",
    )
    parser.add_argument(
        "--each_dataset", action="store_true",
        help="one figure per dataset, PREFIX_<dataset>.png/.pdf, instead of one column per dataset",
    )
    parser.add_argument("--model_num", type=int, default=12, help="number of target models T (default 12)")
    parser.add_argument("--datasets", nargs="+", help="datasets to draw, one column each (default: all found)")
    parser.add_argument(
        "--query_batch", type=int,
        help="examples queried per AL iteration, for the x axis of trees other than the paper's;"
        " the paper's numbers always use its 1500 (default: the labeled-set sizes the runs recorded"
        " in models.json, else 1500)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="PREFIX",
        help="output path without extension; PREFIX.png and PREFIX.pdf are written (default: assets/lc for"
        " the paper's own results, the README's figure; else lc beside the results folder drawn, DIR/../lc)",
    )
    args = parser.parse_args()
    if args.model_num < 1 or (args.query_batch is not None and args.query_batch < 1):
        raise UserError("--model_num and --query_batch must be positive whole numbers.")
    return args


def method_style(method: str, extra_index: int) -> dict:
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    return dict(
        color=EXTRA_METHOD_COLORS[extra_index % len(EXTRA_METHOD_COLORS)],
        linestyle="-.", linewidth=1.7, marker="s",
    )


def tree_label(tree: results.ResultsTree) -> str:
    return "paper" if tree.is_paper else f"ours ({tree.root})"


def panel_query_batch(tree, model_num: int, dataset: str, requested: int | None) -> int:
    """The x axis's step: the paper's 1500 for its tree, else the flag, else what the runs recorded."""
    if tree.is_paper:
        return results.PAPER_QUERY_BATCH
    if requested is not None:
        return requested
    return results.recorded_query_batch(tree, model_num, dataset) or results.PAPER_QUERY_BATCH


def draw_panel(ax, tree, model_num: int, dataset: str, query_batch: int) -> None:
    methods = tree.methods(model_num, dataset)
    if not methods:
        ax.text(0.5, 0.5, f"no results for T={model_num}\non {dataset}", ha="center", va="center",
                fontsize=14, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    all_means = []
    extra_index = 0
    for method in methods:
        style = method_style(method, extra_index)
        extra_index += method not in METHOD_STYLES
        per_seed = tree.runs[(model_num, dataset, method)]
        if tree.has_several_seeds:
            curve = analysis.seed_curve(per_seed)
            queried = curve.iterations * query_batch
            means, half_widths = curve.mean_top1, curve.half_widths
            ax.plot(queried, means, label=results.method_display_name(method), markersize=4, **style)
            # The band is the 95% CI across seeds; it has gaps where fewer than 2 seeds reached an iteration.
            ax.fill_between(queried, means - half_widths, means + half_widths, color=style["color"],
                            alpha=0.15, linewidth=0)
            all_means.extend(means)
            continue
        curve = analysis.learning_curve(next(iter(per_seed.values())))
        queried = curve.iterations * query_batch
        all_means.extend(curve.mean_top1)
        ax.plot(queried, curve.mean_top1, label=results.method_display_name(method), markersize=4, **style)
        # Arrow-headed bars as in the paper. matplotlib draws nothing useful when one
        # call sets both lolims and uplims, so the up and down arrows are two calls.
        for arrow in ("lolims", "uplims"):
            ax.errorbar(queried, curve.mean_top1, yerr=curve.std_top1, fmt="none",
                        color=style["color"], alpha=0.4, **{arrow: True})
    last_iteration = max(tree.expected_iterations(dataset))
    tick_step = math.ceil((last_iteration + 1) / 6)  # 11 iterations -> every 2nd, as in the paper
    ax.set_xticks(np.arange(0, last_iteration + 1, tick_step) * query_batch)
    if tree.has_several_seeds:
        # With few seeds a t interval can reach past 0 or 100%: the axes stop at what accuracy can be.
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 100.0))
    y_limits = PAPER_Y_LIMITS.get(dataset)
    if y_limits and y_limits[0] <= min(all_means) and max(all_means) <= y_limits[1]:
        ax.set_ylim(*y_limits)
    ax.set_xlabel("number of queries")
    ax.set_ylabel("mean accuracy")
    ax.legend(loc="lower right")


def draw_learning_curves(trees, model_num: int, datasets, query_batch: int | None = None):
    """The paper's figure: one row per tree, one column per dataset. Returns the Figure."""
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(
            len(trees), len(datasets), squeeze=False, layout="constrained",
            figsize=(PANEL_SIZE[0] * len(datasets), PANEL_SIZE[1] * len(trees) + 0.4),
        )
        panel_letters = iter("abcdefghijklmnopqrstuvwxyz")
        for row, tree in enumerate(trees):
            for column, dataset in enumerate(datasets):
                ax = axes[row, column]
                draw_panel(ax, tree, model_num, dataset, panel_query_batch(tree, model_num, dataset, query_batch))
                caption = f"({next(panel_letters)}) {results.dataset_display_name(dataset)}"
                if tree.has_several_seeds:
                    caption += f", {len(tree.seeds(dataset))} seeds, 95% CI bands"
                if len(trees) > 1:  # a line of its own: a tree's path is as wide as the panel
                    caption += f"\n{tree_label(tree)}"
                # Below the axes, like the paper's sub-figure captions.
                ax.set_title(caption, y=-0.26, fontsize=16, va="top")
    return fig


def draw_penalty_matrices(trees, model_num: int, datasets):
    """BADGE's penalty matrix per (tree, dataset) as a heatmap; one row per tree. Returns the Figure."""
    matrices = [[analysis.penalty_matrix(tree, model_num, dataset) for dataset in datasets] for tree in trees]
    side = max(5.0, 0.9 * max(len(m.methods) for row in matrices for m in row) + 2.0)
    fig, axes = plt.subplots(len(trees), len(datasets), squeeze=False, layout="constrained",
                             figsize=(side * len(datasets), side * len(trees) + 1.2))
    for row, (tree, row_matrices) in enumerate(zip(trees, matrices)):
        for column, matrix in enumerate(row_matrices):
            ax = axes[row, column]
            names = [results.method_display_name(m) for m in matrix.methods]
            most = max(len(matrix.rounds), 1)
            ax.imshow(matrix.wins, cmap="Reds", vmin=0, vmax=most)
            for i in range(len(names)):
                for j in range(len(names)):
                    dark = matrix.wins[i, j] > most / 2
                    ax.text(j, i, "-" if i == j else str(matrix.wins[i, j]), ha="center", va="center",
                            color="white" if dark else "black")
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_yticks(range(len(names)), names)
            ax.set_xlabel("method j (column)")
            ax.set_ylabel("method i (row)")
            title = (f"{results.dataset_display_name(matrix.dataset)}, T={model_num}, {len(matrix.seeds)} seeds,"
                     f" {len(matrix.rounds)} rounds")
            if len(trees) > 1:
                title += f"\n{tree_label(tree)}"
            ax.set_title(title)
    fig.suptitle(
        "Entry (i, j): labeling rounds (al_iter >= 1) at which\n"
        "method i is significantly better than method j\n"
        f"(two-sided paired t-test across seeds, p < {ALPHA})"
    )
    return fig


def draw_difference_panel(ax, tree, model_num, dataset, pairs, query_batch, title) -> None:
    """One line per (first, second) pair: first minus second per round, with its paired 95% CI as an
    error bar; the pairs are set a little apart along x so that their bars do not hide each other."""
    extra_index = 0
    for position, (first, second) in enumerate(pairs):
        curve = analysis.difference_curve(tree, model_num, dataset, first, second)
        shown = [(r, e) for r, e in zip(curve.rounds, curve.estimates) if e is not None]
        if not shown:
            continue
        method = first if first != analysis.REFERENCE_METHOD or second == analysis.BASELINE_METHOD else second
        style = dict(method_style(method, extra_index))
        extra_index += method not in METHOD_STYLES
        dodge = 0.5 * query_batch * (position - (len(pairs) - 1) / 2) / max(len(pairs), 1)
        queried = np.array([r for r, _ in shown]) * query_batch + dodge
        means = np.array([e.mean for _, e in shown])
        half = np.array([np.nan if e.half_width is None else e.half_width for _, e in shown])
        label = f"{results.method_display_name(first)} - {results.method_display_name(second)}"
        ax.plot(queried, means, label=label, markersize=4, **style)
        ax.errorbar(queried, means, yerr=half, fmt="none", color=style["color"], capsize=3, alpha=0.8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(np.array(tree.expected_iterations(dataset)[1:]) * query_batch)
    ax.set_xlabel("number of queries")
    ax.set_ylabel("accuracy difference (points)")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9)


def draw_paired_differences(trees, model_num: int, datasets, query_batch: int | None = None):
    """Per (tree, dataset), two panels: each method minus random, and DIAM minus each other method,
    per round (al_iter >= 1), paired by seed, with 95% CIs. Returns the Figure."""
    fig, axes = plt.subplots(len(trees), 2 * len(datasets), squeeze=False, layout="constrained",
                             figsize=(6.0 * 2 * len(datasets), 4.6 * len(trees) + 0.8))
    for row, tree in enumerate(trees):
        for column, dataset in enumerate(datasets):
            methods = tree.methods(model_num, dataset)
            batch = panel_query_batch(tree, model_num, dataset, query_batch)
            name = f"{results.dataset_display_name(dataset)}, T={model_num}, {len(tree.seeds(dataset))} seeds"
            if len(trees) > 1:
                name += f"\n{tree_label(tree)}"
            baseline, reference = analysis.BASELINE_METHOD, analysis.REFERENCE_METHOD
            draw_difference_panel(axes[row, 2 * column], tree, model_num, dataset,
                                  [(m, baseline) for m in methods if m != baseline], batch,
                                  f"each method minus {results.method_display_name(baseline)}\n{name}")
            draw_difference_panel(axes[row, 2 * column + 1], tree, model_num, dataset,
                                  [(reference, m) for m in methods if m != reference], batch,
                                  f"{results.method_display_name(reference)} minus each method\n{name}")
    fig.suptitle("Paired differences of the T-model mean top-1 per round (same seed, same test set)\n"
                 "with 95% CIs across seeds (Student t, uncorrected); above 0: the first method is ahead")
    return fig


def save_figure(fig, out_prefix: Path) -> list[Path]:
    written = []
    for suffix in (".png", ".pdf"):
        path = out_prefix.with_name(out_prefix.name + suffix)
        # No creation date in a PDF: the same results then give the same bytes, and a redrawn
        # figure shows in git only when what it draws changed.
        metadata = {"CreationDate": None} if suffix == ".pdf" else None
        atomic_write(path, lambda f, fmt=suffix[1:], m=metadata: fig.savefig(f, format=fmt, dpi=150, metadata=m))
        written.append(path)
    plt.close(fig)
    return written


def draw_and_save(trees, model_num: int, datasets, query_batch: int | None, out_prefix: Path) -> list[Path]:
    """The learning curves of the trees holding any of the datasets, one row each, and their penalty matrices."""
    rows = []
    for tree in trees:
        if not tree.holds_any(datasets, model_num):
            print(f"note: {tree_label(tree)} has no results for {', '.join(datasets)} at T={model_num};"
                  " not drawn", file=sys.stderr)
            continue
        rows.append(tree)
        methods = results.in_display_order(set(presets.PAPER_METHODS) | set(tree.methods()))
        for line in results.missing_parts(tree, [model_num], datasets, methods):
            print(f"missing in {tree_label(tree)}: {line}", file=sys.stderr)
    written = save_figure(draw_learning_curves(rows, model_num, datasets, query_batch), out_prefix)
    repeated = [tree for tree in rows if tree.has_several_seeds]
    if repeated:
        penalty_datasets = [d for d in datasets if any(d in tree.datasets(model_num) for tree in repeated)]
        figure = draw_penalty_matrices(repeated, model_num, penalty_datasets)
        written += save_figure(figure, out_prefix.with_name(out_prefix.name + "_penalty"))
        figure = draw_paired_differences(repeated, model_num, penalty_datasets, query_batch)
        written += save_figure(figure, out_prefix.with_name(out_prefix.name + "_differences"))
    return written


def default_out(args) -> Path:
    """assets/lc for the paper's own figure; a figure of other runs goes beside their results folder,
    so that drawing one's own runs never overwrites the README's figure."""
    own = args.compare if args.compare is not None else args.results
    if own.resolve() == results.PAPER_RESULTS_DIR.resolve():
        return HERE / "assets" / "lc"
    return own.resolve().parent / "lc"


def main() -> None:
    args = parse_args()
    trees = [tree for _, tree in results.load_result_parts(args.results)]
    if args.compare is not None:
        trees += [tree for _, tree in results.load_result_parts(args.compare)]
    found = [d for tree in trees for d in tree.datasets(args.model_num)]
    if not found:
        held = sorted({t for tree in trees for t in tree.model_nums()})
        raise UserError(
            f"no results for T={args.model_num} target models in {' or '.join(str(t.root) for t in trees)};"
            f" results exist for T={', '.join(map(str, held))}. Pick one with --model_num."
        )
    datasets = results.in_dataset_order(args.datasets or found)
    unknown = [d for d in datasets if d not in found]
    if len(unknown) == len(datasets):
        raise UserError(
            f"no results for {', '.join(unknown)} at T={args.model_num}; there are results for"
            f" {', '.join(results.in_dataset_order(found))}."
        )
    out_prefix = args.out or default_out(args)
    refuse_paper_results(out_prefix.parent.resolve(), "--out")

    if args.each_dataset:
        written = []
        for dataset in datasets:
            if dataset in unknown:
                print(f"note: no results for {dataset} at T={args.model_num}; no figure", file=sys.stderr)
                continue
            prefix = out_prefix.with_name(f"{out_prefix.name}_{dataset}")
            written += draw_and_save(trees, args.model_num, [dataset], args.query_batch, prefix)
    else:
        written = draw_and_save(trees, args.model_num, datasets, args.query_batch, out_prefix)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
