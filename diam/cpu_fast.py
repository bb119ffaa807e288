"""Faster training steps on the CPU, the same computation up to float rounding (DIAM_CPU_FAST).

Two pieces, each off unless asked for (diam/speed.py):

crop_taps  At the CPU presets' 32 px the last stages' inputs are 1 x 1 or 2 x 2 while their
           depthwise kernels are 3 x 3 to 7 x 7: most taps only ever meet zero padding. oneDNN
           then computes the weight gradient with a generic per-group GEMM (4-5 ms for one
           960-channel layer at batch 25; 0.5 ms with the centre tap alone). Such a conv runs
           with the taps that can meet its input, as a slice of its own weight: the forward is
           the same to the bit, the weight gradient of the dropped taps is exactly zero, as it
           is for the full kernel, and the kept taps' gradient is summed in another order.
           The net's parameters, and so its checkpoint, keep their full shape.
compile    The forward and the loss of a training step through torch.compile (Inductor's C++
           kernels; the backward through AOTAutograd), compiled once per architecture and
           input shape in a process and kept on disk by Inductor ($TORCHINDUCTOR_CACHE_DIR,
           default /tmp/torchinductor_<user>), so that a later process loads it in seconds. Dropout keeps
           torch's own random numbers (fallback_random), so the masks are eager mode's.
"""
import torch
from torch import nn
from torch.nn import functional as F

from .inference import conv_input_sizes, kept_taps


class TapCroppedConv2d(nn.Conv2d):
    """A Conv2d that multiplies only the kernel taps that can meet its input at one input size.

    Made from a net's own Conv2d by `crop_taps_` (its class is swapped, its parameters kept):
    `rows`/`cols` select the kept taps of the full weight, `cropped_padding` is the padding
    left around them."""

    rows: slice
    cols: slice
    cropped_padding: tuple

    def _conv_forward(self, input, weight, bias):
        return F.conv2d(input, weight[:, :, self.rows, self.cols], bias, self.stride, self.cropped_padding,
                        self.dilation, self.groups)


def crop_taps_(net: nn.Module, size: int) -> int:
    """Make every Conv2d of `net` whose taps partly meet only padding at size x size inputs a
    TapCroppedConv2d (in place, parameters untouched); returns how many were changed. The net then
    serves that input size only, as the training run that calls this does."""
    changed = 0
    for conv, (height, width) in conv_input_sizes(net, size).items():
        kept = kept_taps(conv, height, width)
        if kept is None or type(conv) is not nn.Conv2d:
            continue
        conv.__class__ = TapCroppedConv2d
        conv.rows, conv.cols, conv.cropped_padding = kept
        changed += 1
    return changed


def _forward_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return F.cross_entropy(net(x).float(), y, label_smoothing=label_smoothing)


_compiled_forward_loss = None


def compiled_forward_loss():
    """`f(net, x, y, label_smoothing) -> loss`, compiled once per process and reused for every net
    (the net is an argument: a new net of an architecture already seen does not compile again)."""
    global _compiled_forward_loss
    if _compiled_forward_loss is None:
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True  # dropout draws as in eager mode, from torch's generator
        _compiled_forward_loss = torch.compile(_forward_loss, dynamic=False)
    return _compiled_forward_loss
