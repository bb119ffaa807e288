"""The paper's table: per dataset, rows = methods, columns = number of target models T.

Cell: mean over the AL iterations of the mean top-1 accuracy of the T models, ± mean
over the iterations of their std; the best mean of each column is bold (LaTeX) or
marked '*' (plain). With no arguments it reads the paper's numbers shipped in
extracted_results/.

A tree holding several seeds (seed<S>/ folders beside seed 0's <T> folders): a cell is
the mean over seeds of that mean (the area under the learning curve, AULC) ± the
half-width of its 95% confidence interval across seeds, followed by DIAM's verdict
against each other method (AULC difference paired by seed with its 95% CI, the paired
t-test's p-value raw and Holm-adjusted over the family, the verdict word those give,
and the rounds won/tied/lost by uncorrected paired t-tests) and, in plain text, BADGE's
penalty matrix as description, with the count of entries chance alone would give.
Every table prints iteration 0's mean accuracy (the regime) beside the AULCs.

A folder of trees side by side (e.g. reproduction/extracted_results/{corrected,original}/,
runs that must not share a tree) prints each tree in turn under its folder's name.
"""
import argparse
import sys

from diam import analysis, presets, results, statistics
from diam.errors import UserError, run_cli
from diam.presets import PAPER_MODEL_NUMS
from diam.statistics import ALPHA


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    results.add_results_argument(parser)
    parser.add_argument("--latex", action="store_true", help="print LaTeX table rows, as in the paper")
    parser.add_argument("--datasets", nargs="+", help="datasets to tabulate (default: all in the tree)")
    parser.add_argument(
        "--model_nums", type=int, nargs="+",
        help="table columns, numbers of target models (default: the paper's 2 4 6 8 12 and any other T in the tree)",
    )
    results.add_interim_argument(parser, "the verdict words")
    args = parser.parse_args()
    if args.model_nums and min(args.model_nums) < 1:
        raise UserError(f"--model_nums are numbers of target models T, each 1 or more; got "
                        f"{' '.join(map(str, args.model_nums))}. Name the T of the columns to print, e.g. 2 4.")
    return args


def cell_notes(cell) -> list[str]:
    notes = []
    if cell.seeds_used != cell.seeds_expected:
        notes.append(f"{cell.seeds_used}/{cell.seeds_expected} seeds")
    if cell.iterations_used != cell.iterations_expected:
        notes.append(f"{cell.iterations_used}/{cell.iterations_expected} it.")
    return notes


def plain_cell(cell) -> str:
    if cell is None:
        return "-"
    if cell.aulc is None:
        text = f"{cell.mean:.2f} ± {cell.std:.2f}"
    elif cell.aulc.has_ci:
        text = f"{cell.mean:.2f} ± {cell.aulc.half_width:.2f}"
    else:
        text = f"{cell.mean:.2f}, no CI"
    notes = cell_notes(cell)
    if notes:
        text += f" ({', '.join(notes)})"
    return text + ("*" if cell.best else "")


def latex_cell(cell) -> str:
    if cell is None:
        return "--"
    if cell.aulc is None:
        body = f"{cell.mean:.2f} \\pm {cell.std:.2f}"
    elif cell.aulc.has_ci:
        body = f"{cell.mean:.2f} \\pm {cell.aulc.half_width:.2f}"
    else:
        body = f"{cell.mean:.2f}"
    if cell.best:
        body = f"\\bm{{{body}}}"
    if cell.iterations_used != cell.iterations_expected:
        body += "^{\\dagger}"
    if cell.seeds_used != cell.seeds_expected:
        body += "^{\\ddagger}"
    return f"${body}$"


def signed(value: float) -> str:
    return f"{value:+.2f}"


def p_text(p) -> str:
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def ci_text(estimate) -> str:
    return "-" if estimate is None or not estimate.has_ci else f"[{signed(estimate.low)}, {signed(estimate.high)}]"


