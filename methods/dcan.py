"""``dcan``: Deep Contour-Aware Network (Chen et al., CVPR 2016), a baseline of the paper's Table I.

No official code exists; choices and their sources are in methods/README_dcan.md.

**Network** (:func:`build_net`; torch is imported lazily). A VGG16-style downsampling path without
normalisation (``batch_norm`` adds it, for short runs from scratch): five blocks of (2, 2, 3, 3, 3) 3x3
convolutions + ReLU of ``width * (1, 2, 4, 8, 8)`` channels (``width = 64`` is VGG16; the CPU demo uses
8), 2x2 max-pooling between blocks. Side outputs at three depths, the ends of blocks 3, 4 and 5
(conv3_3, conv4_3, conv5_3: strides 4, 8, 16), each with one learned up-sampling (:func:`_side_up`: 3x3
convolution to s^2 channels + pixel shuffle) per branch to a full-resolution logit map: an *object*
branch and a *contour* branch. Each branch's fused logit is the sum of its three side logits. Input
sides must be multiples of 16 (prediction pads with zeros).

**Targets** (:func:`contour_target`): object = every instance pixel; contour = the ``contour_width``
outermost pixel layers of each instance (a pixel of instance i is contour when it is removed by one of
``contour_width`` successive 4-connected inner-boundary peels of i), so touching instances are
separated by a band of 2 x ``contour_width`` px (default width 2 px: 4 px between touching objects).

**Loss**: binary cross-entropy on each branch's fused output plus ``w_a`` x the same on each of the
three side outputs (auxiliary supervision). Object branch: plain BCE; contour branch: class-balanced
BCE (``contour_loss = "balanced"``: positives weighted by the fraction of negatives in the batch and
vice versa, as for HED's side outputs) or plain. ``w_a = aux_weight * aux_decay ** (step //
aux_decay_every)`` (the paper's discount of the auxiliary classifiers during training; the step count
lives in the model's state, so a resumed run continues the schedule).

**Instances** (:func:`segment`; docs/baselines.md, third-party variant 1: argmax of the two
classes, fill holes, remove small objects, dilate with a disk): core = ``p_obj >= object_threshold``
and ``p_contour < contour_threshold``; holes filled; 4-connected components; components of fewer than
``min_size`` pixels dropped; each component grown back by ``dilation`` px (``expand_labels``: into
background only, never into a neighbour). The four parameters are grid-searched on the val split
(:func:`objguided_methods._dense.tune_widened`: a parameter whose best lies on its grid's edge is tried further out,
up to ``max_widen`` steps; ``state["tuning"]["widening"]`` says what happened) and kept in the state.

**Score** of an object (DCAN has none): ``mean(p_obj) * (1 - mean(p_contour))`` over its core (the
component before dilation), in (0, 1]: confident objects with a clean interior score near 1.

State: ``{"model": state_dict, "net": {"width", "batch_norm"}, "post": tuned parameters, "tuning": summary,
"train_config": ...}``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal

import numpy as np
from scipy import ndimage as ndi

from objguided.config import Count, Fraction, Len, NonNegFloat, PosInt, Range
from objguided.errors import ConfigError
from objguided_methods import register
from objguided_methods._dense import (
    DenseTrainFields,
    check_input_size,
    grid,
    pad_to_multiple,
    prepare_image,
    relabel,
    to_tensor,
    train_dense,
    tune_images,
    tune_widened,
    tuned_params,
)
from objguided_methods._tuning import Axis
from objguided_methods.base import Instance, Method

log = logging.getLogger(__name__)

STRIDE = 16  # the deepest side output (conv5_3)
SIDE_STRIDES = (4, 8, 16)
POST = ("object_threshold", "contour_threshold", "min_size", "dilation")
MIN_SCORE = 1e-3
Threshold = Annotated[float, Range(gt=0, max=1)]  # a grid value of a probability threshold


@dataclass
class DCANConfig(DenseTrainFields):
    # -- network --
    width: PosInt = 64  # VGG16's first block width (64); the CPU demo uses 8
    batch_norm: bool = False  # BatchNorm after every convolution (not in DCAN; speeds up short runs from scratch)
    # -- targets and loss --
    contour_width: PosInt = 2  # px of each instance's boundary band
    contour_loss: Literal["plain", "balanced"] = "plain"  # BCE of the contour branch
    aux_weight: NonNegFloat = 1.0  # w_a at the start
    aux_decay: NonNegFloat = 0.1  # w_a *= aux_decay ...
    aux_decay_every: Count = 10000  # ... every this many steps (0 = constant)
    # -- post-processing (defaults; tuned on val) --
    object_threshold: Fraction = 0.5
    contour_threshold: Fraction = 0.5
    min_size: Count = 5
    dilation: Count = 2
    object_thresholds: Annotated[list[Threshold], Len(1)] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    contour_thresholds: Annotated[list[Threshold], Len(1)] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    min_sizes: Annotated[list[Count], Len(1)] = field(default_factory=lambda: [5, 10, 20])
    dilations: Annotated[list[Count], Len(1)] = field(default_factory=lambda: [1, 2, 3])


def check_config(cfg: DCANConfig, where: str = "methods.dcan") -> None:
    """What the declarations cannot say: the crop side fits the network's stride."""
    check_input_size(cfg, where, STRIDE)


