"""Hyper-parameters of the paper's network (Yi et al., TMI 2021), with the paper's values as defaults.

Every default below is the value the paper states (or, where the paper is silent, the value the
authors' released code uses); see ``objguided/models/README.md`` for where each one is used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Configuration of :class:`objguided.models.network.ObjGuidedNet` and :func:`build_targets`.

    Fields
    ------
    backbone : ``"resnet50"`` (the paper), ``"resnet34"`` or ``"resnet18"``. The lighter two exist for
        CPU demos and unit tests only; they change every channel width after the backbone (the
        decoder/combination modules follow the backbone's widths) and are a named deviation.
    pretrained : ``"imagenet"`` = torchvision's V1 ImageNet weights (downloaded when online, else read
        from the torch hub cache), a path to a local ``.pth`` state dict, or ``None`` (random init).
        If loading fails, one warning is logged and training continues from scratch.
    refine : add the auxiliary feature refinement module's point loss (training only; the inference
        output does not depend on it).
    k, beta, points_divisor : the refinement draws ``k*N`` uniform random points per ROI and keeps the
        ``floor(beta*N)`` most uncertain ones, ``N = H*W // points_divisor`` (H, W of the ROI).
    down_ratio : stride of the detection heads (4: 128x128 heads for a 512 input). Only 4 is supported
        (the heads sit on the stride-4 decoder map c2).
    head_width : width of the hidden layer of the three detection heads (256).
    max_objects : at most this many detection targets per image (500), and the default top-K.
    min_roi_size : ROI grids (and whole ROIs) under this many pixels wide/high are skipped (2).
    roi_enlarge : each box is enlarged about its centre by this factor before cropping (1.1).
    hm_weight, wh_weight, off_weight, seg_weight, point_weight : loss weights (1, 0.1, 1, 2, 1).
    clamp_heatmap : clamp the heatmap sigmoid to [1e-4, 1-1e-4] inside the focal loss (CenterNet does;
        the authors' code does not, and can produce NaN/inf on a saturated output). A named deviation.
    batch_rois : process ROIs whose grids have the same size at every level as one batch (exact:
        grid sampling is per point and InstanceNorm normalises each sample on its own).
    sparse_heads : at inference on a CPU, evaluate the size and offset heads at the heatmap's peaks only
        (the same numbers up to float rounding; see :func:`objguided.models.layers.head_at`).
    """

    backbone: str = "resnet50"
    pretrained: str | None = "imagenet"
    refine: bool = True
    k: float = 3.0
    beta: float = 0.75
    points_divisor: int = 8
    down_ratio: int = 4
    head_width: int = 256
    max_objects: int = 500
    min_roi_size: float = 2.0
    roi_enlarge: float = 1.1
    hm_weight: float = 1.0
    wh_weight: float = 0.1
    off_weight: float = 1.0
    seg_weight: float = 2.0
    point_weight: float = 1.0
    clamp_heatmap: bool = True
    batch_rois: bool = True
    sparse_heads: bool = True

    def __post_init__(self):
        if self.backbone not in ("resnet18", "resnet34", "resnet50"):
            raise ValueError(f"backbone {self.backbone!r} unknown; expected resnet18, resnet34 or resnet50")
        if self.down_ratio != 4:
            raise ValueError(f"down_ratio {self.down_ratio} unsupported: the heads sit on the stride-4 map (4)")
        if self.k <= 0 or not (0 < self.beta <= self.k):
            raise ValueError(f"refinement needs k > 0 and 0 < beta <= k (got k={self.k}, beta={self.beta})")
        if self.points_divisor < 1:
            raise ValueError("points_divisor must be >= 1")
