"""``mask_rcnn``: Mask R-CNN (He et al., ICCV 2017), ResNet-FPN, on torchvision.

torchvision's ``MaskRCNN`` with one foreground class (``num_classes`` = 2 with the background), the
reference R50-FPN heads (box head: two FC 1024; mask head: four 3x3 conv 256 on 14x14 ROI features, a
2x deconvolution, 28x28 masks), images resized so their long side is ``input_size`` (512, like every
method here, instead of torchvision's 800/1333), the per-image detection cap raised to 500. The data,
training and inference plumbing (shared with ``pointrend``) is in :mod:`objguided_methods._torchvision_detection`;
see methods/README_box_baselines.md for the hyper-parameters and every deviation.

The state kept: ``{"model": state_dict, "frozen_bn": bool, "weights_source": str}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from objguided.config import Range
from objguided_methods import register
from objguided_methods._torchvision_detection import (
    BoxConfig,
    TorchvisionDetector,
    build_fpn_backbone,
    check_config,
    rcnn_kwargs,
)


@dataclass
class MaskRCNNConfig(BoxConfig):
    mask_head_dim: Annotated[int, Range(min=8)] = 256  # width of the mask head's four 3x3 convolutions (reference 256)


def build_model(cfg: MaskRCNNConfig, backbone=None):
    """torchvision's Mask R-CNN for a config (``backbone``: a prebuilt FPN, else from the config)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    if backbone is None:
        backbone = build_fpn_backbone(cfg)[0]
    return MaskRCNN(backbone, **rcnn_kwargs(cfg),
                    mask_head=MaskRCNNHeads(cfg.fpn_channels, [cfg.mask_head_dim] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(cfg.mask_head_dim, cfg.mask_head_dim, 2))


@register
class MaskRCNN(TorchvisionDetector):
    """Mask R-CNN ResNet-FPN (torchvision), one foreground class."""

    name = "mask_rcnn"
    Config = MaskRCNNConfig

    config_check = staticmethod(check_config)

    def build_model(self, cfg: MaskRCNNConfig, backbone):
        return build_model(cfg, backbone)


__all__ = ["MaskRCNN", "MaskRCNNConfig", "build_model"]
