"""The numbers REPRODUCTION.md's reading quotes beyond table.py's tables, from the results alone:

    python reproduction/reading.py                       # reproduction/extracted_results, T = 4
    python reproduction/reading.py --results DIR --model_num T --planned "..." [--beside DIR]

Per mode and dataset: the analysis plan's one-sentence answer (DIAM against random and CAL,
from the Holm-adjusted verdict words; withheld with --interim), the methods by mean AULC,
iteration 0 seed by seed, random's curve, DIAM minus each method seed by seed (with how many
seeds are positive and the sd of the differences), each method minus random, and what the
spread of DIAM minus random implies for the planned seeds (CI half-width, seeds for 80% power at Holm's strictest step). Then, for a dataset run in both
modes, DIAM's lead over random in the corrected mode minus the original's, seed by seed; the
Lewis methods' regime as each selection printed it (the selection logs campaign.sh keeps beside
the results); with --beside another preset's trees, DIAM minus random and minus CAL in each tree
on the cells both hold, as intervals side by side (the budget's effect; different presets and
pools, so not a paired test); and the paper's own numbers over the same evaluation points.
report.sh writes it to reproduction/reading.txt, so that every number of the prose can be found
in a file the results produce. Differences are taken before rounding.
"""
import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from what_ran import campaign_plan, planned_pieces  # noqa: E402 (reproduction/ is a folder of scripts, not a package)

from diam import analysis, results, statistics  # noqa: E402
from diam.errors import UserError, run_cli  # noqa: E402

REFERENCE, BASELINE = analysis.REFERENCE_METHOD, analysis.BASELINE_METHOD
# The lead whose detection the seed counts are sized for (REPRODUCTION.md's analysis plan).
LEADS_OF_INTEREST = (1.0, statistics.SMALLEST_EFFECT)


def signed(value: float) -> str:
    return f"{value:+.2f}"


def per_seed(values: dict[int, float], fmt=signed) -> str:
    return ", ".join(f"{seed}: {fmt(value)}" for seed, value in sorted(values.items()))


def estimate(values) -> str:
    e = statistics.mean_with_ci(list(values))
    return signed(e.mean) + (f" [{signed(e.low)}, {signed(e.high)}]" if e.has_ci else "") + f" ({e.n} seed{'s' * (e.n > 1)})"


def cell_lines(tree, mode: str, dataset: str, model_num: int, planned_seeds: int | None,
               interim: bool) -> list[str]:
    methods = results.in_display_order(tree.methods(model_num, dataset))
    runs = {m: tree.runs[(model_num, dataset, m)] for m in methods}
    iterations = tree.expected_iterations(dataset)
    seeds = tree.seeds(dataset)
    plan = f"{len(seeds)} of {planned_seeds} planned" if planned_seeds else f"{len(seeds)}, none planned"
    lines = [f"=== {mode or 'results'}, {dataset}, T = {model_num}: seeds {results.as_ranges(seeds)} ({plan}) ==="]
    means = {m: float(np.mean(list(analysis.seed_aulcs(runs[m], iterations).values()))) for m in methods}
    lines.append(f"AULC over al_iter {iterations[0]}-{iterations[-1]}, mean over each method's seeds, highest first: "
                 + ", ".join(f"{m} {means[m]:.2f} ({len(runs[m])})" for m in sorted(means, key=means.get, reverse=True)))
    if BASELINE in runs:
        baseline = runs[BASELINE]
        first = {s: analysis.model_mean_top1(curve, 0) for s, curve in baseline.items() if 0 in curve}
        if first:
            lines.append(f"iteration 0 (shared by every method), per seed: {per_seed(first, lambda v: f'{v:.2f}')}; "
                         f"mean {np.mean(list(first.values())):.2f}")
        curve = analysis.seed_curve(baseline).mean_top1
        lines.append(f"{BASELINE}, mean over its seeds per al_iter: "
                     + ", ".join(f"{i}: {value:.2f}" for i, value in zip(iterations, curve)))
    if REFERENCE in runs:
        found = analysis.verdicts(tree, model_num, dataset)
        sentence = answer(found, interim)
        lines += [sentence] if sentence else []
        lines.append(f"{REFERENCE} minus each method, AULC per seed (mean [95% CI]; positive in; sd):")
        for method in methods:
            if method == REFERENCE:
                continue
            differences = analysis.paired_aulc_differences(runs[REFERENCE], runs[method])
            if not differences:
                continue
            values = list(differences.values())
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
            lines.append(f"  {method}: {estimate(values)}; positive in {sum(v > 0 for v in values)} of "
                         f"{len(values)}{'' if sd is None else f'; sd {sd:.2f}'}; {per_seed(differences)}")
            if method == BASELINE and len(values) > 2:
                family = sum(v.in_family for v in found)
                lines.append("    " + what_the_spread_implies(sd, planned_seeds, family))
    if BASELINE in runs:
        lines.append(f"each method minus {BASELINE}, AULC (mean [95% CI]):")
        for method in methods:
            if method != BASELINE:
                differences = analysis.paired_aulc_differences(runs[method], runs[BASELINE])
                if differences:
                    lines.append(f"  {method}: {estimate(differences.values())}")
    return lines


