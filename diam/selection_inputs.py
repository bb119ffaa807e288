"""What a selection reads, gathered for the strategies: the pool object's fields (what training
recorded on the pool, or what is computed from the checkpoints when it recorded nothing), the
selection's random stream and the method's own settings.
"""
import zlib

import numpy as np
import torch

from . import models
from .errors import UserError
from .mc_dropout import mc_dropout_probs
from .paths import NPZ_READ_ERRORS, write_npz
from .pool import Pool
from .presets import BALD_PASSES
from .run import Run
from .training import predict, set_batchnorm_statistics, stream_seed, to_device


def selection_rng(run: Run) -> np.random.Generator:
    """Random steps seeded from (seed, dataset, method, iteration), so a rerun picks the same batch."""
    s = run.settings
    key = zlib.crc32(f"{s.dataset}|{s.method}|{s.al_iter}".encode())
    return np.random.default_rng([s.preset.seed, key])


def selection_options(run: Run):
    """The settings the step's method selects with (its class in methods.py), as the step resolved them."""
    return run.settings.method_settings(run.settings.method)


def _scoring_generator(run: Run, net_id: int):
    """With the score_with_train_aug quirk, the pool is scored through the training augmentation
    drawn from the net's own stream; else through the evaluation transform (None)."""
    preset = run.settings.preset
    if not preset.score_with_train_aug:
        return None
    return torch.Generator(device=run.device).manual_seed(stream_seed(preset.seed, net_id))


def _pool_predictions(run: Run, net_id: int, unlabeled: np.ndarray, wanted: str) -> dict:
    """What training recorded for net `net_id`; probabilities or features it lacks are computed once and kept."""
    s, preset = run.settings, run.settings.preset
    path = s.paths.pool_predictions(s.model_num, s.method, s.al_iter, net_id)
    try:
        with np.load(path) as z:
            stored = dict(z)
    except FileNotFoundError:
        if not run.checkpoint(net_id).exists():
            run.load_net(net_id)  # raises the error that names the training to run
        stored = {}
    except NPZ_READ_ERRORS as err:
        raise UserError(f"{path} is damaged ({err}). Delete it together with {run.checkpoint(net_id)} and rerun "
                        f"train_net.py --net_id {net_id} --al_iter {s.al_iter}.") from None
    if stored and not np.array_equal(stored.get("unlabeled"), unlabeled):
        raise UserError(f"{path} was recorded for another unlabeled pool than the index file of al_iter "
                        f"{s.al_iter}. Delete the iteration's models and rerun its training.")
    if wanted == "snapshot_labels" and wanted not in stored:
        raise UserError(f"net {net_id} of al_iter {s.al_iter} was trained without recording late-epoch snapshots, "
                        f"which {s.method} needs. Retrain it with train_net.py --mDIS --redo.")
    if wanted in ("unlabeled_probs", "pool_features") and wanted not in stored:
        net, _ = run.load_net(net_id)
        scored = run.data.pool_images if wanted == "pool_features" else \
            run.data.pool_images[torch.from_numpy(unlabeled).to(run.device)]
        _, probs, feats = predict(net, scored, run.image_size(net_id), preset.eval_batch,
                                  want_probs=wanted == "unlabeled_probs", want_features=wanted == "pool_features",
                                  generator=_scoring_generator(run, net_id), crop_scale_min=preset.crop_scale_min,
                                  bf16=preset.bf16, speed=run.speed)
        stored.update(unlabeled=unlabeled, **{wanted: probs if wanted == "unlabeled_probs" else feats})
        write_npz(path, **stored)
    return stored


