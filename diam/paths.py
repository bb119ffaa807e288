"""The one place that knows the on-disk layout, and how files are written safely.

    <work_dir>/<preset>/<dataset>/config.json                  settings the run was made with
    <work_dir>/<preset>/<dataset>/indices/iter0.npz             initial labeled/unlabeled split (shared)
    <work_dir>/<preset>/<dataset>/indices/T<T>/<method>/iter<I>.npz   split selected for iteration I
    <work_dir>/<preset>/<dataset>/indices/T<T>/<method>/iter<I>_weights.npz   importance weights of the
                                                                 examples the selection sampled (lewis*)
    <work_dir>/<preset>/<dataset>/indices/T<T>/<method>/iter<I>_labels.csv   its images, for a person to
                                                                label (a pool whose labels are unknown)
    <work_dir>/<preset>/<dataset>/indices/T<T>/<method>/iter<I>_label_studio.json   the same images as
                                                                Label Studio tasks; a Label Studio export of
                                                                them, iter<I>_label_studio_export.{json,csv},
                                                                is read instead of the sheet
    <work_dir>/<preset>/<dataset>/label_studio.xml              Label Studio's labelling configuration
    <work_dir>/<preset>/<dataset>/models/iter0/net<N>.{pt,json,npz}   iteration 0 (shared by all T, methods)
    <work_dir>/<preset>/<dataset>/models/T<T>/<method>/iter<I>/net<N>.{pt,json,npz}
    <work_dir>/<preset>/extracted_results/<T>/<dataset>/<method>/<I>/performances.txt

A repeat with --seed S >= 1 lives beside seed 0, which keeps the layout above:
    <work_dir>/<preset>/seed<S>/<dataset>/...                  (the same tree as above)
    <results_root>/seed<S>/<T>/<dataset>/<method>/<I>/performances.txt

run_grid.py keeps each step's output in a log beside them (never read back):
    <work_dir>/<preset>/logs/[seed<S>/]<dataset>/iter0/train_net<N>.log
    <work_dir>/<preset>/logs/[seed<S>/]<dataset>/T<T>/<method>/iter<I>/{train_net<N>,test,select}.log

Iteration 0 is trained on the same initial split for every T and method, so its
models are stored once; later iterations depend on (T, method) and never collide.
Every file is written to a temporary name and renamed, so a file that exists is
complete; each step knows it is done when its last output exists.
"""
import functools
import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
from filelock import FileLock

from .errors import UserError

PAPER_MARKER = "PAPER_RESULTS"  # a results folder holding this file is the paper's: never written


