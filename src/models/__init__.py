from .moco import MoCo
from .moco_v3 import MoCoV3, with_projector
from .registry import BACKBONES, create_encoder
from .resnet import ARCHS, STEMS, ResNetCifar, create_backbone
from .split_bn import SplitBatchNorm
from .vit import VITS, VisionTransformer, create_vit

__all__ = [
    "ARCHS",
    "BACKBONES",
    "STEMS",
    "VITS",
    "MoCo",
    "MoCoV3",
    "ResNetCifar",
    "SplitBatchNorm",
    "VisionTransformer",
    "create_backbone",
    "create_encoder",
    "create_vit",
    "with_projector",
]
