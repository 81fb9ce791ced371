"""From ROI probabilities to instance masks at the original resolution: the paper's path and the
authors' code's path (docs/method.md, "Inference", and docs/protocol.md).

``faithful_to="paper"`` (default):
  1. each ROI's probabilities are splatted bilinearly onto the S x S canvas ("Hough voting": every ROI
     pixel votes into the four integer pixels around its grid point with bilinear weights), and the
     canvas is divided by the accumulated weight (a weighted average of the nearby ROI values; a
     perfect ROI then has no holes);
  2. thresholded at 0.5 (``>=``);
  3. resized to the original image nearest (original pixel centre -> the input pixel containing it,
     undoing the letterbox or stretch of the :class:`Frame`);
  4. empty masks dropped; the box becomes the mask's tight box;
  5. greedy mask-IoU NMS at 0.2 by descending score (stable order); a mask is suppressed when its IoU
     with a kept mask is > 0.2.

``faithful_to="code"``: the authors' main.py/module.py path in full:
  1. splatting without normalisation (canvas values below 1 inside small objects: holes);
  2. threshold 0.5 (``>=``; the README's evaluation command passes ``--seg_thresh 0.5``, main.py's own
     default is 0.53: ``threshold=0.53``), canvas 0/1;
  3. bilinear resize to the original size (``cv2.resize`` INTER_LINEAR semantics; the code passes the
     nearest flag in the ``dst`` slot, so OpenCV resizes bilinearly);
  4. tight box from the pixels equal to 1 (within 1e-9, float64 arithmetic), the stored mask is the soft
     crop inside that box; objects with no pixel at 1 are dropped;
  5. NMS at 0.2 on the soft crops (intersection = sum of products, union = sum a + sum b - inter,
     IoU = inter / (union + 1e-6), boxes with no positive-width overlap in inclusive coordinates
     (min x2 - max x1 <= 0) have IoU 0); suppressed when IoU > 0.2. Ties of score: stable order (the
     code's numpy argsort leaves them unspecified);
  6. the instance's support = soft crop > 0 inside the box, ``soft_area`` = sum of the soft values
     (the evaluator's ``soft_area`` IoU then reproduces the authors' IoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objguided.models.preprocess import Frame

ONE_TOL = 1e-9


@dataclass
class PostConfig:
    """``faithful_to``: ``"paper"`` | ``"code"``; ``threshold``: None = 0.5 (the paper, and the authors'
    README's evaluation command; main.py's default 0.53 needs ``threshold=0.53``);
    ``mask_nms_iou``: greedy mask NMS threshold (0.2)."""

    faithful_to: str = "paper"
    threshold: float | None = None
    mask_nms_iou: float = 0.2

    def __post_init__(self):
        if self.faithful_to not in ("paper", "code"):
            raise ValueError(f"faithful_to {self.faithful_to!r}: expected 'paper' or 'code'")

    @property
    def thr(self) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        return 0.5


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _axis_weights(first: float, last: float, n: int, size: int):
    """Bilinear vote matrix of n grid points linspace(first, last, n) onto pixels [lo, hi): (A [n, hi-lo], lo)."""
    c = np.linspace(first, last, n)
    i0 = np.floor(c).astype(np.int64)
    f = c - i0
    lo = int(max(0, i0.min()))
    hi = int(min(size, i0.max() + 2))
    if hi <= lo:
        return np.zeros((n, 0)), lo
    a = np.zeros((n, hi - lo))
    rows = np.arange(n)
    for idx, wt in ((i0, 1 - f), (i0 + 1, f)):
        ok = (idx >= lo) & (idx < hi)
        np.add.at(a, (rows[ok], idx[ok] - lo), wt[ok])
    return a, lo


def splat_window(roi, roi_box, canvas_size, normalise: bool) -> tuple[np.ndarray, int, int]:
    """Splat one ROI onto the canvas, returning only the touched window: (values, row0, col0).

    ``roi`` [H, W] probabilities; ``roi_box`` = (x first, y first, x last, y last) grid-point
    coordinates (``detect``'s ``roi_boxes``): ROI pixel (r, c) sits at linspace(x first, x last, W)[c],
    linspace(y first, y last, H)[r]. Votes outside the canvas are dropped. ``normalise`` divides each
    pixel by its accumulated bilinear weight (pixels with no weight stay 0).
    """
    p = _np(roi).astype(np.float64)
    h, w = p.shape
    if isinstance(canvas_size, (int, np.integer)):
        ch, cw = int(canvas_size), int(canvas_size)
    else:
        ch, cw = (int(v) for v in canvas_size)
    x_first, y_first, x_last, y_last = (float(v) for v in _np(roi_box).reshape(4))
    ax, c0 = _axis_weights(x_first, x_last, w, cw)
    ay, r0 = _axis_weights(y_first, y_last, h, ch)
    vals = ay.T @ p @ ax
    if normalise:
        wsum = np.outer(ay.sum(0), ax.sum(0))
        vals = np.divide(vals, wsum, out=np.zeros_like(vals), where=wsum > 0)
    return vals, r0, c0


def splat(roi, roi_box, canvas_size, normalise: bool) -> np.ndarray:
    """The full canvas [S, S] (or canvas_size = (H, W)) of :func:`splat_window` (exposed for tests)."""
    if isinstance(canvas_size, (int, np.integer)):
        ch, cw = int(canvas_size), int(canvas_size)
    else:
        ch, cw = (int(v) for v in canvas_size)
    vals, r0, c0 = splat_window(roi, roi_box, (ch, cw), normalise)
    canvas = np.zeros((ch, cw), np.float64)
    canvas[r0:r0 + vals.shape[0], c0:c0 + vals.shape[1]] = vals
    return canvas


@dataclass
class _Cand:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 inclusive, original frame
    crop: np.ndarray  # bool (paper) or float soft values (code), the box's extent
    score: float


def _tight(values: np.ndarray, keep: np.ndarray, y0: int, x0: int) -> _Cand | None:
    rows = np.flatnonzero(keep.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(keep.any(axis=0))
    r1, r2, c1, c2 = rows[0], rows[-1], cols[0], cols[-1]
    return _Cand((x0 + int(c1), y0 + int(r1), x0 + int(c2), y0 + int(r2)), values[r1:r2 + 1, c1:c2 + 1], 0.0)


def _iou(a: _Cand, b: _Cand, code: bool) -> float:
    ix1, iy1 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    ix2, iy2 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if code:
        if ix2 - ix1 <= 0 or iy2 - iy1 <= 0:  # the authors' box pre-check (no +1)
            return 0.0
    elif ix2 < ix1 or iy2 < iy1:
        return 0.0
    sa = a.crop[iy1 - a.box[1]:iy2 - a.box[1] + 1, ix1 - a.box[0]:ix2 - a.box[0] + 1]
    sb = b.crop[iy1 - b.box[1]:iy2 - b.box[1] + 1, ix1 - b.box[0]:ix2 - b.box[0] + 1]
    if code:
        inter = float((sa.astype(np.float64) * sb).sum())
        union = float(a.crop.sum()) + float(b.crop.sum()) - inter
        return inter / (union + 1e-6)
    inter = float(np.count_nonzero(sa & sb))
    union = float(np.count_nonzero(a.crop)) + float(np.count_nonzero(b.crop)) - inter
    return inter / union if union > 0 else 0.0


def mask_nms(cands: list[_Cand], iou_threshold: float, code: bool) -> list[int]:
    """Greedy NMS by descending score (stable): indices kept, in that order."""
    order = sorted(range(len(cands)), key=lambda i: -cands[i].score)
    boxes = np.array([c.box for c in cands], np.int64).reshape(-1, 4)
    alive = np.ones(len(cands), bool)
    keep = []
    for pos, i in enumerate(order):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.array([j for j in order[pos + 1:] if alive[j]], np.int64)
        if rest.size == 0:
            continue
        b = boxes[i]
        near = rest[(np.minimum(boxes[rest, 2], b[2]) >= np.maximum(boxes[rest, 0], b[0]))
                    & (np.minimum(boxes[rest, 3], b[3]) >= np.maximum(boxes[rest, 1], b[1]))]
        for j in near:
            if _iou(cands[j], cands[i], code) > iou_threshold:
                alive[j] = False
    return keep


def to_instances(detection: dict, frame: Frame,
                 post: PostConfig | None = None) -> list[tuple[np.ndarray, float, float | None]]:
    """Instances of one image from ``detect``'s output for it (uses ``scores``, ``rois``, ``roi_boxes``).

    Returns a list of ``(mask, score, soft_area)`` in descending score: ``mask`` bool [orig_h, orig_w]
    (the code path: the support, soft values > 0 inside the box), ``soft_area`` None on the paper path
    and the sum of the soft values on the code path. See the module docstring for both paths.
    """
    post = post or PostConfig()
    code = post.faithful_to == "code"
    thr = post.thr
    scores = _np(detection["scores"]).astype(np.float64).reshape(-1)
    spans = _np(detection["roi_boxes"]).astype(np.float64).reshape(-1, 4)
    rois = detection["rois"]
    cands: list[_Cand] = []
    for score, roi, span in zip(scores, rois, spans):
        vals, r0, c0 = splat_window(roi, span, frame.size, normalise=not code)
        binary = vals >= thr
        if not binary.any():
            continue
        if code:
            orig, y0, x0 = frame.window_to_orig(binary.astype(np.float64), r0, c0, "bilinear")
            cand = _tight(orig, orig >= 1 - ONE_TOL, y0, x0)
        else:
            orig, y0, x0 = frame.window_to_orig(binary.astype(np.float64), r0, c0, "nearest")
            m = orig > 0.5
            cand = _tight(m, m, y0, x0)
        if cand is None:
            continue
        cand.score = float(score)
        cands.append(cand)
    out = []
    for i in mask_nms(cands, post.mask_nms_iou, code):
        c = cands[i]
        x1, y1, x2, y2 = c.box
        full = np.zeros((frame.orig_h, frame.orig_w), bool)
        full[y1:y2 + 1, x1:x2 + 1] = c.crop > 0
        out.append((full, c.score, float(c.crop.sum()) if code else None))
    return out
