"""``cellpose``: Cellpose 3 (Stringer et al., Nature Methods 2021) as a method, a thin adapter over the package.

Everything that learns or segments is the ``cellpose`` package's own code (3.x, see
methods/README_cellpose.md for why not 4.x): the network is ``cellpose.models.CellposeModel``'s U-net
(``CPnet``, 2 input channels, 32-64-128-256 features), trained by ``cellpose.train.train_seg`` (flows +
cell-probability loss, its random rotate/resize augmentation, its learning-rate warm-up and decay) and run
by ``CellposeModel.eval`` (flow dynamics, flow-error check, small-mask removal). This module only moves
data in and out:

- **Train**: the train split's images and label maps go to ``train_seg`` as arrays (``channels`` tells
  cellpose how to read them: ``[0, 0]`` = gray, the mean of RGB). The network starts from scratch
  (``pretrained: null``) or from a cellpose model (``pretrained``: a built-in name such as ``cyto3`` or
  ``nuclei``, which cellpose loads from ``~/.cellpose/models`` or ``$CELLPOSE_LOCAL_MODELS_PATH`` and
  otherwise downloads, or a path to a model file); ``epochs: 0`` keeps a pretrained model as it is.
  The val split is not used (cellpose has no tuning step; its thresholds are the config's).
- **State**: the network's weights, its ``diam_mean`` and the train set's mean object diameter
  (``diam_labels``, computed by cellpose), the start point (``init``: ``scratch``, the built-in name or
  the path, with the file's SHA-256) and the package version.
- **Predict**: ``CellposeModel.eval`` per image at diameter ``diameter`` (default: the train set's mean,
  as cellpose does for a model it trained), masks at the image's resolution.
- **Score of an instance**: the mean, over the instance's pixels, of ``sigmoid(cellprob)``, cellpose's
  cell-probability output (``flows[2]``, a logit map at the image's resolution), floored at 1e-3.

Importing this module does not import cellpose (the registry imports every method); ``train`` and
``predict`` do, and say how to install it when it is missing.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Iterable, Iterator

import numpy as np
from scipy import ndimage as ndi

from objguided.config import Count, Len, Name, NonNegFloat, PosFloat, PosInt, Range
from objguided.errors import ConfigError
from objguided_methods import register
from objguided_methods.base import Instance, Method

INSTALL_HINT = "install the peers extra: pip install -e .[peers]  (or pip install -r requirements-peers.txt)"
MIN_SCORE = 1e-3


@dataclass
class CellposeConfig:
    # -- start point --
    pretrained: Name | None = None  # null = from scratch; a cellpose built-in name (cyto3, nuclei, ...) or a file
    # -- training (cellpose.train.train_seg's arguments; its defaults) --
    epochs: Count = 500  # train_seg n_epochs (one epoch = every train image once); 0 = keep `pretrained` as is
    batch_size: PosInt = 8
    learning_rate: PosFloat = 0.005
    weight_decay: NonNegFloat = 1e-5
    sgd: bool = False  # False: AdamW (train_seg's default); True: SGD with momentum 0.9
    diam_mean: PosFloat = 30.0  # px: objects resized to this diameter (from scratch; a pretrained model has its own)
    rescale: bool = True  # resize training crops so objects have diam_mean (train_seg's rescale)
    bsize: Annotated[int, Range(min=32, multiple_of=8)] = 224  # training crop side, px (the U-net pools 3 times)
    min_train_masks: Count = 5  # train images with fewer objects are left out (train_seg's rule)
    # cellpose channels [segment, nucleus]: [0, 0] gray; [2, 3] green+blue...
    channels: Annotated[list[Annotated[int, Range(min=0, max=3)]], Len(2, 2)] = field(default_factory=lambda: [0, 0])
    # -- prediction (CellposeModel.eval's arguments) --
    diameter: PosFloat | None = None  # px; null = the train set's mean object diameter
    flow_threshold: NonNegFloat = 0.4  # masks whose flow error exceeds it are dropped; 0 = no check
    cellprob_threshold: float = 0.0  # logit threshold of the cell probability
    min_size: Count = 15  # masks of fewer pixels are dropped
    niter: PosInt | None = None  # flow-dynamics steps; null = cellpose's (200 / rescale)


def check_config(cfg: CellposeConfig, where: str = "methods.cellpose") -> None:
    """What the declarations cannot say; works without cellpose installed."""
    if cfg.epochs == 0 and cfg.pretrained is None:
        raise ConfigError(f"{where}.epochs: 0 (no training) needs a pretrained model: set 'pretrained' (e.g. cyto3) "
                          "or epochs >= 1")


def require_cellpose():
    """Import cellpose (3.x) or raise a ConfigError that says how to install it."""
    why = cellpose_unavailable()
    if why:
        raise ConfigError(f"methods.cellpose: {why}")
    try:
        import cellpose
        from cellpose import models, train  # noqa: F401
    except ImportError as exc:  # installed but broken (a missing compiled dependency)
        raise ConfigError(f"methods.cellpose: cannot import cellpose ({exc}); {INSTALL_HINT}") from exc
    return cellpose


def cellpose_unavailable() -> str | None:
    """Why cellpose cannot run here (not installed, or not 3.x), found without importing it; else None."""
    import importlib.util

    if importlib.util.find_spec("cellpose") is None:
        return f"the 'cellpose' package is not installed; {INSTALL_HINT}"
    version = package_version()
    if version and not version.startswith("3."):
        return f"found cellpose {version}; this adapter needs cellpose 3.x (methods/README_cellpose.md); {INSTALL_HINT}"
    return None


def package_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("cellpose")
    except metadata.PackageNotFoundError:
        return None


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torch_device(device: str):
    import torch

    return torch.device(device or "cpu")


def new_model(cfg: CellposeConfig, device: str):
    """(CellposeModel, init record): from scratch, or the ``pretrained`` built-in model or file."""
    require_cellpose()
    from cellpose import models

    dev = _torch_device(device)
    if cfg.pretrained is None:
        model = models.CellposeModel(device=dev, pretrained_model=False, diam_mean=float(cfg.diam_mean), nchan=2)
        return model, {"init": "scratch"}
    name = cfg.pretrained
    builtin = name in models.MODEL_NAMES
    if not builtin and not Path(name).is_file():
        # cellpose itself would fall back to its default model (cyto3) here, silently: refuse instead
        raise ConfigError(f"methods.cellpose.pretrained: {name!r} is neither a cellpose built-in model "
                          f"({', '.join(models.MODEL_NAMES)}) nor an existing file")
    try:
        model = models.CellposeModel(device=dev, model_type=name if builtin else None,
                                     pretrained_model=False if builtin else name, nchan=2)
    except Exception as exc:  # download failures, damaged files
        raise ConfigError(f"methods.cellpose.pretrained: cannot load cellpose model {name!r} ({exc}). Built-in "
                          f"models are read from {models.MODEL_DIR} (or $CELLPOSE_LOCAL_MODELS_PATH) and downloaded "
                          "there on first use; without network access, copy the file there or give its path") from exc
    path = model.pretrained_model
    return model, {"init": name, "init_file": str(path), "init_sha256": _sha256(path) if Path(path).is_file() else None}


def make_state(model, init: dict, **extra) -> dict:
    """The state to keep: CPU weights plus what is needed to rebuild and run the network."""
    net_state = {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}
    return {"net": net_state, "nchan": int(model.nchan), "diam_mean": float(model.diam_mean),
            "diam_labels": float(model.diam_labels), **init, "package": {"cellpose": package_version()}, **extra}


def load_model(state: dict, device: str):
    """A CellposeModel with the state's weights (no file is read or downloaded)."""
    require_cellpose()
    from cellpose import models

    if not isinstance(state, dict) or "net" not in state or "diam_labels" not in state:
        raise ConfigError("methods.cellpose: the model file holds no cellpose state; re-run training")
    model = models.CellposeModel(device=_torch_device(device), pretrained_model=False,
                                 diam_mean=float(state["diam_mean"]), nchan=int(state.get("nchan", 2)))
    model.net.load_state_dict(state["net"])
    model.net.eval()
    model.diam_labels = float(state["diam_labels"])
    return model


