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

DIAM_qp is left out of the default list (as it is out of iter_all.sh's): name it in
--strategies. It runs once at --unlabeled, with the time, CPU time and peak memory of
its three stages (k-NN co-occurrence, PSD projection, QP) and the route that solved the
QP (certified, or OSQP when the certificate failed); then, at --dense-unlabeled, three
ways on the same inputs: ours (certified), ours with OSQP as the QP solver, and the
authors' dense route (dense n x n distances and a full sort per row, a dense count
matrix, one eigendecomposition of the whole matrix, OSQP on the dense projection), and
the picks are compared. With --scaling N,N,... it runs DIAM_qp alone at subsamples of
n = N (pool U = 5N), batch B scaled with n so that B / n stays at its value at
--unlabeled (1,500 / 11,400 by default), phase by phase, with the OSQP route beside it
where n <= --osqp-max-n.

lewis and lewis_oneshot are left out of the default list too: lewis times the Lewis-weight
sampling of one batch from every model's features (lewis_oneshot's draw is the same function
with a larger sample).

badge and bald are left out of the default list too; named, each gets its own section. badge runs
once from every model's probabilities and features at its default --badge_width, then with exact
features (width 0) for --badge-exact-batch picks only (its cost per pick is what matters: the same
for every pick). bald runs once from T x --passes MC-dropout outputs (scoring and ranking), then its
passes themselves: the K dropout passes of each model's last layer (1,280 -> C) over the pool's
features; the one pass of each net that computes those features is entropy's, timed by
bench_inference.py.
"""
import argparse
import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import qpsolvers
import scipy.sparse as sp
import torch
from sklearn.metrics import pairwise_distances

# Runs as a plain script from any directory: make the `diam` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diam.strategies as strategies  # noqa: E402
from diam.badge_bald import badge  # noqa: E402
from diam.mc_dropout import dropout_probs  # noqa: E402
from diam.presets import BADGE_FEATURE_WIDTH, BALD_PASSES  # noqa: E402
from diam.presets import DIAM_QP_MAX_SOLVER_ITERATIONS, DIAM_QP_SOLVER_TOLERANCE  # noqa: E402
from diam.methods import METHODS  # noqa: E402
from diam.pool import Pool  # noqa: E402
from diam.strategies import WeightedBatch, coreset, vote_entropy  # noqa: E402
from machine import cpu_model  # noqa: E402  (bench/machine.py)

SEED = 0
# Snapshot realism: most examples are easy (every model's snapshots agree with
# probability 0.98), a hard tenth are disagreed on by each model with probability 0.6.
HARD_FRACTION, HARD_DISAGREE, EASY_DISAGREE = 0.1, 0.6, 0.02
# In a disagreeing model, each snapshot swaps to a random class with this probability.
SNAPSHOT_NOISE = 0.4
# DIAM_qp's per-model features: one standard-normal part shared by all models plus this
# much of each model's own, so that the models' nearest neighbours overlap in part.
MODEL_FEATURE_NOISE = 0.5
# Methods left out unless named in --strategies.
OPT_IN_STRATEGIES = ("DIAM_qp", "lewis", "lewis_oneshot", "badge", "bald")
# The OFA nets' dropout rate on their penultimate features (the paper's 0.1).
DROPOUT_RATE = 0.1


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
    passes: int = BALD_PASSES  # bald's MC-dropout passes per model


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
    # (wall s, CPU s, peak RSS MiB since the selection started) per stage
    stages: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the strategy logged (DIAM_qp: the QP's route)
    cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time per run


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


def synthetic_model_features(config: Config) -> np.ndarray:
    """(T, U, dim) float16, as training stores every model's features."""
    rng = np.random.default_rng([SEED, 5])
    shared = rng.standard_normal((config.unlabeled, config.dim), dtype=np.float32)
    features = np.empty((config.models, config.unlabeled, config.dim), dtype=np.float16)
    for model in range(config.models):
        features[model] = shared + MODEL_FEATURE_NOISE * rng.standard_normal(
            (config.unlabeled, config.dim), dtype=np.float32)
    return features


def synthetic_dropout_probs(config: Config) -> np.ndarray:
    """(T, K, U, C) float32: each model's K passes scatter around its own softmax output."""
    rng = np.random.default_rng([SEED, 6])
    logits = 3.0 * rng.standard_normal((config.models, 1, config.unlabeled, config.classes), dtype=np.float32)
    passes = logits + rng.standard_normal((config.models, config.passes, config.unlabeled, config.classes),
                                          dtype=np.float32)
    passes -= passes.max(axis=3, keepdims=True)
    np.exp(passes, out=passes)
    passes /= passes.sum(axis=3, keepdims=True)
    return passes


