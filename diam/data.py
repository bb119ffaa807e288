"""Datasets: the pool (train split) and the test split, held as uint8 tensors.

Images are (N, H, W) uint8 grayscale, or (N, 3, H, W) colour for a dataset made from
files that has colour images; the augmentation module turns batches of them into
3-channel float inputs on the model's device. Files come through torchvision (which
downloads where there is internet); the MNIST-family .gz files alone, and Debian's
Fashion-MNIST location, are accepted too, and scikit-learn's handwritten digits are
embedded for fully offline runs. `mnist10k` and `kmnist10k` are MNIST and KMNIST made
from their official test splits alone (the t10k files), split once into a pool and a
test set. Your own images come through a dataset file (dataset_file.py).
"""
import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torchvision import datasets as tv

from .dataset_file import DatasetFile, load_images
from .errors import UserError
from .paths import DEFAULT_DATA_ROOT, PROJECT_CACHE, atomic_write
from .datasets import DATASETS, BuiltinDataset, check_dataset

# Where Debian's dataset-fashion-mnist package puts the .gz files.
SYSTEM_LOCATIONS = {"fmnist": [Path("/usr/share/datasets/fashion-mnist")]}
DIGITS_TEST_SIZE = 500  # scikit-learn's digits has no official split: a fixed stratified one
# A "test_split" dataset's official test split (10,000 images) is split into 8,000 pool and 2,000
# test images, stratified by class and fixed by the subset seed.
TEST_SPLIT_TEST_SIZE = 2000


class DatasetMissing(UserError):
    """A built-in dataset neither under the data root nor downloadable. The message ends with the
    scripts' way out, --dataset digits (it needs no files); `where` is the rest, which files to put
    where, for a caller that has no --dataset."""

    def __init__(self, where: str):
        super().__init__(f"{where} For a run that needs no files at all, use --dataset digits.")
        self.where = where


@dataclass
class Data:
    name: str
    pool_images: torch.Tensor  # (N, H, W) uint8, or (N, 3, H, W) for colour
    pool_labels: torch.Tensor  # (N,) int64; -1 where nobody has labelled the image yet (a dataset file)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    n_classes: int
    # A dataset made from files only:
    classes: Optional[tuple] = None  # the class names, in the nets' order
    pool_paths: Optional[tuple] = None  # each pool image as the label sheets name it
    fingerprint: Optional[str] = None  # its images' bytes, side, classes and labels (a run folder records it)

    def to(self, device) -> "Data":
        move = lambda t: t.to(device)  # noqa: E731
        return Data(self.name, move(self.pool_images), move(self.pool_labels), move(self.test_images),
                    move(self.test_labels), self.n_classes, self.classes, self.pool_paths, self.fingerprint)

    @property
    def labels_known(self) -> bool:
        """Every pool label is known: the simulation (a selection is labelled by reading its label)."""
        return bool((self.pool_labels >= 0).all())


def load_dataset(dataset: Union[str, DatasetFile], data_root=None, pool_size=None, test_size=None,
                 seed: int = 0, cache: Path = PROJECT_CACHE) -> Data:
    """Load a dataset (a built-in one's name, read under `data_root`, ./data when None; or a dataset
    file); optionally keep a fixed random subset of the pool and of the test split. `cache` holds
    the copies made on the way (unpacked .gz files, decoded images)."""
    if isinstance(dataset, DatasetFile):
        data = _load_files(dataset, cache)
    else:
        check_dataset(dataset)
        root = Path(data_root) if data_root else DEFAULT_DATA_ROOT
        data = LOADERS[DATASETS[dataset].source](dataset, root, seed, cache)
    rng = np.random.default_rng(seed)
    pool = _subset(len(data.pool_labels), pool_size, rng)
    test = _subset(len(data.test_labels), test_size, rng)
    pool_paths = tuple(data.pool_paths[i] for i in pool) if data.pool_paths and pool is not None \
        else data.pool_paths
    return Data(data.name, _take(data.pool_images, pool), _take(data.pool_labels, pool),
                _take(data.test_images, test), _take(data.test_labels, test), data.n_classes, data.classes,
                pool_paths, data.fingerprint)


