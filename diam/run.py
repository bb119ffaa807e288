"""The run folder of one (preset, dataset): its settings, device and data, the split of each
iteration, the label sheets a person fills in, and the checkpoints of its nets.

A pool whose labels are not all known (a dataset file's) is labelled by a person:
selection writes the chosen images to a label sheet, and training reads the labels
back from the sheets, refusing before it writes anything while one is missing.
"""
import copy
import dataclasses
import pickle
import sys
import threading
import zipfile
from functools import cached_property

import numpy as np
import torch

from . import label_studio, models
from .data import Data, load_dataset
from .errors import UserError
from .labels import read_rows, read_sheet, write_sheet
from .paths import check_run_config, claim_run_config, read_indices, step_lock, write_indices
from .presets import SUBSET_SEED
from .settings import StepSettings, resolve_device
from .training import allow_tf32, stream_seed, to_device

# torch.manual_seed and the draws of the initial weights, done by one net at a time.
INITIAL_WEIGHTS_LOCK = threading.Lock()

# What torch.load raises for a truncated or foreign file: not a zip archive or one of another
# layout (RuntimeError from its reader, BadZipFile), a pickle it refuses or cannot parse
# (UnpicklingError, ValueError), an empty file (EOFError), an unknown legacy format (KeyError).
CHECKPOINT_READ_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError, KeyError)


