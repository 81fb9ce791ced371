"""``pointrend``: PointRend (Kirillov et al., CVPR 2020) on top of torchvision's Mask R-CNN.

torchvision's Faster R-CNN (backbone, RPN, box head: the same as ``mask_rcnn``) with its ``RoIHeads``
subclassed (:class:`~_pointrend_net.PointRendRoIHeads`): the box part is composed from torchvision's own
pieces (``select_training_samples``, ``box_roi_pool``/``box_head``/``box_predictor``, ``fastrcnn_loss``,
``postprocess_detections``); the mask part is PointRend's, with detectron2's project defaults (docs/baselines.md
section 4), one mask class. The network parts are in :mod:`objguided_methods._pointrend_net` (kept apart so that
the method registry does not import torch):

- **Coarse head** (:class:`~_pointrend_net.CoarseMaskHead`): 14x14 ROIAlign on P2 only -> 2x2 stride-2 conv
  (256, ReLU) -> two FC 1024 (ReLU) -> FC to 7x7 mask logits. Loss: BCE against the ground-truth mask
  projected on the box at 7x7 (torchvision's ``project_masks_on_boxes``).
- **Point head** (:class:`~_pointrend_net.PointHead`): per point, the P2 features sampled bilinearly at the
  point (fine-grained, 256 ch) concatenated with the coarse logit sampled there (1 ch); three 1x1 Conv1d
  ("FC") of 256 with ReLU, the coarse logit re-concatenated before each layer and before the predictor
  (``COARSE_PRED_EACH_LAYER``), predictor -> 1 logit per point.
- **Training points** (:func:`~_pointrend_net.sample_training_points`): per ROI, ``k N`` uniform random
  points in the box (k = 3, N = 14^2 = 196: 588), the ``int(beta N)`` (beta = 0.75: 147) most uncertain by
  the coarse prediction (uncertainty = -|logit|), plus ``N - int(beta N)`` (49) uniform random "coverage"
  points. Their labels are the ground-truth mask sampled bilinearly at the points (soft, as detectron2's
  ``point_sample`` of the bit masks); loss: BCE-with-logits, mean. ``TRAIN_ON_PRED_BOXES``: the mask branch
  trains on the box head's (detached) refined boxes of the positive proposals, not on the proposals
  themselves.
- **Inference** (:func:`~_pointrend_net.subdivision_inference`): from the 7x7 coarse logits,
  ``subdivision_steps`` (5) steps each upsample the logits 2x (bilinear) and replace the
  ``subdivision_num_points`` (28^2 = 784) most uncertain cells by the point head's predictions
  (:func:`~_pointrend_net.subdivision_step`): 7 -> 224. As in detectron2, a step whose every cell the next
  step would re-predict anyway (``num_points >= 4 H W`` at the new size H x W, i.e. the 14x14 step) is
  skipped: the result is identical, since the 28x28 step then predicts all 784 cells from the coarse logits
  and the fine features alone. The 224x224 probabilities are pasted into the image like Mask R-CNN's 28x28
  ones.

Points live in ``[0, 1]^2`` box coordinates (cell ``j`` of an M-grid at ``(j + 0.5) / M``); a point
``(u, v)`` of box ``(x1, y1, x2, y2)`` is at image coordinate ``x1 + u (x2 - x1)`` in torchvision's
``roi_align(aligned=False)`` convention (pixel ``i`` at ``i``), the one the coarse head's ROIAlign and the
mask targets use. See methods/README_box_baselines.md for the deviations from the paper and from
detectron2's reference config.

The state kept: ``{"model": state_dict, "frozen_bn": bool, "weights_source": str}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from objguided.config import Count, PosInt, Range
from objguided_methods import register
from objguided_methods._torchvision_detection import BoxConfig, TorchvisionDetector, check_config


@dataclass
class PointRendConfig(BoxConfig):
    # -- coarse mask head (detectron2: CoarseMaskHead) --
    coarse_pool: Annotated[int, Range(min=2, multiple_of=2)] = 14  # ROIAlign size on P2 (a 2x2 stride-2 conv follows)
    coarse_side: PosInt = 7  # coarse mask resolution (OUTPUT_SIDE_RESOLUTION)
    coarse_fc_dim: Annotated[int, Range(min=8)] = 1024  # FC_DIM, two layers (NUM_FC)
    # -- point head (detectron2: StandardPointHead) --
    point_fc_dim: Annotated[int, Range(min=8)] = 256  # FC_DIM
    point_num_fc: Count = 3  # NUM_FC
    coarse_pred_each_layer: bool = True  # re-concatenate the coarse logit before every layer
    # -- training points --
    train_num_points: PosInt = 196  # N = 14^2 per ROI
    oversample_ratio: Annotated[float, Range(min=1)] = 3.0  # k
    importance_sample_ratio: Annotated[float, Range(min=0, max=1)] = 0.75  # beta
    train_on_pred_boxes: bool = True  # mask branch trained on the box head's refined boxes
    # -- inference --
    subdivision_steps: Count = 5  # 7 -> 224
    subdivision_num_points: PosInt = 784  # 28^2 points re-predicted per step


@register
class PointRend(TorchvisionDetector):
    """PointRend (coarse 7x7 mask + point head, adaptive subdivision to 224x224) on torchvision."""

    name = "pointrend"
    Config = PointRendConfig

    config_check = staticmethod(check_config)

    def build_model(self, cfg: PointRendConfig, backbone):
        from objguided_methods._pointrend_net import build_model

        return build_model(cfg, backbone)


__all__ = ["PointRend", "PointRendConfig"]
