"""objguided: a reproducibility harness for object-guided instance segmentation of biological images."""

__version__ = "0.1.0"