def instances_from(masks: np.ndarray, cellprob: np.ndarray) -> list[Instance]:
    """One Instance per mask label; score = mean over the mask of sigmoid(cellprob), floored at 1e-3."""
    masks = np.asarray(masks)
    n = int(masks.max()) if masks.size else 0
    if n == 0:
        return []
    ids = np.flatnonzero(np.bincount(masks.ravel().astype(np.int64), minlength=n + 1)[1:]) + 1
    prob = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(cellprob, np.float64), -60, 60)))
    scores = np.asarray(ndi.mean(prob, masks, ids), np.float64)
    scores = np.clip(np.nan_to_num(scores), MIN_SCORE, 1.0)
    return [Instance(mask=masks == i, score=float(s)) for i, s in zip(ids, scores)]


def predict_with(model, images: Iterable[np.ndarray], cfg: CellposeConfig,
                 diam_labels: float) -> Iterator[list[Instance]]:
    diameter = float(cfg.diameter) if cfg.diameter is not None else float(diam_labels)
    for image in images:
        image = np.asarray(image)
        masks, flows, _ = model.eval(image, channels=list(cfg.channels), diameter=diameter,
                                     flow_threshold=float(cfg.flow_threshold),
                                     cellprob_threshold=float(cfg.cellprob_threshold), min_size=int(cfg.min_size),
                                     niter=cfg.niter)
        masks = np.asarray(masks)
        if masks.shape != image.shape[:2]:
            raise RuntimeError(f"cellpose returned masks of shape {masks.shape} for an image of {image.shape[:2]}")
        yield instances_from(masks, flows[2])


