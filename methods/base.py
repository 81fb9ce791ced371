"""The method interface: what every method (the paper's, a baseline, yours) provides to the harness.

A method is one object with a ``name``, a typed ``Config`` (a dataclass whose defaults are the method's
hyper-parameters), ``train`` and ``predict``. The harness owns everything else: data loading, splits,
seeding, device choice, checkpoint files, timing, scoring and reports.

A learned method's ``train`` shares its steps through this module: :meth:`Method.training_pairs` (config check,
the train split in memory), a :class:`TrainSamples` subclass with the method's own ``encode``, and
:func:`fit_samples` (the seeded loader and the shared resumable trainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from objguided.config import make_config
from objguided.data.canonical import CanonicalDataset
from objguided.errors import ConfigError


@dataclass
class Instance:
    """One predicted object at the image's original resolution.

    ``soft_area`` (optional) is the sum of the object's soft mask values over its support, for the
    evaluator's ``soft_area`` IoU option.
    """

    mask: np.ndarray  # bool, HxW
    score: float
    soft_area: float | None = None


class Method:
    """Base class of a method. Subclass it, set ``name`` and ``Config``, and decorate with ``@register``."""

    name: ClassVar[str] = ""
    #: a dataclass whose fields are the method's hyper-parameters, with their defaults
    Config: ClassVar[type] = dataclass(type("EmptyConfig", (), {}))
    #: whether training and inference benefit from a GPU (the DAG then asks for ``gpu=1``)
    uses_gpu: ClassVar[bool] = False

    #: ``() -> None`` when the method can run in this environment, else a message saying what is missing and
    #: how to install it (a method over an optional package); the DAG then leaves it out and says so
    unavailable: ClassVar[Callable[[], str | None] | None] = None

    #: ``check(cfg, where)`` for the rules between fields that the declarations cannot say (``beta <= k``):
    #: raises ``ConfigError(f"{where}.{key}: ...")``; None when the declarations say it all
    config_check: ClassVar[Callable[[Any, str], None] | None] = None

    def make_config(self, overrides: dict[str, Any] | None = None, where: str | None = None,
                    key_where: dict[str, str] | None = None):
        """The method's config with ``overrides`` applied: an unknown key, a value its field's declaration
        refuses (:func:`objguided.config.make_config`) or one ``config_check`` rejects is a ConfigError naming
        the key under ``where`` (default ``methods.<name>.params``; ``key_where``: other paths for some keys)."""
        return make_config(self.Config, overrides or {}, where or f"methods.{self.name}.params",
                           check=self.config_check, key_where=key_where)

    def training_pairs(self, train_set: CanonicalDataset, cfg: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """The start of every learned method's ``train``: ``cfg`` checked (``config_check``), then the train
        split's (image, label map) pairs read into memory; an empty split is a ConfigError."""
        if self.config_check is not None:
            self.config_check(cfg, f"methods.{self.name}")
        return read_pairs(self.name, train_set)

    def train(self, train_set: CanonicalDataset, val_set: CanonicalDataset, cfg: Any, workdir: Path,
              device: str) -> Any:
        """Fit on ``train_set`` (tune on ``val_set``) and return the state to keep (anything torch.save takes).

        ``workdir`` is the run's folder: a method may keep resumable checkpoints there.
        """
        raise NotImplementedError

    def predict(self, state: Any, images: Iterable[np.ndarray], cfg: Any, device: str) -> Iterator[list[Instance]]:
        """Yield, for each image (uint8, HxW or HxWx3), its instances at the image's resolution."""
        raise NotImplementedError


def rgb3(image: np.ndarray) -> np.ndarray:
    """uint8 HxW or HxWxC -> HxWx3: gray repeated to three channels, extra channels dropped.

    >>> rgb3(np.zeros((2, 4), np.uint8)).shape, rgb3(np.zeros((2, 4, 4), np.uint8)).shape
    ((2, 4, 3), (2, 4, 3))
    """
    image = np.asarray(image)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def instances_from_labels(labels: np.ndarray, scores: Sequence[float] | None = None) -> list[Instance]:
    """Turn a label map into instances (score 1.0 each unless ``scores`` gives one per id, in id order)."""
    ids = [i for i in np.unique(labels) if i != 0]
    out = []
    for k, i in enumerate(ids):
        out.append(Instance(mask=labels == i, score=1.0 if scores is None else float(scores[k])))
    return out