class Run:
    """One (preset, dataset) run folder with its settings, device and data.

    The step's settings are `run.settings`, read there (frozen, never copied); what the run adds is
    what they resolve to on this machine: the torch device, the speed switches that act on it, and
    the data (loaded when first asked for)."""

    def __init__(self, settings: StepSettings):
        self.settings = settings
        self.device = resolve_device(settings.device)
        if self.device.type != "cuda" and settings.speed.cuda_pieces():
            print(f"note: DIAM_CUDA_FAST ({', '.join(settings.speed.cuda_pieces())}) acts on CUDA only; ignored "
                  f"on {self.device}.", file=sys.stderr)
        self.speed = settings.speed.on_device(self.device.type)
        if self.device.type == "cuda":
            allow_tf32()
            torch.backends.cudnn.benchmark = self.speed.cudnn_benchmark
        if settings.nets:
            models.check_target_names(settings.nets)

    def at_iteration(self, al_iter: int) -> "Run":
        """This run at another iteration (same folder, device and loaded data)."""
        other = copy.copy(self)  # keeps the cached data
        other.settings = dataclasses.replace(self.settings, al_iter=al_iter)
        return other

    @cached_property
    def data(self) -> Data:
        s = self.settings
        data = load_dataset(s.dataset_file or s.dataset, s.data_root, s.preset.pool_size, s.preset.test_size,
                            SUBSET_SEED, s.cache).to(self.device)
        if s.run_record is not None:  # checked at the step's entry, all but the images' content
            check_run_config(s.paths, s.run_record, self._run_config(data))
        return data

    def _run_config(self, data: Data) -> dict:
        config = self.settings.run_config()
        if data.fingerprint:  # a dataset file's images and labels: other ones would scramble the index files
            config["dataset_content"] = data.fingerprint
        return config

    def claim_folder(self) -> None:
        """Record this run's settings in its folder: done by a step whose inputs are checked, just
        before its first write, so refused input leaves the folder as it was. A folder that had its
        record when the step began was checked then (and its images' content when they loaded)."""
        data = self.data
        if self.settings.run_record is None:
            claim_run_config(self.settings.paths, self._run_config(data))

    @property
    def pool_size(self) -> int:
        return len(self.data.pool_labels)

    def image_size(self, net_id: int, testing: bool = False) -> int:
        preset = self.settings.preset
        if preset.image_size:
            return preset.image_size
        tested_as = 0 if testing and preset.test_at_net0_size else net_id
        return models.target_input_size(self.settings.target_nets[tested_as])

    # ------------------------------------------------------------ index files
    def split(self, al_iter=None, make_initial=False):
        """(labeled, unlabeled) pool indices for an iteration; iteration 0's are made here when
        `make_initial` (by training, the step that reads them first)."""
        s = self.settings
        al_iter = s.al_iter if al_iter is None else al_iter
        path = s.paths.indices(s.model_num, s.method, al_iter)
        if al_iter == 0 and make_initial and not path.exists():
            self._write_initial_split(path)
        elif al_iter == 0 and not path.exists():
            raise UserError(f"no initial split at {path}: it is written when iteration 0 is trained. Run "
                            "train_net.py --al_iter 0 with the same --dataset, --model_num and preset first.")
        elif not path.exists():
            raise UserError(f"no selection has been written for al_iter {al_iter} (expected {path}). Run "
                            f"al_select.py --al_iter {al_iter - 1} with the same --dataset, --method, "
                            "--model_num and preset first.")
        return read_indices(path, s.dataset, self.pool_size)

    def _write_initial_split(self, path) -> None:
        """The initial labeled set: `initial_labeled` pool images drawn at random among those whose
        label is known (all of them in a simulation)."""
        n_initial = self.settings.preset.initial_labeled
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
            order = np.random.default_rng(self.settings.preset.seed).permutation(len(known))
            labeled = np.sort(known[order[:n_initial]])
            write_indices(path, labeled, np.setdiff1d(np.arange(self.pool_size), labeled), self.settings.dataset,
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
        for al_iter in range(1, self.settings.al_iter + 1):
            after, _ = self.split(al_iter)
            batch = after[~np.isin(after, before)]
            given = self._given_labels(al_iter, [data.pool_paths[i] for i in batch])
            labels[torch.from_numpy(batch).to(labels.device)] = torch.tensor(given, device=labels.device)
            before = after
        unlabelled = labeled[(labels[torch.from_numpy(labeled).to(labels.device)] < 0).cpu().numpy()]
        if len(unlabelled):  # only index files that disagree with the sheets lead here
            raise UserError(f"{len(unlabelled)} images of the labeled set of al_iter {self.settings.al_iter} have no "
                            f"label (pool positions {', '.join(map(str, unlabelled[:5]))}...). Rerun the selections "
                            "that chose them with --redo.")
        return dataclasses.replace(data, pool_labels=labels)

    def _given_labels(self, al_iter: int, images: list) -> list:
        """The class index of each image selected for `al_iter`: from the Label Studio export beside
        the sheet when there is one (label_studio.py), else from the sheet."""
        s = self.settings
        sheet = s.paths.label_sheet(s.model_num, s.method, al_iter)
        exports = [p for p in s.paths.label_studio_exports(s.model_num, s.method, al_iter) if p.exists()]
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
        data, s = self.data, self.settings
        if data.labels_known:
            return None
        sheet = s.paths.label_sheet(s.model_num, s.method, al_iter)
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
        version = f"{s.method}: the T = {s.model_num} target models of al_iter {al_iter - 1}"
        addresses = label_studio.image_addresses(images, s.dataset_file.base, data.pool_paths)
        label_studio.write_tasks(s.paths.label_studio_tasks(s.model_num, s.method, al_iter),
                                 label_studio.tasks(images, addresses, votes(), s.target_nets, data.classes, known,
                                                    version))
        label_studio.write_config(s.paths.label_studio_config, data.classes)
        return sheet

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, net_id, al_iter=None):
        s = self.settings
        return s.paths.checkpoint(s.model_num, s.method, s.al_iter if al_iter is None else al_iter, net_id)

    def initial_net(self, net_id: int):
        """Net `net_id` at its initial weights, drawn from the net's own stream as training draws them;
        returns (net, init rule, stream seed)."""
        name, preset = self.settings.target_nets[net_id], self.settings.preset
        stream = stream_seed(preset.seed, net_id)
        with INITIAL_WEIGHTS_LOCK:  # nets trained at once (DIAM_CUDA_FAST=streams) share torch's global generator
            torch.manual_seed(stream)  # the initial weights are drawn from the net's own stream too
            net = models.build_target(name, self.data.n_classes, preset.dropout)
            init = models.initialise_target(net, name, preset.init, self.settings.ofa_cache)
        return net, init, stream

    def load_net(self, net_id: int):
        """A trained target net and its record, checked to be the net asked for."""
        path, s = self.checkpoint(net_id), self.settings
        if not path.exists():
            raise UserError(f"net {net_id} has not been trained for al_iter {s.al_iter} (no {path}). Run "
                            f"train_net.py --net_id {net_id} --al_iter {s.al_iter} with the same "
                            "--dataset, --method, --model_num and preset first.")
        n_classes = self.data.n_classes  # loads and checks the dataset: its errors are not the checkpoint's

        def damaged(why):  # advice that deletes the file: given only where the failure was the file's
            return UserError(f"the checkpoint {path} is damaged or belongs to another net ({why}). Delete it "
                             f"and rerun train_net.py --net_id {net_id} --al_iter {s.al_iter}.")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except CHECKPOINT_READ_ERRORS as err:
            raise damaged(err) from None
        info = saved.get("info") if isinstance(saved, dict) else None
        if not isinstance(info, dict) or not isinstance(saved.get("state_dict"), dict) \
                or not {"net_id", "dataset"} <= info.keys():
            raise damaged("not a checkpoint written by train_net.py")
        recorded = info.get("net", f"ofa{info['net_id']}")  # the paper's nets: OFA net n at place n
        if info["net_id"] != net_id or info["dataset"] != s.dataset or recorded != s.target_nets[net_id]:
            raise damaged(f"it holds net {info['net_id']} ({recorded}) of dataset {info['dataset']}")
        net = models.build_target(s.target_nets[net_id], n_classes, s.preset.dropout)  # its errors are its own
        try:
            net.load_state_dict(saved["state_dict"])
        except (RuntimeError, AssertionError) as err:  # a key or shape that does not fit (ofa's loader asserts)
            raise damaged(err) from None
        return to_device(net, self.device), info
