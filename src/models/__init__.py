from .moco import MoCo, create_moco, l2_normalize
from .resnet import ResNetCifar, create_backbone
from .split_bn import SplitBatchNorm
