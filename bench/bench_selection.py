"""Time every query strategy at paper scale on synthetic inputs (a benchmark, not a test).

    python bench/bench_selection.py [--device cuda] [--strategies coreset,DIAM] ...

Each measurement runs in a fresh (spawned) Python process, so one strategy's
memory cannot hide in another's. Memory is read from Linux's /proc/self/status:
VmRSS just before selection (Python, numpy, torch and the synthetic inputs), then
VmHWM, the peak resident set size, after resetting it through /proc/self/clear_refs
so that it covers the selection only; their difference is what selection added.
(`getrusage`'s ru_maxrss is not used: in a spawned child it also counts the
parent's resident set at fork time. If the reset is refused, the peak is the whole
child's and the table says so.)

Baseline: alipy's QueryInstanceCoresetGreedy and QueryInstanceQBC.calc_vote_entropy
on the same synthetic inputs, run once each (their cost makes repeats impractical),
with our function at the same pool size beside them and the picks compared.
"""
import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

# Runs as a plain script from any directory: make the `diam` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diam.strategies import STRATEGIES, SelectionInputs, SelectionOptions, coreset, vote_entropy  # noqa: E402
from machine import cpu_model  # noqa: E402  (bench/machine.py)

SEED = 0
# Snapshot realism: most examples are easy (every model's snapshots agree with
# probability 0.98), a hard tenth are disagreed on by each model with probability 0.6.
HARD_FRACTION, HARD_DISAGREE, EASY_DISAGREE = 0.1, 0.6, 0.02
# In a disagreeing model, each snapshot swaps to a random class with this probability.
SNAPSHOT_NOISE = 0.4


@dataclass
class Config:
    device: str
    unlabeled: int
    labeled: int
    dim: int
    models: int
    snapshots: int
    classes: int
    batch: int
    repeats: int


@dataclass
class Measurement:
    name: str
    pool: int
    seconds: list[float]
    peak_rss_mb: float
    rss_before_mb: float
    peak_covers_selection_only: bool
    gpu_peak_mb: float | None = None
    output: np.ndarray | None = field(default=None, repr=False)  # picks, or scores


# ------------------------------------------------------------ synthetic inputs

def synthetic_features(config: Config, n_unlabeled: int):
    """Standard-normal float32 features, generated straight into float32 so that
    generation does not set the memory peak."""
    rng = np.random.default_rng([SEED, 1])
    unlabeled = rng.standard_normal((n_unlabeled, config.dim), dtype=np.float32)
    labeled = rng.standard_normal((config.labeled, config.dim), dtype=np.float32)
    return unlabeled, labeled


def synthetic_probs(config: Config) -> np.ndarray:
    rng = np.random.default_rng([SEED, 2])
    logits = 3.0 * rng.standard_normal((config.models, config.unlabeled, config.classes),
                                       dtype=np.float32)
    logits -= logits.max(axis=2, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=2, keepdims=True)
    return logits


def synthetic_snapshot_labels(config: Config) -> np.ndarray:
    rng = np.random.default_rng([SEED, 3])
    n_models, n_snapshots, n_unlabeled, n_classes = (
        config.models, config.snapshots, config.unlabeled, config.classes)
    true_label = rng.integers(0, n_classes, n_unlabeled)
    hard = rng.random(n_unlabeled) < HARD_FRACTION
    model_disagrees = rng.random((n_models, n_unlabeled)) < np.where(hard, HARD_DISAGREE,
                                                                     EASY_DISAGREE)
    labels = np.broadcast_to(true_label, (n_models, n_snapshots, n_unlabeled)).copy()
    noisy = (rng.random(labels.shape) < SNAPSHOT_NOISE) & model_disagrees[:, None, :]
    labels[noisy] = rng.integers(0, n_classes, int(noisy.sum()))
    # The first snapshot keeps the true label and the last one never does, so every
    # disagreeing model really disagrees.
    labels[:, 0, :] = true_label
    model_index, example_index = np.nonzero(model_disagrees)
    labels[model_index, n_snapshots - 1, example_index] = (
        true_label[example_index] + rng.integers(1, n_classes, len(example_index))) % n_classes
    return labels