# How a verdict word reads in the plan's sentence, "DIAM <phrase> random and <phrase> CAL".
PHRASES = {"within": "is within {margin} of", "not resolved": "is not resolved against",
           "not tested": "is not tested against"}
# The methods the plan's one sentence per cell answers for (REPRODUCTION.md's analysis plan).
ANSWERED_AGAINST = (BASELINE, "CAL")


def answer(verdicts, interim: bool) -> str:
    """The analysis plan's one sentence for a cell: does DIAM lead, trail, or sit within the
    smallest effect of interest of random and of CAL (Holm-adjusted verdict words)."""
    if interim:
        return "the plan's answer: withheld until the cell has all its planned seeds (interim)"
    phrases = []
    for method in ANSWERED_AGAINST:
        verdict = next((v for v in verdicts if v.method == method), None)
        if verdict is None:
            continue
        word = verdict.word
        phrase = (PHRASES["within"].format(margin=word.split()[-1]) if word.startswith("within")
                  else PHRASES.get(word, word))
        phrases.append(f"{phrase} {method}")
    return f"the plan's answer: {REFERENCE} " + " and ".join(phrases) if phrases else ""


def what_the_spread_implies(sd: float, planned_seeds: int | None, family: int) -> str:
    """The CI half-width the planned seeds buy, and the seeds for 80% power at the Holm correction's
    strictest step (a two-sided 0.05 / the family's size: what the comparison must clear when its p is
    the family's smallest; a later step clears a larger threshold, so this is the safe count)."""
    parts = [f"at this sd, a 95% CI half-width of {statistics.expected_half_width(sd, planned_seeds):.2f} "
             f"at the planned {planned_seeds} seeds"] if planned_seeds else []
    alpha = statistics.ALPHA / max(family, 1)
    for lead in LEADS_OF_INTEREST:
        needed = statistics.seeds_for_power(sd, lead, alpha=alpha)
        parts.append(f"80% power for a {lead:g}-point lead at {needed} seeds" if needed
                     else f"80% power for a {lead:g}-point lead beyond 1,000 seeds")
    return "; ".join(parts) + f" (two-sided {statistics.ALPHA:g}/{family}, Holm's strictest step over the family)"


def across_modes_lines(parts: dict, dataset: str, model_num: int) -> list[str]:
    """DIAM minus random in the corrected mode minus the same in the original, paired by seed."""
    leads = {}
    for mode in ("corrected", "original"):
        runs = parts[mode].runs
        if (model_num, dataset, REFERENCE) not in runs or (model_num, dataset, BASELINE) not in runs:
            return []
        leads[mode] = analysis.paired_aulc_differences(runs[(model_num, dataset, REFERENCE)],
                                                       runs[(model_num, dataset, BASELINE)])
    seeds = sorted(set(leads["corrected"]) & set(leads["original"]))
    if not seeds:
        return []
    gap = {s: leads["corrected"][s] - leads["original"][s] for s in seeds}
    test = statistics.paired_test([leads["corrected"][s] for s in seeds], [leads["original"][s] for s in seeds])
    p = f"{test.p_value:.3f}" if test.p_value is not None else "not tested"
    return [f"=== {dataset}, T = {model_num}: {REFERENCE} minus {BASELINE}, corrected mode minus original, "
            f"seeds both modes have ===",
            f"{estimate(gap.values())}; larger in the corrected mode in {sum(v > 0 for v in gap.values())} of "
            f"{len(gap)}; paired t-test p {p}; {per_seed(gap)}"]


