"""The steps of an active-learning run: train one net, test T nets, select a batch.

Scripts call these; they tie together the run folder (paths), the data, the nets,
the training loop and the strategies. Each step checks its inputs, skips work
whose outputs already exist, and writes its outputs atomically with the
completion marker (checkpoint, performances.txt, next index file) last.

A pool whose labels are not all known (a dataset file's) is labelled by a person:
selection writes the chosen images to a label sheet, and training reads the labels
back from the sheets, refusing before it writes anything while one is missing.
"""
import copy
import dataclasses
import pickle
import sys
import threading
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import cached_property

import numpy as np
import torch

from . import label_studio, models
from .data import Data, load_dataset
from .errors import UserError
from .labels import read_rows, read_sheet, write_sheet
from .mc_dropout import mc_dropout_probs
from .methods import METHODS
from .paths import (NPZ_READ_ERRORS, check_run_config, read_indices, refuse_paper_results, step_lock, write_indices,
                    write_json, write_npz, write_text, atomic_write)
from .pool import Pool
from .presets import BALD_PASSES, SUBSET_SEED
from .settings import StepSettings, check_net_index, resolve_device
from .strategies import CALTopUpWarning, WeightedBatch, strategy_notes
from .training import (Record, allow_tf32, backbone_features, evaluate, predict, set_batchnorm_statistics,
                       stream_seed, to_device, train_linear_head, train_target_net)


# torch.manual_seed and the draws of the initial weights, done by one net at a time.
INITIAL_WEIGHTS_LOCK = threading.Lock()

# What torch.load raises for a truncated or foreign file: not a zip archive or one of another
# layout (RuntimeError from its reader, BadZipFile), a pickle it refuses or cannot parse
# (UnpicklingError, ValueError), an empty file (EOFError), an unknown legacy format (KeyError).
CHECKPOINT_READ_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError, KeyError)


