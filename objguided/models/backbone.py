"""Generic torchvision ResNet feature extractor, reusable by any method (ObjGuided, Mask R-CNN, ...).

:func:`resnet_features` returns a module whose forward gives the five maps the paper uses:
conv1+bn+relu (stride 2, before the max-pool), layer1 (s4), layer2 (s8), layer3 (s16), layer4 (s32).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: output channels of (conv1, layer1, layer2, layer3, layer4) per backbone
CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
}


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its pooling/fc, returning ``[c1, l1, l2, l3, l4]``.

    ``channels`` lists the widths of the five maps; ``weights_source`` says where the weights came from
    (``"imagenet"``, a path, or ``"random"``).
    """

    def __init__(self, net: torchvision.models.ResNet, channels: tuple[int, ...], weights_source: str):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = tuple(channels)
        self.weights_source = weights_source

    def forward(self, x: Tensor) -> list[Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        l1 = self.layer1(self.maxpool(c1))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return [c1, l1, l2, l3, l4]


def _load_state(name: str, pretrained: str) -> dict:
    if pretrained == "imagenet":
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1  # the paper's (V1) weights
        return weights.get_state_dict(progress=False)  # downloads when online, else reads the hub cache
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def resnet_features(name: str, pretrained: str | None) -> ResNetFeatures:
    """Build ``name`` (resnet18 | resnet34 | resnet50) and return its five feature maps as a module.

    ``pretrained``: ``"imagenet"`` asks torchvision's weights API for the V1 ImageNet weights
    (``torchvision.models.get_model_weights(name).IMAGENET1K_V1``: downloads when online, else reads the
    torch hub cache, ``$TORCH_HOME/hub/checkpoints``); any other string is a local ``.pth`` state dict
    (torchvision key names, optionally under ``"state_dict"`` or prefixed ``module.``; ``fc.*`` is
    ignored); ``None`` = random init. When loading fails (offline, missing file, wrong keys) ONE warning
    is logged on the ``objguided.models.backbone`` logger ("... training from scratch") and the module
    is returned with random init; ``weights_source`` then reads ``"random"``.
    """
    if name not in CHANNELS:
        raise ValueError(f"backbone {name!r} unknown; expected one of {sorted(CHANNELS)}")
    net = getattr(torchvision.models, name)(weights=None)
    source = "random"
    if pretrained is not None:
        try:
            state = _load_state(name, pretrained)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise KeyError(f"weights do not fit {name}: {len(missing)} missing keys (first: "
                               f"{missing[:1]}), {len(unexpected)} unexpected (first: {unexpected[:1]})")
            source = pretrained
        except Exception as exc:  # noqa: BLE001 - any failure means: go on from scratch, say so once
            net = getattr(torchvision.models, name)(weights=None)
            log.warning("%s: could not load %s weights (%s: %s); training from scratch (random init)",
                        name, pretrained, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    return ResNetFeatures(net, CHANNELS[name], source)
