"""BALD's Monte Carlo dropout passes over the pool (docs/badge_bald.md).

The nets' own dropout acts on their penultimate features, just before the last linear layer (the OFA
nets' classifier: dropout 0.1, then linear). Everything before it is deterministic in eval mode, so
the features are computed once and each of the K passes is that dropout and the linear layer alone:
the same outputs as K whole forwards with the dropout left on, at the cost of one.

The masks come from a generator of their own, seeded by the caller: a selection draws nothing from
torch's global generator (which training's dropout uses) or from any net's training stream, and
the same seed gives the same passes.
"""
from typing import Optional

import numpy as np
import torch

from .augment import eval_transform, train_transform
from .models import dropout_on_features, features_and_logits
from .speed import Speed
from .training import autocast, scoring_model, to_input_layout

# The masks are drawn for blocks of this many examples, pass after pass: a fixed size, so that the
# draws (and so the passes) do not depend on the scoring batch or the device's speed switches.
MASK_ROWS = 4096


@torch.no_grad()
def penultimate_features(net, images, size, batch, generator=None, crop_scale_min=0.08, bf16=False,
                         speed: Speed = Speed()) -> torch.Tensor:
    """(N, D) float32 features on the images' device, in eval mode, through the evaluation transform (or,
    with a generator, the training augmentation: the original's scoring quirk)."""
    model = scoring_model(net, size, speed)
    step = batch if generator is not None else speed.scoring_batch or batch
    parts = []
    for start in range(0, len(images), step):
        chunk = images[start:start + step]
        x = train_transform(chunk, size, generator, crop_scale_min) if generator is not None \
            else eval_transform(chunk, size)
        with autocast(x.device, bf16):
            features, _ = features_and_logits(model, to_input_layout(x))
        parts.append(features.float())
    return torch.cat(parts) if parts else torch.zeros((0, 0), device=images.device)


@torch.no_grad()
def dropout_probs(features: torch.Tensor, rate: float, linear: torch.nn.Linear, passes: int,
                  seed: int) -> np.ndarray:
    """(passes, N, C) float32 softmax outputs of `linear` over `features` under `passes` independent
    dropout masks at `rate` (kept values scaled by 1 / (1 - rate), as nn.Dropout in training)."""
    if not 0 < rate < 1:
        raise ValueError(f"MC dropout needs a dropout rate in (0, 1), got {rate}")
    masks = torch.Generator(device=features.device).manual_seed(seed)
    linear = linear.to(features.device).float()
    out = torch.empty((passes, features.shape[0], linear.out_features), dtype=torch.float32, device=features.device)
    for k in range(passes):
        for start in range(0, features.shape[0], MASK_ROWS):
            rows = features[start:start + MASK_ROWS]
            kept = torch.empty_like(rows).bernoulli_(1 - rate, generator=masks)
            out[k, start:start + len(rows)] = torch.softmax(linear(rows * kept / (1 - rate)), dim=1)
    return out.cpu().numpy()


def mc_dropout_probs(net, images, size, batch, passes: int, seed: int, generator: Optional[torch.Generator] = None,
                     crop_scale_min=0.08, bf16=False, speed: Speed = Speed()) -> np.ndarray:
    """(passes, N, C): `passes` MC-dropout softmax outputs of `net` on `images`, through its own dropout on the
    penultimate features (models.dropout_on_features; a ValueError when it has none)."""
    rate, linear = dropout_on_features(net)
    if rate <= 0:
        raise ValueError("the net has no dropout on its penultimate features")
    features = penultimate_features(net, images, size, batch, generator, crop_scale_min, bf16, speed)
    return dropout_probs(features, rate, linear, passes, seed)