class Run:
    """One (preset, dataset) run folder with its settings, device and data."""

    def __init__(self, settings: StepSettings):
        self.settings = settings
        self.preset, self.paths = settings.preset, settings.paths
        self.dataset, self.model_num, self.method, self.al_iter = \
            settings.dataset, settings.model_num, settings.method, settings.al_iter
        self.device = resolve_device(settings.device)
        if self.device.type != "cuda" and settings.speed.cuda_pieces():
            print(f"note: DIAM_CUDA_FAST ({', '.join(settings.speed.cuda_pieces())}) acts on CUDA only; ignored "
                  f"on {self.device}.", file=sys.stderr)
        self.speed = settings.speed.on_device(self.device.type)
        if self.device.type == "cuda":
            allow_tf32()
            torch.backends.cudnn.benchmark = self.speed.cudnn_benchmark
        self.data_root, self.redo = settings.data_root, settings.redo
        self.nets = settings.target_nets  # net_id n is the n-th of these
        if settings.nets:
            models.check_target_names(settings.nets)

    def at_iteration(self, al_iter: int) -> "Run":
        """This run at another iteration (same folder, device and loaded data)."""
        other = copy.copy(self)  # keeps the cached data
        other.settings = dataclasses.replace(self.settings, al_iter=al_iter)
        other.al_iter = al_iter
        return other

    @cached_property
    def data(self) -> Data:
        data = load_dataset(self.settings.dataset_file or self.dataset, self.data_root, self.preset.pool_size,
                            self.preset.test_size, SUBSET_SEED).to(self.device)
        check_run_config(self.paths, self._run_config(data), claim=False)
        return data

    def _run_config(self, data: Data) -> dict:
        config = self.settings.run_config()
        if data.fingerprint:  # a dataset file's images and labels: other ones would scramble the index files
            config["dataset_content"] = data.fingerprint
        return config

    def claim_folder(self) -> None:
        """Record this run's settings in its folder: done by a step whose inputs are checked, just
        before its first write, so refused input leaves the folder as it was."""
        check_run_config(self.paths, self._run_config(self.data))

    @property
    def pool_size(self) -> int:
        return len(self.data.pool_labels)

    def image_size(self, net_id: int, testing: bool = False) -> int:
        if self.preset.image_size:
            return self.preset.image_size
        return models.target_input_size(self.nets[0 if testing and self.preset.test_at_net0_size else net_id])

    # ------------------------------------------------------------ index files
    def split(self, al_iter=None, make_initial=False):
        """(labeled, unlabeled) pool indices for an iteration; iteration 0's are made here when
        `make_initial` (by training, the step that reads them first)."""
        al_iter = self.al_iter if al_iter is None else al_iter
        path = self.paths.indices(self.model_num, self.method, al_iter)
        if al_iter == 0 and make_initial and not path.exists():
            self._write_initial_split(path)
        elif al_iter == 0 and not path.exists():
            raise UserError(f"no initial split at {path}: it is written when iteration 0 is trained. Run "
                            "train_net.py --al_iter 0 with the same --dataset, --model_num and preset first.")
        elif not path.exists():
            raise UserError(f"no selection has been written for al_iter {al_iter} (expected {path}). Run "
                            f"al_select.py --al_iter {al_iter - 1} with the same --dataset, --method, "
                            "--model_num and preset first.")
        return read_indices(path, self.dataset, self.pool_size)

    def _write_initial_split(self, path) -> None:
        """The initial labeled set: `initial_labeled` pool images drawn at random among those whose
        label is known (all of them in a simulation)."""
        n_initial = self.preset.initial_labeled
        if n_initial >= self.pool_size:  # loads the data: a dataset that fails to load writes nothing
            raise UserError(f"the initial labeled set ({n_initial}) must be smaller than the pool "
                            f"({self.pool_size}); lower --initial_labeled or raise --pool_size.")
        known = np.flatnonzero(self.data.pool_labels.cpu().numpy() >= 0)
        if len(known) < n_initial:
            raise UserError(f"only {len(known)} of the pool's {self.pool_size} images have a label, and the initial "
                            f"labeled set is {n_initial} (--initial_labeled). Label more pool images in the "
                            f"dataset's pool manifest, or pass --initial_labeled {len(known)} or less.")
        self.claim_folder()
        with step_lock(path):
            if path.exists():  # another process wrote it while we waited
                return
            order = np.random.default_rng(self.preset.seed).permutation(len(known))
            labeled = np.sort(known[order[:n_initial]])
            write_indices(path, labeled, np.setdiff1d(np.arange(self.pool_size), labeled), self.dataset,
                          self.pool_size)

    # ------------------------------------------------------------ labels a person gave
    def training_data(self, labeled: np.ndarray) -> Data:
        """The data, its pool labels completed from the label sheets of iterations 1..al_iter (a
        pool whose labels are all known is returned as it is). Refuses, naming the sheet and its
        rows, while a selected image has no label or one that is not a class."""
        data = self.data
        if data.labels_known:
            return data
        labels = data.pool_labels.clone()
        before, _ = self.split(0)
        for al_iter in range(1, self.al_iter + 1):
            after, _ = self.split(al_iter)
            batch = after[~np.isin(after, before)]
            given = self._given_labels(al_iter, [data.pool_paths[i] for i in batch])
            labels[torch.from_numpy(batch).to(labels.device)] = torch.tensor(given, device=labels.device)
            before = after
        unlabelled = labeled[(labels[torch.from_numpy(labeled).to(labels.device)] < 0).cpu().numpy()]
        if len(unlabelled):  # only index files that disagree with the sheets lead here
            raise UserError(f"{len(unlabelled)} images of the labeled set of al_iter {self.al_iter} have no label "
                            f"(pool positions {', '.join(map(str, unlabelled[:5]))}...). Rerun the selections that "
                            "chose them with --redo.")
        return dataclasses.replace(data, pool_labels=labels)

    def _given_labels(self, al_iter: int, images: list) -> list:
        """The class index of each image selected for `al_iter`: from the Label Studio export beside
        the sheet when there is one (label_studio.py), else from the sheet."""
        sheet = self.paths.label_sheet(self.model_num, self.method, al_iter)
        exports = [p for p in self.paths.label_studio_exports(self.model_num, self.method, al_iter) if p.exists()]
        if len(exports) > 1:
            raise UserError(f"there are two Label Studio exports for al_iter {al_iter}, {exports[0]} and "
                            f"{exports[1]}, and only one can be read. Move away the one you do not mean, then run "
                            "this command again.")
        if exports:
            return label_studio.read_export(exports[0], images, self.data.classes)
        return read_sheet(sheet, images, self.data.classes,
                          f"al_select.py --al_iter {al_iter - 1} --redo (and this step's other flags)")

    def write_label_sheet(self, al_iter: int, batch: np.ndarray, votes):
        """The sheet of the images selected for `al_iter`, for a person to label (None in a simulation),
        and the same images as Label Studio tasks beside it, with `votes()`: (T, B), each target
        model's predicted class for each image.

        An existing sheet that lists the same images is kept as it is (it may hold labels already);
        one that lists others is refused, never overwritten. The tasks hold nobody's work: they are
        written again."""
        data = self.data
        if data.labels_known:
            return None
        sheet = self.paths.label_sheet(self.model_num, self.method, al_iter)
        images = [data.pool_paths[i] for i in batch]
        known = [data.classes[k] if k >= 0 else ""
                 for k in data.pool_labels[torch.from_numpy(batch).to(data.pool_labels.device)].tolist()]
        if sheet.exists():
            listed = [image for _, image, _ in read_rows(sheet, "the label sheet")]
            if sorted(listed) != sorted(images):
                raise UserError(f"the label sheet {sheet} lists other images than this selection picked, and may "
                                "hold labels typed for them, so it is not overwritten. Move it away (or delete it), "
                                "then run the same command again.")
        else:
            write_sheet(sheet, images, known)
        version = f"{self.method}: the T = {self.model_num} target models of al_iter {al_iter - 1}"
        addresses = label_studio.image_addresses(images, self.settings.dataset_file.base, data.pool_paths)
        label_studio.write_tasks(self.paths.label_studio_tasks(self.model_num, self.method, al_iter),
                                 label_studio.tasks(images, addresses, votes(), self.nets, data.classes, known,
                                                    version))
        label_studio.write_config(self.paths.label_studio_config, data.classes)
        return sheet

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, net_id, al_iter=None):
        al_iter = self.al_iter if al_iter is None else al_iter
        return self.paths.checkpoint(self.model_num, self.method, al_iter, net_id)

    def initial_net(self, net_id: int):
        """Net `net_id` at its initial weights, drawn from the net's own stream as training draws them;
        returns (net, init rule, stream seed)."""
        name = self.nets[net_id]
        stream = stream_seed(self.preset.seed, net_id)
        with INITIAL_WEIGHTS_LOCK:  # nets trained at once (DIAM_CUDA_FAST=streams) share torch's global generator
            torch.manual_seed(stream)  # the initial weights are drawn from the net's own stream too
            net = models.build_target(name, self.data.n_classes, self.preset.dropout)
            init = models.initialise_target(net, name, self.preset.init)
        return net, init, stream

    def load_net(self, net_id: int):
        """A trained target net and its record, checked to be the net asked for."""
        path = self.checkpoint(net_id)
        if not path.exists():
            raise UserError(f"net {net_id} has not been trained for al_iter {self.al_iter} (no {path}). Run "
                            f"train_net.py --net_id {net_id} --al_iter {self.al_iter} with the same "
                            "--dataset, --method, --model_num and preset first.")
        n_classes = self.data.n_classes  # loads and checks the dataset: its errors are not the checkpoint's

        def damaged(why):  # advice that deletes the file: given only where the failure was the file's
            return UserError(f"the checkpoint {path} is damaged or belongs to another net ({why}). Delete it "
                             f"and rerun train_net.py --net_id {net_id} --al_iter {self.al_iter}.")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except CHECKPOINT_READ_ERRORS as err:
            raise damaged(err) from None
        info = saved.get("info") if isinstance(saved, dict) else None
        if not isinstance(info, dict) or not isinstance(saved.get("state_dict"), dict) \
                or not {"net_id", "dataset"} <= info.keys():
            raise damaged("not a checkpoint written by train_net.py")
        recorded = info.get("net", f"ofa{info['net_id']}")  # the paper's nets: OFA net n at place n
        if info["net_id"] != net_id or info["dataset"] != self.dataset or recorded != self.nets[net_id]:
            raise damaged(f"it holds net {info['net_id']} ({recorded}) of dataset {info['dataset']}")
        net = models.build_target(self.nets[net_id], n_classes, self.preset.dropout)  # its errors are its own
        try:
            net.load_state_dict(saved["state_dict"])
        except (RuntimeError, AssertionError) as err:  # a key or shape that does not fit (ofa's loader asserts)
            raise damaged(err) from None
        return to_device(net, self.device), info


