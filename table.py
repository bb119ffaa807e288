"""The paper's table: per dataset, rows = methods, columns = number of target models T.

Cell: mean over the AL iterations of the mean top-1 accuracy of the T models, ± mean
over the iterations of their std; the best mean of each column is bold (LaTeX) or
marked '*' (plain). With no arguments it reads the paper's numbers shipped in
extracted_results/.
"""
import argparse
import sys
from pathlib import Path

from diam import results
from diam.errors import UserError, run_cli

PAPER_RESULTS_DIR = Path(__file__).resolve().parent / "extracted_results"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--results", type=Path, default=PAPER_RESULTS_DIR, metavar="DIR",
        help="results tree <T>/<dataset>/<method>/<al_iter>/performances.txt (default: the paper's, extracted_results/)",
    )
    parser.add_argument("--latex", action="store_true", help="print LaTeX table rows, as in the paper")
    parser.add_argument("--datasets", nargs="+", help="datasets to tabulate (default: all in the tree)")
    parser.add_argument(
        "--model_nums", type=int, nargs="+",
        help="table columns, numbers of target models (default: the paper's 2 4 6 8 12 and any other T in the tree)",
    )
    return parser.parse_args()


def plain_cell(cell) -> str:
    if cell is None:
        return "-"
    text = f"{cell.mean:.2f} ± {cell.std:.2f}"
    if not cell.complete:
        text += f" ({cell.iterations_used}/{cell.iterations_expected} it.)"
    return text + ("*" if cell.best else "")


def latex_cell(cell) -> str:
    if cell is None:
        return "--"
    body = f"{cell.mean:.2f} \\pm {cell.std:.2f}"
    if cell.best:
        body = f"\\bm{{{body}}}"
    if not cell.complete:
        body += "^{\\dagger}"
    return f"${body}$"


def print_plain(table, iterations) -> None:
    header = ["method"] + [f"T={t}" for t in table.model_nums]
    rows = [
        [results.method_display_name(method)] + [plain_cell(table.cells.get((method, t))) for t in table.model_nums]
        for method in table.methods
    ]
    widths = [max(len(row[column]) for row in [header] + rows) for column in range(len(header))]
    print(
        f"{results.dataset_display_name(table.dataset)}: mean top-1 accuracy (%) over al_iter"
        f" {iterations[0]}-{iterations[-1]} ± mean std across the T models; * = best of column"
    )
    for row in [header] + rows:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
    if any(not cell.complete for cell in table.cells.values()):
        print("(k/n it.): computed over only k of the n iterations; not compared for best")
    print()


def print_latex(table) -> None:
    print(f"% {results.dataset_display_name(table.dataset)}: columns T = {', '.join(map(str, table.model_nums))}")
    for method in table.methods:
        cells = " & ".join(latex_cell(table.cells.get((method, t))) for t in table.model_nums)
        print(f"{results.method_display_name(method)} & {cells} \\\\")
    if any(not cell.complete for cell in table.cells.values()):
        print("% \\dagger: computed over only some of the iterations; not compared for best")


def main() -> None:
    args = parse_args()
    tree = results.load_results(args.results)
    datasets = results.in_dataset_order(args.datasets) if args.datasets else tree.datasets()
    model_nums = args.model_nums or sorted(set(results.PAPER_MODEL_NUMS) | set(tree.model_nums()))
    methods = results.in_display_order(set(results.PAPER_METHODS) | set(tree.methods()))
    unknown = [d for d in datasets if d not in tree.datasets()]
    if len(unknown) == len(datasets):
        raise UserError(
            f"no results in {args.results} for {', '.join(unknown)}; it holds {', '.join(tree.datasets())}."
        )
    if unknown:
        print(
            f"note: no results in {args.results} for {', '.join(unknown)};"
            f" it holds {', '.join(tree.datasets())}",
            file=sys.stderr,
        )
    for line in results.missing_parts(tree, model_nums, [d for d in datasets if d not in unknown], methods):
        print(f"missing: {line}", file=sys.stderr)
    for dataset in datasets:
        if dataset in unknown:
            continue
        table = results.dataset_table(tree, dataset, model_nums, methods)
        if args.latex:
            print_latex(table)
        else:
            print_plain(table, tree.expected_iterations(dataset))


if __name__ == "__main__":
    run_cli(main)
