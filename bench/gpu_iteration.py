"""Iteration 0 of the paper in one process, timed phase by phase, then bf16's label flips (the GPU check's headline).

    python bench/gpu_iteration.py [--device cuda] [--dataset fmnist] [--model_num 12] [--preset paper]
                                  [--cap 300] [--target 180] [--bf16_pool 5000] [--work_dir DIR] [OVERRIDES...]

The steps the scripts run, through diam.experiment, in this one process: train nets
0..T-1 of iteration 0 (each recording its 10 late-epoch snapshot passes over the
unlabeled pool, the last also the probabilities), test them, then select with DIAM,
CAL and entropy. The speed switches come from the environment (DIAM_CUDA_FAST,
DIAM_SCORING, DIAM_SCORING_BATCH; docs/gpu.md). Every figure is printed (and flushed)
as soon as it is known, so a run killed part way still reports:

- the data's load onto the device;
- each net's training run, and within it the time spent in its passes over the pool
  (each pass ends with a copy to the host, so its wall time is its device time);
  with DIAM_CUDA_FAST=streams nets overlap, and the per-net figures overlap too;
- the test of the T nets, each selection, and the total against --target seconds.

The whole iteration is capped at --cap seconds (SIGALRM): past it the script says how
far it got and exits 3.

Then, unless --bf16_pool 0: every snapshot the training passes scored was kept on the
device (a copy of the net per pass); each is scored again over --bf16_pool unlabeled
images, in fp32 with TF32 off (the reference), fp32 with TF32 and bf16 autocast. It
reports the share of labels each flips against the reference, and how many of
DIAM's top-B picks (and of its B random draws from the top 5B, same generator) the
flipped snapshots keep, B scaled to the subset (B x bf16_pool / U).
"""
import time

START = time.perf_counter()  # before the imports of torch and diam, which take seconds

import argparse  # noqa: E402
import copy  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diam import cli, experiment, training  # noqa: E402
from diam.run import Run  # noqa: E402
from diam.settings import settings_from_args  # noqa: E402
from diam.strategies import diam  # noqa: E402


