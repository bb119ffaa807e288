"""Does a speed path move trained accuracy? Iteration 0 of many seeds on each path, paired by seed.

    python bench/bench_iteration0.py --paths plain= cropped=crop_taps,compile all=all --seeds 0-19

A path is LABEL=DIAM_CPU_FAST's value (empty: the default path). For each path in turn,
`run_grid.py --preset repro --datasets digits --model_nums 4 --methods random --al_iters 1`
trains and tests iteration 0 (the 4 nets on the seed's initial labels; with one iteration
there is nothing to select, and in the corrected mode the skipped passes over the pool draw
no random numbers, so the nets are those of a full piece) for every seed, on 2 workers of one
thread each, in <work_dir>/<label> (a finished step is not run again, so a stopped run resumes).

Then, against the first path: each seed's mean top-1 over the T nets on the new path minus
the first's, their mean with a 95% t interval, the paired t-test's p, and whether the interval
lies inside +-margin; and the same over every (seed, net) pair, for the spread of one net.
What a path changes is float rounding, which training from scratch amplifies into nets as
different as another training stream gives: the question is a systematic shift, not equality.
The wall time of each path is printed too, but the runs are only comparable on an idle machine.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import PROJECT, cpu_model, load_average_lines  # noqa: E402
from diam import statistics  # noqa: E402
from diam.results import load_results  # noqa: E402


def seed_list(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--paths", nargs="+", required=True, help="LABEL=DIAM_CPU_FAST value; the first is the reference")
    p.add_argument("--seeds", type=seed_list, default=seed_list("0-19"), help="e.g. 0-19 or 0,3,5-9")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--preset", default="repro")
    p.add_argument("--model_num", type=int, default=4)
    p.add_argument("--work_dir", type=Path, default=Path("runs/equivalence"), help="one folder per path inside")
    p.add_argument("--data_root", default=os.environ.get("DIAM_DATA_ROOT"),
                   help="folder of the dataset files (default: $DIAM_DATA_ROOT)")
    p.add_argument("--margin", type=float, default=0.3, help="equivalence bound in points (default 0.3)")
    p.add_argument("--report_only", action="store_true", help="compare the folders already there, run nothing")
    args = p.parse_args(argv)
    try:
        args.paths = [tuple(item.split("=", 1)) for item in args.paths]
    except ValueError:
        p.error("--paths: give LABEL=VALUE items, e.g. plain= all=all")
    if any(len(path) != 2 or not path[0] for path in args.paths):
        p.error("--paths: give LABEL=VALUE items, e.g. plain= all=all")
    return args


def run_path(label: str, value: str, args) -> float:
    command = [sys.executable, "run_grid.py", "--preset", args.preset, "--datasets", args.dataset,
               "--model_nums", str(args.model_num), "--methods", "random", "--al_iters", "1",
               "--seeds", *map(str, args.seeds), "--num_cpus", "2", "--work_dir", str(args.work_dir / label)]
    if args.data_root:
        command += ["--data_root", args.data_root]
    env = dict(os.environ, DIAM_CPU_FAST=value, OMP_NUM_THREADS="1")
    print(f"$ DIAM_CPU_FAST={value} {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=PROJECT, env=env, check=True)
    return time.perf_counter() - start


def iteration0(label: str, args) -> dict[int, np.ndarray]:
    """Per seed, the T nets' top-1 at iteration 0 (percent; performances.txt's first column)."""
    tree = load_results(args.work_dir / label / args.preset / "extracted_results")
    per_seed = tree.runs.get((args.model_num, args.dataset, "random"), {})
    return {seed: np.asarray(per_seed[seed][0], dtype=float)[:, 0] for seed in args.seeds
            if 0 in per_seed.get(seed, {})}


def compare(reference: dict, other: dict, label: str, args) -> None:
    seeds = sorted(set(reference) & set(other))
    if len(seeds) < 2:
        print(f"{label}: {len(seeds)} seed(s) in both folders, nothing to compare")
        return
    by_seed = [float(other[s].mean() - reference[s].mean()) for s in seeds]
    by_net = np.concatenate([other[s] - reference[s] for s in seeds])
    for what, values in (("mean of the nets, per seed", by_seed), ("each net, per seed", list(by_net))):
        estimate = statistics.mean_with_ci(values)
        p = float(stats.ttest_1samp(values, 0.0).pvalue)
        low, high = estimate.mean - estimate.half_width, estimate.mean + estimate.half_width
        inside = -args.margin <= low and high <= args.margin
        print(f"{label:>10s}  {what:27s} n={len(values):3d}  {estimate.mean:+6.3f} [{low:+6.3f}, {high:+6.3f}]  "
              f"p {p:.3f}  sd {np.std(values, ddof=1):.2f}  "
              f"inside +-{args.margin:g}: {'yes' if inside else 'no'}")
    print(f"{'':>10s}  per seed: " + " ".join(f"{v:+.2f}" for v in by_seed))


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; python {sys.version.split()[0]}")
    print("\n".join(load_average_lines()))
    print(f"iteration 0: {args.preset} preset, {args.dataset}, T = {args.model_num}, seeds "
          f"{args.seeds[0]}..{args.seeds[-1]} ({len(args.seeds)})")
    if not args.report_only:
        for label, value in args.paths:
            seconds = run_path(label, value, args)
            print(f"{label} (DIAM_CPU_FAST={value}): {seconds:.1f} s", flush=True)
        print("\n".join(load_average_lines()))
    results = {label: iteration0(label, args) for label, _ in args.paths}
    first = args.paths[0][0]
    print("\nmean top-1 at iteration 0 (points): " + ", ".join(
        f"{label} {np.mean([v.mean() for v in results[label].values()]):.2f} ({len(results[label])} seeds)"
        for label, _ in args.paths if results[label]))
    print(f"new path minus {first}, paired by seed (equivalent: the 95% CI inside +-{args.margin:g}):")
    for label, _ in args.paths[1:]:
        compare(results[first], results[label], label, args)
    if len(args.paths) > 2:
        second = args.paths[1][0]
        print(f"against {second}:")
        for label, _ in args.paths[2:]:
            compare(results[second], results[label], label, args)


if __name__ == "__main__":
    main()
