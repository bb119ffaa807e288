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
small_convs
           In training mode, the convs whose inputs are tiny run as the products they are: a
           1 x 1 conv on a 1 x 1 input (the squeeze-and-excitation layers at every size, the last
           stages at 32 px) as a matrix product, which oneDNN's conv backward computes 2x slower at
           batch 25; a depthwise conv on an input of at most 2 x 2 as a sum of its shifted inputs
           times its taps (oneDNN's per-group path again; compiled, the sum is one fused kernel).
           The same sums in another order; the net's parameters keep their shapes, and passes in
           eval mode run the conv as it was.
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


# The largest input (height x width) a depthwise conv runs as a shifted sum on: at 2 x 2 the sum is
# 1.4-3.4x faster than oneDNN's conv forward and backward (3 x 3 kernels, batch 25, compiled); at 4 x 4
# it is 1.4-4x slower.
SHIFTED_SUM_MAX_PIXELS = 4


class SmallInputConv2d(TapCroppedConv2d):
    """A conv on a tiny input computed, in training mode, as the product it is (`small_convs_`):
    `product` is "matrix" (a 1 x 1 kernel on a 1 x 1 input) or "shifted" (a depthwise conv on an
    input of at most SHIFTED_SUM_MAX_PIXELS pixels). The kept taps and padding are the crop's when
    crop_taps made them, the full kernel's otherwise."""

    product: str

    def _conv_forward(self, input, weight, bias):
        if not self.training:
            return super()._conv_forward(input, weight, bias)
        weight = weight[:, :, self.rows, self.cols]
        if self.product == "matrix":
            return F.linear(input.flatten(1), weight.flatten(1), bias)[:, :, None, None]
        return shifted_depthwise(input, weight, bias, self.stride, self.cropped_padding)


def shifted_depthwise(x: torch.Tensor, weight: torch.Tensor, bias, stride: tuple, padding: tuple) -> torch.Tensor:
    """A depthwise (one filter per channel), undilated conv as the sum over its taps of the shifted,
    strided input times the tap: the conv's own sums, in another order."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[-2:], stride, padding
    out_h, out_w = (x.shape[-2] + 2 * ph - kh) // sh + 1, (x.shape[-1] + 2 * pw - kw) // sw + 1
    padded = F.pad(x, (pw, pw, ph, ph))
    taps = weight[:, 0, :, :, None, None]  # (C, kh, kw, 1, 1)
    out = None
    for i in range(kh):
        for j in range(kw):
            term = padded[:, :, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw] * taps[:, i, j]
            out = term if out is None else out + term
    return out if bias is None else out + bias[:, None, None]


def small_convs_(net: nn.Module, size: int, shifted: bool = True) -> int:
    """Make every Conv2d of `net` that meets a tiny input at size x size images a SmallInputConv2d (in
    place, parameters untouched, after crop_taps_ if that ran); returns how many were changed. Like
    crop_taps_, the net then serves that input size only. `shifted=False` leaves the depthwise convs
    as they are: uncompiled, a shifted sum runs one operation a tap (a step of net 0 at batch 25, eager,
    crop_taps: 146 ms, 163 ms with the shifted sums, 126 ms with the 1 x 1 products alone)."""
    changed = 0
    for conv, (height, width) in conv_input_sizes(net, size).items():
        if type(conv) not in (nn.Conv2d, TapCroppedConv2d) or conv.dilation != (1, 1) \
                or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        cropped = type(conv) is TapCroppedConv2d
        rows, cols = (conv.rows, conv.cols) if cropped else (slice(None), slice(None))
        padding = conv.cropped_padding if cropped else conv.padding
        kernel = (len(range(*rows.indices(conv.kernel_size[0]))), len(range(*cols.indices(conv.kernel_size[1]))))
        if (height, width) == (1, 1) and kernel == (1, 1) and padding == (0, 0) and conv.groups == 1:
            product = "matrix"
        elif shifted and conv.groups == conv.in_channels == conv.out_channels \
                and height * width <= SHIFTED_SUM_MAX_PIXELS:
            product = "shifted"
        else:
            continue
        conv.__class__ = SmallInputConv2d
        conv.rows, conv.cols, conv.cropped_padding, conv.product = rows, cols, padding, product
        changed += 1
    return changed


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


def apply_cpu_pieces(net: nn.Module, size: int, speed) -> None:
    """`net`, about to train on size x size images, changed in place as `speed`'s CPU pieces ask: its
    taps cropped, then its tiny-input convs swapped (the shifted sums only for a compiled step:
    eager, they are slower than oneDNN). A `speed` off the CPU has these pieces off (Speed.on_device)."""
    if speed.crop_taps:
        crop_taps_(net, size)
    if speed.small_convs:
        small_convs_(net, size, shifted=speed.compile)


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
