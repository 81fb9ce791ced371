"""The paper's network (Yi et al., TMI 2021): a CenterNet-style detector on a ResNet whose boxes guide a
multi-level ROI segmentation branch, plus the auxiliary feature refinement loss.

    image ─ backbone ─ c1 (s2), l1 (s4), l2 (s8), l3 (s16), l4 (s32)
    detection decoder (BatchNorm combination modules): c4 = CM(l4 -> l3), c3 = CM(c4 -> l2), c2 = CM(c3 -> l1)
    heads on c2 (stride 4): heatmap (sigmoid), size (w, h) in cells, centre offset
    segmentation levels: [c0_conv(image) (s1), c1 (s2), c2 (s4), c3 (s8), c4 (s16)]
    per box: crop every level on its grid (roi.py), fuse top-down (InstanceNorm CMs), head -> ROI mask

See ``objguided/models/README.md`` for where each fact of docs/method.md lives.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objguided.models.backbone import resnet_features
from objguided.models.config import ModelConfig
from objguided.models.layers import CombinationModule, DetectionHeads, SegmentationBranch, head_at
from objguided.models.losses import focal_loss, reg_l1_loss, roi_bce
from objguided.models.refine import point_sample, select_uncertain_points
from objguided.models.roi import crop_groups, cxcywh_to_inclusive, group_rois, inclusive_to_cxcywh, sample_separable

DETECTION_KEYS = ("hm", "wh", "reg", "ind", "reg_mask")


class ObjGuidedNet(nn.Module):
    """The network. ``cfg`` is a :class:`ModelConfig`.

    Inputs are [B, 3, S, S] images normalised as ``/255 - 0.5`` (see :func:`objguided.models.preprocess.prepare`),
    S divisible by 32. :meth:`loss` is the training entry point (train mode), :meth:`detect` the
    inference one (call ``.eval()`` first: the detection decoder uses BatchNorm).
    """

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.backbone = resnet_features(cfg.backbone, cfg.pretrained)
        c1, l1, l2, l3, l4 = self.backbone.channels
        self.dec_c4 = CombinationModule(l4, l3, "batch")
        self.dec_c3 = CombinationModule(l3, l2, "batch")
        self.dec_c2 = CombinationModule(l2, l1, "batch")
        self.heads = DetectionHeads(l1, cfg.head_width)
        self.seg = SegmentationBranch((64, c1, l1, l2, l3))
        #: a torch.Generator for the refinement's random points (None: the global RNG)
        self.point_generator: torch.Generator | None = None

    # ------------------------------------------------------------------------------------ forward
    def forward(self, images: Tensor) -> dict:
        """Run the backbone, the detection decoder and heads, and the level-0 conv of the seg branch.

        Returns a dict: ``hm`` [B,1,S/4,S/4] heatmap *probabilities* (sigmoid, unclamped),
        ``hm_logits`` (the same before the sigmoid: the loss uses these), ``wh`` [B,2,S/4,S/4] box
        (w, h) in heatmap cells (input pixels / 4), ``reg`` [B,2,S/4,S/4] centre offsets in cells, and
        ``seg_feats``: the five maps the segmentation branch crops, [c0_conv(image) (S), backbone conv1
        (S/2), c2 (S/4), c3 (S/8), c4 (S/16)].
        """
        c2, seg_feats = self._features(images)
        out = self.heads(c2)
        out["hm"] = torch.sigmoid(out["hm_logits"])
        out["seg_feats"] = seg_feats
        return out

    def _features(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The heads' input map c2 and the five maps the segmentation branch crops."""
        c1, l1, l2, l3, l4 = self.backbone(images)
        c4 = self.dec_c4(l4, l3)
        c3 = self.dec_c3(c4, l2)
        c2 = self.dec_c2(c3, l1)
        return c2, [self.seg.c0_conv(images), c1, c2, c3, c4]

    def _roi_groups(self, seg_feats: list[Tensor], per_image_boxes: list[np.ndarray]):
        """Yield (members, levels, logits [n,1,h,w], fused maps) per batch of same-size ROIs.

        ``per_image_boxes``: per image [m, 4] (cx, cy, w, h) in input pixels (not yet enlarged)."""
        cfg = self.cfg
        groups = group_rois(per_image_boxes, cfg.roi_enlarge, cfg.min_roi_size, cfg.batch_rois)
        for (levels, members), crops in zip(groups, crop_groups(seg_feats, groups)):
            logits, fused = self.seg.fuse(crops)
            yield members, levels, logits, fused

    #: a head runs at the peaks only while their output windows cover at most this part of the map (an
    #: upper bound: windows overlap); beyond it the dense convolution is cheaper than gathering patches
    SPARSE_MAX_COVER = 0.5

    def _head_at(self, head: nn.Sequential, x: Tensor, ind: Tensor) -> Tensor:
        """``head`` on one image's map ``x`` [C, H, W] at the flat positions ``ind``: [C_out, n]."""
        k2 = head[-1].kernel_size[0]
        if ind.numel() * k2 * k2 <= self.SPARSE_MAX_COVER * x.shape[1] * x.shape[2]:
            return head_at(head, x, ind)
        return head(x[None])[0].reshape(head[-1].out_channels, -1)[:, ind]

    # --------------------------------------------------------------------------------------- loss
    def loss(self, images: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training loss of a batch. ``targets``: one dict per image, the outputs of
        :func:`objguided.models.targets.build_targets` as tensors (same keys).

        Returns ``total`` = 1*hm + 0.1*wh + 1*off + 2*seg + 1*point (weights from the config) and the
        unweighted terms ``hm`` (focal, / number of centres in the batch), ``wh``, ``off`` (L1, sum over
        both channels / (2 * objects in the batch + 1e-4)), ``seg`` (mean over all ROIs of the batch of
        each ROI's mean BCE against the GT mask sampled bilinearly on the ROI grid) and ``point`` (one
        mean over the per-ROI point BCEs of both refinement heads; 0 when ``refine`` is off). A term
        with nothing to average (no ROI) is a 0 tensor and is left out of ``total``.
        """
        cfg = self.cfg
        dev = images.device
        out = self.forward(images)
        tg = {k: torch.stack([torch.as_tensor(t[k]) for t in targets]).to(dev) for k in DETECTION_KEYS}
        hm = focal_loss(out["hm_logits"], tg["hm"], clamp=cfg.clamp_heatmap)
        wh = reg_l1_loss(out["wh"], tg["reg_mask"], tg["ind"], tg["wh"])
        off = reg_l1_loss(out["reg"], tg["reg_mask"], tg["ind"], tg["reg"])

        boxes = [inclusive_to_cxcywh(torch.as_tensor(t["boxes"]).cpu().numpy()) for t in targets]
        roi_masks = [torch.as_tensor(t["roi_masks"]) for t in targets]
        seg_logits, seg_targets, point_losses = [], [], []
        for members, levels, logits, fused in self._roi_groups(out["seg_feats"], boxes):
            target = torch.stack([sample_separable(roi_masks[b][j], lv[0].xs(), lv[0].ys())
                                  for (b, j), lv in zip(members, levels)]).unsqueeze(1).to(dev)
            seg_logits.append(logits)
            seg_targets.append(target)
            if cfg.refine:
                point_losses.extend(self._point_losses(logits, fused, target))
        seg = roi_bce(seg_logits, seg_targets)
        point = torch.cat(point_losses).mean() if point_losses else None

        zero = hm.new_zeros(())
        total = cfg.hm_weight * hm + cfg.wh_weight * wh + cfg.off_weight * off
        if seg is not None:
            total = total + cfg.seg_weight * seg
        if point is not None:
            total = total + cfg.point_weight * point
        return {"total": total, "hm": hm, "wh": wh, "off": off,
                "seg": seg if seg is not None else zero, "point": point if point is not None else zero}

    def _point_losses(self, logits: Tensor, fused: list[Tensor], target: Tensor) -> list[Tensor]:
        """Per-ROI mean point BCEs of one ROI batch: [n] for head 0 and, when a level-1 map exists, [n]
        for head 1 (both against the soft ROI target sampled bilinearly at the same points)."""
        cfg = self.cfg
        pts = select_uncertain_points(torch.sigmoid(logits), cfg.k, cfg.beta, cfg.points_divisor,
                                      self.point_generator)
        if pts.shape[1] == 0:
            return []
        gt = point_sample(target, pts)[:, 0]  # [n, P]
        f0 = point_sample(fused[0], pts)  # [n, 64, P]
        res = [F.binary_cross_entropy_with_logits(self.seg.point_head0(f0)[:, 0], gt, reduction="none").mean(1)]
        if len(fused) > 1:
            f1 = point_sample(fused[1], pts)
            p1 = self.seg.point_head1(torch.cat([f0, f1], 1))[:, 0]
            res.append(F.binary_cross_entropy_with_logits(p1, gt, reduction="none").mean(1))
        return res

    # ------------------------------------------------------------------------------------- detect
    @torch.no_grad()
    def decode(self, out: dict, score_threshold: float = 0.3, top_k: int = 500, at=None) -> list[dict]:
        """:func:`decode_heads` with this network's down ratio."""
        return decode_heads(out, score_threshold, top_k, self.cfg.down_ratio, at=at)

    @torch.no_grad()
    def detect(self, images: Tensor, score_threshold: float = 0.3, top_k: int = 500) -> list[dict]:
        """Full inference of a batch (model in eval mode). Per image a dict, detections in descending score:

        * ``boxes`` [n,4] float32: (x1, y1, x2, y2) = (cx - (w-1)/2, cy - (h-1)/2, cx + (w-1)/2,
          cy + (h-1)/2), the inverse of the ground truth's inclusive-extent convention, with
          (cx, cy, w, h) = 4 * (cell + offset, w, h) (also returned as ``cxcywh``);
        * ``scores`` [n]: heatmap peak values (> ``score_threshold``);
        * ``rois``: n float32 tensors [int(1.1h), int(1.1w)] of ROI probabilities at input resolution;
        * ``roi_boxes`` [n,4] float64: (x first, y first, x last, y last) input-pixel coordinates of the
          ROI grid's corner points; ROI pixel (r, c) sits at
          (x_first + c*(x_last-x_first)/(W-1), y_first + r*(y_last-y_first)/(H-1)).

        Detections whose enlarged box is under 2 px wide or high get no ROI and are dropped.

        On a CPU with ``cfg.sparse_heads`` the size and offset heads run at the heatmap's peaks only
        (:func:`~objguided.models.layers.head_at`: the same numbers up to float rounding) while the peaks
        are few enough (:attr:`SPARSE_MAX_COVER`); on a GPU the dense convolutions are cheap and run as in
        training.
        """
        c2, seg_feats = self._features(images)
        if self.cfg.sparse_heads and images.device.type == "cpu":
            hm = torch.sigmoid(self.heads.hm(c2))
            at = lambda name, i, ind: self._head_at(getattr(self.heads, name), c2[i], ind)  # noqa: E731
            dets = self.decode({"hm": hm}, score_threshold, top_k, at=at)
        else:
            out = self.heads(c2)
            out["hm"] = torch.sigmoid(out["hm_logits"])
            dets = self.decode(out, score_threshold, top_k)
        boxes = [d["cxcywh"].numpy() for d in dets]
        rois: list[dict] = [dict() for _ in dets]
        spans: list[dict] = [dict() for _ in dets]
        for members, levels, logits, _ in self._roi_groups(seg_feats, boxes):
            probs = torch.sigmoid(logits[:, 0]).float().cpu()
            for (b, j), lv, p in zip(members, levels, probs):
                rois[b][j] = p
                spans[b][j] = lv[0].span()
        res = []
        for i, d in enumerate(dets):
            keep = sorted(rois[i])
            idx = torch.as_tensor(keep, dtype=torch.long)
            cxcywh = d["cxcywh"][idx] if keep else d["cxcywh"][:0]
            res.append({
                "boxes": torch.as_tensor(cxcywh_to_inclusive(cxcywh.numpy())),
                "cxcywh": cxcywh,
                "scores": d["scores"][idx] if keep else d["scores"][:0],
                "rois": [rois[i][j] for j in keep],
                "roi_boxes": torch.as_tensor(np.asarray([spans[i][j] for j in keep], np.float64).reshape(-1, 4)),
            })
        return res


@torch.no_grad()
def decode_heads(out: dict, score_threshold: float = 0.3, top_k: int = 500, down_ratio: int = 4,
                 at=None) -> list[dict]:
    """Boxes from the heads' outputs ``out`` (``hm`` probabilities, ``wh``, ``reg``): 3x3 max-pool peak
    NMS on the heatmap (a cell is kept when it equals its 3x3 maximum), the top K peaks, keep score >
    threshold; centre = r * (cell + offset), size = r * (w, h), r = down_ratio.

    ``at(name, image index, flat positions) -> [2, n]``, when given, supplies ``wh`` and ``reg`` at the
    kept peaks instead of the dense maps (which ``out`` then need not hold).

    Per image: ``cxcywh`` [n,4] float32 and ``scores`` [n] (CPU tensors, descending score).
    """
    hm = out["hm"]
    if at is None:
        at = lambda name, i, ind: out[name][i].reshape(2, -1)[:, ind]  # noqa: E731
    b, _, h, w = hm.shape
    r = float(down_ratio)
    peaks = hm * (F.max_pool2d(hm, 3, stride=1, padding=1) == hm)
    k = min(int(top_k), h * w)
    scores, inds = peaks.view(b, -1).topk(k, dim=1)
    res = []
    for i in range(b):
        keep = scores[i] > score_threshold
        ind = inds[i][keep]
        ys, xs = (ind // w).float(), (ind % w).float()
        off = at("reg", i, ind).float()
        size = at("wh", i, ind).float()
        cxcywh = torch.stack([(xs + off[0]) * r, (ys + off[1]) * r, size[0] * r, size[1] * r], 1)
        res.append({"cxcywh": cxcywh.cpu(), "scores": scores[i][keep].float().cpu()})
    return res