def iteration0_text(tree, model_num, dataset) -> str:
    """The regime, printed beside every AULC: iteration 0's mean top-1 over the T models."""
    found = analysis.iteration0_accuracy(tree, model_num, dataset)
    if found is None:
        return "-"
    estimate, shared = found
    text = f"{estimate.mean:.2f}" + (f" ± {estimate.half_width:.2f}" if estimate.has_ci else "")
    return text + ("" if shared else " (mean of methods)")


def print_plain(tree, table, iterations, seeds) -> None:
    header = ["method"] + [f"T={t}" for t in table.model_nums]
    rows = [
        [results.method_display_name(method)] + [plain_cell(table.cells.get((method, t))) for t in table.model_nums]
        for method in table.methods
    ]
    rows.append(["(iteration 0)"] + [iteration0_text(tree, t, table.dataset) for t in table.model_nums])
    widths = [max(len(row[column]) for row in [header] + rows) for column in range(len(header))]
    over = f"al_iter {iterations[0]}-{iterations[-1]}"
    if len(seeds) > 1:
        print(
            f"{results.dataset_display_name(table.dataset)}: mean top-1 accuracy (%) of the T models over {over}"
            f" (AULC), mean over seeds {results.as_ranges(seeds)} ± 95% CI half-width across seeds (Student t);"
            " * = best of column"
        )
    else:
        print(
            f"{results.dataset_display_name(table.dataset)}: mean top-1 accuracy (%) over {over}"
            " ± mean std across the T models; * = best of column"
        )
    for row in [header] + rows:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
    print("(iteration 0): the regime, mean top-1 at al_iter 0 before any query (shared by every method)")
    cells = table.cells.values()
    if any(cell.seeds_used != cell.seeds_expected for cell in cells):
        print("(k/n seeds): only k of the dataset's n seeds; not compared for best; no CI with 1 seed")
    if any(cell.iterations_used != cell.iterations_expected for cell in cells):
        print("(k/n it.): computed over only k of the n iterations; not compared for best")
    print()


def verdict_word(verdict, interim: bool) -> str:
    """The verdict word the analysis plan allows, or 'interim' when the cell's planned seeds have not all run
    (a pair too short of seeds to test says so either way)."""
    if not verdict.in_family:  # the plan defines its words for the family's Holm p only
        return "- (exploratory)"
    return "interim" if interim and verdict.p_value is not None else verdict.word


def verdict_row(verdict, expected_iterations, interim: bool) -> list[str]:
    difference, later = verdict.aulc_difference, verdict.later_difference
    aulc = signed(difference.mean)
    if list(verdict.iterations) != list(expected_iterations):
        aulc += f" (al_iter {results.as_ranges(verdict.iterations)} only)"
    rounds = (f"{verdict.wins}/{verdict.ties}/{verdict.losses}" if verdict.tested else "-") + \
        (f" ({verdict.untested} untested)" if verdict.tested and verdict.untested else "")
    return [results.method_display_name(verdict.method), aulc, ci_text(difference),
            "-" if later is None else signed(later.mean), str(difference.n), p_text(verdict.p_value),
            p_text(verdict.p_holm), verdict_word(verdict, interim), rounds]


