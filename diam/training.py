"""One training loop (SPEC section 4) that also records what selection will read.

A single run trains a target net from its initial weights on the labeled set and,
in the same run, records the late-epoch snapshot labels on the unlabeled pool
(CAL, DIAM), the final softmax outputs (uncertainty methods) and penultimate
features (coreset, DIAM_qp): no second training pass, no second pass over the pool.
"""
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .augment import eval_transform, train_transform
from .cpu_fast import apply_cpu_pieces, compiled_forward_loss
from .cuda_graphs import ReplayedStep, ScoringGraphs
from .data import Data
from .errors import UserError
from .inference import inference_copy
from .models import features_and_logits
from .presets import Preset
from .speed import Speed


@dataclass
class Record:
    """What a training run keeps from its passes over the pool."""
    snapshots: bool = False  # predicted labels on the unlabeled pool after each late epoch
    probs: bool = False  # final softmax outputs on the unlabeled pool
    features: bool = False  # final penultimate features on the whole pool (coreset, DIAM_qp)


@dataclass
class PoolPredictions:
    snapshot_labels: Optional[np.ndarray] = None  # (K, U) uint8, late epochs in order
    unlabeled_probs: Optional[np.ndarray] = None  # (U, C) float32
    pool_features: Optional[np.ndarray] = None  # (N, D) float16, pool order

    def arrays(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


def stream_seed(seed: int, net_id: int) -> int:
    """The seed of net `net_id`'s own random stream (init, epoch order, crops, flips, jitter) in
    repeat `seed`. Nets must not share one stream: shared draws would correlate exactly the
    disagreement between nets that CAL and DIAM measure (SPEC 8.3)."""
    return int(np.random.SeedSequence([seed, net_id]).generate_state(1)[0])


def fast_path(device: torch.device) -> bool:
    """channels_last pays off on CUDA tensor cores; on the CPU it would only slow these nets."""
    return device.type == "cuda"


def allow_tf32() -> None:
    """fp32 everywhere, as the original, but with TF32 matmuls and convolutions on CUDA."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, bf16: bool, cache_enabled: bool = True):
    """bf16 autocast only when asked (--bf16): it flips argmax on near-ties, and so snapshot labels.
    A CUDA graph recording needs cache_enabled=False (casts must be recorded, not cached)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=cache_enabled)


def to_device(net: nn.Module, device: torch.device) -> nn.Module:
    """The net on `device`, in the memory layout its inputs will have there."""
    net.to(device)
    return net.to(memory_format=torch.channels_last) if fast_path(device) else net


def to_input_layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if fast_path(x.device) else x


def parameter_groups(net: nn.Module, weight_decay: float):
    """Weight decay on conv/linear weights only, not on BatchNorm parameters and biases."""
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def scoring_model(net: nn.Module, size: int, speed: Speed) -> nn.Module:
    """The model a pass over images runs: an eval-mode copy of `net` (fused unless DIAM_SCORING=plain),
    in the memory layout of its device. `net` itself, its weights, buffers and mode, is left as it was."""
    model = inference_copy(net, size, fold=True) if speed.fused else inference_copy(net, fold=False)
    return to_device(model, next(net.parameters()).device)


def scored_outputs(model: nn.Module, x: torch.Tensor, bf16: bool, want_probs: bool = True,
                   want_features: bool = True, cache_enabled: bool = True):
    """(labels as uint8, softmax outputs or None, penultimate features in float16 or None) of one batch."""
    with autocast(x.device, bf16, cache_enabled):
        features, logits = features_and_logits(model, x)
    logits = logits.float()
    return (logits.argmax(1).to(torch.uint8), torch.softmax(logits, 1) if want_probs else None,
            features.to(torch.float16) if want_features else None)