def model_votes(run: Run, unlabeled: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(T, B): each target net's predicted class for the images unlabeled[positions], from what its
    training recorded on the unlabeled pool (the final epoch's probabilities, else its last
    snapshot), so no pass is added where the selection's strategy read them. A net that recorded
    neither (random, coreset or lewis after iteration 0) predicts the B images themselves."""
    votes = []
    for n in range(run.settings.model_num):
        stored = _pool_predictions(run, n, unlabeled, "")
        if "unlabeled_probs" in stored:
            votes.append(stored["unlabeled_probs"][positions].argmax(1))
        elif "snapshot_labels" in stored:
            votes.append(stored["snapshot_labels"][-1][positions])
        else:
            net, _ = run.load_net(n)
            images = run.data.pool_images[torch.from_numpy(unlabeled[positions]).to(run.device)]
            votes.append(predict(net, images, run.image_size(n), run.settings.preset.eval_batch,
                                 bf16=run.settings.preset.bf16, speed=run.speed)[0])
    return np.stack(votes).astype(np.int64)


def initial_features(run: Run, net_id: int, unlabeled: np.ndarray) -> np.ndarray:
    """Penultimate features of the unlabeled pool under net `net_id`'s initial weights (before any
    training: he_fout's or PyTorch's random ones, with BatchNorm statistics set from the unlabeled
    pool, without which they are all 0; or with --init pretrained the ImageNet backbone as it is)."""
    preset = run.settings.preset
    net, init, _ = run.initial_net(net_id)
    net = to_device(net, run.device)
    images = run.data.pool_images[torch.from_numpy(unlabeled).to(run.device)]
    if init != "pretrained":
        set_batchnorm_statistics(net, images, run.image_size(net_id), preset.eval_batch)
    _, _, feats = predict(net, images, run.image_size(net_id), preset.eval_batch, want_features=True,
                          generator=_scoring_generator(run, net_id), crop_scale_min=preset.crop_scale_min,
                          bf16=preset.bf16, speed=run.speed)
    return feats


def model_features(run: Run, unlabeled: np.ndarray, representation: str = "trained") -> np.ndarray:
    """(T, U, dim) float16: every net's penultimate features of the unlabeled pool, from the nets
    `representation` names ("trained", the default: what training recorded, or computed once from the
    checkpoint and kept beside it; "initial": `initial_features`). Narrower features are padded with
    zero columns, which change no Lewis weight (they add nothing to the column space), no inner
    product (BADGE) and no Euclidean distance (DIAM_qp's neighbours)."""
    per_net = []
    for n in range(run.settings.model_num):
        if representation == "initial":
            per_net.append(initial_features(run, n, unlabeled))
        else:
            per_net.append(_pool_predictions(run, n, unlabeled, "pool_features")["pool_features"][unlabeled])
    feats = np.zeros((run.settings.model_num, len(unlabeled), max(f.shape[1] for f in per_net)), np.float16)
    for n, net_features in enumerate(per_net):
        feats[n, :, :net_features.shape[1]] = net_features
    return feats


def dropout_probs(run: Run, unlabeled: np.ndarray, passes: int = BALD_PASSES) -> np.ndarray:
    """(T, K, U, C) float32: K = --bald_passes MC-dropout softmax outputs of every trained net on the
    unlabeled pool, through each net's own dropout (diam/mc_dropout.py). Computed here, from the
    checkpoints (training records nothing for them), with masks from a generator seeded by the repeat,
    dataset, iteration and net: the same picks on a rerun, and no draw from any training stream.
    A net without dropout on its penultimate features is refused before any pass."""
    s, preset = run.settings, run.settings.preset
    for n, name in enumerate(s.target_nets):
        rate, _ = models.dropout_on_features(models.build_target(name, run.data.n_classes, preset.dropout))
        if rate <= 0:
            raise UserError(f"bald draws MC-dropout passes through each target model's own dropout, and target model "
                            f"'{name}' (net {n}) has none on its penultimate features (no dropout layer right before "
                            f"its last linear layer), so its passes would all agree and its score would be 0 by "
                            f"construction. Name models with one in --nets (the OFA nets, mobilenet_v3_small, "
                            f"efficientnet_b0, ...), or choose another method.")
    per_net = []
    images = run.data.pool_images[torch.from_numpy(unlabeled).to(run.device)]
    key = zlib.crc32(f"{s.dataset}|{s.method}|{s.al_iter}|mc_dropout".encode())
    for n in range(s.model_num):
        net, _ = run.load_net(n)
        seed = int(np.random.SeedSequence([preset.seed, key, n]).generate_state(1)[0])
        per_net.append(mc_dropout_probs(net, images, run.image_size(n), preset.eval_batch,
                                        passes, seed, generator=_scoring_generator(run, n),
                                        crop_scale_min=preset.crop_scale_min, bf16=preset.bf16, speed=run.speed))
    return np.stack(per_net)


def _unlabeled_probs(run: Run, unlabeled: np.ndarray) -> np.ndarray:
    """(T, U, C): every net's softmax outputs on the unlabeled pool, as training recorded them."""
    return np.stack([_pool_predictions(run, n, unlabeled, "unlabeled_probs")["unlabeled_probs"]
                     for n in range(run.settings.model_num)])


def selection_pool(run: Run, labeled: np.ndarray, unlabeled: np.ndarray) -> Pool:
    """The unlabeled pool as the strategies see it: each field read from what training recorded (or
    computed from the checkpoints) the first time a strategy asks for it."""
    def coreset_features():  # the coreset net's, of both sets, read from one file at once
        net_id = run.settings.preset.coreset_feature_net
        feats = _pool_predictions(run, net_id, unlabeled, "pool_features")["pool_features"]
        return feats[unlabeled], feats[labeled]

    def snapshot_labels():
        return np.stack([_pool_predictions(run, n, unlabeled, "snapshot_labels")["snapshot_labels"]
                         for n in range(run.settings.model_num)])

    return Pool(len(unlabeled), str(run.device), fetch={
        "unlabeled_probs": lambda: _unlabeled_probs(run, unlabeled),
        "snapshot_labels": snapshot_labels,
        ("unlabeled_features", "labeled_features"): coreset_features,
        "unlabeled_model_features": lambda: model_features(run, unlabeled, "trained"),
        "initial_model_features": lambda: model_features(run, unlabeled, "initial"),
        "dropout_probs": lambda passes: dropout_probs(run, unlabeled, passes)})

