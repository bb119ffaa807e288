"""The training loop's GPU fast path (bf16 autocast, channels_last), run on the CPU.

No GPU is needed to check that the fast path trains and records what selection reads:
autocast and channels_last exist on the CPU too, so the path is switched on here.
"""
import dataclasses

import numpy as np
import pytest
import torch

from diam import models, training
from diam.augment import eval_transform
from diam.data import load_dataset
from diam.presets import PRESETS
from diam.training import Record, evaluate, predict, train_target_net

# A few steps are enough to exercise every record; the sizes keep this file to seconds.
TINY = dataclasses.replace(PRESETS["quick"], epochs=2, pool_size=120, test_size=60, train_batch=20)


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast_path"])
def test_training_records_what_selection_reads_on_either_path(monkeypatch, fast):
    monkeypatch.setattr(training, "fast_path", lambda device: fast)
    preset = dataclasses.replace(TINY, bf16=fast)
    data = load_dataset("digits", pool_size=preset.pool_size, test_size=preset.test_size)
    labeled, unlabeled = torch.arange(40), torch.arange(40, preset.pool_size)
    n_unlabeled = preset.pool_size - 40
    torch.manual_seed(0)
    net = models.build_net(0, data.n_classes, preset.dropout)
    conv_dtypes = []
    net.first_conv.register_forward_hook(lambda module, inputs, output: conv_dtypes.append(output.dtype))

    out = train_target_net(net, data, labeled, unlabeled, preset, preset.image_size,
                           Record(snapshots=True, probs=True, features=True), stream=0)

    # The path asked for is the path taken: bf16 activations and channels_last weights only on the fast path.
    assert set(conv_dtypes) == {torch.bfloat16 if fast else torch.float32}
    assert net.first_conv.conv.weight.is_contiguous(memory_format=torch.channels_last) == fast
    # Records keep their dtypes and shapes whatever the compute precision.
    assert out.snapshot_labels.shape == (preset.snapshot_epochs, n_unlabeled) and out.snapshot_labels.dtype == np.uint8
    assert out.unlabeled_probs.shape == (n_unlabeled, 10) and out.unlabeled_probs.dtype == np.float32
    np.testing.assert_allclose(out.unlabeled_probs.sum(1), 1, atol=1e-5)
    assert out.pool_features.shape[0] == preset.pool_size and out.pool_features.dtype == np.float16
    assert np.isfinite(out.pool_features).all()
    # The last snapshot comes from the same pass as the probabilities.
    np.testing.assert_array_equal(out.snapshot_labels[-1], out.unlabeled_probs.argmax(1))


def test_evaluate_counts_the_true_label_in_the_top_one_and_top_five():
    data = load_dataset("digits", pool_size=TINY.pool_size, test_size=TINY.test_size)
    torch.manual_seed(0)
    # Any classifier will do; a random linear one predicts many classes without training.
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, data.n_classes))
    # Batches of 7 do not divide the 60 test images: the last, short batch counts too.
    top1, top5 = evaluate(net, data.test_images, data.test_labels, 32, batch=7)
    with torch.no_grad():
        logits = net(eval_transform(data.test_images, 32)).numpy()
    ranked = np.argsort(-logits, axis=1, kind="stable")
    labels = data.test_labels.numpy()
    assert len(np.unique(ranked[:, 0])) > 1
    assert top1 == pytest.approx(100 * np.mean(ranked[:, 0] == labels))
    assert top5 == pytest.approx(100 * np.mean((ranked[:, :5] == labels[:, None]).any(1)))
    assert top1 < top5  # else top-5 could be top-1 counted twice


# ------------------------------------------------------------------ the original's quirks and the batch of one
def _train(preset, n_labeled, net_id=7):
    """Net `net_id` trained on the first `n_labeled` pool images; (net, records, data, unlabeled)."""
    data = load_dataset("digits", pool_size=preset.pool_size, test_size=preset.test_size)
    labeled, unlabeled = torch.arange(n_labeled), torch.arange(n_labeled, preset.pool_size)
    torch.manual_seed(0)
    net = models.build_net(net_id, data.n_classes, preset.dropout)
    models.initialise(net, net_id, preset.init)
    out = train_target_net(net, data, labeled, unlabeled, preset, preset.image_size,
                           Record(snapshots=True, probs=True), stream=0)
    return net, out, data, unlabeled


@pytest.mark.parametrize("n_labeled, sizes", [(41, [20, 20]), (42, [20, 20, 2])])
def test_a_final_batch_of_one_is_skipped(n_labeled, sizes):
    seen = []
    real_build = models.build_net

    def recording_build(*args, **kwargs):
        net = real_build(*args, **kwargs)
        net.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
        return net

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "build_net", recording_build)
        _train(TINY, n_labeled)
    assert seen == sizes * TINY.epochs


@pytest.mark.parametrize("shuffle", [True, False], ids=["default", "no_shuffle"])
def test_no_shuffle_keeps_the_labeled_order_in_every_epoch(monkeypatch, shuffle):
    orders = []
    real_batches = training._batches
    monkeypatch.setattr(training, "_batches", lambda order, batch: orders.append(order.tolist())
                        or real_batches(order, batch))
    preset = dataclasses.replace(TINY, shuffle_epochs=shuffle)
    _train(preset, 40)
    epochs = orders[1:]  # the first call counts the steps
    assert len(epochs) == preset.epochs and all(sorted(o) == list(range(40)) for o in epochs)
    if shuffle:
        assert epochs[0] != list(range(40)) and epochs[0] != epochs[1]
    else:
        assert all(o == list(range(40)) for o in epochs)


@pytest.mark.parametrize("quirk", [False, True], ids=["default", "score_with_train_aug"])
def test_the_pool_is_scored_through_the_eval_transform_unless_the_quirk_asks(quirk):
    # Steps enough (batches of 10 at lr 0.1) for net 7 to tell the pool's images apart.
    preset = dataclasses.replace(TINY, train_batch=10, lr=0.1, score_with_train_aug=quirk)
    net, out, data, unlabeled = _train(preset, 40)
    _, eval_probs, _ = predict(net, data.pool_images[unlabeled], preset.image_size, preset.eval_batch,
                               want_probs=True)
    assert np.ptp(eval_probs, axis=0).max() > 1e-3  # the net tells the pool's images apart
    if quirk:  # the recorded outputs are those of augmented images: not the evaluation pass's
        assert np.abs(out.unlabeled_probs - eval_probs).max() > 1e-3
    else:
        np.testing.assert_array_equal(out.unlabeled_probs, eval_probs)
