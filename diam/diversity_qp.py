"""DIAM_qp's heavy pieces (SPEC section 5): the models' k-NN co-occurrence matrix, its
nearest positive semi-definite matrix, and the box-constrained QP (docs/diam_qp.md).

Each is a function over arrays:
- `knn_cooccurrence`: distances in row chunks on the torch device, never an n x n matrix;
  the result is a scipy.sparse matrix with at most T * k entries a row.
- `nearest_psd`: the exact projection (eigenvalues below 0 set to 0) of the symmetric
  co-occurrence matrix, as one dense n x n float64 array (1 GB at n = 11,400), done on
  each connected component of its graph: the matrix is block diagonal over them, so the
  projection is too, and a component that is already positive semi-definite (one LDL^T
  factorisation's inertia says so) is copied as it is. Each component's projection is a
  rank-m update of the component, m the number of its negative eigenvalues.
- `solve_selection_qp`: a certified dense solve (projected-gradient warm start, then a
  primal-dual active-set method, accepted only when the float64 KKT conditions hold with
  margins), falling back to OSQP through qpsolvers, the authors' solver.
"""
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import osqp
import qpsolvers
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg
import torch
from scipy.linalg.blas import dsyrk
from scipy.linalg.lapack import dsytrf, dsytrf_lwork
from scipy.sparse.csgraph import connected_components

from .presets import (DIAM_QP_ABSORBED_ERROR, DIAM_QP_CERTIFICATE_MARGIN, DIAM_QP_MAX_ACTIVE_SET_STEPS,
                      DIAM_QP_MAX_SOLVER_ITERATIONS, DIAM_QP_SOLVER_TOLERANCE, DIAM_QP_WARM_START_STEPS)

# The ways `solve_selection_qp` can be asked to solve: the certified dense solve (OSQP when
# its certificate fails), or OSQP alone (the authors' route, kept to compare against).
QP_METHODS = ("certified", "osqp")
# Rows of the dense matrix handled at a time where a whole-matrix temporary would double memory.
_ROW_BLOCK = 1024


def _check_features(features_per_model) -> tuple[int, int, int]:
    shape = tuple(features_per_model.shape)
    if len(shape) != 3:
        raise ValueError(f"features must have shape (models, examples, dim), got {shape}")
    return shape


