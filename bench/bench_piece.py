"""Where a reproduction piece's time goes, and one piece at several commits (a benchmark for an idle machine).

    python bench/bench_piece.py --profile                         # profile one repro piece at this checkout
    python bench/bench_piece.py --commits f11966c HEAD            # the same piece at two commits, one after the other
    python bench/bench_piece.py --commits f11966c HEAD HEAD:DIAM_CPU_FAST=all   # COMMIT:VAR=VALUE sets a variable
    python bench/bench_piece.py --profile --dataset fmnist -- --pool_size 8000 --initial_labeled 1600 \\
        --query_batch 800 --al_iters 2                            # flags after -- go to every step

A piece is what reproduction/campaign.sh runs: `run_grid.py --preset repro --datasets D
--model_nums 4 --methods <the paper's seven> --seeds S` on 2 workers of one thread each,
in a fresh work folder. Timed: its wall time, as the campaign times it.

--profile runs it with DIAM_PROFILE (diam/grid.py): every step under cProfile, and the
driver's timeline of which worker held which step. The report splits the workers'
core-seconds into phases: training steps, the pool passes made during training
(snapshot labels, probabilities, features), test passes, selection (reading its
inputs; the strategy), loading data, building and loading nets, writing outputs, the
rest of each step, Ray's overhead around steps, and the core-seconds no step held.
cProfile adds its own overhead (a few per cent of the training steps): the wall time
to compare across commits is the unprofiled one.

--commits exports each commit's tree with `git archive` (the repository is not touched)
and runs the piece there (an entry COMMIT:VAR=VALUE[,VAR=VALUE] runs it with those
environment variables), then checks whether each later run wrote the files of the first:
every checkpoint's tensors and every performances.txt, bit for bit, and prints each
method's AULC (the mean top-1 over the evaluation points and the T nets) beside the first's.
"""
import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import PROJECT, cpu_model, export, git, load_average_lines  # noqa: E402

