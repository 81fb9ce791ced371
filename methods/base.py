"""The method interface: what every method (the paper's, a baseline, yours) provides to the harness.

A method is one object with a ``name``, a typed ``Config`` (a dataclass whose defaults are the method's
hyper-parameters), ``train`` and ``predict``. The harness owns everything else: data loading, splits,
seeding, device choice, checkpoint files, timing, scoring and reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from objguided.config import make_config
from objguided.data.canonical import CanonicalDataset


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


def as_float_image(image: np.ndarray) -> np.ndarray:
    """uint8 HxW or HxWx3 -> float32 HxWx3 in [0, 1] (gray repeated), the input most networks expect."""
    return rgb3(image).astype(np.float32) / 255.0


def instances_from_labels(labels: np.ndarray, scores: Sequence[float] | None = None) -> list[Instance]:
    """Turn a label map into instances (score 1.0 each unless ``scores`` gives one per id, in id order)."""
    ids = [i for i in np.unique(labels) if i != 0]
    out = []
    for k, i in enumerate(ids):
        out.append(Instance(mask=labels == i, score=1.0 if scores is None else float(scores[k])))
    return out
