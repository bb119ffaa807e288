"""The steps of an active-learning run: train one net, test T nets, select a batch.

Scripts call these; they tie together the run folder (run.py), the training loop, what a
selection reads (selection_inputs.py) and the strategies. Each step checks its inputs, skips
work whose outputs already exist, and writes its outputs atomically with the completion
marker (checkpoint, performances.txt, next index file) last.
"""
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch

from . import models
from .data import Data
from .errors import UserError
from .methods import METHODS
from .paths import (NPZ_READ_ERRORS, read_indices, refuse_paper_results, step_lock, write_indices, write_json,
                    write_npz, write_text, atomic_write)
from .pool import Pool
from .run import Run
from .selection_inputs import model_votes, selection_options, selection_pool, selection_rng
from .strategies import CALTopUpWarning, WeightedBatch, strategy_notes
from .training import Record, backbone_features, evaluate, train_linear_head, train_target_net


# ---------------------------------------------------------------- training
def train_step(run: Run, net_id: int, record_snapshots: bool = False) -> str:
    """Train net `net_id` (one of the T, checked where the step's settings were resolved: cli.train_settings)
    for this iteration; returns a line saying what happened."""
    s = run.settings
    ckpt = run.checkpoint(net_id)
    if ckpt.exists() and not s.redo:
        return f"net {net_id} already trained: {ckpt}"
    name = s.target_nets[net_id]
    if models.ofa_number(name) is None:  # a torchvision model that cannot take the input size stops here
        models.check_input_size(models.build_target(name, run.data.n_classes), name, run.image_size(net_id))
    labeled, unlabeled = run.split(make_initial=True)
    data = run.training_data(labeled)
    run.claim_folder()
    with step_lock(ckpt):
        if ckpt.exists() and not s.redo:  # another process finished it while we waited
            return f"net {net_id} already trained: {ckpt}"
        preset, method, first = s.preset, s.method, s.al_iter == 0
        record = _record(run, net_id, record_snapshots)
        net, init, stream = run.initial_net(net_id)
        size = run.image_size(net_id)
        head_only = preset.linear_heads and not first
        if head_only:
            net, predictions = _train_head(run, net_id, net, data, labeled, unlabeled, record, stream)
        else:
            weights = torch.from_numpy(importance_loss_weights(run, labeled)) if _one_shot(run) and not first else None
            predictions = train_target_net(
                net, data, torch.from_numpy(labeled), torch.from_numpy(unlabeled).to(run.device), preset, size,
                record, stream, desc=f"net {net_id} iter {s.al_iter}", speed=run.speed, loss_weights=weights)
        ofa = models.ofa_number(name)
        info = {"net_id": net_id, "ofa_id": None if ofa is None else models.OFA_IDS[ofa], "dataset": s.dataset,
                "init": init, "image_size": size, "n_labeled": int(len(labeled)), "al_iter": s.al_iter,
                "method": "shared" if first else method, "preset": preset.name, "seed": preset.seed,
                "mode": preset.mode, "precision": "bf16" if preset.bf16 else "fp32"}
        if s.nets:  # named target models: which one this is (the paper's are known by net_id)
            info["net"] = name
        if head_only:
            info["trained"] = "classifier only, on the frozen backbone of iteration 0"
        write_npz(s.paths.pool_predictions(s.model_num, method, s.al_iter, net_id),
                  unlabeled=unlabeled, **predictions.arrays())
        write_json(s.paths.checkpoint_info(s.model_num, method, s.al_iter, net_id), info)
        state = {k: v.cpu() for k, v in net.state_dict().items()}
        atomic_write(ckpt, lambda f: torch.save({"state_dict": state, "info": info}, f))
    return f"net {net_id} trained on {len(labeled)} labeled examples ({init} init): {ckpt}"


def _record(run: Run, net_id: int, record_snapshots: bool) -> Record:
    """What training records on the pool: what the selection made from these nets reads.

    Iteration 0 is shared by every method, so it records what any of them reads; a later one what
    this method's strategy reads (a one-shot strategy reads iteration 0's nets only). The last
    evaluation point's nets are tested, never selected from: their passes are skipped, unless
    they draw from the net's training stream (--score_with_train_aug), where skipping them would
    change the rest of its training. --mDIS records snapshots whatever the iteration.
    """
    preset = run.settings.preset
    if run.settings.al_iter == preset.al_iters - 1 and not preset.score_with_train_aug:
        return Record(snapshots=record_snapshots)
    first = run.settings.al_iter == 0
    strategy = METHODS.get(run.settings.method)
    reads = () if strategy is None or strategy.one_shot else strategy.reads
    return Record(snapshots=record_snapshots or first or "snapshots" in reads,
                  probs=first or "probs" in reads,
                  features=net_id == preset.coreset_feature_net and (first or "features" in reads)
                  or "model_features" in reads)


