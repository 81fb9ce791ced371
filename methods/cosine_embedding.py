"""``cosine_embedding``: Cosine Embedding (Payer et al., MICCAI 2018), a baseline of the paper's Table I.

The still-image (stacked, not recurrent) variant of the authors' public code, as docs/baselines.md
describes it; choices and deviations are in methods/README_cosine_embedding.md.

**Network** (:func:`build_net`). Two stacked U-Nets ("hourglasses") of ``levels`` levels and
``filters`` filters per level, one 3x3 convolution (+ LeakyReLU 0.1) per block, average-pooling down,
nearest-neighbour up-sampling, *additive* skips, no normalisation; each stage ends with a 1x1
convolution to ``embedding_dim`` channels, L2-normalised per pixel. Stage 2 sees the image concatenated
with stage 1's normalised embeddings. Input sides must be multiples of ``2 ** (levels - 1)``
(prediction pads with zeros).

**Loss** (:func:`cosine_loss`, on both stages, summed). Per image, with embeddings ``e_p`` (unit vectors):
for each instance ``i`` (at most ``max_instances`` per image, drawn at random when there are more;
the others still count as foreground) with mean direction ``m_i`` (the normalised mean of its
``e_p``): ``mean_{p in i} (1 - cos(e_p, m_i)) + mean_{q in N(i)} cos(e_q, m_i)^2`` where ``N(i)`` are
the pixels of *other* instances within ``neighbour_factor * input_size`` px of ``i``'s centre of mass
(no neighbours: the second term is 0); the image's instance term is the mean over its instances. The
background is a separate term of the same form: target = the background pixels, neighbours = all
foreground pixels. Loss = mean over images of (instance term + background term).

**Clustering** (:func:`cluster`): background direction ``b`` = the per-channel median of the
stage-2 embeddings over the image (normalised); pixels with ``cos(e_p, b)^2 >= background_cos2`` are
background; the rest, as ``[e_p, coord_weight * (y, x)]`` (pixel coordinates), go to HDBSCAN
(``sklearn.cluster.HDBSCAN``, ``min_cluster_size``, ``min_samples``; noise is background). Above
``max_points`` foreground pixels, HDBSCAN clusters an evenly strided subset and every other pixel
takes the label of its nearest clustered neighbour in the same feature space. Each cluster is split
into 8-connected components; components of fewer than ``min_size`` pixels are dropped. The five
parameters are grid-searched on the val split (a parameter whose best lies on its grid's edge is tried
further out, up to ``max_widen`` steps; ``state["tuning"]["widening"]`` says what happened) and kept in
the state.

**Score** of an object (the method has none): its *cohesion*, the mean over its pixels of
``cos(e_p, m)`` with ``m`` the object's normalised mean embedding, clipped to [1e-3, 1]; tight,
well-separated clusters score near 1.

State: ``{"model": state_dict, "net": {...}, "post": tuned parameters, "tuning": summary, ...}``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator

import numpy as np

from objguided.config import Count, Len, NonNegFloat, PosFloat, PosInt, Range
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

POST = ("background_cos2", "min_cluster_size", "min_samples", "coord_weight", "min_size")
MIN_SCORE = 1e-3
Cos2 = Annotated[float, Range(gt=0, max=1)]  # a squared cosine threshold
ClusterSize = Annotated[int, Range(min=2)]  # HDBSCAN's min_cluster_size


@dataclass
class CosineEmbeddingConfig(DenseTrainFields):
    # -- network --
    levels: PosInt = 7  # U-Net levels per stage (the authors' 7; the CPU demo uses 4)
    filters: PosInt = 64  # filters per level (the authors' 64; the CPU demo uses 16)
    embedding_dim: Annotated[int, Range(min=2)] = 16
    # -- loss --
    max_instances: PosInt = 32  # instances per image per step (drawn at random above this)
    neighbour_factor: PosFloat = 0.2  # neighbour radius = input_size * factor
    # -- clustering (defaults: the authors'; tuned on val) --
    background_cos2: Cos2 = 0.5
    min_cluster_size: ClusterSize = 50
    min_samples: PosInt = 50
    coord_weight: NonNegFloat = 0.01
    min_size: Count = 50
    max_points: Annotated[int, Range(min=100)] = 20000  # above this, HDBSCAN clusters a subset (rest: nearest)
    background_cos2s: Annotated[list[Cos2], Len(1)] = field(default_factory=lambda: [0.5])
    min_cluster_sizes: Annotated[list[ClusterSize], Len(1)] = field(default_factory=lambda: [25, 50, 100])
    min_samples_values: Annotated[list[PosInt], Len(1)] = field(default_factory=lambda: [10, 50])
    coord_weights: Annotated[list[NonNegFloat], Len(1)] = field(default_factory=lambda: [0.01])
    min_sizes: Annotated[list[Count], Len(1)] = field(default_factory=lambda: [25, 50])


def check_config(cfg: CosineEmbeddingConfig, where: str = "methods.cosine_embedding") -> None:
    """What the declarations cannot say: the crop side fits the U-Net's depth."""
    check_input_size(cfg, where, 2 ** (cfg.levels - 1))


