"""The loss terms, normalised exactly as the authors' code does (docs/method.md).

* :func:`focal_loss`: CornerNet/CenterNet focal loss (alpha = 2, beta = 4) on the heatmap, summed over
  the batch and divided by the number of centre cells (gt == 1) in the batch; ``-neg`` alone when there
  is none.
* :func:`reg_l1_loss`: L1 on the gathered (w, h) or offset predictions, summed over both channels and
  all objects of the batch, divided by ``2 * number_of_objects + 1e-4``.
* :func:`roi_bce`: mean over ROIs of each ROI's mean binary cross-entropy against soft targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def focal_loss(logits: Tensor, gt: Tensor, clamp: bool = True) -> Tensor:
    """Focal loss of heatmap ``logits`` [B,1,H,W] against the Gaussian heatmap ``gt`` (same shape).

    ``clamp``: clamp the sigmoid to [1e-4, 1 - 1e-4] (CenterNet). Without it (the authors' code) a
    saturated logit gives log(0) = -inf, and 0 * inf = NaN.
    """
    pred = torch.sigmoid(logits.float())
    if clamp:
        pred = pred.clamp(1e-4, 1 - 1e-4)
    gt = gt.float()
    pos = gt.eq(1).float()
    neg = gt.lt(1).float()
    pos_loss = (torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred ** 2 * (1 - gt) ** 4 * neg).sum()
    num_pos = pos.sum()
    if num_pos == 0:
        return -neg_loss
    return -(pos_loss + neg_loss) / num_pos


def gather_at(feat: Tensor, ind: Tensor) -> Tensor:
    """feat [B, C, H, W], ind [B, K] flat indices into H*W -> [B, K, C]."""
    b, c, h, w = feat.shape
    flat = feat.view(b, c, h * w).permute(0, 2, 1)
    return flat.gather(1, ind.long().unsqueeze(2).expand(b, ind.shape[1], c))


def reg_l1_loss(pred_map: Tensor, reg_mask: Tensor, ind: Tensor, target: Tensor) -> Tensor:
    """L1 of ``pred_map`` [B,2,H,W] gathered at ``ind`` [B,K] against ``target`` [B,K,2], rows where
    ``reg_mask`` [B,K] is 1: sum over both channels / (2 * objects + 1e-4)."""
    pred = gather_at(pred_map, ind)
    m = reg_mask.float().unsqueeze(2).expand_as(pred)
    loss = F.l1_loss(pred * m, target.float() * m, reduction="sum")
    return loss / (m.sum() + 1e-4)


def roi_bce(logits: list[Tensor], targets: list[Tensor]) -> Tensor | None:
    """Mean over ROIs of each ROI's mean BCE. ``logits[i]``/``targets[i]`` are batches [n_i, ...] of
    ROIs of one size (soft targets in [0, 1]); None when there is no ROI.

    Uses BCE-with-logits (the same value as BCE on the sigmoid, without its log clamp at -100)."""
    per_roi = []
    for lg, tg in zip(logits, targets):
        if lg.shape[0] == 0:
            continue
        bce = F.binary_cross_entropy_with_logits(lg.float(), tg.float(), reduction="none")
        per_roi.append(bce.flatten(1).mean(1))
    if not per_roi:
        return None
    return torch.cat(per_roi).mean()
