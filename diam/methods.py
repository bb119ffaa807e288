"""The selection methods: the one registry of their names, what each reads and its own settings.

`METHODS` maps a method's name (what `--method`, iter_all.sh's METHODS and run_grid.py's
--methods take) to a `Method`: the function that picks a batch from a `pool.Pool`, what
training must record for it, its settings and its name in tables. The command line's choices,
its flags, the docs' lists and the tests' loops all read this dict; nothing keeps a copy.

A method's settings are a frozen dataclass whose fields are declared with `setting(...)`: a
default, the flag that sets it, its help and its check. `al_select.py` offers the flags of every
registered method, and the step hands the chosen method an instance filled from them. Adding a
method with a setting of its own is its module (the pure function, the settings class) and one
entry here (docs/layout.md shows it). This module imports no torch: the command line reads it
before it knows whether there is work to do, so the heavy strategies are imported when they run.
"""
import math
from dataclasses import dataclass, field, fields
from typing import Callable, Optional

from .presets import (BADGE_FEATURE_WIDTH, BALD_MIN_PASSES, BALD_PASSES, DIAM_QP_Q, LEWIS_MAX_P, LEWIS_MIN_P,
                      LEWIS_P, LEWIS_REPRESENTATIONS, LEWIS_SAMPLERS)


def setting(default, flag: str, help: str, check: Optional[Callable] = None, choices=None, type=None):
    """A method's own setting, as a dataclass field: `flag` sets it on al_select.py's command line
    (argparse's `dest` is the flag without its dashes); `check(value)` returns what is wrong with
    a value, or None."""
    return field(default=default, metadata={"flag": flag, "help": help, "check": check, "choices": choices,
                                            "type": type or (str if default is None else default.__class__)})


def from_preset():
    """A setting that is the preset's field of the same name (a quirk the run folder records)."""
    return field(default=False, metadata={"from_preset": True})


@dataclass(frozen=True)
class NoSettings:
    """A method without settings of its own."""


@dataclass(frozen=True)
class Method:
    # select(pool, batch_size, rng, settings): positions into the unlabeled set (or a WeightedBatch);
    # `settings` is an instance of `settings` below.
    select: Callable
    # What training records on the pool for it at each of its iterations (iteration 0, shared, records
    # all): "probs", "features" (the coreset net's), "snapshots", "model_features" (every net's).
    reads: tuple = ()
    settings: type = NoSettings
    # One-shot: the whole budget is chosen at once from iteration 0's nets, not a batch per iteration.
    one_shot: bool = False
    display_name: str = ""  # in tables and figures (default: the name)


# ------------------------------------------------------------ the shipped methods' settings

@dataclass(frozen=True)
class UncertaintySettings:
    original_uncertainty: bool = from_preset()  # least_conf/margin/entropy as the original ranked them


@dataclass(frozen=True)
class DiamQpSettings:
    diam_q: float = setting(
        DIAM_QP_Q, "--DIAMq", f"DIAM_qp only: weight q of the disagreement score against batch diversity "
                              f"(default {DIAM_QP_Q})",
        check=lambda q: None if math.isfinite(q) and q >= 0 else "--DIAMq must be a finite number >= 0")


@dataclass(frozen=True)
class LewisSettings:
    lewis_p: float = setting(
        LEWIS_P, "--lewis_p", f"lewis and lewis_oneshot only: the p of the lp Lewis weights, in "
                              f"[{LEWIS_MIN_P:g}, {LEWIS_MAX_P:g}) (default {LEWIS_P:g}: leverage scores)",
        check=lambda p: None if LEWIS_MIN_P <= p < LEWIS_MAX_P else (
            f"--lewis_p must be in [{LEWIS_MIN_P:g}, {LEWIS_MAX_P:g}): the fixed-point iteration of the "
            "Lewis weights converges there (2 gives the leverage scores)"))
    lewis_representation: str = setting(
        "trained", "--lewis_representation", choices=LEWIS_REPRESENTATIONS,
        help="lewis and lewis_oneshot only: whose penultimate features represent the pool: the trained "
             "nets of the iteration (lewis_oneshot: iteration 0's; default), or the same nets at their "
             "initial weights (with --init pretrained, OFA's ImageNet backbones)")
    lewis_sampler: Optional[str] = setting(  # None: the method's own (lewis systematic, lewis_oneshot the paper's)
        None, "--lewis_sampler", choices=LEWIS_SAMPLERS,
        help="lewis and lewis_oneshot only: how the sample is drawn from the Lewis weights: "
             "with_replacement, the paper's (i.i.d. draws until the budget's distinct examples; "
             "lewis_oneshot's default), or systematic, exactly the batch with inclusion probabilities "
             "(lewis's default)")


@dataclass(frozen=True)
class BadgeSettings:
    badge_width: int = setting(
        BADGE_FEATURE_WIDTH, "--badge_width",
        f"badge only: each model's penultimate features wider than this are multiplied by a "
        f"Gaussian matrix to this width before k-means++ (default {BADGE_FEATURE_WIDTH}; 0: exact, "
        "slower at paper scale; docs/badge_bald.md)",
        check=lambda width: None if width >= 0 else "--badge_width must be 0 (exact features) or a positive width")


@dataclass(frozen=True)
class BaldSettings:
    bald_passes: int = setting(
        BALD_PASSES, "--bald_passes",
        f"bald only: MC-dropout passes of each model over the pool, K (default {BALD_PASSES}, "
        f"at least {BALD_MIN_PASSES})",
        check=lambda passes: None if passes >= BALD_MIN_PASSES else (
            f"--bald_passes must be at least {BALD_MIN_PASSES}: with one pass a model's dropout outputs have "
            "no spread to measure"))


