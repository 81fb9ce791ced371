"""Keypoint Graph network (Yi et al., MICCAI 2019): a ResNet up to layer3, an unnormalised U-shaped
decoder with keypoint / short-offset / mid-offset heads at four scales, and a coarse-to-fine segmentation
branch on integer crops of the raw backbone features.

    image ─ c0 = two 3x3 conv+ReLU (s1, 64)
          └ ResNet: c1 = conv1+bn+relu (s2, 64) ─ l1 (s4) ─ l2 (s8) ─ l3 (s16)      (layer4 unused)
    decoder (no normalisation): d3 = C(l3 -> l2), d2 = C(d3 -> l1), d1 = C(d2 -> c1), d0 = C(d1 -> c0)
    heads on d0 (s1), d1 (s2), d2 (s4), d3 (s8): keypoints (5 logits), short offsets (10), mid offsets (40),
        each conv k x k (C -> C) + ReLU + conv k x k (C -> out), k = 7 in the authors' code
    segmentation, per box: crops of [c0, c1, l1, l2, l3] (integer, end-exclusive; stop at the first level
        under 2 px), fused top-down by unnormalised combination modules, head 3x3 64->64, ReLU, 3x3 64->1

``C(deep -> skip)``: bilinear upsample of ``deep`` to the skip's size, 3x3 conv (deep -> skip ch) + ReLU,
concatenated with the skip, 1x1 conv (2 skip -> skip) + ReLU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objguided.models.backbone import resnet_features
from objguided_methods._keypoint_graph_core import DIR_EDGES, N_KPS, code_box_iou, crop_bounds

SCALES = (1, 2, 4, 8)


class Combine(nn.Module):
    """Unnormalised combination module (see the module docstring)."""

    def __init__(self, c_deep: int, c_skip: int):
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(c_deep, c_skip, 3, padding=1), nn.ReLU(inplace=True))
        self.cat_conv = nn.Sequential(nn.Conv2d(2 * c_skip, c_skip, 1), nn.ReLU(inplace=True))

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = F.interpolate(deep, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.cat_conv(torch.cat([skip, self.up(up)], 1))


def _head(c_in: int, width: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, width, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
                         nn.Conv2d(width, c_out, kernel, padding=kernel // 2))


class KeypointGraphNet(nn.Module):
    def __init__(self, backbone: str = "resnet50", pretrained: str | None = "imagenet", head_kernel: int = 7,
                 head_width: int | None = None, radius: float = 5.0, inclusive_boxes: bool = False):
        super().__init__()
        self.backbone = resnet_features(backbone, pretrained)
        self.backbone.layer4 = nn.Identity()  # the method stops at layer3
        c1, l1, l2, l3, _ = self.backbone.channels
        self.radius = float(radius)
        self.inclusive_boxes = bool(inclusive_boxes)
        self.c0_conv = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True))
        self.dec = nn.ModuleList([Combine(c1, 64), Combine(l1, c1), Combine(l2, l1), Combine(l3, l2)])
        widths = (64, c1, l1, l2)  # d0, d1, d2, d3
        self.kp_heads = nn.ModuleList([_head(c, head_width or c, N_KPS, head_kernel) for c in widths])
        self.short_heads = nn.ModuleList([_head(c, head_width or c, 2 * N_KPS, head_kernel) for c in widths])
        self.mid_heads = nn.ModuleList([_head(c, head_width or c, 2 * len(DIR_EDGES), head_kernel)
                                        for c in widths])
        seg_ch = (64, c1, l1, l2, l3)
        self.seg_combine = nn.ModuleList([Combine(seg_ch[i + 1], seg_ch[i]) for i in range(len(seg_ch) - 1)])
        self.seg_head = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(64, 1, 3, padding=1))
        # the authors' init of every new conv: Kaiming normal, fan_out, ReLU gain (biases: torch default)
        for part in (self.c0_conv, self.dec, self.kp_heads, self.short_heads, self.mid_heads, self.seg_combine,
                     self.seg_head):
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    # ------------------------------------------------------------------------------------ forward
    def forward(self, images: Tensor) -> dict:
        """``scales``: per scale (1, 2, 4, 8) a tuple (kp logits [B,5,h,w], short [B,10,h,w], mid [B,40,h,w]);
        ``seg_feats``: [c0 (s1), c1 (s2), l1 (s4), l2 (s8), l3 (s16)] for the segmentation branch."""
        bb = self.backbone
        c0 = self.c0_conv(images)
        c1 = bb.relu(bb.bn1(bb.conv1(images)))
        l1 = bb.layer1(bb.maxpool(c1))
        l2 = bb.layer2(l1)
        l3 = bb.layer3(l2)
        d3 = self.dec[3](l3, l2)
        d2 = self.dec[2](d3, l1)
        d1 = self.dec[1](d2, c1)
        d0 = self.dec[0](d1, c0)
        scales = [(self.kp_heads[i](d), self.short_heads[i](d), self.mid_heads[i](d))
                  for i, d in enumerate((d0, d1, d2, d3))]
        return {"scales": scales, "seg_feats": [c0, c1, l1, l2, l3]}

    def segment(self, seg_feats: list[Tensor], b: int, box) -> tuple[Tensor, tuple[int, int, int, int]] | None:
        """Mask logits [h, w] of one box (x1, y1, x2, y2, input pixels) of image ``b`` and its level-0 crop
        (y1, y2, x1, x2); None when the box's level-0 crop is under 2 px."""
        crops, first = [], None
        for lvl, feat in enumerate(seg_feats):
            h, w = feat.shape[2:]
            cb = crop_bounds(box, lvl, h, w, self.inclusive_boxes)
            if cb is None:
                break
            y1, y2, x1, x2 = cb
            first = cb if first is None else first
            crops.append(feat[b:b + 1, :, y1:y2, x1:x2])
        if not crops:
            return None
        x = crops[-1]
        for i in range(len(crops) - 2, -1, -1):
            x = self.seg_combine[i](x, crops[i])
        return self.seg_head(x)[0, 0], first

    # --------------------------------------------------------------------------------------- loss
    def loss(self, images: Tensor, targets: dict) -> dict[str, Tensor]:
        """``targets``: ``scales`` = per scale (heat [B,5,h,w], short [B,10,h,w], mid [B,40,h,w]),
        ``labels`` [B,S,S] (int, 0 = background) and ``boxes``: per image [n,4] float (x1, y1, x2, y2) of
        the objects the segmentation branch trains on, with ``ids`` [n] their label values.

        total = sum over scales of (BCE(kp) + L1(short)/R + 0.25 * L1(mid)/R) + seg, where the L1 terms
        are averaged over the disc pixels of their (from-)keypoint type, and seg = per image the mean BCE
        over (GT-box region, object with box IoU >= 0.5) pairs, summed over images / batch size."""
        out = self.forward(images)
        r = self.radius
        terms: dict[str, Tensor] = {}
        total = images.new_zeros(())
        edge_from = [a for a, _ in DIR_EDGES]
        for s, (pred, tgt) in enumerate(zip(out["scales"], targets["scales"])):
            kp_l, short_p, mid_p = pred
            heat, short_t, mid_t = tgt
            kp = F.binary_cross_entropy_with_logits(kp_l, heat)
            m_short = heat.repeat_interleave(2, dim=1)
            short = ((short_p - short_t).abs() / r * m_short).sum() / (m_short.sum() + 1e-10)
            m_mid = heat[:, edge_from].repeat_interleave(2, dim=1)
            mid = ((mid_p - mid_t).abs() / r * m_mid).sum() / (m_mid.sum() + 1e-10)
            total = total + kp + short + 0.25 * mid
            terms[f"kp{s}"], terms[f"short{s}"], terms[f"mid{s}"] = kp, short, mid
        seg = self.seg_loss(out["seg_feats"], targets["labels"], targets["boxes"], targets["ids"])
        total = total + seg
        return {"total": total, **terms, "seg": seg}

    def seg_loss(self, seg_feats, labels: Tensor, boxes: list, ids: list) -> Tensor:
        per_image = []
        for b in range(labels.shape[0]):
            bx = np.asarray(torch.as_tensor(boxes[b]).detach().cpu(), np.float64).reshape(-1, 4)
            idv = np.asarray(torch.as_tensor(ids[b]).detach().cpu(), np.int64).reshape(-1)
            losses = []
            for k, box in enumerate(bx):
                res = self.segment(seg_feats, b, box)
                if res is None:
                    continue
                logits, (y1, y2, x1, x2) = res
                for j, other in enumerate(bx):
                    if code_box_iou(box, other) >= 0.5:
                        target = (labels[b, y1:y2, x1:x2] == int(idv[j])).to(logits.dtype)
                        losses.append(F.binary_cross_entropy_with_logits(logits, target))
            if losses:
                per_image.append(torch.stack(losses).mean())
        if not per_image:
            return seg_feats[0].new_zeros(())
        return torch.stack(per_image).sum() / labels.shape[0]


