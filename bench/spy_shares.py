"""Where a running campaign's time goes, from py-spy samples of its grid workers (a benchmark reader).

    py-spy record -p WORKER_PID -d 7200 -r 10 --nonblocking -f raw -o worker_PID.txt   # each worker, beside the piece
    python bench/spy_shares.py worker_*.txt

py-spy (an external tool: `pip install py-spy`) samples the Python stacks of a live process without
touching it, so the piece runs as the campaign runs it; `bench_piece.py --profile` instead runs its
own piece under cProfile. Only each worker's main thread counts (Ray's helper threads sleep). Each
sample goes to the first phase whose function its stack passes through, in the order of PHASES;
the shares are of the samples, at the sampling rate also seconds of one core.
"""
import argparse
from collections import Counter

# (phase, what a stack in it passes through), most specific first: a pool pass runs inside training.
PHASES = [
    ("training: passes over the pool (snapshots, probabilities, features)", ("train_target_net", "predict (")),
    ("training: SGD update", ("train_target_net", "Optimizer.profile_hook_step")),
    ("training: backward", ("train_target_net", "backward")),
    ("training: forward and loss", ("train_target_net", "step (diam/training.py")),
    ("training: the rest (augmentation, epoch order, BatchNorm setup)", ("train_target_net",)),
    ("test steps", ("run_test (",)),
    ("selection steps", ("run_select (",)),
]
OTHER = "outside these (building and loading nets, data, writing, Ray)"


def phase_of(stack: str) -> str:
    for phase, marks in PHASES:
        if all(mark in stack for mark in marks):
            return phase
    return OTHER


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+", help="py-spy raw output files (-f raw), one per worker")
    parser.add_argument("--rate", type=float, default=10, help="the samples per second py-spy took (-r)")
    args = parser.parse_args(argv)
    shares = Counter()
    for name in args.profiles:
        with open(name) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if "default_worker.py" in stack.split(";", 1)[0]:  # the worker's main thread
                    shares[phase_of(stack)] += int(count)
    total = sum(shares.values())
    if not total:
        raise SystemExit("spy_shares.py: no sample of a Ray worker's main thread in these files: record the "
                         "StepWorker processes (`ps aux | grep StepWorker`) with py-spy's -f raw.")
    print(f"{total} samples of the workers' main threads ({total / args.rate:,.0f} core-seconds at {args.rate:g} Hz)")
    for phase, count in shares.most_common():
        print(f"{100 * count / total:5.1f}%  {count / args.rate:7,.0f} s  {phase}")


if __name__ == "__main__":
    main()
