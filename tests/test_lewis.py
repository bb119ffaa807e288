"""Lewis-weight sampling (Huang, Li, Sun and Tang, ICLR 2024; docs/lewis.md): the weights against
direct computations, the maximum across representations, the sampling and its weights, and the
wiring through al_select.py and iter_all.sh of its two uses (per iteration, and one-shot)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import PROJECT, linked_copy, run_script, run_script_here
from diam import cli
from diam.data import load_dataset
from diam.experiment import importance_loss_weights
from diam.run import Run
from diam.selection_inputs import initial_features, selection_options, selection_rng
from diam.labels import read_rows
from diam.lewis import (draw_with_replacement, inclusion_probabilities, lewis_weights, maximum_lewis_weights,
                        sample_with_probabilities, sampling_distribution, with_bias_column, with_replacement_sample)
from diam.paths import RunPaths, read_indices, write_json
from diam.presets import PRESETS
from diam.settings import settings_from_args
from diam.methods import METHODS
from diam.strategies import WeightedBatch, lewis_sampling
from diam.training import Record, train_linear_head, training_step
from png_datasets import write_png_dataset


def random_matrix(seed, n_rows=120, dim=5, rank=None):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n_rows, dim)) * rng.uniform(0.2, 3.0, size=(n_rows, 1))  # rows of unequal norm
    if rank is not None:  # the last columns are combinations of the first `rank`
        matrix[:, rank:] = matrix[:, :rank] @ rng.normal(size=(rank, dim - rank))
    return matrix


# ------------------------------------------------------------------ the weights

@pytest.mark.parametrize("n_rows,rank", [(120, None), (120, 3), (6, 3), (4, None)])  # tall and wide
def test_p2_lewis_weights_are_the_diagonal_of_the_hat_matrix(n_rows, rank):
    matrix = random_matrix(0, n_rows=n_rows, rank=rank)
    hat = matrix @ np.linalg.pinv(matrix)  # the projection onto A's column space
    np.testing.assert_allclose(lewis_weights(matrix, 2.0), np.diag(hat), atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0, 3.5])
def test_other_p_lewis_weights_satisfy_their_fixed_point(p):
    matrix = random_matrix(1)
    weights = lewis_weights(matrix, p)
    # w_i = (a_i^T (A^T W^(1-2/p) A)^(-1) a_i)^(p/2), computed directly from the returned w.
    inverse = np.linalg.inv(matrix.T @ (matrix * weights[:, None] ** (1 - 2 / p)))
    direct = np.einsum("ij,jk,ik->i", matrix, inverse, matrix) ** (p / 2)
    np.testing.assert_allclose(weights, direct, rtol=1e-9)
    assert not np.allclose(weights, lewis_weights(matrix, 2.0), rtol=1e-3)  # p matters


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_lewis_weights_sum_to_the_rank_and_lie_in_zero_one(p):
    matrix = random_matrix(2, n_rows=80, dim=7, rank=4)
    matrix[[5, 40]] = 0.0  # zero rows carry no weight
    weights = lewis_weights(matrix, p)
    assert weights.sum() == pytest.approx(4.0, abs=1e-8)
    assert weights[5] == 0.0 and weights[40] == 0.0
    assert np.all(weights >= 0) and np.all(weights <= 1 + 1e-12)


def test_a_rank_k_principal_part_gives_the_leverage_scores_of_the_best_rank_k_approximation():
    matrix = random_matrix(9, n_rows=60, dim=8)
    left, _, _ = np.linalg.svd(matrix, full_matrices=False)
    for k in (1, 3, 5):
        weights = lewis_weights(matrix, 2.0, rank=k)
        np.testing.assert_allclose(weights, (left[:, :k] ** 2).sum(axis=1), atol=1e-12)
        assert lewis_weights(matrix, 1.0, rank=k).sum() == pytest.approx(k, abs=1e-8)
    wide = random_matrix(10, n_rows=6, dim=9)  # as many dimensions as rows, or more: nothing to choose
    np.testing.assert_allclose(lewis_weights(wide, 2.0), 1.0)
    wide_left, _, _ = np.linalg.svd(wide, full_matrices=False)
    np.testing.assert_allclose(lewis_weights(wide, 2.0, rank=2), (wide_left[:, :2] ** 2).sum(axis=1), atol=1e-12)
    np.testing.assert_array_equal(lewis_weights(matrix, 2.0, rank=8), lewis_weights(matrix, 2.0))  # nothing cut


def test_a_row_alone_in_its_direction_has_weight_one():
    matrix = random_matrix(3, n_rows=50, dim=4)
    matrix[:, 3] = 0.0
    matrix[17, 3] = 0.01  # the only row with a component along the 4th axis, however small
    for p in (1.0, 2.0, 3.0):
        assert lewis_weights(matrix, p)[17] == pytest.approx(1.0, abs=1e-9)


def test_p_outside_the_converging_range_is_refused():
    for p in (0.5, 4.0, 6.0):
        with pytest.raises(ValueError, match=r"p must be in \[1, 4\)"):
            lewis_weights(random_matrix(4), p)
    with pytest.raises(ValueError, match="NaN"):
        lewis_weights(np.full((5, 2), np.nan), 2.0)


def test_the_maximum_is_taken_over_representations_each_with_a_bias_column():
    rng = np.random.default_rng(5)
    representations = rng.normal(size=(3, 90, 4)).astype(np.float16)  # as training stores features
    for p in (2.0, 1.0):
        each = np.stack([lewis_weights(with_bias_column(r), p) for r in representations])
        np.testing.assert_array_equal(maximum_lewis_weights(representations, p), each.max(axis=0))
        assert (each.argmax(axis=0)[:, None] == np.arange(3)).any(axis=0).all()  # every one is the max somewhere
    # The bias column makes the weights blind to where the features' origin lies.
    shifted = representations.astype(np.float64) + 7.5
    np.testing.assert_allclose(maximum_lewis_weights(shifted), maximum_lewis_weights(representations), atol=1e-9)


# ------------------------------------------------------------------ the sampling

def test_inclusion_probabilities_are_capped_proportional_and_sum_to_the_sample():
    weights = np.array([5.0, 0.2, 0.1, 0.4, 3.0, 0.3, 0.0, 0.2])
    probabilities = inclusion_probabilities(weights, 3)
    assert probabilities.sum() == pytest.approx(3.0)
    assert probabilities[0] == 1.0 and probabilities[4] == 1.0  # beta * w > 1: capped
    uncapped = [1, 2, 3, 5, 7]
    np.testing.assert_allclose(probabilities[uncapped] / weights[uncapped], 1.0 / 1.2)  # one beta for the rest
    assert probabilities[6] == 0.0
    # Fewer positive rows than the sample: all of them, and the rest spread over the zero rows.
    np.testing.assert_allclose(inclusion_probabilities(np.array([0.5, 0.0, 0.0, 0.2]), 3), [1, 0.5, 0.5, 1])
    with pytest.raises(ValueError, match="cannot sample 5 of 4"):
        inclusion_probabilities(np.ones(4), 5)


def test_sampling_takes_each_row_with_its_probability_exactly_the_sample_size_and_no_row_twice():
    rng = np.random.default_rng(6)
    probabilities = inclusion_probabilities(rng.exponential(size=40) ** 2, 12)
    assert (probabilities == 1.0).any()
    counts = np.zeros(40)
    n_draws = 6000
    for seed in range(n_draws):
        sample = sample_with_probabilities(probabilities, np.random.default_rng(seed))
        assert len(sample) == 12 and len(set(sample.tolist())) == 12
        counts[sample] += 1
    assert np.all(counts[probabilities == 1.0] == n_draws)
    # Each frequency within 5 standard errors of its probability.
    error = np.sqrt(probabilities * (1 - probabilities) / n_draws)
    assert np.all(np.abs(counts / n_draws - probabilities) <= 5 * error + 1e-12)


# ------------------------------------------------- the paper's sampler (with replacement)

def test_the_papers_sampler_draws_with_replacement_until_the_budgets_distinct_rows():
    distribution = sampling_distribution([50.0] + [1.0] * 99)  # row 0 holds a third of the mass
    draws = draw_with_replacement(distribution, 20, np.random.default_rng(3))
    rows, counts = np.unique(draws, return_counts=True)
    assert len(rows) == 20 and draws[-1] not in draws[:-1]  # it stops at the 20th new row
    assert counts[rows == 0][0] > 1  # drawn again and again: with replacement
    picks, weights = with_replacement_sample(draws, distribution, 20)
    first_seen = [int(row) for i, row in enumerate(draws) if row not in draws[:i]]
    np.testing.assert_array_equal(picks, first_seen)  # in the order they came
    # The paper's rescaling (m q_i)^(-1/p) of each draw weighs it 1 / (m q_i) in an lp loss.
    m = len(draws)
    np.testing.assert_allclose(weights, [np.sum(draws == row) / (m * distribution[row]) for row in picks])
    # A prefix of the draws is the sample a smaller budget draws from the same seed.
    smaller = draw_with_replacement(distribution, 8, np.random.default_rng(3))
    np.testing.assert_array_equal(smaller, draws[:len(smaller)])
    np.testing.assert_array_equal(with_replacement_sample(draws, distribution, 8)[0], picks[:8])


def test_the_papers_weights_sum_to_the_number_of_rows():
    # Equal probabilities: every draw weighs n / m, so the weights sum to n exactly.
    uniform = sampling_distribution(np.ones(60))
    _, weights = with_replacement_sample(draw_with_replacement(uniform, 25, np.random.default_rng(0)), uniform, 25)
    assert weights.sum() == pytest.approx(60.0)
    # Unequal ones: the sum estimates n, the sampled loss the whole pool's.
    skewed = sampling_distribution(np.random.default_rng(1).uniform(0.05, 1.0, size=200) ** 3)
    sums = [with_replacement_sample(draw_with_replacement(skewed, 40, np.random.default_rng(seed)), skewed, 40)[1].sum()
            for seed in range(3000)]
    assert np.mean(sums) == pytest.approx(200.0, rel=0.03) and np.std(sums) > 1.0


def test_lewis_sampling_with_replacement_is_the_paper_sampler_on_the_maximum_weights():
    features = np.random.default_rng(7).normal(size=(2, 300, 6))
    picked = lewis_sampling(features, 25, np.random.default_rng(11), sampler="with_replacement")
    weights = maximum_lewis_weights(features)
    distribution = sampling_distribution(weights)
    draws = draw_with_replacement(distribution, 25, np.random.default_rng(11))
    positions, importance = with_replacement_sample(draws, distribution, 25)
    np.testing.assert_array_equal(picked.positions, positions)
    np.testing.assert_array_equal(picked.importance_weights, importance)
    np.testing.assert_array_equal(picked.draws, draws)
    assert picked.sampler == "with_replacement" and len(set(picked.positions.tolist())) == 25
    np.testing.assert_allclose(picked.prefix_weights(10), with_replacement_sample(draws, distribution, 10)[1])
    with pytest.raises(ValueError, match="sampler must be one of"):
        lewis_sampling(features, 5, np.random.default_rng(0), sampler="bernoulli")
    with pytest.raises(ValueError, match="cannot draw 3 distinct rows"):
        draw_with_replacement(sampling_distribution([1.0, 1.0, 0.0]), 3, np.random.default_rng(0))


def test_a_weighted_training_step_weighs_each_examples_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    preset = PRESETS["quick"]
    device = torch.device("cpu")
    x = torch.randn(4, 3)

    def after_one_step(labels, weights):
        copy = __import__("copy").deepcopy(net)
        step = training_step(copy, preset, 1, __import__("diam.speed", fromlist=["Speed"]).Speed(), device,
                             weighted=True)
        step(x, torch.tensor(labels), torch.tensor(weights))
        return torch.cat([p.detach().flatten() for p in copy.parameters()])

    # An example of weight 0 does not count, whatever its label; with weight 1 its label counts.
    ignored = after_one_step([0, 1, 1, 0], [2.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(ignored, after_one_step([0, 1, 1, 1], [2.0, 1.0, 1.0, 0.0]), rtol=0, atol=0)
    assert not torch.equal(after_one_step([0, 1, 1, 0], [1.0, 1.0, 1.0, 1.0]),
                           after_one_step([0, 1, 1, 1], [1.0, 1.0, 1.0, 1.0]))


def test_sampling_and_weights_are_reproducible_from_the_seed():
    features = np.random.default_rng(7).normal(size=(2, 300, 6)).astype(np.float16)
    first = lewis_sampling(features, 25, np.random.default_rng(11))
    again = lewis_sampling(features, 25, np.random.default_rng(11))
    other = lewis_sampling(features, 25, np.random.default_rng(12))
    assert isinstance(first, WeightedBatch) and len(first.positions) == 25
    np.testing.assert_array_equal(first.positions, again.positions)
    np.testing.assert_array_equal(first.importance_weights, again.importance_weights)
    assert set(first.positions.tolist()) != set(other.positions.tolist())
    # The weight of a pick is 1 / its inclusion probability; its Lewis weight is the maximum's (over
    # each model's top-25 principal part: all of it, the rank being 7).
    weights = maximum_lewis_weights(features, rank=25)
    np.testing.assert_array_equal(weights, maximum_lewis_weights(features))
    probabilities = inclusion_probabilities(weights, 25)
    np.testing.assert_allclose(first.importance_weights, 1.0 / probabilities[first.positions])
    np.testing.assert_array_equal(first.lewis_weights, weights[first.positions])
    assert first.lewis_weight_sum == pytest.approx(weights.sum())


def test_a_batch_smaller_than_the_rank_samples_by_each_models_top_b_principal_part():
    features = np.random.default_rng(13).normal(size=(2, 150, 40)) * np.geomspace(10, 0.01, 40)
    picked = lewis_sampling(features, 8, np.random.default_rng(0))
    truncated = maximum_lewis_weights(features, rank=8)
    np.testing.assert_array_equal(picked.lewis_weights, truncated[picked.positions])
    assert truncated.sum() <= 2 * 8 + 1e-9 and not np.allclose(truncated, maximum_lewis_weights(features))


def test_an_example_that_only_one_model_sets_apart_is_always_picked():
    rng = np.random.default_rng(8)
    features = rng.normal(size=(2, 400, 3))
    features[1, 123] = [40.0, -40.0, 40.0]  # an outlier in model 1's representation only
    single = lewis_weights(with_bias_column(features[0]), 2.0)[123]
    assert single < 0.05  # model 0 alone would rarely pick it
    for seed in range(5):
        assert 123 in lewis_sampling(features, 10, np.random.default_rng(seed)).positions


def test_registry_and_bad_shapes():
    assert METHODS["lewis"].reads == METHODS["lewis_oneshot"].reads == ("model_features",)
    assert METHODS["lewis_oneshot"].one_shot and not METHODS["lewis"].one_shot
    with pytest.raises(ValueError, match="model_features must have shape"):
        lewis_sampling(np.zeros((10, 3)), 2, np.random.default_rng(0))


# ------------------------------------------------------------------ wiring through the scripts

TINY = ["--pool_size", "400", "--test_size", "50", "--initial_labeled", "60", "--query_batch", "10",
        "--epochs", "3", "--train_batch", "10", "--image_size", "32"]
T = 2
POOL = 400


@pytest.fixture(scope="module")
def tiny_iteration(tmp_path_factory):
    """Iteration 0 of nets 0 and 1 trained once at a tiny size on digits."""
    home = tmp_path_factory.mktemp("lewis_tiny")
    result = run_script("train_net.py", "--net_id", 0, 1, "--dataset", "digits", "--al_iter", 0, "--model_num", T,
                        "--preset", "quick", *TINY, "--work_dir", home / "runs", "--device", "cpu", cwd=home)
    assert result.returncode == 0, result.stderr
    return home / "runs"


@pytest.fixture
def tiny_runs(tiny_iteration, tmp_path):
    return linked_copy(tiny_iteration, tmp_path / "runs")


def tiny_args(runs, *extra):
    return ["--dataset", "digits", "--model_num", T, "--preset", "quick", *TINY, "--work_dir", runs,
            "--device", "cpu", *map(str, extra)]


def recorded_features(paths, unlabeled):
    """(T, U, dim): the nets' penultimate features of the unlabeled pool, as the selection kept them."""
    stacked = []
    for net_id in range(T):
        with np.load(paths.pool_predictions(T, "lewis", 0, net_id)) as z:
            stacked.append(z["pool_features"][unlabeled])
    return np.stack(stacked)