def synthetic_inputs(config: Config, needs: str) -> SelectionInputs:
    if needs == "probs":
        return SelectionInputs(config.unlabeled, unlabeled_probs=synthetic_probs(config))
    if needs == "features":
        unlabeled, labeled = synthetic_features(config, config.unlabeled)
        return SelectionInputs(config.unlabeled, unlabeled_features=unlabeled,
                               labeled_features=labeled)
    if needs == "snapshots":
        return SelectionInputs(config.unlabeled,
                               snapshot_labels=synthetic_snapshot_labels(config))
    return SelectionInputs(config.unlabeled)


# ------------------------------------------------- measured in a fresh process

def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        kilobytes = next(line.split()[1] for line in status if line.startswith(key + ":"))
    return int(kilobytes) / 1024


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _timed(name: str, pool: int, config: Config, run, repeats: int) -> Measurement:
    """Run `run()` `repeats` times in this (fresh) process; time each, keep its output."""
    rss_before = _proc_status_mb("VmRSS")
    peak_covers_selection_only = _reset_peak_rss()
    if config.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds, output = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        output = run()
        if config.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    gpu_peak = (torch.cuda.max_memory_allocated() / 2**20
                if config.device.startswith("cuda") else None)
    return Measurement(name, pool, seconds, _proc_status_mb("VmHWM"), rss_before,
                       peak_covers_selection_only, gpu_peak, np.asarray(output))


def measure_strategy(method: str, config: Config) -> Measurement:
    strategy = STRATEGIES[method]
    inputs = synthetic_inputs(config, strategy.needs)
    rng = np.random.default_rng([SEED, 4])
    return _timed(method, config.unlabeled, config,
                  lambda: strategy.select(inputs, config.batch, rng, SelectionOptions(config.device)),
                  config.repeats)


def measure_our_coreset(config: Config, pool: int) -> Measurement:
    unlabeled, labeled = synthetic_features(config, pool)
    return _timed("coreset (ours)", pool, config,
                  lambda: coreset(unlabeled, labeled, config.batch, device=config.device), 1)


def measure_alipy_coreset(config: Config, pool: int) -> Measurement:
    from alipy.query_strategy import QueryInstanceCoresetGreedy
    unlabeled, labeled = synthetic_features(config, pool)
    dataset = np.vstack([labeled, unlabeled])
    del unlabeled
    n_labeled = labeled.shape[0]

    def run():
        # alipy selects among dataset indices; labeled rows come first, so index - L
        # is the unlabeled position.
        query = QueryInstanceCoresetGreedy(dataset, np.zeros(len(dataset)),
                                           np.arange(len(dataset)))
        picks = query.select(np.arange(n_labeled), np.arange(n_labeled, len(dataset)),
                             batch_size=config.batch)
        return np.asarray(picks) - n_labeled
    return _timed("coreset (alipy)", pool, config, run, 1)


def measure_our_vote_entropy(config: Config) -> Measurement:
    labels = synthetic_snapshot_labels(config)
    return _timed("vote entropy (ours)", config.unlabeled, config,
                  lambda: vote_entropy(labels), 1)


def measure_alipy_vote_entropy(config: Config) -> Measurement:
    from alipy.query_strategy import QueryInstanceQBC
    labels = synthetic_snapshot_labels(config)

    def run():
        # alipy scores one committee (a model's K snapshots, as K label vectors) at a
        # time; the DIAM score sums over models.
        return sum(np.asarray(QueryInstanceQBC.calc_vote_entropy(list(model_snapshots)))
                   for model_snapshots in labels)
    return _timed("vote entropy (alipy)", config.unlabeled, config, run, 1)


def in_fresh_process(function, *args) -> Measurement:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# ----------------------------------------------------------------------- report

def machine_description(device: str) -> list[str]:
    lines = [f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} usable CPU cores "
             f"({os.cpu_count()} present), torch threads {torch.get_num_threads()}",
             f"software: Python {platform.python_version()}, torch {torch.__version__}, "
             f"numpy {np.__version__}, {platform.system()} {platform.release()}",
             f"device: {device}"]
    if device.startswith("cuda"):
        lines[-1] += f" ({torch.cuda.get_device_name(device)})"
    return lines


def table_row(measurement: Measurement) -> str:
    seconds = measurement.seconds
    row = (f"{measurement.name:<22}{measurement.pool:>8}{statistics.median(seconds):>11.3f}"
           f"{min(seconds):>9.3f}{len(seconds):>6}{measurement.rss_before_mb:>12.0f}"
           f"{measurement.peak_rss_mb:>10.0f}"
           f"{measurement.peak_rss_mb - measurement.rss_before_mb:>10.0f}")
    if not measurement.peak_covers_selection_only:
        row += " (peak: whole process)"
    if measurement.gpu_peak_mb is not None:
        row += f"{measurement.gpu_peak_mb:>11.0f}"
    return row


