"""The unlabeled pool as a strategy sees it: one object it asks for what it needs.

A strategy reads `pool.unlabeled_probs`, `pool.snapshot_labels`, `pool.dropout_probs(K)` and
so on; each is fetched the first time it is asked for and kept, so two reads cost one load and
a strategy that asks for nothing loads nothing. The selection step builds a pool whose fields
are fetched from the run's records and checkpoints (selection_inputs.selection_pool); a test or a
benchmark builds one from arrays it already holds (`Pool(U, unlabeled_probs=...)`). Adding a
strategy never edits this file unless it needs a kind of input no strategy read before.

Every field is checked, when fetched, to cover the whole unlabeled pool (U along its
unlabeled axis). No torch here: the command line imports the method registry, which names it.
"""
import time
from typing import Callable, Mapping, Union

# field -> the axis along which it lists the unlabeled examples (None: it does not list them)
FIELDS = {
    "unlabeled_probs": 1,  # (T, U, C) every model's softmax outputs
    "snapshot_labels": 2,  # (T, K, U) labels of each model's K late-epoch snapshots
    "unlabeled_features": 0,  # (U, dim) the coreset net's penultimate features
    "labeled_features": None,  # (L, dim) the same net's features of the labeled set; L may be 0
    "unlabeled_model_features": 1,  # (T, U, dim) every trained model's own penultimate features
    "initial_model_features": 1,  # (T, U, dim) the same models' features at their initial weights
    "dropout_probs": 2,  # (T, K, U, C) K MC-dropout softmax outputs of each model (K: the argument)
}


class Pool:
    """`n_unlabeled` examples to choose from, on `device`. `fetch` maps a field (or a tuple of
    fields loaded together) to a function that loads it (`dropout_probs`'s takes the number of
    passes); `given` holds fields already in memory (a given `dropout_probs` is returned whatever
    the passes asked for: it holds the passes it was made with)."""

    def __init__(self, n_unlabeled: int, device: str = "cpu",
                 fetch: Mapping[Union[str, tuple], Callable] | None = None, **given):
        unknown = set(given) - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown pool field(s) {', '.join(sorted(unknown))}; the fields are {', '.join(FIELDS)}")
        self.n_unlabeled, self.device = int(n_unlabeled), device
        self._given = {name: value for name, value in given.items() if value is not None}
        self._fetchers = {}
        for key, load in (fetch or {}).items():
            names = key if isinstance(key, tuple) else (key,)
            for name in names:
                self._fetchers[name] = (names, load)
        self._kept: dict = {}
        self.fetch_seconds = 0.0  # time spent loading fields: the selection step does not count it as the strategy's

    def _get(self, name: str, *args):
        if name in self._given:
            return self._checked(name, self._given[name])
        key = (name, *args)
        if key not in self._kept:
            if name not in self._fetchers:
                raise ValueError(f"this strategy needs pool.{name}, which this pool does not offer")
            names, load = self._fetchers[name]
            start = time.perf_counter()
            loaded = load(*args)
            self.fetch_seconds += time.perf_counter() - start
            for other, value in zip(names, loaded if len(names) > 1 else (loaded,)):
                self._kept[(other, *args)] = value
        return self._checked(name, self._kept[key])

    def _checked(self, name: str, value):
        axis = FIELDS[name]
        if axis is not None and value.shape[axis] != self.n_unlabeled:
            raise ValueError(f"pool.{name} covers {value.shape[axis]} unlabeled examples, "
                             f"but n_unlabeled is {self.n_unlabeled}")
        return value

    @property
    def unlabeled_probs(self):
        return self._get("unlabeled_probs")

    @property
    def snapshot_labels(self):
        return self._get("snapshot_labels")

    @property
    def unlabeled_features(self):
        return self._get("unlabeled_features")

    @property
    def labeled_features(self):
        return self._get("labeled_features")

    @property
    def unlabeled_model_features(self):
        return self._get("unlabeled_model_features")

    @property
    def initial_model_features(self):
        return self._get("initial_model_features")

    def dropout_probs(self, passes: int):
        return self._get("dropout_probs", passes)