def _train_head(run: Run, net_id: int, initial_net, data: Data, labeled, unlabeled, record: Record, stream: int):
    """--linear_heads after iteration 0: iteration 0's net (trained on the initial labels) with its
    classifier reset to the net's initial weights and retrained alone on the backbone's features
    of the pool, the loss weighted by `importance_loss_weights`. Returns (net, what `record` asks for)."""
    net, _ = run.at_iteration(0).load_net(net_id)
    head = models.classifier(net)
    head.load_state_dict(models.classifier(initial_net).state_dict())
    preset = run.settings.preset
    features = backbone_features(net, data.pool_images, run.image_size(net_id), preset.eval_batch, bf16=preset.bf16)
    weights = torch.from_numpy(importance_loss_weights(run, labeled))
    predictions = train_linear_head(head, features, data.pool_labels, torch.from_numpy(labeled),
                                    torch.from_numpy(unlabeled), weights, preset, record, stream)
    return net, predictions


def _one_shot(run: Run) -> bool:
    strategy = METHODS.get(run.settings.method)
    return strategy is not None and strategy.one_shot


def importance_loss_weights(run: Run, labeled: np.ndarray) -> np.ndarray:
    """Each labeled example's weight in the loss of a net or a linear head, scaled to mean 1 (float32).

    A one-shot method's picks weigh what its selection recorded beside the iteration's index file
    (the paper's reweighting, so that the picks' loss estimates the whole unlabeled pool's they were
    drawn from); whole nets and linear heads alike, as the paper trains on its reweighted sample. The
    initial labeled set is part of the pool itself and weighs 1. Other methods' picks weigh 1: a
    per-iteration batch's weights describe one draw from one iteration's pool, and do not add up to an
    estimate of anything.
    """
    s = run.settings
    weights = np.ones(len(labeled))
    if _one_shot(run):
        path = s.paths.importance_weights(s.model_num, s.method, s.al_iter)
        try:
            with np.load(path) as z:
                selected, importance = z["selected"], z["importance_weights"]
        except (FileNotFoundError, *NPZ_READ_ERRORS) as err:  # missing, truncated, or not a weights file
            raise UserError(f"the importance weights {path} cannot be read ({err}). Rerun al_select.py --method "
                            f"{s.method} --al_iter 0 --redo with the same settings, then this training.") from None
        slot = np.full(run.pool_size, -1)
        slot[labeled] = np.arange(len(labeled))
        if len(selected) != len(importance) or (slot[selected] < 0).any():
            raise UserError(f"{path} names examples outside iteration {s.al_iter}'s labeled set. Rerun "
                            f"al_select.py --method {s.method} --al_iter 0 --redo with the same settings.")
        weights[slot[selected]] = importance
    return (weights / weights.mean()).astype(np.float32)


def train_steps_at_once(run: Run, net_ids, record_snapshots: bool = False):
    """Train several nets in this process at once (DIAM_CUDA_FAST=streams, CUDA), each in its own thread on
    its own CUDA stream, at most run.speed.concurrent_nets at a time; yields each net's line as it ends.

    Each net keeps its own generator (epoch order, augmentation) and initial weights; dropout
    draws from the device's shared generator, so its masks depend on how the nets interleave.
    Launches from several threads overlap only where each launches little: with the
    steps and passes graphed (training_graphs, scoring_graphs).
    """
    run.data  # noqa: B018  (loaded once, before the threads)

    def train_on_own_stream(net_id):
        stream = torch.cuda.Stream(run.device)
        stream.wait_stream(torch.cuda.current_stream(run.device))
        with torch.cuda.stream(stream):
            line = train_step(run, net_id, record_snapshots)
        stream.synchronize()
        return line

    with ThreadPoolExecutor(max_workers=run.speed.concurrent_nets) as pool:
        for done in as_completed([pool.submit(train_on_own_stream, n) for n in net_ids]):
            yield done.result()


# ---------------------------------------------------------------- testing
def test_step(run: Run) -> str:
    """Top-1/top-5 of the T nets on the test split -> performances.txt (T rows)."""
    s = run.settings
    out = s.paths.performances(s.model_num, s.method, s.al_iter)
    refuse_paper_results(s.paths.results_root, "--results_dir")
    if out.exists() and not s.redo:
        return f"already tested: {out}"
    rows, infos = [], []
    for net_id in range(s.model_num):
        net, info = run.load_net(net_id)
        size = run.image_size(net_id, testing=True)
        top1, top5 = evaluate(net, run.data.test_images, run.data.test_labels, size, s.preset.eval_batch,
                              bf16=s.preset.bf16, speed=run.speed)
        rows.append(f"{top1:.6f} {top5:.6f}")
        infos.append({**info, "test_image_size": size, "top1": top1, "top5": top5})
    write_json(out.with_name("models.json"), infos)
    write_text(out, "\n".join(rows) + "\n")
    return f"mean top-1 {np.mean([i['top1'] for i in infos]):.2f}% over {s.model_num} nets: {out}"


