"""DIAM_CPU_FAST: the training step's CPU pieces compute what the plain step computes, up to rounding."""
import copy

import pytest
import torch
from torch import nn

from diam import cpu_fast, models
from diam.errors import UserError
from diam.inference import inference_copy
from diam.speed import Speed, speed_from_environment


def _net(seed=0):
    torch.manual_seed(seed)
    net = models.build_net(0, 10, 0.1)
    models.initialise(net, 0)
    return net


def _train_losses(*nets):
    """Each net's training loss on one batch, with the same dropout mask, its gradients left in place."""
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 10
    losses = []
    for net in nets:
        net.train()
        torch.manual_seed(2)  # the same dropout mask for every net
        losses.append(nn.functional.cross_entropy(net(x), y))
        losses[-1].backward()
    return losses


def test_cropped_taps_compute_the_same_forward_and_keep_the_nets_parameters():
    plain = _net()
    cropped = copy.deepcopy(plain)
    changed = cpu_fast.crop_taps_(cropped, 32)
    # At 32 px the last stages see 2 x 2 and 1 x 1 inputs with 3 x 3 to 7 x 7 depthwise kernels.
    assert changed >= 4 and sum(isinstance(m, cpu_fast.TapCroppedConv2d) for m in cropped.modules()) == changed
    assert {k: v.shape for k, v in cropped.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    losses = _train_losses(plain, cropped)
    assert torch.equal(losses[0], losses[1])  # the dropped taps only ever multiplied zeros
    for (name, p), q in zip(plain.named_parameters(), cropped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)  # another order of sums
    tap = next(m for m in cropped.modules() if isinstance(m, cpu_fast.TapCroppedConv2d))
    outside = torch.ones_like(tap.weight.grad, dtype=torch.bool)
    outside[:, :, tap.rows, tap.cols] = False
    assert outside.any() and (tap.weight.grad[outside] == 0).all()
    # Passes over images (an inference copy at the same size) give what the plain net's copy gives.
    x_eval = torch.randn(4, 3, 32, 32)
    assert torch.equal(inference_copy(cropped.eval(), 32)(x_eval), inference_copy(plain.eval(), 32)(x_eval))


def test_cropping_leaves_a_net_whose_every_tap_meets_its_input_as_it_is():
    net = _net()
    assert cpu_fast.crop_taps_(net, 224) == 0 and not any(isinstance(m, cpu_fast.TapCroppedConv2d)
                                                          for m in net.modules())


@pytest.mark.parametrize("stride,padding,size", [(1, 1, 2), (2, 1, 2), (1, 0, 2), (2, 3, 4), (1, 2, 3), (2, 0, 1)])
def test_a_shifted_sum_is_the_depthwise_conv(stride, padding, size):
    g = torch.Generator().manual_seed(stride * 10 + padding)
    kernel = 2 * padding + 1 if padding else 1
    x, w, b = torch.randn(3, 5, size, size + 1, generator=g), torch.randn(5, 1, kernel, kernel, generator=g), \
        torch.randn(5, generator=g)
    expected = nn.functional.conv2d(x, w, b, stride, padding, groups=5)
    got = cpu_fast.shifted_depthwise(x, w, b, (stride, stride), (padding, padding))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("crop_first", [True, False])
def test_small_convs_train_as_the_plain_net_and_pass_over_images_as_it_does(crop_first):
    plain = _net()
    small = copy.deepcopy(plain)
    if crop_first:
        cpu_fast.crop_taps_(small, 32)
    changed = cpu_fast.small_convs_(small, 32)
    products = [m.product for m in small.modules() if isinstance(m, cpu_fast.SmallInputConv2d)]
    # 32 px: the squeeze-and-excitation layers and the last stages' 1 x 1 convs meet 1 x 1 inputs,
    # the last stages' depthwise convs 2 x 2 and 1 x 1 ones.
    assert len(products) == changed and {"matrix", "shifted"} <= set(products)
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    # In eval mode the convs run as they were: passes over images are the plain net's to the bit.
    x_eval = torch.randn(4, 3, 32, 32)
    assert torch.equal(small.eval()(x_eval), plain.eval()(x_eval))
    assert torch.equal(inference_copy(small, 32)(x_eval), inference_copy(plain, 32)(x_eval))
    losses = _train_losses(plain, small)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)  # the same sums in another order
    # Rounding grows through train-mode BatchNorm at batch 6 to ~5e-5 of a gradient's scale in the first
    # layers (and the biases just before a BatchNorm, whose gradient is zero, hold ~1e-7 of noise);
    # a misplaced tap or a transposed product would be off by the gradient's whole scale, 1e-3 to 10.
    for (name, p), q in zip(plain.named_parameters(), small.parameters()):
        assert (q.grad - p.grad).abs().max() <= 1e-3 * p.grad.abs().max() + 1e-6, name


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.conv(x))).mean((2, 3))))


def test_the_compiled_loss_is_the_eager_loss_with_the_same_dropout_and_compiles_once_per_architecture(tmp_path,
                                                                                                      monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(cpu_fast, "_compiled_forward_loss", None)
    compiled = cpu_fast.compiled_forward_loss()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    frames = None
    for seed in (0, 1):  # two nets of one architecture: the second one reuses the first one's code
        torch.manual_seed(seed)
        net = _Small().train()
        twin = copy.deepcopy(net)
        torch.manual_seed(5)
        eager = nn.functional.cross_entropy(net(x), y, label_smoothing=0.1)
        torch.manual_seed(5)
        fast = compiled(twin, x, y, 0.1)
        torch.testing.assert_close(fast, eager)  # the same dropout mask: a different one moves the loss far
        eager.backward()
        fast.backward()
        for p, q in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(twin.bn.running_mean, net.bn.running_mean)  # buffers updated as in eager mode
        if frames is None:
            frames = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == frames


def test_the_cpu_pieces_are_read_from_the_environment_and_act_on_the_cpu_only():
    assert speed_from_environment({"DIAM_CPU_FAST": "crop_taps"}) == Speed(crop_taps=True)
    both = speed_from_environment({"DIAM_CPU_FAST": "all"})
    assert both == speed_from_environment({"DIAM_CPU_FAST": " compile, crop_taps,small_convs "}) \
        == Speed(crop_taps=True, compile=True, small_convs=True)
    assert both.on_device("cpu") == both and both.on_device("cuda") == Speed()
    with pytest.raises(UserError, match="unknown piece 'jit'"):
        speed_from_environment({"DIAM_CPU_FAST": "jit"})


def test_a_training_net_takes_the_shifted_sums_only_when_its_step_is_compiled():
    def products(speed):
        net = _net()
        cpu_fast.apply_cpu_pieces(net, 32, speed)
        return {m.product for m in net.modules() if isinstance(m, cpu_fast.SmallInputConv2d)}

    assert products(Speed()) == set() and products(Speed(crop_taps=True)) == set()
    assert products(Speed(small_convs=True)) == {"matrix"}  # eager, a shifted sum is slower than oneDNN's conv
    assert products(Speed(crop_taps=True, compile=True, small_convs=True)) == {"matrix", "shifted"}