# ---------------------------------------------------------------------------------------------------
# training: what every learned method shares


def read_pairs(method_name: str, train_set: CanonicalDataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every (image, label map) pair of ``train_set``, in memory; an empty split is a ConfigError."""
    pairs = [(s.image, s.labels) for s in train_set]
    if not pairs:
        raise ConfigError(f"methods.{method_name}: the train split of {train_set.root} is empty")
    return pairs


class TrainSamples:
    """A method's training samples over in-memory (image, label map) pairs, fetched the way the shared
    trainer's loader asks for them: ``samples[(index, sample_seed)]``
    (:func:`objguided.engine.trainer.make_loader`). Pair ``index`` goes through :meth:`encode` with a
    generator seeded by ``sample_seed`` alone, so a sample depends only on (run seed, epoch, index) and a
    resumed run sees the same batches. A method subclasses this and writes :meth:`encode`; it overrides
    :meth:`collate` and :meth:`loss` when its batches or its network differ from the defaults.
    """

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], cfg: Any):
        self.pairs, self.cfg = list(pairs), cfg

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        image, labels = self.pairs[index]
        return self.encode(image, labels, np.random.default_rng(seed))

    def encode(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[Any, Any]:
        """One sample: (the network's input tensor, its targets) of one pair, drawing only from ``rng``."""
        raise NotImplementedError

    @staticmethod
    def collate(batch: list[tuple[Any, Any]]) -> tuple[Any, list]:
        """Images stacked into one tensor [B, C, S, S]; targets kept as a list, one per image."""
        import torch

        return torch.stack([b[0] for b in batch]), [b[1] for b in batch]

    @staticmethod
    def loss(model, batch) -> Any:
        """The loss of a network that computes its own: ``model.loss(images, targets)``."""
        images, targets = batch
        return model.loss(images, targets)


def fit_samples(method_name: str, net, samples: TrainSamples, cfg: Any, tcfg, pairs: list, ids: Sequence[str],
                workdir: Path | None, device: str, schedule=None):
    """Train ``net`` on ``samples`` with the shared trainer; returns it in eval mode.

    The batches of an epoch come from :func:`~objguided.engine.trainer.make_loader` seeded by the run's
    seed (the torch seed the harness set before ``train``); a checkpoint in ``workdir`` (default: the
    current folder) is resumed only when :func:`~objguided.engine.trainer.resume_key` of the method's config
    and ``pairs`` (the images and labels as read, before any encoding) matches. ``schedule``: a context
    manager around the training with ``wrap(batches_for_epoch)``, for a learning-rate rule of its own
    (:class:`objguided_methods._keypoint_graph_net.EpochDecay`).
    """
    import torch

    from objguided.engine.trainer import fit, make_loader, resume_key

    seed = int(torch.initial_seed()) % 2**62

    def batches(epoch: int):
        return make_loader(samples, tcfg.batch_size, seed, epoch, shuffle=True, num_workers=tcfg.num_workers,
                           collate_fn=samples.collate)

    run_key = resume_key(method_name, cfg, pairs, ids, seed)
    workdir = Path(workdir) if workdir is not None else Path.cwd()
    if schedule is None:
        return fit(net, batches, samples.loss, tcfg, workdir, device, run_key=run_key)
    with schedule:
        return fit(net, schedule.wrap(batches), samples.loss, tcfg, workdir, device, run_key=run_key)


def cpu_state(net) -> dict:
    """A network's weights, detached and on the CPU: the ``model`` entry of every learned method's state."""
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def crop_or_letterbox(image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator, augment: bool,
                      **augment_options) -> tuple[np.ndarray, np.ndarray]:
    """The paper's training sample (uint8 [S, S(, 3)] image, bool [N, S, S] masks): its random square crop
    and flip (:func:`objguided.data.augment.augment`, given ``augment_options``), or with ``augment`` off the
    whole image letterboxed about its centre, nothing random."""
    from objguided.data.augment import augment as paper_augment
    from objguided.data.augment import instance_masks, warp_crop

    if augment:
        return paper_augment(image, labels, size, rng, **augment_options)
    h, w = image.shape[:2]
    return (warp_crop(image, max(h, w), w / 2, h / 2, size),
            instance_masks(warp_crop(labels, max(h, w), w / 2, h / 2, size, order=0)))
