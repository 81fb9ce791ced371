"""``objguided``: the paper's method (Yi et al., TMI 2021), with and without auxiliary feature refinement.

The network, its targets, pre- and post-processing live in :mod:`objguided.models` (see
objguided/models/README.md); the training loop is the shared :func:`objguided.engine.trainer.fit`. This
module maps a flat, typed config onto those two, and the canonical data onto the network's inputs:

**Training.** Every train image is read into memory once. Each sample is drawn with its own seed (order
and seeds depend only on the run's seed and the epoch, so a resumed run sees the same batches): the
paper's augmentation (:mod:`objguided.data.augment`: random square crop of side ``max(W, H) * {0.6,
..., 1.3}`` warped to ``input_size``, horizontal flip), gray images repeated to three channels, the
channels reversed when ``faithful_to == "code"`` (the authors' code feeds OpenCV's BGR to RGB weights),
normalisation ``/255 - 0.5`` (:func:`objguided.models.preprocess.prepare`), then
:func:`~objguided.models.targets.build_targets`. Adam over every parameter, constant learning rate. The
run's seed is the torch seed the harness set before calling ``train`` (``torch.initial_seed()``).

**Inference** (batch 1, the paper's FPS protocol): ``prepare`` (``test_resize``: stretched to
``input_size`` squared, as the paper and the authors' test code; ``letterbox`` optional), ``detect`` (peak
NMS, top-K, score threshold), then ``to_instances`` (ROI masks splatted and thresholded, brought back to the
image's size, mask NMS at ``mask_nms_iou``); each instance carries its soft area for the evaluator's
``soft_area`` IoU option (``"code"`` only).

The state kept is ``{"model": state_dict, "model_config": asdict(ModelConfig), "train_config": ...,
"weights_source": "imagenet" | a .pth path | "random"}``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal

import numpy as np

from objguided.config import Count, Fraction, Len, Name, NonNegFloat, PosFloat, PosInt, Range
from objguided.errors import ConfigError
from objguided_methods import register
from objguided_methods.base import Instance, Method, cpu_state, crop_or_letterbox, fit_samples, rgb3
from objguided_methods.base import TrainSamples as SamplesBase

log = logging.getLogger(__name__)


@dataclass
class ObjGuidedConfig:
    # -- network (objguided.models.config.ModelConfig) --
    backbone: Literal["resnet50", "resnet34", "resnet18"] = "resnet50"  # paper: resnet50; demo: resnet18
    pretrained: Name | None = "imagenet"  # imagenet | a local .pth path | null (scratch)
    refine: bool = True  # auxiliary feature refinement (training only)
    k: PosFloat = 3.0  # refinement: k*N random points per ROI ...
    beta: PosFloat = 0.75  # ... of which the floor(beta*N) most uncertain are kept (beta <= k)
    points_divisor: PosInt = 8  # N = H*W // points_divisor
    max_objects: PosInt = 500  # detection targets per image
    clamp_heatmap: bool = True  # clamp the heatmap sigmoid in the focal loss (the code does not)
    batch_rois: bool = True  # exact speed-up: same-size ROIs in one batch
    head_width: PosInt = 256  # hidden width of the three detection heads (the paper's 256; lighter in the CPU demo)
    # -- training (objguided.engine.trainer.TrainConfig) --
    epochs: PosInt = 100
    batch_size: PosInt = 8
    lr: PosFloat = 1.25e-4
    weight_decay: NonNegFloat = 0.0
    input_size: Annotated[int, Range(min=32, multiple_of=32)] = 512  # a multiple of the backbone's stride
    max_steps: PosInt | None = None  # stop after this many steps (short demo runs)
    budget_seconds: PosFloat | None = None  # stop once training has used this much CPU/GPU time (the trainer's)
    amp: bool = True  # mixed precision, CUDA only
    num_workers: Count = 4
    checkpoint_every: PosInt = 1  # epochs ...
    checkpoint_min_seconds: NonNegFloat = 30.0  # ... and at least this long apart (tiny data sets: 1-step epochs)
    log_every: PosInt = 10
    grad_clip: PosFloat | None = None
    augment: bool = True  # the paper's crop + flip; off = the whole image letterboxed, no flip
    crop_scales: Annotated[list[PosFloat], Len(1)] = field(
        default_factory=lambda: [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3])
    # -- inference --
    faithful_to: Literal["paper", "code"] = "paper"  # code: the authors' code path (BGR, raw splat, soft crops, ...)
    # the paper resizes test images to 512x512 (and the authors' test code stretches); letterbox keeps the
    # aspect ratio like the training crops but loses resolution (benchmarks/results/objguided_ceiling.md)
    test_resize: Literal["stretch", "letterbox"] = "stretch"
    threshold: Fraction | None = None  # mask threshold; null = 0.5 (the paper; the authors' README evaluates at 0.5)
    score_threshold: Annotated[float, Range(min=0, lt=1)] = 0.3
    top_k: PosInt = 500
    mask_nms_iou: Annotated[float, Range(gt=0, max=1)] = 0.2


def check_config(cfg: ObjGuidedConfig, where: str = "methods.objguided") -> None:
    """The rule between fields that the declarations cannot say."""
    if cfg.beta > cfg.k:
        raise ConfigError(f"{where}.beta: expected 0 < beta <= k (= {cfg.k}), got {cfg.beta!r}")


def model_config(cfg: ObjGuidedConfig, pretrained: Any = "from-config"):
    """The network's ModelConfig for a method config (``pretrained`` overrides the config's)."""
    from objguided.models.config import ModelConfig

    try:
        return ModelConfig(backbone=cfg.backbone,
                           pretrained=cfg.pretrained if pretrained == "from-config" else pretrained,
                           refine=cfg.refine, k=float(cfg.k), beta=float(cfg.beta),
                           points_divisor=cfg.points_divisor, max_objects=cfg.max_objects,
                           clamp_heatmap=cfg.clamp_heatmap, batch_rois=cfg.batch_rois,
                           head_width=cfg.head_width)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"methods.objguided: {exc}") from exc


def train_config(cfg: ObjGuidedConfig):
    from objguided.engine.trainer import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=float(cfg.lr),
                       weight_decay=float(cfg.weight_decay), optimizer="adam", amp=cfg.amp,
                       num_workers=cfg.num_workers, checkpoint_every=cfg.checkpoint_every,
                       checkpoint_min_seconds=float(cfg.checkpoint_min_seconds),
                       max_steps=cfg.max_steps, log_every=cfg.log_every, budget_seconds=cfg.budget_seconds,
                       grad_clip=None if cfg.grad_clip is None else float(cfg.grad_clip))


# ---------------------------------------------------------------------------------------------------
# training data


class TrainSamples(SamplesBase):
    """Item: (image tensor [3, S, S] normalised, targets dict of tensors from ``build_targets``)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], cfg: ObjGuidedConfig, mcfg):
        super().__init__(pairs, cfg)
        self.mcfg = mcfg

    def encode(self, image, labels, rng):
        import torch

        from objguided.models.preprocess import prepare
        from objguided.models.targets import build_targets

        img, masks = crop_or_letterbox(image, labels, self.cfg.input_size, rng, self.cfg.augment,
                                       scales=self.cfg.crop_scales)
        tensor, _ = prepare(rgb3(img), self.cfg.input_size, mode="stretch", bgr=self.cfg.faithful_to == "code")
        targets = build_targets(masks, self.mcfg)
        return tensor, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in targets.items()}


