"""The one place that holds numbers: the paper's settings and a CPU-sized preset.

`paper` follows SPEC.md sections 3-4 exactly. `quick` keeps every mechanism but
shrinks images, pool, labeled set and epochs so a whole experiment runs on two
CPU cores in minutes.
"""
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

from .errors import UserError

# What a loop runs unless told otherwise (iter_all.sh's list, the grid, the benchmarks): the paper's
# seven methods, in the order the original scripts run them (the first seven of methods.METHODS).
DEFAULT_METHODS = PAPER_METHODS = ("random", "least_conf", "margin", "entropy", "coreset", "CAL", "DIAM")
# The paper's datasets: what a loop runs unless told otherwise, and the first of a table's rows.
PAPER_DATASETS = ("mnist", "kmnist")
MAX_MODELS = 12
# The values of T in the paper's results (run_grid.py's default grid, table.py's default columns).
PAPER_MODEL_NUMS = (2, 4, 6, 8, 12)
# Initial weights (SPEC section 2): he_fout is what the original code in effect trained from
# (it loaded OFA's ImageNet weights, then re-initialised every layer with OFA's he_fout rule);
# pretrained keeps those ImageNet weights (the paper's stated intent); pytorch is PyTorch's
# default initialisation of each layer.
INIT_MODES = ("he_fout", "pretrained", "pytorch")
# The pool/test subsets of a preset with pool_size/test_size are part of the dataset's
# definition: the same for every repeat (--seed), so repeats are paired on one test set.
SUBSET_SEED = 0

# DIAM_qp (SPEC section 5, the authors' latest code).
DIAM_QP_Q = 1.0  # --DIAMq: weight of the first-order score d against batch diversity
DIAM_QP_SUBSAMPLE_DIVISOR = 5  # the QP runs on the top U // 5 examples by d ...
DIAM_QP_MAX_SUBSAMPLE = 15000  # ... and never on more than these
DIAM_QP_NEIGHBOUR_FRACTION = 0.01  # k = floor(0.01 n) nearest neighbours per example and model
# OSQP's absolute and relative tolerance. The batch is the B largest entries of the QP's
# solution, which is mostly fractional; OSQP's default (1e-3) leaves errors of ~3e-3 in it,
# as large as the gaps between neighbouring entries. At 1e-9 the error measured ~3e-8, and
# the iterations cost little next to OSQP's one factorisation.
DIAM_QP_SOLVER_TOLERANCE = 1e-9
DIAM_QP_MAX_SOLVER_ITERATIONS = 1_000_000
# The certified dense solve (docs/diam_qp.md), which answers before OSQP. Cumulative numbers of
# projected-gradient (FISTA) steps after which the active-set method is tried; OSQP answers
# when every try fails. 200 steps left the active set 1-2 steps from settled on the benchmark's
# problems at n = 1,000-3,000; the second try is for problems that converge slower.
DIAM_QP_WARM_START_STEPS = (200, 1000)
DIAM_QP_MAX_ACTIVE_SET_STEPS = 50  # active-set steps per try before it counts as failed
# The certificate absorbs any change of the projected matrix up to this fraction of its
# largest eigenvalue (in 2-norm). A backward-stable eigensolver's error is at worst ~n * 1.1e-16
# of it (1.3e-12 at n = 11,400; two libraries' projections differed by 1e-13 entrywise at
# n = 3,000), so another library or device gives the same certified picks.
DIAM_QP_ABSORBED_ERROR = 1e-11
# The least margin the certificate accepts (free values inside (0, 1), multipliers at the
# bounds, the gap at the top-B cut), whatever the error bound: a floor for ill-posed cases.
DIAM_QP_CERTIFICATE_MARGIN = 1e-9


def default_nets(model_num: int) -> tuple:
    """The paper's T target models, OFA nets 0..T-1: what a run has when it names none (--nets
    names others: "ofa<N>" is OFA net N, another name a torchvision model)."""
    return tuple(f"ofa{n}" for n in range(model_num))


# Lewis-weight sampling (docs/lewis.md). p = 2: the Lewis weights are leverage scores (our default;
# the paper's analysis covers p >= 1). --lewis_p takes p in [1, 4), where Cohen and Peng's
# fixed-point iteration converges.
LEWIS_P = 2.0
LEWIS_MIN_P, LEWIS_MAX_P = 1.0, 4.0
# Whose penultimate features represent the pool: "trained", the nets of the iteration selected from
# (iteration 0's for lewis_oneshot); "initial", the same nets at their initial weights, before any
# training (with --init pretrained: OFA's ImageNet backbones, the paper's pretrained representations).
LEWIS_REPRESENTATIONS = ("trained", "initial")
# How the sample is drawn from the weights (docs/lewis.md): "with_replacement", the paper's (i.i.d.
# draws by w / sum(w) until the budget's distinct examples, loss weights c / (m q); lewis_oneshot's
# default), or "systematic", the project's (exactly B, inclusion probability min(1, beta w), weight
# 1 / pi; the per-iteration lewis's default, what the third edition ran).
LEWIS_SAMPLERS = ("with_replacement", "systematic")

