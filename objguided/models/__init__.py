"""The paper's network (Yi et al., TMI 2021): config, targets, network, losses, pre- and post-processing.

See ``objguided/models/README.md`` for the architecture as implemented and the deviations.
"""

from objguided.models.backbone import resnet_features
from objguided.models.config import ModelConfig
from objguided.models.network import ObjGuidedNet, decode_heads
from objguided.models.postprocess import PostConfig, splat, to_instances
from objguided.models.preprocess import Frame, prepare
from objguided.models.targets import build_targets

__all__ = ["ModelConfig", "ObjGuidedNet", "decode_heads", "resnet_features", "build_targets", "Frame", "prepare",
           "PostConfig", "splat", "to_instances"]