# ---------------------------------------------------------------- selection
def select_step(run: Run, batch_size=None) -> str:
    """Pick the next batch with the step's method and write the next iteration's index file (a one-shot
    method: every later iteration's, from iteration 0's nets)."""
    s = run.settings
    batch_size = batch_size or s.preset.query_batch
    if s.al_iter + 1 >= s.preset.al_iters:
        raise UserError(f"al_iter {s.al_iter} is the last iteration of the '{s.preset.name}' preset "
                        f"(al_iters = {s.preset.al_iters}); there is nothing to select for.")
    out = s.paths.indices(s.model_num, s.method, s.al_iter + 1)
    if out.exists() and not s.redo:
        return f"already selected: {out}"
    if METHODS[s.method].one_shot:
        return _one_shot_select_step(run, batch_size, out)
    labeled, unlabeled = run.split()
    run.claim_folder()
    with step_lock(out):
        if out.exists() and not s.redo:
            return f"already selected: {out}"
        picked, seconds = _pick(run, selection_pool(run, labeled, unlabeled), batch_size)
        positions = check_batch(_positions(picked), len(unlabeled), batch_size, s.method)
        if isinstance(picked, WeightedBatch):
            _write_importance_weights(run, s.al_iter + 1, unlabeled[positions], picked.importance_weights,
                                      picked.lewis_weights, picked.sampler)
        sheet = run.write_label_sheet(s.al_iter + 1, unlabeled[positions],  # before the index file (marks done)
                                      lambda: model_votes(run, unlabeled, positions))
        _write_selection(run, out, labeled, unlabeled, positions)
    done = (f"{s.method} selected {len(positions)} of {len(unlabeled)} unlabeled in {seconds:.2f}s"
            f"{_lewis_summary(run, picked)}: {out}")
    return done + (f"\nto label: {sheet} (fill in the label column, then train al_iter {s.al_iter + 1}), or in "
                   f"Label Studio: {s.paths.label_studio_tasks(s.model_num, s.method, s.al_iter + 1)} "
                   "(docs/own_data.md)" if sheet else "")


def _one_shot_select_step(run: Run, batch_size: int, out) -> str:
    """The whole budget at once (B for each of the preset's al_iters - 1 selections), from
    iteration 0's split and nets, whatever iteration asks: iteration k's index file holds
    iteration 0's labeled set and the first k * B picks (its label sheet, when a person labels,
    the k-th B). The picks come in a random order, so each prefix is a uniformly random part of
    the whole sample: a pick's probability of being in the first k * B is its inclusion
    probability times k * B / (all picks), and its recorded importance weight is the inverse of
    that. Files already written are kept (the draw is a function of iteration 0's records and the
    selection's seed), unless --redo."""
    s = run.settings
    source = run.at_iteration(0)
    n_selections = s.preset.al_iters - 1
    labeled, unlabeled = source.split()
    run.claim_folder()
    with step_lock(out):
        if out.exists() and not s.redo:
            return f"already selected: {out}"
        budget = batch_size * n_selections
        picked, seconds = _pick(source, selection_pool(source, labeled, unlabeled), budget)
        positions = check_batch(_positions(picked), len(unlabeled), budget, s.method)
        written, sheets = [], []
        for k in range(n_selections, 0, -1):  # iteration 1's file, which marks al_iter 0 done, last
            index_file = s.paths.indices(s.model_num, s.method, k)
            if index_file.exists() and not s.redo and index_file != out:
                continue
            size = min(k * batch_size, len(positions))
            if isinstance(picked, WeightedBatch):
                _write_importance_weights(run, k, unlabeled[positions[:size]], picked.prefix_weights(size),
                                          picked.lewis_weights[:size], picked.sampler)
            part = positions[min((k - 1) * batch_size, size):size]
            sheet = run.write_label_sheet(k, unlabeled[part], lambda: model_votes(source, unlabeled, part))
            _write_selection(run, index_file, labeled, unlabeled, positions[:size])
            written.append(k)
            sheets.append(sheet)
    done = (f"{s.method} selected {len(positions)} of {len(unlabeled)} unlabeled at once from iteration 0's "
            f"nets in {seconds:.2f}s ({batch_size} more for each of al_iter 1-{n_selections}; wrote "
            f"iteration(s) {', '.join(map(str, sorted(written)))}){_lewis_summary(run, picked)}: {out.parent}")
    to_label = [str(sheet) for sheet in reversed(sheets) if sheet]
    tasks = [str(s.paths.label_studio_tasks(s.model_num, s.method, k)) for k in sorted(written)]
    return done + (f"\nto label: {', '.join(to_label)} (fill in the label column of each before training its "
                   f"iteration), or in Label Studio: {', '.join(tasks)} (docs/own_data.md)" if to_label else "")


