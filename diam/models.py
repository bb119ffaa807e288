"""The 12 target nets: OFA specialised MobileNetV3s built from configs shipped here.

Initial weights (SPEC section 2), chosen by the preset's `init`: OFA's he_fout rule
from scratch (what the original code in effect trained from, the default), OFA's
ImageNet weights (the paper's stated intent; refused when they cannot be had), or
PyTorch's default initialisation. The choice is recorded beside every checkpoint.
"""
import copy
import json
import os
from pathlib import Path

import torch
from ofa.imagenet_classification.networks import get_net_by_name
from ofa.utils import init_models

from .errors import UserError
from .presets import INIT_MODES

# SPEC section 2, net_id 0..11: the first T are the T target models.
OFA_IDS = (
    "note10_lat@22ms_top1@76.6_finetune@25",
    "note10_lat@16ms_top1@75.5_finetune@25",
    "note10_lat@11ms_top1@73.6_finetune@25",
    "note10_lat@8ms_top1@71.4_finetune@25",
    "note8_lat@65ms_top1@76.1_finetune@25",
    "note8_lat@49ms_top1@74.9_finetune@25",
    "note8_lat@31ms_top1@72.8_finetune@25",
    "note8_lat@22ms_top1@70.4_finetune@25",
    "s7edge_lat@88ms_top1@76.3_finetune@25",
    "s7edge_lat@58ms_top1@74.7_finetune@25",
    "s7edge_lat@41ms_top1@73.1_finetune@25",
    "s7edge_lat@29ms_top1@70.5_finetune@25",
)
CONFIG_DIR = Path(__file__).with_name("ofa_specialized")
# The address ofa.model_zoo.ofa_specialized downloads from ('@' written as '-').
WEIGHTS_URL = "https://raw.githubusercontent.com/han-cai/files/master/ofa/ofa_specialized/{}/init"


def check_net_id(net_id: int) -> None:
    if not 0 <= net_id < len(OFA_IDS):
        raise UserError(f"net_id {net_id} does not exist: the target nets are 0..{len(OFA_IDS) - 1}.")


def net_config(net_id: int) -> dict:
    check_net_id(net_id)
    return json.loads((CONFIG_DIR / OFA_IDS[net_id] / "net.config").read_text())


def input_size(net_id: int) -> int:
    check_net_id(net_id)
    return json.loads((CONFIG_DIR / OFA_IDS[net_id] / "run.config").read_text())["image_size"]


def build_net(net_id: int, n_classes: int = 10, dropout: float = 0.1) -> torch.nn.Module:
    """The OFA architecture with a fresh n_classes head (weights: PyTorch's default init)."""
    cfg = copy.deepcopy(net_config(net_id))
    cfg["classifier"]["out_features"] = n_classes
    cfg["classifier"]["dropout_rate"] = dropout
    return get_net_by_name(cfg["name"]).build_from_config(cfg)


def weight_cache_candidates(net_id: int):
    """Where a copy of the ImageNet weights may already be: ours, then ofa's own caches."""
    folder = OFA_IDS[net_id].replace("@", "-")
    places = []
    if os.environ.get("DIAM_OFA_CACHE"):
        places.append(Path(os.environ["DIAM_OFA_CACHE"]) / folder / "init")
    places += [Path.home() / ".torch" / "ofa_specialized" / folder / "init",
               Path(".torch") / "ofa_specialized" / folder / "init"]
    return places


def _load_backbone_weights(net: torch.nn.Module, path: Path) -> None:
    """Load ImageNet weights into everything but the classifier (which is always new)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    backbone = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    # OFA's older files name blocks '.mobile_inverted_conv.'; ofa's loader maps them to '.conv.'.
    given = {k.replace(".mobile_inverted_conv.", ".conv.") for k in backbone}
    expected = {k for k in net.state_dict() if not k.startswith("classifier.")}
    if given != expected:
        raise ValueError(f"weights do not fit this net ({len(expected - given)} tensors missing, "
                         f"{len(given - expected)} unexpected)")
    net.load_state_dict(backbone)  # ofa's own loader: keeps the current (new) classifier


def _download_weights(net_id: int, destination: Path) -> bool:
    """Fetch the weights (atomically, via torch.hub); False when there is no network."""
    url = WEIGHTS_URL.format(OFA_IDS[net_id].replace("@", "-"))
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(destination), progress=False)
        return True
    except Exception:  # offline, DNS failure, HTTP error: all mean "not reachable here"
        return False


def initialise(net: torch.nn.Module, net_id: int, init: str = "he_fout") -> str:
    """Give `net` its initial weights by the rule `init` (one of INIT_MODES); returns `init`.

    he_fout: conv weights ~ N(0, 2 / (kh * kw * out_channels)), norm layers weight 1 and
    bias 0, linear weights ~ U(-1/sqrt(in), 1/sqrt(in)), biases 0 (ofa's own `init_models`,
    the call the original's run manager made over the ImageNet weights it had loaded;
    those kept only their BatchNorm running statistics, which training soon replaces).
    """
    if init not in INIT_MODES:
        raise UserError(f"unknown --init '{init}'. Choose one of: {', '.join(INIT_MODES)}.")
    if init == "he_fout":
        init_models(net, "he_fout")
    elif init == "pretrained":
        _load_pretrained(net, net_id)
    return init


def _load_pretrained(net: torch.nn.Module, net_id: int) -> None:
    """OFA's ImageNet weights from a local copy or a download; a UserError when neither works."""
    candidates = weight_cache_candidates(net_id)
    path = next((p for p in candidates if p.exists()), None)
    if path is None and _download_weights(net_id, candidates[0]):
        path = candidates[0]
    if path is None:
        problem = f"OFA's ImageNet weights for net {net_id} are not cached and could not be downloaded"
    else:
        try:
            _load_backbone_weights(net, path)
            return
        except Exception as err:  # truncated download, wrong file, pickled code refused
            problem = f"the ImageNet weights at {path} could not be used ({err})"
    raise UserError(f"{problem}. Put the file 'init' from OFA's file store at {candidates[0]} (or set "
                    "DIAM_OFA_CACHE), or use --init he_fout, the from-scratch start the original code trained "
                    "from (the default).")


def features_and_logits(net: torch.nn.Module, x: torch.Tensor):
    """Penultimate features (input of the classifier, 1280-d) and logits in one pass."""
    x = net.first_conv(x)
    for block in net.blocks:
        x = block(x)
    x = net.final_expand_layer(x)
    x = net.global_avg_pool(x)
    features = net.feature_mix_layer(x).flatten(1)
    return features, net.classifier(features)
