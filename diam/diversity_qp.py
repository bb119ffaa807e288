"""DIAM_qp's heavy pieces (SPEC section 5): the models' k-NN co-occurrence matrix, its
nearest positive semi-definite matrix, and the box-constrained QP.

Each is a function over arrays, with memory linear in n times k where it can be:
- `knn_cooccurrence`: distances in row chunks on the torch device, never an n x n matrix;
  the result is a scipy.sparse matrix with at most T * k entries a row.
- `nearest_psd_upper`: the exact projection (eigenvalues below 0 set to 0) of the
  symmetric co-occurrence matrix, done on each connected component of its graph: the
  matrix is block diagonal over them, so the projection is too, and a component that is
  already positive definite (one Cholesky factorisation says so) keeps its sparse block.
  A component is dense after projection: n x n float64 at worst (1 GB at n = 11,400).
- `solve_selection_qp`: OSQP through qpsolvers, as the authors' code does.
"""
import numpy as np
import qpsolvers
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components


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
    stores them). Distances are float32 on `device`, from centred features, computed
    chunk_size rows at a time, so memory is linear in n for a fixed chunk size. Among
    exactly equal distances (duplicated examples), which are kept is torch.topk's choice.
    """
    n_models, n_examples, _ = _check_features(features_per_model)
    if not 1 <= n_neighbours <= n_examples:
        raise ValueError(f"n_neighbours must be between 1 and the number of examples "
                         f"({n_examples}), got {n_neighbours}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    neighbours = np.empty((n_examples, n_models, n_neighbours), dtype=np.int32)
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


def nearest_psd_upper(symmetric, device: str = "cpu") -> sp.csc_matrix:
    """The nearest positive semi-definite matrix (in Frobenius norm) to a symmetric sparse
    matrix, as its upper triangle in CSC form (what OSQP reads).

    This is the dense route's result (eigendecomposition, eigenvalues below 0 set to 0),
    computed exactly but per connected component of the matrix's graph, since a block
    diagonal matrix's projection is the block diagonal of its blocks' projections. A
    component whose block is positive definite is left as it is, sparse. Eigen-
    decompositions run in float64 with torch on `device`.
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
    # Column j of the upper triangle: its rows and values, filled component by component.
    column_rows: list = [None] * n_rows
    column_values: list = [None] * n_rows
    by_component = np.argsort(component_of, kind="stable")
    starts = np.searchsorted(component_of[by_component], np.arange(n_components + 1))
    for component in range(n_components):
        positions = by_component[starts[component]:starts[component + 1]]  # ascending
        block = _projected_block(matrix[positions][:, positions], device)
        # Positions are ascending, so the block's upper triangle is the matrix's.
        for offset, column in enumerate(positions):
            upper = block[:offset + 1, offset]
            kept = np.flatnonzero(upper)
            column_rows[column] = positions[kept]
            column_values[column] = upper[kept]
    lengths = np.fromiter((len(rows) for rows in column_rows), dtype=np.int64, count=n_rows)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate(column_rows) if n_rows else np.zeros(0, dtype=np.int64)
    values = np.concatenate(column_values) if n_rows else np.zeros(0)
    return sp.csc_matrix((values, indices, indptr), shape=(n_rows, n_rows))


def _projected_block(block: sp.spmatrix, device: str) -> np.ndarray:
    """One component's block, projected onto the PSD cone, as a dense float64 array."""
    dense = torch.from_numpy(block.toarray()).to(device)
    if int(torch.linalg.cholesky_ex(dense).info) == 0:
        return dense.cpu().numpy()  # positive definite: it is its own projection
    eigenvalues, eigenvectors = torch.linalg.eigh(dense)
    del dense
    # eigh sorts eigenvalues ascending: the positive ones are the last columns, and
    # sum over them of lambda v v^T is the projection.
    first_positive = int((eigenvalues <= 0).sum())
    scaled = eigenvectors[:, first_positive:] * eigenvalues[first_positive:].sqrt()
    del eigenvectors
    return (scaled @ scaled.T).cpu().numpy()


def solve_selection_qp(similarity_upper: sp.csc_matrix, scores, total: int, q: float,
                       tolerance: float, max_iterations: int) -> np.ndarray:
    """x minimising 1/2 x^T S x - q scores^T x subject to sum(x) = total, 0 <= x <= 1,
    solved by OSQP through qpsolvers. S is given by its upper triangle (CSC) and must be
    positive semi-definite. `tolerance` is OSQP's eps_abs and eps_rel.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_examples = scores.shape[0]
    if scores.ndim != 1 or similarity_upper.shape != (n_examples, n_examples):
        raise ValueError(f"scores must be a vector matching the {similarity_upper.shape} matrix, "
                         f"got shape {scores.shape}")
    if not 0 <= total <= n_examples:
        raise ValueError(f"cannot choose {total} of {n_examples} examples: sum(x) = {total} with "
                         "0 <= x <= 1 has no solution")
    if not (np.isfinite(scores).all() and np.isfinite(q)):
        raise ValueError("scores and q must be finite")
    problem = qpsolvers.Problem(
        P=sp.csc_matrix(similarity_upper, dtype=np.float64), q=-q * scores,
        A=sp.csc_matrix(np.ones((1, n_examples))), b=np.array([float(total)]),
        lb=np.zeros(n_examples), ub=np.ones(n_examples))
    solution = qpsolvers.solve_problem(problem, solver="osqp", eps_abs=tolerance, eps_rel=tolerance,
                                       max_iter=max_iterations, polishing=False, verbose=False)
    if not solution.found:
        status = solution.extras["info"].status
        raise RuntimeError(f"OSQP did not solve DIAM_qp's QP (status '{status}')")
    return solution.x