def the_run(args) -> Run:
    return Run(settings_from_args(cli.select_args(list(map(str, args)))))


def test_al_select_help_lists_both_uses(tmp_path):
    result = run_script("al_select.py", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "lewis, lewis_oneshot" in result.stdout and "--lewis_p" in result.stdout


def test_per_iteration_lewis_writes_the_batch_and_weights_the_pure_function_gives(tiny_runs):
    paths = RunPaths(tiny_runs, "quick", "digits")
    args = tiny_args(tiny_runs, "--method", "lewis", "--al_iter", 0)
    result = run_script_here("al_select.py", *args)
    assert result.returncode == 0, result.stderr
    assert "sum of maximum Lewis weights" in result.stdout
    labeled, unlabeled = read_indices(paths.indices(T, "lewis", 0), "digits", POOL)
    expected = lewis_sampling(recorded_features(paths, unlabeled), 10, selection_rng(the_run(args)))
    new_labeled, new_unlabeled = read_indices(paths.indices(T, "lewis", 1), "digits", POOL)
    np.testing.assert_array_equal(new_labeled, np.concatenate([labeled, unlabeled[expected.positions]]))
    np.testing.assert_array_equal(new_unlabeled, np.delete(unlabeled, expected.positions))
    with np.load(paths.importance_weights(T, "lewis", 1)) as z:
        np.testing.assert_array_equal(z["selected"], unlabeled[expected.positions])
        np.testing.assert_array_equal(z["importance_weights"], expected.importance_weights)
        assert float(z["lewis_p"]) == 2.0 and str(z["representation"]) == "trained"
    # Iteration 1's nets record every net's features of the pool for the next selection.
    assert run_script_here("train_net.py", *tiny_args(tiny_runs, "--method", "lewis", "--al_iter", 1, "--net_id", 1)) \
        .returncode == 0
    with np.load(paths.pool_predictions(T, "lewis", 1, 1)) as z:
        assert z["pool_features"].shape[0] == POOL and np.array_equal(z["unlabeled"], new_unlabeled)


def test_lewis_p_reaches_the_strategy_and_a_bad_one_is_refused(tiny_runs, tmp_path):
    args = tiny_args(tiny_runs, "--method", "lewis", "--al_iter", 0, "--lewis_p", 1)
    assert selection_options(the_run(args)).lewis_p == 1.0
    assert run_script_here("al_select.py", *args).returncode == 0
    paths = RunPaths(tiny_runs, "quick", "digits")
    labeled, unlabeled = read_indices(paths.indices(T, "lewis", 0), "digits", POOL)
    expected = lewis_sampling(recorded_features(paths, unlabeled), 10, selection_rng(the_run(args)), p=1.0)
    with np.load(paths.importance_weights(T, "lewis", 1)) as z:
        np.testing.assert_array_equal(z["selected"], unlabeled[expected.positions])
    result = run_script("al_select.py", *tiny_args(tmp_path / "fresh", "--method", "lewis", "--al_iter", 0,
                                                   "--lewis_p", 4), cwd=tmp_path)
    assert result.returncode == 2 and "--lewis_p must be in [1, 4)" in result.stderr
    assert not (tmp_path / "fresh").exists()


def test_one_shot_writes_every_later_iteration_as_nested_prefixes_of_one_draw(tiny_runs):
    paths = RunPaths(tiny_runs, "quick", "digits")
    args = tiny_args(tiny_runs, "--method", "lewis_oneshot", "--al_iter", 0)
    result = run_script_here("al_select.py", *args)
    assert result.returncode == 0, result.stderr
    labeled, unlabeled = read_indices(paths.indices(T, "lewis_oneshot", 0), "digits", POOL)
    # quick: al_iters = 4, so three selections of 10: 30 picks at once from iteration 0's nets, by the
    # paper's sampler (lewis_oneshot's default): each prefix is the paper's sample of its own size.
    features = recorded_features(paths, unlabeled)
    whole = lewis_sampling(features, 30, selection_rng(the_run(args)), sampler="with_replacement")
    for k in (1, 2, 3):
        new_labeled, new_unlabeled = read_indices(paths.indices(T, "lewis_oneshot", k), "digits", POOL)
        prefix = whole.positions[:10 * k]
        np.testing.assert_array_equal(new_labeled, np.concatenate([labeled, unlabeled[prefix]]))
        assert len(new_unlabeled) == len(unlabeled) - 10 * k
        # The draws up to the (10 k)-th new example, weighed as the paper's sample of that size (from the
        # whole budget's Lewis weights).
        positions, weights = with_replacement_sample(whole.draws, whole.distribution, 10 * k)
        np.testing.assert_array_equal(positions, prefix)
        with np.load(paths.importance_weights(T, "lewis_oneshot", k)) as z:
            np.testing.assert_array_equal(z["selected"], unlabeled[prefix])
            np.testing.assert_allclose(z["importance_weights"], weights)
            assert str(z["sampler"]) == "with_replacement"
    # The project's sampler on request: a prefix is a uniformly random 10k of the 30 picks, with
    # probability pi * 10k / 30.
    systematic = the_run([*args, "--lewis_sampler", "systematic"])
    assert selection_options(systematic).lewis_sampler == "systematic"
    ours = lewis_sampling(features, 30, selection_rng(systematic), sampler="systematic")
    np.testing.assert_allclose(ours.prefix_weights(20), ours.importance_weights[:20] * 30 / 20)
    # Later iterations find their selection done; a lost file is redrawn identically.
    later = run_script_here("al_select.py", *tiny_args(tiny_runs, "--method", "lewis_oneshot", "--al_iter", 1))
    assert later.returncode == 0 and "already done" in later.stdout
    third = paths.indices(T, "lewis_oneshot", 3)
    before = third.read_bytes()
    third.unlink()
    second = paths.indices(T, "lewis_oneshot", 2).read_bytes()
    assert run_script_here("al_select.py", *tiny_args(tiny_runs, "--method", "lewis_oneshot", "--al_iter", 2)) \
        .returncode == 0
    assert third.read_bytes() == before and paths.indices(T, "lewis_oneshot", 2).read_bytes() == second


def test_initial_representation_reads_the_nets_before_training(tiny_runs):
    args = tiny_args(tiny_runs, "--method", "lewis", "--al_iter", 0, "--lewis_representation", "initial")
    run = the_run(args)
    paths = RunPaths(tiny_runs, "quick", "digits")
    _, unlabeled = read_indices(paths.indices(T, "lewis", 0), "digits", POOL)
    initial = np.stack([initial_features(run, n, unlabeled) for n in range(T)])
    np.testing.assert_array_equal(initial[0], initial_features(run, 0, unlabeled))  # the same weights each time
    # Untrained nets with BatchNorm's initial statistics map every image to ~0; with the pool's,
    # the features vary from example to example.
    assert np.all(initial.astype(np.float64).std(axis=1).max(axis=1) > 0.1)
    assert run_script_here("al_select.py", *args).returncode == 0
    expected = lewis_sampling(initial, 10, selection_rng(run))
    with np.load(paths.importance_weights(T, "lewis", 1)) as z:
        np.testing.assert_array_equal(z["selected"], unlabeled[expected.positions])
        assert str(z["representation"]) == "initial"
    with np.load(paths.pool_predictions(T, "lewis", 0, 0)) as z:  # net 0 after training, as training recorded it
        assert np.abs(initial[0].astype(np.float64) - z["pool_features"][unlabeled]).max() > 0.1


def test_iter_all_runs_one_shot_through_every_iteration(tmp_path):
    loop = ["--al_iters", "3", "--pool_size", "200", "--test_size", "50", "--initial_labeled", "40",
            "--query_batch", "10", "--epochs", "2", "--train_batch", "20", "--image_size", "32"]
    result = subprocess.run(
        ["bash", str(PROJECT / "iter_all.sh"), "cpu", str(T)], cwd=tmp_path, capture_output=True, text=True,
        timeout=900, env={**os.environ, "PYTHON": sys.executable, "PRESET": "quick", "DATASETS": "digits",
                          "METHODS": "lewis_oneshot", "DIAM_WORK_DIR": str(tmp_path / "runs"),
                          "EXTRA_ARGS": " ".join(loop)})
    assert result.returncode == 0, result.stderr
    results = tmp_path / "runs" / "quick" / "extracted_results" / str(T) / "digits" / "lewis_oneshot"
    for al_iter in range(3):
        assert np.loadtxt(results / str(al_iter) / "performances.txt").shape == (T, 2)
    # The one-shot selection ran once, at al_iter 0; al_iter 1's found its file written, and
    # iteration 2's nets trained on the second prefix.
    assert result.stdout.count("lewis_oneshot selected 20 of 160 unlabeled at once") == 1
    paths = RunPaths(tmp_path / "runs", "quick", "digits")
    assert f"already done: {paths.indices(T, 'lewis_oneshot', 2)}" in result.stdout
    assert "net 1 trained on 60 labeled examples" in result.stdout


def test_a_wrong_lewis_representation_is_refused(tmp_path):
    result = run_script("al_select.py", "--dataset", "digits", "--method", "lewis", "--al_iter", 0, "--model_num", 2,
                        "--preset", "quick", "--lewis_representation", "pretrained", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'pretrained'" in result.stderr


# ------------------------------------------------------------------ linear heads on frozen backbones

def test_a_linear_head_follows_the_loss_weights():
    # Six labeled examples share one feature vector, three of class 0 and three of class 1: the
    # head's prediction there is the class whose examples weigh more.
    features = torch.ones(8, 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    labeled, unlabeled = torch.arange(6), torch.tensor([6, 7])
    preset = dataclasses.replace(PRESETS["quick"], lr=0.5, train_batch=3)
    record = Record(snapshots=True, probs=True, features=True)
    for heavy_class in (0, 1):
        weights = torch.where(labels[:6] == heavy_class, 5.0, 1.0)
        torch.manual_seed(0)
        head = torch.nn.Linear(4, 2)
        out = train_linear_head(head, features, labels, labeled, unlabeled, weights / weights.mean(), preset, record,
                                stream=3)
        assert out.unlabeled_probs.shape == (2, 2) and out.unlabeled_probs[0].argmax() == heavy_class
        assert out.snapshot_labels.shape == (preset.snapshot_epochs, 2) and out.pool_features.shape == (8, 4)


def test_linear_heads_retrain_the_classifier_alone_with_the_one_shot_importance_weights(tiny_runs):
    paths = RunPaths(tiny_runs, "quick", "digits")
    args = tiny_args(tiny_runs, "--method", "lewis_oneshot", "--al_iter", 0, "--linear_heads")
    # As if iteration 0 had been trained with the flag (it trains the same way).
    write_json(paths.config_file, {**json.loads(paths.config_file.read_text()), "linear_heads": True})
    assert the_run(args).settings.run_config()["linear_heads"] is True
    assert run_script_here("al_select.py", *args).returncode == 0
    train = tiny_args(tiny_runs, "--method", "lewis_oneshot", "--al_iter", 1, "--net_id", 0, "--linear_heads")
    result = run_script_here("train_net.py", *train)
    assert result.returncode == 0, result.stderr
    trained = torch.load(paths.checkpoint(T, "lewis_oneshot", 1, 0), weights_only=True)
    start = torch.load(paths.checkpoint(T, "lewis_oneshot", 0, 0), weights_only=True)["state_dict"]
    assert trained["info"]["trained"] == "classifier only, on the frozen backbone of iteration 0"
    for name, tensor in trained["state_dict"].items():
        if name.startswith("classifier."):
            assert not torch.equal(tensor, start[name])
        else:
            assert torch.equal(tensor, start[name]), name
    # The loss weights: 1 for the initial labels, the recorded importance weights for the picks, mean 1.
    at_one = Run(settings_from_args(cli.train_args(list(map(str, train)))))
    labeled, _ = read_indices(paths.indices(T, "lewis_oneshot", 1), "digits", POOL)
    weights = importance_loss_weights(at_one, labeled)
    with np.load(paths.importance_weights(T, "lewis_oneshot", 1)) as z:
        importance = z["importance_weights"]
    n_initial = len(labeled) - 10
    assert weights.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(weights[n_initial:] / weights[0], importance, rtol=1e-6)
    assert np.all(weights[:n_initial] == weights[0])


def test_whole_nets_of_a_one_shot_method_train_on_its_importance_weights(tiny_runs, monkeypatch):
    from diam import experiment
    assert run_script_here("al_select.py", *tiny_args(tiny_runs, "--method", "lewis_oneshot", "--al_iter", 0)) \
        .returncode == 0
    assert run_script_here("al_select.py", *tiny_args(tiny_runs, "--method", "random", "--al_iter", 0)).returncode == 0
    given = {}

    class Stop(Exception):
        pass

    def capture(*args, loss_weights=None, **kwargs):
        given["weights"] = loss_weights
        raise Stop

    monkeypatch.setattr(experiment, "train_target_net", capture)
    for method in ("lewis_oneshot", "random"):
        run = Run(settings_from_args(cli.train_args(list(map(str, tiny_args(
            tiny_runs, "--method", method, "--al_iter", 1, "--net_id", 0))))))
        with pytest.raises(Stop):
            experiment.train_step(run, 0)
        labeled, _ = run.split()
        if method == "random":
            assert given["weights"] is None  # every other method's loss as before
        else:
            np.testing.assert_array_equal(given["weights"].numpy(), importance_loss_weights(run, labeled))
            assert given["weights"].std() > 0


def test_without_linear_heads_the_config_records_nothing_new(tiny_iteration):
    recorded = json.loads(RunPaths(tiny_iteration, "quick", "digits").config_file.read_text())
    assert "linear_heads" not in recorded  # folders made before the option still match


def test_a_folder_made_with_linear_heads_refuses_a_command_without_it(tiny_runs):
    paths = RunPaths(tiny_runs, "quick", "digits")
    write_json(paths.config_file, {**json.loads(paths.config_file.read_text()), "linear_heads": True})
    result = run_script_here("al_select.py", *tiny_args(tiny_runs, "--method", "lewis", "--al_iter", 0))
    assert result.returncode == 2 and "linear_heads: folder has True, you asked the default" in result.stderr
    assert not paths.indices(T, "lewis", 1).exists()


# ------------------------------------------------------------------ a person labelling the one-shot draw

def test_one_shot_writes_each_iterations_label_sheet_when_a_person_labels(tmp_path):
    digits = load_dataset("digits", pool_size=200, test_size=100)
    classes = [str(c) for c in range(10)]
    known = np.zeros(200, bool)
    known[:80] = True  # the person knows 80 labels; the initial 30 are drawn among them
    dataset = write_png_dataset(tmp_path / "pngs", "hand", digits.pool_images.numpy(), digits.pool_labels.tolist(),
                                digits.test_images.numpy(), digits.test_labels.tolist(), classes, labelled=known)
    common = ["--dataset", dataset, "--model_num", T, "--preset", "quick", "--pool_size", 200, "--test_size", 100,
              "--initial_labeled", 30, "--query_batch", 10, "--epochs", 2, "--train_batch", 15, "--image_size", 32,
              "--al_iters", 3, "--device", "cpu", "--work_dir", tmp_path / "runs"]
    assert run_script_here("train_net.py", *common, "--al_iter", 0, "--net_id", 0, 1).returncode == 0
    result = run_script_here("al_select.py", *common, "--method", "lewis_oneshot", "--al_iter", 0)
    assert result.returncode == 0, result.stderr
    paths = RunPaths(tmp_path / "runs", "quick", "hand")
    assert "to label:" in result.stdout and str(paths.label_sheet(T, "lewis_oneshot", 2)) in result.stdout
    before, _ = read_indices(paths.indices(T, "lewis_oneshot", 0), "hand", 200)
    for k in (1, 2):  # iteration k's sheet lists its own 10 of the draw: what its index file adds to k - 1's
        after, _ = read_indices(paths.indices(T, "lewis_oneshot", k), "hand", 200)
        listed = [image for _, image, _ in read_rows(paths.label_sheet(T, "lewis_oneshot", k), "the label sheet")]
        assert sorted(listed) == sorted(f"pool/{i:05d}.png" for i in after[len(before):]) and len(listed) == 10
        # The same images as Label Studio tasks, a label the manifest knows carried along (issue 35).
        rows = read_rows(paths.label_sheet(T, "lewis_oneshot", k), "the label sheet")
        tasks = json.loads(paths.label_studio_tasks(T, "lewis_oneshot", k).read_text())
        assert [t["data"]["pool_path"] for t in tasks] == listed
        assert [t["data"].get("manifest_label", "") for t in tasks] == [label for _, _, label in rows]
        before = after
    assert any(label for _, _, label in rows)  # the case is exercised: a selected image the person had labelled
    assert str(paths.label_studio_tasks(T, "lewis_oneshot", 2)) in result.stdout
