"""``stardist``: StarDist 2D (Schmidt et al., MICCAI 2018) as a method, a thin adapter over the package.

Everything that learns or segments is the ``stardist`` package's own code (on TensorFlow/Keras through
``csbdeep``): the network is ``stardist.models.StarDist2D`` built from a ``Config2D`` (U-net backbone,
``n_rays`` radial distances and an object probability per pixel of a ``grid``-subsampled map), trained by
``StarDist2D.train`` (random patches, its losses, its reduce-on-plateau schedule, the best weights by
validation loss kept), its two thresholds tuned by ``StarDist2D.optimize_thresholds`` and run by
``StarDist2D.predict_instances`` (polygon NMS, label rendering). This module only moves data in and out:

- **Input**: ``input: gray`` (one channel: the image, or the mean of its RGB channels) or ``rgb`` (three),
  normalised per image to its ``norm_percentiles`` (1 and 99.8: csbdeep's ``normalize``, StarDist's
  documented preprocessing). Train images smaller than ``patch_size`` are zero-padded (labels with 0).
- **Train**: the train split, validated on the val split (on the train split when val is empty); the
  ``augment`` option adds random flips, 90-degree rotations and an intensity gain (0.8-1.2) per patch
  (StarDist's own training examples use the same kind of augmenter function). The network starts from
  scratch (``pretrained: null``) or from a StarDist model (``pretrained``: a registered name such as
  ``2D_versatile_fluo``, which csbdeep reads from ``~/.keras/models/StarDist2D/<name>`` and otherwise
  downloads, or a model folder with ``config.json`` and weights); ``epochs: 0`` keeps it as it is. The
  prediction thresholds (``prob_thresh``, ``nms_thresh``) are tuned on the val images when
  ``tune_thresholds`` (StarDist's own optimiser), else StarDist's defaults (0.5, 0.4) or the config's.
- **State**: the Config2D as a dict, the Keras weights (numpy arrays), the thresholds, the start point
  (``init``) and the package versions. No file is needed to predict.
- **Score of an instance**: the object probability StarDist returns for that polygon
  (``details['prob']``: the probability at the polygon's centre pixel), floored at 1e-3.

TensorFlow is imported only inside the functions that need it; importing this module (the registry
imports every method) needs neither TensorFlow nor stardist. Keras 3 (TensorFlow >= 2.16) is what
csbdeep >= 0.8 supports by default; ``TF_USE_LEGACY_KERAS=1`` with ``tf-keras`` also works with csbdeep
but is not needed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Literal

import numpy as np

from objguided.config import Count, Fraction, Len, Name, PosFloat, PosInt, Range
from objguided.errors import ConfigError
from objguided_methods import register
from objguided_methods.base import Instance, Method

INSTALL_HINT = "install the peers extra: pip install -e .[peers]  (or pip install -r requirements-peers.txt)"
MIN_SCORE = 1e-3


@dataclass
class StarDistConfig:
    # -- start point --
    pretrained: Name | None = None  # null = from scratch; a registered name (2D_versatile_fluo, ...) or a folder
    # -- network (Config2D; ignored with `pretrained`, which brings its own) --
    n_rays: Annotated[int, Range(min=3)] = 32
    grid: PosInt = 2  # the probability/distance maps are subsampled by grid x grid (a power of 2)
    unet_n_depth: PosInt = 3
    unet_n_filter_base: PosInt = 32
    input: Literal["gray", "rgb"] = "gray"
    norm_percentiles: Annotated[list[Annotated[float, Range(min=0, max=100)]], Len(2, 2)] = field(
        default_factory=lambda: [1.0, 99.8])  # [low, high]
    # -- training (StarDist2D.train; Config2D's defaults) --
    epochs: Count = 400  # 0 = keep `pretrained` as is
    steps_per_epoch: PosInt = 100
    batch_size: PosInt = 4
    patch_size: PosInt = 256  # training patch side, px (a multiple of max(grid, 2**unet_n_depth))
    learning_rate: PosFloat = 3e-4
    augment: bool = True  # flips, 90-degree rotations, intensity gain
    # -- thresholds --
    tune_thresholds: bool = True  # StarDist2D.optimize_thresholds on the val images
    prob_thresh: Fraction | None = None  # null = tuned (or StarDist's 0.5); a number overrides
    nms_thresh: Fraction | None = None  # null = tuned (or StarDist's 0.4); a number overrides
    progress: bool = False  # Keras progress bars and StarDist's tuning bars


def check_config(cfg: StarDistConfig, where: str = "methods.stardist") -> None:
    """The rules between fields that the declarations cannot say; works without stardist or TensorFlow."""

    def fail(key: str, msg: str):
        raise ConfigError(f"{where}.{key}: {msg}")

    if cfg.epochs == 0 and cfg.pretrained is None:
        fail("epochs", "0 (no training) needs a pretrained model: set 'pretrained' (e.g. 2D_versatile_fluo) or "
             "epochs >= 1")
    if cfg.grid & (cfg.grid - 1):
        fail("grid", f"expected a power of 2, got {cfg.grid!r}")
    multiple = max(cfg.grid, 2 ** cfg.unet_n_depth)
    if cfg.patch_size < multiple or cfg.patch_size % multiple:
        fail("patch_size", f"expected a multiple of {multiple} (max(grid, 2**unet_n_depth)), got {cfg.patch_size!r}")
    low, high = cfg.norm_percentiles
    if low >= high:
        fail("norm_percentiles", f"expected [low, high] with low < high, got {cfg.norm_percentiles!r}")


# ---------------------------------------------------------------------------------------------------
# the packages (imported on use)


def _limit_tf_threads() -> None:
    """Give TensorFlow the thread count the harness gives torch (OMP_NUM_THREADS), if any, before it starts."""
    import tensorflow as tf

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        with contextlib.suppress(RuntimeError):  # already initialised: keep what it has
            tf.config.threading.set_intra_op_parallelism_threads(int(n))
            tf.config.threading.set_inter_op_parallelism_threads(int(n))


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken parent package
        return False


def stardist_unavailable() -> str | None:
    """Why StarDist cannot run here (a package missing), found without importing TensorFlow; else None."""
    missing = [name for name in ("tensorflow", "stardist", "csbdeep") if not _installed(name)]
    return f"{', '.join(missing)} not installed; {INSTALL_HINT}" if missing else None


def require_stardist():
    """Import stardist (and TensorFlow) or raise a ConfigError that says how to install them."""
    why = stardist_unavailable()
    if why:
        raise ConfigError(f"methods.stardist: {why}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow and triton (torch's kernel compiler, which torch.optim and torch._dynamo load lazily) each
    # bundle LLVM: loading triton's library after TensorFlow's crashes the process (segmentation fault,
    # tensorflow-cpu 2.21 + torch 2.14/triton 3.8). Loaded in the other order they coexist.
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401
    try:
        import stardist
        import tensorflow  # noqa: F401
        from stardist.models import StarDist2D  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"methods.stardist: cannot import stardist/TensorFlow ({exc}); {INSTALL_HINT}") from exc
    _limit_tf_threads()
    return stardist


def package_versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("stardist", "csbdeep", "tensorflow", "tensorflow-cpu", "keras", "tf-keras"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@contextlib.contextmanager
def _quiet(progress: bool):
    """Silence StarDist's prints and Keras' progress bars unless ``progress``."""
    if progress:
        yield
        return
    import keras

    logging_on = getattr(keras.utils, "is_interactive_logging_enabled", lambda: True)()
    with contextlib.suppress(AttributeError):
        keras.utils.disable_interactive_logging()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            # Keras' numpy conversion warns (numpy 2) once per predicted tile: not ours to fix
            warnings.filterwarnings("ignore", message=".*__array__ implementation doesn't accept a copy keyword")
            yield
    finally:
        if logging_on:
            with contextlib.suppress(AttributeError):
                keras.utils.enable_interactive_logging()


# ---------------------------------------------------------------------------------------------------
# data


def prepare_image(image: np.ndarray, kind: str, percentiles=(1.0, 99.8)) -> np.ndarray:
    """uint8 HxW or HxWxC -> float32 HxW (gray) or HxWx3 (rgb), normalised by its percentiles (csbdeep)."""
    from csbdeep.utils import normalize

    img = np.asarray(image).astype(np.float32)
    if kind == "gray":
        img = img[..., :3].mean(axis=2) if img.ndim == 3 else img
        axes = None
    else:
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        axes = (0, 1)
    return normalize(img, float(percentiles[0]), float(percentiles[1]), axis=axes).astype(np.float32)


def pad_to(img: np.ndarray, labels: np.ndarray | None, size: int):
    """Zero-pad (bottom/right) an image (and its labels) to at least ``size`` x ``size``."""
    ph, pw = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if not (ph or pw):
        return img, labels
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2)
    img = np.pad(img, pad)
    return img, None if labels is None else np.pad(labels, ((0, ph), (0, pw)))


def augmenter(x: np.ndarray, y: np.ndarray):
    """StarDist's augmenter hook: the same random flip / 90-degree rotation of patch and labels, gain 0.8-1.2."""
    rot = np.random.randint(4)
    x, y = np.rot90(x, rot, axes=(0, 1)), np.rot90(y, rot, axes=(0, 1))
    if np.random.rand() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    x = x * np.random.uniform(0.8, 1.2)
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y)