# ------------------------------------------------------------ how each reads the pool
# Each imports its strategy when it runs (torch, scikit-learn): the registry stays light.

def _random(pool, batch_size, rng, settings):
    from .strategies import random_sampling
    return random_sampling(pool.n_unlabeled, batch_size, rng)


def _uncertainty(name: str):
    def select(pool, batch_size, rng, settings: UncertaintySettings):
        from . import strategies
        score = {"least_conf": strategies.least_confidence, "margin": strategies.margin,
                 "entropy": strategies.entropy}[name]
        return score(pool.unlabeled_probs, batch_size, rng if settings.original_uncertainty else None)
    return select


def _coreset(pool, batch_size, rng, settings):
    from .strategies import coreset
    return coreset(pool.unlabeled_features, pool.labeled_features, batch_size, device=pool.device)


def _cal(pool, batch_size, rng, settings):
    from .strategies import cal
    return cal(pool.snapshot_labels, batch_size, rng)


def _diam(pool, batch_size, rng, settings):
    from .strategies import diam
    return diam(pool.snapshot_labels, batch_size, rng)


def _diam_qp(pool, batch_size, rng, settings: DiamQpSettings):
    from .strategies import diam_qp
    return diam_qp(pool.snapshot_labels, pool.unlabeled_model_features, batch_size, rng, q=settings.diam_q,
                   device=pool.device)


def _lewis(default_sampler: str):
    """The sampler is `default_sampler` unless the settings name another: the one-shot method the
    paper's (with replacement), the per-iteration one the project's (systematic)."""
    def select(pool, batch_size, rng, settings: LewisSettings):
        from .strategies import lewis_sampling
        features = (pool.initial_model_features if settings.lewis_representation == "initial"
                    else pool.unlabeled_model_features)
        return lewis_sampling(features, batch_size, rng, p=settings.lewis_p, device=pool.device,
                              sampler=settings.lewis_sampler or default_sampler)
    return select


def _badge(pool, batch_size, rng, settings: BadgeSettings):
    from .badge_bald import badge
    return badge(pool.unlabeled_probs, pool.unlabeled_model_features, batch_size, rng,
                 width=settings.badge_width, device=pool.device)


def _bald(pool, batch_size, rng, settings: BaldSettings):
    from .badge_bald import bald
    return bald(pool.dropout_probs(settings.bald_passes), batch_size)


# ------------------------------------------------------------ the registry
# The paper's seven first (presets.PAPER_METHODS, in the order the original scripts run them), then
# DIAM_qp (the extended paper's batch-diverse DIAM), the authors' next method, Lewis-weight sampling
# (ICLR 2024): a batch per iteration, and one-shot (docs/lewis.md); then BADGE and BALD for T models
# (docs/badge_bald.md). What ran under each display name: the third edition's lewis rows are the
# project's per-iteration, rank-B extension, not the paper's method; lewis_oneshot is the paper's.
METHODS: dict[str, Method] = {
    "random": Method(_random, display_name="Random"),
    "least_conf": Method(_uncertainty("least_conf"), ("probs",), UncertaintySettings, display_name="Least conf."),
    "margin": Method(_uncertainty("margin"), ("probs",), UncertaintySettings, display_name="Margin"),
    "entropy": Method(_uncertainty("entropy"), ("probs",), UncertaintySettings, display_name="Entropy"),
    "coreset": Method(_coreset, ("features",), display_name="Coreset"),
    "CAL": Method(_cal, ("snapshots",)),
    "DIAM": Method(_diam, ("snapshots",)),
    "DIAM_qp": Method(_diam_qp, ("snapshots", "model_features"), DiamQpSettings),
    "lewis": Method(_lewis("systematic"), ("model_features",), LewisSettings,
                    display_name="Lewis per-iter. rank-B (ours)"),
    "lewis_oneshot": Method(_lewis("with_replacement"), ("model_features",), LewisSettings, one_shot=True,
                            display_name="Lewis one-shot (paper)"),
    "badge": Method(_badge, ("probs", "model_features"), BadgeSettings, display_name="BADGE"),
    "bald": Method(_bald, (), BaldSettings, display_name="BALD"),
}


def display_name(method: str) -> str:
    """A method's name in tables and figures (a name no longer registered: itself)."""
    entry = METHODS.get(method)
    return (entry.display_name or method) if entry else method


# ------------------------------------------------------------ settings on the command line

def settings_classes() -> list:
    """Every registered method's settings class, once each, in the registry's order."""
    return list(dict.fromkeys(method.settings for method in METHODS.values()))


def _flagged(cls):
    return [f for f in fields(cls) if "flag" in f.metadata]


def add_settings_flags(parser) -> None:
    """Every method's own flags, on al_select.py's parser."""
    for cls in settings_classes():
        for f in _flagged(cls):
            parser.add_argument(f.metadata["flag"], type=f.metadata["type"], default=f.default,
                                choices=f.metadata["choices"], help=f.metadata["help"])


def settings_problem(args) -> Optional[str]:
    """What is wrong with the first flag whose check fails, or None."""
    for cls in settings_classes():
        for f in _flagged(cls):
            check = f.metadata["check"]
            problem = check and check(getattr(args, f.metadata["flag"].lstrip("-")))
            if problem:
                return problem
    return None


def resolve_settings(args, preset) -> tuple:
    """One instance of each method's settings class, from the flags in `args` (a step without them:
    the defaults) and the preset."""
    resolved = []
    for cls in settings_classes():
        values = {}
        for f in fields(cls):
            if f.metadata.get("from_preset"):
                values[f.name] = getattr(preset, f.name)
            elif "flag" in f.metadata:
                values[f.name] = getattr(args, f.metadata["flag"].lstrip("-"), f.default)
        resolved.append(cls(**values))
    return tuple(resolved)
