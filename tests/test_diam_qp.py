"""DIAM_qp (SPEC section 5): its pieces against independent implementations, its picks
against a direct dense implementation of SPEC's steps, the certified QP route against OSQP's,
and its refusals of bad input."""
import logging
import warnings

import numpy as np
import pytest
import qpsolvers
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

import diam.strategies as strategies
from conftest import run_script
from diam import cli
from diam.diversity_qp import _negative_eigenvalue_count, knn_cooccurrence, nearest_psd, solve_selection_qp
from diam.settings import settings_from_args
from diam.run import Run
from diam.selection_inputs import selection_options
from diam.presets import DIAM_QP_WARM_START_STEPS
from diam.strategies import diam_qp, disagreement_count


# ------------------------------------------------- a dense reference of SPEC's steps

def dense_reference_picks(snapshot_labels, model_features, batch_size, q, neighbour_fraction, seed):
    """SPEC section 5's DIAM_qp done the direct way, as the authors' code does it: dense
    n x n distances, a full sort per row, a dense count matrix, a dense eigendecomposition
    of the whole matrix, OSQP on the dense projection. Ties in d at the subsample's cut
    go to the smaller of random keys: a permutation of 0..U-1 drawn from `seed`."""
    n_models, _, n_unlabeled = snapshot_labels.shape
    d = (snapshot_labels != snapshot_labels[:, :1, :]).any(axis=1).sum(axis=0)
    n = max(min(n_unlabeled // 5, 15000), batch_size)
    tie_key = np.random.default_rng(seed).permutation(n_unlabeled)
    subsample = sorted(range(n_unlabeled), key=lambda i: (-d[i], tie_key[i]))[:n]
    subsample = np.array(subsample)
    k = max(1, int(n * neighbour_fraction))
    counts = np.zeros((n, n))
    for model in range(n_models):
        points = model_features[model][subsample].astype(np.float64)
        distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
        for i, nearest in enumerate(np.argsort(distances, axis=1)[:, :k]):
            counts[i, nearest] += 1
    similarity = (counts + counts.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(similarity)
    projected = (eigenvectors * np.maximum(eigenvalues, 0)) @ eigenvectors.T
    x = qpsolvers.solve_qp(sp.csc_matrix((projected + projected.T) / 2), -q * d[subsample].astype(float),
                           A=sp.csc_matrix(np.ones((1, n))), b=np.array([float(batch_size)]),
                           lb=np.zeros(n), ub=np.ones(n), solver="osqp",
                           eps_abs=1e-10, eps_rel=1e-10, max_iter=1_000_000, polishing=False, raise_error=True)
    return subsample[np.argsort(-x, kind="stable")[:batch_size]], counts


def random_problem(seed, n_models=3, n_snapshots=4, n_unlabeled=1000, dim=6, n_clusters=0):
    """Snapshot labels with d spread over 0..T and float16 features (as training stores
    them); with n_clusters > 0, float32 features in well separated clusters (the same in
    every model): float16 would round their offsets coarsely enough to tie distances."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=(n_models, 1, n_unlabeled)).repeat(n_snapshots, axis=1)
    flipped = rng.random(labels.shape) < 0.15
    labels[flipped] = rng.integers(0, 3, size=flipped.sum())
    features = rng.normal(size=(n_models, n_unlabeled, dim))
    if n_clusters:
        features += 10.0 * rng.normal(size=(n_clusters, dim))[rng.integers(0, n_clusters, n_unlabeled)]
    return labels, features.astype(np.float32 if n_clusters else np.float16)


def number_of_components(counts):
    return connected_components(sp.csr_matrix(counts + counts.T), directed=False)[0]


@pytest.mark.parametrize("seed,neighbour_fraction,n_clusters,batch_size", [
    (0, 0.01, 0, 30),     # SPEC's k = floor(0.01 n) = 2 at n = 200
    (1, 0.05, 0, 30),     # k = 10: many co-occurrences, P far from PSD
    (2, 0.05, 6, 40),     # separated clusters: the projection runs per component
    (3, 0.10, 0, 150),    # most of the subsample picked
])
def test_diam_qp_picks_what_a_dense_implementation_of_spec_picks(
        monkeypatch, caplog, seed, neighbour_fraction, n_clusters, batch_size):
    monkeypatch.setattr(strategies, "DIAM_QP_NEIGHBOUR_FRACTION", neighbour_fraction)
    labels, features = random_problem(seed, n_clusters=n_clusters)
    expected, counts = dense_reference_picks(labels, features, batch_size, 1.0, neighbour_fraction, seed)
    if n_clusters:
        assert number_of_components(counts) > 1  # the case this parameter set is for
    with caplog.at_level(logging.INFO, logger="diam.strategies"):
        picks = diam_qp(labels, features, batch_size, np.random.default_rng(seed))
    assert "answered by the certified route" in caplog.text  # not OSQP, the fallback
    assert sorted(picks.tolist()) == sorted(expected.tolist())


def test_diam_qp_weighs_disagreement_with_q(monkeypatch):
    monkeypatch.setattr(strategies, "DIAM_QP_NEIGHBOUR_FRACTION", 0.05)
    labels, features = random_problem(4)
    small_q, _ = dense_reference_picks(labels, features, 30, 0.2, 0.05, 0)
    assert sorted(diam_qp(labels, features, 30, np.random.default_rng(0), q=0.2).tolist()) == sorted(small_q.tolist())
    # With q large the linear term rules: the batch is the top B by d, which here has
    # no tie across the cut (B = 30 of the examples that all T models disagree on).
    d = disagreement_count(labels)
    assert (d == 3).sum() > 30
    picks = diam_qp(labels, features, 30, np.random.default_rng(0), q=1e4)
    assert set(picks.tolist()) <= set(np.flatnonzero(d == 3).tolist())


def test_diam_qp_spreads_the_batch_over_the_feature_space(monkeypatch):
    # Every example of the subsample (positions 0..99, the only ones disagreed on) has d = 2,
    # so d says nothing and only x^T P x decides. Positions 0..19 are a tight cluster at the
    # same place in both models' features: each is among the others' 20 nearest in both, so
    # every pair taken from it is charged twice. The other 80 are spread, independently per
    # model, so their neighbour pairs rarely co-occur. A batch of 30 drawn without regard to P
    # takes 6 from the cluster on average, and 5 or more in 4 draws of 5 (hypergeometric);
    # DIAM_qp must take at most 4 at every seed (six such draws by chance: 8e-5), and at most 3
    # on average. Measured when this
    # test was written: 1-4 (mean 2.5) with P, 5-7 with P = T I (k = 1: no neighbours).
    monkeypatch.setattr(strategies, "DIAM_QP_NEIGHBOUR_FRACTION", 0.2)  # k = 20 at n = 100
    taken = []
    for seed in range(6):
        rng = np.random.default_rng(5 + seed)
        labels = np.zeros((2, 3, 500), dtype=np.int64)
        labels[:, 1, :100] = 1  # d = 2 on positions 0..99, the whole subsample
        features = 10.0 * rng.normal(size=(2, 500, 4))
        features[:, :20, :] = 0.01 * rng.normal(size=(1, 20, 4))
        picks = diam_qp(labels, features.astype(np.float32), 30, np.random.default_rng(seed))
        assert len(picks) == 30
        taken.append(int(np.sum(picks < 20)))
    assert max(taken) <= 4 and np.mean(taken) <= 3, taken


# -------------------------------------------------------------------------- k-NN

@pytest.mark.parametrize("chunk_size", [7, 1024])
def test_knn_cooccurrence_matches_scikit_learn_nearest_neighbors(chunk_size):
    rng = np.random.default_rng(6)
    features = rng.normal(size=(3, 150, 5))
    counts = knn_cooccurrence(features, 4, chunk_size=chunk_size)
    assert isinstance(counts, sp.csr_matrix)
    expected = np.zeros((150, 150))
    for model_features in features:
        nearest = NearestNeighbors(n_neighbors=4).fit(model_features).kneighbors(
            model_features, return_distance=False)
        for i, row in enumerate(nearest):
            expected[i, row] += 1
    np.testing.assert_array_equal(counts.toarray(), expected)
    assert np.all(np.diag(expected) == 3)  # each example is its own nearest in every model


def test_knn_cooccurrence_reads_float16_features():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(2, 80, 3)).astype(np.float16)
    expected = knn_cooccurrence(features.astype(np.float64), 3)
    assert (knn_cooccurrence(features, 3) != expected).nnz == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_knn_cooccurrence_on_cuda_with_tf32_on_finds_the_cpus_neighbours(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)  # as the scripts set it on CUDA
    features = np.random.default_rng(14).normal(size=(3, 600, 64)).astype(np.float32)
    on_cuda = knn_cooccurrence(features, 6, device="cuda")
    assert torch.backends.cuda.matmul.allow_tf32  # restored
    assert (on_cuda != knn_cooccurrence(features, 6)).nnz == 0


# ----------------------------------------------------------------- PSD projection

def dense_projection(matrix):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.maximum(eigenvalues, 0)) @ eigenvectors.T


def test_nearest_psd_is_the_dense_projection_and_copies_definite_components():
    rng = np.random.default_rng(8)
    indefinite = rng.integers(0, 3, size=(100, 100)).astype(float)
    indefinite = (indefinite + indefinite.T) / 2  # far from PSD; above the size Lanczos serves
    definite = np.diag([5.0, 4.0, 6.0, 5.0]) + np.diag([1.0, 0, 1.0], 1) + np.diag([1.0, 0, 1.0], -1)
    blocks = sp.block_diag([indefinite, definite, np.array([[3.0]]), np.array([[-2.0]])]).toarray()
    # Interleave the blocks' rows so that components are not contiguous.
    order = rng.permutation(len(blocks))
    matrix = blocks[order][:, order]
    projected = nearest_psd(sp.csr_matrix(matrix))
    assert projected.matrix.dtype == np.float64 and np.array_equal(projected.matrix, projected.matrix.T)
    expected = dense_projection(matrix)
    np.testing.assert_allclose(projected.matrix, expected, atol=1e-10)
    assert projected.largest_eigenvalue == pytest.approx(np.linalg.eigvalsh(expected)[-1], rel=1e-9)
    # The positive definite 4 x 4 component is copied as it is, not recomputed.
    definite_positions = np.flatnonzero(np.isin(order, np.arange(100, 104)))
    definite_block = np.ix_(definite_positions, definite_positions)
    assert np.array_equal(projected.matrix[definite_block], matrix[definite_block])


@pytest.mark.parametrize("case", ["random", "zero diagonal", "negative definite", "semi-definite", "mixed"])
def test_the_ldl_inertia_counts_the_negative_eigenvalues(case):
    # The count sizes the eigenvector array: one too few would leave a negative eigenvalue in
    # the projection. A zero diagonal forces sytrf's 2 x 2 pivots, whose signs are read together.
    rng = np.random.default_rng(3)
    n = 300
    if case == "random":
        matrix = rng.standard_normal((n, n))
    elif case == "zero diagonal":  # [[0, C], [C^T, 0]]: eigenvalues +-(singular values of C)
        corner = rng.standard_normal((n // 2, n // 2))
        matrix = np.block([[np.zeros((n // 2, n // 2)), corner], [corner.T, np.zeros((n // 2, n // 2))]])
    elif case == "negative definite":
        half = rng.standard_normal((n, n))
        matrix = -(half @ half.T) - np.eye(n)
    elif case == "semi-definite":  # exact zeros among the eigenvalues: not negative
        matrix = np.diag(rng.integers(0, 2, n).astype(float))
    else:
        matrix = np.kron(np.eye(n // 2), [[0.0, 1.0], [1.0, 0.0]]) + np.diag(rng.choice([-3.0, 0.0, 3.0], n))
    matrix = (matrix + matrix.T) / 2
    expected = int((np.linalg.eigvalsh(matrix) < 0).sum())
    assert _negative_eigenvalue_count(np.asfortranarray(matrix)) == expected


def test_nearest_psd_of_one_component_is_the_dense_projection():
    # The paper-scale case: one component, projected in the result's own memory.
    counts, _ = similarity_problem(0, 400)
    symmetric = ((counts + counts.T) / 2).toarray()
    assert number_of_components(symmetric) == 1
    projected = nearest_psd(sp.csr_matrix(symmetric))
    np.testing.assert_allclose(projected.matrix, dense_projection(symmetric), atol=1e-10)
    assert np.array_equal(projected.matrix, projected.matrix.T)
    assert projected.largest_eigenvalue == pytest.approx(np.linalg.eigvalsh(symmetric)[-1], rel=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nearest_psd_on_cuda_gives_the_cpu_projection_and_the_same_certified_picks():
    counts, d = similarity_problem(1, 1000)
    on_cpu, on_gpu = (nearest_psd((counts + counts.T) / 2, device=device) for device in ("cpu", "cuda"))
    np.testing.assert_allclose(on_gpu.matrix, on_cpu.matrix, atol=1e-10)
    solutions = [solve_selection_qp(p.matrix, d, 200, 1.0, largest_eigenvalue=p.largest_eigenvalue)
                 for p in (on_cpu, on_gpu)]
    assert [s.route for s in solutions] == ["certified", "certified"]
    assert top(solutions[0].x, 200) == top(solutions[1].x, 200)


# ---------------------------------------------------------------------------- QP

def similarity_problem(seed, n, n_models=3, dim=8, n_clusters=0, tied_scores=False):
    """k-NN counts (k = max(2, n // 100)) of features shaped like the benchmark's (a shared
    standard-normal part plus half of each model's own, so the models' neighbours overlap),
    optionally in well separated clusters; and scores d in 0..T, or all equal."""
    rng = np.random.default_rng([seed, n])
    shared = rng.normal(size=(n, dim))
    if n_clusters:
        shared += 10.0 * rng.normal(size=(n_clusters, dim))[rng.integers(0, n_clusters, n)]
    features = (shared + 0.5 * rng.normal(size=(n_models, n, dim))).astype(np.float32)
    counts = knn_cooccurrence(features, max(2, n // 100))
    scores = np.full(n, float(n_models)) if tied_scores else rng.integers(0, n_models + 1, n).astype(float)
    return counts, scores


def top(x, total):
    return set(np.argsort(-x, kind="stable")[:total].tolist())


def dense_reference_qp_picks(counts, scores, total, q):
    """The authors' route from the counts on: a dense eigendecomposition of the whole matrix,
    OSQP on the dense projection."""
    n = len(scores)
    projected = dense_projection(((counts + counts.T) / 2).toarray())
    x = qpsolvers.solve_qp(sp.csc_matrix(np.triu((projected + projected.T) / 2)), -q * scores,
                           A=sp.csc_matrix(np.ones((1, n))), b=np.array([float(total)]),
                           lb=np.zeros(n), ub=np.ones(n), solver="osqp", eps_abs=1e-10, eps_rel=1e-10,
                           max_iter=1_000_000, polishing=False, raise_error=True)
    return top(x, total)


# (seed, n, q, B, variant): 24 instances. Seeds x q at n = 300 and 1,000, one at 3,000 (its
# two OSQP solves take ~10 s each); the degenerate ones: every score equal (d ties
# everywhere: the QP is diversity alone), B close to n, separated clusters (several
# components); the others are one component, as at paper scale.
QP_INSTANCES = (
    [(seed, 300, q, 60, "one component") for seed in range(3) for q in (0.2, 1.0, 5.0)]
    + [(seed, 1000, q, 200, "one component") for seed in range(2) for q in (0.5, 2.0)]
    + [(0, 3000, 1.0, 1500, "one component")]
    + [(seed, 300, 1.0, 60, "tied scores") for seed in range(2)]
    + [(seed, 300, q, 290, "B close to n") for seed in range(2) for q in (0.2, 1.0)]
    + [(0, 300, 1.0, 299, "B close to n")]
    + [(seed, 400, 1.0, 80, "clusters") for seed in range(3)]
)


@pytest.mark.parametrize("seed,n,q,total,variant", QP_INSTANCES)
def test_certified_route_picks_what_osqp_and_the_dense_reference_pick(seed, n, q, total, variant):
    counts, scores = similarity_problem(seed, n, n_clusters=6 if variant == "clusters" else 0,
                                        tied_scores=variant == "tied scores")
    components = number_of_components(counts.toarray())
    assert components > 1 if variant == "clusters" else components == 1
    projected = nearest_psd((counts + counts.T) / 2)
    certified = solve_selection_qp(projected.matrix, scores, total, q,
                                   largest_eigenvalue=projected.largest_eigenvalue)
    assert certified.route == "certified", certified.detail
    by_osqp = solve_selection_qp(projected.matrix, scores, total, q, method="osqp")
    assert by_osqp.route == "OSQP"
    assert top(certified.x, total) == top(by_osqp.x, total) == dense_reference_qp_picks(counts, scores, total, q)
    np.testing.assert_allclose(certified.x, by_osqp.x, atol=1e-6)


def test_when_the_certificate_fails_osqp_answers_with_the_same_picks():
    counts, scores = similarity_problem(0, 1000)
    projected = nearest_psd((counts + counts.T) / 2)
    certified = solve_selection_qp(projected.matrix, scores, 200, 1.0)
    # No margin can exceed 1 (x lies in [0, 1]), so the certificate fails on every try.
    fallback = solve_selection_qp(projected.matrix, scores, 200, 1.0, certificate_margin=1.0)
    assert certified.route == "certified" and fallback.route == "OSQP"
    assert fallback.detail.startswith("the certificate failed")
    assert f"after {DIAM_QP_WARM_START_STEPS[-1]} warm-start steps" in fallback.detail  # every try made
    assert top(fallback.x, 200) == top(certified.x, 200)


def test_duplicated_examples_are_not_certified_and_osqp_answers():
    # Example 1 duplicates example 0 (the same row of S, the same score), so at the optimum
    # only x0 + x1 is determined: the free block is singular, no certificate is possible.
    rng = np.random.default_rng(0)
    n, total, q = 60, 12, 1.5
    factor = rng.normal(size=(n, 80))
    scores = rng.integers(0, 4, size=n).astype(float)
    factor[1], scores[1] = factor[0], scores[0]
    similarity = factor @ factor.T
    solution = solve_selection_qp(similarity, scores, total, q)
    assert solution.route == "OSQP" and "singular" in solution.detail, solution.detail
    x = solution.x
    assert abs(x.sum() - total) < 1e-6
    assert np.all(x > -1e-7) and np.all(x < 1 + 1e-7)
    # KKT: with g = S x - q d and mu the equality's multiplier, g + mu = 0 where
    # 0 < x < 1, >= 0 where x = 0, <= 0 where x = 1.
    gradient = similarity @ x - q * scores
    free = (x > 1e-4) & (x < 1 - 1e-4)
    assert free[0] and free[1]
    mu = -np.median(gradient[free])
    np.testing.assert_allclose(gradient[free] + mu, 0, atol=1e-5)
    assert np.all(gradient[x <= 1e-4] + mu > -1e-5)
    assert np.all(gradient[x >= 1 - 1e-4] + mu < 1e-5)


def test_osqp_is_called_as_its_next_version_expects_and_a_failed_solve_raises():
    counts, scores = similarity_problem(2, 300)
    projected = nearest_psd((counts + counts.T) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PendingDeprecationWarning)  # raise_error's default is changing
        solve_selection_qp(projected.matrix, scores, 60, 1.0, method="osqp")
    with pytest.raises(RuntimeError, match="OSQP stopped without a solution .status OSQP_MAX_ITER_REACHED"):
        solve_selection_qp(projected.matrix, scores, 60, 1.0, method="osqp", osqp_max_iterations=2)


def test_the_route_that_answered_is_logged(caplog):
    labels, features = random_problem(13)
    with caplog.at_level(logging.INFO, logger="diam.strategies"):
        diam_qp(labels, features, 30, np.random.default_rng(0))
        diam_qp(labels, features, 30, np.random.default_rng(0), qp_method="osqp")
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "DIAM_qp's QP (n = 200) answered by the certified route",
        "DIAM_qp's QP (n = 200) answered by the OSQP route"]


# ------------------------------------------------------------------------ refusals

def test_mismatched_or_bad_inputs_are_value_errors():
    labels, features = random_problem(10, n_unlabeled=500)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="model_features must have shape"):
        diam_qp(labels, features[:2], 10, rng)  # 2 feature sets for 3 models' snapshots
    with pytest.raises(ValueError, match="model_features must have shape"):
        diam_qp(labels, features[:, :499], 10, rng)  # another pool size
    with pytest.raises(ValueError, match="model_features must have shape"):
        diam_qp(labels, features[0], 10, rng)
    with pytest.raises(ValueError, match="q must be finite"):
        diam_qp(labels, features, 10, rng, q=-1.0)
    with pytest.raises(ValueError, match="snapshot_labels"):
        diam_qp(labels.astype(float), features, 10, rng)
    broken = features.copy()
    top = int(np.argmax(disagreement_count(labels)))  # inside the subsample
    broken[1, top, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        diam_qp(labels, broken, 10, rng)


def test_helpers_refuse_what_has_no_answer():
    with pytest.raises(ValueError, match="cannot choose 11 of 10"):
        solve_selection_qp(np.eye(10), np.ones(10), 11, 1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        solve_selection_qp(np.eye(10), np.ones(10), 2, 1.0, method="cvxopt")
    with pytest.raises(ValueError, match="n_neighbours"):
        knn_cooccurrence(np.zeros((1, 5, 2)), 6)
    with pytest.raises(ValueError, match="symmetric"):
        nearest_psd(sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 1.0]])))


def test_small_pool_takes_the_subsample_grown_to_the_batch():
    # U // 5 = 4 < B = 6: the subsample grows to 6 examples of largest d, all taken.
    labels, features = random_problem(11, n_unlabeled=20)
    d = disagreement_count(labels)
    picks = diam_qp(labels, features, 6, np.random.default_rng(0))
    sixth_largest = np.sort(d)[::-1][5]
    assert len(set(picks.tolist())) == 6 and np.all(d[picks] >= sixth_largest)
    assert set(np.flatnonzero(d > sixth_largest)) <= set(picks.tolist())


def test_ties_in_d_at_the_subsample_cut_follow_the_rng():
    # Every example has d = 0: the subsample (n = 100 of 500) is decided by ties alone.
    labels = np.zeros((2, 3, 500), dtype=np.int64)
    features = np.random.default_rng(12).normal(size=(2, 500, 4)).astype(np.float32)
    batches = {tuple(sorted(diam_qp(labels, features, 10, np.random.default_rng(seed)).tolist()))
               for seed in range(4)}
    assert len(batches) > 1


# ------------------------------------------------------------- command-line wiring

def test_diamq_reaches_the_strategy_options(tmp_path):
    args = cli.parser("test").parse_args(["--dataset", "digits", "--method", "DIAM_qp", "--al_iter", "0",
                                          "--model_num", "2", "--preset", "quick",
                                          "--work_dir", str(tmp_path), "--device", "cpu"])
    assert selection_options(Run(settings_from_args(args))).diam_q == 1.0  # the preset's default
    args.DIAMq = 2.5
    assert selection_options(Run(settings_from_args(args))).diam_q == 2.5


def test_negative_diamq_is_refused_on_the_command_line(tmp_path):
    result = run_script("al_select.py", "--dataset", "digits", "--method", "DIAM_qp", "--al_iter", 0,
                        "--model_num", 2, "--preset", "quick", "--DIAMq", "-1", cwd=tmp_path)
    assert result.returncode == 2 and "--DIAMq must be a finite number >= 0" in result.stderr
    assert not (tmp_path / "runs").exists()