# ---------------------------------------------------------------------------------------------------
# network


def build_net(levels: int, filters: int, embedding_dim: int):
    """Two stacked U-Nets; forward gives both stages' normalised embeddings [B, D, H, W]."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv(c_in: int, c_out: int):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1, inplace=True))

    class UNet(nn.Module):
        def __init__(self, c_in: int):
            super().__init__()
            self.down = nn.ModuleList([conv(c_in if k == 0 else filters, filters) for k in range(levels)])
            self.up = nn.ModuleList([conv(filters, filters) for _ in range(levels - 1)])
            self.out = nn.Conv2d(filters, embedding_dim, 1)

        def forward(self, x):
            skips = []
            for k, block in enumerate(self.down):
                if k:
                    x = F.avg_pool2d(x, 2)
                x = block(x)
                skips.append(x)
            for k in reversed(range(levels - 1)):
                x = F.interpolate(x, scale_factor=2, mode="nearest") + skips[k]
                x = self.up[k](x)
            return self.out(x)

    class StackedUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stage1 = UNet(3)
            self.stage2 = UNet(3 + embedding_dim)

        def forward(self, x):
            e1 = F.normalize(self.stage1(x), dim=1)
            e2 = F.normalize(self.stage2(torch.cat([x, e1], 1)), dim=1)
            return e1, e2

    return StackedUNet()


# ---------------------------------------------------------------------------------------------------
# targets and loss


def select_instances(labels: np.ndarray, max_instances: int, rng: np.random.Generator | None) -> np.ndarray:
    """int64 map: the (at most ``max_instances``) selected instances 1..K, other instances -1, background 0."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if len(ids) > max_instances:
        chosen = np.sort((rng or np.random.default_rng(0)).choice(ids, max_instances, replace=False))
    else:
        chosen = ids
    lut = np.full(int(labels.max()) + 1, -1, np.int64)
    lut[0] = 0
    lut[chosen] = np.arange(1, len(chosen) + 1)
    return lut[labels]


def make_targets(cfg: CosineEmbeddingConfig):
    def targets(labels: np.ndarray, rng) -> dict:
        return {"labels": select_instances(labels, cfg.max_instances, rng)}

    return targets


def cosine_loss(emb, labels, radius: float):
    """The loss of one image: ``emb`` [D, H, W] unit vectors, ``labels`` [H, W] (1..K, -1, 0; see
    :func:`select_instances`). Returns (instance term, background term) as 0-d tensors."""
    import torch
    import torch.nn.functional as F

    d = emb.shape[0]
    e = emb.reshape(d, -1)
    lab = labels.reshape(-1)
    fg = lab != 0
    bg = lab == 0
    zero = e.sum() * 0.0
    k = int(lab.max())
    inst = zero
    if k > 0:
        onehot = (lab[None] == torch.arange(1, k + 1, device=lab.device)[:, None]).to(e.dtype)  # [K, N]
        counts = onehot.sum(1)
        means = F.normalize(onehot @ e.T, dim=1)  # [K, D]
        cos = means @ e  # [K, N]
        intra = ((1 - cos) * onehot).sum(1) / counts
        h, w = labels.shape
        yy, xx = torch.meshgrid(torch.arange(h, device=e.device, dtype=e.dtype),
                                torch.arange(w, device=e.device, dtype=e.dtype), indexing="ij")
        coords = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1)  # [N, 2]
        com = (onehot @ coords) / counts[:, None]  # [K, 2]
        dist2 = ((coords[None] - com[:, None]) ** 2).sum(-1)  # [K, N]
        near = (dist2 <= radius * radius) & fg[None] & (onehot == 0)
        nf = near.to(e.dtype)
        inter = (cos * cos * nf).sum(1) / nf.sum(1).clamp(min=1)
        inst = (intra + inter).mean()
    back = zero
    if bg.any():
        m = F.normalize(e[:, bg].mean(1), dim=0)
        cos_b = m @ e
        back = (1 - cos_b[bg]).mean()
        if fg.any():
            back = back + (cos_b[fg] ** 2).mean()
    return inst, back