@torch.no_grad()
def predict(net, images, size, batch, want_probs=False, want_features=False, generator=None,
            crop_scale_min=0.08, bf16=False, speed: Speed = Speed(), graphs: Optional[ScoringGraphs] = None):
    """Labels (and optionally softmax outputs and features) for uint8 images, in eval mode.

    With a generator the images go through the training augmentation (the
    original's quirk); without one, through the evaluation transform. Outputs gather on
    the device and go to the host once, when the pass ends (not once per batch). With
    `graphs` (CUDA) the forward is replayed from a graph recorded there, kept across passes.
    """
    device = images.device
    model = scoring_model(net, size, speed)
    # The augmentation draws its random numbers chunk by chunk: with it, chunks stay the preset's
    # batch, so a pass draws what it always drew.
    step = batch if generator is not None else speed.scoring_batch or batch
    if graphs is not None:
        example = to_input_layout(torch.zeros(step, 3, size, size, device=device))
        forward = graphs.forward(model, (size, step, bf16),
                                 lambda m, x: scored_outputs(m, x, bf16, cache_enabled=False), example)
    else:
        def forward(x):
            return scored_outputs(model, x, bf16, want_probs, want_features)
    outputs = None
    for start in range(0, len(images), step):
        chunk = images[start:start + step]
        x = train_transform(chunk, size, generator, crop_scale_min) if generator is not None \
            else eval_transform(chunk, size)
        labels, probs, feats = forward(to_input_layout(x))
        if outputs is None:  # one buffer per output for the whole pass, on the device
            outputs = [torch.empty((len(images),) + tuple(t.shape[1:]), dtype=t.dtype, device=device)
                       if t is not None and wanted else None
                       for t, wanted in ((labels, True), (probs, want_probs), (feats, want_features))]
        for buffer, part in zip(outputs, (labels, probs, feats)):
            if buffer is not None:
                buffer[start:start + len(chunk)].copy_(part)
    if outputs is None:
        return np.empty(0, dtype=np.uint8), None, None
    return tuple(t.cpu().numpy() if t is not None else None for t in outputs)


@torch.no_grad()
def set_batchnorm_statistics(net, images, size, batch) -> None:
    """Set every BatchNorm layer's running mean and variance to their averages over `images`
    (through the evaluation transform, in batches), then leave the net in eval mode.

    An untrained net in eval mode normalises with BatchNorm's initial statistics (mean 0,
    variance 1), so nothing rescales its activations: with he_fout's small depthwise weights
    they shrink layer after layer, and OFA's nets map every image to features near 1e-10 (0 in
    float16). With the pool's statistics each layer is normalised as in a training step.
    """
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
    net.train()
    for chunk in _batches(torch.arange(len(images), device=images.device), batch):
        net(to_input_layout(eval_transform(images[chunk], size)))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    net.eval()


@torch.no_grad()
def backbone_features(net, images, size, batch, bf16=False) -> torch.Tensor:
    """Penultimate features (float32, on the images' device) through the evaluation transform, eval mode."""
    net.eval()
    parts = []
    for start in range(0, len(images), batch):
        with autocast(images.device, bf16):
            features, _ = features_and_logits(net, to_input_layout(eval_transform(images[start:start + batch], size)))
        parts.append(features.float())
    return torch.cat(parts)


@torch.no_grad()
def evaluate(net, images, labels, size, batch, bf16=False, speed: Speed = Speed()):
    """Top-1 and top-5 accuracy in percent on a labelled split."""
    model = scoring_model(net, size, speed)
    step = speed.scoring_batch or batch
    correct1 = torch.zeros((), dtype=torch.long, device=images.device)
    correct5 = torch.zeros_like(correct1)
    for start in range(0, len(images), step):
        x = to_input_layout(eval_transform(images[start:start + step], size))
        with autocast(images.device, bf16):
            logits = model(x).float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        target = labels[start:start + step].unsqueeze(1)
        correct1 += (top5[:, :1] == target).sum()
        correct5 += (top5 == target).any(dim=1).sum()
    return 100.0 * correct1.item() / len(images), 100.0 * correct5.item() / len(images)


def diverged(loss: float, epoch: int, preset: Preset) -> UserError:
    return UserError(f"training diverged: the loss was {loss} at epoch {epoch} with learning rate {preset.lr}. "
                     "Lower it (--lr; the same value for every script of a run, so in a new --work_dir), or "
                     "train in fp32 if --bf16 was given.")


def _batches(order: torch.Tensor, batch: int):
    # A batch of one cannot be BatchNorm-normalised at small input sizes: it is skipped.
    return [order[s:s + batch] for s in range(0, len(order), batch) if len(order[s:s + batch]) > 1]


def _places(labeled: torch.Tensor, pool_size: int) -> torch.Tensor:
    """pool index -> its place in `labeled` (for per-example loss weights given in `labeled`'s order)."""
    places = torch.empty(pool_size, dtype=torch.long, device=labeled.device)
    places[labeled] = torch.arange(len(labeled), device=labeled.device)
    return places


