"""Does a change that moves weights by rounding move the answer? Two results trees, paired by seed.

    python bench/bench_equivalence.py --old reproduction/extracted_results/corrected \\
        --new runs/equivalence/repro/extracted_results --dataset digits --model_num 4 --seeds 10 11 12 13 14

For each method both trees ran, on the seeds both have: each seed's AULC (mean top-1 over
the evaluation points and the T nets) in the new tree minus the old, their mean with a 95%
confidence interval (t distribution) and the paired t-test's p, and whether the interval
lies inside +-margin (default 0.3 points, the bound issue 33 asks for). Iteration 0 is
printed apart: it is shared by every method of a seed, so one difference serves them all.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diam import analysis, statistics  # noqa: E402
from diam.results import load_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--old", required=True, help="results tree of the reference commit")
    p.add_argument("--new", required=True, help="results tree of the changed code, the same seeds")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model_num", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to compare (default: all both have)")
    p.add_argument("--margin", type=float, default=0.3, help="equivalence bound in AULC points (default 0.3)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    old, new = load_results(args.old), load_results(args.new)
    methods = sorted({m for (t, d, m) in old.runs if (t, d) == (args.model_num, args.dataset)}
                     & {m for (t, d, m) in new.runs if (t, d) == (args.model_num, args.dataset)})
    if not methods:
        sys.exit(f"the two trees share no method at T = {args.model_num} on {args.dataset}")
    print(f"new minus old, AULC in points of mean top-1 (T = {args.model_num}, {args.dataset}); "
          f"equivalent: the 95% CI inside +-{args.margin:g}")
    print(f"{'method':12s} {'seeds':>5s} {'mean':>7s} {'95% CI':>17s} {'p':>6s} {'sd':>5s}  inside  per seed")
    shared_zero = {}
    for method in methods:
        key = (args.model_num, args.dataset, method)
        seeds = sorted(set(old.runs[key]) & set(new.runs[key]) & set(args.seeds or old.runs[key]))
        if not seeds:
            print(f"{method:12s} {0:5d}  (no seed in both trees)")
            continue
        first = {s: new.runs[key][s] for s in seeds}
        second = {s: old.runs[key][s] for s in seeds}
        iterations = analysis.common_iterations(list(first.values()) + list(second.values()))
        new_aulc, old_aulc = analysis.seed_aulcs(first, iterations), analysis.seed_aulcs(second, iterations)
        values = [new_aulc[s] - old_aulc[s] for s in seeds]
        estimate = statistics.mean_with_ci(values)
        test = statistics.paired_test([new_aulc[s] for s in seeds], [old_aulc[s] for s in seeds])
        half = estimate.half_width if estimate.half_width is not None else float("inf")
        low, high = estimate.mean - half, estimate.mean + half
        inside = -args.margin <= low and high <= args.margin
        p = "-" if test.p_value is None else f"{test.p_value:.3f}"
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        print(f"{method:12s} {len(seeds):5d} {estimate.mean:+7.3f} [{low:+7.3f}, {high:+7.3f}] {p:>6s} {sd:5.2f}  "
              f"{'yes' if inside else 'no ':6s}  " + " ".join(f"{v:+.2f}" for v in values))
        for s in seeds:
            shared_zero.setdefault(s, (analysis.model_mean_top1(new.runs[key][s], 0)
                                       - analysis.model_mean_top1(old.runs[key][s], 0)))
    print("iteration 0 (shared by the methods of a seed), new minus old mean top-1: "
          + " ".join(f"seed {s} {v:+.2f}" for s, v in sorted(shared_zero.items())))


if __name__ == "__main__":
    main()