# BADGE and BALD for T models (docs/badge_bald.md).
# BADGE's k-means++ reads every model's features once per pick: at paper scale (U = 57,000, T = 12,
# 1,280-d) that is ~0.9 GB a pick, 1,500 times. Each model's features wider than this are first
# multiplied by a Gaussian matrix to this width (--badge_width; 0 keeps them exact), which keeps
# the embeddings' inner products in expectation and costs ~10x less per pick (docs/deviations.md).
BADGE_FEATURE_WIDTH = 128
# BALD's MC-dropout passes per model over the pool (--bald_passes). K = 20 is our choice: the
# papers leave it open, and the OFA nets' dropout acts on the classifier's input only, so a pass
# after the first costs one linear layer (diam/mc_dropout.py).
BALD_PASSES = 20
BALD_MIN_PASSES = 2  # one pass has no spread: each model's own mutual information would be 0


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
    init: str = "he_fout"  # one of INIT_MODES
    # After iteration 0, train only each net's classifier, on its iteration-0 backbone frozen (the
    # Lewis-weight paper's protocol: linear prediction layers on fixed representations); one-shot
    # methods weight the loss by their recorded importance weights. Off: whole nets, as the paper of DIAM.
    linear_heads: bool = False
    # Repeat index (SPEC 9): drives the initial split, each net's training stream (with its
    # net id) and selection's randomness. Seed 0 is the original's single run.
    seed: int = 0
    # bf16 autocast flips argmax on near-ties, and so snapshot disagreement; the original ran
    # fp32 (SPEC 8.5). fp32 is the default (TF32 matmuls allowed on CUDA).
    bf16: bool = False
    # --- selection (SPEC 5) ---
    coreset_feature_net: int = 0  # coreset distances live in this net's penultimate features
    # --- inference ---
    eval_batch: int = 500
    # --- quirks of the original code, off by default (SPEC 6 and 8); ORIGINAL_QUIRKS sets them all ---
    test_at_net0_size: bool = False  # original tested every net at 224
    score_with_train_aug: bool = False  # original scored the pool and snapshots through training augmentation
    shuffle_epochs: bool = True  # original did not reshuffle the labeled set between epochs
    original_uncertainty: bool = False  # original's min-max over a (1, U) array: uncertainty = random

    @property
    def mode(self) -> str:
        """'corrected' (the paper's text), 'original' (what its code ran) or 'custom' (some quirks)."""
        quirks = [getattr(self, name) == value for name, value in ORIGINAL_QUIRKS.items()]
        return "original" if all(quirks) else "corrected" if not any(quirks) else "custom"

    @property
    def snapshot_epochs(self) -> int:
        """How many late epochs leave a snapshot: round(epochs * DIS_frac), at least 2."""
        return max(2, min(self.epochs, round(self.epochs * self.dis_frac)))

    def as_dict(self) -> dict:
        return asdict(self)


# What --original_quirks sets: the original code's behaviour wherever it differs from the text.
ORIGINAL_QUIRKS = {
    "test_at_net0_size": True,
    "score_with_train_aug": True,
    "shuffle_epochs": False,
    "original_uncertainty": True,
}

PRESETS = {
    "paper": Preset(name="paper"),
    # CPU-sized: 32 px inputs for every net, a small labeled set and pool, four
    # evaluation points. A deep net from scratch needs many small steps, and he_fout more
    # than PyTorch's init (its tiny depthwise weights make large effective steps). Measured
    # on digits, 150 labels, nets 0/1: he_fout, 10 epochs of batch 25: 25/19% at lr 0.1,
    # 40/12% at 0.03; 20 epochs at lr 0.05: 72/59%; 30 epochs at lr 0.02: 81/79% (PyTorch's
    # init, 10 epochs at lr 0.1: 51/56%). A gentler crop too (8 x 8 digits keep little at 8%).
    "quick": Preset(
        name="quick",
        initial_labeled=150,
        query_batch=50,
        al_iters=4,
        pool_size=3000,
        test_size=1000,
        image_size=32,
        crop_scale_min=0.6,
        epochs=20,
        train_batch=25,
        lr=0.05,
    ),
    # The reproduction's (REPRODUCTION.md): the quick preset's mechanics in the paper's
    # mid-budget regime, where iteration 0 already knows the task (the paper's from-scratch
    # nets start at 91.5% on MNIST and 63.3% on KMNIST), not in the cold start. Iteration 0,
    # nets 0-3, he_fout, batch 25, seed 0 (run_grid.py --al_iters 1, 2 workers, wall time):
    #   digits,  150 labels, 30 epochs at lr 0.02: 81.1% (74 s); 200 labels, 20 at 0.03: 77.4% (63 s)
    #   Fashion-MNIST, 30 epochs at lr 0.02: 200 labels 67.8% (130 s), 300: 69.5% (148 s),
    #   500: 72.6% (205 s); 200 labels, 20 epochs at 0.03: 66.7% (89 s)
    # 200 labels and 20 epochs at lr 0.03 clear both floors (~75% digits, ~60% Fashion-MNIST)
    # and let the whole campaign (digits 2 modes x 5 seeds, Fashion-MNIST 3 seeds, T = 4) fit
    # in about six hours on 2 cores; 30 epochs would take about nine.
    "repro": Preset(
        name="repro",
        initial_labeled=200,
        query_batch=50,
        al_iters=4,
        pool_size=3000,
        test_size=2000,
        image_size=32,
        crop_scale_min=0.6,
        epochs=20,
        train_batch=25,
        lr=0.03,
    ),
}
# The fourth edition's (REPRODUCTION.md): the repro preset's training at the paper's budget shape, on
# the pools of mnist10k and kmnist10k (8,000 images; their 2,000 test images). The initial count was
# chosen by label count alone, as the count of the budget sweep (reproduction/budget_sweep/, kmnist10k,
# T = 4, 3 seeds each) whose iteration 0 lies nearest the paper's KMNIST 62.65%: 200 labels 39.3%,
# 500 54.8%, 800 61.9%, 1,000 65.7%, 2,000 75.7%. Queries are half the initial set (the paper's
# 1,500 to 3,000); four evaluation points (800 to 2,000 labels, a quarter of the pool), where the
# paper has eleven: what the two CPU cores afford at the plan's seeds.
PRESETS["budget"] = replace(PRESETS["repro"], name="budget", initial_labeled=800, query_batch=400,
                            pool_size=None, test_size=None)