def make_loss(cfg: CosineEmbeddingConfig):
    radius = float(cfg.neighbour_factor) * cfg.input_size

    def loss_fn(model, batch):
        images, t = batch
        e1, e2 = model(images)
        labels = t["labels"]
        terms = {"stage1": 0.0, "stage2": 0.0}
        for name, emb in (("stage1", e1), ("stage2", e2)):
            parts = [cosine_loss(emb[b].float(), labels[b], radius) for b in range(emb.shape[0])]
            terms[name] = sum(i + g for i, g in parts) / len(parts)
        return {"total": terms["stage1"] + terms["stage2"], **terms}

    return loss_fn


# ---------------------------------------------------------------------------------------------------
# clustering


def embeddings_of(net, image: np.ndarray, cfg: CosineEmbeddingConfig, device: str) -> np.ndarray:
    """Stage-2 embeddings of one image at its own resolution: float32 [H, W, D], unit vectors."""
    import torch

    x = to_tensor(prepare_image(image, cfg.input_sigma))[None].to(device)
    x, (h, w) = pad_to_multiple(x, 2 ** (cfg.levels - 1))
    with torch.inference_mode():
        _, e2 = net(x)
        out = e2[0, :, :h, :w].float().cpu().numpy()
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def cluster_raw(emb: np.ndarray, background_cos2: float, min_cluster_size: int, min_samples: int,
                coord_weight: float, max_points: int = 20000, **_: Any) -> np.ndarray:
    """HDBSCAN cluster ids per pixel (0 = background or noise, 1.. = clusters), before the
    connected-component split and the size filter."""
    from sklearn.cluster import HDBSCAN

    h, w, d = emb.shape
    flat = emb.reshape(-1, d)
    b = np.median(flat, axis=0)
    b = b / max(float(np.linalg.norm(b)), 1e-12)
    keep = np.flatnonzero((flat @ b) ** 2 < background_cos2)
    out = np.zeros(h * w, np.int32)
    if keep.size < max(min_cluster_size, 2):
        return out.reshape(h, w)
    yy, xx = np.divmod(keep, w)
    feats = np.concatenate([flat[keep], coord_weight * np.stack([yy, xx], 1).astype(np.float32)], 1)
    sub = np.arange(keep.size)
    if keep.size > max_points:
        sub = np.linspace(0, keep.size - 1, max_points).round().astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = HDBSCAN(min_cluster_size=int(min_cluster_size), min_samples=int(min(min_samples, sub.size)),
                        copy=True)
        ids = model.fit_predict(feats[sub])
    if sub.size < keep.size:
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(feats[sub]).query(feats, k=1)
        ids = ids[nearest]
    out[keep] = ids + 1  # noise (-1) becomes 0
    return out.reshape(h, w)


def split_components(raw: np.ndarray, min_size: int, **_: Any) -> np.ndarray:
    """Each cluster split into 8-connected components; components under ``min_size`` px dropped."""
    from skimage.measure import label

    comps = label(raw, background=0, connectivity=2)
    return relabel(comps.astype(np.int32), min_size)


def cluster(emb: np.ndarray, background_cos2: float = 0.5, min_cluster_size: int = 50, min_samples: int = 50,
            coord_weight: float = 0.01, min_size: int = 50, max_points: int = 20000) -> np.ndarray:
    """Instance label map (int32) of an embedding image [H, W, D] (unit vectors)."""
    raw = cluster_raw(emb, background_cos2, min_cluster_size, min_samples, coord_weight, max_points)
    return split_components(raw, min_size)


def instances_from(labels: np.ndarray, emb: np.ndarray) -> list[Instance]:
    """Instances scored by cohesion: mean cos of the object's embeddings to their normalised mean."""
    n = int(labels.max())
    if n == 0:
        return []
    d = emb.shape[2]
    flat, lab = emb.reshape(-1, d), labels.ravel()
    sums = np.zeros((n + 1, d), np.float64)
    np.add.at(sums, lab, flat)
    means = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("nd,nd->n", flat, means[lab])
    counts = np.bincount(lab, minlength=n + 1)
    cohesion = np.bincount(lab, weights=cos, minlength=n + 1) / np.maximum(counts, 1)
    scores = np.clip(cohesion[1:], MIN_SCORE, 1.0)
    return [Instance(mask=labels == i, score=float(scores[i - 1])) for i in range(1, n + 1)]