def arrays(dataset, cfg: StarDistConfig, pad: int = 0) -> tuple[list, list]:
    from stardist import fill_label_holes

    xs, ys = [], []
    for sample in dataset:
        x = prepare_image(sample.image, cfg.input, cfg.norm_percentiles)
        y = fill_label_holes(np.asarray(sample.labels, np.int32))
        if pad:
            x, y = pad_to(x, y, pad)
        xs.append(x)
        ys.append(y)
    return xs, ys


# ---------------------------------------------------------------------------------------------------
# model


def new_model(cfg: StarDistConfig, basedir: str | Path | None = None, name: str = "stardist"):
    """(StarDist2D, init record): from scratch (Config2D from the config), or the ``pretrained`` model."""
    require_stardist()
    from stardist.models import Config2D, StarDist2D

    if cfg.pretrained is None:
        conf = Config2D(n_rays=int(cfg.n_rays), grid=(int(cfg.grid),) * 2, n_channel_in=1 if cfg.input == "gray" else 3,
                        unet_n_depth=int(cfg.unet_n_depth), unet_n_filter_base=int(cfg.unet_n_filter_base),
                        train_patch_size=(int(cfg.patch_size),) * 2, train_batch_size=int(cfg.batch_size),
                        train_epochs=int(cfg.epochs), train_steps_per_epoch=int(cfg.steps_per_epoch),
                        train_learning_rate=float(cfg.learning_rate), train_tensorboard=False)
        with _quiet(cfg.progress):
            model = StarDist2D(conf, name=name if basedir is not None else None,
                               basedir=str(basedir) if basedir is not None else None)
        return model, {"init": "scratch"}
    ref = cfg.pretrained
    folder = Path(ref)
    try:
        with _quiet(cfg.progress):
            if (folder / "config.json").is_file():
                model = StarDist2D(None, name=folder.name, basedir=str(folder.parent))
            else:
                model = StarDist2D.from_pretrained(ref)
    except Exception as exc:  # unknown names, download failures, damaged folders
        raise ConfigError(f"methods.stardist.pretrained: cannot load StarDist model {ref!r} ({exc}). Registered "
                          "models are read from ~/.keras/models/StarDist2D/<name> and downloaded there on first use; "
                          "without network access, unpack the model there or give its folder") from exc
    if model is None:  # from_pretrained returns None for an unknown name (after printing the known ones)
        raise ConfigError(f"methods.stardist.pretrained: {ref!r} is neither a registered StarDist2D model "
                          "(e.g. 2D_versatile_fluo) nor a folder holding config.json")
    if model.config.n_channel_in != (1 if cfg.input == "gray" else 3):
        raise ConfigError(f"methods.stardist.input: the pretrained model {ref!r} takes {model.config.n_channel_in} "
                          f"channel(s); set input: {'gray' if model.config.n_channel_in == 1 else 'rgb'}")
    return model, {"init": ref, "init_dir": str(model.logdir) if getattr(model, "logdir", None) else None}


