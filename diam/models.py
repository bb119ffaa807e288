"""The target nets: the 12 OFA specialised MobileNetV3s built from configs shipped here, and
torchvision's classification models by name (a run's own target models, `--nets`).

Initial weights (SPEC section 2), chosen by the preset's `init`: OFA's he_fout rule
from scratch (what the original code in effect trained from, the default), ImageNet
weights (the paper's stated intent; refused when they cannot be had), or PyTorch's
default initialisation. The choice is recorded beside every checkpoint.
"""
import copy
import json
import re
from pathlib import Path
from typing import Optional

import torch
import torchvision
from ofa.imagenet_classification.networks import MobileNetV3, get_net_by_name
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


def weight_cache_candidates(net_id: int, ofa_cache: Optional[Path] = None):
    """Where a copy of the ImageNet weights may already be: ours (`ofa_cache`, the step's
    $DIAM_OFA_CACHE), then ofa's own caches."""
    folder = OFA_IDS[net_id].replace("@", "-")
    places = []
    if ofa_cache:
        places.append(Path(ofa_cache) / folder / "init")
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


def initialise(net: torch.nn.Module, net_id: int, init: str = "he_fout", ofa_cache: Optional[Path] = None) -> str:
    """Give `net` its initial weights by the rule `init` (one of INIT_MODES); returns `init`.

    he_fout: conv weights ~ N(0, 2 / (kh * kw * out_channels)), norm layers weight 1 and
    bias 0, linear weights ~ U(-1/sqrt(in), 1/sqrt(in)), biases 0 (ofa's own `init_models`,
    the call the original's run manager made over the ImageNet weights it had loaded;
    those kept only their BatchNorm running statistics, which training soon replaces).
    """
    return _apply_init(net, init, lambda: _load_pretrained(net, net_id, ofa_cache))


def _apply_init(net: torch.nn.Module, init: str, load_pretrained) -> str:
    """The rule `init` on `net`; `load_pretrained` fetches the net's own pretrained weights."""
    if init not in INIT_MODES:
        raise UserError(f"unknown --init '{init}'. Choose one of: {', '.join(INIT_MODES)}.")
    if init == "he_fout":
        init_models(net, "he_fout")
    elif init == "pretrained":
        load_pretrained()
    return init


def _load_pretrained(net: torch.nn.Module, net_id: int, ofa_cache: Optional[Path]) -> None:
    """OFA's ImageNet weights from a local copy or a download; a UserError when neither works."""
    candidates = weight_cache_candidates(net_id, ofa_cache)
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
    """Penultimate features (input of the classifier: 1280-d for the OFA nets) and logits in one pass."""
    if not isinstance(net, MobileNetV3):
        return _torchvision_features_and_logits(net, x)
    x = net.first_conv(x)
    for block in net.blocks:
        x = block(x)
    x = net.final_expand_layer(x)
    x = net.global_avg_pool(x)
    features = net.feature_mix_layer(x).flatten(1)
    return features, net.classifier(features)


def classifier(net: torch.nn.Module) -> torch.nn.Module:
    """The layer that maps penultimate features to logits: an OFA net's classifier (dropout, then
    linear), a torchvision model's last linear layer."""
    return net.classifier if isinstance(net, MobileNetV3) else _head(net, type(net).__name__)[1]


def dropout_on_features(net: torch.nn.Module):
    """(rate, final linear layer) of the dropout that acts on the net's penultimate features just before
    its last linear layer: an OFA net's classifier (dropout, then linear), or a torchvision model whose
    last linear layer comes right after an nn.Dropout in the same Sequential (MobileNet, EfficientNet,
    VGG's last one). Rate 0 when there is none (ResNet-18), or when it is set to 0."""
    if isinstance(net, MobileNetV3):
        dropout = getattr(net.classifier, "dropout", None)
        return (dropout.p if dropout is not None else 0.0), net.classifier.linear
    head_name, head = _head(net, type(net).__name__)
    parent_name, _, child_name = head_name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    if isinstance(parent, torch.nn.Sequential):
        names = [name for name, _ in parent.named_children()]
        place = names.index(child_name)
        before = parent.get_submodule(names[place - 1]) if place > 0 else None
        if isinstance(before, torch.nn.Dropout):
            return before.p, head
    return 0.0, head


# ---------------------------------------------------------------- target models by name
# A run's T target models may be named (--nets): "ofa<N>" is OFA net N above, any other name
# a torchvision classification model, built with weights=None (nothing is downloaded). Without
# names the T models are ofa0..ofa<T-1>, the paper's; a model's net_id is its place in the list.
OFA_NAME = re.compile(r"ofa(0|[1-9]\d*)")  # one spelling per net: ofa1, not ofa01
# Their auxiliary heads make training return a tuple; the main head is the model.
WITHOUT_AUX_LOGITS = {"googlenet": {"aux_logits": False, "init_weights": True},
                      "inception_v3": {"aux_logits": False, "init_weights": True}}