def print_verdicts(tree, dataset, model_nums, methods, interim: bool) -> None:
    expected = tree.expected_iterations(dataset)
    rounds = expected[1:]
    reference = analysis.REFERENCE_METHOD
    found_by_model_num = {model_num: analysis.verdicts(tree, model_num, dataset, methods) for model_num in model_nums}
    exploratory = any(not verdict.in_family for found in found_by_model_num.values() for verdict in found)
    print(
        f"{results.dataset_display_name(dataset)}: {reference} against each other method, paired by seed."
        f" AULC diff: {reference} minus the method over al_iter {results.as_ranges(expected)}, with its 95% CI;"
        f" al_iter {results.as_ranges(rounds)}: the same over the rounds after the shared iteration 0;"
        f" p: two-sided paired t-test of the AULCs (none with fewer than {statistics.MIN_SEEDS_TO_TEST} seeds);"
        f" Holm p: adjusted over the family ({reference} against each of the paper's methods);"
        f" verdict: leads/trails where Holm p < {ALPHA}, 'within {statistics.SMALLEST_EFFECT:g}' where the whole"
        f" CI lies inside ±{statistics.SMALLEST_EFFECT:g}, else not resolved; rounds w/t/l: uncorrected paired"
        " t-tests per round (descriptive)"
        + ("; (exploratory): a method outside the family: its difference, CI and raw p, no verdict word"
           if exploratory else "")
        + ("; interim: verdict words withheld until the analysis plan's seeds of this cell have all run" if interim else "")
    )
    for model_num, found in found_by_model_num.items():
        family = sum(verdict.in_family for verdict in found)
        if not found:
            if tree.methods(model_num, dataset):
                print(f"T={model_num}: no verdict, {reference} has no results to pair with the others'")
            continue
        print(f"T={model_num}: iteration 0 (the regime): {iteration0_text(tree, model_num, dataset)}"
              f" mean top-1; family of {family} comparison{'' if family == 1 else 's'}")
        rows = [[f"{reference} vs", "AULC diff", "95% CI", f"al_iter {results.as_ranges(rounds)}", "seeds", "p",
                 "Holm p", "verdict", "rounds w/t/l"]]
        rows += [verdict_row(verdict, expected, interim) for verdict in found]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            print("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
    print()


def print_penalty_matrices(tree, dataset, model_nums, methods) -> None:
    for model_num in model_nums:
        present = [m for m in methods if (model_num, dataset, m) in tree.runs]
        if len(present) < 2:
            continue
        matrix = analysis.penalty_matrix(tree, model_num, dataset, present)
        print(
            f"{results.dataset_display_name(dataset)}, T={model_num}: penalty matrix (descriptive, uncorrected),"
            f" entry = rounds (of {len(matrix.rounds)}) at which the row method is significantly better than the"
            f" column method (paired t-test, p < {ALPHA})"
        )
        names = [results.method_display_name(m) for m in present]
        rows = [[""] + names] + [
            [name] + ["-" if i == j else str(matrix.wins[i, j]) for j in range(len(present))]
            for i, name in enumerate(names)
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            print("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
        tests, expected, found = analysis.chance_significant(matrix)
        print(f"{found} significant entries in {tests} tests; about {expected:.1f} expected by chance alone"
              " if no method differed from any other")
        print()


def print_latex(tree, table, seeds) -> None:
    spread = "; cells: mean over seeds \\pm 95\\% CI half-width" if len(seeds) > 1 else ""
    columns = ", ".join(map(str, table.model_nums))
    print(f"% {results.dataset_display_name(table.dataset)}: columns T = {columns}{spread}")
    for method in table.methods:
        cells = " & ".join(latex_cell(table.cells.get((method, t))) for t in table.model_nums)
        print(f"{results.method_display_name(method)} & {cells} \\\\")
    regime = " & ".join(f"${iteration0_text(tree, t, table.dataset)}$".replace("±", "\\pm")
                        for t in table.model_nums)
    print(f"(iteration 0) & {regime} \\\\")
    if any(cell.iterations_used != cell.iterations_expected for cell in table.cells.values()):
        print("% \\dagger: computed over only some of the iterations; not compared for best")
    if any(cell.seeds_used != cell.seeds_expected for cell in table.cells.values()):
        print("% \\ddagger: computed over only some of the seeds; not compared for best")


def print_latex_verdicts(tree, dataset, model_nums, methods, interim: bool) -> None:
    print(
        f"% {results.dataset_display_name(dataset)}: {analysis.REFERENCE_METHOD} vs method: T & method &"
        f" AULC difference [95\\% CI] & p & Holm p & verdict & rounds won/tied/lost (uncorrected, p < {ALPHA})"
    )
    for model_num in model_nums:
        for verdict in analysis.verdicts(tree, model_num, dataset, methods):
            difference = verdict.aulc_difference
            if difference.has_ci:
                aulc = f"${signed(difference.mean)}\\ [{signed(difference.low)}, {signed(difference.high)}]$"
            else:
                aulc = f"${signed(difference.mean)}$ (1 seed: no CI)"
            rounds = f"{verdict.wins}/{verdict.ties}/{verdict.losses}" if verdict.tested else "no test"
            print(f"{model_num} & {results.method_display_name(verdict.method)} & {aulc} &"
                  f" {p_text(verdict.p_value)} & {p_text(verdict.p_holm)} & {verdict_word(verdict, interim)} &"
                  f" {rounds} \\\\")


def main() -> None:
    args = parse_args()
    parts = results.load_result_parts(args.results)
    interim = results.interim_cells(args.interim, parts)
    if args.datasets:
        # A folder of trees need not hold every dataset in every tree (the original-quirks
        # runs cover digits only): a tree holding none of the asked ones is passed over.
        holding, passed_over = [], []
        for label, tree in parts:
            (holding if tree.holds_any(args.datasets) else passed_over).append((label, tree))
        if not holding:
            held = {d for _, tree in parts for d in tree.datasets()}
            raise UserError(
                f"no results in {args.results} for {', '.join(args.datasets)}; it holds"
                f" {', '.join(results.in_dataset_order(held))}. Name one of those with --datasets."
            )
        for _, tree in passed_over:
            print(f"note: {tree.root} holds none of {', '.join(args.datasets)}; not shown", file=sys.stderr)
        parts = holding
    if args.model_nums:
        # A T some of the datasets lack prints as a column of dashes; one that none of them has, as a
        # table of dashes only: refused.
        held = sorted({t for _, tree in parts for t in tree.model_nums()
                       if not args.datasets or tree.holds_any(args.datasets, t)})
        if not set(args.model_nums) & set(held):
            of = f" of {', '.join(args.datasets)}" if args.datasets else ""
            raise UserError(
                f"no results in {args.results} for T={', '.join(map(str, args.model_nums))}{of}; it holds"
                f" T={', '.join(map(str, held))}. Name some of those with --model_nums, or leave it out."
            )
    for label, tree in parts:
        if label:  # a LaTeX comment in --latex output, so that it can be pasted whole
            print(f"{'% ' if args.latex else ''}=== {label} ({tree.root}) ===\n")
        print_tree(tree, args, {dataset for held_by, dataset in interim if held_by == label})


def print_tree(tree, args, interim_datasets: set[str]) -> None:
    datasets = results.in_dataset_order(args.datasets) if args.datasets else tree.datasets()
    model_nums = args.model_nums or sorted(set(PAPER_MODEL_NUMS) | set(tree.model_nums()))
    methods = results.in_display_order(set(presets.PAPER_METHODS) | set(tree.methods()))
    unknown = [d for d in datasets if d not in tree.datasets()]
    if unknown:
        print(
            f"note: no results in {tree.root} for {', '.join(unknown)};"
            f" it holds {', '.join(tree.datasets())}",
            file=sys.stderr,
        )
    for line in results.missing_parts(tree, model_nums, [d for d in datasets if d not in unknown], methods):
        print(f"missing: {line}", file=sys.stderr)
    for dataset in datasets:
        if dataset in unknown:
            continue
        seeds = tree.seeds(dataset)
        table = analysis.dataset_table(tree, dataset, model_nums, methods)
        if args.latex:
            print_latex(tree, table, seeds)
            if len(seeds) > 1:
                print_latex_verdicts(tree, dataset, model_nums, methods, dataset in interim_datasets)
        else:
            print_plain(tree, table, tree.expected_iterations(dataset), seeds)
            if len(seeds) > 1:
                print_verdicts(tree, dataset, model_nums, methods, dataset in interim_datasets)
                print_penalty_matrices(tree, dataset, model_nums, methods)


if __name__ == "__main__":
    run_cli(main)
