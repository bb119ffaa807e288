"""BADGE and BALD for T target models (docs/badge_bald.md).

For one model both are checked against references written here from the papers (the gradient of the
cross-entropy by autograd, k-means++ on explicit embeddings, BALD's two entropies by scipy) and against
scikit-activeml's Badge and batch_bald where they apply; the multi-target combinations on cases whose
answer is known (identical models are one model; an example only the models disagree on).
"""
import math

import numpy as np
import pytest
import scipy.stats
import torch
from skactiveml.base import SkactivemlClassifier
from skactiveml.pool import Badge, batch_bald

from conftest import assert_clean_error, run_script_here
from diam import cli, models
from diam.badge_bald import badge, bald, committee_mutual_information, probability_residuals, sketched_features
from diam.run import Run
from diam.selection_inputs import selection_options
from diam.mc_dropout import dropout_probs, mc_dropout_probs
from diam.presets import BADGE_FEATURE_WIDTH, BALD_PASSES
from diam.settings import settings_from_args
from diam.training import set_batchnorm_statistics


def softmax_rows(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def one_model_inputs(seed, n_unlabeled=40, n_classes=4, dim=5):
    rng = np.random.default_rng(seed)
    probs = softmax_rows(2.0 * rng.normal(size=(n_unlabeled, n_classes)))
    features = rng.normal(size=(n_unlabeled, dim))
    return probs, features


# ----------------------------------------------------------------------------- BADGE

def test_the_gradient_embedding_is_the_cross_entropy_gradient_of_the_last_layer_at_the_predicted_class():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    features = torch.randn(12, 6)
    probs = torch.softmax(layer(features), dim=1).detach()
    residuals = probability_residuals(probs)
    for i in range(len(features)):
        layer.zero_grad()
        logits = layer(features[i:i + 1])
        torch.nn.functional.cross_entropy(logits, logits.argmax(dim=1)).backward()
        embedding = residuals[i][:, None] * features[i][None, :]  # (C, D), as the weight's gradient
        torch.testing.assert_close(embedding, layer.weight.grad, atol=1e-6, rtol=1e-5)


def explicit_badge(probs, features, batch_size, rng):
    """The paper's BADGE for one model, step by step on explicit embeddings: g = (p - onehot) outer h;
    the largest |g| first; then each pick drawn with probability D^2 / sum D^2 (one uniform, inverted)."""
    residuals = probs.copy()
    residuals[np.arange(len(probs)), probs.argmax(axis=1)] -= 1.0
    embeddings = (residuals[:, :, None] * features[:, None, :]).reshape(len(probs), -1)
    picked = [int(np.argmax((embeddings ** 2).sum(axis=1)))]
    nearest = np.full(len(probs), np.inf)
    while len(picked) < batch_size:
        nearest = np.minimum(nearest, ((embeddings - embeddings[picked[-1]]) ** 2).sum(axis=1))
        nearest[picked] = 0.0
        cumulative = np.cumsum(nearest / nearest.sum())
        picked.append(int(np.searchsorted(cumulative / cumulative[-1], rng.random(), side="right")))
    return picked


@pytest.mark.parametrize("seed", range(5))
def test_badge_for_one_model_picks_what_k_means_plus_plus_on_explicit_embeddings_picks(seed):
    probs, features = one_model_inputs(seed)
    expected = explicit_badge(probs, features, 12, np.random.default_rng(100 + seed))
    picked = badge(probs[None], features[None], 12, np.random.default_rng(100 + seed), width=0)
    assert picked.tolist() == expected


class FixedOutputs(SkactivemlClassifier):
    """A classifier whose softmax outputs and embeddings are given: X holds row numbers into them."""

    def __init__(self, probs=None, features=None, classes=None, missing_label=np.nan):
        super().__init__(classes=classes, missing_label=missing_label)
        self.probs, self.features = probs, features

    def fit(self, X, y, sample_weight=None):
        return self

    def predict_proba(self, X, return_embeddings=False):
        rows = np.asarray(X)[:, 0].astype(int)
        return (self.probs[rows], self.features[rows]) if return_embeddings else self.probs[rows]


def same_stream_as_scikit_activeml(seed: int, n_unlabeled: int) -> np.random.Generator:
    """A Generator on the MT19937 stream scikit-activeml's query draws from when given random_state=seed:
    it seeds a RandomState with (a draw from RandomState(seed)) x (unlabeled examples + 1)."""
    derived = (np.random.RandomState(seed).randint(1, 2 ** 31) * (n_unlabeled + 1)) % 2 ** 31
    stream = np.random.MT19937()
    stream.state = {"bit_generator": "MT19937", "state": np.random.RandomState(derived).get_state(legacy=False)["state"]}
    return np.random.Generator(stream)


@pytest.mark.parametrize("seed", range(3))
def test_badge_for_one_model_picks_what_scikit_activemls_badge_picks(seed):
    # scikit-activeml also counts the origin as a center (its first D^2 is |g|^2), which the paper
    # does not: on embeddings clustered far from the origin the origin is never the nearest center,
    # and the two agree; both draw each pick by one uniform, here from the same MT19937 stream.
    rng = np.random.default_rng(seed)
    n_unlabeled = 60
    probs = np.array([0.6, 0.15, 0.1, 0.1, 0.05]) + rng.uniform(-0.02, 0.02, size=(n_unlabeled, 5))
    probs /= probs.sum(axis=1, keepdims=True)
    features = np.array([3.0, -1.0, 2.0]) + 0.1 * rng.normal(size=(n_unlabeled, 3))
    residuals = probs - np.eye(5)[probs.argmax(axis=1)]
    embeddings = (residuals[:, :, None] * features[:, None, :]).reshape(n_unlabeled, -1)
    farthest_apart = max(np.linalg.norm(embeddings - e, axis=1).max() for e in embeddings)
    assert farthest_apart < np.linalg.norm(embeddings, axis=1).min()  # the origin is never nearest

    ours = badge(probs[None], features[None], 15, same_stream_as_scikit_activeml(seed, n_unlabeled), width=0)
    theirs = Badge(clf_embedding_flag_name="return_embeddings", random_state=seed).query(
        np.arange(n_unlabeled, dtype=float)[:, None], np.full(n_unlabeled, np.nan),
        FixedOutputs(probs, features, classes=np.arange(5)), fit_clf=False, batch_size=15)
    assert ours.tolist() == [int(i) for i in theirs]


@pytest.mark.parametrize("seed", range(3))
def test_badge_over_identical_models_is_badge_over_one(seed):
    probs, features = one_model_inputs(seed)
    one = badge(probs[None], features[None], 10, np.random.default_rng(seed), width=0)
    copies = badge(np.stack([probs] * 3), np.stack([features] * 3), 10, np.random.default_rng(seed), width=0)
    assert copies.tolist() == one.tolist()


@pytest.mark.parametrize("seed", range(3))
def test_badge_weighs_the_models_alike_whatever_the_scale_of_their_features(seed):
    # Each model's embeddings are scaled to the same mean squared norm over the pool: a model whose
    # features are 50 times larger does not outweigh the other.
    (probs_0, features_0), (probs_1, features_1) = one_model_inputs(seed), one_model_inputs(seed + 10)
    probs = np.stack([probs_0, probs_1])
    as_given = badge(probs, np.stack([features_0, features_1]), 10, np.random.default_rng(seed), width=0)
    one_larger = badge(probs, np.stack([features_0, 50 * features_1]), 10, np.random.default_rng(seed), width=0)
    assert one_larger.tolist() == as_given.tolist()


def test_badge_first_picks_the_example_far_for_the_models_together():
    # Every residual is (-1/4, 1/4), so |g|^2 = h^2 / 8 and each model's mean |g|^2 is the same. Model 0's
    # largest embedding is example 0's, model 1's example 1's; together (9 + 0, 0 + 9, 6.25 + 6.25) example 2's.
    probs = np.full((2, 3, 2), [0.75, 0.25])
    features = np.array([[[3.0], [0.0], [2.5]], [[0.0], [3.0], [2.5]]])
    assert badge(probs[:1], features[:1], 1, np.random.default_rng(0), width=0).tolist() == [0]
    assert badge(probs[1:], features[1:], 1, np.random.default_rng(0), width=0).tolist() == [1]
    assert badge(probs, features, 1, np.random.default_rng(0), width=0).tolist() == [2]


def test_badge_draws_uniformly_from_what_is_left_when_every_distance_is_zero():
    probs = np.full((1, 6, 2), [0.75, 0.25])
    features = np.ones((1, 6, 3))  # six copies of one embedding
    picked = badge(probs, features, 6, np.random.default_rng(0), width=0)
    assert picked[0] == 0 and sorted(picked.tolist()) == list(range(6))


def test_the_sketch_keeps_narrow_features_exact_and_inner_products_of_wide_ones_on_average():
    rng = np.random.default_rng(0)
    narrow = rng.normal(size=(2, 30, 8))
    before = rng.bit_generator.state
    np.testing.assert_array_equal(sketched_features(narrow, 8, rng, "cpu").numpy(), narrow.astype(np.float32))
    assert rng.bit_generator.state == before  # nothing drawn when nothing is sketched
    wide = rng.normal(size=(1, 200, 2000))
    sketched = sketched_features(wide, 500, rng, "cpu").double().numpy()
    assert sketched.shape == (1, 200, 500)
    # E[|G h|^2] = |h|^2; the mean of 200 ratios, each with a spread of sqrt(2 / 500), lies within 2%.
    ratio = (sketched[0] ** 2).sum(1) / (wide[0] ** 2).sum(1)
    assert abs(ratio.mean() - 1) < 0.02 and ratio.std() < 0.15


# ------------------------------------------------------------------------------ BALD

def test_bald_for_one_model_is_the_entropy_of_the_mean_minus_the_mean_entropy():
    rng = np.random.default_rng(0)
    passes = softmax_rows(rng.normal(size=(1, 8, 50, 5)))
    expected = scipy.stats.entropy(passes[0].mean(axis=0), axis=1) - scipy.stats.entropy(passes[0], axis=2).mean(0)
    np.testing.assert_allclose(committee_mutual_information(passes), expected, rtol=1e-12, atol=1e-12)


def test_bald_for_one_model_equals_scikit_activemls_bald():
    rng = np.random.default_rng(1)
    passes = softmax_rows(rng.normal(size=(1, 8, 50, 5)))
    assert passes.min() > 1e-7  # its clipping at 1e-7 changes nothing
    theirs = batch_bald(passes[0].copy(), batch_size=1)[0]
    np.testing.assert_allclose(committee_mutual_information(passes), theirs, rtol=1e-9, atol=1e-12)


def test_bald_over_identical_models_is_bald_over_one():
    passes = softmax_rows(np.random.default_rng(2).normal(size=(1, 6, 40, 4)))
    np.testing.assert_allclose(committee_mutual_information(np.concatenate([passes] * 3)),
                               committee_mutual_information(passes), rtol=1e-12, atol=1e-14)


def test_bald_scores_an_example_only_the_models_disagree_on():
    # Example 0: each model is sure, model 0 of class 0, model 1 of class 1 (each one's own mutual
    # information is 0, their mean would be 0). Example 1: both sure of class 0.
    sure = np.array([[1.0, 0.0], [0.0, 1.0]])
    passes = np.stack([np.repeat(np.stack([sure[0], sure[0]])[None], 3, axis=0),
                       np.repeat(np.stack([sure[1], sure[0]])[None], 3, axis=0)])  # (T=2, K=3, U=2, C=2)
    np.testing.assert_allclose(committee_mutual_information(passes), [math.log(2), 0.0], atol=1e-15)


def test_bald_over_models_is_their_mean_mutual_information_plus_their_disagreement():
    passes = softmax_rows(np.random.default_rng(3).normal(size=(4, 5, 30, 3)))
    own = np.mean([committee_mutual_information(passes[t:t + 1]) for t in range(4)], axis=0)
    model_means = passes.mean(axis=1)  # (T, U, C)
    disagreement = scipy.stats.entropy(model_means.mean(0), axis=1) - scipy.stats.entropy(model_means, axis=2).mean(0)
    np.testing.assert_allclose(committee_mutual_information(passes), own + disagreement, rtol=1e-10, atol=1e-12)


def test_bald_takes_the_largest_scores_ties_to_the_lower_position():
    sure, torn = [[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]
    columns = [sure, torn, sure, torn, torn]  # per example: two passes' outputs
    passes = np.array(columns).transpose(1, 0, 2)[None]  # (1, K=2, U=5, C=2)
    assert bald(passes, 2).tolist() == [1, 3]


# ------------------------------------------------------------------------- MC dropout

def test_each_dropout_pass_zeroes_features_at_the_rate_and_scales_the_rest():
    # The linear layer copies the features to the first 8 logits and adds a ninth, always 0: the first
    # 8 logits, read from the log-probabilities against the ninth, are the features after dropout, 0
    # where dropped and h / (1 - rate) where kept.
    features = torch.linspace(1.0, 2.0, 8).repeat(3000, 1)
    copy = torch.nn.Linear(8, 9, bias=False)
    with torch.no_grad():
        copy.weight.copy_(torch.cat([torch.eye(8), torch.zeros(1, 8)]))
    logs = np.log(dropout_probs(features, 0.25, copy, 2, seed=7).astype(np.float64))
    logits = logs[:, :, :8] - logs[:, :, 8:]
    kept = logits > 1e-4
    assert abs(1 - kept.mean() - 0.25) < 0.01
    expected = np.broadcast_to(features.numpy() / 0.75, logits.shape)
    np.testing.assert_allclose(logits[kept], expected[kept], rtol=1e-4)
    assert (kept[0] != kept[1]).any()  # the two passes drew different masks


def test_mc_dropout_is_the_seeds_and_leaves_torchs_global_generator_alone():
    net = models.build_target("ofa0", 10, 0.1)
    images = torch.randint(0, 256, (6, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    set_batchnorm_statistics(net, images, 32, 3)  # else an untrained net's features are all ~0
    torch.manual_seed(3)
    state = torch.get_rng_state()
    first = mc_dropout_probs(net, images, 32, 4, passes=3, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(first, mc_dropout_probs(net, images, 32, 4, passes=3, seed=11))
    assert first.shape == (3, 6, 10) and not np.array_equal(first, mc_dropout_probs(net, images, 32, 4, 3, seed=12))
    assert not np.array_equal(first[0], first[1])


def test_dropout_on_features_is_found_where_the_nets_have_it():
    assert models.dropout_on_features(models.build_target("ofa0", 10, 0.1))[0] == 0.1
    assert models.dropout_on_features(models.build_target("mobilenet_v3_small", 10))[0] == 0.2
    assert models.dropout_on_features(models.build_target("resnet18", 10))[0] == 0.0


def test_bald_refuses_a_target_model_without_dropout(workdir):
    args = ["--dataset", "digits", "--model_num", "2", "--nets", "ofa0", "resnet18", "--preset", "quick",
            "--al_iter", "0", "--method", "bald", "--device", "cpu"]
    Run(settings_from_args(cli.parser("test").parse_args(args))).split(make_initial=True)
    result = run_script_here("al_select.py", *args)
    assert_clean_error(result, "target model 'resnet18' (net 1) has none on its penultimate features", "--nets")


def test_the_flags_reach_the_strategies_and_bad_ones_are_refused(workdir, capsys):
    args = ["--dataset", "digits", "--model_num", "2", "--preset", "quick", "--al_iter", "0", "--method", "badge",
            "--device", "cpu"]
    settings = settings_from_args(cli.select_args(args + ["--badge_width", "0", "--bald_passes", "50"]))
    assert settings.method_settings("bald").bald_passes == 50 and selection_options(Run(settings)).badge_width == 0
    defaults = settings_from_args(cli.select_args(args))
    assert (defaults.method_settings("bald").bald_passes, selection_options(Run(defaults)).badge_width) == (BALD_PASSES, BADGE_FEATURE_WIDTH)
    for flag, value, message in (("--bald_passes", "1", "--bald_passes must be at least 2"),
                                 ("--badge_width", "-1", "--badge_width must be 0")):
        with pytest.raises(SystemExit) as refused:
            cli.select_args(args + [flag, value])
        assert refused.value.code == 2 and message in capsys.readouterr().err


def test_both_are_in_every_comparison_and_outside_diams_family():
    from diam import analysis, grid, results

    help_text = run_script_here("al_select.py", "--help").stdout
    assert "badge, bald" in help_text and "--bald_passes" in help_text and "--badge_width" in help_text
    assert cli.iter_all_plan(["2", "digits", "badge bald", "", "--preset", "quick"]).splitlines()[2] == "badge bald"
    grid.check_args(*grid.parse_args(["--methods", "badge", "bald", "--datasets", "digits"]))
    assert [results.method_display_name(m) for m in ("badge", "bald")] == ["BADGE", "BALD"]
    assert not {"badge", "bald"} & set(analysis.FAMILY_METHODS)  # exploratory: raw p, marked so
