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

**Inference** (batch 1, the paper's FPS protocol): ``prepare`` (letterbox for ``faithful_to ==
"paper"``, stretch to a square for ``"code"``), ``detect`` (peak NMS, top-K, score threshold), then
``to_instances`` (ROI masks splatted and thresholded, brought back to the image's size, mask NMS at
``mask_nms_iou``); each instance carries its soft area for the evaluator's ``soft_area`` IoU option
(``"code"`` only).

The state kept is ``{"model": state_dict, "model_config": asdict(ModelConfig), "train_config": ...}``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal

import numpy as np

from methods import register
from methods.base import Instance, Method, rgb3
from objguided.config import Count, Fraction, Len, Name, NonNegFloat, PosFloat, PosInt, Range
from objguided.errors import ConfigError

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
    faithful_to: Literal["paper", "code"] = "paper"  # code: the authors' code path (BGR, stretch, raw splat, ...)
    threshold: Fraction | None = None  # mask threshold; null = 0.5 (paper) / 0.53 (code)
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
        return ModelConfig(backbone=cfg.backbone, pretrained=cfg.pretrained if pretrained == "from-config" else pretrained,
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
                       max_steps=cfg.max_steps, log_every=cfg.log_every,
                       grad_clip=None if cfg.grad_clip is None else float(cfg.grad_clip))


# ---------------------------------------------------------------------------------------------------
# training data


class TrainSamples:
    """A torch-style dataset over in-memory (image, labels) pairs, indexed by ``(index, sample_seed)``.

    Each item: (image tensor [3, S, S] normalised, targets dict of tensors from ``build_targets``).
    """

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], cfg: ObjGuidedConfig, mcfg):
        self.pairs, self.cfg, self.mcfg = pairs, cfg, mcfg

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The augmented (uint8 [S, S, 3] image, bool [N, S, S] masks) of one item."""
        from objguided.data.augment import augment, instance_masks, warp_crop

        image, labels = self.pairs[index]
        size = self.cfg.input_size
        if self.cfg.augment:
            img, masks = augment(image, labels, size, np.random.default_rng(seed), scales=self.cfg.crop_scales)
        else:  # the whole image, letterboxed about its centre
            h, w = image.shape[:2]
            img = warp_crop(image, max(h, w), w / 2, h / 2, size)
            masks = instance_masks(warp_crop(labels, max(h, w), w / 2, h / 2, size, order=0))
        return rgb3(img), masks

    def __getitem__(self, item):
        import torch

        from objguided.models.preprocess import prepare
        from objguided.models.targets import build_targets

        index, seed = item
        img, masks = self.sample(index, seed)
        tensor, _ = prepare(img, self.cfg.input_size, mode="stretch", bgr=self.cfg.faithful_to == "code")
        targets = build_targets(masks, self.mcfg)
        return tensor, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in targets.items()}


def collate(batch):
    import torch

    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]


def loss_fn(model, batch):
    images, targets = batch
    return model.loss(images, targets)


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
        import torch

        from objguided.engine.trainer import fit, make_loader, resume_key
        from objguided.models.network import ObjGuidedNet

        check_config(cfg, where=f"methods.{self.name}")
        mcfg = model_config(cfg)
        tcfg = train_config(cfg)
        seed = int(torch.initial_seed()) % 2**62  # the run's seed, set by the harness before train()
        pairs = [(s.image, s.labels) for s in train_set]
        if not pairs:
            raise ConfigError(f"methods.{self.name}: the train split of {train_set.root} is empty")
        data = TrainSamples(pairs, cfg, mcfg)
        net = ObjGuidedNet(mcfg)
        batches = lambda epoch: make_loader(data, tcfg.batch_size, seed, epoch, shuffle=True,  # noqa: E731
                                            num_workers=tcfg.num_workers, collate_fn=collate)
        workdir = Path(workdir) if workdir is not None else Path.cwd()
        net = fit(net, batches, loss_fn, tcfg, workdir, device,
                  run_key=resume_key(self.name, cfg, pairs, train_set.ids, seed))
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        return {"model": state, "model_config": dataclasses.asdict(mcfg), "train_config": dataclasses.asdict(tcfg)}

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
    mode = "letterbox" if cfg.faithful_to == "paper" else "stretch"
    bgr = cfg.faithful_to == "code"
    for image in images:
        with torch.inference_mode():
            tensor, frame = prepare(rgb3(image), cfg.input_size, mode=mode, bgr=bgr)
            detection = net.detect(tensor[None].to(device), score_threshold=cfg.score_threshold, top_k=cfg.top_k)[0]
            found = to_instances(detection, frame, post)
        yield [Instance(mask=np.asarray(m, bool), score=float(s), soft_area=None if a is None else float(a))
               for m, s, a in found]


__all__ = ["ObjGuided", "ObjGuidedConfig", "check_config", "model_config", "train_config", "TrainSamples",
           "build_net", "predict_with"]
