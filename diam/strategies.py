"""Query strategies (SPEC section 5): pure functions from model outputs to a batch.

Every strategy returns a 1-D int64 array of *positions* into the unlabeled set
(0..U-1), of length min(batch_size, U), without duplicates. Randomness comes only
from the `numpy.random.Generator` the caller passes in, so a batch is a function
of (inputs, batch_size, rng state, options). Deterministic rankings break ties by
lower position first; DIAM, as the original, breaks them at random.

The registry of methods (`methods.METHODS`) says how each reads the pool (`pool.Pool`) and
calls it with its own settings. BADGE and BALD live in `badge_bald.py`.
A strategy that attaches importance weights to its picks (Lewis-weight sampling) returns
a `WeightedBatch`; the others return the positions alone.
"""
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.preprocessing import MinMaxScaler

from .badge_bald import badge, bald  # noqa: F401  (every strategy can be reached from here)
from .diversity_qp import knn_cooccurrence, nearest_psd, solve_selection_qp
from .lewis import (draw_with_replacement, inclusion_probabilities, maximum_lewis_weights, sample_with_probabilities,
                    sampling_distribution, with_replacement_sample)
from .presets import (DIAM_QP_MAX_SUBSAMPLE, DIAM_QP_NEIGHBOUR_FRACTION, DIAM_QP_Q,
                      DIAM_QP_SUBSAMPLE_DIVISOR, LEWIS_P, LEWIS_SAMPLERS)

# What a strategy did that its batch does not show (DIAM_qp: which route solved the QP), as
# INFO records; the selection step prints them as notes (`strategy_notes`).
log = logging.getLogger(__name__)


class _Collect(logging.Handler):
    def __init__(self, messages: list):
        super().__init__(logging.INFO)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def strategy_notes():
    """The messages the strategies log at INFO while the block runs (e.g. which route solved
    DIAM_qp's QP), collected into the list it yields."""
    messages: list[str] = []
    handler, level = _Collect(messages), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        log.removeHandler(handler)
        log.setLevel(level)

# The paper's DIAM keeps the top 5B by (d, v) before drawing B at random.
DIAM_CANDIDATE_FACTOR = 5


def _batch_length(n_unlabeled: int, batch_size: int) -> int:
    if batch_size < 0:
        raise ValueError(f"batch_size must be non-negative, got {batch_size}")
    return min(int(batch_size), int(n_unlabeled))


# --------------------------------------------------------------------- random

