"""The built-in datasets: the one registry of their names, where each comes from and its name in tables.

`DATASETS` maps a name (what `--dataset`, iter_all.sh's DATASETS and run_grid.py's --datasets
take) to a `BuiltinDataset`: which of data.py's loaders reads it (`source`) and with what. Adding
one that an existing loader reads is one entry here (docs/layout.md shows it). No torch here:
the command line checks names before it loads anything.
"""
from dataclasses import dataclass
from typing import Optional

from .errors import UserError


@dataclass(frozen=True)
class BuiltinDataset:
    # data.py's loader: "torchvision" (a torchvision dataset's train and test splits, from files or a
    # download), "test_split" (a torchvision dataset's official test split alone, split into a pool and a
    # test set) or "sklearn_digits" (scikit-learn's embedded digits: no files, offline)
    source: str
    display_name: str = ""  # in tables and figures (default: the name)
    n_classes: int = 10
    torchvision_class: Optional[str] = None  # "torchvision": the class in torchvision.datasets, e.g. "MNIST"
    split: Optional[str] = None  # "torchvision": EMNIST's split
    label_offset: int = 0  # "torchvision": subtracted from the stored labels, so that they start at 0
    of: Optional[str] = None  # "test_split": the registered "torchvision" dataset whose test split it is


# The original scripts' torchvision datasets, scikit-learn's embedded digits (offline), and MNIST and
# KMNIST made from their official test splits alone (10,000 images each, split once into a pool and a
# test set: the training splits cannot be had offline, the test splits ship in ../shared/datasets).
DATASETS: dict[str, BuiltinDataset] = {
    "mnist": BuiltinDataset("torchvision", "MNIST", torchvision_class="MNIST"),
    "kmnist": BuiltinDataset("torchvision", "Kuzushiji-MNIST", torchvision_class="KMNIST"),
    "fmnist": BuiltinDataset("torchvision", "Fashion-MNIST", torchvision_class="FashionMNIST"),
    # EMNIST letters are labelled 1..26; shifted to 0..25.
    "emnistlet": BuiltinDataset("torchvision", "EMNIST letters", 26, "EMNIST", "letters", label_offset=1),
    "emnistdig": BuiltinDataset("torchvision", "EMNIST digits", torchvision_class="EMNIST", split="digits"),
    "digits": BuiltinDataset("sklearn_digits"),
    "mnist10k": BuiltinDataset("test_split", "MNIST (test split)", of="mnist"),
    "kmnist10k": BuiltinDataset("test_split", "Kuzushiji-MNIST (test split)", of="kmnist"),
}


def check_dataset(name: str) -> None:
    """A built-in dataset's name; else a UserError listing them and pointing at dataset files."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'. Choose one of: {', '.join(DATASETS)}, or give a .json file "
                        "describing your own images (docs/own_data.md).")


def display_name(dataset: str) -> str:
    """A dataset's name in tables and figures (a dataset file's, or one no longer registered: itself)."""
    entry = DATASETS.get(dataset)
    return (entry.display_name or dataset) if entry else dataset