# Fashion-MNIST at the paper's own counts (3,000 initial, 1,500 per query) on the whole training split
# as the pool and the whole test split, at 32 px with the same training: the fourth edition's cell (d).
PRESETS["paper32"] = replace(PRESETS["budget"], name="paper32", initial_labeled=3000, query_batch=1500)

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
    "seed": int,
}


# Overrides below 2 leave training no batch of two or more examples to take a step on.
AT_LEAST_TWO = ("train_batch", "initial_labeled")


def add_preset_arguments(parser) -> None:
    """The preset flags shared by every script, so they cannot drift apart."""
    parser.add_argument("--preset", default="paper", help=f"one of {sorted(PRESETS)} (default: paper)")
    for name, kind in OVERRIDES.items():
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"override the preset's {name}")
    parser.add_argument("--init", default=None, choices=INIT_MODES,
                        help="initial weights: he_fout (default: what the original trained from), pretrained "
                             "(OFA's ImageNet weights; refuses without them) or pytorch (PyTorch's default)")
    parser.add_argument("--linear_heads", action="store_true", default=None,
                        help="after iteration 0, train only each net's classifier on its frozen iteration-0 "
                             "backbone, the loss weighted by lewis_oneshot's importance weights (docs/lewis.md)")
    parser.add_argument("--bf16", action="store_true", default=None,
                        help="bf16 autocast for training, scoring and testing (default: fp32, as the original)")
    parser.add_argument("--original_quirks", action="store_true",
                        help="the original code's behaviour: all four quirks below at once")
    parser.add_argument("--test_at_net0_size", action="store_true", default=None,
                        help="quirk of the original: test every net at net 0's input size")
    parser.add_argument("--score_with_train_aug", action="store_true", default=None,
                        help="quirk of the original: score the pool through the training augmentation")
    parser.add_argument("--no_shuffle", dest="shuffle_epochs", action="store_false", default=None,
                        help="quirk of the original: keep the labeled order fixed across epochs")
    parser.add_argument("--original_uncertainty", action="store_true", default=None,
                        help="quirk of the original: its min-max scaling made least_conf, margin and entropy "
                             "pick the first B of a seeded shuffle (random sampling)")


def preset_from_args(args) -> Preset:
    if args.preset not in PRESETS:
        raise UserError(f"unknown preset '{args.preset}'. Choose one of: {', '.join(sorted(PRESETS))}.")
    preset = PRESETS[args.preset]
    names = [f.name for f in fields(Preset)]
    changes = dict(ORIGINAL_QUIRKS) if getattr(args, "original_quirks", False) else {}
    changes.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None and n != "name"})
    for name, value in changes.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not math.isfinite(value):  # nan passes every comparison below, and nan != nan locks a run folder
            raise UserError(f"--{name} must be a finite number, got {value}.")
        if name == "seed" and value < 0:
            raise UserError(f"--seed must be 0 or a positive repeat index, got {value}.")
        elif name != "seed" and value <= 0:
            raise UserError(f"--{name} must be positive, got {value}.")
        elif name in AT_LEAST_TWO and value < 2:
            raise UserError(f"--{name} must be at least 2, got {value}: a training batch of one example cannot "
                            "be normalised by BatchNorm, so a net would never take a step.")
    if changes.get("dis_frac", preset.dis_frac) > 1:
        raise UserError("--dis_frac must be in (0, 1]: it is the share of epochs that leave snapshots.")
    return replace(preset, **changes)