def random_sampling(n_unlabeled: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """B positions drawn uniformly without replacement from the pool."""
    n_picks = _batch_length(n_unlabeled, batch_size)
    return rng.choice(n_unlabeled, size=n_picks, replace=False).astype(np.int64)


# ------------------------------------------------- uncertainty (probabilities)

def _check_probs(unlabeled_probs) -> np.ndarray:
    probs = np.asarray(unlabeled_probs, dtype=np.float64)
    if probs.ndim != 3:
        raise ValueError(
            f"unlabeled_probs must have shape (models, unlabeled, classes), got {probs.shape}")
    return probs


def smallest_scaled_average(per_model_scores: np.ndarray, batch_size: int) -> np.ndarray:
    """Min-max scale each model's scores to [0, 1], average over models, take the smallest.

    `per_model_scores` has shape (T, U), smaller = more informative. A model whose
    scores are all equal carries no ranking information, so its scaled scores are
    all zeros (it shifts every example equally and changes no pick).
    """
    lowest = per_model_scores.min(axis=1, keepdims=True)
    spread = per_model_scores.max(axis=1, keepdims=True) - lowest
    scaled = np.divide(per_model_scores - lowest, spread,
                       out=np.zeros_like(per_model_scores), where=spread > 0)
    averaged = scaled.mean(axis=0)
    n_picks = _batch_length(averaged.shape[0], batch_size)
    # A stable sort keeps equal scores in position order: ties go to the lower position.
    return np.argsort(averaged, kind="stable")[:n_picks].astype(np.int64)


def original_scaled_average(per_model_scores: np.ndarray, batch_size: int,
                            rng: np.random.Generator) -> np.ndarray:
    """The original code's ranking (SPEC 8.2), kept as the --original_uncertainty quirk.

    Its al_select.py walked a shuffled unlabeled list and scaled each model's scores with
    `MinMaxScaler().fit_transform(scores.reshape(1, -1))`: one sample of U features, so
    every feature's range is 0 and every scaled score is 0. The smallest B of the average
    are then the first B of the shuffled list: a function of the shuffle alone, whatever
    the probabilities (random sampling). The same steps are taken here.
    """
    n_unlabeled = per_model_scores.shape[1]
    shuffled = rng.permutation(n_unlabeled)
    scaled = np.stack([MinMaxScaler().fit_transform(scores[shuffled].reshape(1, -1))[0]
                       for scores in per_model_scores])
    averaged = scaled.mean(axis=0)
    n_picks = _batch_length(n_unlabeled, batch_size)
    return shuffled[np.argsort(averaged, kind="stable")[:n_picks]].astype(np.int64)


def _rank_uncertainty(per_model_scores: np.ndarray, batch_size: int, original_scaling_rng):
    if original_scaling_rng is not None:
        return original_scaled_average(per_model_scores, batch_size, original_scaling_rng)
    return smallest_scaled_average(per_model_scores, batch_size)


def least_confidence(unlabeled_probs, batch_size: int, original_scaling_rng=None) -> np.ndarray:
    """Score = probability of the predicted class (low = the model is unsure).

    With `original_scaling_rng` (here and in margin and entropy), the original's scaling
    (`original_scaled_average`) instead of SPEC section 5's."""
    probs = _check_probs(unlabeled_probs)
    return _rank_uncertainty(probs.max(axis=2), batch_size, original_scaling_rng)


def margin(unlabeled_probs, batch_size: int, original_scaling_rng=None) -> np.ndarray:
    """Score = p(1st) - p(2nd) (small = the two top classes are close)."""
    probs = _check_probs(unlabeled_probs)
    n_classes = probs.shape[2]
    if n_classes < 2:
        raise ValueError("margin needs at least two classes")
    top_two = np.partition(probs, n_classes - 2, axis=2)[:, :, -2:]
    return _rank_uncertainty(top_two[:, :, 1] - top_two[:, :, 0], batch_size, original_scaling_rng)


def entropy(unlabeled_probs, batch_size: int, original_scaling_rng=None) -> np.ndarray:
    """Score = sum_c p log p, the negative entropy (small = high entropy)."""
    probs = _check_probs(unlabeled_probs)
    # 0 log 0 = 0: the log is only taken where p > 0 and is 0 elsewhere.
    log_probs = np.log(probs, out=np.zeros_like(probs), where=probs > 0)
    return _rank_uncertainty((probs * log_probs).sum(axis=2), batch_size, original_scaling_rng)


# -------------------------------------------------------------------- coreset

def _squared_distances(rows: torch.Tensor, row_sq_norms: torch.Tensor,
                       centers: torch.Tensor) -> torch.Tensor:
    """|r - c|^2 for every row r and center c, via |r|^2 + |c|^2 - 2 r.c (one matmul)."""
    center_sq_norms = (centers * centers).sum(dim=1)
    # In place on the matmul result: one block-sized allocation instead of three.
    sq = (rows @ centers.T).mul_(-2.0)
    sq.add_(row_sq_norms[:, None]).add_(center_sq_norms[None, :])
    # Cancellation can leave tiny negatives for (near-)identical points.
    return sq.clamp_min_(0.0)


def _min_squared_distance_to(points: torch.Tensor, point_sq_norms: torch.Tensor,
                             centers: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """For each point, the squared distance to its nearest center, in chunk x chunk blocks
    so that memory stays linear in the pool size."""
    nearest = torch.full((points.shape[0],), float("inf"), device=points.device)
    for row_start in range(0, points.shape[0], chunk_size):
        rows = slice(row_start, row_start + chunk_size)
        for center_start in range(0, centers.shape[0], chunk_size):
            block = _squared_distances(points[rows], point_sq_norms[rows],
                                       centers[center_start:center_start + chunk_size])
            torch.minimum(nearest[rows], block.min(dim=1).values, out=nearest[rows])
    return nearest


def _as_float32(features, device: str) -> torch.Tensor:
    tensor = torch.as_tensor(features, dtype=torch.float32, device=device)
    if tensor.ndim != 2:
        raise ValueError(f"features must have shape (points, dim), got {tuple(tensor.shape)}")
    return tensor


def _row_sq_norms(points: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """|x|^2 per row, in chunks so no second pool-sized array is allocated. A NaN or
    infinite (or overflowing) feature shows up here, so this is also the finiteness check."""
    sq_norms = torch.cat([(points[start:start + chunk_size] ** 2).sum(dim=1)
                          for start in range(0, points.shape[0], chunk_size)]
                         or [points.new_zeros(0)])
    if not torch.isfinite(sq_norms).all():
        raise ValueError("features contain NaN or infinity (or values whose square overflows)")
    return sq_norms


def coreset(unlabeled_features, labeled_features, batch_size: int, device: str = "cpu",
            chunk_size: int = 4096, working_set_size: int = 2048) -> np.ndarray:
    """k-center greedy: B times, add the unlabeled point farthest (Euclidean) from its
    nearest center; the centers start as the labeled set. Positions come back in the
    order they were picked.

    With no labeled points every distance starts at infinity, so the first pick is
    position 0 (the lowest position among equal scores) and the greedy goes on from it.
    Ties go to the lower position. Distances are float32 (torch, on `device`); a near
    tie within float32 rounding may resolve differently from a float64 reference.

    Exact greedy, computed in rounds: updating all U distances after each pick is a
    memory-bound pass over U x dim floats (about 23 ms at 57,000 x 1,280 on two CPU
    cores, so 35 s for B = 1,500). Instead each round takes the `working_set_size`
    points with the largest nearest-center distance, runs the greedy inside that set
    while its best point still beats the best distance outside it (distances only
    shrink as centers are added, so no outside point can have overtaken it), then
    updates the whole pool with all of the round's picks in one matmul. Memory is
    linear in U: no U x L or U x U matrix is ever held.
    """
    if chunk_size < 1 or working_set_size < 1:
        raise ValueError("chunk_size and working_set_size must be positive")
    unlabeled = _as_float32(unlabeled_features, device)
    labeled = _as_float32(labeled_features, device)
    if labeled.shape[0] and labeled.shape[1] != unlabeled.shape[1]:
        raise ValueError(f"labeled features are {labeled.shape[1]}-d, "
                         f"unlabeled features are {unlabeled.shape[1]}-d")
    n_picks = _batch_length(unlabeled.shape[0], batch_size)
    unlabeled_sq_norms = _row_sq_norms(unlabeled, chunk_size)
    _row_sq_norms(labeled, chunk_size)  # called only for its finiteness check
    # Squared distances rank exactly like distances, so no square root is needed.
    nearest_sq = _min_squared_distance_to(unlabeled, unlabeled_sq_norms, labeled, chunk_size)

    picked: list[int] = []
    while len(picked) < n_picks:
        # Stable descending sort: among equal distances the lower position comes first,
        # so the first point outside the working set is the best one outside it.
        order = torch.sort(nearest_sq, descending=True, stable=True).indices
        has_outside = order.shape[0] > working_set_size
        if has_outside:
            best_outside_position = int(order[working_set_size])
            best_outside_sq = float(nearest_sq[best_outside_position])
        # In position order, argmax's first maximum is the lowest position among ties.
        working = order[:working_set_size].sort().values
        working_features = unlabeled[working]
        working_feature_sq_norms = unlabeled_sq_norms[working]
        working_sq = nearest_sq[working].clone()
        round_picks: list[int] = []
        while len(picked) + len(round_picks) < n_picks:
            best_slot = int(torch.argmax(working_sq))
            best_sq = float(working_sq[best_slot])
            best_position = int(working[best_slot])
            if best_sq == float("-inf"):
                break  # every working point is already picked
            if has_outside and (best_sq < best_outside_sq or (
                    best_sq == best_outside_sq and best_position > best_outside_position)):
                break  # an outside point may now be the farthest: start a new round
            round_picks.append(best_position)
            to_new_center = _squared_distances(working_features, working_feature_sq_norms,
                                               working_features[best_slot:best_slot + 1])
            torch.minimum(working_sq, to_new_center[:, 0], out=working_sq)
            working_sq[best_slot] = float("-inf")
        picked.extend(round_picks)
        if len(picked) == n_picks:
            break  # the pool-wide update would only serve a next round
        new_centers = torch.tensor(round_picks, dtype=torch.long, device=unlabeled.device)
        torch.minimum(nearest_sq, _min_squared_distance_to(
            unlabeled, unlabeled_sq_norms, unlabeled[new_centers], chunk_size), out=nearest_sq)
        # A picked point must never be picked again, even if it duplicates another point.
        nearest_sq[new_centers] = float("-inf")
    return np.asarray(picked, dtype=np.int64)


# -------------------------------------------------- snapshots (CAL and DIAM)

def _check_snapshots(snapshot_labels) -> np.ndarray:
    labels = np.asarray(snapshot_labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("snapshot_labels must be integer labels of shape "
                         f"(models, snapshots, unlabeled), got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("snapshot_labels must be non-negative class indices")
    return labels


def disagreement_count(snapshot_labels) -> np.ndarray:
    """d(x): how many models' late-epoch snapshots do not all predict the same label."""
    labels = _check_snapshots(snapshot_labels)
    model_disagrees = (labels != labels[:, :1, :]).any(axis=1)
    return model_disagrees.sum(axis=0).astype(np.int64)


def vote_entropy(snapshot_labels, n_classes: int | None = None) -> np.ndarray:
    """v(x): sum over models of VE = -sum_c (n_c/K) log(n_c/K), n_c = snapshots voting c.

    `n_classes` defaults to max label + 1. The sum is computed from how many
    (model, class) pairs received exactly j votes, j = 1..K, added in a fixed order.
    Two examples whose vote patterns differ only by a relabelling of classes or a
    reordering of models therefore get bit-identical scores, so DIAM's tie-break by
    position is not decided by floating-point summation order.
    """
    labels = _check_snapshots(snapshot_labels)
    n_models, n_snapshots, n_unlabeled = labels.shape
    if n_classes is None:
        n_classes = int(labels.max()) + 1 if labels.size else 1
    elif labels.size and labels.max() >= n_classes:
        raise ValueError(f"a label is >= n_classes={n_classes}")
    # votes[t, u, c] = number of model t's snapshots that predicted c for example u.
    model_index = np.arange(n_models, dtype=np.int64)[:, None, None]
    example_index = np.arange(n_unlabeled, dtype=np.int64)[None, None, :]
    flat = (model_index * n_unlabeled + example_index) * n_classes + labels
    votes = np.bincount(flat.ravel(), minlength=n_models * n_unlabeled * n_classes)
    votes = votes.reshape(n_models, n_unlabeled, n_classes)
    # pairs_with_votes[u, j] = number of (model, class) pairs with exactly j votes on u.
    flat_counts = np.arange(n_unlabeled, dtype=np.int64)[None, :, None] * (n_snapshots + 1) + votes
    pairs_with_votes = np.bincount(flat_counts.ravel(), minlength=n_unlabeled * (n_snapshots + 1))
    pairs_with_votes = pairs_with_votes.reshape(n_unlabeled, n_snapshots + 1)
    scores = np.zeros(n_unlabeled, dtype=np.float64)
    for n_votes in range(1, n_snapshots + 1):
        share = n_votes / n_snapshots
        scores += pairs_with_votes[:, n_votes] * (-share * np.log(share))
    return scores


class CALTopUpWarning(UserWarning):
    """CAL's disagreement region held fewer than B examples; the batch was topped up."""


def cal(snapshot_labels, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """CAL: B positions uniformly at random from the union of the models' disagreement
    regions.

    When fewer than B examples are in that union, all of them are taken and the
    batch is topped up uniformly at random from the rest of the pool (the original
    returned a short batch instead); a `CALTopUpWarning` says how many were topped up.
    The union comes first in the returned array, the top-up after it.
    """
    in_union = disagreement_count(snapshot_labels) > 0
    n_picks = _batch_length(in_union.shape[0], batch_size)
    candidates = np.flatnonzero(in_union)
    if candidates.shape[0] >= n_picks:
        return rng.choice(candidates, size=n_picks, replace=False).astype(np.int64)
    n_top_up = n_picks - candidates.shape[0]
    warnings.warn(CALTopUpWarning(
        f"CAL: only {candidates.shape[0]} unlabeled examples are in a disagreement region; "
        f"topped up the batch with {n_top_up} uniformly random ones"), stacklevel=2)
    top_up = rng.choice(np.flatnonzero(~in_union), size=n_top_up, replace=False)
    return np.concatenate([candidates, top_up]).astype(np.int64)


def diam(snapshot_labels, batch_size: int, rng: np.random.Generator,
         candidate_factor: int = DIAM_CANDIDATE_FACTOR) -> np.ndarray:
    """DIAM: rank by d(x) descending, then v(x) descending, then at random (as the original,
    which ranked a shuffled list); keep the top candidate_factor * B (at most U); draw B
    of them uniformly at random."""
    disagreeing_models = disagreement_count(snapshot_labels)
    summed_vote_entropy = vote_entropy(snapshot_labels)
    n_unlabeled = disagreeing_models.shape[0]
    n_picks = _batch_length(n_unlabeled, batch_size)
    tie_break = rng.permutation(n_unlabeled)
    # lexsort's last key is the primary one.
    ranking = np.lexsort((tie_break, -summed_vote_entropy, -disagreeing_models))
    candidates = ranking[:min(candidate_factor * n_picks, n_unlabeled)]
    return rng.choice(candidates, size=n_picks, replace=False).astype(np.int64)


def diam_qp(snapshot_labels, model_features, batch_size: int, rng: np.random.Generator,
            q: float = DIAM_QP_Q, device: str = "cpu", qp_method: str = "certified") -> np.ndarray:
    """DIAM_qp (the authors' extended paper): DIAM's first-order score traded off against
    batch diversity by a quadratic program.

    1. d(x) as in DIAM; the subsample is the n = min(U // 5, 15,000) examples with the
       largest d, ties at the cut broken at random (as in DIAM, and as the original, which
       sorted a shuffled list).
    2. N[i, j] = number of models in whose penultimate features j is among the
       k = floor(0.01 n) nearest examples of i (i itself included).
    3. P = (N + N^T) / 2, projected onto the positive semi-definite matrices.
    4. x minimises 1/2 x^T P x - q d^T x subject to sum(x) = B and 0 <= x <= 1; the batch
       is the B examples with the largest x, in decreasing x (ties: the subsample's order).
       The rng serves only step 1's ties. `qp_method` "certified" (the default) solves it
       densely and certifies the answer, with OSQP as the fallback; "osqp" is OSQP alone
       (docs/diam_qp.md). Which route answered is logged at INFO on this module's logger.

    `model_features` has shape (T, U, dim), any float dtype. Only the subsample's features
    are read (and checked to be finite). Two choices where the pool is small and SPEC's
    steps would break: n is raised to B when U // 5 < B (sum(x) = B would have no solution),
    and k is at least 1 (below n = 100, k = 0 would make P = 0 and the QP a linear program
    whose many equal optima a solver picks among arbitrarily).
    """
    labels = _check_snapshots(snapshot_labels)
    n_models, _, n_unlabeled = labels.shape
    feature_shape = tuple(model_features.shape)
    if len(feature_shape) != 3 or feature_shape[:2] != (n_models, n_unlabeled):
        raise ValueError(f"model_features must have shape (models, unlabeled, dim) = ({n_models}, "
                         f"{n_unlabeled}, dim) to match the snapshot labels, got {feature_shape}")
    if not (np.isfinite(q) and q >= 0):
        raise ValueError(f"q must be finite and non-negative, got {q}")
    n_picks = _batch_length(n_unlabeled, batch_size)
    disagreeing_models = disagreement_count(labels)
    n_subsample = max(min(n_unlabeled // DIAM_QP_SUBSAMPLE_DIVISOR, DIAM_QP_MAX_SUBSAMPLE), n_picks)
    # lexsort's last key is the primary one.
    subsample = np.lexsort((rng.permutation(n_unlabeled), -disagreeing_models))[:n_subsample]
    if n_picks in (0, n_subsample):
        return subsample[:n_picks].astype(np.int64)  # x = 1 on the whole subsample is the only solution
    n_neighbours = max(1, int(n_subsample * DIAM_QP_NEIGHBOUR_FRACTION))
    counts = knn_cooccurrence(model_features[:, subsample], n_neighbours, device=device)
    symmetric = (counts + counts.T) / 2
    del counts  # ~0.2 GB at paper scale, freed before the projection's peak
    similarity = nearest_psd(symmetric, device=device)
    del symmetric
    solution = solve_selection_qp(similarity.matrix, disagreeing_models[subsample], n_picks, q,
                                  largest_eigenvalue=similarity.largest_eigenvalue, method=qp_method)
    del similarity  # n x n float64: 1 GB at paper scale
    log.info("DIAM_qp's QP (n = %d) answered by the %s route: %s", n_subsample, solution.route, solution.detail)
    return subsample[np.argsort(-solution.x, kind="stable")[:n_picks]].astype(np.int64)


# ------------------------------------------------- Lewis-weight sampling

@dataclass(frozen=True)
class WeightedBatch:
    """A batch with the importance weight of each pick: its weight in a loss that estimates the
    whole unlabeled set's (1 / its inclusion probability, or the paper's c / (m q))."""
    positions: np.ndarray  # (B,) int64 positions into the unlabeled set
    importance_weights: np.ndarray  # (B,) float64
    lewis_weights: np.ndarray  # (B,) float64: each pick's maximum Lewis weight
    lewis_weight_sum: float  # the sum of the maximum Lewis weights over the whole unlabeled set
    # The with-replacement sampler's whole sequence of draws and their distribution q, from which
    # the weights of any prefix of the picks follow; None for the systematic sampler.
    draws: np.ndarray | None = None
    distribution: np.ndarray | None = None

    @property
    def sampler(self) -> str:
        return "systematic" if self.draws is None else "with_replacement"

    def prefix_weights(self, size: int) -> np.ndarray:
        """The importance weights of the first `size` picks as a sample of that size. Systematic: the
        picks come in a random order, so a prefix is a sample at size / B of the rate (weights scaled by
        B / size). With replacement: the paper's weights of the draws up to the size-th new row."""
        if self.draws is None:
            return self.importance_weights[:size] / (size / len(self.positions))
        return with_replacement_sample(self.draws, self.distribution, size)[1]


def lewis_sampling(model_features, batch_size: int, rng: np.random.Generator, p: float = LEWIS_P,
                   device: str = "cpu", sampler: str = "systematic") -> WeightedBatch:
    """Huang, Li, Sun and Tang (ICLR 2024): sample the pool by the maximum over the T models'
    representations of each example's lp Lewis weight, and weight each pick so that the picks'
    loss estimates the whole pool's (diam/lewis.py says how, and which choices are the paper's
    and which are ours).

    `model_features` has shape (T, U, dim): every model's penultimate features on the unlabeled
    pool. w_i is the maximum over the models of the Lewis weights of their top-B principal parts
    (the whole representation when B is at least its rank: diam/lewis.py says why). Exactly
    min(B, U) distinct positions; the rng decides everything random. `sampler`:
    - "systematic" (ours): example i taken with probability pi_i = min(1, beta w_i) (sum pi = B),
      weight 1 / pi_i, the picks in a random order;
    - "with_replacement" (the paper's): i.i.d. draws with probability w_i / sum(w) until B distinct
      examples have come, in the order they came, weight c_i / (m q_i).
    """
    shape = tuple(model_features.shape)
    if len(shape) != 3 or shape[0] < 1:
        raise ValueError(f"model_features must have shape (models, unlabeled, dim), got {shape}")
    if sampler not in LEWIS_SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(LEWIS_SAMPLERS)}, got {sampler!r}")
    n_picks = _batch_length(shape[1], batch_size)
    weights = maximum_lewis_weights(model_features, p, device, rank=n_picks)
    if sampler == "with_replacement":
        if n_picks == 0:  # nothing to draw (and a rank-0 part has no weights to draw by)
            empty = np.empty(0, dtype=np.int64)
            return WeightedBatch(empty, np.empty(0), np.empty(0), float(weights.sum()), empty, np.zeros(len(weights)))
        distribution = sampling_distribution(weights)
        draws = draw_with_replacement(distribution, n_picks, rng)
        positions, importance = with_replacement_sample(draws, distribution, n_picks)
        return WeightedBatch(positions, importance, weights[positions], float(weights.sum()), draws, distribution)
    probabilities = inclusion_probabilities(weights, n_picks)
    positions = sample_with_probabilities(probabilities, rng)
    return WeightedBatch(positions, 1.0 / probabilities[positions], weights[positions], float(weights.sum()))
