"""Issue 25, item 2: a run's own target models (--nets), OFA nets and torchvision models side by side."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, folder_state, linked_copy, run_script_here
from diam import cli, models, strategies
from diam.diversity_qp import knn_cooccurrence
from diam.errors import UserError
from diam.run import Run
from diam.selection_inputs import selection_rng
from diam.paths import RunPaths, read_indices
from diam.presets import PRESETS, default_nets
from diam.settings import run_config, settings_from_args

# The whole digits pool: DIAM_qp reads the models' features only when its subsample holds 200 or more.
TINY = ["--dataset", "digits", "--model_num", 2, "--preset", "quick", "--pool_size", 1297, "--test_size", 100,
        "--initial_labeled", 100, "--query_batch", 10, "--epochs", 2, "--train_batch", 20, "--image_size", 32,
        "--device", "cpu"]
NETS = ["--nets", "ofa0", "resnet18"]


def _args(runs, *extra):
    return [*TINY, "--work_dir", runs, *extra]


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    """Iteration 0 of OFA net 0 and torchvision's resnet18, trained as the T = 2 target models."""
    runs = tmp_path_factory.mktemp("nets") / "runs"
    result = run_script_here("train_net.py", *_args(runs, *NETS, "--al_iter", 0, "--net_id", 0, 1))
    assert result.returncode == 0, result.stderr
    return runs


def _run(runs, *extra):
    return Run(settings_from_args(cli.parser("t").parse_args(map(str, _args(runs, *NETS, *extra)))))


def test_a_torchvision_model_and_an_ofa_net_train_side_by_side_and_diam_selects(side_by_side, tmp_path):
    runs = linked_copy(side_by_side, tmp_path / "runs")
    paths = RunPaths(runs, "quick", "digits")
    infos = [json.loads(paths.checkpoint_info(2, "DIAM", 0, n).read_text()) for n in (0, 1)]
    assert [(i["net"], i["ofa_id"], i["init"], i["image_size"]) for i in infos] == \
        [("ofa0", models.OFA_IDS[0], "he_fout", 32), ("resnet18", None, "he_fout", 32)]
    assert json.loads(paths.config_file.read_text())["nets"] == ["ofa0", "resnet18"]
    state = torch.load(paths.checkpoint(2, "DIAM", 0, 1), weights_only=True)["state_dict"]
    assert state["fc.weight"].shape == (10, 512)  # resnet18's own head, for digits' ten classes
    labeled, unlabeled = read_indices(paths.indices(2, "DIAM", 0), "digits", 1297)
    records = []
    for net_id in (0, 1):
        with np.load(paths.pool_predictions(2, "DIAM", 0, net_id)) as z:
            records.append(dict(z))
    snapshots = np.stack([r["snapshot_labels"] for r in records])
    assert (snapshots[0] != snapshots[1]).any()  # two models, two opinions

    for method in ("DIAM", "DIAM_qp"):
        result = run_script_here("al_select.py", *_args(runs, *NETS, "--method", method, "--al_iter", 0))
        assert result.returncode == 0, result.stderr
    rng = lambda method: selection_rng(_run(runs, "--method", method, "--al_iter", 0))  # noqa: E731
    with np.load(paths.indices(2, "DIAM", 1)) as z:
        picked = strategies.diam(snapshots, 10, rng("DIAM"))
        np.testing.assert_array_equal(z["labeled"], np.concatenate([labeled, unlabeled[picked]]))
    # DIAM_qp reads every model's features: 1280 wide for the OFA net, 512 for resnet18 (computed once
    # by the selection and kept), the narrower padded with zero columns.
    features = []
    for net_id in (0, 1):
        with np.load(paths.pool_predictions(2, "DIAM_qp", 0, net_id)) as z:
            features.append(z["pool_features"][unlabeled])
    assert [f.shape[1] for f in features] == [1280, 512]
    padded = np.zeros((2, len(unlabeled), 1280), np.float16)
    for net_id, f in enumerate(features):
        padded[net_id, :, :f.shape[1]] = f
    with np.load(paths.indices(2, "DIAM_qp", 1)) as z:
        picked = strategies.diam_qp(snapshots, padded, 10, rng("DIAM_qp"))
        np.testing.assert_array_equal(z["labeled"], np.concatenate([labeled, unlabeled[picked]]))
    # Zero columns leave each model's neighbours as they were.
    sample = slice(0, 300)
    each = sum(knn_cooccurrence(f[None, sample], 5) for f in features)
    assert (knn_cooccurrence(padded[:, sample], 5) != each).nnz == 0

    tested = run_script_here("test_multi_models.py", *_args(runs, *NETS, "--method", "DIAM", "--al_iter", 0))
    assert tested.returncode == 0, tested.stderr
    assert np.loadtxt(paths.performances(2, "DIAM", 0)).shape == (2, 2)


