"""Lewis-weight sampling over several representations of one pool (Huang, Li, Sun and Tang,
"One-shot Active Learning Based on Lewis Weight Sampling for Multiple Deep Models", ICLR 2024,
arXiv 2405.14121).

The paper learns the linear prediction layer of each of T models as an lp regression on that
model's representation of the pool, A_t (n x d_t), and queries labels by sampling the pool's
rows by their **maximum lp Lewis weight across the T representations**, reweighting the
sampled rows so that the sampled regressions approximate the full ones (its abstract). This
module is that sampling, as pure functions over arrays:

- `lewis_weights(A, p)`: the lp Lewis weights of A's rows (Cohen and Peng 2015): the unique
  w >= 0 with w_i = (a_i^T (A^T W^(1-2/p) A)^+ a_i)^(p/2). For p = 2 they are the leverage
  scores, the diagonal of the hat matrix A (A^T A)^+ A^T, computed directly; for 1 <= p < 4
  by Cohen and Peng's fixed-point iteration, a contraction (factor |1 - p/2|) in log w.
  They lie in [0, 1] and sum to rank(A).
- `maximum_lewis_weights(representations, p, rank)`: w_i = max_t w_i(A_t), with each A_t
  extended by a column of ones (the linear layer's bias) and, when `rank` is below its rank,
  reduced to its top-`rank` principal part (its coordinates along its `rank` leading right
  singular vectors).
- `inclusion_probabilities(w, m)` and `sample_with_probabilities(pi, rng)`: m rows drawn
  without replacement, row i with probability pi_i = min(1, beta w_i), beta set so that the
  pi sum to m; the importance weight of a sampled row is 1 / pi_i (the project's sampler).
- `draw_with_replacement(q, n_distinct, rng)` and `with_replacement_sample(draws, q, n)`: the
  paper's sampler. Rows are drawn i.i.d. with replacement, row i with probability
  q_i = w_i / sum(w), until n distinct rows have come; m is the number of draws that took. The
  paper rescales each drawn row by (m q_i)^(-1/p), so an lp loss over the drawn rows weighs
  each draw 1 / (m q_i), whatever p: a row drawn c_i times has loss weight c_i / (m q_i).
  These weights sum, in expectation, to the number of rows of the pool (for a fixed m exactly
  so: the sampled loss estimates the whole pool's), and exactly so when the q_i are all equal.

Which choices are the paper's and which are ours (docs/lewis.md says the same):
- the paper's: the representation of each model's backbone, lp Lewis weights per
  representation, their maximum across the representations, sampling by it and reweighting
  the sampled rows (its abstract).
- ours, because only the paper's abstract and the opening of its introduction could be read
  offline (not its algorithm box or experimental settings):
  * p = 2 by default (leverage scores: exact, one eigendecomposition per representation);
    other p in [1, 4) are offered (`--lewis_p`), the range where the fixed point contracts;
  * the raw maximum, no normalisation across representations: each representation's weights
    already sum to its rank, and the observation reported of the paper (the sum of the maximum
    weights grows slowly with T) reads as one about the raw maximum;
  * a column of ones beside the features, so that the weights do not depend on where the
    features' origin lies (the linear layer has a bias);
  * the project's sampler (`sample_with_probabilities`), a fixed sample size m: Lewis-weight sampling in the literature it builds on is an
    independent coin per row with pi_i = min(1, beta w_i) and rescaling by pi_i^(-1/p)
    (a loss weight of 1 / pi_i). A label budget is a number of labels, so we keep those
    inclusion probabilities and weights but draw exactly m rows, by systematic sampling over
    a random order (every row is taken with probability exactly pi_i; no row twice);
  * the weights are computed over the unlabeled rows only (the rows a batch is drawn from);
  * with a sample smaller than a representation's rank, the weights of its top-m principal
    part, m the sample size (`lewis_sampling` passes rank = m). Lewis weights sum to the rank:
    a sample of m < d rows cannot determine a d-dimensional linear layer, and the full weights
    are then close to uniform; when the pool has no more rows than dimensions (digits at the
    quick and repro presets: about 1,100 unlabeled rows of 1,281 dimensions) they are all
    exactly 1 and the sampling is uniform. The principal part holds most of the energy (on
    digits at the quick preset, iteration 0's two nets hold 98.6% and 99.2% of it in 20
    directions). At the paper's scale (a batch of 1,500 or more against 1,281 dimensions)
    nothing is cut.
"""
import numpy as np
import torch

