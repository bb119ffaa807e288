"""BADGE and BALD for T target models (docs/badge_bald.md): pure functions over arrays.

BADGE (Ash et al., ICLR 2020): each model's gradient embedding of an example is the gradient of
the cross-entropy at the model's predicted class with respect to its last layer's weights,
(p - onehot(argmax p)) outer h, with p its softmax output and h its penultimate features. The batch
is k-means++ seeding on the T models' embeddings side by side, each model's scaled to the same
mean squared norm over the pool; with T = 1 that scaling changes no pick, and this is the paper's
algorithm (first center the largest embedding, then D^2 sampling).

BALD (Gal et al., ICML 2017, after Houlsby et al.) with MC dropout: the score is the mutual
information between an example's label and the hypothesis drawn, here the committee of all
T x K dropout passes: H(mean of all passes) - mean of the passes' entropies. With T = 1 that is
BALD; across models it adds the models' disagreement to the mean of their own mutual information.
"""
import logging

import numpy as np
import torch

from .presets import BADGE_FEATURE_WIDTH

log = logging.getLogger("diam.strategies")  # the strategies' notes (strategies.strategy_notes)


def _batch_length(n_unlabeled: int, batch_size: int) -> int:
    if batch_size < 0:
        raise ValueError(f"batch_size must be non-negative, got {batch_size}")
    return min(int(batch_size), int(n_unlabeled))


# ----------------------------------------------------------------------------- BADGE

def probability_residuals(probs: torch.Tensor) -> torch.Tensor:
    """p - onehot(predicted class) per example: the gradient of the cross-entropy at the predicted
    class with respect to the logits. (..., C) in, (..., C) out; ties go to the lower class, as argmax's."""
    residuals = probs.clone()
    predicted = probs.argmax(dim=-1, keepdim=True)
    residuals.scatter_add_(-1, predicted, torch.full_like(predicted, -1, dtype=probs.dtype))
    return residuals


def sketched_features(model_features, width: int, rng: np.random.Generator, device: str) -> torch.Tensor:
    """(T, U, w) float32: each model's features, times its own Gaussian matrix of D x width entries
    N(0, 1/width) when D > width > 0 (inner products kept in expectation); else as they are (w = D)."""
    n_models, n_unlabeled, dim = model_features.shape
    if width <= 0 or dim <= width:
        return torch.as_tensor(np.asarray(model_features), dtype=torch.float32, device=device)
    out = torch.empty((n_models, n_unlabeled, width), dtype=torch.float32, device=device)
    for t in range(n_models):
        sketch = torch.as_tensor(rng.standard_normal((dim, width)) / np.sqrt(width), dtype=torch.float32,
                                 device=device)
        out[t] = torch.as_tensor(np.asarray(model_features[t]), dtype=torch.float32, device=device) @ sketch
    log.info("BADGE: each model's %d-d features sketched to %d dimensions (--badge_width)", dim, width)
    return out


