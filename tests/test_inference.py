"""The fast evaluation forward (issue 22): the same scores as the net as trained, faster.

Every pass over the pool and the test set runs an inference copy of the net (BatchNorm
folded, torch's hardswish, kernels cropped to their inputs). These tests hold it to
the plain forward on all 12 nets, untrained and briefly trained, check that the
training net is never touched, and run the eager paths of the CUDA-only pieces.
"""
import copy
import dataclasses

import numpy as np
import pytest
import torch
from ofa.utils.pytorch_modules import Hsigmoid, Hswish
from torch import nn

from diam import models, training
from diam.data import load_dataset
from diam.errors import UserError
from diam.inference import inference_copy
from diam.presets import PRESETS
from diam.speed import Speed, speed_from_environment
from diam.training import Record, cosine_rates, evaluate, predict, train_target_net

SIZE = 32  # the CPU presets' input size; small inputs keep this file fast
RELATIVE_TOLERANCE = 1e-4
TINY = dataclasses.replace(PRESETS["quick"], epochs=2, pool_size=1500, test_size=200, train_batch=20)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def briefly_trained(net_id: int, steps: int = 4) -> nn.Module:
    """Net `net_id` (he_fout) after a few SGD steps in train mode at a large rate: its weights and BatchNorm
    running statistics have moved away from their initial values."""
    torch.manual_seed(net_id)
    net = models.build_net(net_id)
    models.initialise(net, net_id)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(16, 3, SIZE, SIZE) * 2 + 0.5
        loss = nn.functional.cross_entropy(net(x), torch.randint(0, 10, (16,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


@pytest.mark.parametrize("trained", [False, True], ids=["he_fout", "trained"])
@pytest.mark.parametrize("net_id", range(12))
def test_the_fused_forward_gives_the_plain_forwards_logits_and_features(net_id, trained):
    if trained:
        net = briefly_trained(net_id)
    else:
        torch.manual_seed(net_id)
        net = models.build_net(net_id)
        models.initialise(net, net_id)
    plain = inference_copy(net, fold=False)
    fused = inference_copy(net, SIZE, fold=True)
    # Every BatchNorm folded, every OFA activation swapped for torch's.
    assert not any(isinstance(m, (nn.BatchNorm2d, Hswish, Hsigmoid)) for m in fused.modules())
    assert any(isinstance(m, nn.Hardswish) for m in fused.modules())
    if trained:  # the statistics the fold reads are not the initial ones
        assert not torch.equal(net.first_conv.bn.running_var, torch.ones_like(net.first_conv.bn.running_var))
    x = torch.randn(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(net_id)) * 1.5
    with torch.no_grad():
        plain_features, plain_logits = models.features_and_logits(plain, x)
        fused_features, fused_logits = models.features_and_logits(fused, x)
    assert relative_error(fused_logits, plain_logits) < RELATIVE_TOLERANCE
    assert relative_error(fused_features, plain_features) < RELATIVE_TOLERANCE


def test_kernels_reaching_past_their_inputs_are_cropped_to_the_taps_that_meet_them():
    conv = nn.Conv2d(3, 3, 5, padding=2, groups=3, bias=False).eval()  # images have 3 channels
    for side, kept in ((1, 1), (2, 3), (3, 5), (9, 5)):
        net = nn.Sequential(nn.AdaptiveAvgPool2d(side), conv)
        cropped = inference_copy(net, size=12, fold=False)
        assert cropped[1].kernel_size == (kept, kept) and cropped[1].padding == (kept // 2, kept // 2)
        x = torch.randn(4, 3, 12, 12)
        with torch.no_grad():
            torch.testing.assert_close(cropped(x), net(x), rtol=1e-5, atol=1e-6)
    # a stride-2 conv on a 2 x 2 input, as in the nets' last stages at 32 px
    strided = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Conv2d(3, 6, 5, stride=2, padding=2)).eval()
    cropped = inference_copy(strided, size=12, fold=False)
    assert cropped[1].kernel_size == (3, 3)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(cropped(x), strided(x), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def trained_net_and_pool():
    """Net 7 trained on digits as the loop trains it (a few epochs), and its pool."""
    preset = dataclasses.replace(TINY, epochs=4, train_batch=10, lr=0.1)
    data = load_dataset("digits", pool_size=preset.pool_size, test_size=preset.test_size)
    torch.manual_seed(0)
    net = models.build_net(7, data.n_classes, preset.dropout)
    models.initialise(net, 7)
    train_target_net(net, data, torch.arange(100), torch.arange(100, preset.pool_size), preset, SIZE,
                     Record(), stream=0)
    return net, data, preset


def test_a_trained_nets_pool_pass_keeps_its_labels_and_probabilities(trained_net_and_pool):
    net, data, preset = trained_net_and_pool
    fused = predict(net, data.pool_images, SIZE, preset.eval_batch, want_probs=True, want_features=True)
    plain = predict(net, data.pool_images, SIZE, preset.eval_batch, want_probs=True, want_features=True,
                    speed=Speed(scoring="plain"))
    assert len(np.unique(plain[0])) > 3  # the net tells the pool's images apart
    assert np.mean(fused[0] == plain[0]) >= 0.999
    np.testing.assert_allclose(fused[1], plain[1], atol=1e-4)
    np.testing.assert_allclose(fused[2].astype(np.float32), plain[2].astype(np.float32), rtol=2e-3, atol=2e-3)
    # and the test split's accuracy
    fused_accuracy = evaluate(net, data.test_images, data.test_labels, SIZE, preset.eval_batch)
    plain_accuracy = evaluate(net, data.test_images, data.test_labels, SIZE, preset.eval_batch,
                              speed=Speed(scoring="plain"))
    assert abs(fused_accuracy[0] - plain_accuracy[0]) <= 100 * 1 / len(data.test_labels)


def test_the_scoring_batch_changes_no_label_and_keeps_the_augmentations_draws(trained_net_and_pool):
    net, data, preset = trained_net_and_pool
    images = data.pool_images[:230]
    by_preset = predict(net, images, SIZE, 50, want_probs=True)
    by_other = predict(net, images, SIZE, 50, want_probs=True, speed=Speed(scoring_batch=96))
    np.testing.assert_array_equal(by_other[0], by_preset[0])
    np.testing.assert_allclose(by_other[1], by_preset[1], atol=1e-5)
    # Through the training augmentation (the original's quirk) the chunks stay the preset's batch,
    # so each image gets the crop, flip and brightness it always got.
    augmented = [predict(net, images, SIZE, 50, want_probs=True, generator=torch.Generator().manual_seed(3),
                         speed=speed) for speed in (Speed(), Speed(scoring_batch=96), Speed(scoring="plain"))]
    np.testing.assert_array_equal(augmented[1][1], augmented[0][1])
    assert np.mean(augmented[2][0] == augmented[0][0]) >= 0.999
    np.testing.assert_allclose(augmented[2][1], augmented[0][1], atol=1e-4)


@pytest.mark.parametrize("scoring", ["fused", "plain"])
def test_scoring_leaves_the_training_net_exactly_as_it_was(trained_net_and_pool, scoring):
    net, data, preset = trained_net_and_pool
    net.train()
    hook_calls = []
    hook = net.first_conv.register_forward_hook(lambda *args: hook_calls.append(1))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modules = dict(net.named_modules())
    try:
        speed = Speed(scoring=scoring)
        predict(net, data.pool_images[:120], SIZE, 50, want_probs=True, want_features=True, speed=speed)
        predict(net, data.pool_images[:120], SIZE, 50, generator=torch.Generator().manual_seed(1), speed=speed)
        evaluate(net, data.test_images, data.test_labels, SIZE, 50, speed=speed)
    finally:
        hook.remove()
    assert net.training and all(m.training for m in net.modules())  # still in train mode
    assert dict(net.named_modules()).keys() == modules.keys()
    assert all(modules[name] is module for name, module in net.named_modules())  # no module replaced
    for key, value in net.state_dict().items():  # weights and BatchNorm buffers, bit for bit
        assert torch.equal(value, state[key]), key
    assert all(p.requires_grad for p in net.parameters())
    assert not hook_calls  # the passes ran on a copy


@pytest.mark.parametrize("scoring", ["fused", "plain"])
def test_scoring_draws_nothing_from_torchs_generators(trained_net_and_pool, scoring):
    """Dropout draws from torch's global generator during training: a pass that drew from it (a new
    layer's initial weights, say) would change the training run around it."""
    net, data, preset = trained_net_and_pool
    before = torch.get_rng_state()
    predict(net, data.pool_images[:120], SIZE, 50, want_probs=True, want_features=True, speed=Speed(scoring=scoring))
    evaluate(net, data.test_images, data.test_labels, SIZE, 50, speed=Speed(scoring=scoring))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_net_trains_to_the_same_bits_whether_or_not_its_passes_score_the_pool():
    preset = dataclasses.replace(TINY, pool_size=300, epochs=3, dis_frac=0.7)
    data = load_dataset("digits", pool_size=preset.pool_size, test_size=preset.test_size)
    states = []
    for record in (Record(), Record(snapshots=True, probs=True, features=True)):
        torch.manual_seed(4)
        net = models.build_net(0, data.n_classes, preset.dropout)  # net 0: dropout, and kernels the copy crops
        models.initialise(net, 0)
        train_target_net(net, data, torch.arange(60), torch.arange(60, 300), preset, SIZE, record, stream=2)
        states.append(net.state_dict())
    for key, value in states[0].items():
        assert torch.equal(states[1][key], value), key


# ------------------------------------------------------------ the CUDA-only pieces' eager paths
def test_the_graphed_steps_rates_are_the_eager_schedules():
    net = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=7.5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=25)
    eager = []
    for _ in range(25):
        eager.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert cosine_rates(7.5e-3, 25) == eager


def test_the_graphed_training_step_run_eagerly_trains_as_the_default_step():
    """DIAM_CUDA_FAST=training_graphs: fused SGD reading a tensor rate; on the CPU nothing is recorded, so the
    same step runs eagerly and must land where the default foreach SGD and its scheduler land."""
    preset = dataclasses.replace(TINY, pool_size=200, epochs=3)
    data = load_dataset("digits", pool_size=preset.pool_size, test_size=preset.test_size)
    nets = []
    for speed in (Speed(), Speed(training_graphs=True)):
        torch.manual_seed(0)
        net = models.build_net(3, data.n_classes, dropout=0.0)
        models.initialise(net, 3)
        # 45 labels in batches of 20: two full steps and a short one per epoch
        train_target_net(net, data, torch.arange(45), torch.arange(45, 200), preset, SIZE, Record(), stream=0,
                         speed=speed)
        nets.append(net)
    default, graphed = (dict(n.state_dict()) for n in nets)
    for key, value in default.items():
        if value.is_floating_point():
            torch.testing.assert_close(graphed[key], value, rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(graphed[key], value), key  # BatchNorm's step counts: one per step, no extra
    assert default["first_conv.bn.num_batches_tracked"].item() == 3 * 3


# ------------------------------------------------------------ the switches
def test_the_speed_switches_are_read_from_the_environment():
    assert speed_from_environment({}) == Speed()
    speed = speed_from_environment({"DIAM_SCORING": "plain", "DIAM_SCORING_BATCH": "2000",
                                    "DIAM_CUDA_FAST": "benchmark, training_graphs,streams=3"})
    assert speed == Speed(scoring="plain", scoring_batch=2000, cudnn_benchmark=True, training_graphs=True,
                          concurrent_nets=3)
    every = speed_from_environment({"DIAM_CUDA_FAST": "all"})
    assert every.cudnn_benchmark and every.scoring_graphs and every.training_graphs and every.concurrent_nets == 4
    # on the CPU the CUDA pieces are off, whatever was asked
    assert every.on_device("cpu") == Speed()
    assert every.on_device("cuda") == every


@pytest.mark.parametrize("environ, message", [
    ({"DIAM_SCORING": "fast"}, "DIAM_SCORING='fast'"),
    ({"DIAM_SCORING_BATCH": "0"}, "DIAM_SCORING_BATCH must be a positive whole number"),
    ({"DIAM_SCORING_BATCH": "big"}, "DIAM_SCORING_BATCH must be a positive whole number"),
    ({"DIAM_CUDA_FAST": "graphs"}, "unknown piece 'graphs'"),
    ({"DIAM_CUDA_FAST": "streams=0"}, "must be a positive whole number"),
    ({"DIAM_CUDA_FAST": "benchmark=2"}, "unknown piece 'benchmark=2'"),
])
def test_a_bad_switch_is_a_one_paragraph_error(environ, message):
    with pytest.raises(UserError, match=message):
        speed_from_environment(environ)


def test_a_script_refuses_a_bad_switch_before_writing_anything(workdir):
    from conftest import assert_clean_error, run_script

    result = run_script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 0, "--model_num", 1,
                        "--preset", "quick", "--device", "cpu", cwd=workdir, env={"DIAM_SCORING": "fast"})
    assert_clean_error(result, "DIAM_SCORING")
    assert not (workdir / "runs").exists()


# ------------------------------------------------------------ on a GPU (the GPU check runs these)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_graphed_scoring_gives_the_eager_passes_labels(trained_net_and_pool):
    net, data, preset = trained_net_and_pool
    net = copy.deepcopy(net).cuda()
    images = data.pool_images.cuda()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    from diam.cuda_graphs import ScoringGraphs

    graphs = ScoringGraphs()
    eager = predict(net, images, SIZE, 500, want_probs=True, want_features=True)
    for _ in range(2):  # the second pass reuses the recorded graph with the weights loaded in place
        replayed = predict(net, images, SIZE, 500, want_probs=True, want_features=True, graphs=graphs)
        assert np.mean(replayed[0] == eager[0]) >= 0.999
        np.testing.assert_allclose(replayed[1], eager[1], atol=1e-4)
    with torch.no_grad():
        net.classifier.linear.bias.add_(torch.arange(10.0, device="cuda"))  # new weights: the graph must see them
    moved = predict(net, images, SIZE, 500, want_probs=True, graphs=graphs)
    np.testing.assert_allclose(moved[1], predict(net, images, SIZE, 500, want_probs=True)[1], atol=1e-4)


@cuda
def test_cuda_graphed_training_counts_every_step_once_and_lands_near_eager():
    preset = dataclasses.replace(TINY, pool_size=400, epochs=3)
    data = load_dataset("digits", pool_size=preset.pool_size, test_size=preset.test_size).to(torch.device("cuda"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    nets = []
    for speed in (Speed(), Speed(training_graphs=True)):
        torch.manual_seed(0)
        net = models.build_net(3, data.n_classes, dropout=0.0)
        models.initialise(net, 3)
        # 130 labels in batches of 20: six full steps (three eager, then the recording and its replays), one short
        train_target_net(net, data, torch.arange(130), torch.arange(130, 400, device="cuda"), preset, SIZE,
                         Record(), stream=0, speed=speed)
        nets.append(net)
    default, graphed = (dict(n.state_dict()) for n in nets)
    # The capture's warm-up is real steps: BatchNorm has seen exactly one batch per step.
    assert graphed["first_conv.bn.num_batches_tracked"].item() == 7 * 3
    for key, value in default.items():
        if value.is_floating_point():
            torch.testing.assert_close(graphed[key], value, rtol=1e-3, atol=1e-4, msg=key)
