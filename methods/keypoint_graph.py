"""``keypoint_graph``: Yi et al., "Multi-scale cell instance segmentation with keypoint graph based bounding
boxes", MICCAI 2019 (a baseline of the TMI 2021 paper's Table I).

The network (:mod:`objguided_methods._keypoint_graph_net`): a ResNet up to layer3, an unnormalised U-shaped
decoder predicting, at four scales (input, /2, /4, /8), five keypoint maps (the box's four corners and
its centre), short-range offsets (pixel -> its keypoint) and mid-range offsets (keypoint -> the same
object's other keypoints, the 20 directed edges of the complete graph on 5 points); and a coarse-to-fine
segmentation branch on integer crops of the raw backbone features. Targets and decoding are numpy
(:mod:`objguided_methods._keypoint_graph_core`). See methods/README_keypoint_graph.md for every choice.

**Training.** Per sample (seeded by ``(run seed, epoch)``, see :func:`objguided.engine.trainer.make_loader`):
the authors' augmentation (photometric distortion, expand, horizontal and vertical flips), a stretch to
``input_size`` x ``input_size`` (image bilinear, labels nearest), ``/255 - 0.5``; targets at each scale
for the objects whose box there is more than ``min_extent`` px high and wide. Loss = sum over scales of
BCE(kp) + L1(short)/R + 0.25 L1(mid)/R, plus the segmentation BCE at the ground-truth boxes. Adam with
``lr * lr_decay ** max(0, epoch - lr_decay_start)`` (an optimizer hook, :class:`EpochDecay`: the shared
trainer's own schedule steps by optimizer step, not by epoch).

**Inference** (batch 1): stretch to the input size, decode each scale (Hough voting, peaks, star
grouping, box rules), merge the scales with box NMS, segment each box, paste the patch into an input-size
canvas, resize it bilinearly to the original size and threshold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Literal

import numpy as np

from objguided.config import Count, Fraction, Name, NonNegFloat, PosFloat, PosInt, Range
from objguided.errors import ConfigError
from objguided_methods import register
from objguided_methods.base import Instance, Method, cpu_state, fit_samples, rgb3
from objguided_methods.base import TrainSamples as SamplesBase


@dataclass
class KeypointGraphConfig:
    # -- network --
    backbone: Literal["resnet50", "resnet34", "resnet18"] = "resnet50"  # the paper: resnet50; demo, tests: resnet18
    pretrained: Name | None = "imagenet"  # imagenet | a local .pth | null (from scratch)
    head_kernel: PosInt = 7  # kernel of both convs of every head (the code: 7); odd
    head_width: PosInt | None = None  # hidden width of the heads; null = the decoder level's width (the code)
    radius: PosFloat = 5.0  # keypoint disc radius R (targets, loss normalisation, vote normalisation)
    min_extent: Count = 11  # keypoints at a scale only for boxes more than this many px high and wide there
    inclusive_boxes: bool = False  # crop/paste include the box's last row/column (the code leaves it out)
    # -- training --
    epochs: PosInt = 100
    batch_size: PosInt = 2
    lr: PosFloat = 1e-4
    lr_decay: Annotated[float, Range(gt=0, max=1)] = 0.96  # per epoch
    lr_decay_start: Count = 1  # lr = lr * lr_decay ** max(0, epoch - start), epochs from 0 (the code's off-by-one)
    weight_decay: NonNegFloat = 0.0
    input_size: Annotated[int, Range(min=32, multiple_of=16)] = 512  # a multiple of the backbone's stride
    max_steps: PosInt | None = None  # stop after this many optimizer steps (short demo runs)
    budget_seconds: PosFloat | None = None  # stop once training has used this much CPU/GPU time (the trainer's)
    amp: bool = True  # float16 autocast, CUDA only
    num_workers: Count = 2
    checkpoint_every: PosInt = 5  # epochs (the code saves every 5 epochs) ...
    checkpoint_min_seconds: NonNegFloat = 30.0  # ... and at least this long apart
    log_every: PosInt = 10
    grad_clip: PosFloat | None = None
    augment: bool = True  # photometric distortion, expand, flips (off: the stretched image only)
    # -- inference --
    sigma: NonNegFloat = 2.0  # Gaussian smoothing of the vote maps
    peak_threshold: NonNegFloat = 0.004
    match_radius: PosFloat = 6.0  # R + 1: a grouped keypoint lies within this of seed + mid offset
    seed_exclusion: NonNegFloat = 10.0  # a seed this close to a group's keypoint of its type is discarded
    nms_iou: Annotated[float, Range(gt=0, max=1)] = 0.5
    mask_threshold: Fraction = 0.5
    max_detections: PosInt = 1000  # boxes segmented per image after NMS (the code: no cap)


def check_config(cfg: KeypointGraphConfig, where: str = "methods.keypoint_graph") -> None:
    """What the declarations cannot say: an odd kernel (the heads pad by kernel // 2)."""
    if cfg.head_kernel % 2 == 0:
        raise ConfigError(f"{where}.head_kernel: expected an odd integer >= 1, got {cfg.head_kernel!r}")


def train_config(cfg: KeypointGraphConfig):
    from objguided.engine.trainer import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=float(cfg.lr),
                       weight_decay=float(cfg.weight_decay), optimizer="adam", amp=cfg.amp,
                       num_workers=cfg.num_workers, checkpoint_every=cfg.checkpoint_every,
                       checkpoint_min_seconds=float(cfg.checkpoint_min_seconds), max_steps=cfg.max_steps,
                       log_every=cfg.log_every, grad_clip=None if cfg.grad_clip is None else float(cfg.grad_clip),
                       budget_seconds=cfg.budget_seconds)