def badge(unlabeled_probs, model_features, batch_size: int, rng: np.random.Generator,
          width: int = BADGE_FEATURE_WIDTH, device: str = "cpu") -> np.ndarray:
    """k-means++ seeding on the T models' gradient embeddings; positions in the order picked.

    `unlabeled_probs` (T, U, C) softmax outputs and `model_features` (T, U, D) penultimate features
    of the same models. Model t's embedding of example i is g_ti = a_ti outer h_ti with
    a = p - onehot(argmax p); it is never formed: |g_ti - g_tj|^2 = |a_ti|^2 |h_ti|^2 + |a_tj|^2 |h_tj|^2
    - 2 (a_ti . a_tj)(h_ti . h_tj). The distance of two examples is sum_t |g_ti - g_tj|^2 / s_t with
    s_t the mean of |g_ti|^2 over the pool (a model whose embeddings are all 0 adds nothing).

    The first center is the example of largest embedding (ties: lower position); each next one is
    drawn with probability proportional to its squared distance to the nearest center (one uniform
    draw from the rng, inverted through the cumulative sum). When every remaining distance is 0 the
    draw is uniform over the examples not yet picked. Features wider than `width` are sketched first
    (`sketched_features`; 0 keeps them exact). Distances are float32 torch on `device`.
    """
    probs = torch.as_tensor(np.asarray(unlabeled_probs), dtype=torch.float32, device=device)
    shape = tuple(model_features.shape)
    if probs.ndim != 3 or len(shape) != 3 or shape[:2] != tuple(probs.shape[:2]):
        raise ValueError(f"unlabeled_probs (T, U, C) and model_features (T, U, D) must cover the same models "
                         f"and examples, got {tuple(probs.shape)} and {shape}")
    n_unlabeled = probs.shape[1]
    n_picks = _batch_length(n_unlabeled, batch_size)
    if n_picks == 0:
        return np.zeros(0, dtype=np.int64)
    residuals = probability_residuals(probs)
    features = sketched_features(model_features, width, rng, device)
    if not (torch.isfinite(residuals).all() and torch.isfinite(features).all()):
        raise ValueError("probabilities or features contain NaN or infinity")
    sq_norms = (residuals * residuals).sum(2) * (features * features).sum(2)  # (T, U)
    scale = sq_norms.mean(dim=1)
    model_weights = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))  # (T,)
    combined_sq_norms = (model_weights[:, None] * sq_norms).sum(0)  # (U,)

    picked = [int(torch.argmax(combined_sq_norms))]  # argmax returns the first of equal maxima
    nearest_sq = torch.full((n_unlabeled,), float("inf"), dtype=torch.float32, device=device)
    while len(picked) < n_picks:
        center = picked[-1]
        residual_dots = torch.bmm(residuals, residuals[:, center, :, None])[..., 0]  # (T, U)
        feature_dots = torch.bmm(features, features[:, center, :, None])[..., 0]
        cross = (model_weights[:, None] * residual_dots * feature_dots).sum(0)
        to_center = (combined_sq_norms + combined_sq_norms[center] - 2 * cross).clamp_min_(0)
        torch.minimum(nearest_sq, to_center, out=nearest_sq)
        nearest_sq[picked] = 0  # exactly: rounding would leave a center a sliver of probability
        picked.append(_draw_proportional(nearest_sq.double().cpu().numpy(), picked, rng))
    return np.asarray(picked, dtype=np.int64)


def _draw_proportional(weights: np.ndarray, picked: list, rng: np.random.Generator) -> int:
    """One position drawn with probability proportional to `weights` (uniform over the positions not
    in `picked` when every weight is 0): one rng.random(), through the normalised cumulative sum."""
    total = weights.sum()
    if not total > 0:
        weights = np.ones_like(weights)
        weights[picked] = 0
        total = weights.sum()
    cumulative = np.cumsum(weights / total)
    cumulative /= cumulative[-1]
    return int(np.searchsorted(cumulative, rng.random(), side="right"))


# ------------------------------------------------------------------------------ BALD

def _entropy(probs: np.ndarray, axis: int) -> np.ndarray:
    """-sum p log p along `axis`, with 0 log 0 = 0."""
    logs = np.log(probs, out=np.zeros_like(probs), where=probs > 0)
    return -(probs * logs).sum(axis=axis)


def committee_mutual_information(dropout_probs, chunk_size: int = 4096) -> np.ndarray:
    """(U,) float64: H(mean over all T x K passes) - mean over the passes of H(pass), per example.

    `dropout_probs` (T, K, U, C): K MC-dropout softmax outputs of each of T models (float64 in
    chunks of examples, so the float32 input is never copied whole)."""
    shape = tuple(dropout_probs.shape)
    if len(shape) != 4 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"dropout_probs must have shape (models, passes, unlabeled, classes), got {shape}")
    scores = np.empty(shape[2], dtype=np.float64)
    for start in range(0, shape[2], chunk_size):
        passes = np.asarray(dropout_probs[:, :, start:start + chunk_size], dtype=np.float64)
        passes = passes.reshape(shape[0] * shape[1], -1, shape[3])  # (T * K, u, C)
        if not np.isfinite(passes).all():
            raise ValueError("dropout_probs contain NaN or infinity")
        scores[start:start + chunk_size] = _entropy(passes.mean(axis=0), 1) - _entropy(passes, 2).mean(axis=0)
    return scores


def bald(dropout_probs, batch_size: int) -> np.ndarray:
    """The B examples of largest committee mutual information, in decreasing score (ties: lower position)."""
    scores = committee_mutual_information(dropout_probs)
    n_picks = _batch_length(scores.shape[0], batch_size)
    return np.argsort(-scores, kind="stable")[:n_picks].astype(np.int64)