def _pick(run: Run, pool: Pool, batch_size: int):
    """What the step's method's strategy picks, and the seconds it took (the pool's reading not counted);
    the strategy's notes and CAL's top-up warning are printed."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, strategy_notes() as notes:
        warnings.simplefilter("always", CALTopUpWarning)
        picked = METHODS[run.settings.method].select(pool, batch_size, selection_rng(run), selection_options(run))
    seconds = time.perf_counter() - start - pool.fetch_seconds
    for w in caught:  # our own notes; a library's deprecation notices are not the user's business
        if issubclass(w.category, CALTopUpWarning):
            print(f"note: {w.message}", file=sys.stderr)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return picked, seconds


def _positions(picked) -> np.ndarray:
    return np.asarray(picked.positions if isinstance(picked, WeightedBatch) else picked)


def _write_selection(run: Run, index_file, labeled, unlabeled, positions) -> None:
    """labeled += unlabeled[positions] (in the order picked), unlabeled -= them."""
    s = run.settings
    chosen = np.zeros(len(unlabeled), dtype=bool)
    chosen[positions] = True
    new_labeled = np.concatenate([labeled, unlabeled[positions]])
    write_indices(index_file, new_labeled, unlabeled[~chosen], s.dataset, run.pool_size)
    read_indices(index_file, s.dataset, run.pool_size)  # labeled + unlabeled is exactly the pool


def _write_importance_weights(run: Run, al_iter: int, selected, importance_weights, lewis_weights,
                              sampler: str) -> None:
    """Beside iteration al_iter's index file, before it: the pool indices the sampling chose, and each
    one's importance weight (its weight in a loss that estimates the pool's) and maximum Lewis weight."""
    s = run.settings
    write_npz(s.paths.importance_weights(s.model_num, s.method, al_iter),
              selected=np.asarray(selected, dtype=np.int64), importance_weights=np.asarray(importance_weights),
              lewis_weights=np.asarray(lewis_weights), lewis_p=np.array(selection_options(run).lewis_p),
              representation=np.array(selection_options(run).lewis_representation), sampler=np.array(sampler))


def _lewis_summary(run: Run, picked) -> str:
    if not isinstance(picked, WeightedBatch):
        return ""
    draws = "" if picked.draws is None else f", {len(picked.draws)} draws"
    # Against the sample's size: near it, the weights are close to uniform (the regime of a small pool).
    return (f"; sum of maximum Lewis weights over the unlabeled pool {picked.lewis_weight_sum:.1f} for a sample "
            f"of {len(picked.positions)} (p = {selection_options(run).lewis_p:g}, "
            f"{selection_options(run).lewis_representation} nets, "
            f"{picked.sampler} sampler{draws})")


def check_batch(positions: np.ndarray, n_unlabeled: int, batch_size: int, method: str) -> np.ndarray:
    """The batch lies inside the unlabeled set, has no duplicates and exactly min(B, U) members;
    else a UserError says which of these a strategy (perhaps a user's own) broke."""
    expected = min(batch_size, n_unlabeled)
    if batch_size > n_unlabeled:
        print(f"note: only {n_unlabeled} unlabeled examples are left, fewer than the batch of {batch_size}; "
              "all of them are selected.", file=sys.stderr)
    problem = _batch_problem(positions, n_unlabeled, expected)
    if problem:
        raise UserError(f"strategy '{method}' returned an invalid batch: {problem}. A strategy returns {expected} "
                        f"distinct integer positions into the unlabeled set (0..{n_unlabeled - 1}), as a 1-d "
                        "array (docs/layout.md, 'Adding a strategy'); nothing was written.")
    return positions


def _batch_problem(positions: np.ndarray, n_unlabeled: int, expected: int) -> str:
    """What is wrong with a strategy's batch, or "" when nothing is."""
    if positions.ndim != 1:
        return f"an array of shape {positions.shape}, not a 1-d array of positions"
    if not np.issubdtype(positions.dtype, np.integer):
        return f"positions of type {positions.dtype}, not integers"
    if len(positions) != expected:
        return f"{len(positions)} positions, not {expected}"
    if len(positions) and (positions.min() < 0 or positions.max() >= n_unlabeled):
        return f"positions from {positions.min()} to {positions.max()}, outside 0..{n_unlabeled - 1}"
    repeated = len(positions) - len(np.unique(positions))
    return f"{repeated} repeated position(s)" if repeated else ""