def synthetic_inputs(config: Config, wanted: set) -> Pool:
    """A pool holding the `wanted` fields, generated before any timing starts."""
    return Pool(config.unlabeled, config.device, **synthetic_arrays(config, wanted))


def synthetic_arrays(config: Config, wanted: set) -> dict:
    arrays = {}
    if "unlabeled_probs" in wanted:
        arrays["unlabeled_probs"] = synthetic_probs(config)
    if wanted & {"unlabeled_features", "labeled_features"}:
        arrays["unlabeled_features"], arrays["labeled_features"] = synthetic_features(config, config.unlabeled)
    if "snapshot_labels" in wanted:
        arrays["snapshot_labels"] = synthetic_snapshot_labels(config)
    if wanted & {"unlabeled_model_features", "initial_model_features"}:
        arrays["unlabeled_model_features"] = arrays["initial_model_features"] = synthetic_model_features(config)
    if "dropout_probs" in wanted:
        arrays["dropout_probs"] = synthetic_dropout_probs(config)
    return arrays


def fields_asked(method: str, config: Config) -> set:
    """The pool fields `method`'s strategy asks for, learnt by running it on a small pool that records them."""
    small, asked = replace(config, device="cpu", unlabeled=60, labeled=5, dim=min(config.dim, 8), batch=3), set()
    given = synthetic_arrays(small, {"unlabeled_probs", "unlabeled_features", "snapshot_labels",
                                     "unlabeled_model_features", "dropout_probs"})

    def recorded(name):
        def load(*args):
            asked.add(name)
            return given[name]
        return load

    pool = Pool(small.unlabeled, fetch={name: recorded(name) for name in given})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        METHODS[method].select(pool, small.batch, np.random.default_rng(SEED), METHODS[method].settings())
    return asked


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
    seconds, cpu_seconds, output = [], [], None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        output = run()
        if isinstance(output, WeightedBatch):
            output = output.positions
        if config.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    gpu_peak = (torch.cuda.max_memory_allocated() / 2**20
                if config.device.startswith("cuda") else None)
    return Measurement(name, pool, seconds, _proc_status_mb("VmHWM"), rss_before,
                       peak_covers_selection_only, gpu_peak, np.asarray(output), cpu_seconds=cpu_seconds)


