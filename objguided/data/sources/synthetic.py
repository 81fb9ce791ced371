"""The embedded synthetic datasets (objguided.data.synthetic) as a dataset source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from tqdm import tqdm

from objguided.config import Count, PosInt, Range
from objguided.data import synthetic
from objguided.data.canonical import write_sample
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError


@dataclass
class SyntheticOptions:
    generator: str = "nuclei"  # nuclei | plant | neural
    n_images: PosInt = 30
    image_size: Annotated[int, Range(min=32, max=8192)] = 128  # px, square
    seed: Count = 0
    params: dict = field(default_factory=dict)  # generator parameters: see objguided.data.synthetic

    def __post_init__(self):
        if self.generator not in synthetic.GENERATORS:
            raise ConfigError(f"options.generator: '{self.generator}' is not one of "
                              f"{', '.join(synthetic.GENERATORS)}")


def convert_synthetic(options: SyntheticOptions, raw_dir: Path | None, out: Path) -> dict:
    images = synthetic.generate(options.generator, options.n_images, options.image_size, options.seed,
                                **options.params)
    ids, objects = [], 0
    for image_id, image, labels in tqdm(images, total=options.n_images, desc=f"synthesize {options.generator}",
                                        unit="img", mininterval=5):
        write_sample(out, image_id, image, labels)
        ids.append(image_id)
        objects += int(labels.max())
    return {"source": "synthetic", "generator": options.generator, "images": len(ids), "objects": objects,
            "ids": ids}


register_source(Source("synthetic", SyntheticOptions, convert_synthetic,
                       description="embedded generators: nuclei (DSB2018-like), plant (CVPPP-like), neural"))