from .presets import LEWIS_MAX_P as MAX_P, LEWIS_MIN_P as MIN_P  # Cohen and Peng's iteration contracts for p < 4

# The iteration stops when no weight moves by more than this factor (in log w) ...
FIXED_POINT_TOLERANCE = 1e-10
# ... or refuses after this many steps (contraction |1 - p/2| per step: 0.5 at p = 1 or 3).
MAX_FIXED_POINT_ITERATIONS = 2000
# A probability within this of 1 is taken as 1 (the row is always taken), so that no other
# row's interval in systematic sampling can hold two sampling points after rounding.
CERTAIN = 1.0 - 1e-9


def _as_matrix(matrix, device) -> torch.Tensor:
    rows = torch.as_tensor(matrix, device=device).to(torch.float64)
    if rows.ndim != 2:
        raise ValueError(f"a representation must have shape (rows, dim), got {tuple(rows.shape)}")
    if not torch.isfinite(rows).all():
        raise ValueError("a representation contains NaN or infinity")
    return rows


def leverage_scores(matrix: torch.Tensor) -> torch.Tensor:
    """tau_i = a_i^T (A^T A)^+ a_i, the diagonal of the hat matrix, in A's dtype and device.

    Through the eigendecomposition of the smaller Gram matrix. With d <= n, A^T A = V diag(lambda) V^T
    and tau_i is the squared norm of row i of A V_r diag(lambda_r)^(-1/2), r the directions kept;
    with n < d, A A^T = U diag(lambda) U^T and tau_i = sum over kept r of U_ir^2 (the hat matrix
    is U_r U_r^T). Directions with lambda <= max(n, d) * eps * lambda_max are dropped: a Gram
    matrix cannot resolve them (their singular values are below about sqrt(max(n, d) * eps) of
    the largest), so A counts as having the rank of what is kept, and the scores sum to it.
    """
    n_rows, dim = matrix.shape
    gram = matrix @ matrix.T if n_rows < dim else matrix.T @ matrix
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    if eigenvalues.numel() == 0 or eigenvalues[-1] <= 0:
        return torch.zeros(n_rows, dtype=matrix.dtype, device=matrix.device)
    kept = eigenvalues > eigenvalues[-1] * max(n_rows, dim) * torch.finfo(matrix.dtype).eps
    if n_rows < dim:
        basis = eigenvectors[:, kept]
    else:  # in place: at 57,000 x 1,281 each float64 copy is 584 MB
        basis = (matrix @ eigenvectors[:, kept]).div_(eigenvalues[kept].sqrt())
    return basis.square_().sum(dim=1)


def principal_part(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """A V_k (n x k): A's coordinates along its k = `rank` leading right singular vectors, the best
    rank-k approximation of A in a basis of its own (Lewis weights do not depend on the basis).
    A itself when k is at least min(n, d)."""
    n_rows, dim = matrix.shape
    if rank >= min(n_rows, dim):
        return matrix
    if n_rows < dim:  # A A^T = U diag(lambda) U^T and A V_k = U_k diag(lambda_k)^(1/2)
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix @ matrix.T)
        top = slice(n_rows - rank, n_rows)
        return eigenvectors[:, top] * eigenvalues[top].clamp_min(0).sqrt()
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix.T @ matrix)
    return matrix @ eigenvectors[:, dim - rank:]