def ofa_number(name: str) -> Optional[int]:
    """N for "ofa<N>", None for a torchvision model's name."""
    match = OFA_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def torchvision_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def check_target_names(names) -> None:
    """Every name given to --nets is an OFA net or a torchvision classification model; else a UserError
    naming --nets and the name (not --net_id: an "ofa<N>" past the last OFA net is a bad name too)."""
    known = set(torchvision_models())
    for name in names:
        number = ofa_number(name)
        unknown = name not in known if number is None else number >= len(OFA_IDS)
        if unknown:
            raise UserError(f"--nets names an unknown target model, '{name}'. Name OFA nets "
                            f"ofa0..ofa{len(OFA_IDS) - 1} or torchvision classification models: "
                            f"{', '.join(sorted(known))}.")


def build_target(name: str, n_classes: int = 10, dropout: float = 0.1) -> torch.nn.Module:
    """Target model `name` with a fresh n_classes head. `dropout` is the OFA nets' (a torchvision
    model keeps its own architecture, dropout included)."""
    number = ofa_number(name)
    if number is not None:
        return build_net(number, n_classes, dropout)
    net = torchvision.models.get_model(name, weights=None, num_classes=n_classes,
                                       **WITHOUT_AUX_LOGITS.get(name, {}))
    head_name, head = _head(net, name)
    if head.out_features != n_classes:
        raise UserError(f"target model '{name}' does not end in the linear layer its classes come from "
                        f"(its last one, {head_name}, has {head.out_features} outputs), so it has no penultimate "
                        "features for selection to read. Choose another model.")
    return net


def target_input_size(name: str) -> int:
    """The side a model is trained and tested at (unless the preset fixes one): an OFA net's own, or
    the crop size of a torchvision model's ImageNet recipe."""
    number = ofa_number(name)
    if number is not None:
        return input_size(number)
    return torchvision.models.get_model_weights(name).DEFAULT.transforms().crop_size[0]


def initialise_target(net: torch.nn.Module, name: str, init: str = "he_fout", ofa_cache: Optional[Path] = None) -> str:
    """`initialise` for a named target model: the same three rules (he_fout is OFA's rule applied
    to the model's conv, norm and linear layers); returns `init`."""
    number = ofa_number(name)
    if number is not None:
        return initialise(net, number, init, ofa_cache)
    return _apply_init(net, init, lambda: _load_torchvision_pretrained(net, name))


def check_input_size(net: torch.nn.Module, name: str, size: int) -> None:
    """A torchvision model that cannot take `size`-pixel inputs (a ViT's fixed grid, say) is refused
    before training, by one forward pass of two blank images in eval mode (no state changes)."""
    if ofa_number(name) is not None:
        return
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(2, 3, size, size))
    except Exception as err:  # each architecture words it its own way (RuntimeError, AssertionError, ...)
        raise UserError(f"target model '{name}' cannot take {size}-pixel inputs ({str(err).splitlines()[0]}). "
                        "Choose another model, or another input size with --image_size.") from None


def _head(net: torch.nn.Module, name: str):
    """(name, module) of the last linear layer: the classifier of torchvision's models."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise UserError(f"target model '{name}' has no linear classifier (its classes come from a "
                        "convolution), so it has no penultimate features for selection to read. Choose another "
                        "model.")
    return linears[-1]


def _torchvision_features_and_logits(net: torch.nn.Module, x: torch.Tensor):
    _, head = _head(net, type(net).__name__)
    captured = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        logits = net(x)
    finally:
        hook.remove()
    return captured[-1].flatten(1), logits


def _load_torchvision_pretrained(net: torch.nn.Module, name: str) -> None:
    """torchvision's ImageNet weights from torch.hub's cache (or a download), all but the head."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), progress=False)
        except Exception:  # offline, DNS failure, HTTP error: all mean "not reachable here"
            raise UserError(f"torchvision's ImageNet weights for '{name}' are not at {path} and could not be "
                            f"downloaded. Put the file from {weights.url} there, or use --init he_fout (the "
                            "default).") from None
    head_name, _ = _head(net, name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        backbone = {k: v for k, v in state.items() if not k.startswith(head_name + ".")}
        expected = {k: v.shape for k, v in net.state_dict().items() if not k.startswith(head_name + ".")}
        if {k: v.shape for k, v in backbone.items()} != expected:
            raise ValueError("its tensors do not fit this model")
        net.load_state_dict(backbone, strict=False)
    except Exception as err:  # truncated download, wrong file, pickled code refused
        raise UserError(f"the ImageNet weights at {path} could not be used for '{name}' ({err}). Delete the file "
                        "to fetch it again, or use --init he_fout (the default).") from None