# ---------------------------------------------------------------------------------------------------
# network


def _side_up(channels: int, stride: int):
    """Learned up-sampling of a side output to a full-resolution logit map: a 3x3 convolution to
    ``stride**2`` channels rearranged into ``stride x stride`` blocks (sub-pixel convolution; the same
    function family as a transposed convolution of stride ``stride`` and kernel ``3 * stride``, much
    faster on the CPU)."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(channels, stride * stride, 3, padding=1), nn.PixelShuffle(stride))


def build_net(width: int, batch_norm: bool = False):
    """The DCAN network (object and contour branches, three side outputs each)."""
    import torch
    from torch import nn

    class _DCANNet(nn.Module):
        def __init__(self, width: int, batch_norm: bool):
            super().__init__()
            widths = [width * m for m in (1, 2, 4, 8, 8)]
            convs = (2, 2, 3, 3, 3)
            blocks, c_in = [], 3
            for n, c in zip(convs, widths):
                layers = []
                for _ in range(n):
                    layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=not batch_norm)]
                    layers += [nn.BatchNorm2d(c)] if batch_norm else []
                    layers += [nn.ReLU(inplace=True)]
                    c_in = c
                blocks.append(nn.Sequential(*layers))
            self.blocks = nn.ModuleList(blocks)
            self.pool = nn.MaxPool2d(2)
            sides = [(widths[i], s) for i, s in zip((2, 3, 4), SIDE_STRIDES)]
            self.object_up = nn.ModuleList([_side_up(c, s) for c, s in sides])
            self.contour_up = nn.ModuleList([_side_up(c, s) for c, s in sides])
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # for the w_a schedule
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

        def forward(self, x):
            """Side logits of both branches: (object [B, 3, H, W], contour [B, 3, H, W])."""
            feats = []
            for i, block in enumerate(self.blocks):
                if i:
                    x = self.pool(x)
                x = block(x)
                feats.append(x)
            side = [feats[2], feats[3], feats[4]]
            obj = torch.cat([up(f) for up, f in zip(self.object_up, side)], 1)
            cnt = torch.cat([up(f) for up, f in zip(self.contour_up, side)], 1)
            return obj, cnt

    return _DCANNet(width, batch_norm)


def side_and_fused(net, x):
    """(object side logits, contour side logits, fused object logit, fused contour logit)."""
    obj, cnt = net(x)
    return obj, cnt, obj.sum(1), cnt.sum(1)


def balanced_bce(logits, target):
    """Class-balanced BCE: positives weighted by the fraction of negatives in the batch and vice versa."""
    import torch.nn.functional as F

    pos = target.mean()
    weight = target * (1 - pos) + (1 - target) * pos
    return 2 * F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def make_loss(cfg: DCANConfig):
    import torch
    import torch.nn.functional as F

    contour_bce = balanced_bce if cfg.contour_loss == "balanced" else F.binary_cross_entropy_with_logits

    def loss_fn(model, batch):
        images, t = batch
        obj, cnt, obj_f, cnt_f = side_and_fused(model, images)
        target_o, target_c = t["object"], t["contour"]
        fused_o = F.binary_cross_entropy_with_logits(obj_f, target_o)
        fused_c = contour_bce(cnt_f, target_c)
        aux = sum(F.binary_cross_entropy_with_logits(obj[:, s], target_o) + contour_bce(cnt[:, s], target_c)
                  for s in range(obj.shape[1]))
        step = int(model.steps)
        w_a = cfg.aux_weight * (cfg.aux_decay ** (step // cfg.aux_decay_every) if cfg.aux_decay_every else 1.0)
        with torch.no_grad():
            model.steps += 1
        return {"total": fused_o + fused_c + w_a * aux, "object": fused_o, "contour": fused_c, "aux": aux,
                "w_aux": torch.tensor(float(w_a))}

    return loss_fn


# ---------------------------------------------------------------------------------------------------
# targets and post-processing


def contour_target(labels: np.ndarray, width: int) -> np.ndarray:
    """Float32 map: 1 on the ``width`` outermost 4-connected layers of every instance, else 0.

    >>> lab = np.zeros((7, 7), int); lab[1:6, 1:6] = 1
    >>> contour_target(lab, 1)[3].astype(int).tolist()
    [0, 1, 0, 0, 0, 1, 0]
    >>> contour_target(lab, 2)[3].astype(int).tolist()
    [0, 1, 1, 0, 1, 1, 0]
    """
    from skimage.segmentation import find_boundaries

    cur = np.asarray(labels).copy()
    out = np.zeros(cur.shape, bool)
    for _ in range(int(width)):
        band = find_boundaries(cur, connectivity=1, mode="inner", background=0) & (cur != 0)
        out |= band
        cur[band] = 0
    return out.astype(np.float32)


def make_targets(cfg: DCANConfig):
    def targets(labels: np.ndarray, rng) -> dict:
        return {"object": (labels > 0).astype(np.float32), "contour": contour_target(labels, cfg.contour_width)}

    return targets


def core_labels(p_obj: np.ndarray, p_cnt: np.ndarray, object_threshold: float, contour_threshold: float,
                **_: Any) -> np.ndarray:
    """Connected components (4-connected) of ``p_obj >= t_o and p_cnt < t_c`` with holes filled."""
    core = ndi.binary_fill_holes((p_obj >= object_threshold) & (p_cnt < contour_threshold))
    labels, _ = ndi.label(core)
    return labels.astype(np.int32)


def finish(core: np.ndarray, min_size: int, dilation: int, **_: Any) -> tuple[np.ndarray, np.ndarray]:
    """(final labels, core labels): small cores dropped, the rest grown back by ``dilation`` px."""
    from skimage.segmentation import expand_labels

    core = relabel(core, min_size)
    grown = expand_labels(core, distance=int(dilation)) if dilation > 0 else core
    return grown.astype(np.int32), core


def segment(p_obj: np.ndarray, p_cnt: np.ndarray, object_threshold: float = 0.5, contour_threshold: float = 0.5,
            min_size: int = 5, dilation: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """DCAN's fusion: (final label map, core label map) from the two probability maps."""
    core = core_labels(p_obj, p_cnt, object_threshold, contour_threshold)
    return finish(core, min_size, dilation)


