"""The one place that holds numbers: the paper's settings and a CPU-sized preset.

`paper` follows SPEC.md sections 3-4 exactly. `quick` keeps every mechanism but
shrinks images, pool, labeled set and epochs so a whole experiment runs on two
CPU cores in minutes.
"""
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

from .errors import UserError

# Torchvision datasets of the original scripts, and scikit-learn's embedded digits (offline).
DATASETS = ("mnist", "kmnist", "fmnist", "emnistlet", "emnistdig", "digits")
METHODS = ("random", "least_conf", "margin", "entropy", "coreset", "CAL", "DIAM")
# Methods whose selection reads the late-epoch snapshot labels of every model.
SNAPSHOT_METHODS = ("CAL", "DIAM")
# Methods whose selection reads the final models' softmax outputs on the pool.
PROBABILITY_METHODS = ("least_conf", "margin", "entropy")
MAX_MODELS = 12
# Initial weights: OFA's ImageNet weights when available, or a fresh initialisation.
INIT_MODES = ("auto", "pretrained", "scratch")


@dataclass(frozen=True)
class Preset:
    name: str
    # --- data (SPEC 3) ---
    initial_labeled: int = 3000
    query_batch: int = 1500
    al_iters: int = 11  # evaluation points al_iter = 0 .. al_iters-1
    pool_size: Optional[int] = None  # None: the whole train split; else a fixed random subset
    test_size: Optional[int] = None  # None: the whole test split
    image_size: Optional[int] = None  # None: each net at its own OFA input size
    crop_scale_min: float = 0.08  # random-resized-crop keeps 8%..100% of the image area
    # --- training (SPEC 4) ---
    epochs: int = 20
    train_batch: int = 120
    lr: float = 7.5e-3
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    dropout: float = 0.1
    dis_frac: float = 0.5  # share of the last epochs whose snapshots CAL/DIAM read
    seed: int = 0
    # --- selection (SPEC 5) ---
    coreset_feature_net: int = 0  # coreset distances live in this net's penultimate features
    # --- inference ---
    eval_batch: int = 500
    # --- quirks of the original code, off by default (SPEC 6) ---
    test_at_net0_size: bool = False  # original tested every net at 224
    score_with_train_aug: bool = False  # original scored the pool through training augmentation
    shuffle_epochs: bool = True  # original did not reshuffle the labeled set between epochs

    @property
    def snapshot_epochs(self) -> int:
        """How many late epochs leave a snapshot: round(epochs * DIS_frac), at least 2."""
        return max(2, min(self.epochs, round(self.epochs * self.dis_frac)))

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "paper": Preset(name="paper"),
    # CPU-sized: 32 px inputs for every net, a small labeled set and pool, four
    # evaluation points. A deep net from a fresh initialisation needs many small steps
    # (measured: 30 steps of 50 stay at chance, 60 of 25 reach ~60% on digits), a
    # larger learning rate, and a gentler crop (8 x 8 digits keep little at 8% area).
    "quick": Preset(
        name="quick",
        initial_labeled=150,
        query_batch=50,
        al_iters=4,
        pool_size=3000,
        test_size=1000,
        image_size=32,
        crop_scale_min=0.6,
        epochs=10,
        train_batch=25,
        lr=0.1,
    ),
}

# Command-line overrides that every script accepts, mapped to Preset fields.
OVERRIDES = {
    "epochs": int,
    "image_size": int,
    "initial_labeled": int,
    "pool_size": int,
    "test_size": int,
    "train_batch": int,
    "query_batch": int,
    "al_iters": int,
    "lr": float,
    "dis_frac": float,
}


def add_preset_arguments(parser) -> None:
    """The preset flags shared by every script, so they cannot drift apart."""
    parser.add_argument("--preset", default="paper", help=f"one of {sorted(PRESETS)} (default: paper)")
    for name, kind in OVERRIDES.items():
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"override the preset's {name}")
    parser.add_argument("--test_at_net0_size", action="store_true", default=None,
                        help="quirk of the original: test every net at net 0's input size")
    parser.add_argument("--score_with_train_aug", action="store_true", default=None,
                        help="quirk of the original: score the pool through the training augmentation")
    parser.add_argument("--no_shuffle", dest="shuffle_epochs", action="store_false", default=None,
                        help="quirk of the original: keep the labeled order fixed across epochs")


def preset_from_args(args) -> Preset:
    if args.preset not in PRESETS:
        raise UserError(f"unknown preset '{args.preset}'. Choose one of: {', '.join(sorted(PRESETS))}.")
    preset = PRESETS[args.preset]
    names = [f.name for f in fields(Preset)]
    changes = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None and n != "name"}
    for name, value in changes.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise UserError(f"--{name} must be positive, got {value}.")
    if changes.get("dis_frac", preset.dis_frac) > 1:
        raise UserError("--dis_frac must be in (0, 1]: it is the share of epochs that leave snapshots.")
    return replace(preset, **changes)
