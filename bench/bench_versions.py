"""One training step of the project at two commits, one after the other (a benchmark for an idle machine).

    python bench/bench_versions.py --old 5aca713 --new HEAD [--repeats 2] [--threads 1]
                                   [--preset repro] [--dataset fmnist] [--new_threads 2]

Each commit's tree is exported with `git archive` into a temporary folder (the
repository is not touched), and there, with this Python, the step a user runs:

    train_net.py --net_id 0 --dataset fmnist --al_iter 0 --model_num 1 --preset repro --device cpu

(net 0 of iteration 0 at the reproduction's preset: 20 epochs on 200 labels and, in the
same run, the 10 late-epoch passes over the 2,800 unlabeled images, the last also giving
the probabilities and the pool's features), then `test_multi_models.py` for its test
accuracy. The runs alternate (old, new, old, new, ...), each in a fresh work folder, so a
change in the machine's load hits both. Reported: the wall time of each training step,
the median per commit and their ratio, each commit's top-1/top-5, whether the two
trained nets are bit for bit the same, and how far their pool records agree (snapshot
labels, probabilities). Fashion-MNIST is read from $DIAM_DATA_ROOT (or --data_root).

With --new_threads the new commit's steps run on another thread count: `--old HEAD --new HEAD
--threads 1 --new_threads 2` shows what the thread count alone does to a trained net (the
times are then not a comparison of code).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, export, git, load_average_lines  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--old", required=True, help="the commit to compare against (e.g. the campaign's pinned one)")
    p.add_argument("--new", default="HEAD", help="the commit to time (default: HEAD)")
    p.add_argument("--repeats", type=int, default=2, help="training steps per commit (default 2)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each step (default 1, as one "
                                                           "of the campaign's workers)")
    p.add_argument("--new_threads", type=int, help="OMP_NUM_THREADS of the new commit's steps (default: --threads)")
    p.add_argument("--preset", default="repro")
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--data_root", default=os.environ.get("DIAM_DATA_ROOT"),
                   help="folder holding FashionMNIST/raw (default: $DIAM_DATA_ROOT)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = p.parse_args()
    args.new_threads = args.new_threads or args.threads
    if args.repeats < 1 or args.threads < 1 or args.new_threads < 1:
        p.error("--repeats, --threads and --new_threads must be at least 1")
    if args.dataset != "digits" and not args.data_root:
        p.error(f"--dataset {args.dataset} needs --data_root or $DIAM_DATA_ROOT (a folder holding its raw files)")
    return args


NET_ID = 0  # model_num 1: the test step then needs no other net


def step_args(args, work: Path) -> list[str]:
    return ["--dataset", args.dataset, "--al_iter", "0", "--model_num", "1", "--preset", args.preset,
            "--device", "cpu", "--work_dir", str(work)]


def run(tree: Path, script: str, argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, script, *argv], cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{script} failed in {tree} ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def outputs(work: Path, args):
    """(top-1, top-5) of the test, the checkpoint's tensors and the pool record of the trained net."""
    import torch

    root = work / args.preset / args.dataset  # iteration 0's files, where every commit has kept them
    performances = next(work.rglob("performances.txt")).read_text().split()
    state = torch.load(root / "models" / "iter0" / f"net{NET_ID}.pt", map_location="cpu",
                       weights_only=True)["state_dict"]
    with np.load(root / "models" / "iter0" / f"net{NET_ID}_pool.npz") as z:
        pool = dict(z)
    return (float(performances[0]), float(performances[1])), state, pool


def main():
    args = parse_args()
    temp = Path(tempfile.mkdtemp(prefix="bench_versions."))
    base = {key: value for key, value in os.environ.items() if key != "DIAM_WORK_DIR"}
    if args.data_root:
        base["DIAM_DATA_ROOT"] = str(Path(args.data_root).resolve())
    envs = {name: {**base, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            for name, threads in (("old", args.threads), ("new", args.new_threads))}
    try:
        trees = {}
        for name, commit in (("old", args.old), ("new", args.new)):
            trees[name] = (temp / name, export(commit, temp / name))
        threads = str(args.threads) if args.new_threads == args.threads else f"{args.threads} (new: {args.new_threads})"
        print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; OMP_NUM_THREADS={threads}; "
              f"python {sys.version.split()[0]}")
        print("\n".join(load_average_lines()))
        print(f"step: train_net.py --net_id {NET_ID} {' '.join(step_args(args, Path('WORK')))}; then "
              f"test_multi_models.py --method random; {args.repeats} step(s) per commit, alternating")
        for name, (_, full) in trees.items():
            print(f"{name}: {full[:10]} ({git('log', '-1', '--format=%s', full)[:80]})")
        print(flush=True)
        seconds = {"old": [], "new": []}
        results = {}
        for repeat in range(args.repeats):
            for name in ("old", "new") if repeat % 2 == 0 else ("new", "old"):
                tree, _ = trees[name]
                work = temp / f"work-{name}-{repeat}"
                train = run(tree, "train_net.py", ["--net_id", str(NET_ID), *step_args(args, work)], envs[name])
                test = run(tree, "test_multi_models.py", ["--method", "random", *step_args(args, work)], envs[name])
                seconds[name].append(train)
                results.setdefault(name, outputs(work, args))
                print(f"  {name} step {repeat + 1}: training step {train:.1f} s (test {test:.1f} s)", flush=True)
        median = {name: statistics.median(s) for name, s in seconds.items()}
        print(f"\ntraining step, median wall time: old {median['old']:.1f} s, new {median['new']:.1f} s: "
              f"new is {median['old'] / median['new']:.2f}x as fast")
        for name in ("old", "new"):
            top1, top5 = results[name][0]
            print(f"test accuracy of net {NET_ID}, {name}: top-1 {top1:.2f}%, top-5 {top5:.2f}%")
        (_, old_state, old_pool), (_, new_state, new_pool) = results["old"], results["new"]
        same = old_state.keys() == new_state.keys() and all((old_state[k] == new_state[k]).all()
                                                            for k in old_state)
        print(f"trained weights and BatchNorm buffers bit for bit the same: {'yes' if same else 'no'}")
        if "snapshot_labels" in old_pool and "snapshot_labels" in new_pool:
            agree = np.mean(old_pool["snapshot_labels"] == new_pool["snapshot_labels"])
            print(f"snapshot labels that agree: {100 * agree:.3f}% of {old_pool['snapshot_labels'].size:,} "
                  f"({old_pool['snapshot_labels'].shape[0]} snapshots x {old_pool['snapshot_labels'].shape[1]:,})")
        if "unlabeled_probs" in old_pool and "unlabeled_probs" in new_pool:
            diff = np.abs(old_pool["unlabeled_probs"] - new_pool["unlabeled_probs"]).max()
            print(f"largest difference of the recorded probabilities: {diff:.2e}")
        print(json.dumps({"old_s": seconds["old"], "new_s": seconds["new"]}))
    finally:
        if args.keep:
            print(f"kept: {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
