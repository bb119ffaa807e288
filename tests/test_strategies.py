"""Query strategies, one test per rule of SPEC.md section 5.

Expected picks are worked out by hand in the comments (independent of the code
under test); coreset and vote entropy are also checked against alipy.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from alipy.query_strategy import QueryInstanceCoresetGreedy, QueryInstanceQBC

from diam.errors import UserError
from diam.experiment import _record, check_batch
from diam.methods import METHODS
from diam.pool import Pool
from diam.presets import PAPER_METHODS
from diam.settings import check_method

from diam.strategies import (
    CALTopUpWarning, WeightedBatch, cal, coreset, diam, disagreement_count, entropy, least_confidence, margin,
    random_sampling, vote_entropy)

# VE of a 3-vs-1 split of K=4 snapshots: -(3/4 ln 3/4 + 1/4 ln 1/4).
VE_3_1 = 0.75 * math.log(4 / 3) + 0.25 * math.log(4)
VE_2_2 = math.log(2)
VE_1_1_1_1 = math.log(4)


def snapshots_from_columns(columns_per_model):
    """(T, K, U) labels from, per model, a list of U columns of K snapshot labels."""
    return np.array([np.array(columns).T for columns in columns_per_model], dtype=np.int64)


# --------------------------------------------------------------------- random

def test_random_returns_distinct_positions_in_range():
    picks = random_sampling(50, 20, np.random.default_rng(0))
    assert picks.dtype == np.int64 and picks.shape == (20,)
    assert len(set(picks.tolist())) == 20
    assert picks.min() >= 0 and picks.max() < 50


def test_random_is_uniform_over_the_pool():
    counts = np.zeros(10)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        counts[random_sampling(10, 3, rng)] += 1
    # Each position is expected 600 times; 6 standard deviations is about +-130.
    assert np.all(np.abs(counts - 600) < 130)


# ------------------------------------------------ least_conf, margin, entropy

# Two models, four examples. Probability of the predicted class:
#   model 0: .9 .5 .4 .7  -> scaled by (p - .4)/.5:  1    .2    0    .6
#   model 1: .6 .95 .8 .5 -> scaled by (p - .5)/.45: .222 1    .667 0
#   average:                                         .611 .6   .333 .3
# so the order is 3, 2, 1, 0. Without scaling the averages would be
# .75 .725 .6 .6 and the order 2, 3, 1, 0.
LEAST_CONF_PROBS = np.array([
    [[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.2, 0.7, 0.1]],
    [[0.3, 0.6, 0.1], [0.03, 0.02, 0.95], [0.8, 0.1, 0.1], [0.25, 0.5, 0.25]],
])


def test_least_conf_min_max_scales_each_model_then_averages():
    assert least_confidence(LEAST_CONF_PROBS, 3).tolist() == [3, 2, 1]


def test_a_constant_score_model_changes_no_pick_and_gives_no_nan():
    # Every example's top probability is .5 for this model: its scores are constant.
    constant_model = np.array([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25],
                                [0.5, 0.3, 0.2], [0.1, 0.4, 0.5]]])
    probs = np.concatenate([LEAST_CONF_PROBS, constant_model])
    assert least_confidence(probs, 4).tolist() == [3, 2, 1, 0]


def test_margin_is_gap_between_top_two_and_ties_go_to_lower_position():
    # model 0 margins: .1 .7 .3  -> scaled 0   1   .333
    # model 1 margins: .85 0 .2  -> scaled 1   0   .235
    # average:                      .5  .5  .284 -> 2 first, then the tie 0, 1.
    probs = np.array([
        [[0.4, 0.5, 0.1], [0.1, 0.1, 0.8], [0.3, 0.1, 0.6]],
        [[0.05, 0.9, 0.05], [0.1, 0.45, 0.45], [0.2, 0.5, 0.3]],
    ])
    assert margin(probs, 3).tolist() == [2, 0, 1]


def test_entropy_is_negative_entropy_with_zero_log_zero_as_zero():
    # sum p ln p, model 0: 0, -.693, -1.099, -.611 -> scaled 1, .631, 0, .444
    #             model 1: -.693, -1.099, -.325, 0 -> scaled .369, 0, .704, 1
    # average: .685 .316 .352 .722 -> order 1, 2, 0, 3.
    third = 1 / 3
    probs = np.array([
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [third, third, third], [0.7, 0.0, 0.3]],
        [[0.0, 0.5, 0.5], [third, third, third], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]],
    ])
    assert entropy(probs, 4).tolist() == [1, 2, 0, 3]


# -------------------------------------------------------------------- coreset

def clustered_points(rng, n_points, dim=5, n_clusters=6):
    # Clusters make the greedy's later picks depend on earlier ones, which is
    # what the round-based implementation has to get right.
    centers = rng.normal(size=(n_clusters, dim)) * 5
    return (centers[rng.integers(0, n_clusters, n_points)]
            + rng.normal(size=(n_points, dim))).astype(np.float32)


def alipy_k_center_greedy(unlabeled, labeled, batch_size):
    """alipy's k-center greedy on [labeled; unlabeled]; its picks are dataset indices
    in pick order, so subtracting L gives unlabeled positions."""
    n_labeled = labeled.shape[0]
    pool = np.vstack([labeled, unlabeled]).astype(np.float64)
    query = QueryInstanceCoresetGreedy(pool, np.zeros(len(pool)), np.arange(len(pool)))
    picks = query.select(np.arange(n_labeled), np.arange(n_labeled, len(pool)),
                         batch_size=batch_size)
    return [int(index) - n_labeled for index in picks]


@pytest.mark.parametrize("working_set_size,chunk_size", [(2048, 7), (16, 64), (2, 4096)])
def test_coreset_matches_alipy_k_center_greedy_in_pick_order(working_set_size, chunk_size):
    rng = np.random.default_rng(working_set_size)
    for _ in range(3):
        unlabeled, labeled = clustered_points(rng, 300), clustered_points(rng, 20)
        expected = alipy_k_center_greedy(unlabeled, labeled, 40)
        got = coreset(unlabeled, labeled, 40, chunk_size=chunk_size,
                      working_set_size=working_set_size)
        assert got.tolist() == expected


def naive_k_center_greedy(unlabeled, labeled, batch_size):
    """Textbook greedy in float64 with all pairwise distances (fine at this size)."""
    if len(labeled):
        nearest = np.linalg.norm(unlabeled[:, None] - labeled[None], axis=2).min(axis=1)
    else:
        nearest = np.full(len(unlabeled), np.inf)
    picks = []
    for _ in range(batch_size):
        best = int(np.argmax(nearest))
        picks.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(unlabeled - unlabeled[best], axis=1))
        nearest[picks] = -1.0
    return picks


def test_coreset_without_labeled_points_starts_at_position_zero():
    unlabeled = clustered_points(np.random.default_rng(1), 200)
    no_labeled = np.empty((0, unlabeled.shape[1]), dtype=np.float32)
    got = coreset(unlabeled, no_labeled, 30, working_set_size=8)
    assert got[0] == 0
    assert got.tolist() == naive_k_center_greedy(unlabeled.astype(np.float64), no_labeled, 30)


def test_coreset_ties_go_to_lower_position():
    # Points 1, 3 and 5 are copies of one another, equally far from the only center;
    # after one of them is picked the other two are at distance 0.
    unlabeled = np.array([[0.0], [5.0], [1.0], [5.0], [2.0], [5.0]], dtype=np.float32)
    labeled = np.array([[0.0]], dtype=np.float32)
    assert coreset(unlabeled, labeled, 6, working_set_size=2).tolist() == [1, 4, 2, 0, 3, 5]


@pytest.mark.parametrize("working_set_size", [1, 2, 3, 2048])
def test_coreset_ties_that_appear_during_selection_go_to_lower_position(working_set_size):
    # Distances to the center 0 are 3, 10, 7. After 10 is picked, 7 is 3 away from
    # it, so positions 0 and 2 tie at distance 3 and position 0 must come next. The
    # working-set sizes cover the tie falling inside one round and across rounds.
    unlabeled = np.array([[3.0], [10.0], [7.0]], dtype=np.float32)
    labeled = np.array([[0.0]], dtype=np.float32)
    assert coreset(unlabeled, labeled, 3, working_set_size=working_set_size).tolist() == [1, 0, 2]


def test_coreset_accepts_torch_tensors():
    rng = np.random.default_rng(2)
    unlabeled, labeled = clustered_points(rng, 100), clustered_points(rng, 10)
    from_numpy = coreset(unlabeled, labeled, 15)
    from_torch = coreset(torch.from_numpy(unlabeled), torch.from_numpy(labeled), 15)
    assert from_torch.tolist() == from_numpy.tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_coreset_on_cuda_matches_cpu():
    rng = np.random.default_rng(3)
    unlabeled, labeled = clustered_points(rng, 500), clustered_points(rng, 30)
    assert (coreset(unlabeled, labeled, 50, device="cuda").tolist()
            == coreset(unlabeled, labeled, 50).tolist())


def test_coreset_rejects_non_finite_features():
    unlabeled = np.ones((4, 2), dtype=np.float32)
    unlabeled[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        coreset(unlabeled, np.zeros((1, 2), dtype=np.float32), 2)


# ------------------------------------------------- snapshot scores: d and v

# T=2 models, K=4 snapshots, U=8 examples, labels in 0..3. Per example:
#   x0: both models unanimous                     d=0 v=0
#   x1: model 0 splits 3-1                         d=1 v=VE(3,1)=.562
#   x2: model 0 splits 2-2                         d=1 v=ln 2   =.693
#   x3: both split 3-1                             d=2 v=1.125
#   x4: model 0 splits 2-2 (same d, v as x2)       d=1 v=.693
#   x5: model 0 splits 1-1-1-1 (largest v, d=1)    d=1 v=ln 4   =1.386
#   x6: both unanimous                             d=0 v=0
#   x7: model 0 splits 3-1, model 1 splits 2-2     d=2 v=1.256
# DIAM ranking: d desc -> {x7, x3} (v 1.256 > 1.125), then d=1 by v desc:
# x5, then x2 and x4 tied (in random order), x1, then x0 and x6 tied.
DIAM_RANKING = [7, 3, 5, 2, 4, 1, 0, 6]
DIAM_SNAPSHOTS = snapshots_from_columns([
    [[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1],
     [0, 0, 1, 1], [0, 1, 2, 3], [2, 2, 2, 2], [1, 1, 1, 0]],
    [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [1, 1, 1, 0],
     [0, 0, 0, 0], [3, 3, 3, 3], [2, 2, 2, 2], [2, 3, 3, 2]],
])


def test_disagreement_count_is_number_of_models_whose_snapshots_disagree():
    assert disagreement_count(DIAM_SNAPSHOTS).tolist() == [0, 1, 1, 2, 1, 1, 0, 2]


def test_vote_entropy_is_summed_over_models():
    expected = [0, VE_3_1, VE_2_2, 2 * VE_3_1, VE_2_2, VE_1_1_1_1, 0, VE_3_1 + VE_2_2]
    np.testing.assert_allclose(vote_entropy(DIAM_SNAPSHOTS), expected, rtol=1e-12, atol=1e-12)


def test_vote_entropy_matches_alipy_calc_vote_entropy():
    rng = np.random.default_rng(4)
    snapshot_labels = rng.integers(0, 4, size=(3, 5, 200))
    snapshot_labels[:, :, :50] = 2  # some unanimous examples too
    # alipy takes one committee (here: one model's K snapshots) as a list of
    # K label vectors of length U, and returns one score per example.
    expected = sum(np.asarray(QueryInstanceQBC.calc_vote_entropy(list(model_snapshots)))
                   for model_snapshots in snapshot_labels)
    # alipy adds 1e-9 inside its log, hence the small tolerance.
    np.testing.assert_allclose(vote_entropy(snapshot_labels), expected, atol=1e-7)


def test_vote_entropy_is_bit_identical_for_relabelled_and_reordered_votes():
    # Example 0: model 0 votes (5,3,2), model 1 (7,3), model 2 (4,4,2).
    # Example 1: the same splits, with other class labels and the models permuted.
    model_votes_0 = [[0] * 5 + [1] * 3 + [2] * 2, [4] * 7 + [3] * 3, [1] * 4 + [2] * 4 + [0] * 2]
    model_votes_1 = [[6] * 4 + [5] * 4 + [3] * 2, [2] * 2 + [7] * 3 + [1] * 5, [0] * 3 + [9] * 7]
    snapshot_labels = snapshots_from_columns([[a, b] for a, b in zip(model_votes_0, model_votes_1)])
    scores = vote_entropy(snapshot_labels)
    assert scores[0] == scores[1]


# ----------------------------------------------------------------------- DIAM

def test_diam_ranks_by_disagreement_then_vote_entropy():
    rng = np.random.default_rng(0)
    for batch_size in (1, 2, 3, 5, 6, 8):  # cuts that do not split a tie
        # With candidate_factor=1 the candidates are exactly the batch: the top B.
        picks = diam(DIAM_SNAPSHOTS, batch_size, rng, candidate_factor=1)
        assert sorted(picks.tolist()) == sorted(DIAM_RANKING[:batch_size])


def test_diam_breaks_ties_at_the_cut_at_random_and_by_the_seed():
    # B = 4 cuts between x2 and x4 (equal d and v): either may be taken, as in the original.
    batches = [tuple(sorted(diam(DIAM_SNAPSHOTS, 4, np.random.default_rng(seed), candidate_factor=1)))
               for seed in range(40)]
    assert set(batches) == {(2, 3, 5, 7), (3, 4, 5, 7)}
    assert batches == [tuple(sorted(diam(DIAM_SNAPSHOTS, 4, np.random.default_rng(seed), candidate_factor=1)))
                       for seed in range(40)]


def test_diam_draws_batch_uniformly_from_top_five_b():
    rng = np.random.default_rng(0)
    counts = np.zeros(8)
    for _ in range(2000):
        counts[diam(DIAM_SNAPSHOTS, 1, rng)] += 1
    top_five = DIAM_RANKING[:5]
    assert np.all(counts[DIAM_RANKING[5:]] == 0)
    # Each of the top 5 is expected 400 times; 6 standard deviations is about +-110.
    assert np.all(np.abs(counts[top_five] - 400) < 110)


def test_diam_candidates_are_capped_at_pool_size():
    picks = diam(DIAM_SNAPSHOTS, 3, np.random.default_rng(0))  # 5B = 15 > U = 8
    assert len(set(picks.tolist())) == 3 and picks.max() < 8


# ------------------------------------------------------------------------ CAL

# Model 0's snapshots disagree on {1, 3}, model 1's on {3, 5}: the union is {1, 3, 5}.
CAL_SNAPSHOTS = snapshots_from_columns([
    [[0, 0, 0], [0, 1, 1], [2, 2, 2], [1, 2, 1], [0, 0, 0], [3, 3, 3], [1, 1, 1], [0, 0, 0]],
    [[1, 1, 1], [0, 0, 0], [2, 2, 2], [0, 0, 2], [0, 0, 0], [1, 3, 3], [1, 1, 1], [2, 2, 2]],
])
CAL_UNION = {1, 3, 5}


def test_cal_picks_uniformly_from_union_of_disagreement_regions():
    rng = np.random.default_rng(0)
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the union suffices: no top-up warning
        for _ in range(100):
            picks = cal(CAL_SNAPSHOTS, 2, rng).tolist()
            assert len(set(picks)) == 2 and set(picks) <= CAL_UNION
            seen.update(picks)
    assert seen == CAL_UNION


def test_cal_tops_up_from_the_rest_and_warns_when_union_is_too_small():
    with pytest.warns(CALTopUpWarning, match=r"only 3 .* with 2 uniformly random"):
        picks = cal(CAL_SNAPSHOTS, 5, np.random.default_rng(0)).tolist()
    assert len(set(picks)) == 5
    assert set(picks[:3]) == CAL_UNION
    assert set(picks[3:]) <= {0, 2, 4, 6, 7}


# ------------------------------------------------------------------- registry

SHIPPED_NEEDS = {
    "random": "nothing", "least_conf": "probs", "margin": "probs", "entropy": "probs",
    "coreset": "features", "CAL": "snapshots", "DIAM": "snapshots",
    "DIAM_qp": "snapshots_and_model_features", "lewis": "model_features", "lewis_oneshot": "model_features",
    "badge": "probs_and_model_features", "bald": "dropout_probs"}


# What each of the needs above is, as fields a strategy fetches from the pool.
NEED_FIELDS = {"nothing": set(), "probs": {"unlabeled_probs"}, "features": {"unlabeled_features", "labeled_features"},
               "snapshots": {"snapshot_labels"}, "model_features": {"unlabeled_model_features"},
               "dropout_probs": {"dropout_probs"}}


def fields_fetched(method: str) -> set:
    """The pool fields `method`'s strategy asks for (with its default settings)."""
    arrays, asked = random_arrays(40), set()

    def fetcher(name):
        def load(*args):
            asked.add(name)
            return arrays[name]
        return load

    pool = Pool(40, fetch={name: fetcher(name) for name in arrays})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CALTopUpWarning)
        METHODS[method].select(pool, 5, np.random.default_rng(0), METHODS[method].settings())
    return asked