def _subset(n: int, size, rng) -> Optional[torch.Tensor]:
    """Positions of a fixed random subset of `size` of n, in order; None for all of them."""
    if size is None or size >= n:
        return None
    return torch.from_numpy(np.sort(rng.choice(n, size=size, replace=False)))


def _take(t: torch.Tensor, subset: Optional[torch.Tensor]) -> torch.Tensor:
    # The whole split is kept as it is: a memory-mapped one is not read into memory here.
    return t if subset is None else t[subset]


def _load_files(dataset: DatasetFile, cache: Path) -> Data:
    files = load_images(dataset, cache)
    as_t = torch.from_numpy
    return Data(dataset.name, as_t(files.pool_images), as_t(files.pool_labels), as_t(files.test_images),
                as_t(files.test_labels), len(files.classes), files.classes, files.pool_paths, files.fingerprint)


def _torchvision_class(name: str):
    """The torchvision.datasets class of a registered "torchvision" dataset."""
    return getattr(tv, DATASETS[name].torchvision_class)


def _load_digits(name: str, root: Path, seed: int, cache: Path) -> Data:
    """scikit-learn's embedded digits (neither root nor cache is read: there are no files)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 8x8 images with values 0..16: rescale to the 0..255 range of the other datasets.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    pool_x, test_x, pool_y, test_y = train_test_split(
        images, digits.target, test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=seed)
    as_t = lambda a, dtype: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
    return Data(name, as_t(pool_x, torch.uint8), as_t(pool_y, torch.int64), as_t(test_x, torch.uint8),
                as_t(test_y, torch.int64), DATASETS[name].n_classes)


def _load_test_split(name: str, root: Path, seed: int, cache: Path) -> Data:
    """A torchvision dataset's official test split alone, split into a pool and a test set (stratified)."""
    from sklearn.model_selection import train_test_split

    source = DATASETS[name].of
    cls = _torchvision_class(source)
    files = [f for f in _expected_files(source) if f.startswith("t10k")]
    try:
        raw = _place_gz_files(source, root, cache, files) / cls.__name__ / "raw"
    except (OSError, EOFError) as err:
        raise UserError(f"found compressed {source} test files but could not unpack them ({err}). Check that the "
                        ".gz files are complete.") from None
    if not all((raw / f).exists() for f in files):
        raise DatasetMissing(
            f"dataset '{name}' is made from {source.upper()}'s official test split, whose files are not in "
            f"{(root / cls.__name__ / 'raw').resolve()}. Put {' and '.join(files)} there (each optionally .gz), "
            "or point --data_root (or the environment variable "
            "DIAM_DATA_ROOT) at a folder that holds them.")
    try:
        images = tv.mnist.read_image_file(str(raw / files[0]))
        labels = tv.mnist.read_label_file(str(raw / files[1]))
    except (OSError, ValueError, RuntimeError, AssertionError) as err:
        raise UserError(f"the {source} test files in {raw} cannot be read ({err}): they should be the official "
                        "t10k idx files. Replace them.") from None
    if len(images) != len(labels):
        raise UserError(f"the {source} test files in {raw} hold {len(images)} images but {len(labels)} labels: "
                        "replace them with the official t10k files.")
    pool_x, test_x, pool_y, test_y = train_test_split(
        images.numpy(), labels.numpy(), test_size=TEST_SPLIT_TEST_SIZE, stratify=labels.numpy(), random_state=seed)
    as_t = lambda a, dtype: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
    return Data(name, as_t(pool_x, torch.uint8), as_t(pool_y, torch.int64), as_t(test_x, torch.uint8),
                as_t(test_y, torch.int64), DATASETS[name].n_classes)