# ---------------------------------------------------------------- training
def train_step(run: Run, net_id: int, record_snapshots: bool = False) -> str:
    """Train net `net_id` for this iteration; returns a line saying what happened."""
    check_net_index(net_id, run.model_num)
    ckpt = run.checkpoint(net_id)
    if ckpt.exists() and not run.redo:
        return f"net {net_id} already trained: {ckpt}"
    name = run.nets[net_id]
    if models.ofa_number(name) is None:  # a torchvision model that cannot take the input size stops here
        models.check_input_size(models.build_target(name, run.data.n_classes), name, run.image_size(net_id))
    labeled, unlabeled = run.split(make_initial=True)
    data = run.training_data(labeled)
    run.claim_folder()
    with step_lock(ckpt):
        if ckpt.exists() and not run.redo:  # another process finished it while we waited
            return f"net {net_id} already trained: {ckpt}"
        preset, method, first = run.preset, run.method, run.al_iter == 0
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
                record, stream, desc=f"net {net_id} iter {run.al_iter}", speed=run.speed, loss_weights=weights)
        ofa = models.ofa_number(name)
        info = {"net_id": net_id, "ofa_id": None if ofa is None else models.OFA_IDS[ofa], "dataset": run.dataset,
                "init": init, "image_size": size, "n_labeled": int(len(labeled)), "al_iter": run.al_iter,
                "method": "shared" if first else method, "preset": preset.name, "seed": preset.seed,
                "mode": preset.mode, "precision": "bf16" if preset.bf16 else "fp32"}
        if run.settings.nets:  # named target models: which one this is (the paper's are known by net_id)
            info["net"] = name
        if head_only:
            info["trained"] = "classifier only, on the frozen backbone of iteration 0"
        write_npz(run.paths.pool_predictions(run.model_num, method, run.al_iter, net_id),
                  unlabeled=unlabeled, **predictions.arrays())
        write_json(run.paths.checkpoint_info(run.model_num, method, run.al_iter, net_id), info)
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
    preset = run.preset
    if run.al_iter == preset.al_iters - 1 and not preset.score_with_train_aug:
        return Record(snapshots=record_snapshots)
    first = run.al_iter == 0
    strategy = METHODS.get(run.method)
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
    features = backbone_features(net, data.pool_images, run.image_size(net_id), run.preset.eval_batch,
                                 bf16=run.preset.bf16)
    predictions = train_linear_head(head, features, data.pool_labels, torch.from_numpy(labeled),
                                    torch.from_numpy(unlabeled), torch.from_numpy(importance_loss_weights(run, labeled)),
                                    run.preset, record, stream)
    return net, predictions