def test_registry_has_every_command_line_method_with_its_needs():
    # One registry: the command line checks --method against its names (a name in a list of its own
    # would pass every check and fail at its first selection), the paper's seven first.
    for name in METHODS:
        check_method(name)
    with pytest.raises(UserError, match="unknown method 'bold'"):
        check_method("bold")
    assert list(METHODS)[:7] == list(PAPER_METHODS)
    assert {name: fields_fetched(name) for name in SHIPPED_NEEDS} == {
        name: set().union(*(NEED_FIELDS[part] for part in needs.split("_and_")))
        for name, needs in SHIPPED_NEEDS.items()}


def test_training_records_what_each_strategy_reads():
    reads = {name: [what for what in ("probs", "features", "snapshots", "model_features") if what in strategy.reads]
             for name, strategy in METHODS.items()}
    assert reads == {"random": [], "least_conf": ["probs"], "margin": ["probs"], "entropy": ["probs"],
                     "coreset": ["features"], "CAL": ["snapshots"], "DIAM": ["snapshots"],
                     "DIAM_qp": ["snapshots", "model_features"], "lewis": ["model_features"],
                     "lewis_oneshot": ["model_features"], "badge": ["probs", "model_features"], "bald": []}


def test_the_last_evaluation_points_nets_record_only_what_their_training_stream_needs():
    from dataclasses import replace
    from types import SimpleNamespace

    from diam.presets import PRESETS
    from diam.training import Record

    quick = PRESETS["quick"]  # al_iters 4: al_iter 3 is tested, never selected from
    at = lambda al_iter, preset=quick, method="DIAM": SimpleNamespace(settings=SimpleNamespace(  # noqa: E731
        preset=preset, al_iter=al_iter, method=method))
    assert _record(at(2), 1, False) == Record(snapshots=True)
    assert _record(at(3), 1, False) == Record()  # no pass over the pool: nothing would read it
    assert _record(at(3, method="entropy"), 0, False) == Record()
    assert _record(at(3), 1, True) == Record(snapshots=True)  # --mDIS asks for them whatever the iteration
    # The original's passes draw the augmentation from the net's training stream: they stay.
    original = replace(quick, score_with_train_aug=True)
    assert _record(at(3, original), 1, False) == Record(snapshots=True)
    assert _record(at(0, replace(quick, al_iters=1)), 0, False) == Record()
    assert _record(at(0), 0, False) == Record(snapshots=True, probs=True, features=True)


