"""How an original image maps into the S x S network input, and back.

Coordinates are continuous with pixel i covering [i, i+1) (the "half-pixel" convention of
``cv2.resize``/``F.interpolate(align_corners=False)``). A :class:`Frame` maps original x to input
``u = (x + pad_x) * scale_x`` (likewise y):

* ``stretch`` (the paper's test-time path, "resized to 512x512", and the authors' test code's):
  ``cv2.resize`` to S x S, scale_x = S / W, scale_y = S / H;
* ``letterbox`` (an option, geometrically consistent with training crops): the image is centred in a
  black square of side L = max(H, W) (pad_x = (L - W) / 2, pad_y = (L - H) / 2 original pixels, possibly
  half-integers), which is resized to S: scale = S / L. It keeps less resolution on non-square images:
  the ceiling benchmark (benchmarks/results/objguided_ceiling.md) loses about 4 APseg points to it.

The authors' training warp maps pixel *indices* (x_out = (x - W/2) * S/L + S/2), which differs from
the half-pixel letterbox by 0.5 * (1 - S/L) input pixels: a named sub-pixel deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Frame:
    """Original image (orig_h x orig_w) -> network input (size x size): u = (x + pad_x) * scale_x."""

    scale_x: float
    scale_y: float
    pad_x: float  # in original pixels
    pad_y: float
    orig_h: int
    orig_w: int
    size: int

    @staticmethod
    def letterbox(orig_h: int, orig_w: int, size: int) -> "Frame":
        side = max(orig_h, orig_w)
        s = size / side
        return Frame(s, s, (side - orig_w) / 2, (side - orig_h) / 2, int(orig_h), int(orig_w), int(size))

    @staticmethod
    def stretch(orig_h: int, orig_w: int, size: int) -> "Frame":
        return Frame(size / orig_w, size / orig_h, 0.0, 0.0, int(orig_h), int(orig_w), int(size))

    @staticmethod
    def make(orig_h: int, orig_w: int, size: int, mode: str) -> "Frame":
        if mode == "letterbox":
            return Frame.letterbox(orig_h, orig_w, size)
        if mode == "stretch":
            return Frame.stretch(orig_h, orig_w, size)
        raise ValueError(f"mode {mode!r}: expected 'letterbox' or 'stretch'")

    # continuous coordinates ------------------------------------------------------------------
    def to_input(self, x, y):
        """Original continuous (x, y) -> input (u, v)."""
        return ((np.asarray(x, np.float64) + self.pad_x) * self.scale_x,
                (np.asarray(y, np.float64) + self.pad_y) * self.scale_y)

    def to_orig(self, u, v):
        """Input continuous (u, v) -> original (x, y)."""
        return (np.asarray(u, np.float64) / self.scale_x - self.pad_x,
                np.asarray(v, np.float64) / self.scale_y - self.pad_y)

    # pixel maps ------------------------------------------------------------------------------
    def labels_to_input(self, labels: np.ndarray) -> np.ndarray:
        """Nearest warp of an original-frame label map / mask [H, W] into the input frame [S, S]
        (each input pixel takes the original pixel under its centre; 0 outside the image)."""
        xs, ys = self.to_orig(np.arange(self.size) + 0.5, np.arange(self.size) + 0.5)
        xi, yi = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
        okx, oky = (xi >= 0) & (xi < self.orig_w), (yi >= 0) & (yi < self.orig_h)
        out = np.zeros((self.size, self.size), labels.dtype)
        out[np.ix_(oky, okx)] = labels[np.ix_(yi[oky], xi[okx])]
        return out

    def orig_range(self, r0: int, r1: int, c0: int, c1: int, margin: int = 2) -> tuple[int, int, int, int]:
        """Original pixel rows/cols [y0, y1) x [x0, x1) whose resampling can touch input pixels
        [r0, r1) x [c0, c1) (with a safety margin), clipped to the image."""
        xa, ya = self.to_orig(c0 - 1.0, r0 - 1.0)
        xb, yb = self.to_orig(c1 + 1.0, r1 + 1.0)
        return (max(0, math.floor(ya) - margin), min(self.orig_h, math.ceil(yb) + margin),
                max(0, math.floor(xa) - margin), min(self.orig_w, math.ceil(xb) + margin))

    def window_to_orig(self, win: np.ndarray, r0: int, c0: int, mode: str = "nearest") -> tuple[np.ndarray, int, int]:
        """Resample an input-frame window ``win`` (its top-left input pixel at (r0, c0); zero elsewhere)
        to the original frame. Returns (array, y0, x0): the original-frame window and its top-left.

        ``nearest``: original pixel centre -> the input pixel containing it (the paper's nearest resize).
        ``bilinear``: ``cv2.resize`` INTER_LINEAR semantics, input sample coordinate
        ``(x + 0.5 + pad) * scale - 0.5`` clamped to [0, S-1] (the authors' code, which resizes the
        whole S x S canvas bilinearly; exact here because the canvas is zero outside ``win``).
        """
        hwin, wwin = win.shape
        y0, y1, x0, x1 = self.orig_range(r0, r0 + hwin, c0, c0 + wwin)
        if y1 <= y0 or x1 <= x0:
            return np.zeros((0, 0), np.float64), y0, x0
        uc, vc = self.to_input(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
        w = np.asarray(win, np.float64)
        if mode == "nearest":
            ui, vi = np.floor(uc).astype(np.int64) - c0, np.floor(vc).astype(np.int64) - r0
            okx, oky = (ui >= 0) & (ui < wwin), (vi >= 0) & (vi < hwin)
            out = np.zeros((y1 - y0, x1 - x0), np.float64)
            out[np.ix_(oky, okx)] = w[np.ix_(vi[oky], ui[okx])]
            return out, y0, x0
        if mode != "bilinear":
            raise ValueError(f"mode {mode!r}: expected 'nearest' or 'bilinear'")
        uc = np.clip(uc - 0.5, 0, self.size - 1)
        vc = np.clip(vc - 0.5, 0, self.size - 1)

        def taps(c, origin, n):
            i0 = np.floor(c).astype(np.int64)
            f = c - i0
            i1 = np.minimum(i0 + 1, self.size - 1)
            res = []
            for i, wt in ((i0, 1 - f), (i1, f)):
                j = i - origin
                ok = (j >= 0) & (j < n)
                res.append((np.where(ok, j, 0), np.where(ok, wt, 0.0)))
            return res

        tx = taps(uc, c0, wwin)
        ty = taps(vc, r0, hwin)
        rows = sum(w[jy][:, None, :] * wy[:, None, None] for jy, wy in ty)[:, 0, :]  # [ny, wwin]
        out = sum(rows[:, jx] * wx[None, :] for jx, wx in tx)
        return out, y0, x0

    def input_to_orig(self, canvas: np.ndarray, mode: str = "nearest") -> np.ndarray:
        """Resample a whole S x S input-frame map to the original size (see :meth:`window_to_orig`)."""
        out, y0, x0 = self.window_to_orig(canvas, 0, 0, mode)
        full = np.zeros((self.orig_h, self.orig_w), np.float64)
        full[y0:y0 + out.shape[0], x0:x0 + out.shape[1]] = out
        return full


def prepare(image: np.ndarray, size: int, mode: str = "stretch", bgr: bool = False) -> tuple[Tensor, Frame]:
    """uint8 image (HxW gray, HxWx3 RGB, or HxWx4 with alpha dropped) -> (float32 [3, S, S], Frame).

    Values are ``/255 - 0.5`` (no ImageNet mean/std, as the paper); gray is repeated to 3 channels;
    ``bgr=True`` reverses the channels (the authors read images with OpenCV and feed BGR to RGB
    weights). Resampling is bilinear in the half-pixel convention with the border replicated (as
    ``cv2.resize``); with ``letterbox``, input pixels whose centre falls outside the image are black (-0.5).
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image of shape {image.shape}: expected HxW, HxWx3 or HxWx4")
    if bgr:
        img = img[..., ::-1]
    h, w = img.shape[:2]
    frame = Frame.make(h, w, size, mode)
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    xs, ys = frame.to_orig(np.arange(size) + 0.5, np.arange(size) + 0.5)  # original continuous coords
    gx = torch.as_tensor(xs / w * 2 - 1, dtype=torch.float32)
    gy = torch.as_tensor(ys / h * 2 - 1, dtype=torch.float32)
    grid = torch.stack([gx[None, :].expand(size, size), gy[:, None].expand(size, size)], -1)[None]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    if mode == "letterbox":  # input pixels whose centre falls outside the image are black
        inside = torch.as_tensor((ys >= 0) & (ys < h))[:, None] & torch.as_tensor((xs >= 0) & (xs < w))[None, :]
        out = out * inside
    return (out - 0.5).contiguous(), frame
