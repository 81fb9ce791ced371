"""Plumbing shared by the box-based baselines on torchvision (``mask_rcnn``, ``pointrend``).

Not a method itself (the registry skips modules whose name starts with ``_``). It holds:

- :class:`BoxConfig`: the flat, typed config both methods share (network, RPN/ROI sizes, training,
  inference; each field's allowed values declared with it), and :func:`check_config` for the rule between
  fields;
- :func:`build_fpn_backbone`: a torchvision ResNet-FPN whose ImageNet weights come through
  :func:`objguided.models.backbone.resnet_features` (torchvision's weights API or a local ``.pth``;
  offline, ONE "training from scratch" warning and random init, never a crash);
- :func:`rcnn_kwargs`: the ``GeneralizedRCNN`` keyword arguments of a config (input size, anchors,
  detection cap, ...);
- :class:`TrainSamples` (on :class:`objguided_methods.base.TrainSamples`): the paper's augmentation
  (:func:`objguided.data.augment.augment`) turned into torchvision detection targets (``boxes`` from the
  mask extents, ``labels`` = 1, ``masks``), batched as lists, with torchvision's own loss terms; the
  shared :func:`objguided_methods.base.fit_samples` trains on them;
- :func:`predict_detector`: batch-1 inference, masks pasted at the image's own resolution, thresholded,
  score = detection score.

Coordinates. Boxes are continuous ``(x1, y1, x2, y2)`` in torchvision's ``roi_align(aligned=False)``
convention, the one its Mask R-CNN uses both to pool features and to project the ground-truth masks
onto boxes (``project_masks_on_boxes``): pixel ``i``'s value sits at coordinate ``i``, so pixel ``i``
spans ``[i - 0.5, i + 0.5]``. A ground-truth box is therefore the mask's extent ``(min col - 0.5,
min row - 0.5, max col + 0.5, max row + 0.5)`` (never degenerate). An M x M mask predicted for a box
covers it with cell ``j`` centred at ``x1 + (j + 0.5) (x2 - x1) / M``; pasting samples it at each pixel
``i`` of the box at ``u = (i - x1) / (x2 - x1)`` (bilinear, ``align_corners=False``, zero outside) and
thresholds at ``mask_threshold``. With this pair of conventions a ground-truth mask projected on its box
at 28x28 (the training target) and pasted back is recovered exactly (IoU 1.0 on discs of radius 2-12 px;
tests/test_mask_rcnn.py), where torchvision's own pair (box = ``(min, max + 1)``, integer-rounded
``paste_masks_in_image``) loses 5 % IoU on average and up to 30 % on small nuclei. Pasting is per
instance inside its box (memory ~ box area, not N x H x W). Boxes go from the network's input frame
back to the image's with the half-pixel-exact ``x = (u + 0.5) / r - 0.5`` (``r`` = input / original
size, the mapping of the bilinear ``align_corners=False`` resize torchvision applies to the image), not
torchvision's ``x = u / r``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Iterator, Literal

import numpy as np

from objguided.config import Count, NonNegFloat, PosFloat, PosInt, Range
from objguided.errors import ConfigError
from objguided_methods.base import Instance, Method, cpu_state, crop_or_letterbox, fit_samples, rgb3
from objguided_methods.base import TrainSamples as SamplesBase

if TYPE_CHECKING:  # torch is imported where it is used: the method registry stays torch-free
    from torch import Tensor, nn

log = logging.getLogger(__name__)

#: FPN levels of torchvision's ``BackboneWithFPN`` (P2..P5 from layer1..layer4, plus P6 "pool")
RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
NO_WEIGHTS = ("none", "")


@dataclass
class BoxConfig:
    """Hyper-parameters shared by ``mask_rcnn`` and ``pointrend`` (defaults: the reference R50-FPN)."""

    # -- network --
    backbone: Literal["resnet50", "resnet34", "resnet18"] = "resnet50"  # reference: resnet50; CPU demo: resnet18
    pretrained: str = "imagenet"  # imagenet | a local .pth (torchvision keys) | none (scratch)
    trainable_backbone_layers: Annotated[int, Range(min=0, max=5)] = 3  # with pretrained weights; from scratch all
    fpn_channels: Annotated[int, Range(min=8)] = 256  # FPN width (reference 256; the CPU demo uses less)
    box_head_dim: Annotated[int, Range(min=8)] = 1024  # width of the two FC layers of the box head (reference 1024)
    smallest_anchor: Annotated[int, Range(min=2)] = 32  # anchor side on P2, doubling per level (reference 32, ..., 512)
    # -- input --
    input_size: Annotated[int, Range(min=64, multiple_of=32)] = 512  # long side resized to this; the FPN's stride
    augment: bool = True  # the paper's random square crop + flip; off = the whole image letterboxed
    # -- RPN / ROI sampling (torchvision's and detectron2's defaults) --
    rpn_pre_nms_top_n_train: PosInt = 2000  # per FPN level
    rpn_post_nms_top_n_train: PosInt = 2000
    rpn_pre_nms_top_n_test: PosInt = 1000  # per FPN level
    rpn_post_nms_top_n_test: PosInt = 1000  # >= box_detections_per_img (one class: <= 1 detection per proposal)
    rpn_batch_size_per_image: Annotated[int, Range(min=2)] = 256
    box_batch_size_per_image: Annotated[int, Range(min=2)] = 512
    # -- inference --
    box_detections_per_img: PosInt = 500  # the per-image cap (torchvision/detectron2 default: 100)
    box_score_thresh: Annotated[float, Range(min=0, lt=1)] = 0.05
    box_nms_thresh: Annotated[float, Range(gt=0, max=1)] = 0.5
    mask_threshold: Annotated[float, Range(min=0, lt=1)] = 0.5  # on the pasted mask probability (>=)
    # -- training (objguided.engine.trainer.TrainConfig) --
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  # sgd: momentum 0.9; constant learning rate
    epochs: PosInt = 100
    batch_size: PosInt = 8
    lr: PosFloat = 1e-4
    weight_decay: NonNegFloat = 0.0
    max_steps: Count = 0  # stop after this many optimizer steps; 0 = no cap (the epochs decide)
    budget_seconds: PosFloat | None = None  # stop once training has used this much CPU/GPU time (the trainer's)
    amp: bool = True  # float16 autocast on CUDA (ignored on the CPU)
    num_workers: Count = 4
    checkpoint_every: PosInt = 1  # epochs ...
    checkpoint_min_seconds: NonNegFloat = 30.0  # ... and at least this long apart
    log_every: PosInt = 10
    grad_clip: NonNegFloat = 0.0  # max global gradient norm; 0 = no clipping


def check_config(cfg: BoxConfig, where: str) -> None:
    """The rule between fields that the declarations cannot say."""
    if cfg.rpn_post_nms_top_n_test < cfg.box_detections_per_img:
        raise ConfigError(f"{where}.rpn_post_nms_top_n_test: {cfg.rpn_post_nms_top_n_test} proposals cannot give "
                          f"box_detections_per_img = {cfg.box_detections_per_img} detections")


# ---------------------------------------------------------------------------------------------------
# network


def build_fpn_backbone(cfg: BoxConfig, pretrained: str | None = "from-config"):
    """``(BackboneWithFPN, frozen_bn, weights_source)`` for a config.

    With ImageNet (or file) weights the ResNet uses FrozenBatchNorm2d and only the last
    ``trainable_backbone_layers`` of (layer4, layer3, layer2, layer1, conv1) train, as torchvision's
    ``maskrcnn_resnet50_fpn(weights_backbone=...)`` and detectron2 do. From scratch (no weights, or
    loading failed: one warning from :func:`objguided.models.backbone.resnet_features`) the ResNet uses
    ordinary BatchNorm and every layer trains, as torchvision does without weights.
    ``pretrained`` overrides the config's (``None`` = random init, used to rebuild a trained model).
    """
    from objguided.models.backbone import resnet_features

    source = cfg.pretrained if pretrained == "from-config" else pretrained
    if source is not None and source.strip().lower() in NO_WEIGHTS:
        source = None
    state, weights_source = None, "random"
    if source is not None:
        feats = resnet_features(cfg.backbone, source)  # logs ONE warning and returns random init on failure
        if feats.weights_source != "random":
            state, weights_source = feats.state_dict(), feats.weights_source
    return _fpn_from_state(cfg, state) + (weights_source,)


def _fpn_from_state(cfg: BoxConfig, state: dict | None, frozen: bool | None = None):
    import torchvision
    from torch import nn
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    from objguided.models.backbone import CHANNELS

    frozen = state is not None if frozen is None else frozen
    net = getattr(torchvision.models, cfg.backbone)(weights=None,
                                                    norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
    if state is not None:
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:  # resnet_features checked the keys already: a bug if reached
            raise RuntimeError(f"backbone weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    trainable = cfg.trainable_backbone_layers if frozen else 5
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        layers.append("bn1")
    for name, p in net.named_parameters():
        if all(not name.startswith(layer) for layer in layers):
            p.requires_grad_(False)
    in_channels = list(CHANNELS[cfg.backbone][1:])
    fpn = BackboneWithFPN(net, RETURN_LAYERS, in_channels, cfg.fpn_channels, extra_blocks=LastLevelMaxPool())
    return fpn, frozen


def rebuild_backbone(cfg: BoxConfig, frozen_bn: bool):
    """The backbone of a trained model (no weights loaded: the model's state dict follows)."""
    return _fpn_from_state(cfg, None, frozen=frozen_bn)[0]


def rcnn_kwargs(cfg: BoxConfig) -> dict:
    """Keyword arguments of torchvision's ``FasterRCNN``/``MaskRCNN`` for a config (one foreground class)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    sizes = tuple((cfg.smallest_anchor * 2 ** i,) for i in range(5))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return dict(
        num_classes=None,  # the predictor below: background + one foreground class
        min_size=cfg.input_size, max_size=cfg.input_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_head=TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, 2),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_detections_per_img=cfg.box_detections_per_img,
        box_score_thresh=float(cfg.box_score_thresh), box_nms_thresh=float(cfg.box_nms_thresh),
    )


def train_config(cfg: BoxConfig):
    from objguided.engine.trainer import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=float(cfg.lr),
                       weight_decay=float(cfg.weight_decay), optimizer=cfg.optimizer, amp=cfg.amp,
                       num_workers=cfg.num_workers, checkpoint_every=cfg.checkpoint_every,
                       checkpoint_min_seconds=float(cfg.checkpoint_min_seconds),
                       max_steps=cfg.max_steps or None, log_every=cfg.log_every,
                       grad_clip=float(cfg.grad_clip) or None, budget_seconds=cfg.budget_seconds)


# ---------------------------------------------------------------------------------------------------
# training data


def image_tensor(image: np.ndarray) -> Tensor:
    """uint8 HxW(x3) -> float32 [3, H, W] in [0, 1] (torchvision's detection models normalise inside)."""
    import torch

    pixels = np.array(rgb3(image), dtype=np.uint8, order="C", copy=True)
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)


def masks_to_targets(masks: np.ndarray) -> dict[str, Tensor]:
    """bool masks [N, H, W] -> torchvision detection targets (labels = 1, masks, boxes = the masks' extents
    ``(min col - 0.5, min row - 0.5, max col + 0.5, max row + 0.5)``: see the module docstring)."""
    import torch

    masks = np.asarray(masks, bool)
    masks = masks[masks.reshape(len(masks), -1).any(axis=1)] if len(masks) else masks
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes[k] = (cols[0] - 0.5, rows[0] - 0.5, cols[-1] + 0.5, rows[-1] + 0.5)
    return {"boxes": torch.from_numpy(boxes), "labels": torch.ones(len(masks), dtype=torch.int64),
            "masks": torch.from_numpy(np.ascontiguousarray(masks.astype(np.uint8)))}


class TrainSamples(SamplesBase):
    """Item: (image [3, S, S] in [0, 1], torchvision detection targets); a batch is two lists, the input
    torchvision's detectors take, which compute their own loss terms in training mode."""

    def encode(self, image, labels, rng):
        img, masks = crop_or_letterbox(image, labels, self.cfg.input_size, rng, self.cfg.augment)
        return image_tensor(img), masks_to_targets(masks)

    @staticmethod
    def collate(batch):
        return [b[0] for b in batch], [b[1] for b in batch]

    @staticmethod
    def loss(model, batch):
        images, targets = batch
        terms = model(images, targets)
        return {"total": sum(terms.values()), **{k.removeprefix("loss_"): v for k, v in terms.items()}}


# ---------------------------------------------------------------------------------------------------
# inference


def paste_masks(probs: Tensor, boxes: Tensor, height: int, width: int, threshold: float) -> list[np.ndarray]:
    """M x M mask probabilities [N, M, M] of boxes [N, 4] (original image coordinates, ``aligned=False``
    convention: see the module docstring) -> bool masks [H, W], one per instance, ``prob >= threshold``."""
    import torch
    import torch.nn.functional as F

    out = []
    probs = probs.float()
    for prob, box in zip(probs, boxes.float().cpu().tolist()):
        x1, y1, x2, y2 = box
        mask = np.zeros((height, width), bool)
        c0, c1 = max(int(math.floor(x1)), 0), min(int(math.ceil(x2)) + 1, width)
        r0, r1 = max(int(math.floor(y1)), 0), min(int(math.ceil(y2)) + 1, height)
        if c1 > c0 and r1 > r0 and x2 > x1 and y2 > y1:
            xs = (torch.arange(c0, c1, dtype=torch.float32, device=prob.device) - x1) / (x2 - x1) * 2 - 1
            ys = (torch.arange(r0, r1, dtype=torch.float32, device=prob.device) - y1) / (y2 - y1) * 2 - 1
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # [1, h, w, 2] (x, y)
            vals = F.grid_sample(prob[None, None], grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)[0, 0]
            mask[r0:r1, c0:c1] = (vals >= threshold).cpu().numpy()
        out.append(mask)
    return out


def detect(model: nn.Module, image: np.ndarray, device: str) -> dict[str, Tensor]:
    """Whole-network inference of one image without torchvision's postprocess: ``boxes`` in the image's
    coordinates, ``scores``, and the ROI mask probabilities ``mask_probs`` [N, M, M] (M = 28 for Mask
    R-CNN, 224 for PointRend)."""
    import torch

    x = image_tensor(image).to(device)
    images, _ = model.transform([x])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features)
    detections, _ = model.roi_heads(features, proposals, images.image_sizes)
    det = detections[0]
    (h_in, w_in), (h, w) = images.image_sizes[0], image.shape[:2]
    ratio = torch.tensor([w_in / w, h_in / h] * 2, dtype=det["boxes"].dtype, device=det["boxes"].device)
    det["boxes"] = (det["boxes"] + 0.5) / ratio - 0.5  # half-pixel exact inverse of the resize
    det["mask_probs"] = det.pop("masks")[:, 0]
    return det