def measure_strategy(method: str, config: Config) -> Measurement:
    strategy = METHODS[method]
    inputs = synthetic_inputs(config, fields_asked(method, config))
    rng = np.random.default_rng([SEED, 4])
    return _timed(method, config.unlabeled, config,
                  lambda: strategy.select(inputs, config.batch, rng, strategy.settings()),
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


def _end_stage(stages: dict, name: str, start: float, cpu_start: float) -> None:
    stages[name] = (time.perf_counter() - start, time.process_time() - cpu_start, _proc_status_mb("VmHWM"))


def _timing_stage(stages: dict, name: str, function):
    def timed(*args, **kwargs):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        _end_stage(stages, name, start, cpu_start)
        return result
    return timed


def measure_our_diam_qp(config: Config, pool: int, qp_method: str = "certified") -> Measurement:
    """diam.strategies.diam_qp itself (what METHODS["DIAM_qp"] calls), its three helpers
    timed where it calls them, and what it logs (the QP's route) kept."""
    inputs = synthetic_inputs(dataclasses.replace(config, unlabeled=pool),
                              {"snapshot_labels", "unlabeled_model_features"})
    stages: dict[str, tuple[float, float, float]] = {}
    for stage, helper in (("k-NN", "knn_cooccurrence"), ("projection", "nearest_psd"),
                          ("QP", "solve_selection_qp")):
        setattr(strategies, helper, _timing_stage(stages, stage, getattr(strategies, helper)))
    name = "DIAM_qp (ours)" if qp_method == "certified" else f"DIAM_qp ({qp_method})"
    with strategies.strategy_notes() as notes:
        measurement = _timed(name, pool, config,
                             lambda: strategies.diam_qp(inputs.snapshot_labels, inputs.unlabeled_model_features,
                                                        config.batch, np.random.default_rng(0),
                                                        device=config.device, qp_method=qp_method), 1)
    measurement.stages, measurement.notes = stages, notes
    return measurement


def measure_badge(config: Config, width: int, batch: int) -> Measurement:
    inputs = synthetic_inputs(config, {"unlabeled_probs", "unlabeled_model_features"})
    return _timed(f"badge (width {width})", config.unlabeled, config,
                  lambda: badge(inputs.unlabeled_probs, inputs.unlabeled_model_features, batch,
                                np.random.default_rng([SEED, 4]), width=width, device=config.device), 1)


def measure_dropout_passes(config: Config) -> Measurement:
    """The K MC-dropout passes of every model's last layer over its float32 features (one model's
    features at a time, as selection holds them)."""
    rng = np.random.default_rng([SEED, 7])
    features = torch.from_numpy(rng.standard_normal((config.unlabeled, config.dim), dtype=np.float32)).to(config.device)
    last_layer = torch.nn.Linear(config.dim, config.classes).to(config.device)

    def run():
        return np.stack([dropout_probs(features, DROPOUT_RATE, last_layer, config.passes, seed=model)
                         for model in range(config.models)])
    return _timed(f"bald's {config.passes} passes", config.unlabeled, config, run, 1)


def report_badge_bald(config: Config, methods: list, exact_batch: int) -> None:
    if "badge" in methods:
        print(f"\nbadge, one run each: T={config.models} models' {config.dim}-d float16 features (as for DIAM_qp) "
              f"and C={config.classes} softmax outputs; k-means++ over B={config.batch} picks with the features "
              f"sketched to the default width, then exact (width 0) for {exact_batch} picks")
        print(table_header(config.device))
        sketched = in_fresh_process(measure_badge, config, BADGE_FEATURE_WIDTH, config.batch)
        print(table_row(sketched), flush=True)
        exact = in_fresh_process(measure_badge, config, 0, exact_batch)
        print(table_row(exact), flush=True)
        print(f"badge per pick: {sketched.seconds[0] / config.batch:.3f} s sketched to {BADGE_FEATURE_WIDTH}, "
              f"{exact.seconds[0] / exact_batch:.3f} s exact; {config.batch} exact picks would take about "
              f"{exact.seconds[0] / exact_batch * config.batch:.0f} s", flush=True)
    if "bald" in methods:
        print(f"\nbald, one run each: scoring and ranking T={config.models} x K={config.passes} MC-dropout outputs "
              f"(float32), then the passes: K dropout masks (rate {DROPOUT_RATE}) on each model's "
              f"{config.dim}-d features and its last layer")
        print(table_header(config.device))
        print(table_row(in_fresh_process(measure_strategy, "bald", dataclasses.replace(config, repeats=1))),
              flush=True)
        print(table_row(in_fresh_process(measure_dropout_passes, config)), flush=True)


def authors_dense_route(snapshot_labels, model_features, batch_size, stages, device, rng):
    """The authors' DIAM_qp steps on dense matrices (written from SPEC section 5 and their
    al_select.py). Two changes make it faster than theirs, so the ratio to ours is a lower
    bound: counts are added with numpy instead of a Python loop over a lil_matrix, and the
    eigendecomposition is the symmetric one (theirs is numpy's general `eig`). Ties in d at
    the subsample's cut are broken as ours are, from the same rng, so the picks compare."""
    start, cpu_start = time.perf_counter(), time.process_time()
    n_models, _, n_unlabeled = snapshot_labels.shape
    d = (snapshot_labels != snapshot_labels[:, :1, :]).any(axis=1).sum(axis=0)
    n = min(n_unlabeled // 5, 15000)
    subsample = np.lexsort((rng.permutation(n_unlabeled), -d))[:n]
    k = max(1, int(0.01 * n))
    counts = np.zeros((n, n))
    for model in range(n_models):
        distances = pairwise_distances(model_features[model][subsample].astype(np.float32))
        nearest = np.argsort(distances, axis=1)[:, :k]
        del distances
        np.add.at(counts, (np.repeat(np.arange(n), k), nearest.ravel()), 1.0)
    _end_stage(stages, "k-NN", start, cpu_start)

    start, cpu_start = time.perf_counter(), time.process_time()
    similarity = torch.from_numpy((counts + counts.T) / 2).to(device)
    del counts
    eigenvalues, eigenvectors = torch.linalg.eigh(similarity)
    del similarity
    projected = ((eigenvectors * eigenvalues.clamp_min(0)) @ eigenvectors.T).cpu().numpy()
    del eigenvectors
    _end_stage(stages, "projection", start, cpu_start)

    start, cpu_start = time.perf_counter(), time.process_time()
    x = qpsolvers.solve_qp(sp.triu(projected, format="csc"), -d[subsample].astype(np.float64),
                           A=sp.csc_matrix(np.ones((1, n))), b=np.array([float(batch_size)]),
                           lb=np.zeros(n), ub=np.ones(n), solver="osqp",
                           eps_abs=DIAM_QP_SOLVER_TOLERANCE,
                           eps_rel=DIAM_QP_SOLVER_TOLERANCE,
                           max_iter=DIAM_QP_MAX_SOLVER_ITERATIONS, polishing=False, raise_error=True)
    _end_stage(stages, "QP", start, cpu_start)
    return subsample[np.argsort(-x, kind="stable")[:batch_size]]


def measure_dense_diam_qp(config: Config, pool: int) -> Measurement:
    inputs = synthetic_inputs(dataclasses.replace(config, unlabeled=pool),
                              {"snapshot_labels", "unlabeled_model_features"})
    stages: dict[str, float] = {}
    measurement = _timed("DIAM_qp (dense route)", pool, config,
                         lambda: authors_dense_route(inputs.snapshot_labels, inputs.unlabeled_model_features,
                                                     config.batch, stages, config.device,
                                                     np.random.default_rng(0)), 1)
    measurement.stages = stages
    return measurement


def stage_line(measurement: Measurement) -> str:
    """CPU time beside wall time (on a shared machine the wall clock also counts other jobs),
    the peak resident set at the end of each stage, and what the strategy logged."""
    line = (f"    CPU {measurement.cpu_seconds[0]:.1f} s; stages, wall/CPU s (peak RSS MiB at its end): "
            + ", ".join(f"{name} {wall:.1f}/{cpu:.1f} ({peak:.0f})"
                        for name, (wall, cpu, peak) in measurement.stages.items()))
    return "\n".join([line] + [f"    {note}" for note in measurement.notes])


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
    parser.add_argument("--strategies", default=",".join(s for s in METHODS if s not in OPT_IN_STRATEGIES),
                        help="comma-separated names from: " + ", ".join(METHODS)
                        + " (default: all but " + ", ".join(OPT_IN_STRATEGIES) + ")")
    parser.add_argument("--dense-unlabeled", type=int, default=15000,
                        help="pool size at which DIAM_qp is timed beside its OSQP route and the authors' "
                             "dense route (0: skip them); the default gives n = 3,000")
    parser.add_argument("--scaling", default="",
                        help="comma-separated subsample sizes n: time DIAM_qp alone at each (pool U = 5n), "
                             "phase by phase, instead of the strategies table (e.g. 1000,2000,3000,6000,11400)")
    parser.add_argument("--osqp-max-n", type=int, default=3000,
                        help="with --scaling, also time the OSQP route up to this n and compare picks")
    parser.add_argument("--passes", type=int, default=BALD_PASSES, help="bald's MC-dropout passes per model K")
    parser.add_argument("--badge-exact-batch", type=int, default=100,
                        help="picks of badge's exact (width 0) run, timed for its cost per pick")
    parser.add_argument("--alipy-unlabeled", type=int, default=57000,
                        help="pool size for the alipy baseline (0: skip it); alipy's "
                             "coreset costs about 0.3 s per pick at 57,000 x 1,280 here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    methods = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        sys.exit(f"unknown strategies {unknown}; choose from {list(METHODS)}")
    config = Config(args.device, args.unlabeled, args.labeled, args.dim, args.models,
                    args.snapshots, args.classes, args.batch, args.repeats, args.passes)

    print("\n".join(machine_description(config.device)))
    print(f"inputs: U={config.unlabeled} unlabeled, L={config.labeled} labeled, "
          f"{config.dim}-d float32 standard-normal features, T={config.models} models, "
          f"K={config.snapshots} snapshots, C={config.classes} classes, batch B={config.batch}, "
          f"seed {SEED}")
    if any("snapshot_labels" in fields_asked(name, config) for name in methods):
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
    if args.scaling:
        report_diam_qp_scaling(config, [int(n) for n in args.scaling.split(",")], args.osqp_max_n)
        return

    own_sections = ("DIAM_qp", "badge", "bald")  # measured once each, in sections of their own below
    if any(method not in own_sections for method in methods):
        print(table_header(config.device))
    for method in methods:
        if method not in own_sections:
            print(table_row(in_fresh_process(measure_strategy, method, config)), flush=True)

    if "DIAM_qp" in methods:
        report_diam_qp(config, args.dense_unlabeled)
    report_badge_bald(config, methods, args.badge_exact_batch)

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


def report_diam_qp(config: Config, dense_pool: int) -> None:
    print(f"\nDIAM_qp, one run each: T={config.models} models' {config.dim}-d float16 features "
          f"(a shared standard-normal part plus {MODEL_FEATURE_NOISE} x each model's own), subsample "
          "n = U // 5, k = floor(0.01 n); stages: k-NN co-occurrence, PSD projection, QP (the route that "
          "answered is named below each row)")
    print(table_header(config.device))
    ours = in_fresh_process(measure_our_diam_qp, config, config.unlabeled)
    print(table_row(ours) + "\n" + stage_line(ours), flush=True)
    if dense_pool <= 0:
        return
    ours_small = in_fresh_process(measure_our_diam_qp, config, dense_pool)
    print(table_row(ours_small) + "\n" + stage_line(ours_small), flush=True)
    by_osqp = in_fresh_process(measure_our_diam_qp, config, dense_pool, "osqp")
    print(table_row(by_osqp) + "\n" + stage_line(by_osqp), flush=True)
    dense = in_fresh_process(measure_dense_diam_qp, config, dense_pool)
    print(table_row(dense) + "\n" + stage_line(dense), flush=True)
    print(f"\nDIAM_qp ours vs ours with OSQP at U={dense_pool}: {picks_agreement(ours_small, by_osqp)}; "
          f"QP stage {ours_small.stages['QP'][1]:.2f} s vs {by_osqp.stages['QP'][1]:.2f} s of CPU")
    print(f"DIAM_qp ours vs dense route at U={dense_pool}: {picks_agreement(ours_small, dense)}; speed-up "
          f"{min(dense.seconds) / min(ours_small.seconds):.2f}x in wall time, "
          f"{dense.cpu_seconds[0] / ours_small.cpu_seconds[0]:.2f}x in CPU time; extra memory "
          f"{dense.peak_rss_mb - dense.rss_before_mb:.0f} MiB vs "
          f"{ours_small.peak_rss_mb - ours_small.rss_before_mb:.0f} MiB")


def picks_agreement(first: Measurement, second: Measurement) -> str:
    common = len(np.intersect1d(first.output, second.output))
    return (("the same picks" if common == len(first.output) == len(second.output) else "DIFFERENT picks")
            + f" ({common} of {len(second.output)} in common)")


def report_diam_qp_scaling(config: Config, subsamples: list[int], osqp_max_n: int) -> None:
    """DIAM_qp at each subsample size n (pool U = 5n), B / n as at --unlabeled, phase by phase;
    the OSQP route beside it up to osqp_max_n, picks compared."""
    paper_n = config.unlabeled // 5
    print(f"\nDIAM_qp scaling, one run each: pool U = 5n, B = round({config.batch} n / {paper_n}), "
          f"T={config.models}, {config.dim}-d features; the OSQP route beside ours for n <= {osqp_max_n}")
    rows = []
    print(table_header(config.device))
    for n in subsamples:
        scaled = dataclasses.replace(config, batch=max(1, round(config.batch * n / paper_n)))
        ours = in_fresh_process(measure_our_diam_qp, scaled, 5 * n)
        print(table_row(ours) + "\n" + stage_line(ours), flush=True)
        by_osqp = None
        if n <= osqp_max_n:
            by_osqp = in_fresh_process(measure_our_diam_qp, scaled, 5 * n, "osqp")
            print(table_row(by_osqp) + "\n" + stage_line(by_osqp) + "\n    ours vs OSQP: "
                  + picks_agreement(ours, by_osqp), flush=True)
        rows.append((n, scaled.batch, ours, by_osqp))
    print("\nsummary (CPU s per phase; wall s of the whole selection; peak RSS during it, MiB; route):")
    print(f"{'n':>6}{'B':>6}{'k-NN':>9}{'proj.':>9}{'QP':>9}{'wall':>9}{'peak':>8}  route   "
          f"{'OSQP QP':>9}  picks vs OSQP")
    for n, batch, ours, by_osqp in rows:
        cpu = {name: stage[1] for name, stage in ours.stages.items()}
        route = "certified" if any("certified route" in note for note in ours.notes) else "OSQP"
        osqp_part = (f"{by_osqp.stages['QP'][1]:>9.1f}  {picks_agreement(ours, by_osqp)}" if by_osqp
                     else f"{'-':>9}  -")
        print(f"{n:>6}{batch:>6}{cpu['k-NN']:>9.1f}{cpu['projection']:>9.1f}{cpu['QP']:>9.1f}"
              f"{ours.seconds[0]:>9.1f}{ours.peak_rss_mb:>8.0f}  {route:<9}{osqp_part}")


if __name__ == "__main__":
    main()