@pytest.mark.parametrize("batch, problem", [
    (np.array([[0], [1], [2]]), "an array of shape (3, 1), not a 1-d array of positions"),
    (np.asarray(None), "an array of shape (), not a 1-d array of positions"),
    (np.array([0.0, 1.0, 2.0]), "positions of type float64, not integers"),
    (np.array([True, False, True]), "positions of type bool, not integers"),
    (np.array([0, 1]), "2 positions, not 3"),
    (np.array([0, 1, 2, 3]), "4 positions, not 3"),
    (np.array([0, 1, 10]), "positions from 0 to 10, outside 0..9"),
    (np.array([-1, 1, 2]), "positions from -1 to 2, outside 0..9"),
    (np.array([4, 1, 4]), "1 repeated position(s)"),
])
def test_a_strategys_invalid_batch_is_refused_naming_what_is_wrong(batch, problem):
    with pytest.raises(UserError) as refused:
        check_batch(batch, 10, 3, "mine")
    assert f"strategy 'mine' returned an invalid batch: {problem}." in str(refused.value)
    assert "nothing was written" in str(refused.value)
    assert list(check_batch(np.array([7, 0, 3], dtype=np.uint8), 10, 3, "mine")) == [7, 0, 3]


def random_arrays(n_unlabeled, seed=0, n_models=3, n_snapshots=4, n_classes=5, dim=6) -> dict:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n_models, n_unlabeled, n_classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    snapshot_labels = rng.integers(0, n_classes, size=(n_models, 1, n_unlabeled)).repeat(
        n_snapshots, axis=1)
    flipped = rng.random(snapshot_labels.shape) < 0.1
    snapshot_labels[flipped] = rng.integers(0, n_classes, size=flipped.sum())
    model_features = rng.normal(size=(n_models, n_unlabeled, dim)).astype(np.float16)
    return dict(
        unlabeled_probs=probs,
        unlabeled_features=rng.normal(size=(n_unlabeled, dim)).astype(np.float32),
        labeled_features=rng.normal(size=(7, dim)).astype(np.float32),
        snapshot_labels=snapshot_labels,
        unlabeled_model_features=model_features, initial_model_features=model_features,
        dropout_probs=rng.dirichlet(np.ones(n_classes), size=(n_models, n_snapshots, n_unlabeled)).astype(np.float32))


