"""The evaluation forward of every pass over the pool and the test set, made cheaper
without changing what it computes.

A pass runs an *inference copy* of the net: BatchNorm folded into the convolution
before it (eval-mode BatchNorm is an affine map per channel, so conv followed by it is
one conv with a bias), OFA's Hswish/Hsigmoid (three or four elementwise kernels each)
replaced by torch's hardswish/hardsigmoid (the same formula in one kernel), and kernels
cropped to the taps that can meet their input at the pass's image size. The results
differ from the plain forward only by float rounding. The training net is never
touched: the copy has its own tensors, and making it draws no random numbers.
"""
import copy
from typing import Optional

import torch
from ofa.utils.layers import My2DLayer
from ofa.utils.pytorch_modules import Hsigmoid, Hswish
from torch import nn
from torch.nn.utils import skip_init
from torch.nn.utils.fusion import fuse_conv_bn_eval

# The containers whose forward runs their children in order (OFA's layers and nn.Sequential):
# only there does a Conv2d followed by a BatchNorm2d mean "BatchNorm of that conv's output".
IN_ORDER_CONTAINERS = (nn.Sequential, My2DLayer)


def fold_batchnorm_(net: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d into the Conv2d just before it; returns how many were folded.

    The BatchNorm is replaced by an Identity, so module names (and so the copy's layout)
    stay those of the original.
    """
    folded = 0
    for module in net.modules():
        if not isinstance(module, IN_ORDER_CONTAINERS):
            continue
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def swap_hard_activations_(net: nn.Module) -> int:
    """Replace OFA's Hswish/Hsigmoid by nn.Hardswish/nn.Hardsigmoid; returns how many were replaced."""
    swapped = 0
    for module in net.modules():
        for name, child in module.named_children():
            if isinstance(child, Hswish):
                setattr(module, name, nn.Hardswish())
            elif isinstance(child, Hsigmoid):
                setattr(module, name, nn.Hardsigmoid())
            else:
                continue
            swapped += 1
    return swapped


@torch.no_grad()
def conv_input_sizes(net: nn.Module, size: int) -> dict:
    """The spatial size (h, w) of every Conv2d's input when `net` sees size x size images. The probe
    runs in eval mode (no dropout draw, no BatchNorm statistics updated); the net's mode is restored."""
    sizes, hooks, training = {}, [], net.training
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args: sizes.__setitem__(m, tuple(args[0].shape[-2:]))))
    try:
        net.eval()
        param = next(net.parameters())
        net(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(training)
    return sizes


def kept_taps(conv: nn.Conv2d, height: int, width: int):
    """(rows, cols, padding): the kernel taps of `conv` that can meet an h x w input and the padding left
    around them; None when every tap can, or when the conv is not a centred, zero-padded, undilated one.

    An output position sees the input at offsets -p..+p of its centre; an offset larger
    than the input's extent minus one lands in the padding for every output, so its taps
    multiply zeros. Dropping them (and as much padding) keeps the output's size and values.
    """
    if conv.padding_mode != "zeros" or conv.dilation != (1, 1) or isinstance(conv.padding, str):
        return None
    keep = []
    for k, p, extent in zip(conv.kernel_size, conv.padding, (height, width)):
        if k % 2 == 0 or p != k // 2:
            return None  # only the centred, "same"-padded kernels these nets use
        keep.append(min(p, extent - 1))
    if tuple(keep) == tuple(conv.padding):
        return None
    (kh, kw), (rh, rw) = conv.kernel_size, keep
    return slice(kh // 2 - rh, kh // 2 + rh + 1), slice(kw // 2 - rw, kw // 2 + rw + 1), tuple(keep)


def _cropped(conv: nn.Conv2d, height: int, width: int):
    """`conv` without the kernel taps that can only ever meet zero padding on an h x w input
    (`kept_taps`), or None. At the CPU presets' 32 px the last stages' inputs are 1 x 1 or
    2 x 2 while their depthwise kernels are 5 x 5 or 7 x 7, and oneDNN's depthwise kernel is
    slowest exactly there (a 5 x 5 depthwise conv over 500 x 640 x 1 x 1 measured 64 ms; its
    centre tap alone 0.5 ms).
    """
    kept = kept_taps(conv, height, width)
    if kept is None:
        return None
    rows, cols, padding = kept
    # skip_init: a new module would otherwise draw its initial weights from torch's global generator,
    # the one dropout draws from during training, and so change the training run around the pass.
    trimmed = skip_init(nn.Conv2d, conv.in_channels, conv.out_channels, (rows.stop - rows.start,
                        cols.stop - cols.start), conv.stride, padding, groups=conv.groups,
                        bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        trimmed.weight.copy_(conv.weight[:, :, rows, cols])
        if conv.bias is not None:
            trimmed.bias.copy_(conv.bias)
    trimmed.requires_grad_(conv.weight.requires_grad)
    return trimmed


def crop_kernels_(net: nn.Module, size: int) -> int:
    """Crop every conv's kernel to the taps that can meet its input at size x size images
    (`_cropped`); returns how many convs were cropped. The copy then serves that size only."""
    input_sizes = conv_input_sizes(net, size)
    cropped = 0
    for module in list(net.modules()):
        for name, child in module.named_children():
            if child in input_sizes:
                trimmed = _cropped(child, *input_sizes[child])
                if trimmed is not None:
                    trimmed.train(child.training)
                    setattr(module, name, trimmed)
                    cropped += 1
    return cropped


def inference_copy(net: nn.Module, size: Optional[int] = None, fold: bool = True) -> nn.Module:
    """An eval-mode copy of `net` for passes over images, with no gradients.

    `fold` folds BatchNorm and swaps the hard activations; `size` (the input size the
    copy will see) crops kernels that reach beyond their inputs. `net` itself is left
    exactly as it was.
    """
    twin = copy.deepcopy(net)
    for module in twin.modules():  # hooks instrument the training net, not this copy (deepcopy copied them)
        for hooks in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                      module._backward_pre_hooks):
            hooks.clear()
    twin.eval()
    twin.requires_grad_(False)
    if fold:
        fold_batchnorm_(twin)
        swap_hard_activations_(twin)
    if size is not None:
        crop_kernels_(twin, size)
    return twin