def beside_lines(parts: dict, other_parts: dict, here: str, there: str, model_num: int) -> list[str]:
    """The budget's effect as the fourth edition's plan states it: on each (mode, dataset) both
    folders hold, DIAM minus random and DIAM minus CAL, each tree's own seeds paired within it,
    as two 95% intervals side by side with each tree's iteration 0 (its regime). The trees differ
    in preset, and so in labels, pool and seeds: the intervals are not differenced or tested."""
    lines = []
    for mode in (m for m in parts if m in other_parts):
        shared = set(parts[mode].datasets(model_num)) & set(other_parts[mode].datasets(model_num))
        for dataset in results.in_dataset_order(shared):
            rows = []
            for name, tree in ((here, parts[mode]), (there, other_parts[mode])):
                runs = {m: tree.runs.get((model_num, dataset, m), {}) for m in (REFERENCE, *ANSWERED_AGAINST)}
                if not runs[REFERENCE]:
                    continue
                first = analysis.iteration0_accuracy(tree, model_num, dataset)
                iterations = tree.expected_iterations(dataset)
                parts_of_row = [f"iteration 0 {first[0].mean:.2f}" if first else "no iteration 0"]
                for method in ANSWERED_AGAINST:
                    differences = analysis.paired_aulc_differences(runs[REFERENCE], runs[method])
                    if differences:
                        parts_of_row.append(f"minus {method} {estimate(differences.values())}")
                rows.append(f"  {name} (AULC over al_iter {iterations[0]}-{iterations[-1]}): " + "; ".join(parts_of_row))
            if len(rows) == 2:
                lines += [f"=== {mode or 'results'}, {dataset}, T = {model_num}: {REFERENCE} against "
                          f"{' and '.join(ANSWERED_AGAINST)} in each preset's tree, side by side (not paired: "
                          "different presets, pools and seeds) ===", *rows, ""]
    return lines


# What a Lewis-weight selection prints (diam/experiment.py): the pool's sum against the sample's size.
LEWIS_REGIME = re.compile(r"sum of maximum Lewis weights over the unlabeled pool (\S+) for a sample of (\d+) \(([^)]*)\)")


def natural_key(path: Path) -> list:
    """seed2 before seed10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def lewis_regime_lines(logs: Path) -> list[str]:
    """Each Lewis-weight selection's sum of maximum Lewis weights, one line a selection log
    (selection_logs/<mode>/<seed>/<dataset>/<method>/iter<I>.log, as campaign.sh keeps them)."""
    found = []
    for log in sorted(logs.rglob("iter*.log"), key=natural_key) if logs.is_dir() else []:
        for match in LEWIS_REGIME.finditer(log.read_text(errors="replace")):
            total, size, how = match.groups()
            found.append(f"  {log.relative_to(logs).with_suffix('').as_posix()}: {total} for a sample of {size} ({how})")
    if not found:
        return []
    return ["=== the Lewis methods' regime: the sum of maximum Lewis weights over the unlabeled pool against "
            "the sample's size, per selection (from the selection logs) ===", *found, ""]


def paper_lines(paper, model_num: int, points: int) -> list[str]:
    """The paper's single run per method: AULC over its first `points` evaluation points and over all."""
    lines = []
    for dataset in paper.datasets(model_num):
        curves = {m: analysis.learning_curve(paper.runs[(model_num, dataset, m)][0]).mean_top1
                  for m in results.in_display_order(paper.methods(model_num, dataset))}
        lines.append(f"=== the paper, {dataset}, T = {model_num} (one run per method) ===")
        lines.append(f"iteration 0: {curves[BASELINE][0]:.2f}")
        for label, span in ((f"al_iter 0-{points - 1}", slice(0, points)), ("all points", slice(None))):
            aulc = {m: float(curve[span].mean()) for m, curve in curves.items()}
            order = sorted(aulc, key=aulc.get, reverse=True)
            lines.append(f"AULC over {label}: " + ", ".join(f"{m} {aulc[m]:.2f}" for m in order)
                         + f"; {REFERENCE} minus " + ", ".join(f"{m} {signed(aulc[REFERENCE] - aulc[m])}"
                                                               for m in (BASELINE, "CAL") if m in aulc))
        lines.append("")
    return lines


