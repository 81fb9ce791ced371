"""Building blocks of the paper's network: the combination module, the detection heads, the
segmentation head and the refinement point heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CombinationModule(nn.Module):
    """Fuse a deep map into a skip map (paper Fig. 2, used in both branches).

    ``x_deep`` is upsampled bilinearly (align_corners=False) to the skip's size, then 3x3 conv
    (c_deep -> c_skip) + norm + ReLU; concatenated after the skip, ``[skip, up]``; then 1x1 conv
    (2 c_skip -> c_skip) + norm + ReLU. ``norm``: ``"batch"`` (detection branch) or ``"instance"``
    (segmentation branch; InstanceNorm2d without affine parameters or running statistics).
    """

    def __init__(self, c_deep: int, c_skip: int, norm: str = "batch"):
        super().__init__()
        if norm == "batch":
            mk = lambda c: nn.BatchNorm2d(c)  # noqa: E731
        elif norm == "instance":
            mk = lambda c: nn.InstanceNorm2d(c)  # noqa: E731  (affine=False, no running stats)
        else:
            raise ValueError(f"norm {norm!r}: expected 'batch' or 'instance'")
        self.up = nn.Sequential(nn.Conv2d(c_deep, c_skip, 3, padding=1), mk(c_skip), nn.ReLU(inplace=True))
        self.cat_conv = nn.Sequential(nn.Conv2d(2 * c_skip, c_skip, 1), mk(c_skip), nn.ReLU(inplace=True))

    def forward(self, x_deep: Tensor, x_skip: Tensor) -> Tensor:
        up = F.interpolate(x_deep, size=x_skip.shape[2:], mode="bilinear", align_corners=False)
        return self.cat_conv(torch.cat([x_skip, self.up(up)], 1))


def detection_head(c_in: int, width: int, c_out: int, kernel: int, final_kernel: int) -> nn.Sequential:
    """conv(kernel) -> ReLU -> conv(final_kernel) -> c_out channels; all biases start at 0."""
    head = nn.Sequential(nn.Conv2d(c_in, width, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
                         nn.Conv2d(width, c_out, final_kernel, padding=final_kernel // 2))
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.bias)
    return head


class DetectionHeads(nn.Module):
    """CenterNet heads on the stride-4 map: heatmap (3x3, ReLU, 1x1 -> 1 logit, bias -2.19), size
    (7x7, ReLU, 7x7 -> (w, h) in heatmap cells) and offset (3x3, ReLU, 1x1 -> 2)."""

    def __init__(self, c_in: int, width: int = 256):
        super().__init__()
        self.hm = detection_head(c_in, width, 1, 3, 1)
        nn.init.constant_(self.hm[-1].bias, -2.19)
        self.wh = detection_head(c_in, width, 2, 7, 7)
        self.reg = detection_head(c_in, width, 2, 3, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"hm_logits": self.hm(x), "wh": self.wh(x), "reg": self.reg(x)}


class SegmentationBranch(nn.Module):
    """The object-guided segmentation branch.

    ``level_channels`` = widths of the five cropped maps: level 0 = ``c0_conv(image)`` (64), level 1 =
    backbone conv1 (64), levels 2-4 = the detection decoder's c2, c3, c4. Fusion runs top-down from the
    deepest level a ROI has: ``x = combine[i](x, crop[i])`` for i = L-2 .. 0, with InstanceNorm
    combination modules (c_{i+1} -> c_i, skip width c_i; for ResNet-50: 1024->512, 512->256, 256->64,
    64->64). The head (3x3 conv 64->64, ReLU, 3x3 conv 64->1) gives one logit per ROI pixel at full
    input resolution. Point heads (auxiliary refinement): Conv1d 64->1 on e1 (fused level 0) and
    Conv1d 128->1 on concat(e1, e2) (e2 = fused level 1); they output logits (sigmoid in the loss).
    """

    def __init__(self, level_channels: tuple[int, ...]):
        super().__init__()
        ch = tuple(level_channels)
        self.level_channels = ch
        self.c0_conv = nn.Sequential(nn.Conv2d(3, ch[0], 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(ch[0], ch[0], 3, padding=1), nn.ReLU(inplace=True))
        self.combine = nn.ModuleList([CombinationModule(ch[i + 1], ch[i], "instance") for i in range(len(ch) - 1)])
        self.head = nn.Sequential(nn.Conv2d(ch[0], 64, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(64, 1, 3, padding=1))
        self.point_head0 = nn.Conv1d(ch[0], 1, 1)
        self.point_head1 = nn.Conv1d(ch[0] + ch[1], 1, 1)

    def fuse(self, crops: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """crops[l]: [n, C_l, h_l, w_l] for the ROI's available levels (1..5) -> (logits [n, 1, h0, w0],
        fused maps per level, ``fused[0]`` = e1, ``fused[1]`` = e2 when there are >= 2 levels)."""
        fused = list(crops)
        for i in range(len(fused) - 2, -1, -1):
            fused[i] = self.combine[i](fused[i + 1], fused[i])
        return self.head(fused[0]), fused