@pytest.mark.parametrize("name, width", [("resnet18", 512), ("mobilenet_v3_small", 1024), ("efficientnet_b0", 1280)])
def test_features_and_logits_of_a_torchvision_model_are_its_heads_input_and_its_forward(name, width):
    torch.manual_seed(0)
    net = models.build_target(name, n_classes=7)
    net.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features, logits = models.features_and_logits(net, x)
        assert features.shape == (3, width) and logits.shape == (3, 7)
        torch.testing.assert_close(logits, net(x))
        head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.testing.assert_close(head(features), logits)
    assert models.target_input_size(name) == 224 and models.target_input_size("ofa3") == models.input_size(3)


def test_he_fout_follows_its_rule_on_a_torchvision_model():
    torch.manual_seed(0)
    net = models.build_target("resnet18")
    assert models.initialise_target(net, "resnet18", "he_fout") == "he_fout"
    conv = net.layer3[0].conv1
    expected = math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))
    assert abs(conv.weight.std().item() - expected) < 0.02 * expected
    assert torch.equal(net.bn1.weight, torch.ones_like(net.bn1.weight)) and not net.fc.bias.any()


def test_imagenet_weights_of_a_torchvision_model_come_from_torch_hubs_cache_or_are_refused(workdir, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))
    with pytest.raises(UserError, match="--init he_fout") as err:
        models.initialise_target(models.build_target("resnet18"), "resnet18", "pretrained")
    cached = Path(str(err.value).split(" are not at ")[1].split(" and could not")[0])
    assert cached.parent == Path(torch.hub.get_dir()) / "checkpoints" and not cached.exists()
    torch.manual_seed(1)
    imagenet = models.build_target("resnet18", n_classes=1000).state_dict()  # stands for torchvision's file
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(imagenet, cached)
    net = models.build_target("resnet18")
    assert models.initialise_target(net, "resnet18", "pretrained") == "pretrained"
    torch.testing.assert_close(net.conv1.weight, imagenet["conv1.weight"])
    assert net.fc.out_features == 10


def test_a_run_folder_made_with_named_nets_refuses_other_nets_clearly(side_by_side, tmp_path):
    runs = linked_copy(side_by_side, tmp_path / "runs")
    before = folder_state(runs)
    default = run_script_here("al_select.py", *_args(runs, "--method", "DIAM", "--al_iter", 0))
    assert_clean_error(default, "other settings", "nets: folder has ['ofa0', 'resnet18'], you asked the default")
    other = run_script_here("train_net.py", *_args(runs, "--nets", "ofa0", "mobilenet_v3_small", "--al_iter", 0,
                                                   "--net_id", 1, "--redo"))
    assert_clean_error(other, "you asked ['ofa0', 'mobilenet_v3_small']")
    assert folder_state(runs) == before


def test_naming_the_papers_nets_is_the_paper_run_and_its_config_is_unchanged(tmp_path):
    parse = lambda *extra: settings_from_args(cli.parser("t").parse_args(  # noqa: E731
        map(str, _args(tmp_path / "runs", "--method", "DIAM", "--al_iter", 0, *extra))))
    named, unnamed = parse("--nets", "ofa0", "ofa1"), parse()
    assert named.nets == unnamed.nets == () and named.target_nets == default_nets(2) == ("ofa0", "ofa1")
    assert named.run_config() == unnamed.run_config()
    preset = PRESETS["quick"]
    # The settings config.json always held: every preset field but those recorded only when not the
    # default (linear_heads, paths.ABSENT_IS_DEFAULT).
    always = {k: v for k, v in preset.as_dict().items() if k != "linear_heads"}
    assert run_config("digits", preset) == {"dataset": "digits", "mode": preset.mode, **always}
    assert run_config("digits", preset, ("ofa1", "ofa0"))["nets"] == ["ofa1", "ofa0"]


@pytest.mark.parametrize("nets, message", [
    (["ofa0", "resnet19"], "--nets names an unknown target model, 'resnet19'. Name OFA nets ofa0..ofa11 or"),
    (["ofa0", "ofa12"], "--nets names an unknown target model, 'ofa12'. Name OFA nets ofa0..ofa11 or"),
    (["ofa0", "ofa99"], "--nets names an unknown target model, 'ofa99'."),
    (["ofa0", "ofa01"], "--nets names an unknown target model, 'ofa01'."),  # one spelling per net
    (["ofa0"], "--nets names 1 target model(s) (ofa0), but --model_num is 2"),
    (["resnet18", "resnet18"], "names a model twice"),
    (["ofa0", "vit_b_16"], "'vit_b_16' cannot take 32-pixel inputs"),
])
def test_bad_target_models_are_clear_errors_and_nothing_is_written(tmp_path, nets, message):
    result = run_script_here("train_net.py", *_args(tmp_path / "runs", "--nets", *nets, "--al_iter", 0,
                                                    "--net_id", 1))
    assert_clean_error(result, message)
    assert not (tmp_path / "runs").exists()