def table_header(device: str) -> str:
    header = (f"{'strategy':<22}{'pool U':>8}{'median s':>11}{'min s':>9}{'runs':>6}"
              f"{'RSS before':>12}{'peak RSS':>10}{'extra':>10}")
    if device.startswith("cuda"):
        header += f"{'GPU peak':>11}"
    return header + "\n" + "-" * len(header) + "   (memory in MiB)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device for coreset")
    parser.add_argument("--unlabeled", type=int, default=57000)
    parser.add_argument("--labeled", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=1280, help="feature dimension")
    parser.add_argument("--models", type=int, default=12, help="target models T")
    parser.add_argument("--snapshots", type=int, default=10, help="late-epoch snapshots K")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per strategy")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated names from: " + ", ".join(STRATEGIES))
    parser.add_argument("--alipy-unlabeled", type=int, default=57000,
                        help="pool size for the alipy baseline (0: skip it); alipy's "
                             "coreset costs about 0.3 s per pick at 57,000 x 1,280 here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    methods = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = [name for name in methods if name not in STRATEGIES]
    if unknown:
        sys.exit(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    config = Config(args.device, args.unlabeled, args.labeled, args.dim, args.models,
                    args.snapshots, args.classes, args.batch, args.repeats)

    print("\n".join(machine_description(config.device)))
    print(f"inputs: U={config.unlabeled} unlabeled, L={config.labeled} labeled, "
          f"{config.dim}-d float32 standard-normal features, T={config.models} models, "
          f"K={config.snapshots} snapshots, C={config.classes} classes, batch B={config.batch}, "
          f"seed {SEED}")
    if any(STRATEGIES[name].needs == "snapshots" for name in methods):
        labels = synthetic_snapshot_labels(config)
        model_disagrees = (labels != labels[:, :1, :]).any(axis=1)
        print(f"snapshot labels: {model_disagrees.any(axis=0).mean():.1%} of examples are "
              f"disagreed on by at least one model, {model_disagrees.mean():.1%} of "
              "(model, example) pairs disagree")
        del labels, model_disagrees
    print("memory: one fresh process per row; 'RSS before' = resident set just before "
          "selection (Python, torch, inputs), 'peak RSS' = peak resident set during "
          "selection (VmHWM, reset just before it), 'extra' = peak - before; resident sets "
          "include torch library code paged in on first use\n")

    print(table_header(config.device))
    for method in methods:
        print(table_row(in_fresh_process(measure_strategy, method, config)), flush=True)

    if args.alipy_unlabeled <= 0:
        return
    pool = args.alipy_unlabeled
    alipy_version = importlib.metadata.version("alipy")
    print(f"\nbaseline: alipy {alipy_version}, one run each; coreset at pool U={pool} "
          f"(L={config.labeled}, B={config.batch}), vote entropy at U={config.unlabeled}; "
          "alipy's time includes building its query object")
    print(table_header(config.device))
    ours = in_fresh_process(measure_our_coreset, config, pool)
    print(table_row(ours), flush=True)
    theirs = in_fresh_process(measure_alipy_coreset, config, pool)
    print(table_row(theirs), flush=True)
    differs = np.flatnonzero(ours.output != theirs.output)
    agreement = ("identical picks in identical order" if differs.size == 0
                 else f"same first {differs[0]} picks, "
                      f"{len(np.intersect1d(ours.output, theirs.output))} of {len(ours.output)} "
                      "in common")
    ours_ve = in_fresh_process(measure_our_vote_entropy, config)
    print(table_row(ours_ve), flush=True)
    theirs_ve = in_fresh_process(measure_alipy_vote_entropy, config)
    print(table_row(theirs_ve), flush=True)
    largest_gap = np.max(np.abs(ours_ve.output - theirs_ve.output))
    print(f"\ncoreset ours vs alipy: {agreement}; speed-up "
          f"{min(theirs.seconds) / min(ours.seconds):.1f}x")
    print(f"vote entropy ours vs alipy: largest difference {largest_gap:.1e} "
          f"(alipy adds 1e-9 inside its log); speed-up "
          f"{min(theirs_ve.seconds) / min(ours_ve.seconds):.1f}x")


if __name__ == "__main__":
    main()