def fine_tuning_copy(pretrained, cfg: StarDistConfig, workdir: Path | None):
    """A copy of a pretrained model (its network, this config's schedule) that trains in ``workdir``, not in
    the folder it was read from; returns (model, patch size)."""
    from stardist.models import Config2D, StarDist2D

    config = {k: v for k, v in vars(pretrained.config).items() if k not in ("n_dim", "n_channel_out")}
    multiple = max(max(config["grid"]), 2 ** int(config.get("unet_n_depth", 3)))
    patch = max(multiple, int(cfg.patch_size) // multiple * multiple)
    config.update(train_patch_size=(patch, patch), train_batch_size=int(cfg.batch_size),
                  train_learning_rate=float(cfg.learning_rate), train_epochs=int(cfg.epochs),
                  train_steps_per_epoch=int(cfg.steps_per_epoch), train_tensorboard=False)
    with _quiet(cfg.progress):
        model = StarDist2D(Config2D(**config), name="stardist" if workdir is not None else None,
                           basedir=str(workdir) if workdir is not None else None)
    model.keras_model.set_weights(pretrained.keras_model.get_weights())
    model.thresholds = thresholds_of(pretrained)
    return model, patch


def make_state(model, init: dict, thresholds: dict, **extra) -> dict:
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(model.config).items()}
    return {"config": config, "weights": [np.asarray(w) for w in model.keras_model.get_weights()],
            "thresholds": {k: float(v) for k, v in thresholds.items()}, **init,
            "package": package_versions(), **extra}


def load_model(state: dict, progress: bool = False):
    """A StarDist2D with the state's config and weights (nothing read from disk)."""
    require_stardist()
    from stardist.models import Config2D, StarDist2D

    if not isinstance(state, dict) or "config" not in state or "weights" not in state:
        raise ConfigError("methods.stardist: the model file holds no stardist state; re-run training")
    config = dict(state["config"])
    for key in ("n_dim", "n_channel_out"):
        config.pop(key, None)
    with _quiet(progress):
        model = StarDist2D(Config2D(**config), name=None, basedir=None)
    model.keras_model.set_weights([np.asarray(w) for w in state["weights"]])
    return model