def predict_detector(model: nn.Module, images: Iterable[np.ndarray], cfg: BoxConfig,
                     device: str) -> Iterator[list[Instance]]:
    """Batch-1 inference: per image, its instances at its own resolution (score = detection score).
    Instances whose pasted mask is empty are dropped."""
    import torch

    model = model.to(device).eval()
    for image in images:
        with torch.inference_mode():
            det = detect(model, image, device)
            masks = paste_masks(det["mask_probs"], det["boxes"], image.shape[0], image.shape[1],
                                float(cfg.mask_threshold))
            scores = det["scores"].float().cpu().tolist()
        yield [Instance(mask=m, score=float(s)) for m, s in zip(masks, scores) if m.any()]


def state_model(state: Any, method_name: str) -> dict:
    if not isinstance(state, dict) or "model" not in state or "frozen_bn" not in state:
        raise ConfigError(f"methods.{method_name}: the model file holds no {method_name} state; re-run training")
    return state


__all__ = ["BoxConfig", "check_config", "build_fpn_backbone", "rebuild_backbone", "rcnn_kwargs", "train_config",
           "TrainSamples", "paste_masks", "detect", "predict_detector",
           "masks_to_targets", "image_tensor", "state_model"]


class TorchvisionDetector(Method):
    """``train`` and ``predict`` shared by the torchvision detectors; a subclass says how to build its model."""

    uses_gpu = True

    def build_model(self, cfg: BoxConfig, backbone) -> nn.Module:
        raise NotImplementedError

    def train(self, train_set, val_set, cfg: BoxConfig, workdir: Path, device: str) -> dict:
        import torch

        pairs = self.training_pairs(train_set, cfg)
        backbone, frozen_bn, source = build_fpn_backbone(cfg)
        model = self.build_model(cfg, backbone)
        if torch.device(device).type == "cpu":
            torch.set_flush_denormal(True)  # Adam's tiny second moments go denormal on x86: 10x slower steps
        model = fit_samples(self.name, model, TrainSamples(pairs, cfg), cfg, train_config(cfg), pairs, train_set.ids,
                            workdir, device)
        return {"model": cpu_state(model), "frozen_bn": frozen_bn, "weights_source": source}

    def predict(self, state: dict, images: Iterable[np.ndarray], cfg: BoxConfig,
                device: str) -> Iterator[list[Instance]]:
        state = state_model(state, self.name)
        model = self.build_model(cfg, rebuild_backbone(cfg, state["frozen_bn"]))
        model.load_state_dict(state["model"])
        yield from predict_detector(model, images, cfg, device)

