"""Auxiliary feature refinement (training only): uncertain point selection and point sampling.

For a ROI of H x W pixels: N = H*W // D (D = 8); draw ``int(k*N)`` uniform random float points in the
unit square (x, y in [0, 1), mapped onto the ROI's corner pixel centres, align_corners=True); sample
the uncertainty ``-|2p - 1|`` of the detached predicted probability map there (bilinear); keep the
``floor(beta*N)`` most uncertain points. No extra "coverage" points (unlike PointRend).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(feat: Tensor, pts: Tensor) -> Tensor:
    """Bilinear (align_corners=True, zero padding) sample of ``feat`` [n, C, H, W] at ``pts`` [n, P, 2]
    ((x, y) in [0, 1] over the map's corner pixel centres) -> [n, C, P]."""
    grid = (2.0 * pts - 1.0).unsqueeze(2).to(feat.dtype)  # [n, P, 1, 2]
    return F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True).squeeze(3)


def point_counts(height: int, width: int, k: float, beta: float, divisor: int) -> tuple[int, int]:
    """(points drawn, points kept) = (int(k*N), floor(beta*N)) with N = H*W // divisor."""
    n = (height * width) // divisor
    return int(k * n), int(math.floor(beta * n))


def select_uncertain_points(probs: Tensor, k: float = 3.0, beta: float = 0.75, divisor: int = 8,
                            generator: torch.Generator | None = None) -> Tensor:
    """``probs`` [n, 1, H, W] ROI probabilities (detached here) -> the kept points [n, floor(beta*N), 2].

    Returns an empty [n, 0, 2] tensor when floor(beta*N) is 0.
    """
    n, _, height, width = probs.shape
    drawn, kept = point_counts(height, width, k, beta, divisor)
    if kept == 0 or drawn == 0:
        return probs.new_zeros((n, 0, 2))
    kept = min(kept, drawn)
    uncertainty = -(2 * probs.detach() - 1).abs()
    pts = torch.rand((n, drawn, 2), generator=generator, device=probs.device, dtype=probs.dtype) \
        if generator is None or generator.device == probs.device else \
        torch.rand((n, drawn, 2), generator=generator, dtype=probs.dtype).to(probs.device)
    u = point_sample(uncertainty, pts)[:, 0]  # [n, drawn]
    idx = u.topk(kept, dim=1).indices  # [n, kept]
    return torch.gather(pts, 1, idx.unsqueeze(2).expand(n, kept, 2))
