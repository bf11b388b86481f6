from .moco import MoCo
from .resnet import ARCHS, STEMS, ResNetCifar, create_backbone
from .split_bn import SplitBatchNorm

__all__ = ["ARCHS", "STEMS", "MoCo", "ResNetCifar", "SplitBatchNorm", "create_backbone"]
