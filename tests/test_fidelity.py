"""SPEC section 8: what the original code actually ran, as defaults or behind --original_quirks.

he_fout initial weights, the original's uncertainty scaling, one random stream per net,
DIAM's random tie-break (in test_strategies.py), fp32 by default, and the one switch.
"""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_clean_error, run_script
from diam import cli, models, training
from diam.settings import settings_from_args
from diam.experiment import train_step
from diam.run import Run
from diam.presets import preset_from_args
from diam.methods import METHODS, UncertaintySettings
from diam.pool import Pool
from diam.strategies import smallest_scaled_average

TINY = ["--preset", "quick", "--epochs", "2", "--initial_labeled", "40", "--pool_size", "300",
        "--test_size", "100", "--device", "cpu"]


# ------------------------------------------------------------ he_fout initial weights

def within_sampling_error(values: torch.Tensor, expected_std: float) -> bool:
    """The sample std of n normal draws is within 6 standard errors (std / sqrt(2n)) of the true one."""
    n = values.numel()
    return abs(values.std().item() - expected_std) < 6 * expected_std / math.sqrt(2 * n)


def test_he_fout_follows_the_rule_on_every_layer_of_a_real_ofa_net():
    torch.manual_seed(0)
    net = models.build_net(0)
    assert models.initialise(net, 0, "he_fout") == "he_fout"
    checked = {"conv": 0, "norm": 0, "linear": 0}
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            expected = math.sqrt(2.0 / (kh * kw * module.out_channels))
            if module.weight.numel() >= 200:  # too few draws say nothing about a std
                assert within_sampling_error(module.weight, expected), module
                assert abs(module.weight.mean().item()) < 6 * expected / math.sqrt(module.weight.numel())
                checked["conv"] += 1
            assert module.bias is None or not module.bias.any()
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert not module.bias.any()
            checked["norm"] += 1
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            assert module.weight.abs().max().item() <= bound
            assert within_sampling_error(module.weight, bound / math.sqrt(3))  # std of U(-b, b)
            assert module.bias is None or not module.bias.any()
            checked["linear"] += 1
    assert checked["conv"] > 40 and checked["norm"] > 40 and checked["linear"] == 1


def test_he_fout_differs_from_pytorchs_default():
    torch.manual_seed(0)
    he, default = models.build_net(7), models.build_net(7)
    models.initialise(he, 7, "he_fout")
    models.initialise(default, 7, "pytorch")
    # Depthwise convs tell them apart: he_fout's std is sqrt(2 / (k * k * channels)), PyTorch's
    # 1 / sqrt(3 * k * k) (one input channel per group).
    depthwise = [name for name, m in he.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    name = max(depthwise, key=lambda n: he.get_submodule(n).weight.numel())
    conv = he.get_submodule(name)
    he_fout_std = math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))
    assert within_sampling_error(conv.weight, he_fout_std)
    assert not within_sampling_error(default.get_submodule(name).weight, he_fout_std)


def test_default_training_records_he_fout_and_warns_about_no_weights(tmp_path):
    result = run_script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 0, "--model_num", 1,
                        *TINY, "--work_dir", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower() and "weights" not in result.stderr.lower(), result.stderr
    info = json.loads((tmp_path / "runs/quick/digits/models/iter0/net0.json").read_text())
    assert info["init"] == "he_fout" and info["precision"] == "fp32" and info["mode"] == "corrected"
    config = json.loads((tmp_path / "runs/quick/digits/config.json").read_text())
    assert config["init"] == "he_fout" and config["mode"] == "corrected" and config["bf16"] is False


# ------------------------------------------------------------ the original's uncertainty scaling

@pytest.mark.parametrize("method", ["least_conf", "margin", "entropy"])
def test_original_uncertainty_is_the_seeded_shuffle_whatever_the_probabilities(method):
    rng = np.random.default_rng(3)
    inputs = [Pool(50, unlabeled_probs=rng.dirichlet(np.ones(10) * a, size=(3, 50))) for a in (0.1, 5)]
    quirk = UncertaintySettings(original_uncertainty=True)
    batches = [METHODS[method].select(x, 7, np.random.default_rng(11), quirk) for x in inputs]
    shuffle_first_seven = np.random.default_rng(11).permutation(50)[:7]
    for batch in batches:
        np.testing.assert_array_equal(batch, shuffle_first_seven)


