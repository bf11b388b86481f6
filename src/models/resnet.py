"""ResNet-18/34 laid out like the PyTorch MoCo CIFAR demo's ``ModelBase``: the demo's CIFAR stem
for 32x32 images, or torchvision's ImageNet stem for larger ones (STL-10's 96x96)."""

import math
from functools import partial

from mindspore import nn, ops
from mindspore.common.initializer import HeNormal, HeUniform

from .split_bn import SplitBatchNorm


def _conv(in_channels, out_channels, kernel, stride, **kwargs) -> nn.Conv2d:
    """Bias-free convolution, He-normal (fan_out) initialised as torchvision's ResNet."""
    kwargs.setdefault("weight_init", HeNormal(mode="fan_out", nonlinearity="relu"))
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, has_bias=False, **kwargs)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return _conv(in_channels, out_channels, 3, stride, pad_mode="pad", padding=1)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return _conv(in_channels, out_channels, 1, stride)


class BasicBlock(nn.Cell):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels, channels, stride, norm):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_channels, channels, stride), norm(channels)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = conv3x3(channels, channels), norm(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.SequentialCell(
                conv1x1(in_channels, channels, stride), norm(channels)
            )

    def construct(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class MaxPool3x3(nn.Cell):
    """PyTorch's ``MaxPool2d(3, stride=2, padding=1)``: -inf padding, then a valid max-pool
    (MindSpore's ``pad`` mode runs a 3-D pool with argmax and breaks MindIR's dynamic batch)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, pad_mode="valid")

    def construct(self, x):
        return self.pool(ops.pad(x, (1, 1, 1, 1), value=float("-inf")))


class ResNetCifar(nn.Cell):
    """ResNet in one ``net`` sequence ordered as the demo's ``ModelBase`` (conv1, bn1, relu,
    layer1-4, avgpool, flatten, fc): parameter names map one to one onto its PyTorch keys
    (``net.0.weight``, ``net.3.0.conv1.weight``, ``net.9.bias``). ``norm(channels)`` builds each BN;
    ``mlp``: MoCo v2's head (``net.9.0``, ``net.9.2``); ``stem``: ``"cifar"`` (3x3 stride 1) or
    ``"imagenet"`` (7x7 stride 2, its max-pool inside ``net.2``: the same parameter names)."""

    def __init__(
        self, layers=(2, 2, 2, 2), num_classes=128, norm=SplitBatchNorm, mlp=False, stem="cifar"
    ):
        super().__init__()
        if stem == "imagenet":  # a 96-pixel image reaches layer1 at 24x24, not 96x96
            conv = _conv(3, 64, 7, 2, pad_mode="pad", padding=3)
            after_bn = nn.SequentialCell([nn.ReLU(), MaxPool3x3()])
        else:  # the demo's fresh nn.Conv2d in place of torchvision's stem: PyTorch's default init
            torch_default = HeUniform(negative_slope=math.sqrt(5))
            conv = _conv(3, 64, 3, 1, pad_mode="pad", padding=1, weight_init=torch_default)
            after_bn = nn.ReLU()
        stages, in_channels = [], 64
        for width, blocks, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
            stage = [BasicBlock(in_channels, width, stride, norm)]
            stage += [BasicBlock(width, width, 1, norm) for _ in range(1, blocks)]
            stages.append(nn.SequentialCell(stage))
            in_channels = width
        bn1, pool = norm(64), [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if mlp:
            fc = nn.SequentialCell([nn.Dense(512, 512), nn.ReLU(), nn.Dense(512, num_classes)])
        else:
            fc = nn.Dense(512, num_classes)
        self.net = nn.SequentialCell([conv, bn1, after_bn, *stages, *pool, fc])
        self.feature_dim = 512

    def construct(self, x):
        return self.net(x)

    def forward_features(self, x):
        """Backbone features before the fc (512-d), for linear evaluation."""
        for i in range(len(self.net) - 1):
            x = self.net[i](x)
        return x

    def embed(self, features):
        """The fc (or MoCo v3's projector) on ``forward_features``' output."""
        return self.net[-1](features)


ARCHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STEMS = ("cifar", "imagenet")


def create_backbone(
    arch="resnet18", num_classes=128, bn_splits=1, mlp=False, stem="cifar"
) -> ResNetCifar:
    """A ResNet whose BatchNorms are ``SplitBatchNorm(bn_splits)``, with MoCo v2's MLP head if
    ``mlp``; ``stem``: one of ``STEMS``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; available: {', '.join(STEMS)}")
    norm = partial(SplitBatchNorm, num_splits=bn_splits)
    return ResNetCifar(ARCHS[arch], num_classes, norm, mlp, stem)