def _expected_files(name: str):
    cls, split = _torchvision_class(name), DATASETS[name].split
    if split is not None:
        return [f"emnist-{split}-{part}-{kind}-ubyte" for part in ("train", "test")
                for kind in ("images-idx3", "labels-idx1")]
    return [Path(filename).stem for filename, _ in cls.resources]


def _place_gz_files(name: str, root: Path, cache: Path, files=None) -> Path:
    """Decompress .gz files found in the usual places into torchvision's raw folder (`files`:
    those of both splits unless given).

    Returns the root torchvision should read: `root` itself, or a folder in `cache` when
    `root` is read-only (a shared dataset folder, say).
    """
    cls = _torchvision_class(name)
    files = files or _expected_files(name)
    places = [root / cls.__name__ / "raw", root, root / cls.__name__, *SYSTEM_LOCATIONS.get(name, [])]
    if all((places[0] / filename).exists() for filename in files):
        return root  # unpacked already, as torchvision leaves a folder it downloaded into
    target = root if root.is_dir() and _writable(root) else unpack_cache(cache)  # a missing root is not made here
    raw = target / cls.__name__ / "raw"
    for filename in files:
        if (raw / filename).exists():
            continue
        source = next((p / (filename + ".gz") for p in places if (p / (filename + ".gz")).exists()), None)
        if source is None:
            return root
        with gzip.open(source, "rb") as compressed:
            atomic_write(raw / filename, lambda f: shutil.copyfileobj(compressed, f))
    return target


def _writable(folder: Path) -> bool:
    """Writable, and not marked read-only (root may write anywhere, but should not here)."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def unpack_cache(cache: Path) -> Path:
    return Path(cache) / "datasets"


def _load_torchvision(name: str, root: Path, seed: int, cache: Path) -> Data:
    """A torchvision dataset's train and test splits (the seed is not read: they are fixed)."""
    entry: BuiltinDataset = DATASETS[name]
    cls, split, n_classes, offset = _torchvision_class(name), entry.split, entry.n_classes, entry.label_offset
    kwargs = {"split": split} if split else {}
    try:
        root = _place_gz_files(name, root, cache)
    except UserError:
        raise
    except (OSError, EOFError) as err:
        raise UserError(f"found compressed {name} files but could not unpack them into {root} ({err}). "
                        "Check the .gz files are complete and that --data_root is writable.")
    try:
        train = cls(str(root), train=True, download=False, **kwargs)
        test = cls(str(root), train=False, download=False, **kwargs)
    except RuntimeError:
        # torchvision makes its folders before downloading, the root's missing parents included
        # (../shared/datasets makes ../shared): each is removed again if the download fails.
        created, folder = [], root / cls.__name__ / "raw"
        while not folder.exists():
            created.append(folder)
            folder = folder.parent
        try:
            train = cls(str(root), train=True, download=True, **kwargs)
            test = cls(str(root), train=False, download=True, **kwargs)
        except Exception:  # no network, a mirror down, a bad archive: all mean "not available here"
            for folder in created:  # deepest first; one holding anything else stays
                try:
                    folder.rmdir()
                except OSError:
                    pass
            files = ", ".join(_expected_files(name))
            raise DatasetMissing(
                f"dataset '{name}' is not in {root.resolve()} and could not be downloaded (no internet?). "
                f"Put its files ({files}, each optionally .gz) into {(root / cls.__name__ / 'raw').resolve()}, "
                "or point --data_root (or the environment variable DIAM_DATA_ROOT) at a folder that holds them."
            ) from None
    return Data(name, train.data.to(torch.uint8), train.targets.long() - offset, test.data.to(torch.uint8),
                test.targets.long() - offset, n_classes)


# BuiltinDataset.source -> the loader of (name, data root, subset seed, cache)
LOADERS = {"torchvision": _load_torchvision, "test_split": _load_test_split, "sklearn_digits": _load_digits}