def _one_shot(run: Run) -> bool:
    strategy = METHODS.get(run.method)
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
    weights = np.ones(len(labeled))
    if _one_shot(run):
        path = run.paths.importance_weights(run.model_num, run.method, run.al_iter)
        try:
            with np.load(path) as z:
                selected, importance = z["selected"], z["importance_weights"]
        except (FileNotFoundError, *NPZ_READ_ERRORS) as err:  # missing, truncated, or not a weights file
            raise UserError(f"the importance weights {path} cannot be read ({err}). Rerun al_select.py --method "
                            f"{run.method} --al_iter 0 --redo with the same settings, then this training.") from None
        slot = np.full(run.pool_size, -1)
        slot[labeled] = np.arange(len(labeled))
        if len(selected) != len(importance) or (slot[selected] < 0).any():
            raise UserError(f"{path} names examples outside iteration {run.al_iter}'s labeled set. Rerun "
                            f"al_select.py --method {run.method} --al_iter 0 --redo with the same settings.")
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
    for net_id in net_ids:  # refused before anything is written
        check_net_index(net_id, run.model_num)
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
    out = run.paths.performances(run.model_num, run.method, run.al_iter)
    refuse_paper_results(run.paths.results_root, "--results_dir")
    if out.exists() and not run.redo:
        return f"already tested: {out}"
    rows, infos = [], []
    for net_id in range(run.model_num):
        net, info = run.load_net(net_id)
        size = run.image_size(net_id, testing=True)
        top1, top5 = evaluate(net, run.data.test_images, run.data.test_labels, size, run.preset.eval_batch,
                              bf16=run.preset.bf16, speed=run.speed)
        rows.append(f"{top1:.6f} {top5:.6f}")
        infos.append({**info, "test_image_size": size, "top1": top1, "top5": top5})
    write_json(out.with_name("models.json"), infos)
    write_text(out, "\n".join(rows) + "\n")
    return f"mean top-1 {np.mean([i['top1'] for i in infos]):.2f}% over {run.model_num} nets: {out}"