def instances_from(labels: np.ndarray, core: np.ndarray, p_obj: np.ndarray, p_cnt: np.ndarray) -> list[Instance]:
    """Instances with score ``mean(p_obj) * (1 - mean(p_cnt))`` over each object's core."""
    n = int(labels.max())
    if n == 0:
        return []
    ids = np.arange(1, n + 1)
    mo = np.asarray(ndi.mean(p_obj, core, ids), np.float64)
    mc = np.asarray(ndi.mean(p_cnt, core, ids), np.float64)
    scores = np.clip(np.nan_to_num(mo * (1 - mc)), MIN_SCORE, 1.0)
    return [Instance(mask=labels == i, score=float(s)) for i, s in zip(ids, scores)]


def probability_maps(net, image: np.ndarray, cfg: DCANConfig, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(p_obj, p_contour), float32 HxW, of one image at its own resolution (fused outputs)."""
    import torch

    x = to_tensor(prepare_image(image, cfg.input_sigma))[None].to(device)
    x, (h, w) = pad_to_multiple(x, STRIDE)
    with torch.inference_mode():
        _, _, obj_f, cnt_f = side_and_fused(net, x)
        p = torch.stack([obj_f, cnt_f], 1)[0, :, :h, :w].sigmoid().float().cpu().numpy()
    return p[0], p[1]


# ---------------------------------------------------------------------------------------------------
# the method


@register
class DCAN(Method):
    """Two-branch FCN (objects, contours) with deep supervision; instances = objects minus contours."""

    name = "dcan"
    Config = DCANConfig
    uses_gpu = True

    config_check = staticmethod(check_config)

    def train(self, train_set, val_set, cfg: DCANConfig, workdir: Path, device: str) -> dict:
        check_config(cfg, where=f"methods.{self.name}")
        spec = {"width": cfg.width, "batch_norm": cfg.batch_norm}
        return train_dense(self.name, lambda: build_net(cfg.width, cfg.batch_norm), spec, train_set, val_set, cfg,
                           workdir, device, make_targets(cfg), make_loss(cfg), tune_post)

    def predict(self, state: dict, images: Iterable[np.ndarray], cfg: DCANConfig,
                device: str) -> Iterator[list[Instance]]:
        net = load_net(state, device)
        post = post_params(state, cfg)
        for image in images:
            p_obj, p_cnt = probability_maps(net, image, cfg, device)
            labels, core = segment(p_obj, p_cnt, **post)
            yield instances_from(labels, core, p_obj, p_cnt)


def post_params(state: dict | None, cfg) -> dict:
    """The post-processing parameters: the tuned ones in ``state``, else the config's."""
    return tuned_params(state, cfg, POST)


def load_net(state: dict, device: str):
    if not isinstance(state, dict) or "model" not in state or "net" not in state:
        raise ConfigError("methods.dcan: the model file holds no dcan state; re-run training")
    net = build_net(int(state["net"]["width"]), bool(state["net"].get("batch_norm", False)))
    net.load_state_dict(state["model"])
    return net.to(device).eval()


def tune_post(net, val_set, cfg: DCANConfig, device: str) -> tuple[dict, dict]:
    """Grid-search the post-processing on the val split; returns (chosen parameters, tuning record)."""
    defaults = {k: getattr(cfg, k) for k in POST}
    pairs = tune_images(val_set, cfg.max_tune_images) if cfg.tune_on == "val" else []
    if not pairs:
        return defaults, {"tuned_on": None, "n_images": 0, "chosen": defaults, "proxy_score": None}
    maps = [probability_maps(net, image, cfg, device) for image, _ in pairs]
    combos = grid({"object_threshold": [float(v) for v in cfg.object_thresholds],
                   "contour_threshold": [float(v) for v in cfg.contour_thresholds]})
    finals = grid({"min_size": [int(v) for v in cfg.min_sizes], "dilation": [int(v) for v in cfg.dilations]})
    best, score, rows, seconds, widening = tune_widened(
        maps, [labels for _, labels in pairs], combos,
        segment=lambda m, p: core_labels(m[0], m[1], **p),
        finish_combos=finals, finish=lambda m, core, p: finish(core, **p)[0],
        axes=widen_axes(cfg), max_widen=cfg.max_widen, what="dcan tuning")
    return dict(best), {"tuned_on": "val", "n_images": len(pairs), "chosen": dict(best), "proxy_score": score,
                        "seconds": round(seconds, 3), "widening": widening, "grid": rows}


def widen_axes(cfg: DCANConfig) -> list[Axis]:
    """The grid's axes and their allowed ranges, for growing one whose best lies on its edge."""
    return [Axis("object_threshold", tuple(float(v) for v in cfg.object_thresholds), lo=0.0, hi=1.0, gt_lo=True),
            Axis("contour_threshold", tuple(float(v) for v in cfg.contour_thresholds), lo=0.0, hi=1.0, gt_lo=True),
            Axis("min_size", tuple(int(v) for v in cfg.min_sizes), lo=0, integer=True),
            Axis("dilation", tuple(int(v) for v in cfg.dilations), lo=0, integer=True)]


__all__ = ["DCAN", "DCANConfig", "check_config", "build_net", "contour_target", "segment", "core_labels",
           "finish", "instances_from", "probability_maps", "tune_post", "post_params"]