def knn_cooccurrence(features_per_model, n_neighbours: int, device: str = "cpu",
                     chunk_size: int = 1024) -> sp.csr_matrix:
    """N[i, j] = number of models in whose features j is among the `n_neighbours` nearest
    (Euclidean) examples of i, i itself included (it is at distance 0 from itself).

    `features_per_model` has shape (T, n, D), any float dtype (float16 is how training
    stores them). Distances are float32 on `device` (never TF32), from centred features,
    computed chunk_size rows at a time, so memory is linear in n for a fixed chunk size.
    Among exactly equal distances (duplicated examples), which are kept is torch.topk's
    choice; two whose exact values differ by less than float32's rounding (a relative gap
    near 1e-8) may come in either order, so another device or library can swap them.
    """
    n_models, n_examples, _ = _check_features(features_per_model)
    if not 1 <= n_neighbours <= n_examples:
        raise ValueError(f"n_neighbours must be between 1 and the number of examples "
                         f"({n_examples}), got {n_neighbours}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    neighbours = np.empty((n_examples, n_models, n_neighbours), dtype=np.int32)
    with _full_float32_matmul():
        for model in range(n_models):
            points = torch.as_tensor(features_per_model[model], device=device).to(torch.float32)
            # Distances do not change under a shift; centring keeps |a|^2 + |b|^2 - 2 a.b from
            # cancelling away float32 digits when features share a large common component.
            points = points - points.mean(dim=0)
            sq_norms = (points * points).sum(dim=1)
            if not torch.isfinite(sq_norms).all():
                raise ValueError(f"model {model}'s features contain NaN or infinity "
                                 "(or values whose square overflows)")
            for start in range(0, n_examples, chunk_size):
                rows = slice(start, min(start + chunk_size, n_examples))
                sq_distances = (points[rows] @ points.T).mul_(-2.0)
                sq_distances.add_(sq_norms[rows, None]).add_(sq_norms[None, :])
                # Each example's distance to itself is exactly 0; |a|^2 + |a|^2 - 2 a.a may
                # round to a small positive number that a near-duplicate could undercut.
                own = torch.arange(rows.stop - rows.start, device=device)
                sq_distances[own, own + start] = 0.0
                nearest = torch.topk(sq_distances, n_neighbours, dim=1, largest=False).indices
                neighbours[rows, model, :] = nearest.cpu().numpy()
    entries_per_row = n_models * n_neighbours
    counts = sp.csr_matrix(
        (np.ones(n_examples * entries_per_row), neighbours.reshape(-1),
         np.arange(n_examples + 1, dtype=np.int64) * entries_per_row),
        shape=(n_examples, n_examples))
    counts.sum_duplicates()  # one entry per (i, j), holding the number of models
    return counts


@contextmanager
def _full_float32_matmul():
    """Matrix products in full float32 while the block runs: TF32, which the scripts turn on
    for CUDA, rounds their inputs to 10-bit mantissas (float32 keeps 23), enough to change
    neighbour sets from the CPU's."""
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


class ProjectedSimilarity(NamedTuple):
    """The nearest PSD matrix, dense, with its largest eigenvalue (the QP's step size needs it)."""
    matrix: np.ndarray  # (n, n) float64, C order, exactly symmetric
    largest_eigenvalue: float


def nearest_psd(symmetric, device: str = "cpu") -> ProjectedSimilarity:
    """The nearest positive semi-definite matrix (in Frobenius norm) to a symmetric sparse
    matrix, dense: eigenvalues below 0 set to 0, computed per connected component of the
    matrix's graph (a block diagonal matrix's projection is the block diagonal of its
    blocks' projections). A positive semi-definite component is copied as it is.

    Each component is corrected by its negative eigenpairs only, P+ = P - V- L- V-^T: on
    the CPU an LDL^T factorisation (LAPACK sytrf) counts them, m, scipy's `eigh` (LAPACK
    syevr, which for part of the spectrum uses bisection and inverse iteration) computes
    just those m, and the update is one in-place symmetric rank-m product (BLAS syrk); on
    another torch device (a GPU) `torch.linalg.eigh` computes them all, in float64, and
    whichever side has fewer eigenpairs builds the result. Memory on the CPU: the n x n
    result and the n x m eigenvectors (m was about 0.3-0.4 n in the benchmarks); on a GPU
    the device holds the copies and the host the result.
    """
    matrix = sp.csr_matrix(symmetric, dtype=np.float64)
    n_rows, n_cols = matrix.shape
    if n_rows != n_cols:
        raise ValueError(f"the matrix must be square, got {matrix.shape}")
    if not np.isfinite(matrix.data).all():
        raise ValueError("the matrix contains NaN or infinity")
    if (matrix != matrix.T).nnz:
        raise ValueError("the matrix must be symmetric")
    n_components, component_of = connected_components(matrix, directed=False)
    if n_components == 1:  # the paper-scale case: project in the result's own memory
        projected = matrix.toarray()
        return ProjectedSimilarity(projected, _project_in_place(projected, matrix, device))
    projected = np.zeros((n_rows, n_rows))
    largest = 0.0
    by_component = np.argsort(component_of, kind="stable")
    starts = np.searchsorted(component_of[by_component], np.arange(n_components + 1))
    for component in range(n_components):
        positions = by_component[starts[component]:starts[component + 1]]
        block_matrix = matrix[positions][:, positions]
        block = block_matrix.toarray()
        largest = max(largest, _project_in_place(block, block_matrix, device))
        projected[np.ix_(positions, positions)] = block
    return ProjectedSimilarity(projected, largest)


def _project_in_place(block: np.ndarray, block_matrix: sp.csr_matrix, device: str) -> float:
    """Overwrite `block` (C order, holding the symmetric `block_matrix`) with its projection
    onto the PSD cone; return the projection's largest eigenvalue."""
    if torch.device(device).type != "cpu":
        return _project_on_torch_device(block, block_matrix, device)
    # LAPACK reads column-major arrays; block.T is the same symmetric matrix in that order,
    # so LAPACK and BLAS work in block's own memory with no copy.
    n_negative = _negative_eigenvalue_count(block.T)
    block_matrix.toarray(out=block)  # the factorisation overwrote it
    largest = _largest_eigenvalue(block_matrix)
    if n_negative == 0:
        return largest  # positive semi-definite: its own projection
    # Asked for exactly the m lowest eigenpairs, LAPACK's eigenvector array is n x m; asked
    # for the eigenvalues below 0 instead, scipy must size it n x n (m unknown in advance).
    eigenvalues, eigenvectors = scipy.linalg.eigh(
        block.T, overwrite_a=True, check_finite=False, driver="evr", subset_by_index=(0, n_negative - 1))
    block_matrix.toarray(out=block)  # and so did the eigendecomposition
    # The count and the eigenvalues may disagree on a value within rounding of 0 (ascending:
    # the negative ones are a prefix; a view, not a copy).
    eigenvectors = eigenvectors[:, :int(np.searchsorted(eigenvalues, 0.0))]
    eigenvalues = eigenvalues[:eigenvectors.shape[1]]
    # P+ = P - V diag(l) V^T = P + W W^T with W = V sqrt(-l), l < 0: one rank-m syrk on the
    # lower triangle of block (the upper one of its column-major view), then mirrored.
    eigenvectors *= np.sqrt(-eigenvalues)
    dsyrk(1.0, eigenvectors, beta=1.0, c=block.T, lower=False, overwrite_c=True)
    del eigenvectors
    _mirror_lower_triangle(block)
    return largest


def _negative_eigenvalue_count(symmetric_fortran: np.ndarray) -> int:
    """The number of negative eigenvalues of a symmetric column-major array, from its blocked
    LDL^T factorisation (LAPACK sytrf, in the array's own memory, which it overwrites): by
    Sylvester's law of inertia, D has as many negative eigenvalues as the matrix, and D is
    block diagonal with 1 x 1 and 2 x 2 blocks. It costs about 5% of the eigendecomposition."""
    size = symmetric_fortran.shape[0]
    work_size = int(dsytrf_lwork(size, lower=1)[0])  # scipy's default work size means unblocked: 7x slower
    factor, pivots, info = dsytrf(symmetric_fortran, lower=1, lwork=work_size, overwrite_a=1)
    if info < 0:
        raise RuntimeError(f"LAPACK sytrf refused argument {-info}")
    diagonal, below = np.diagonal(factor).copy(), np.diagonal(factor, -1).copy()
    negative, row = 0, 0
    while row < size:
        if pivots[row] > 0:  # a 1 x 1 block
            negative += diagonal[row] < 0
            row += 1
            continue
        # A 2 x 2 block [[a, b], [b, c]]: its determinant's and trace's signs give its inertia.
        a, b, c = diagonal[row], below[row], diagonal[row + 1]
        determinant = a * c - b * b
        if determinant < 0:
            negative += 1  # one eigenvalue of each sign
        elif a + c < 0:
            negative += 2 if determinant > 0 else 1  # both negative, or one negative and one 0
        row += 2
    return int(negative)


def _project_on_torch_device(block: np.ndarray, block_matrix: sp.csr_matrix, device: str) -> float:
    dense = torch.from_numpy(block).to(device)
    if int(torch.linalg.cholesky_ex(dense).info) == 0:
        return _largest_eigenvalue(block_matrix)  # positive definite: its own projection
    eigenvalues, eigenvectors = torch.linalg.eigh(dense)  # ascending
    n_negative = int((eigenvalues < 0).sum())
    if n_negative <= len(eigenvalues) - n_negative:
        negative = eigenvectors[:, :n_negative]
        dense.addmm_(negative * eigenvalues[:n_negative], negative.T, alpha=-1.0)
    else:
        positive = eigenvectors[:, n_negative:]
        dense = (positive * eigenvalues[n_negative:]) @ positive.T
    del eigenvectors
    dense = (dense + dense.T) / 2  # a product V L V^T is symmetric only up to rounding
    torch.from_numpy(block).copy_(dense)  # straight into the host array, no temporary copy
    return max(float(eigenvalues[-1]), 0.0)


def _largest_eigenvalue(symmetric) -> float:
    """lambda_max, or 0 if none is positive, of a symmetric sparse or dense matrix (its PSD
    projection's largest eigenvalue), by Lanczos."""
    if symmetric.shape[0] <= 64:
        dense = symmetric.toarray() if sp.issparse(symmetric) else symmetric
        return max(float(np.linalg.eigvalsh(dense)[-1]), 0.0)
    value = scipy.sparse.linalg.eigsh(symmetric, k=1, which="LA", tol=1e-10, return_eigenvectors=False)[0]
    return max(float(value), 0.0)


def _mirror_lower_triangle(square: np.ndarray) -> None:
    """Copy the lower triangle of a C-order square array onto its upper one, in row blocks."""
    n = square.shape[0]
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        diagonal = square[start:stop, start:stop]
        diagonal[...] = np.tril(diagonal) + np.tril(diagonal, -1).T
        square[start:stop, stop:] = square[stop:, start:stop].T


@dataclass(frozen=True)
class QPSolution:
    """The QP's solution and the route that found it: "certified" (the dense active-set solve,
    its KKT certificate held) or "OSQP"; `detail` gives the certificate's figures, or why OSQP
    answered."""
    x: np.ndarray
    route: str
    detail: str

    def description(self) -> str:
        return f"{self.route} ({self.detail})"


def solve_selection_qp(similarity: np.ndarray, scores, total: int, q: float, *,
                       largest_eigenvalue: float | None = None, method: str = "certified",
                       warm_start_steps: tuple[int, ...] = DIAM_QP_WARM_START_STEPS,
                       certificate_margin: float = DIAM_QP_CERTIFICATE_MARGIN,
                       osqp_tolerance: float = DIAM_QP_SOLVER_TOLERANCE,
                       osqp_max_iterations: int = DIAM_QP_MAX_SOLVER_ITERATIONS) -> QPSolution:
    """x minimising 1/2 x^T S x - q scores^T x subject to sum(x) = total, 0 <= x <= 1, for a
    dense symmetric positive semi-definite S (`nearest_psd`'s), and the route that found it.

    method "certified": accelerated projected-gradient steps (FISTA; the step is 1 / S's
    largest eigenvalue, computed here when not given) warm-start a primal-dual active-set
    method, which solves the equality-constrained QP on the free variables exactly (one
    Cholesky factorisation a step) until the active set settles. Its x is accepted only
    when the float64 KKT conditions certify it, every margin above `certificate_margin`
    and above the error bound (see `_certify`). `warm_start_steps` are the cumulative
    step counts after which the active set is tried; when every try fails, OSQP answers,
    and `detail` says why. method "osqp": OSQP alone (the authors' route). A failed OSQP
    solve raises RuntimeError: there is no answer to give.
    """
    similarity = np.asarray(similarity)
    scores = np.asarray(scores, dtype=np.float64)
    n_examples = scores.shape[0]
    if scores.ndim != 1 or similarity.shape != (n_examples, n_examples):
        raise ValueError(f"scores must be a vector matching the {similarity.shape} matrix, "
                         f"got shape {scores.shape}")
    if similarity.dtype != np.float64:
        raise ValueError(f"the matrix must be float64, got {similarity.dtype}")
    if not 0 <= total <= n_examples:
        raise ValueError(f"cannot choose {total} of {n_examples} examples: sum(x) = {total} with "
                         "0 <= x <= 1 has no solution")
    if not (np.isfinite(scores).all() and np.isfinite(q)):
        raise ValueError("scores and q must be finite")
    if method not in QP_METHODS:
        raise ValueError(f"method must be one of {QP_METHODS}, got {method!r}")
    linear = q * scores
    if method == "osqp":
        return QPSolution(_osqp(similarity, linear, total, osqp_tolerance, osqp_max_iterations),
                          "OSQP", "asked for")
    if largest_eigenvalue is None:
        largest_eigenvalue = _largest_eigenvalue(similarity)
    # Lanczos approaches lambda_max from below; a step a hair shorter keeps FISTA monotone.
    lipschitz = max(largest_eigenvalue * (1 + 1e-6), np.finfo(float).tiny)
    failures, x, steps_done = [], None, 0
    for steps in warm_start_steps:
        x = _projected_gradient(similarity, linear, total, lipschitz, steps - steps_done, x)
        steps_done = steps
        certified, detail = _active_set_solve(similarity, linear, total, x, lipschitz, largest_eigenvalue,
                                              certificate_margin)
        if certified is not None:
            return QPSolution(certified, "certified", f"after {steps} warm-start steps: {detail}")
        failures.append(f"after {steps} warm-start steps, {detail}")
    return QPSolution(_osqp(similarity, linear, total, osqp_tolerance, osqp_max_iterations),
                      "OSQP", "the certificate failed: " + "; ".join(failures))


def _capped_simplex_projection(point: np.ndarray, total: float) -> np.ndarray:
    """The nearest x to `point` with sum(x) = total and 0 <= x <= 1: x = clip(point - t, 0, 1),
    t found by bisection (the sum falls as t rises), then solved for exactly on the free part."""
    low, high = point.min() - 1.0, point.max()  # sum(clip) is n at `low`, 0 at `high`
    scale = max(abs(low), abs(high), 1.0)
    while high - low > 4 * np.finfo(float).eps * scale:  # down to float64's resolution
        middle = 0.5 * (low + high)
        if np.clip(point - middle, 0.0, 1.0).sum() > total:
            low = middle
        else:
            high = middle
    shifted = point - high
    free = (shifted > 0) & (shifted < 1)
    n_free = np.count_nonzero(free)
    shift = high
    if n_free:  # sum over free (point - t) + #(at 1) = total, exactly
        shift = (point[free].sum() + np.count_nonzero(shifted >= 1) - total) / n_free
    return np.clip(point - shift, 0.0, 1.0)


def _projected_gradient(similarity, linear, total, lipschitz, steps, start) -> np.ndarray:
    """`steps` FISTA steps from `start` (default: total / n everywhere), the momentum restarted
    whenever a step goes against the gradient (O'Donoghue and Candes's rule)."""
    x = np.full(linear.shape[0], total / linear.shape[0]) if start is None else start
    y, momentum = x, 1.0
    for _ in range(steps):
        x_next = _capped_simplex_projection(y - (similarity @ y - linear) / lipschitz, total)
        if (y - x_next) @ (x_next - x) > 0:
            momentum = 1.0
        next_momentum = (1 + math.sqrt(1 + 4 * momentum * momentum)) / 2
        y = x_next + ((momentum - 1) / next_momentum) * (x_next - x)
        x, momentum = x_next, next_momentum
    return x


def _active_set_solve(similarity, linear, total, x, lipschitz, largest_eigenvalue, margin):
    """The primal-dual active-set method from the warm start x: guess which variables sit at 0
    and 1 (where one more projected-gradient step puts them), solve exactly on the rest, move
    variables whose value or multiplier has the wrong sign, until nothing moves; then certify.
    Returns (x, figures) when certified, else (None, why not)."""
    guess = _capped_simplex_projection(x - (similarity @ x - linear) / lipschitz, total)
    at_lower, at_upper = guess <= 0, guess >= 1
    for step in range(1, DIAM_QP_MAX_ACTIVE_SET_STEPS + 1):
        solved = _solve_on_free_set(similarity, linear, total, at_lower, at_upper)
        if isinstance(solved, str):
            return None, solved
        x, mu, factor, unit_solution = solved
        # g + mu, with g = S x - q d: zero on the free set, >= 0 at 0, <= 0 at 1 at the optimum.
        multiplier = similarity @ x - linear + mu
        free = ~(at_lower | at_upper)
        next_lower = (at_lower & (multiplier >= 0)) | (free & (x <= 0))
        next_upper = (at_upper & (multiplier <= 0)) | (free & (x >= 1))
        if np.array_equal(next_lower, at_lower) and np.array_equal(next_upper, at_upper):
            return _certify(similarity, x, total, multiplier, free, at_lower, at_upper, factor, unit_solution,
                            largest_eigenvalue, margin, step)
        at_lower, at_upper = next_lower, next_upper
    return None, f"the active set did not settle in {DIAM_QP_MAX_ACTIVE_SET_STEPS} steps"


def _solve_on_free_set(similarity, linear, total, at_lower, at_upper):
    """x and mu with x = 0 on at_lower, 1 on at_upper, sum(x) = total, S_FF x_F + mu = q d_F -
    S_FU 1 on the free set F; plus S_FF's Cholesky factor and S_FF^-1 1 for the certificate.
    A string says why there is no such solve (S_FF singular, too many at 1)."""
    free = np.flatnonzero(~(at_lower | at_upper))
    free_total = total - np.count_nonzero(at_upper)
    x = at_upper.astype(np.float64)
    if free.size == 0:
        if free_total != 0:
            return f"no free variable, and {np.count_nonzero(at_upper)} at 1 for a sum of {total}"
        gradient = similarity @ x - linear
        # Any mu in [max over 0s of -g, min over 1s of -g] satisfies the KKT conditions.
        low = np.max(-gradient[at_lower], initial=-np.inf)
        high = np.min(-gradient[at_upper], initial=np.inf)
        mu = (low + high) / 2 if np.isfinite(low) and np.isfinite(high) else \
            (high - 1.0 if np.isfinite(high) else low + 1.0)
        return x, mu, None, None
    if free_total <= 0:
        return f"{np.count_nonzero(at_upper)} variables at 1 leave nothing for the free ones (sum {total})"
    right_hand_side = linear[free] - (similarity @ x)[free]
    try:
        factor = scipy.linalg.cho_factor(similarity[np.ix_(free, free)], overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return f"the free block ({free.size} variables) is singular"
    solutions = scipy.linalg.cho_solve(factor, np.column_stack([right_hand_side, np.ones(free.size)]),
                                       check_finite=False)
    unit_solution = solutions[:, 1]
    mu = (solutions[:, 0].sum() - free_total) / unit_solution.sum()
    x[free] = solutions[:, 0] - mu * unit_solution
    return x, mu, factor, unit_solution


def _certify(similarity, x, total, multiplier, free, at_lower, at_upper, factor, unit_solution,
             largest_eigenvalue, margin, steps):
    """Accept x when the float64 KKT conditions hold strictly, by more than what they could
    be off by. Bounds: x is exactly 0 or 1 off the free set F; with r_F = (g + mu)_F and
    r_s = sum(x) - total the residuals, and dS a change of S of norm at most
    e = DIAM_QP_ABSORBED_ERROR * lambda_max (another eigensolver or device), the exact
    optimum of the QP with S + dS and the same active set is within
        dx = ||S_FF^-1|| (e ||x|| + ||r_F||) + ||S_FF^-1 1|| / (1^T S_FF^-1 1) |r_s|
    of x (2-norm), and its multipliers within dm = 2 (e ||x|| + s dx) + max|r_F|, where
    s = sqrt(max_i S_ii lambda_max) bounds the 2-norm of S's rows (S is PSD).
    Then, with every floor raised to `margin`: free values at least dx inside (0, 1) (primal
    feasibility), multipliers at 0 above dm and at 1 below -dm (complementarity, strict),
    and the B-th largest x above the next by 2 dx (the top-B cut is decided). Strict
    complementarity and a nonsingular S_FF make the optimum unique, so these picks are the
    QP's whatever solver is used."""
    n_free = np.count_nonzero(free)
    absorbed = DIAM_QP_ABSORBED_ERROR * largest_eigenvalue
    x_norm = np.linalg.norm(x)
    residual = multiplier[free]
    residual_sum = x.sum() - total
    x_error = 0.0
    if n_free:
        inverse_norm = _inverse_norm(factor, n_free)
        if inverse_norm is None:
            return None, "the norm of the free block's inverse could not be estimated"
        if inverse_norm * largest_eigenvalue > 1e12:
            return None, f"the free block is numerically singular (condition ~{inverse_norm * largest_eigenvalue:.1e})"
        x_error = (inverse_norm * (absorbed * x_norm + np.linalg.norm(residual))
                   + np.linalg.norm(unit_solution) / unit_solution.sum() * abs(residual_sum))
    row_norm = math.sqrt(max(float(np.max(np.diagonal(similarity))), 0.0) * largest_eigenvalue)
    multiplier_error = 2 * (absorbed * x_norm + row_norm * x_error) + np.max(np.abs(residual), initial=0.0)
    x_floor, multiplier_floor = max(margin, x_error), max(margin, multiplier_error)
    free_values = x[free]
    value_margin = min(np.min(free_values, initial=np.inf), 1 - np.max(free_values, initial=-np.inf))
    lower_margin = np.min(multiplier[at_lower], initial=np.inf)
    upper_margin = np.min(-multiplier[at_upper], initial=np.inf)
    cut_gap = np.inf
    if 0 < total < x.shape[0]:
        ordered = -np.partition(-x, [total - 1, total])
        cut_gap = ordered[total - 1] - ordered[total]
    figures = (f"{n_free} free variables, {steps} active-set steps, error bounds {x_error:.1e} (x) and "
               f"{multiplier_error:.1e} (multipliers); least margins: free values {value_margin:.1e}, "
               f"multipliers {min(lower_margin, upper_margin):.1e}, top-B cut {cut_gap:.1e}")
    if not value_margin > x_floor:
        return None, f"a free value is within {x_floor:.1e} of a bound ({figures})"
    if not min(lower_margin, upper_margin) > multiplier_floor:
        return None, f"a multiplier is not above {multiplier_floor:.1e} (complementarity not strict; {figures})"
    if not cut_gap > max(margin, 2 * x_error):
        return None, f"the top-B cut is not decided ({figures})"
    return x, figures


def _inverse_norm(factor, size: int) -> float | None:
    """||S_FF^-1||_2 from S_FF's Cholesky factor: exactly when small, else by Lanczos (which
    approaches it from below, hence 1% more); None when Lanczos does not converge."""
    if size <= 256:
        inverse = scipy.linalg.cho_solve(factor, np.eye(size), check_finite=False)
        return float(np.linalg.eigvalsh((inverse + inverse.T) / 2)[-1])
    operator = scipy.sparse.linalg.LinearOperator(
        (size, size), matvec=lambda v: scipy.linalg.cho_solve(factor, v, check_finite=False), dtype=np.float64)
    try:
        value = scipy.sparse.linalg.eigsh(operator, k=1, which="LA", tol=1e-6, return_eigenvectors=False)[0]
    except (scipy.sparse.linalg.ArpackNoConvergence, scipy.sparse.linalg.ArpackError):
        return None
    return 1.01 * float(value)


def _osqp(similarity, linear, total, tolerance, max_iterations) -> np.ndarray:
    """OSQP through qpsolvers, on S's upper triangle. raise_error=True (the default OSQP 1.x
    announces): a solve that ends without a solution raises, and so does this, clearly."""
    n_examples = linear.shape[0]
    problem = qpsolvers.Problem(
        P=_upper_triangle_csc(similarity), q=-linear, A=sp.csc_matrix(np.ones((1, n_examples))),
        b=np.array([float(total)]), lb=np.zeros(n_examples), ub=np.ones(n_examples))
    try:
        solution = qpsolvers.solve_problem(problem, solver="osqp", eps_abs=tolerance, eps_rel=tolerance,
                                           max_iter=max_iterations, polishing=False, verbose=False,
                                           raise_error=True)
    except osqp.OSQPException as err:
        status = {member.value: name for name, member in osqp.SolverStatus.__members__.items()}.get(
            err.args[0] if err.args else None, "unknown")
        raise RuntimeError(f"DIAM_qp's QP: OSQP stopped without a solution (status {status}) after the "
                           "certified solve had failed; no batch was selected") from None
    return solution.x


def _upper_triangle_csc(square: np.ndarray) -> sp.csc_matrix:
    """The upper triangle of a symmetric dense matrix as CSC (column j holds rows 0..j, which
    are row j's first j + 1 entries by symmetry), built a block of rows at a time."""
    n = square.shape[0]
    indptr = np.concatenate([[0], np.cumsum(np.arange(1, n + 1, dtype=np.int64))])
    indices = np.empty(indptr[-1], dtype=np.int32)
    values = np.empty(indptr[-1])
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        in_triangle = np.arange(stop)[None, :] <= np.arange(start, stop)[:, None]
        indices[indptr[start]:indptr[stop]] = np.nonzero(in_triangle)[1]
        values[indptr[start]:indptr[stop]] = square[start:stop, :stop][in_triangle]
    return sp.csc_matrix((values, indices, indptr), shape=(n, n))
