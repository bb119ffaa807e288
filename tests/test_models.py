"""SPEC section 2: the 12 OFA target nets, their input sizes and initial weights."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import load_test_models as ltm
from conftest import run_script_here
import no_network
from diam import data, models
from diam.errors import UserError
from diam.presets import PRESETS
from diam.settings import read_environment

PAPER_SIZES = [224, 192, 176, 160, 204, 176, 152, 140, 192, 192, 160, 144]


def test_twelve_nets_in_spec_order_with_their_input_sizes():
    assert len(models.OFA_IDS) == 12
    assert [models.input_size(i) for i in range(12)] == PAPER_SIZES


@pytest.mark.parametrize("net_id", range(12))
def test_every_net_gives_ten_class_outputs_at_its_size_and_the_quick_size(net_id):
    net, size = ltm.load_test_models(net_id)
    net.eval()
    with torch.no_grad():
        for s in (size, PRESETS["quick"].image_size):
            assert net(torch.randn(2, 3, s, s)).shape == (2, 10)


def test_trained_weights_come_with_the_size_they_were_trained_at(tmp_path):
    trained = run_script_here("train_net.py", "--dataset", "digits", "--al_iter", 0, "--net_id", 0, "--model_num", 1,
                              "--preset", "quick", "--image_size", 32, "--pool_size", 60, "--test_size", 20,
                              "--initial_labeled", 20, "--epochs", 1, "--train_batch", 10, "--device", "cpu",
                              "--work_dir", tmp_path / "runs")
    assert trained.returncode == 0, trained.stderr
    checkpoint = next((tmp_path / "runs").rglob("net0.pt"))
    net, size = ltm.load_test_models(0, trained_weights=checkpoint)
    assert size == 32 != PAPER_SIZES[0]  # the checkpoint's record, not OFA net 0's own 224
    saved = torch.load(checkpoint, weights_only=True)
    torch.testing.assert_close(net.state_dict(), saved["state_dict"])
    # A bare state_dict records no size: the net's own.
    torch.save(saved["state_dict"], tmp_path / "bare.pt")
    assert ltm.load_test_models(0, trained_weights=tmp_path / "bare.pt")[1] == PAPER_SIZES[0]


def test_features_and_logits_match_the_plain_forward():
    net = models.build_net(3)
    net.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        features, logits = models.features_and_logits(net, x)
        assert features.shape == (3, 1280)
        torch.testing.assert_close(logits, net(x))


def test_classifier_head_takes_number_of_classes_and_dropout():
    net = models.build_net(0, n_classes=26, dropout=0.3)
    assert net.classifier.linear.out_features == 26
    assert net.classifier.dropout_rate == 0.3


def test_cached_imagenet_weights_load_into_everything_but_the_head(workdir):
    cache = workdir / "cache"
    torch.manual_seed(1)
    imagenet_net = models.build_net(2, n_classes=1000)  # stands for OFA's file: same keys and shapes
    path = models.weight_cache_candidates(2, cache)[0]
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": imagenet_net.state_dict()}, path)
    torch.manual_seed(2)
    net = models.build_net(2)
    assert models.initialise(net, 2, "pretrained", cache) == "pretrained"
    torch.testing.assert_close(net.first_conv.conv.weight, imagenet_net.first_conv.conv.weight)
    assert net.classifier.linear.out_features == 10


def _ofa_file(net_id, path, change=None):
    """A stand-in for OFA's published file of net `net_id`: a 1000-class net's tensors under OFA's
    own names (its blocks' '.mobile_inverted_conv.', not ofa's current '.conv.'), as {"state_dict": ...}."""
    torch.manual_seed(1)
    state = models.build_net(net_id, n_classes=1000).state_dict()
    state = {re.sub(r"^blocks\.(\d+)\.conv\.", r"blocks.\1.mobile_inverted_conv.", k): v for k, v in state.items()}
    if change:
        change(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, path)
    return state


def test_ofa_weights_under_ofas_own_key_names_load(workdir):
    cache = workdir / "cache"
    state = _ofa_file(2, models.weight_cache_candidates(2, cache)[0])
    renamed = [k for k in state if ".mobile_inverted_conv." in k]
    assert len(renamed) > 50  # the names the loader must map
    torch.manual_seed(2)
    net = models.build_net(2)
    assert models.initialise(net, 2, "pretrained", cache) == "pretrained"
    loaded = net.state_dict()
    for key in renamed:
        torch.testing.assert_close(loaded[key.replace(".mobile_inverted_conv.", ".conv.")], state[key])
    assert net.classifier.linear.out_features == 10


def test_ofa_weights_of_the_wrong_shape_are_refused(workdir):
    cache = workdir / "cache"
    path = models.weight_cache_candidates(2, cache)[0]
    # The same names, but one tensor of another net's shape (as a file of another OFA net could hold).
    _ofa_file(2, path, lambda state: state.update({"first_conv.conv.weight": torch.zeros(8, 3, 3, 3)}))
    with pytest.raises(UserError, match="could not be used") as err:
        models.initialise(models.build_net(2), 2, "pretrained", cache)
    assert str(path) in str(err.value) and "first_conv.conv.weight" in str(err.value)


def test_pretrained_demanded_but_unavailable_is_a_clear_error(workdir):
    with pytest.raises(UserError, match="--init he_fout"):
        models.initialise(models.build_net(1), 1, "pretrained")


def test_corrupted_weights_file_is_refused(workdir):
    cache = workdir / "cache"
    path = models.weight_cache_candidates(4, cache)[0]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not be used"):
        models.initialise(models.build_net(4), 4, "pretrained", cache)


def test_pytorch_init_keeps_pytorchs_default_weights(workdir):
    torch.manual_seed(5)
    net = models.build_net(5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert models.initialise(net, 5, "pytorch") == "pytorch"
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_unknown_net_id_is_refused():
    with pytest.raises(UserError, match="0..11"):
        models.build_net(12)


# ------------------------------------------------------------------ hermetic tests
DOWNLOAD = "import sys, torch.hub; torch.hub.download_url_to_file(sys.argv[1], sys.argv[2], progress=False)"


def test_downloads_fail_at_once_in_the_tests_and_in_the_processes_they_start(tmp_path):
    url = models.WEIGHTS_URL.format(models.OFA_IDS[0].replace("@", "-"))
    with pytest.raises(OSError, match=no_network.MESSAGE):
        torch.hub.download_url_to_file(url, str(tmp_path / "init"), progress=False)
    started = subprocess.run([sys.executable, "-c", DOWNLOAD, url, str(tmp_path / "init")], capture_output=True,
                             text=True, timeout=120)
    assert started.returncode != 0 and no_network.MESSAGE in started.stderr, started.stderr
    assert not (tmp_path / "init").exists()


def test_weights_data_and_caches_are_looked_for_in_temporary_folders_only(hermetic):
    environment = read_environment()  # what a step reads at its entry
    folders = [*models.weight_cache_candidates(0, environment.ofa_cache), Path(torch.hub.get_dir()),
               environment.data_root, data.unpack_cache(environment.cache), Path.home()]
    outside = [f for f in folders if not f.resolve().is_relative_to(hermetic.resolve())]
    assert outside == []