# ---------------------------------------------------------------------------------------------------
# the method


@register
class CosineEmbedding(Method):
    """Stacked U-Net pixel embeddings trained with the cosine loss, clustered with HDBSCAN."""

    name = "cosine_embedding"
    Config = CosineEmbeddingConfig
    uses_gpu = True

    config_check = staticmethod(check_config)

    def train(self, train_set, val_set, cfg: CosineEmbeddingConfig, workdir: Path, device: str) -> dict:
        check_config(cfg, where=f"methods.{self.name}")
        spec = {"levels": cfg.levels, "filters": cfg.filters, "embedding_dim": cfg.embedding_dim}
        return train_dense(self.name, lambda: build_net(**spec), spec, train_set, val_set, cfg, workdir, device,
                           make_targets(cfg), make_loss(cfg), tune_post)

    def predict(self, state: dict, images: Iterable[np.ndarray], cfg: CosineEmbeddingConfig,
                device: str) -> Iterator[list[Instance]]:
        net = load_net(state, device)
        post = post_params(state, cfg)
        for image in images:
            emb = embeddings_of(net, image, cfg, device)
            yield instances_from(cluster(emb, **post, max_points=cfg.max_points), emb)


def post_params(state: dict | None, cfg) -> dict:
    """The clustering parameters: the tuned ones in ``state``, else the config's."""
    return tuned_params(state, cfg, POST)


def load_net(state: dict, device: str):
    if not isinstance(state, dict) or "model" not in state or "net" not in state:
        raise ConfigError("methods.cosine_embedding: the model file holds no cosine_embedding state; re-run training")
    net = build_net(**{k: int(v) for k, v in state["net"].items()})
    net.load_state_dict(state["model"])
    return net.to(device).eval()


def tune_post(net, val_set, cfg: CosineEmbeddingConfig, device: str) -> tuple[dict, dict]:
    """Grid-search the clustering on the val split; returns (chosen parameters, tuning record)."""
    defaults = {k: getattr(cfg, k) for k in POST}
    pairs = tune_images(val_set, cfg.max_tune_images) if cfg.tune_on == "val" else []
    if not pairs:
        return defaults, {"tuned_on": None, "n_images": 0, "chosen": defaults, "proxy_score": None}
    maps = [embeddings_of(net, image, cfg, device) for image, _ in pairs]
    combos = grid({"background_cos2": [float(v) for v in cfg.background_cos2s],
                   "min_cluster_size": [int(v) for v in cfg.min_cluster_sizes],
                   "min_samples": [int(v) for v in cfg.min_samples_values],
                   "coord_weight": [float(v) for v in cfg.coord_weights]})
    finals = grid({"min_size": [int(v) for v in cfg.min_sizes]})
    best, score, rows, seconds, widening = tune_widened(
        maps, [labels for _, labels in pairs], combos,
        segment=lambda emb, p: cluster_raw(emb, **p, max_points=cfg.max_points),
        finish_combos=finals, finish=lambda emb, raw, p: split_components(raw, **p),
        axes=widen_axes(cfg), max_widen=cfg.max_widen, what="cosine_embedding tuning")
    return dict(best), {"tuned_on": "val", "n_images": len(pairs), "chosen": dict(best), "proxy_score": score,
                        "seconds": round(seconds, 3), "widening": widening, "grid": rows}


def widen_axes(cfg: CosineEmbeddingConfig) -> list[Axis]:
    """The grid's axes and their allowed ranges, for growing one whose best lies on its edge."""
    return [Axis("background_cos2", tuple(float(v) for v in cfg.background_cos2s), lo=0.0, hi=1.0, gt_lo=True),
            Axis("min_cluster_size", tuple(int(v) for v in cfg.min_cluster_sizes), lo=2, integer=True),
            Axis("min_samples", tuple(int(v) for v in cfg.min_samples_values), lo=1, integer=True),
            Axis("coord_weight", tuple(float(v) for v in cfg.coord_weights), lo=0.0),
            Axis("min_size", tuple(int(v) for v in cfg.min_sizes), lo=0, integer=True)]


__all__ = ["CosineEmbedding", "CosineEmbeddingConfig", "check_config", "build_net", "cosine_loss",
           "select_instances", "cluster", "cluster_raw", "split_components", "instances_from", "embeddings_of",
           "tune_post", "post_params"]