PAPER_SEVEN = ["random", "least_conf", "margin", "entropy", "coreset", "CAL", "DIAM"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--methods", nargs="+", default=PAPER_SEVEN)
    p.add_argument("--model_num", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="repro")
    p.add_argument("--workers", type=int, default=2, help="Ray CPUs, one worker of one thread each (default 2)")
    p.add_argument("--profile", action="store_true", help="profile the piece at this checkout")
    p.add_argument("--commits", nargs="+", default=None, help="run the piece at each of these commits in turn")
    p.add_argument("--data_root", default=os.environ.get("DIAM_DATA_ROOT"),
                   help="folder of the dataset files (default: $DIAM_DATA_ROOT)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    p.add_argument("extra", nargs="*", help="flags for every step, after --")
    args = p.parse_args(argv)
    if not args.profile and not args.commits:
        p.error("say what to do: --profile, --commits A B, or both")
    return args


def run_piece(tree: Path, work: Path, args, profile_dir=None, variables=None) -> tuple[float, str]:
    """(wall seconds, run_grid.py's summary lines) of the piece run in `tree`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(variables or {})}
    env.pop("DIAM_WORK_DIR", None)
    env.pop("DIAM_PROFILE", None)
    if args.data_root:
        env["DIAM_DATA_ROOT"] = str(Path(args.data_root).resolve())
    if profile_dir:
        env["DIAM_PROFILE"] = str(profile_dir)
    command = [sys.executable, "run_grid.py", "--preset", args.preset, "--datasets", args.dataset,
               "--model_nums", str(args.model_num), "--methods", *args.methods, "--seeds", str(args.seed),
               "--num_cpus", str(args.workers), *args.extra, "--work_dir", str(work)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"the piece failed in {tree} ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    summary = "\n".join(line for line in result.stdout.splitlines() if line.startswith(("run_grid.py:", "workers")))
    return seconds, summary


# ---------------------------------------------------------------- the profile
def _function(stats, filename_end: str, name: str):
    """The key of function `name` defined in a file ending with `filename_end`, or None."""
    return next((f for f in stats.stats if f[2] == name and f[0].endswith(filename_end)), None)


def _cumulative(stats, key, caller=None) -> float:
    """Seconds spent in `key` and below (from `caller` only, when given)."""
    if key is None or key not in stats.stats:
        return 0.0
    _, _, _, cumulative, callers = stats.stats[key]
    if caller is None:
        return cumulative
    return callers[caller][3] if caller in callers else 0.0


def step_phases(path: Path) -> dict:
    """A profiled step's seconds by phase; the phases add up to the step's time in its worker."""
    stats = pstats.Stats(str(path))
    f = lambda end, name: _function(stats, end, name)  # noqa: E731
    total = _cumulative(stats, f("diam/grid.py", "_run"))
    train = f("diam/training.py", "train_target_net")
    # predict runs inside training steps (their pool passes) and inside selection's reading of its
    # inputs (what training did not record); torch.no_grad's wrapper hides its caller, so the step says which.
    passes = _cumulative(stats, f("diam/training.py", "predict")) if train else 0.0
    phases = {
        "training steps": _cumulative(stats, train) - passes + _cumulative(stats, f("diam/training.py",
                                                                                   "train_linear_head")),
        "pool passes during training": passes,
        "test passes": _cumulative(stats, f("diam/training.py", "evaluate")),
        # The strategy fetches its inputs from the pool while it runs (inside _pick).
        "selection: reading inputs": _cumulative(stats, f("diam/pool.py", "_get")),
        "selection: the strategy": _cumulative(stats, f("diam/experiment.py", "_pick"))
        - _cumulative(stats, f("diam/pool.py", "_get")),
        "loading data": _cumulative(stats, f("diam/data.py", "load_dataset")),
        "building and loading nets": sum(_cumulative(stats, k) for k in (
            f("diam/models.py", "build_target"), f("diam/models.py", "initialise_target"),
            f("torch/serialization.py", "load"))),
        "writing outputs": _cumulative(stats, f("diam/paths.py", "atomic_write")) + _cumulative(
            stats, f("diam/paths.py", "write_npz")) - _cumulative(stats, f("diam/paths.py", "atomic_write"),
                                                                  f("diam/paths.py", "write_npz")),
    }
    phases["rest of the step (parsing, settings, checks)"] = total - sum(phases.values())
    return phases


def read_timeline(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    names = lines[0].split("\t")
    return [dict(zip(names, line.split("\t"))) for line in lines[1:]]


def report_profile(profile_dir: Path, wall: float, workers: int) -> None:
    timeline = read_timeline(profile_dir / "timeline.tsv")
    held = sum(float(r["end_s"]) - float(r["start_s"]) for r in timeline)
    span = max(float(r["end_s"]) for r in timeline)
    by_phase, by_script, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    in_workers = 0.0
    for prof in sorted(profile_dir.rglob("*.prof")):
        phases = step_phases(prof)
        script = "train" if prof.stem.startswith("train") else prof.stem
        counts[script] += 1
        for name, seconds in phases.items():
            by_phase[name] += seconds
            by_script[script] += seconds
            in_workers += seconds
    by_phase["Ray's overhead around steps"] = held - in_workers
    by_phase["no step held (cores idle)"] = workers * span - held
    core_seconds = workers * span
    print(f"\nprofile: {len(timeline)} steps ({', '.join(f'{counts[s]} {s}' for s in sorted(counts))}); "
          f"{workers} workers x {span:.0f} s from the first step's start to the last's end = "
          f"{core_seconds:.0f} core-seconds (the piece's wall time, Ray's start included: {wall:.0f} s)")
    print(f"{'phase':48s} {'core-s':>8s} {'share':>7s}")
    for name, seconds in by_phase.items():
        print(f"{name:48s} {seconds:8.1f} {100 * seconds / core_seconds:6.1f}%")
    print("by step kind (in the workers): " + ", ".join(f"{s} {by_script[s]:.0f} s" for s in sorted(by_script)))
    lone = _one_step_running(timeline, workers)
    print(f"seconds with fewer steps running than workers: {lone:.0f} s of {span:.0f} s")


def _one_step_running(timeline: list[dict], workers: int) -> float:
    """Seconds of the timeline during which fewer steps ran than there are workers."""
    events = sorted([(float(r["start_s"]), 1) for r in timeline] + [(float(r["end_s"]), -1) for r in timeline])
    running, last, short = 0, 0.0, 0.0
    for when, change in events:
        if running < workers:
            short += when - last
        running += change
        last = when
    return short


# ---------------------------------------------------------------- several commits
def same_files(first: Path, second: Path) -> tuple[int, list[str]]:
    """(files compared, those that differ): every checkpoint's tensors and every performances.txt."""
    import torch

    compared, differ = 0, []
    for path in sorted(first.rglob("*")):
        if path.suffix not in (".pt", ".txt") or (path.suffix == ".txt" and path.name != "performances.txt"):
            continue
        other = second / path.relative_to(first)
        compared += 1
        if not other.exists():
            differ.append(f"{path.relative_to(first)} (missing)")
        elif path.suffix == ".txt":
            if path.read_bytes() != other.read_bytes():
                differ.append(str(path.relative_to(first)))
        else:
            a = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
            b = torch.load(other, map_location="cpu", weights_only=True)["state_dict"]
            if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
                differ.append(str(path.relative_to(first)))
    return compared, differ


def aulcs(work: Path, args) -> dict:
    """Each method's AULC in the run: mean top-1 over its evaluation points and nets (iteration 0 included)."""
    import numpy as np

    seed_folder = f"seed{args.seed}/" if args.seed else ""
    root = work / args.preset / "extracted_results" / f"{seed_folder}{args.model_num}" / args.dataset
    result = {}
    for method in args.methods:
        points = sorted((root / method).glob("*/performances.txt"), key=lambda p: int(p.parent.name))
        top1 = [np.loadtxt(p, ndmin=2)[:, 0].mean() for p in points]
        result[method] = float(np.mean(top1)) if top1 else float("nan")
    return result


def main(argv=None):
    args = parse_args(argv)
    temp = Path(tempfile.mkdtemp(prefix="bench_piece."))
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; OMP_NUM_THREADS=1 per worker; "
          f"python {sys.version.split()[0]}")
    print("\n".join(load_average_lines()))
    print(f"piece: run_grid.py --preset {args.preset} --datasets {args.dataset} --model_nums {args.model_num} "
          f"--methods {' '.join(args.methods)} --seeds {args.seed} --num_cpus {args.workers} {' '.join(args.extra)}",
          flush=True)
    try:
        if args.profile:
            profile_dir = temp / "profile"
            wall, summary = run_piece(PROJECT, temp / "work-profile", args, profile_dir)
            print(f"\nprofiled at this checkout ({git('rev-parse', '--short=12', 'HEAD')}"
                  f"{'+modified' if git('status', '--porcelain', '--untracked-files=no') else ''}): "
                  f"{wall:.1f} s\n{summary}")
            report_profile(profile_dir, wall, args.workers)
        if args.commits:
            walls, works = [], []
            for position, entry in enumerate(args.commits):
                commit, _, assignments = entry.partition(":")
                variables = dict(a.split("=", 1) for a in assignments.split(",") if a)
                tree = temp / f"tree-{position}"
                full = export(commit, tree)
                works.append(temp / f"work-{position}")
                wall, summary = run_piece(tree, works[-1], args, variables=variables)
                walls.append(wall)
                print(f"\n{entry} ({full[:12]}: {git('log', '-1', '--format=%s', full)[:70]}): {wall:.1f} s\n{summary}",
                      flush=True)
            first = aulcs(works[0], args)
            for position, entry in enumerate(args.commits[1:], start=1):
                compared, differ = same_files(works[0], works[position])
                print(f"\n{entry} against {args.commits[0]}: {walls[0] / walls[position]:.2f}x as fast; "
                      f"{compared - len(differ)} of {compared} checkpoints and performances.txt files the same "
                      f"bit for bit" + (f"; differ: {', '.join(differ[:6])}{' ...' if len(differ) > 6 else ''}"
                                        if differ else ""))
                later = aulcs(works[position], args)
                print("AULC (mean top-1 %): " + ", ".join(f"{m} {first[m]:.3f} -> {later[m]:.3f}" for m in first))
        print("\n".join(load_average_lines()).replace("at start", "at end"))
    finally:
        if args.keep:
            print(f"kept: {temp}")
        else:
            subprocess.run(["rm", "-rf", str(temp)], check=False)


if __name__ == "__main__":
    main()