def shown_path(path: Path) -> str:
    """A folder as the reading names it: relative to the project, so the same however it is called."""
    shown = os.path.relpath(path.resolve(), HERE.parent)
    return str(path) if shown.startswith("..") else shown


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "extracted_results",
                        help="the campaign's folder of mode trees (default: reproduction/extracted_results)")
    parser.add_argument("--model_num", type=int, default=4, help="T, the number of target models (default: 4)")
    parser.add_argument("--paper", type=Path, default=results.PAPER_RESULTS_DIR,
                        help="the paper's numbers (default: extracted_results/); 'none' to leave them out")
    parser.add_argument("--planned", help="the planned pieces, as what_ran.py takes them "
                                          "(default: `LIST=1 bash reproduction/campaign.sh`)")
    parser.add_argument("--selection_logs", type=Path,
                        help="the campaign's selection logs (default: selection_logs/ beside --results)")
    parser.add_argument("--beside", type=Path,
                        help="another preset's folder of mode trees (the fourth edition's repro tree beside its "
                             "budget tree): DIAM against random and CAL in both, side by side, on the cells both hold")
    results.add_interim_argument(parser, "the plan's answer, as table.py --interim withholds its verdict words,")
    args = parser.parse_args(argv)
    planned = args.planned if args.planned is not None else campaign_plan()
    planned_seeds: dict[tuple[str, str], set[int]] = {}
    for dataset, mode, seed, methods in planned_pieces(planned):
        if REFERENCE in methods.split():
            planned_seeds.setdefault((dataset, mode), set()).add(seed)
    parts = dict(results.load_result_parts(args.results))
    interim = results.interim_cells(args.interim, parts.items())
    lines = [f"Numbers for REPRODUCTION.md's reading, from {shown_path(args.results)} (reproduction/reading.py).", ""]
    points = None
    for mode, tree in parts.items():
        for dataset in results.in_dataset_order(tree.datasets(args.model_num)):
            seeds = planned_seeds.get((dataset, mode))
            lines += cell_lines(tree, mode, dataset, args.model_num, len(seeds) if seeds else None,
                                (mode, dataset) in interim) + [""]
            points = points or len(tree.expected_iterations(dataset))
    if {"corrected", "original"} <= set(parts):
        for dataset in sorted(set(parts["corrected"].datasets(args.model_num)) & set(parts["original"].datasets(args.model_num))):
            found = across_modes_lines(parts, dataset, args.model_num)
            lines += found + ([""] if found else [])
    if args.beside is not None:
        lines += beside_lines(parts, dict(results.load_result_parts(args.beside)), shown_path(args.results),
                              shown_path(args.beside), args.model_num)
    lines += lewis_regime_lines(args.selection_logs or args.results.parent / "selection_logs")
    if str(args.paper) != "none" and points:
        paper = results.load_results(args.paper)
        if not paper.is_paper:
            raise UserError(f"{args.paper} is not the paper's results folder (it lacks {results.PAPER_RESULTS_MARKER}); "
                            "give --paper extracted_results, or --paper none to leave the paper's numbers out.")
        lines += paper_lines(paper, args.model_num, points)
    print("\n".join(lines).rstrip())


if __name__ == "__main__":
    run_cli(main)