@register
class Cellpose(Method):
    """Cellpose 3's U-net trained with its own ``train_seg``; masks from its flow dynamics."""

    name = "cellpose"
    Config = CellposeConfig
    uses_gpu = True
    unavailable = staticmethod(cellpose_unavailable)

    config_check = staticmethod(check_config)

    def train(self, train_set, val_set, cfg: CellposeConfig, workdir: Path, device: str) -> dict:
        check_config(cfg, where=f"methods.{self.name}")
        model, init = new_model(cfg, device)
        if cfg.epochs == 0:
            return make_state(model, init, epochs=0, n_train_images=0, train_seconds=0.0)
        from cellpose import train as cp_train
        from cellpose import utils as cp_utils

        images, labels = [], []
        for sample in train_set:
            images.append(np.asarray(sample.image))
            labels.append(np.asarray(sample.labels, np.int32))
        counts = [len(cp_utils.diameters(lab)[1]) for lab in labels]
        if not any(c >= cfg.min_train_masks for c in counts):
            raise ConfigError(f"methods.cellpose.min_train_masks: no train image has >= {cfg.min_train_masks} "
                              f"objects (most: {max(counts, default=0)}); lower it")
        # cellpose 3.0's CPU path converts the network to MKLDNN tensors, which torch cannot train: train dense
        model.net.mkldnn = False
        save = Path(workdir) / "cellpose" if workdir is not None else Path(tempfile.mkdtemp(prefix="cellpose-"))
        save.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        cp_train.train_seg(model.net, train_data=images, train_labels=labels, channels=list(cfg.channels),
                           n_epochs=int(cfg.epochs), batch_size=int(cfg.batch_size),
                           learning_rate=float(cfg.learning_rate), weight_decay=float(cfg.weight_decay),
                           SGD=bool(cfg.sgd), rescale=bool(cfg.rescale), bsize=int(cfg.bsize),
                           min_train_masks=int(cfg.min_train_masks), save_path=str(save), model_name="cellpose_model",
                           save_every=max(int(cfg.epochs), 1))
        seconds = time.perf_counter() - started
        model.diam_labels = float(model.net.diam_labels.item())  # train_seg's mean train diameter
        return make_state(model, init, epochs=int(cfg.epochs), train_seconds=round(seconds, 3),
                          n_train_images=sum(c >= cfg.min_train_masks for c in counts))

    def predict(self, state: dict, images: Iterable[np.ndarray], cfg: CellposeConfig,
                device: str) -> Iterator[list[Instance]]:
        model = load_model(state, device)
        yield from predict_with(model, images, cfg, state["diam_labels"])


__all__ = ["Cellpose", "CellposeConfig", "check_config", "require_cellpose", "new_model", "make_state", "load_model",
           "instances_from", "predict_with", "INSTALL_HINT"]