def lewis_weights(matrix, p: float = 2.0, device: str = "cpu", rank: int | None = None) -> np.ndarray:
    """The lp Lewis weights of the rows of `matrix` (n x d), float64, computed in torch on `device`;
    with `rank`, those of its top-`rank` principal part (`principal_part`).

    p = 2: the leverage scores. 1 <= p < 4: Cohen and Peng's iteration
    w <- (w^(2/p - 1) * tau(W^(1/2 - 1/p) A))^(p/2), which is
    w_i <- (a_i^T (A^T W^(1-2/p) A)^+ a_i)^(p/2) written through the leverage scores tau of the
    rescaled matrix, from w = 1, until no weight moves by a factor above 1 + 1e-10. A zero row
    has weight 0 (it takes no part in the iteration). A ValueError when p is outside [1, 4)
    or the iteration has not settled after MAX_FIXED_POINT_ITERATIONS steps.
    """
    if not MIN_P <= p < MAX_P:
        raise ValueError(f"p must be in [{MIN_P:g}, {MAX_P:g}) (where the fixed-point iteration converges), got {p}")
    rows = _as_matrix(matrix, device)
    if rank is not None:
        rows = principal_part(rows, rank)
    if p == 2.0:
        return leverage_scores(rows).cpu().numpy()
    live = (rows != 0).any(dim=1)  # zero rows keep weight 0
    live_rows = rows[live]
    weights = torch.ones(live_rows.shape[0], dtype=torch.float64, device=rows.device)
    for _ in range(MAX_FIXED_POINT_ITERATIONS):
        tau = leverage_scores(live_rows * weights.pow(0.5 - 1.0 / p)[:, None])
        updated = (weights.pow(2.0 / p - 1.0) * tau).pow(p / 2.0)
        if (updated <= 0).any():  # a row whose direction fell below the rank threshold
            raise ValueError("a nonzero row lost all its weight: its direction is below the numerical rank")
        step = (updated.log() - weights.log()).abs().max() if updated.numel() else torch.tensor(0.0)
        weights = updated
        if step <= FIXED_POINT_TOLERANCE:
            break
    else:
        raise ValueError(f"the Lewis weights for p = {p} did not settle in {MAX_FIXED_POINT_ITERATIONS} "
                         "iterations (the iteration slows down as p nears 4)")
    full = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    full[live] = weights
    return full.cpu().numpy()


def with_bias_column(features) -> torch.Tensor:
    """[features, 1]: the design matrix of a linear layer with a bias."""
    rows = torch.as_tensor(features)
    design = torch.ones(rows.shape[0], rows.shape[1] + 1, dtype=torch.float64, device=rows.device)
    design[:, :-1] = rows  # converted while copied: one float64 matrix, not two
    return design


def maximum_lewis_weights(representations, p: float = 2.0, device: str = "cpu", rank: int | None = None) -> np.ndarray:
    """max over t of the Lewis weights of [A_t, 1] (of its top-`rank` principal part, with `rank`),
    for `representations` of shape (T, n, d) (any float dtype; one is moved to float64 at a time)."""
    if len(representations) == 0:
        raise ValueError("at least one representation is needed")
    best = None
    for features in representations:
        weights = lewis_weights(with_bias_column(features), p, device, rank)
        best = weights if best is None else np.maximum(best, weights)
    return best


def inclusion_probabilities(weights, sample_size: int) -> np.ndarray:
    """pi_i = min(1, beta w_i) with beta such that sum(pi) = sample_size (float64).

    The rows with the largest weights are capped at 1 in turn until beta w stays below 1 on the
    rest. Rows of weight 0 get 0, unless the positive rows are fewer than the sample: they are
    then all taken (pi = 1) and the rest of the sample is spread evenly over the zero rows.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("weights must be a 1-D array of finite non-negative numbers")
    n_rows = weights.shape[0]
    if not 0 <= sample_size <= n_rows:
        raise ValueError(f"cannot sample {sample_size} of {n_rows} rows")
    probabilities = np.zeros(n_rows)
    positive = weights > 0
    n_positive = int(positive.sum())
    if sample_size >= n_positive:
        probabilities[positive] = 1.0
        if n_rows > n_positive:
            probabilities[~positive] = (sample_size - n_positive) / (n_rows - n_positive)
        return probabilities
    order = np.argsort(-weights, kind="stable")
    descending = weights[order]
    # tail[k] = sum of the weights after the k largest; beta[k] spreads what is left of the
    # sample over them once the k largest are capped at 1.
    tail = np.cumsum(descending[::-1])[::-1]
    capped_counts = np.arange(sample_size + 1)
    beta = (sample_size - capped_counts) / tail[capped_counts]
    # The first k at which the largest uncapped row stays below 1 (k = sample_size always does: beta = 0).
    n_capped = int(np.flatnonzero(beta * descending[capped_counts] < CERTAIN)[0])
    probabilities[order[:n_capped]] = 1.0
    probabilities[order[n_capped:]] = beta[n_capped] * descending[n_capped:]
    return probabilities


def sample_with_probabilities(probabilities, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(sum(pi)) distinct rows, row i taken with probability pi_i, in random order.

    Rows with pi >= CERTAIN are taken. The others are laid out in a random order as intervals
    of length pi_i on a line, and one point in each unit-spaced step from a uniform start picks
    the interval it falls in (systematic sampling): an interval shorter than 1 holds at most
    one point, and holds one with probability its length. The sample comes back shuffled, so
    that any prefix of it is a uniformly random part of it.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    certain = np.flatnonzero(probabilities >= CERTAIN)
    uncertain = np.flatnonzero((probabilities > 0) & (probabilities < CERTAIN))
    sample_size = int(round(probabilities.sum()))
    n_drawn = sample_size - len(certain)
    drawn = np.empty(0, dtype=np.int64)
    if n_drawn > 0:
        laid_out = rng.permutation(uncertain)
        ends = np.cumsum(probabilities[laid_out])
        ends *= n_drawn / ends[-1]  # the intervals fill [0, n_drawn) exactly despite rounding
        points = rng.random() + np.arange(n_drawn)
        drawn = laid_out[np.searchsorted(ends, points, side="right")]
    sample = np.concatenate([certain, drawn]).astype(np.int64)
    if len(np.unique(sample)) != sample_size:
        raise RuntimeError("systematic sampling drew a row twice; the probabilities are not valid")
    return rng.permutation(sample)


# The with-replacement sampler refuses when this many draws per pool row have not found the
# sample's distinct rows: the weights then leave too little mass outside the rows already drawn.
MAX_DRAWS_PER_ROW = 1000


def sampling_distribution(weights) -> np.ndarray:
    """q_i = w_i / sum(w): the paper's distribution of a single draw (float64)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError("weights must be a 1-D array of finite non-negative numbers, not all 0")
    return weights / weights.sum()


