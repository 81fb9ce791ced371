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


def head_at(head: nn.Sequential, x: Tensor, ind: Tensor, chunk: int = 512) -> Tensor:
    """A ``conv(k1) -> ReLU -> conv(k2)`` head (zero padding, stride 1) evaluated at a few positions only.

    ``x`` [C, H, W]; ``ind`` [n] flat positions (``y * W + x``). Returns [C_out, n]: the numbers of
    ``head(x[None])[0].reshape(C_out, -1)[:, ind]`` up to float rounding (the sums run in another order).
    The hidden layer is computed only where the n outputs read it (their k2 x k2 windows inside the map;
    outside it the second conv reads its zero padding), from k1 x k1 patches of ``x``, ``chunk`` at a
    time. At inference the size and offset heads are read at the detected peaks alone, so on a CPU this
    skips most of their dense cost (the size head's two 7x7 convs on the stride-4 map cost 2.5 times
    ResNet-50 itself at 512x512).

    >>> torch.manual_seed(0); head = detection_head(4, 8, 2, 7, 7); x = torch.randn(4, 9, 11)
    <torch._C.Generator object at ...>
    >>> ind = torch.tensor([0, 5, 60, 98])
    >>> torch.allclose(head_at(head, x, ind), head(x[None])[0].reshape(2, -1)[:, ind], atol=1e-5)
    True
    """
    conv1, conv2 = head[0], head[2]
    k1, k2 = conv1.kernel_size[0], conv2.kernel_size[0]
    r1, r2 = k1 // 2, k2 // 2
    c, h, w = x.shape
    dev = x.device
    ind = ind.to(dev).long()
    n = ind.numel()
    if n == 0:
        return x.new_zeros(conv2.out_channels, 0)
    # the hidden positions each output reads; -1 marks the zero padding outside the map
    d = torch.arange(-r2, r2 + 1, device=dev)
    hy = (ind // w)[:, None, None] + d[None, :, None]
    hx = (ind % w)[:, None, None] + d[None, None, :]
    inside = (hy >= 0) & (hy < h) & (hx >= 0) & (hx < w)
    flat = torch.where(inside, hy * w + hx, torch.full_like(hy, -1))  # [n, k2, k2]
    needed = torch.unique(flat[inside])
    slot = torch.full((h * w,), needed.numel(), dtype=torch.long, device=dev)
    slot[needed] = torch.arange(needed.numel(), device=dev)
    # hidden activations at the needed positions, from the k1 x k1 patches of the zero-padded input
    xp = F.pad(x[None], (r1, r1, r1, r1))[0]
    w1 = conv1.weight.reshape(conv1.out_channels, -1).t()  # (c, ky, kx) order, as the patches below
    k = torch.arange(k1, device=dev)
    hidden = x.new_zeros(needed.numel() + 1, conv1.out_channels)  # the last row: the zero padding
    for a in range(0, needed.numel(), chunk):
        pos = needed[a:a + chunk]
        rows = (pos // w)[:, None, None] + k[None, :, None]
        cols = (pos % w)[:, None, None] + k[None, None, :]
        patches = xp[:, rows, cols].permute(1, 0, 2, 3).reshape(pos.numel(), -1)  # [m, c*k1*k1]
        hidden[a:a + pos.numel()] = torch.relu(torch.addmm(conv1.bias, patches, w1))
    gathered = hidden[slot[flat.clamp(min=0)].masked_fill(~inside, needed.numel())]  # [n, k2, k2, ch]
    w2 = conv2.weight.reshape(conv2.out_channels, -1).t()  # (ch, ky, kx) order
    out = torch.addmm(conv2.bias, gathered.permute(0, 3, 1, 2).reshape(n, -1), w2)
    return out.t()