# ---------------------------------------------------------------- selection
def selection_rng(run: Run) -> np.random.Generator:
    """Random steps seeded from (seed, dataset, method, iteration), so a rerun picks the same batch."""
    key = zlib.crc32(f"{run.dataset}|{run.method}|{run.al_iter}".encode())
    return np.random.default_rng([run.preset.seed, key])


def selection_options(run: Run):
    """The settings run.method's strategy selects with (its class in methods.py), as the step resolved them."""
    return run.settings.method_settings(run.method)


def _scoring_generator(run: Run, net_id: int):
    """With the score_with_train_aug quirk, the pool is scored through the training augmentation
    drawn from the net's own stream; else through the evaluation transform (None)."""
    if not run.preset.score_with_train_aug:
        return None
    return torch.Generator(device=run.device).manual_seed(stream_seed(run.preset.seed, net_id))


def _pool_predictions(run: Run, net_id: int, unlabeled: np.ndarray, wanted: str) -> dict:
    """What training recorded for net `net_id`; probabilities or features it lacks are computed once and kept."""
    path = run.paths.pool_predictions(run.model_num, run.method, run.al_iter, net_id)
    try:
        with np.load(path) as z:
            stored = dict(z)
    except FileNotFoundError:
        if not run.checkpoint(net_id).exists():
            run.load_net(net_id)  # raises the error that names the training to run
        stored = {}
    except NPZ_READ_ERRORS as err:
        raise UserError(f"{path} is damaged ({err}). Delete it together with {run.checkpoint(net_id)} and rerun "
                        f"train_net.py --net_id {net_id} --al_iter {run.al_iter}.") from None
    if stored and not np.array_equal(stored.get("unlabeled"), unlabeled):
        raise UserError(f"{path} was recorded for another unlabeled pool than the index file of al_iter "
                        f"{run.al_iter}. Delete the iteration's models and rerun its training.")
    if wanted == "snapshot_labels" and wanted not in stored:
        raise UserError(f"net {net_id} of al_iter {run.al_iter} was trained without recording late-epoch snapshots, "
                        f"which {run.method} needs. Retrain it with train_net.py --mDIS --redo.")
    if wanted in ("unlabeled_probs", "pool_features") and wanted not in stored:
        net, _ = run.load_net(net_id)
        scored = run.data.pool_images if wanted == "pool_features" else \
            run.data.pool_images[torch.from_numpy(unlabeled).to(run.device)]
        _, probs, feats = predict(net, scored, run.image_size(net_id), run.preset.eval_batch,
                                  want_probs=wanted == "unlabeled_probs", want_features=wanted == "pool_features",
                                  generator=_scoring_generator(run, net_id), crop_scale_min=run.preset.crop_scale_min,
                                  bf16=run.preset.bf16, speed=run.speed)
        stored.update(unlabeled=unlabeled, **{wanted: probs if wanted == "unlabeled_probs" else feats})
        write_npz(path, **stored)
    return stored


