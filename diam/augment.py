"""SPEC section 3 transforms, applied to whole uint8 batches on the model's device.

Per-image PIL transforms in DataLoader workers would dominate the cost of these
small nets; here a batch is cropped, resized, flipped and jittered in a handful of
tensor operations, with random parameters drawn per sample.
"""
import math

import torch
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = (3 / 4, 4 / 3)
BRIGHTNESS = 32 / 255
EVAL_CROP_FRACTION = 0.875
# A grayscale pool is fed as three identical channels, so the SPEC's saturation jitter (a
# blend with the image's own grayscale) is the identity and is skipped; a colour pool (a
# dataset file's) gets it, after the brightness jitter (torchvision's ColorJitter draws
# their order at random: a clamp between them is all the order changes).
SATURATION = 0.5
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) grayscale or (B, 3, H, W) colour -> float (B, C, H, W) in [0, 1]."""
    return (images.unsqueeze(1) if images.ndim == 3 else images).float().div_(255)


def _normalize(gray: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, S, S) in [0, 1] -> (B, 3, S, S) normalised with ImageNet statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=gray.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=gray.device).view(1, 3, 1, 1)
    return (gray.expand(-1, 3, -1, -1) - mean) / std


def eval_transform(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ceil(size / 0.875), center-crop to size, normalise."""
    gray = _as_float(images)
    resized = TF.resize(gray, [math.ceil(size / EVAL_CROP_FRACTION)] * 2, antialias=True)
    return _normalize(TF.center_crop(resized, [size, size]))


def random_crop_boxes(n: int, height: int, width: int, generator: torch.Generator, scale_min: float = 0.08,
                      attempts: int = 10):
    """Per-sample random-resized-crop boxes (x1, y1, x2, y2), torchvision's sampling rule.

    Each sample tries `attempts` (area, aspect) draws and keeps the first that fits;
    a sample with no fitting draw falls back to the whole image.
    """
    dev = generator.device
    area = height * width * torch.empty(n, attempts, device=dev).uniform_(scale_min, 1.0, generator=generator)
    log_ratio = torch.empty(n, attempts, device=dev).uniform_(
        math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).round()
    h = torch.sqrt(area / ratio).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1)  # index of the first fitting draw (0 if none fits)
    any_fit = fits.any(dim=1)
    rows = torch.arange(n, device=dev)
    w = torch.where(any_fit, w[rows, first], torch.full_like(w[:, 0], width))
    h = torch.where(any_fit, h[rows, first], torch.full_like(h[:, 0], height))
    # top-left corner uniform over the valid integer positions
    y1 = torch.floor(torch.rand(n, device=dev, generator=generator) * (height - h + 1))
    x1 = torch.floor(torch.rand(n, device=dev, generator=generator) * (width - w + 1))
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def train_transform(images: torch.Tensor, size: int, generator: torch.Generator,
                    crop_scale_min: float = 0.08) -> torch.Tensor:
    """Random-resized-crop (area scale crop_scale_min..1), horizontal flip, brightness (and, for
    colour, saturation) jitter, normalise."""
    n, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    gray = _as_float(images)
    boxes = random_crop_boxes(n, height, width, generator, crop_scale_min).to(gray.dtype)
    batch_index = torch.arange(n, device=gray.device, dtype=gray.dtype).unsqueeze(1)
    # roi_align with aligned=True resamples each box bilinearly onto a size x size grid.
    crops = roi_align(gray, torch.cat([batch_index, boxes], dim=1), output_size=size,
                      spatial_scale=1.0, sampling_ratio=2, aligned=True)
    flip = torch.rand(n, device=gray.device, generator=generator) < 0.5
    crops = torch.where(flip.view(n, 1, 1, 1), crops.flip(-1), crops)
    brightness = torch.empty(n, 1, 1, 1, device=gray.device).uniform_(
        1 - BRIGHTNESS, 1 + BRIGHTNESS, generator=generator)
    crops = (crops * brightness).clamp_(0, 1)
    if crops.shape[1] == 3:
        saturation = torch.empty(n, 1, 1, 1, device=gray.device).uniform_(
            1 - SATURATION, 1 + SATURATION, generator=generator)
        luma = (crops * torch.tensor(GRAY_WEIGHTS, device=gray.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        crops = (luma + saturation * (crops - luma)).clamp_(0, 1)
    return _normalize(crops)