def _steps_per_epoch(labeled: torch.Tensor, batch: int) -> int:
    """The optimiser steps one epoch over `labeled` takes; a UserError when there are none."""
    steps = len(_batches(labeled, batch))
    if steps == 0:
        raise UserError(f"the labeled set holds {len(labeled)} example(s): training needs at least two (batches of "
                        "one are skipped). Label more examples, or start with --initial_labeled 2 or more.")
    return steps


def cosine_rates(lr: float, total_steps: int) -> list[float]:
    """The learning rate of each step, as CosineAnnealingLR(T_max=total_steps) gives them to the eager loop."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(probe, T_max=total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(float(probe.param_groups[0]["lr"]))
        probe.step()  # no gradient: changes nothing, but the schedule expects a step before its own
        schedule.step()
    return rates


def training_step(net: nn.Module, preset: Preset, total_steps: int, speed: Speed, device: torch.device,
                  weighted: bool = False):
    """`step(x, y) -> loss`: one SGD step of the paper's settings (SPEC 4) on a batch; `weighted`:
    `step(x, y, w)`, the mean of the examples' losses each times its weight w (one-shot picks' importance
    weights), always the eager step (the speed switches serve the plain loss of every other method).

    By default the eager step: foreach SGD (asked for: torch picks it by itself on CUDA only,
    and on the CPU its per-tensor loop in Python cost ~8% of a step at batch 25; the same
    arithmetic, weights bit for bit), its rate set by CosineAnnealingLR after each step;
    with DIAM_CPU_FAST=compile on the CPU, its forward and loss compiled (diam/cpu_fast.py).
    With DIAM_CUDA_FAST=training_graphs: fused SGD reading its rate from a tensor, replayed
    from a CUDA graph on CUDA (cuda_graphs.ReplayedStep); the same update up to float rounding.
    """
    criterion = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing)
    groups = parameter_groups(net, preset.weight_decay)
    if weighted or not speed.training_graphs:
        optimizer = torch.optim.SGD(groups, lr=preset.lr, momentum=preset.momentum, nesterov=True, foreach=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        compiled = compiled_forward_loss() if speed.compile and not weighted else None
        per_example = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing, reduction="none")

        def step(x, y, w=None):
            with autocast(device, preset.bf16):
                if w is not None:
                    loss = (per_example(net(x).float(), y) * w).mean()
                else:
                    loss = compiled(net, x, y, preset.label_smoothing) if compiled else criterion(net(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            return loss
        return step

    def compute_loss(x, y):
        with autocast(device, preset.bf16, cache_enabled=False):
            return criterion(net(x).float(), y)

    lr = torch.tensor(preset.lr, device=device)
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=preset.momentum, nesterov=True, fused=True)
    return ReplayedStep(compute_loss, optimizer, lr, cosine_rates(preset.lr, total_steps),
                        capture=device.type == "cuda")


def train_linear_head(head: nn.Module, pool_features: torch.Tensor, pool_labels: torch.Tensor, labeled: torch.Tensor,
                      unlabeled: torch.Tensor, loss_weights: torch.Tensor, preset: Preset, record: Record,
                      stream: int) -> PoolPredictions:
    """Train `head` (a net's classifier) in place on fixed features of the pool, the loss of labeled
    example i weighted by loss_weights[i] (one per labeled example, in `labeled`'s order); return
    what `record` asks for, read through the head (features: `pool_features` as float16).

    The loop is train_target_net's (epochs, batches, SGD with Nesterov momentum, cosine schedule,
    weight decay on weights only, label smoothing, the net's own stream for the epoch order),
    without augmentation: the features are computed once, through the evaluation transform.
    """
    device = pool_features.device
    generator = torch.Generator(device=device).manual_seed(stream)
    labeled, unlabeled, loss_weights = labeled.to(device), unlabeled.to(device), loss_weights.to(device)
    slot = _places(labeled, len(pool_features))
    steps_per_epoch = _steps_per_epoch(labeled, preset.train_batch)
    optimizer = torch.optim.SGD(parameter_groups(head, preset.weight_decay), lr=preset.lr,
                                momentum=preset.momentum, nesterov=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=preset.epochs * steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing, reduction="none")
    first_snapshot = preset.epochs - preset.snapshot_epochs
    snapshots, out = [], PoolPredictions()
    for epoch in range(preset.epochs):
        head.train()
        order = labeled[torch.randperm(len(labeled), device=device, generator=generator)] \
            if preset.shuffle_epochs else labeled
        for idx in _batches(order, preset.train_batch):
            losses = criterion(head(pool_features[idx]), pool_labels[idx])
            loss = (losses * loss_weights[slot[idx]]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if not math.isfinite(loss.item()):
            raise diverged(loss.item(), epoch, preset)
        if (record.snapshots and epoch >= first_snapshot) or (epoch == preset.epochs - 1 and record.probs):
            head.eval()
            with torch.no_grad():
                logits = head(pool_features[unlabeled]).float()
            if record.snapshots and epoch >= first_snapshot:
                snapshots.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
            if epoch == preset.epochs - 1 and record.probs:
                out.unlabeled_probs = torch.softmax(logits, 1).cpu().numpy()
    if record.snapshots:
        out.snapshot_labels = np.stack(snapshots)
    if record.features:
        out.pool_features = pool_features.to(torch.float16).cpu().numpy()
    return out


def train_target_net(net: nn.Module, data: Data, labeled: torch.Tensor, unlabeled: torch.Tensor,
                     preset: Preset, size: int, record: Record, stream: int,
                     desc: str = "train", speed: Speed = Speed(),
                     loss_weights: torch.Tensor | None = None) -> PoolPredictions:
    """Train `net` in place on data.pool[labeled]; return what `record` asks for. With `loss_weights`
    (one per labeled example, in `labeled`'s order) each example's loss is weighted by its own.

    `stream` seeds this net's own generator (`stream_seed`): epoch order, augmentation
    and, with the score_with_train_aug quirk, the augmentation of its passes over the pool.
    `speed` says how the steps and passes run (diam/speed.py), never what they compute.
    """
    device = data.pool_images.device
    to_device(net, device)
    apply_cpu_pieces(net, size, speed)
    generator = torch.Generator(device=device).manual_seed(stream)
    labeled = labeled.to(device)
    steps_per_epoch = _steps_per_epoch(labeled, preset.train_batch)
    step = training_step(net, preset, preset.epochs * steps_per_epoch, speed, device, weighted=loss_weights is not None)
    if loss_weights is not None:
        loss_weights = loss_weights.to(device)
        slot = _places(labeled, len(data.pool_images))
    graphs = ScoringGraphs() if speed.scoring_graphs and device.type == "cuda" else None
    first_snapshot = preset.epochs - preset.snapshot_epochs
    snapshots = []
    out = PoolPredictions()
    score_gen = generator if preset.score_with_train_aug else None

    bar = tqdm(range(preset.epochs), desc=desc, unit="epoch", disable=None, leave=False)
    for epoch in bar:
        net.train()
        order = labeled[torch.randperm(len(labeled), device=device, generator=generator)] \
            if preset.shuffle_epochs else labeled
        for idx in _batches(order, preset.train_batch):
            x = train_transform(data.pool_images[idx], size, generator, preset.crop_scale_min)
            if loss_weights is None:
                loss = step(to_input_layout(x), data.pool_labels[idx])
            else:
                loss = step(to_input_layout(x), data.pool_labels[idx], loss_weights[slot[idx]])
        if not math.isfinite(loss.item()):
            raise diverged(loss.item(), epoch, preset)
        bar.set_postfix(loss=f"{loss.item():.3f}")

        last = epoch == preset.epochs - 1
        if last and (record.probs or record.features):
            # The final pass serves the last snapshot, the probabilities and the features at once.
            scored = torch.arange(len(data.pool_images), device=device) if record.features else unlabeled
            labels, probs, feats = predict(net, data.pool_images[scored], size, preset.eval_batch,
                                           want_probs=record.probs, want_features=record.features,
                                           generator=score_gen, crop_scale_min=preset.crop_scale_min,
                                           bf16=preset.bf16, speed=speed, graphs=graphs)
            if record.features:
                out.pool_features = feats
                labels = labels[unlabeled.cpu().numpy()]
                probs = probs[unlabeled.cpu().numpy()] if probs is not None else None
            out.unlabeled_probs = probs
            if record.snapshots:
                snapshots.append(labels)
        elif record.snapshots and epoch >= first_snapshot:
            snapshots.append(predict(net, data.pool_images[unlabeled], size, preset.eval_batch,
                                     generator=score_gen, crop_scale_min=preset.crop_scale_min,
                                     bf16=preset.bf16, speed=speed, graphs=graphs)[0])
    if record.snapshots:
        out.snapshot_labels = np.stack(snapshots)
    return out

