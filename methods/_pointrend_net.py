"""PointRend's network parts (the ``pointrend`` method's torch side; see methods/pointrend.py).

Kept apart from methods/pointrend.py so that the method registry does not import torch.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, project_masks_on_boxes
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

# ---------------------------------------------------------------------------------------------------
# point sampling


def point_sample(maps: Tensor, points: Tensor) -> Tensor:
    """Bilinear values of ``maps`` [R, C, H, W] at ``points`` [R, P, 2] ((x, y) in [0, 1]^2 of each map,
    ``align_corners=False``: cell j at (j + 0.5) / W) -> [R, C, P]."""
    return F.grid_sample(maps, 2.0 * points[:, :, None, :] - 1.0, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[..., 0]


def uncertainty(logits: Tensor) -> Tensor:
    """PointRend's uncertainty of a one-class mask logit: -|logit| (highest at probability 0.5)."""
    return -logits.abs()


def sample_training_points(coarse_logits: Tensor, num_points: int, oversample_ratio: float,
                           importance_sample_ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Training points [R, N, 2] in box coordinates: the ``int(beta N)`` most uncertain of ``int(k N)``
    uniform random points (by the coarse logits [R, 1, h, w]), then ``N - int(beta N)`` uniform random
    coverage points (in that order)."""
    r, device = coarse_logits.shape[0], coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    candidates = torch.rand(r, num_sampled, 2, device=device, generator=generator)
    unc = uncertainty(point_sample(coarse_logits, candidates))[:, 0]  # [R, kN]
    idx = unc.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(r, num_random, 2, device=device, generator=generator)], dim=1)
    return chosen


def subdivision_step(logits: Tensor, num_points: int, predict: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """One adaptive-subdivision step: upsample [R, 1, H, W] logits to 2H x 2W (bilinear), then replace the
    ``num_points`` most uncertain cells by ``predict(points [R, n, 2]) -> [R, 1, n]``.

    Returns (the new logits [R, 1, 2H, 2W], the flat indices [R, n] of the re-predicted cells)."""
    up = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
    r, c, h, w = up.shape
    n = min(num_points, h * w)
    idx = uncertainty(up).reshape(r, h * w).topk(n, dim=1).indices
    points = torch.stack([(idx % w).to(up.dtype) + 0.5, (idx // w).to(up.dtype) + 0.5], dim=-1)
    points = points / torch.tensor([w, h], dtype=up.dtype, device=up.device)
    values = predict(points).to(up.dtype)
    up = up.reshape(r, c, h * w).scatter(2, idx[:, None, :].expand(-1, c, -1), values).reshape(r, c, h, w)
    return up, idx


def subdivision_inference(coarse_logits: Tensor, steps: int, num_points: int,
                          predict: Callable[[Tensor], Tensor]) -> Tensor:
    """detectron2's inference: ``steps`` subdivision steps from the coarse logits (see module docstring)."""
    logits = coarse_logits
    for step in range(steps):
        h, w = logits.shape[-2] * 2, logits.shape[-1] * 2
        if num_points >= 4 * h * w and step < steps - 1:  # the next step re-predicts every cell anyway
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            continue
        logits, _ = subdivision_step(logits, num_points, predict)
    return logits


# ---------------------------------------------------------------------------------------------------
# heads


def _msra_fill(layer: nn.Module) -> None:  # detectron2's c2_msra_fill
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(layer.bias)


def _xavier_fill(layer: nn.Module) -> None:  # detectron2's c2_xavier_fill
    nn.init.kaiming_uniform_(layer.weight, a=1)
    nn.init.zeros_(layer.bias)


class CoarseMaskHead(nn.Module):
    """ROI features [R, C, P, P] -> coarse mask logits [R, 1, side, side]."""

    def __init__(self, in_channels: int, pool: int = 14, side: int = 7, fc_dim: int = 1024, num_fc: int = 2):
        super().__init__()
        self.side = side
        self.reduce = nn.Conv2d(in_channels, in_channels, kernel_size=2, stride=2)
        _msra_fill(self.reduce)
        dims = [in_channels * (pool // 2) ** 2] + [fc_dim] * num_fc
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for fc in self.fcs:
            _xavier_fill(fc)
        self.prediction = nn.Linear(dims[-1], side * side)
        nn.init.normal_(self.prediction.weight, std=0.001)
        nn.init.zeros_(self.prediction.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.reduce(x)).flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.prediction(x).reshape(-1, 1, self.side, self.side)


class PointHead(nn.Module):
    """(fine features [R, C, P], coarse logits [R, 1, P]) -> point logits [R, 1, P]."""

    def __init__(self, in_channels: int, fc_dim: int = 256, num_fc: int = 3, coarse_pred_each_layer: bool = True):
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.fcs = nn.ModuleList()
        dim_in = in_channels + 1
        for _ in range(num_fc):
            fc = nn.Conv1d(dim_in, fc_dim, kernel_size=1)
            _msra_fill(fc)
            self.fcs.append(fc)
            dim_in = fc_dim + (1 if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(dim_in, 1, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        x = torch.cat([fine, coarse], dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=1)
        return self.predictor(x)


def _feature_scale(feature: Tensor, image_shapes: list[tuple[int, int]]) -> float:
    """The stride of a feature map as a power of 2 (as torchvision's poolers infer it)."""
    original = max(s[0] for s in image_shapes)
    return 2.0 ** round(math.log2(feature.shape[-2] / original))


def _to_image(boxes: Tensor, points: Tensor) -> Tensor:
    """Box coordinates [R, P, 2] of boxes [R, 4] -> image coordinates [R, P, 2] (aligned=False convention)."""
    origin, size = boxes[:, None, :2], (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    return origin + points * size


def sample_image_map(maps: Tensor, xy: Tensor, scale: float) -> Tensor:
    """Values of one image's maps [C, H, W] at image coordinates xy [P, 2] (value of cell i at i / scale,
    torchvision's aligned=False convention) -> [C, P]."""
    h, w = maps.shape[-2:]
    grid = torch.stack([(xy[:, 0] * scale + 0.5) / w, (xy[:, 1] * scale + 0.5) / h], dim=-1) * 2 - 1
    return F.grid_sample(maps[None], grid[None, None], mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0, :, 0]


class PointRendRoIHeads(RoIHeads):
    """torchvision's RoIHeads with PointRend's mask branch (coarse head + point head)."""

    def __init__(self, base: RoIHeads, cfg, in_channels: int, feature: str = "0"):
        super().__init__(base.box_roi_pool, base.box_head, base.box_predictor,
                         base.proposal_matcher.high_threshold, base.proposal_matcher.low_threshold,
                         base.fg_bg_sampler.batch_size_per_image, base.fg_bg_sampler.positive_fraction,
                         base.box_coder.weights, base.score_thresh, base.nms_thresh, base.detections_per_img)
        self.feature = feature  # P2
        self.coarse_roi_pool = MultiScaleRoIAlign([feature], cfg.coarse_pool, sampling_ratio=2)
        self.coarse_head = CoarseMaskHead(in_channels, cfg.coarse_pool, cfg.coarse_side, cfg.coarse_fc_dim)
        self.point_head = PointHead(in_channels, cfg.point_fc_dim, cfg.point_num_fc, cfg.coarse_pred_each_layer)
        self.train_num_points = cfg.train_num_points
        self.oversample_ratio = float(cfg.oversample_ratio)
        self.importance_sample_ratio = float(cfg.importance_sample_ratio)
        self.train_on_pred_boxes = cfg.train_on_pred_boxes
        self.subdivision_steps = cfg.subdivision_steps
        self.subdivision_num_points = cfg.subdivision_num_points
        self.inference_chunk = 100  # ROIs per point-head pass at inference (memory only; same result)

    # -- the mask branch ---------------------------------------------------------------------
    def point_logits(self, features, boxes: list[Tensor], coarse: Tensor, points: Tensor,
                     image_shapes) -> Tensor:
        """Point-head logits [R, 1, P] at box points [R, P, 2] (ROIs of all images, in order)."""
        fmap = features[self.feature]
        scale = _feature_scale(fmap, image_shapes)
        fine, start = [], 0
        for i, b in enumerate(boxes):
            n = len(b)
            if n:
                xy = _to_image(b, points[start:start + n]).reshape(-1, 2)
                f = sample_image_map(fmap[i], xy, scale)  # [C, n P]
                fine.append(f.reshape(f.shape[0], n, -1).permute(1, 0, 2))
            start += n
        fine = torch.cat(fine) if fine else fmap.new_zeros((0, fmap.shape[1], points.shape[1]))
        return self.point_head(fine, point_sample(coarse, points))

    def mask_losses(self, features, boxes, matched_idxs, targets, image_shapes) -> dict[str, Tensor]:
        coarse = self.coarse_head(self.coarse_roi_pool(features, boxes, image_shapes))
        if coarse.shape[0] == 0:
            zero = coarse.sum() * 0
            return {"loss_mask": zero, "loss_mask_point": zero}
        gt = [t["masks"] for t in targets]
        coarse_t = torch.cat([project_masks_on_boxes(m, b, i, coarse.shape[-1])
                              for m, b, i in zip(gt, boxes, matched_idxs)])
        loss_mask = F.binary_cross_entropy_with_logits(coarse[:, 0], coarse_t)
        with torch.no_grad():
            points = sample_training_points(coarse.detach(), self.train_num_points, self.oversample_ratio,
                                            self.importance_sample_ratio)
        labels, start = [], 0
        for m, b, idx in zip(gt, boxes, matched_idxs):
            n = len(b)
            if n:
                xy = _to_image(b, points[start:start + n])  # [n, P, 2]
                maps = m[idx].to(xy.dtype)  # [n, H, W]: each ROI's ground-truth object
                h, w = maps.shape[-2:]
                grid = torch.stack([(xy[..., 0] + 0.5) / w, (xy[..., 1] + 0.5) / h], dim=-1) * 2 - 1
                labels.append(F.grid_sample(maps[:, None], grid[:, None], mode="bilinear",
                                            padding_mode="zeros", align_corners=False)[:, 0, 0])
            start += n
        logits = self.point_logits(features, boxes, coarse, points, image_shapes)[:, 0]
        loss_point = F.binary_cross_entropy_with_logits(logits, torch.cat(labels))
        return {"loss_mask": loss_mask, "loss_mask_point": loss_point}

    def mask_inference(self, features, boxes: list[Tensor], image_shapes) -> list[Tensor]:
        """Mask probabilities [N, 1, M, M] per image (M = coarse_side * 2^steps), ROIs in chunks of
        ``inference_chunk`` (the point head's activations grow as ROIs x 784 points x 257 channels)."""
        out = []
        for i, b in enumerate(boxes):
            feats = {k: v[i:i + 1] for k, v in features.items()}
            chunks = b.split(self.inference_chunk) if len(b) else [b]
            out.append(torch.cat([self._mask_chunk(feats, [c], image_shapes[i:i + 1]) for c in chunks]))
        return out

    def _mask_chunk(self, features, boxes: list[Tensor], image_shapes) -> Tensor:
        coarse = self.coarse_head(self.coarse_roi_pool(features, boxes, image_shapes))
        predict = lambda points: self.point_logits(features, boxes, coarse, points, image_shapes)  # noqa: E731
        logits = subdivision_inference(coarse, self.subdivision_steps, self.subdivision_num_points, predict)
        return logits.sigmoid()

    # -- the whole ROI heads ------------------------------------------------------------------
    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            if targets is None:
                raise ValueError("PointRendRoIHeads: targets are needed in training")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if not self.training:
            boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals,
                                                                image_shapes)
            masks = self.mask_inference(features, boxes, image_shapes)
            return [{"boxes": b, "labels": lab, "scores": s, "masks": m}
                    for b, s, lab, m in zip(boxes, scores, labels, masks)], {}
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        if self.train_on_pred_boxes:  # detectron2's TRAIN_ON_PRED_BOXES: the refined (detached) boxes
            refined = self.box_coder.decode(box_regression.detach(), proposals)[:, 1]
            refined = refined.split([len(p) for p in proposals])
            refined = [box_ops.clip_boxes_to_image(b, s) for b, s in zip(refined, image_shapes)]
        else:
            refined = proposals
        mask_boxes, pos_idxs = [], []
        for b, lab, idx in zip(refined, labels, matched_idxs):
            pos = torch.where(lab > 0)[0]
            mask_boxes.append(b[pos])
            pos_idxs.append(idx[pos])
        losses.update(self.mask_losses(features, mask_boxes, pos_idxs, targets, image_shapes))
        return [], losses



def pointrend_roi_heads(base: RoIHeads, cfg, in_channels: int) -> PointRendRoIHeads:
    """PointRend's ROI heads around a torchvision ``RoIHeads`` (its box part reused as is)."""
    return PointRendRoIHeads(base, cfg, in_channels)


def build_model(cfg, backbone=None):
    """torchvision's Faster R-CNN with PointRend's ROI heads."""
    from torchvision.models.detection import FasterRCNN

    from objguided_methods._torchvision_detection import build_fpn_backbone, rcnn_kwargs

    if backbone is None:
        backbone = build_fpn_backbone(cfg)[0]
    model = FasterRCNN(backbone, **rcnn_kwargs(cfg))
    model.roi_heads = pointrend_roi_heads(model.roi_heads, cfg, cfg.fpn_channels)
    return model




__all__ = ["point_sample", "uncertainty", "sample_training_points", "subdivision_step", "subdivision_inference",
           "CoarseMaskHead", "PointHead", "PointRendRoIHeads", "pointrend_roi_heads", "build_model"]
