"""The 12 OFA MobileNetV3 target nets (SPEC section 2).

    from load_test_models import load_test_models
    net, size = load_test_models(3)             # net 3 with a fresh 10-class head, its input size
    net, size = load_test_models(3, trained_weights="runs/.../net3.pt")  # trained, at the size it was trained at
    python load_test_models.py                  # list the nets
"""
import torch

from diam import models
from diam.settings import read_environment


def load_test_models(net_id: int, n_classes: int = 10, trained_weights=None, init: str = "he_fout"):
    """(net, input size) for target net `net_id`.

    With `trained_weights` (a checkpoint written by train_net.py) the trained net is
    returned, with the input size it was trained at (its record's image_size: 32 in the
    quick preset, say); otherwise the net gets its initial weights (`init`: he_fout,
    pretrained or pytorch, as the scripts' --init), with its own input size (140-224).
    A bare state_dict, which records no size, comes with the net's own size.
    """
    net = models.build_net(net_id, n_classes)
    size = models.input_size(net_id)
    if trained_weights is not None:
        saved = torch.load(trained_weights, map_location="cpu", weights_only=True)
        net.load_state_dict(saved.get("state_dict", saved))
        size = saved.get("info", {}).get("image_size", size)
    else:
        models.initialise(net, net_id, init, read_environment().ofa_cache)
    return net, size


if __name__ == "__main__":
    for i, ofa_id in enumerate(models.OFA_IDS):
        net = models.build_net(i)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{i:2d}  {ofa_id:40s} input {models.input_size(i):3d}  {params:.2f}M parameters")
