"""Auxiliary feature refinement (training only): uncertain point selection and point sampling.

For a ROI of H x W pixels: N = H*W // D (D = 8); draw ``int(k*N)`` uniform random float points in the
unit square (x, y in [0, 1), mapped onto the ROI's corner pixel centres, align_corners=True); sample
the uncertainty ``-|2p - 1|`` of the detached predicted probability map there (bilinear); keep the
``floor(beta*N)`` most uncertain points. No extra "coverage" points (unlike PointRend).

Points are drawn and sampled in float32 (float64 for float64 maps) whatever the maps' dtype, so that a
mixed-precision run draws the same points as a float32 run and samples the same places (see roi.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from objguided.models.roi import sampling_dtype


def point_sample(feat: Tensor, pts: Tensor) -> Tensor:
    """Bilinear (align_corners=True, zero padding) sample of ``feat`` [n, C, H, W] at ``pts`` [n, P, 2]
    ((x, y) in [0, 1] over the map's corner pixel centres) -> [n, C, P]."""
    dtype = sampling_dtype(feat)
    grid = (2.0 * pts.to(dtype) - 1.0).unsqueeze(2)  # [n, P, 1, 2]
    return F.grid_sample(feat.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True).squeeze(3)


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
        return probs.new_zeros((n, 0, 2), dtype=sampling_dtype(probs))
    kept = min(kept, drawn)
    uncertainty = -(2 * probs.detach() - 1).abs()
    dtype = sampling_dtype(probs)
    pts = torch.rand((n, drawn, 2), generator=generator, device=probs.device, dtype=dtype) \
        if generator is None or generator.device == probs.device else \
        torch.rand((n, drawn, 2), generator=generator, dtype=dtype).to(probs.device)
    u = point_sample(uncertainty, pts)[:, 0]  # [n, drawn]
    idx = u.topk(kept, dim=1).indices  # [n, kept]
    return torch.gather(pts, 1, idx.unsqueeze(2).expand(n, kept, 2))