def thresholds_of(model) -> dict:
    t = model.thresholds
    return {"prob": float(t.prob), "nms": float(t.nms)}


def instances_from(labels: np.ndarray, prob: np.ndarray) -> list[Instance]:
    """One Instance per label; label k (1-based) is StarDist's polygon k-1, scored by its ``prob[k-1]``."""
    labels = np.asarray(labels)
    prob = np.asarray(prob, np.float64).ravel()
    present = np.flatnonzero(np.bincount(labels.ravel().astype(np.int64), minlength=len(prob) + 1)[1:]) + 1
    out = []
    for k in present:  # a polygon drawn over entirely by more probable ones is absent from the label map
        score = float(np.clip(np.nan_to_num(prob[k - 1]), MIN_SCORE, 1.0)) if k - 1 < len(prob) else MIN_SCORE
        out.append(Instance(mask=labels == k, score=score))
    return out


def predict_with(model, images: Iterable[np.ndarray], cfg: StarDistConfig,
                 thresholds: dict) -> Iterator[list[Instance]]:
    prob_t = float(cfg.prob_thresh) if cfg.prob_thresh is not None else thresholds["prob"]
    nms_t = float(cfg.nms_thresh) if cfg.nms_thresh is not None else thresholds["nms"]
    axes = "YX" if model.config.n_channel_in == 1 else "YXC"
    for image in images:
        image = np.asarray(image)
        x = prepare_image(image, "gray" if axes == "YX" else "rgb", cfg.norm_percentiles)
        with _quiet(cfg.progress):
            labels, details = model.predict_instances(x, axes=axes, prob_thresh=prob_t, nms_thresh=nms_t,
                                                      verbose=False)
        if labels.shape != image.shape[:2]:
            raise RuntimeError(f"stardist returned labels of shape {labels.shape} for an image of {image.shape[:2]}")
        yield instances_from(labels, details["prob"])


@register
class StarDist(Method):
    """StarDist2D trained with its own ``train``; thresholds tuned with its ``optimize_thresholds``."""

    name = "stardist"
    Config = StarDistConfig
    #: TensorFlow places the work itself (the pinned tensorflow-cpu build: on the CPU), not on the harness' device
    uses_gpu = False
    unavailable = staticmethod(stardist_unavailable)

    config_check = staticmethod(check_config)

    def train(self, train_set, val_set, cfg: StarDistConfig, workdir: Path, device: str) -> dict:
        check_config(cfg, where=f"methods.{self.name}")
        require_stardist()
        import keras

        # the harness seeded numpy's global generator: derive TensorFlow's seed from it (reproducible runs)
        seed = int(np.random.randint(0, 2**31 - 1))
        keras.utils.set_random_seed(seed)
        if workdir is not None:  # a previous run's thresholds in the same folder would be picked up by StarDist
            (Path(workdir) / "stardist" / "thresholds.json").unlink(missing_ok=True)
        model, init = new_model(cfg, basedir=workdir)
        pad = int(model.config.train_patch_size[0])
        if cfg.pretrained is not None and cfg.epochs > 0:
            model, pad = fine_tuning_copy(model, cfg, workdir)
        val = val_set if val_set is not None and len(val_set) else train_set
        xv, yv = arrays(val, cfg, pad)
        started = time.perf_counter()
        if cfg.epochs > 0:
            xt, yt = arrays(train_set, cfg, pad)
            with _quiet(cfg.progress):
                model.train(xt, yt, validation_data=(xv, yv), augmenter=augmenter if cfg.augment else None,
                            seed=seed, epochs=int(cfg.epochs), steps_per_epoch=int(cfg.steps_per_epoch))
        seconds = time.perf_counter() - started
        tuning = {"tuned_on": None}
        if cfg.tune_thresholds:
            with _quiet(cfg.progress):
                model.optimize_thresholds(xv, yv, save_to_json=False)
            tuning = {"tuned_on": "val" if val is val_set else "train", "n_images": len(xv)}
        return make_state(model, init, thresholds_of(model), epochs=int(cfg.epochs), seed=seed,
                          train_seconds=round(seconds, 3), tuning=tuning)

    def predict(self, state: dict, images: Iterable[np.ndarray], cfg: StarDistConfig,
                device: str) -> Iterator[list[Instance]]:
        model = load_model(state, cfg.progress)
        yield from predict_with(model, images, cfg, state.get("thresholds") or {"prob": 0.5, "nms": 0.4})


__all__ = ["StarDist", "StarDistConfig", "check_config", "require_stardist", "new_model", "make_state", "load_model",
           "instances_from", "predict_with", "prepare_image", "augmenter", "INSTALL_HINT"]