def say(text: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {text}", flush=True)


class OutOfTime(Exception):
    pass


class PassLog:
    """Wraps diam.training.predict: times each pass and keeps a copy of the net it scored."""

    def __init__(self, keep_nets: bool):
        self.keep_nets = keep_nets
        self.lock = threading.Lock()
        self.nets = {}  # id(net) -> net, kept alive so that no later net reuses its id
        self.seconds = {}  # id(net) -> seconds in passes
        self.snapshots = {}  # id(net) -> [(net copy, size), ...] in pass order
        self.real_predict = training.predict

    def __call__(self, net, images, size, *args, **kwargs):
        start = time.perf_counter()
        out = self.real_predict(net, images, size, *args, **kwargs)
        seconds = time.perf_counter() - start
        kept = copy.deepcopy(net) if self.keep_nets else None
        with self.lock:
            self.nets[id(net)] = net
            self.seconds[id(net)] = self.seconds.get(id(net), 0.0) + seconds
            if kept is not None:
                self.snapshots.setdefault(id(net), []).append((kept, size))
        return out


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--model_num", type=int, default=12)
    p.add_argument("--preset", default="paper")
    p.add_argument("--work_dir", default=None, help="run folder root (default: a temporary folder)")
    p.add_argument("--cap", type=int, default=300, help="seconds the iteration may take (default 300)")
    p.add_argument("--target", type=float, default=180.0, help="the goal for the total (default 180 s)")
    p.add_argument("--bf16_pool", type=int, default=5000,
                   help="unlabeled images the bf16 check scores per snapshot (default 5,000; 0: no check)")
    args, overrides = p.parse_known_args()  # anything else goes to the scripts' parsers (e.g. --epochs 2)
    if args.cap < 1 or args.model_num < 1 or args.bf16_pool < 0:
        p.error("--cap and --model_num must be positive, --bf16_pool at least 0")
    return args, overrides


def timed_iteration(args, common, passes: PassLog):
    """Train, test, select; returns the Run of the training step."""
    train_args = cli.train_args(["--net_id", *map(str, range(args.model_num)), *common])
    run = Run(settings_from_args(train_args))
    say(f"device {run.device}; speed switches: scoring {run.speed.scoring}, scoring batch "
        f"{run.speed.scoring_batch or run.settings.preset.eval_batch}, "
        f"CUDA pieces: {', '.join(run.speed.cuda_pieces()) or 'none'}")
    began = time.perf_counter()
    data = run.data
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    say(f"setup: {len(data.pool_labels):,} pool and {len(data.test_labels):,} test images on the device in "
        f"{time.perf_counter() - began:.1f} s")

    phase = time.perf_counter()
    if run.speed.concurrent_nets > 1 and args.model_num > 1:
        for line in experiment.train_steps_at_once(run, list(range(args.model_num))):
            say(f"  {line}")
    else:
        for net_id in range(args.model_num):
            start = time.perf_counter()
            before = sum(passes.seconds.values())
            line = experiment.train_step(run, net_id)
            net_seconds = time.perf_counter() - start
            say(f"  net {net_id}: {net_seconds:.1f} s, of which passes over the pool "
                f"{sum(passes.seconds.values()) - before:.1f} s ({line.split(':')[0]})")
    train_seconds = time.perf_counter() - phase
    scoring = sum(passes.seconds.values())
    say(f"phase train: {train_seconds:.1f} s for {args.model_num} nets; passes over the pool (snapshot "
        f"scoring) {scoring:.1f} s of it{' (summed over overlapping nets)' if run.speed.concurrent_nets > 1 else ''}")

    phase = time.perf_counter()
    line = experiment.test_step(Run(settings_from_args(cli.test_args(["--method", "random", *common]))))
    say(f"phase test: {time.perf_counter() - phase:.1f} s ({line})")
    for method in ("DIAM", "CAL", "entropy"):
        phase = time.perf_counter()
        step = Run(settings_from_args(cli.select_args(["--method", method, *common])))
        line = experiment.select_step(step)
        say(f"phase selection {method}: {time.perf_counter() - phase:.1f} s ({line.split(':')[0]})")
    return run, began


def bf16_check(args, run, passes: PassLog):
    labeled, unlabeled = run.split()
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(len(unlabeled), size=min(args.bf16_pool, len(unlabeled)), replace=False))
    images = run.data.pool_images[torch.from_numpy(unlabeled[subset]).to(run.device)]
    say(f"bf16 check: {len(passes.snapshots)} nets x {max(map(len, passes.snapshots.values()))} snapshots, "
        f"{len(subset):,} unlabeled images each")
    kinds = {"fp32, TF32 off": (False, False), "fp32, TF32 on": (False, True), "bf16": (True, True)}
    labels = {kind: [] for kind in kinds}
    for net_index, snapshots in enumerate(passes.snapshots.values()):
        per_kind = {kind: [] for kind in kinds}
        for net, size in snapshots:
            for kind, (bf16, tf32) in kinds.items():
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
                per_kind[kind].append(training.predict(net, images, size, run.settings.preset.eval_batch, bf16=bf16,
                                                       speed=run.speed)[0])
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        reference = np.stack(per_kind["fp32, TF32 off"])
        flips = {kind: np.mean(np.stack(per_kind[kind]) != reference) for kind in ("fp32, TF32 on", "bf16")}
        say(f"  net (in training order) {net_index}: labels flipped against fp32 without TF32: TF32 "
            f"{100 * flips['fp32, TF32 on']:.3f}%, bf16 {100 * flips['bf16']:.3f}%")
        for kind in kinds:
            labels[kind].append(np.stack(per_kind[kind]))
    reference = np.stack(labels["fp32, TF32 off"])
    batch = max(1, round(run.settings.preset.query_batch * len(subset) / len(unlabeled)))
    for kind in ("fp32, TF32 on", "bf16"):
        other = np.stack(labels[kind])
        top = [set(diam(x, batch, np.random.default_rng(1), candidate_factor=1)) for x in (reference, other)]
        drawn = [set(diam(x, batch, np.random.default_rng(1))) for x in (reference, other)]
        say(f"bf16 check, {kind}: {100 * np.mean(other != reference):.3f}% of {reference.size:,} snapshot labels "
            f"flipped; DIAM's top-{batch} keeps {len(top[0] & top[1])} of {batch}, its {batch} draws from the "
            f"top {5 * batch} keep {len(drawn[0] & drawn[1])}")


def main():
    args, overrides = parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="gpu_iteration.")
    try:
        measure(args, overrides, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def measure(args, overrides, work):
    common = ["--dataset", args.dataset, "--model_num", str(args.model_num), "--al_iter", "0",
              "--preset", args.preset, "--device", args.device, "--work_dir", work, *overrides]
    keep = args.bf16_pool > 0
    passes = PassLog(keep_nets=keep)
    training.predict = passes  # train_target_net looks predict up in its module at each pass

    def out_of_time(signum, frame):
        raise OutOfTime

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.cap)
    try:
        run, began = timed_iteration(args, common, passes)
    except OutOfTime:
        trained = len(list(Path(work).rglob("iter0/net*.pt")))
        say(f"FAILED: iteration 0 ran out of its {args.cap} s cap ({trained} of {args.model_num} nets trained)")
        os._exit(3)  # nets training in other threads cannot be stopped otherwise
    finally:
        signal.alarm(0)
    total = time.perf_counter() - began
    verdict = "within" if total <= args.target else "over"
    say(f"iteration 0 total (data on the device to the last selection): {total:.1f} s, {verdict} the "
        f"{args.target:.0f} s target ({time.perf_counter() - START:.1f} s since the script began, imports included)")
    training.predict = passes.real_predict
    if keep:
        bf16_check(args, run, passes)


if __name__ == "__main__":
    main()