def net_config(cfg: KeypointGraphConfig) -> dict:
    return {"backbone": cfg.backbone, "pretrained": cfg.pretrained, "head_kernel": cfg.head_kernel,
            "head_width": cfg.head_width, "radius": float(cfg.radius), "inclusive_boxes": cfg.inclusive_boxes}


# ---------------------------------------------------------------------------------------------------
# training data


def augment_sample(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The authors' augmentation on (float32 HxWx3 in 0..255, int label map): brightness +-32 (p 0.5),
    contrast x U(0.5, 1.5) (p 0.5), a random channel permutation (p 0.5), clipped to 0..255; expand
    (p 0.5: a black canvas of int(ratio * side), ratio U(1, 2), the image at a random integer offset);
    horizontal and vertical flips (p 0.5 each)."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img = img + np.float32(rng.uniform(-32, 32))
    if rng.random() < 0.5:
        img = img * np.float32(rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        img = img[..., rng.permutation(3)]
    img = np.clip(img, 0, 255)
    if rng.random() < 0.5:
        h, w = labels.shape
        ratio = rng.uniform(1, 2)
        y0, x0 = int(rng.uniform(0, h * ratio - h)), int(rng.uniform(0, w * ratio - w))
        big_h, big_w = max(int(h * ratio), y0 + h), max(int(w * ratio), x0 + w)
        canvas = np.zeros((big_h, big_w, 3), np.float32)
        canvas[y0:y0 + h, x0:x0 + w] = img
        lab = np.zeros((big_h, big_w), labels.dtype)
        lab[y0:y0 + h, x0:x0 + w] = labels
        img, labels = canvas, lab
    if rng.random() < 0.5:
        img, labels = img[:, ::-1], labels[:, ::-1]
    if rng.random() < 0.5:
        img, labels = img[::-1], labels[::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(labels)


def build_targets(labels: np.ndarray, cfg: KeypointGraphConfig) -> dict:
    """Targets of one input-frame label map [S, S]: per scale (heat, short, mid), the segmentation
    objects' boxes (extents over 2 px, as the code) and ids, and the label map."""
    from objguided_methods._keypoint_graph_core import keypoint_targets, label_boxes, scale_keypoints
    from objguided_methods._keypoint_graph_net import SCALES

    size = labels.shape[0]
    scales = []
    for s in SCALES:
        kps = scale_keypoints(labels, s, cfg.min_extent)
        n = -(-size // s)
        scales.append(keypoint_targets(kps, n, n, cfg.radius))
    ids, boxes = label_boxes(labels)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 2) & ((boxes[:, 3] - boxes[:, 1]) > 2)
    return {"scales": scales, "ids": ids[keep], "boxes": boxes[keep].astype(np.float32), "labels": labels}


class TrainSamples(SamplesBase):
    """Item: (image tensor [3, S, S], per-scale keypoint targets, the label map, the boxes and ids)."""

    def encode(self, image, labels, rng):
        import torch

        from objguided.models.preprocess import prepare

        img, lab = rgb3(image).astype(np.float32), np.asarray(labels, np.int32)
        if self.cfg.augment:
            img, lab = augment_sample(img, lab, rng)
        tensor, frame = prepare(img, self.cfg.input_size, mode="stretch")
        lab = frame.labels_to_input(lab)
        t = build_targets(lab, self.cfg)
        return tensor, {
            "scales": [tuple(torch.from_numpy(a) for a in sc) for sc in t["scales"]],
            "labels": torch.from_numpy(lab.astype(np.int64)),
            "boxes": torch.from_numpy(t["boxes"]),
            "ids": torch.from_numpy(t["ids"]),
        }

    @staticmethod
    def collate(batch):
        """The keypoint maps and the label maps stacked per scale; boxes and ids a list per image."""
        import torch

        images, tg = SamplesBase.collate(batch)
        scales = [tuple(torch.stack([t["scales"][s][k] for t in tg]) for k in range(3))
                  for s in range(len(tg[0]["scales"]))]
        return images, {"scales": scales, "labels": torch.stack([t["labels"] for t in tg]),
                        "boxes": [t["boxes"] for t in tg], "ids": [t["ids"] for t in tg]}


# ---------------------------------------------------------------------------------------------------
# the method


@register
class KeypointGraph(Method):
    """Keypoint Graph (Yi et al., MICCAI 2019): multi-scale keypoint-graph boxes + box-guided segmentation."""

    name = "keypoint_graph"
    Config = KeypointGraphConfig
    uses_gpu = True

    config_check = staticmethod(check_config)

    def train(self, train_set, val_set, cfg: KeypointGraphConfig, workdir: Path, device: str) -> dict:
        from objguided_methods._keypoint_graph_net import EpochDecay, KeypointGraphNet

        pairs = self.training_pairs(train_set, cfg)
        tcfg = train_config(cfg)
        ncfg = net_config(cfg)
        net = KeypointGraphNet(**ncfg)
        decay = EpochDecay(net, cfg.lr, cfg.lr_decay, cfg.lr_decay_start)
        net = fit_samples(self.name, net, TrainSamples(pairs, cfg), cfg, tcfg, pairs, train_set.ids, workdir, device,
                          schedule=decay)
        state = cpu_state(net)
        return {"model": state, "net_config": ncfg, "weights_source": net.backbone.weights_source,
                "train_config": dataclasses.asdict(tcfg)}

    def predict(self, state: dict, images: Iterable[np.ndarray], cfg: KeypointGraphConfig,
                device: str) -> Iterator[list[Instance]]:
        net = build_net(state, device)
        yield from predict_with(net, images, cfg, device)


def build_net(state: dict, device: str):
    """The trained network of a state (nothing downloaded), in eval mode."""
    from objguided_methods._keypoint_graph_net import KeypointGraphNet

    if not isinstance(state, dict) or "model" not in state or "net_config" not in state:
        raise ConfigError("methods.keypoint_graph: the model file holds no keypoint_graph state; re-run training")
    net = KeypointGraphNet(**{**state["net_config"], "pretrained": None})
    net.load_state_dict(state["model"])
    return net.to(device).eval()


def detect_boxes(net, out: dict, cfg: KeypointGraphConfig) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n, 4] (input pixels) and scores of batch item 0 of a forward pass: every scale decoded,
    scaled to input pixels, merged by NMS (descending score, at most ``max_detections``)."""
    import torch

    from objguided_methods._keypoint_graph_core import decode_scale, nms
    from objguided_methods._keypoint_graph_net import SCALES

    boxes, scores = [], []
    for s, (kp_l, short, mid) in zip(SCALES, out["scales"]):
        kp = torch.sigmoid(kp_l[0].float()).cpu().numpy()
        b, sc = decode_scale(kp, short[0].float().cpu().numpy(), mid[0].float().cpu().numpy(), cfg.radius,
                             cfg.sigma, cfg.peak_threshold, cfg.match_radius, cfg.seed_exclusion)
        boxes.append(b * s)
        scores.append(sc)
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    keep = nms(boxes, scores, cfg.nms_iou)[: cfg.max_detections]
    return boxes[keep], scores[keep]


def predict_with(net, images: Iterable[np.ndarray], cfg: KeypointGraphConfig, device: str) -> Iterator[list[Instance]]:
    """Batch-1 inference of a built network."""
    import torch

    from objguided.models.preprocess import prepare

    for image in images:
        instances = []
        with torch.inference_mode():
            tensor, frame = prepare(rgb3(image), cfg.input_size, mode="stretch")
            out = net(tensor[None].to(device))
            boxes, scores = detect_boxes(net, out, cfg)
            h, w = frame.orig_h, frame.orig_w
            for box, score in zip(boxes, scores):
                res = net.segment(out["seg_feats"], 0, box)
                if res is None:
                    continue
                logits, (y1, _, x1, _) = res
                prob = torch.sigmoid(logits.float()).cpu().numpy()
                win, oy, ox = frame.window_to_orig(prob, y1, x1, "bilinear")
                fg = win >= cfg.mask_threshold
                if not fg.any():
                    continue
                mask = np.zeros((h, w), bool)
                mask[oy:oy + fg.shape[0], ox:ox + fg.shape[1]] = fg
                instances.append(Instance(mask=mask, score=float(score)))
        yield instances


__all__ = ["KeypointGraph", "KeypointGraphConfig", "check_config", "train_config", "net_config", "TrainSamples",
           "augment_sample", "build_targets", "build_net", "detect_boxes", "predict_with"]