@pytest.mark.parametrize("method", ["least_conf", "margin", "entropy"])
def test_corrected_uncertainty_picks_by_score(method):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=(3, 50))
    batch = METHODS[method].select(Pool(50, unlabeled_probs=probs), 7, np.random.default_rng(11),
                                   UncertaintySettings())
    scores = {"least_conf": probs.max(2), "entropy": (probs * np.log(probs)).sum(2),
              "margin": np.sort(probs, 2)[:, :, -1] - np.sort(probs, 2)[:, :, -2]}[method]
    np.testing.assert_array_equal(batch, smallest_scaled_average(scores, 7))
    assert set(batch) != set(np.random.default_rng(11).permutation(50)[:7])


# ------------------------------------------------------------ one random stream per net

def tiny_run(work_dir, *extra):
    args = cli.parser("test").parse_args(["--dataset", "digits", "--al_iter", "0", "--model_num", "2",
                                          "--method", "random", "--work_dir", str(work_dir), *TINY, *extra])
    return Run(settings_from_args(args))


def test_nets_of_one_iteration_draw_their_own_augmentation_and_a_rerun_is_bit_identical(tmp_path, monkeypatch):
    first_batches = {}
    real_transform = training.train_transform

    def recording_transform(images, size, generator, crop_scale_min):
        out = real_transform(images, size, generator, crop_scale_min)
        first_batches.setdefault(current_net[0], out.clone())
        return out

    monkeypatch.setattr(training, "train_transform", recording_transform)
    current_net = [None]
    for net_id in (0, 1):
        current_net[0] = net_id
        train_step(tiny_run(tmp_path / "a"), net_id)
    # The same labeled set, but another epoch order and other crops, flips and jitter.
    assert not torch.equal(first_batches[0], first_batches[1])
    assert training.stream_seed(0, 0) != training.stream_seed(0, 1) != training.stream_seed(1, 1)

    current_net[0] = "rerun"
    train_step(tiny_run(tmp_path / "b"), 0)
    assert torch.equal(first_batches[0], first_batches["rerun"])
    saved = [torch.load(tmp_path / f"{w}/quick/digits/models/iter0/net0.pt", weights_only=True) for w in "ab"]
    assert all(torch.equal(saved[0]["state_dict"][k], v) for k, v in saved[1]["state_dict"].items())
    with np.load(tmp_path / "a/quick/digits/models/iter0/net0_pool.npz") as a, \
            np.load(tmp_path / "b/quick/digits/models/iter0/net0_pool.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


# ------------------------------------------------------------ precision and the one switch

def test_fp32_is_the_default_and_bf16_a_flag():
    parse = lambda *flags: preset_from_args(cli.parser("t").parse_args(  # noqa: E731
        ["--dataset", "digits", "--method", "random", "--al_iter", "0", "--model_num", "1", *flags]))
    assert parse().bf16 is False and parse("--bf16").bf16 is True
    dtypes = []
    net = models.build_net(7).eval()
    real_forward = training.features_and_logits  # passes run a copy of the net: watch the forward they call

    def watched_forward(model, x):
        features, logits = real_forward(model, x)
        dtypes.append(features.dtype)
        return features, logits
    images = torch.randint(0, 255, (4, 28, 28), dtype=torch.uint8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "features_and_logits", watched_forward)
        for bf16 in (False, True):
            training.predict(net, images, 32, 4, bf16=bf16)
    assert dtypes == [torch.float32, torch.bfloat16]


def test_original_quirks_turns_on_every_quirk_and_each_stays_available_alone():
    parse = lambda *flags: preset_from_args(cli.parser("t").parse_args(  # noqa: E731
        ["--dataset", "digits", "--method", "random", "--al_iter", "0", "--model_num", "1", *flags]))
    original = parse("--original_quirks")
    # SPEC section 8's four, spelt out here rather than read from presets.ORIGINAL_QUIRKS (a quirk
    # dropped there would be dropped from the expectation too).
    assert (original.test_at_net0_size, original.score_with_train_aug, original.shuffle_epochs,
            original.original_uncertainty) == (True, True, False, True)
    assert original.mode == "original" and parse().mode == "corrected"
    alone = parse("--original_uncertainty")
    assert alone.original_uncertainty and not alone.score_with_train_aug and alone.mode == "custom"


def test_a_run_folder_refuses_to_mix_modes(tmp_path):
    common = ["--dataset", "digits", "--al_iter", 0, "--model_num", 1, *TINY, "--work_dir", tmp_path / "runs"]
    first = run_script("train_net.py", "--net_id", 0, *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = sorted(p for p in (tmp_path / "runs").rglob("*"))
    second = run_script("al_select.py", "--method", "entropy", *common, "--original_quirks", cwd=tmp_path)
    assert second.returncode == 2
    assert_clean_error(second, "'corrected' mode", "'original' mode")
    assert sorted(p for p in (tmp_path / "runs").rglob("*")) == before
    assert json.loads((tmp_path / "runs/quick/digits/config.json").read_text())["mode"] == "corrected"
