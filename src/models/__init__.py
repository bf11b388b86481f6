from .moco import MoCo, create_moco
from .resnet import ARCHS, ResNetCifar, create_backbone
from .split_bn import SplitBatchNorm

__all__ = ["ARCHS", "MoCo", "ResNetCifar", "SplitBatchNorm", "create_backbone", "create_moco"]