class EpochDecay:
    """Per-epoch exponential learning-rate decay for :func:`objguided.engine.trainer.fit`, whose own
    schedule counts optimizer steps (``lr_milestones``), not epochs: a global optimizer step pre-hook sets
    ``lr = base * gamma ** max(0, epoch - start)`` on the optimizer that holds this model's parameters, before
    each step. ``epoch`` is set by the batch
    function (``wrap``), so the rate depends on the epoch only and survives an interrupted-and-resumed run.

    Use as a context manager around ``fit``; other optimizers are left alone."""

    def __init__(self, model: nn.Module, base: float, gamma: float, start: int = 0):
        self.param_ids = {id(p) for p in model.parameters()}
        self.base, self.gamma, self.start = float(base), float(gamma), int(start)
        self.epoch = 0
        self._handle = None

    def lr(self, epoch: int) -> float:
        return self.base * self.gamma ** max(0, int(epoch) - self.start)

    def wrap(self, batches_for_epoch):
        def inner(epoch: int):
            self.epoch = int(epoch)
            return batches_for_epoch(epoch)
        return inner

    def _hook(self, optimizer, args, kwargs):
        groups = optimizer.param_groups
        if not groups or not groups[0]["params"] or id(groups[0]["params"][0]) not in self.param_ids:
            return
        lr = self.lr(self.epoch)
        for g in groups:
            g["lr"] = lr

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._handle = register_optimizer_step_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        return False


__all__ = ["KeypointGraphNet", "Combine", "EpochDecay", "SCALES"]