def draw_with_replacement(distribution, n_distinct: int, rng: np.random.Generator) -> np.ndarray:
    """Rows drawn i.i.d. from `distribution` (q, summing to 1) until `n_distinct` distinct rows have
    come: the whole sequence of draws (int64), its last draw the n-th new row. Each draw is one
    uniform number from `rng` through q's cumulative sum, so any prefix of the sequence is the
    draw a smaller sample would have made with the same rng."""
    distribution = np.asarray(distribution, dtype=np.float64)
    n_rows, n_positive = len(distribution), int((distribution > 0).sum())
    if not 0 <= n_distinct <= n_positive:
        raise ValueError(f"cannot draw {n_distinct} distinct rows: {n_positive} of the {n_rows} rows have a "
                         "positive probability")
    cumulative = np.cumsum(distribution)
    draws, seen, n_seen, n_drawn = [], np.zeros(n_rows, dtype=bool), 0, 0
    while n_seen < n_distinct:
        if n_drawn >= MAX_DRAWS_PER_ROW * n_rows:
            raise ValueError(f"{MAX_DRAWS_PER_ROW * n_rows} draws found only {n_seen} of the {n_distinct} distinct "
                             "rows asked for: the sampling weights leave almost nothing outside the rows drawn")
        chunk = np.searchsorted(cumulative, rng.random(max(n_distinct - n_seen, 64)) * cumulative[-1], side="right")
        chunk = np.minimum(chunk, n_rows - 1)  # a uniform number at the very top of the last interval
        for position, row in enumerate(chunk):
            if not seen[row]:
                seen[row] = True
                n_seen += 1
                if n_seen == n_distinct:
                    chunk = chunk[:position + 1]
                    break
        draws.append(chunk)
        n_drawn += len(chunk)
    return np.concatenate(draws).astype(np.int64) if draws else np.empty(0, dtype=np.int64)


def with_replacement_sample(draws, distribution, n_distinct: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's sample of `n_distinct` rows from a sequence of i.i.d. draws: the first n distinct
    rows in the order they came, and each one's loss weight c_i / (m q_i), with m the draws up to the
    n-th new row and c_i how often row i came among them."""
    draws = np.asarray(draws, dtype=np.int64)
    rows, first = np.unique(draws, return_index=True)
    if len(rows) < n_distinct:
        raise ValueError(f"the draws hold {len(rows)} distinct rows, fewer than the {n_distinct} asked for")
    in_order = rows[np.argsort(first, kind="stable")][:n_distinct]
    if n_distinct == 0:
        return in_order, np.empty(0)
    n_draws = int(np.sort(first)[n_distinct - 1]) + 1
    counts = np.bincount(draws[:n_draws], minlength=len(distribution))
    return in_order, counts[in_order] / (n_draws * np.asarray(distribution, dtype=np.float64)[in_order])