def random_inputs(n_unlabeled, seed=0, **sizes) -> Pool:
    arrays = random_arrays(n_unlabeled, seed, **sizes)
    del arrays["initial_model_features"]  # as before: a pool with trained models' features only
    return Pool(n_unlabeled, **arrays)


def positions_of(picked):
    """The positions a strategy picked; a weighted batch's weights checked to go with them."""
    if isinstance(picked, WeightedBatch):
        assert picked.importance_weights.shape == picked.positions.shape == picked.lewis_weights.shape
        if picked.sampler == "systematic":
            assert np.all(picked.importance_weights >= 1)  # 1 / a probability
        else:  # the paper's c / (m q): an estimate of how many pool rows a pick stands for
            assert np.all(picked.importance_weights > 0) and len(picked.draws) >= len(picked.positions)
        return picked.positions
    return picked


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("n_unlabeled,batch_size", [(60, 10), (60, 0), (9, 20), (1, 1)])
def test_every_strategy_returns_min_b_u_distinct_positions_in_range(
        method, n_unlabeled, batch_size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CALTopUpWarning)
        picks = positions_of(METHODS[method].select(random_inputs(n_unlabeled), batch_size,
                                                    np.random.default_rng(0), METHODS[method].settings()))
    assert isinstance(picks, np.ndarray) and picks.dtype == np.int64 and picks.ndim == 1
    assert len(picks) == min(batch_size, n_unlabeled)
    assert len(set(picks.tolist())) == len(picks)
    assert np.all((picks >= 0) & (picks < n_unlabeled))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_same_seed_gives_same_batch(method):
    inputs = random_inputs(80, seed=5)
    first, second = (positions_of(METHODS[method].select(inputs, 12, np.random.default_rng(42),
                                                         METHODS[method].settings()))
                     for _ in range(2))
    assert first.tolist() == second.tolist()


@pytest.mark.parametrize("method", ["random", "CAL", "DIAM", "lewis", "badge"])
def test_random_strategies_follow_the_seed(method):
    inputs = random_inputs(200, seed=6)
    batches = {tuple(positions_of(METHODS[method].select(inputs, 20, np.random.default_rng(seed),
                                                         METHODS[method].settings())))
               for seed in range(5)}
    assert len(batches) > 1


def test_missing_input_is_an_error():
    with pytest.raises(ValueError, match="snapshot_labels"):
        METHODS["DIAM"].select(Pool(n_unlabeled=5), 2, np.random.default_rng(0), METHODS["DIAM"].settings())


def test_input_not_covering_the_pool_is_an_error():
    inputs = random_inputs(30)
    shorter = Pool(n_unlabeled=29, unlabeled_probs=inputs.unlabeled_probs)
    with pytest.raises(ValueError, match="n_unlabeled is 29"):
        METHODS["margin"].select(shorter, 2, np.random.default_rng(0), METHODS["margin"].settings())