@functools.cache
def process_umask() -> int:
    """The process's umask, read at the first write (not at import: reading it means setting it for an
    instant), then kept: nothing in a step changes it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The defaults of the folders a step may be given through the environment (settings.read_environment).
DEFAULT_WORK_DIR = Path("runs")  # where runs live
DEFAULT_DATA_ROOT = Path("data")  # where dataset files live
# Where derived copies of data live (unpacked .gz files, decoded images): inside the clone, so that
# nothing is written outside it.
PROJECT_CACHE = Path(__file__).resolve().parent.parent / ".cache"


def seed_folder(seed: int) -> str:
    """The folder of repeat `seed` inside a run or results folder; '' for seed 0 (today's layout)."""
    return f"seed{seed}" if seed else ""


class RunPaths:
    def __init__(self, work_dir, preset_name: str, dataset: str, results_dir=None, seed: int = 0):
        self.work_dir = Path(work_dir)
        self.root = self.work_dir / preset_name / seed_folder(seed) / dataset
        self.logs_root = self.work_dir / preset_name / "logs" / seed_folder(seed) / dataset
        self.dataset = dataset
        self.seed = seed
        # results_root is the whole tree that table.py and plot.py read, every seed included.
        self.results_root = Path(results_dir) if results_dir else self.work_dir / preset_name / "extracted_results"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    def indices(self, model_num: int, method: str, al_iter: int) -> Path:
        if al_iter == 0:
            return self.root / "indices" / "iter0.npz"
        return self.root / "indices" / f"T{model_num}" / method / f"iter{al_iter}.npz"

    def importance_weights(self, model_num: int, method: str, al_iter: int) -> Path:
        """Beside the index file of iteration I (>= 1): the sampled examples' importance weights,
        written before the index file (which marks the selection done)."""
        return self.indices(model_num, method, al_iter).with_name(f"iter{al_iter}_weights.npz")
    def label_sheet(self, model_num: int, method: str, al_iter: int) -> Path:
        """The images selected for iteration `al_iter` (al_iter >= 1), as path,label rows a person fills in."""
        return self.root / "indices" / f"T{model_num}" / method / f"iter{al_iter}_labels.csv"

    def label_studio_tasks(self, model_num: int, method: str, al_iter: int) -> Path:
        """The same images as Label Studio tasks, to import into a project (diam/label_studio.py)."""
        return self.label_sheet(model_num, method, al_iter).with_name(f"iter{al_iter}_label_studio.json")

    def label_studio_exports(self, model_num: int, method: str, al_iter: int) -> tuple[Path, Path]:
        """Where a person puts the project's Label Studio export (JSON or JSON-MIN; CSV) of those tasks."""
        sheet = self.label_sheet(model_num, method, al_iter)
        return tuple(sheet.with_name(f"iter{al_iter}_label_studio_export{ext}") for ext in (".json", ".csv"))

    @property
    def label_studio_config(self) -> Path:
        """Label Studio's labelling configuration for the dataset's classes (one per run folder)."""
        return self.root / "label_studio.xml"

    def model_dir(self, model_num: int, method: str, al_iter: int) -> Path:
        if al_iter == 0:
            return self.root / "models" / "iter0"
        return self.root / "models" / f"T{model_num}" / method / f"iter{al_iter}"

    def checkpoint(self, model_num, method, al_iter, net_id) -> Path:
        return self.model_dir(model_num, method, al_iter) / f"net{net_id}.pt"

    def checkpoint_info(self, model_num, method, al_iter, net_id) -> Path:
        return self.model_dir(model_num, method, al_iter) / f"net{net_id}.json"

    def pool_predictions(self, model_num, method, al_iter, net_id) -> Path:
        """What training recorded on the pool: snapshot labels, probabilities, features."""
        return self.model_dir(model_num, method, al_iter) / f"net{net_id}_pool.npz"

    def results(self, model_num: int, method: str, al_iter: int) -> Path:
        return self.results_root / seed_folder(self.seed) / str(model_num) / self.dataset / method / str(al_iter)

    def performances(self, model_num, method, al_iter) -> Path:
        return self.results(model_num, method, al_iter) / "performances.txt"

    def step_log(self, model_num: int, method: str, al_iter: int, step: str) -> Path:
        """The log of one step of run_grid.py (`step`: train_net<N>, test or select)."""
        if al_iter == 0 and step.startswith("train"):  # iteration 0's nets are shared, as their files are
            return self.logs_root / "iter0" / f"{step}.log"
        return self.logs_root / f"T{model_num}" / method / f"iter{al_iter}" / f"{step}.log"


# ---------------------------------------------------------------- atomic writes
def atomic_write(path, write, binary=True) -> None:
    """Write through `write(fileobj)` to a temp file beside `path`, then rename over it (`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w") as f:
        write(f)


def _write_error(path, err: OSError) -> UserError:
    return UserError(f"could not write {path}: {err.strerror or err}. Nothing was changed there; "
                     "free some disk space or choose another --work_dir, then run the same command again.")


def _remove_quietly(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path):
    """A temporary name beside `path` to write to (`atomic_write`, or a writer that needs a file
    name, such as a memory-mapped array): synced and renamed over `path` when the block ends
    without error, removed when it fails, so a file that exists is complete."""
    path = Path(path)
    try:  # a full disk can refuse the new (temp) file itself
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp makes 0600 files; results are for everyone to read
        os.close(fd)
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise _write_error(path, err)
    except BaseException:
        _remove_quietly(tmp)
        raise


def write_text(path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npz(path, **arrays) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


# What np.load and reading its arrays raise for a damaged or foreign .npz: not a zip archive or a
# member cut short (BadZipFile), an empty file (EOFError), pickled objects or a bad array header
# (ValueError), an array it lacks (KeyError). Other errors are not the file's and are not caught.
NPZ_READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, KeyError)


@contextmanager
def step_lock(output: Path):
    """Serialise the processes that would produce `output` (two loops sharing a folder)."""
    lock = FileLock(str(output) + ".lock")
    try:  # a --work_dir that is a file, or a folder one may not write to, fails here first
        output.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:
        raise _write_error(output.parent, err) from None
    try:
        yield
    finally:
        lock.release()


def refuse_paper_results(results_root: Path, flag: str) -> None:
    """Nothing may be written over the paper's published numbers; `flag` is the calling script's
    option that chose `results_root` (--results_dir, --work_dir, plot.py's --out), the one the
    message names."""
    for folder in (results_root, *results_root.parents):
        if (folder / PAPER_MARKER).exists():
            raise UserError(f"{results_root} is inside {folder}, which holds the paper's published results "
                            f"(it contains {PAPER_MARKER}), and nothing may be written there. Point {flag} at a "
                            f"folder outside it, or leave {flag} out for its default.")


# ---------------------------------------------------------------- run settings
# Settings recorded only where they differ from the default (named target nets, a dataset made
# from files, linear heads), so that a default run's config.json is what it always was; their
# absence is the default.
# (A file dataset's content fingerprint is compared only by the steps that load the images.)
ABSENT_IS_DEFAULT = ("nets", "dataset_file", "linear_heads")


def read_run_config(paths: RunPaths) -> Optional[dict]:
    """The settings a run folder records (None when no script has recorded any yet). Nothing is
    written, not even a lock: config.json is written atomically, so one that exists is complete."""
    if not paths.config_file.exists():
        return None
    try:
        return json.loads(paths.config_file.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{paths.config_file} is unreadable ({err}). Delete it only if the whole "
                        f"folder {paths.root} is to be redone.")


def claim_run_config(paths: RunPaths, settings: dict) -> None:
    """The first script in a run folder records its settings; one that finds them recorded meanwhile
    (another process was first) checks them as `check_run_config` does."""
    with step_lock(paths.config_file):
        if not paths.config_file.exists():
            write_json(paths.config_file, settings)
            return
    check_run_config(paths, read_run_config(paths), settings)


def check_run_config(paths: RunPaths, recorded: dict, settings: dict) -> None:
    """A script's settings match those its run folder recorded (`read_run_config`); else a UserError."""
    # Quirks that only change how a run is tested may differ between scripts.
    # The mode is compared through the quirks it is made of.
    compared = set(settings) | (set(recorded) & set(ABSENT_IS_DEFAULT))
    differing = sorted(k for k in compared if k not in ("test_at_net0_size", "mode")
                       and recorded.get(k) != settings.get(k))
    if differing == ["dataset_content"]:  # the same dataset file, its images or labels edited under a run
        raise UserError(
            f"the images or labels of dataset '{settings.get('dataset')}' are not those its run folder {paths.root} "
            "was made with (its config.json records a fingerprint of the pool and test images, their labels, the "
            "side and the classes). The folder's index files number the pool's images by position, so one run "
            "folder holds one version of a dataset: put the files back as they were, or start a new run for the "
            "changed dataset (another \"name\" in its dataset file, or another --work_dir). The labels of images a "
            "run selected go in its label sheets (indices/T<T>/<method>/iter<I>_labels.csv), not in the pool "
            "manifest.")
    if differing:
        shown = lambda values, k: repr(values[k]) if k in values else "the default"  # noqa: E731
        pairs = ", ".join(f"{k}: folder has {shown(recorded, k)}, you asked {shown(settings, k)}" for k in differing)
        mode = ""
        if "mode" in settings and recorded.get("mode") != settings["mode"]:
            mode = (f" It holds a run in '{recorded.get('mode')}' mode and you asked for '{settings['mode']}' "
                    "mode: the two behaviours never share a folder.")
        raise UserError(f"the run folder {paths.root} was made with other settings ({pairs}).{mode} Pass the "
                        "same --preset, overrides, quirk flags and --nets to every script of one run, or use another "
                        "--work_dir.")


# ---------------------------------------------------------------- index files
def write_indices(path: Path, labeled, unlabeled, dataset: str, pool_size: int) -> None:
    write_npz(path, labeled=np.asarray(labeled, dtype=np.int64), unlabeled=np.asarray(unlabeled, dtype=np.int64),
              dataset=np.array(dataset), pool_size=np.array(pool_size))


def read_indices(path: Path, dataset: str, pool_size: int):
    """Load a labeled/unlabeled split and check it is a partition of this dataset's pool."""
    if not path.exists():
        raise UserError(f"no index file at {path}.")
    try:
        with np.load(path) as z:
            labeled, unlabeled = z["labeled"], z["unlabeled"]
            file_dataset, file_pool = str(z["dataset"]), int(z["pool_size"])
    except Exception as err:  # a truncated or foreign file: numpy raises several kinds
        raise UserError(f"the index file {path} is damaged or not an index file ({err}). Delete it and "
                        "rerun the step that writes it (train_net.py for iteration 0, al_select.py after).")
    if file_dataset != dataset or file_pool != pool_size:
        raise UserError(f"the index file {path} belongs to dataset '{file_dataset}' with a pool of {file_pool}, "
                        f"but this run uses '{dataset}' with a pool of {pool_size}. Use the matching "
                        "--dataset/--preset, or another --work_dir.")
    both = np.concatenate([labeled, unlabeled])
    if both.size != pool_size or both.min(initial=0) < 0 or both.max(initial=0) >= pool_size \
            or np.unique(both).size != pool_size:
        raise UserError(f"the index file {path} is not a partition of the pool 0..{pool_size - 1} (overlapping, "
                        "missing or out-of-range indices). Delete it and rerun the step that writes it.")
    return labeled, unlabeled