def model_votes(run: Run, unlabeled: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(T, B): each target net's predicted class for the images unlabeled[positions], from what its
    training recorded on the unlabeled pool (the final epoch's probabilities, else its last
    snapshot), so no pass is added where the selection's strategy read them. A net that recorded
    neither (random, coreset or lewis after iteration 0) predicts the B images themselves."""
    votes = []
    for n in range(run.model_num):
        stored = _pool_predictions(run, n, unlabeled, "")
        if "unlabeled_probs" in stored:
            votes.append(stored["unlabeled_probs"][positions].argmax(1))
        elif "snapshot_labels" in stored:
            votes.append(stored["snapshot_labels"][-1][positions])
        else:
            net, _ = run.load_net(n)
            images = run.data.pool_images[torch.from_numpy(unlabeled[positions]).to(run.device)]
            votes.append(predict(net, images, run.image_size(n), run.preset.eval_batch, bf16=run.preset.bf16,
                                 speed=run.speed)[0])
    return np.stack(votes).astype(np.int64)


def initial_features(run: Run, net_id: int, unlabeled: np.ndarray) -> np.ndarray:
    """Penultimate features of the unlabeled pool under net `net_id`'s initial weights (before any
    training: he_fout's or PyTorch's random ones, with BatchNorm statistics set from the unlabeled
    pool, without which they are all 0; or with --init pretrained the ImageNet backbone as it is)."""
    net, init, _ = run.initial_net(net_id)
    net = to_device(net, run.device)
    images = run.data.pool_images[torch.from_numpy(unlabeled).to(run.device)]
    if init != "pretrained":
        set_batchnorm_statistics(net, images, run.image_size(net_id), run.preset.eval_batch)
    _, _, feats = predict(net, images, run.image_size(net_id), run.preset.eval_batch, want_features=True,
                          generator=_scoring_generator(run, net_id), crop_scale_min=run.preset.crop_scale_min,
                          bf16=run.preset.bf16, speed=run.speed)
    return feats


def model_features(run: Run, unlabeled: np.ndarray, representation: str = "trained") -> np.ndarray:
    """(T, U, dim) float16: every net's penultimate features of the unlabeled pool, from the nets
    `representation` names ("trained", the default: what training recorded, or computed once from the
    checkpoint and kept beside it; "initial": `initial_features`). Narrower features are padded with
    zero columns, which change no Lewis weight (they add nothing to the column space), no inner
    product (BADGE) and no Euclidean distance (DIAM_qp's neighbours)."""
    per_net = []
    for n in range(run.model_num):
        if representation == "initial":
            per_net.append(initial_features(run, n, unlabeled))
        else:
            per_net.append(_pool_predictions(run, n, unlabeled, "pool_features")["pool_features"][unlabeled])
    feats = np.zeros((run.model_num, len(unlabeled), max(f.shape[1] for f in per_net)), np.float16)
    for n, net_features in enumerate(per_net):
        feats[n, :, :net_features.shape[1]] = net_features
    return feats


def dropout_probs(run: Run, unlabeled: np.ndarray, passes: int = BALD_PASSES) -> np.ndarray:
    """(T, K, U, C) float32: K = --bald_passes MC-dropout softmax outputs of every trained net on the
    unlabeled pool, through each net's own dropout (diam/mc_dropout.py). Computed here, from the
    checkpoints (training records nothing for them), with masks from a generator seeded by the repeat,
    dataset, iteration and net: the same picks on a rerun, and no draw from any training stream.
    A net without dropout on its penultimate features is refused before any pass."""
    for n, name in enumerate(run.nets):
        rate, _ = models.dropout_on_features(models.build_target(name, run.data.n_classes, run.preset.dropout))
        if rate <= 0:
            raise UserError(f"bald draws MC-dropout passes through each target model's own dropout, and target model "
                            f"'{name}' (net {n}) has none on its penultimate features (no dropout layer right before "
                            f"its last linear layer), so its passes would all agree and its score would be 0 by "
                            f"construction. Name models with one in --nets (the OFA nets, mobilenet_v3_small, "
                            f"efficientnet_b0, ...), or choose another method.")
    per_net = []
    images = run.data.pool_images[torch.from_numpy(unlabeled).to(run.device)]
    key = zlib.crc32(f"{run.dataset}|{run.method}|{run.al_iter}|mc_dropout".encode())
    for n in range(run.model_num):
        net, _ = run.load_net(n)
        seed = int(np.random.SeedSequence([run.preset.seed, key, n]).generate_state(1)[0])
        per_net.append(mc_dropout_probs(net, images, run.image_size(n), run.preset.eval_batch,
                                        passes, seed, generator=_scoring_generator(run, n),
                                        crop_scale_min=run.preset.crop_scale_min, bf16=run.preset.bf16,
                                        speed=run.speed))
    return np.stack(per_net)


def _unlabeled_probs(run: Run, unlabeled: np.ndarray) -> np.ndarray:
    """(T, U, C): every net's softmax outputs on the unlabeled pool, as training recorded them."""
    return np.stack([_pool_predictions(run, n, unlabeled, "unlabeled_probs")["unlabeled_probs"]
                     for n in range(run.model_num)])


def selection_pool(run: Run, labeled: np.ndarray, unlabeled: np.ndarray) -> Pool:
    """The unlabeled pool as the strategies see it: each field read from what training recorded (or
    computed from the checkpoints) the first time a strategy asks for it."""
    def coreset_features():  # the coreset net's, of both sets, read from one file at once
        feats = _pool_predictions(run, run.preset.coreset_feature_net, unlabeled, "pool_features")["pool_features"]
        return feats[unlabeled], feats[labeled]

    def snapshot_labels():
        return np.stack([_pool_predictions(run, n, unlabeled, "snapshot_labels")["snapshot_labels"]
                         for n in range(run.model_num)])

    return Pool(len(unlabeled), str(run.device), fetch={
        "unlabeled_probs": lambda: _unlabeled_probs(run, unlabeled),
        "snapshot_labels": snapshot_labels,
        ("unlabeled_features", "labeled_features"): coreset_features,
        "unlabeled_model_features": lambda: model_features(run, unlabeled, "trained"),
        "initial_model_features": lambda: model_features(run, unlabeled, "initial"),
        "dropout_probs": lambda passes: dropout_probs(run, unlabeled, passes)})


def select_step(run: Run, batch_size=None) -> str:
    """Pick the next batch with run.method and write the next iteration's index file (a one-shot
    method: every later iteration's, from iteration 0's nets)."""
    batch_size = batch_size or run.preset.query_batch
    if run.al_iter + 1 >= run.preset.al_iters:
        raise UserError(f"al_iter {run.al_iter} is the last iteration of the '{run.preset.name}' preset "
                        f"(al_iters = {run.preset.al_iters}); there is nothing to select for.")
    out = run.paths.indices(run.model_num, run.method, run.al_iter + 1)
    if out.exists() and not run.redo:
        return f"already selected: {out}"
    if METHODS[run.method].one_shot:
        return _one_shot_select_step(run, batch_size, out)
    labeled, unlabeled = run.split()
    run.claim_folder()
    with step_lock(out):
        if out.exists() and not run.redo:
            return f"already selected: {out}"
        picked, seconds = _pick(run, selection_pool(run, labeled, unlabeled), batch_size)
        positions = check_batch(_positions(picked), len(unlabeled), batch_size, run.method)
        if isinstance(picked, WeightedBatch):
            _write_importance_weights(run, run.al_iter + 1, unlabeled[positions], picked.importance_weights,
                                      picked.lewis_weights, picked.sampler)
        sheet = run.write_label_sheet(run.al_iter + 1, unlabeled[positions],  # before the index file (marks done)
                                      lambda: model_votes(run, unlabeled, positions))
        _write_selection(run, out, labeled, unlabeled, positions)
    done = (f"{run.method} selected {len(positions)} of {len(unlabeled)} unlabeled in {seconds:.2f}s"
            f"{_lewis_summary(run, picked)}: {out}")
    return done + (f"\nto label: {sheet} (fill in the label column, then train al_iter {run.al_iter + 1}), or in "
                   f"Label Studio: {run.paths.label_studio_tasks(run.model_num, run.method, run.al_iter + 1)} "
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
    source = run.at_iteration(0)
    n_selections = run.preset.al_iters - 1
    labeled, unlabeled = source.split()
    run.claim_folder()
    with step_lock(out):
        if out.exists() and not run.redo:
            return f"already selected: {out}"
        budget = batch_size * n_selections
        picked, seconds = _pick(source, selection_pool(source, labeled, unlabeled), budget)
        positions = check_batch(_positions(picked), len(unlabeled), budget, run.method)
        written, sheets = [], []
        for k in range(n_selections, 0, -1):  # iteration 1's file, which marks al_iter 0 done, last
            index_file = run.paths.indices(run.model_num, run.method, k)
            if index_file.exists() and not run.redo and index_file != out:
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
    done = (f"{run.method} selected {len(positions)} of {len(unlabeled)} unlabeled at once from iteration 0's "
            f"nets in {seconds:.2f}s ({batch_size} more for each of al_iter 1-{n_selections}; wrote "
            f"iteration(s) {', '.join(map(str, sorted(written)))}){_lewis_summary(run, picked)}: {out.parent}")
    to_label = [str(sheet) for sheet in reversed(sheets) if sheet]
    tasks = [str(run.paths.label_studio_tasks(run.model_num, run.method, k)) for k in sorted(written)]
    return done + (f"\nto label: {', '.join(to_label)} (fill in the label column of each before training its "
                   f"iteration), or in Label Studio: {', '.join(tasks)} (docs/own_data.md)" if to_label else "")


def _pick(run: Run, pool: Pool, batch_size: int):
    """What run.method's strategy picks, and the seconds it took (the pool's reading not counted);
    the strategy's notes and CAL's top-up warning are printed."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, strategy_notes() as notes:
        warnings.simplefilter("always", CALTopUpWarning)
        picked = METHODS[run.method].select(pool, batch_size, selection_rng(run), selection_options(run))
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
    chosen = np.zeros(len(unlabeled), dtype=bool)
    chosen[positions] = True
    new_labeled = np.concatenate([labeled, unlabeled[positions]])
    write_indices(index_file, new_labeled, unlabeled[~chosen], run.dataset, run.pool_size)
    read_indices(index_file, run.dataset, run.pool_size)  # labeled + unlabeled is exactly the pool


def _write_importance_weights(run: Run, al_iter: int, selected, importance_weights, lewis_weights,
                              sampler: str) -> None:
    """Beside iteration al_iter's index file, before it: the pool indices the sampling chose, and each
    one's importance weight (its weight in a loss that estimates the pool's) and maximum Lewis weight."""
    write_npz(run.paths.importance_weights(run.model_num, run.method, al_iter),
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