# ---------------------------------------------------------------------------------------------------
# the method


@register
class ObjGuided(Method):
    """The paper's object-guided instance segmentation (CenterNet-style detection + ROI segmentation)."""

    name = "objguided"
    Config = ObjGuidedConfig
    uses_gpu = True

    config_check = staticmethod(check_config)

    def train(self, train_set, val_set, cfg: ObjGuidedConfig, workdir: Path, device: str) -> dict:
        from objguided.models.network import ObjGuidedNet

        pairs = self.training_pairs(train_set, cfg)
        mcfg = model_config(cfg)
        tcfg = train_config(cfg)
        net = ObjGuidedNet(mcfg)
        net = fit_samples(self.name, net, TrainSamples(pairs, cfg, mcfg), cfg, tcfg, pairs, train_set.ids,
                          workdir, device)
        state = cpu_state(net)
        # where the backbone's weights really came from: "random" when ImageNet weights could not be loaded
        # (model_config keeps what was asked for); the same key Mask R-CNN, PointRend and Keypoint Graph record
        return {"model": state, "model_config": dataclasses.asdict(mcfg), "train_config": dataclasses.asdict(tcfg),
                "weights_source": net.backbone.weights_source}

    def predict(self, state: dict, images: Iterable[np.ndarray], cfg: ObjGuidedConfig,
                device: str) -> Iterator[list[Instance]]:
        net = build_net(state, device)
        yield from predict_with(net, images, cfg, device)


def build_net(state: dict, device: str):
    """The trained network of a state (weights from the state; nothing downloaded), in eval mode."""
    from objguided.models.config import ModelConfig
    from objguided.models.network import ObjGuidedNet

    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise ConfigError("methods.objguided: the model file holds no objguided state; re-run training")
    mcfg = ModelConfig(**{**state["model_config"], "pretrained": None})
    net = ObjGuidedNet(mcfg)
    net.load_state_dict(state["model"])
    return net.to(device).eval()


def predict_with(net, images: Iterable[np.ndarray], cfg: ObjGuidedConfig, device: str) -> Iterator[list[Instance]]:
    """Batch-1 inference of a built network: prepare, detect, to_instances, per image."""
    import torch

    from objguided.models.postprocess import PostConfig, to_instances
    from objguided.models.preprocess import prepare

    post = PostConfig(faithful_to=cfg.faithful_to, threshold=cfg.threshold, mask_nms_iou=cfg.mask_nms_iou)
    bgr = cfg.faithful_to == "code"
    for image in images:
        with torch.inference_mode():
            tensor, frame = prepare(rgb3(image), cfg.input_size, mode=cfg.test_resize, bgr=bgr)
            detection = net.detect(tensor[None].to(device), score_threshold=cfg.score_threshold, top_k=cfg.top_k)[0]
            found = to_instances(detection, frame, post)
        yield [Instance(mask=np.asarray(m, bool), score=float(s), soft_area=None if a is None else float(a))
               for m, s, a in found]


__all__ = ["ObjGuided", "ObjGuidedConfig", "check_config", "model_config", "train_config", "TrainSamples",
           "build_net", "predict_with"]
