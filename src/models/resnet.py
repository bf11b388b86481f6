"""ResNet-18 laid out like the PyTorch MoCo CIFAR demo's ``ModelBase``: the demo's CIFAR stem
for 32x32 images, or torchvision's ImageNet stem for larger ones (STL-10's 96x96)."""

import math
from functools import partial

from mindspore import nn, ops
from mindspore.common.initializer import HeNormal, HeUniform

from .split_bn import SplitBatchNorm


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        3,
        stride=stride,
        pad_mode="pad",
        padding=1,
        has_bias=False,
        weight_init=HeNormal(mode="fan_out", nonlinearity="relu"),
    )


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        1,
        stride=stride,
        has_bias=False,
        weight_init=HeNormal(mode="fan_out", nonlinearity="relu"),
    )


class BasicBlock(nn.Cell):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels, channels, stride, norm):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = norm(channels)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = norm(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.SequentialCell(
                conv1x1(in_channels, channels, stride), norm(channels)
            )

    def construct(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _make_layer(in_channels, channels, blocks, stride, norm):
    layers = [BasicBlock(in_channels, channels, stride, norm)]
    layers += [BasicBlock(channels, channels, 1, norm) for _ in range(1, blocks)]
    return nn.SequentialCell(layers)


class MaxPool3x3(nn.Cell):
    """PyTorch's ``MaxPool2d(3, stride=2, padding=1)``: -inf padding, then a valid max-pool
    (MindSpore's ``pad`` mode runs a 3-D pool with argmax and breaks MindIR's dynamic batch)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, pad_mode="valid")

    def construct(self, x):
        return self.pool(ops.pad(x, (1, 1, 1, 1), value=float("-inf")))


def _stem(kind: str) -> tuple[nn.Conv2d, nn.Cell]:
    """The stem's convolution (``net.0``) and what follows its BN (``net.2``, no parameters):
    ``"cifar"``, 3x3 stride 1 then ReLU; ``"imagenet"``, 7x7 stride 2 then ReLU and a 3x3
    stride-2 max-pool (a 96-pixel image reaches layer1 at 24x24, not 96x96)."""
    if kind == "imagenet":
        conv = nn.Conv2d(3, 64, 7, stride=2, pad_mode="pad", padding=3, has_bias=False,
                         weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))  # fmt: skip
        return conv, nn.SequentialCell([nn.ReLU(), MaxPool3x3()])
    # The demo swaps torchvision's 7x7 stem for a fresh nn.Conv2d: PyTorch's default init.
    conv = nn.Conv2d(3, 64, 3, stride=1, pad_mode="pad", padding=1, has_bias=False,
                     weight_init=HeUniform(negative_slope=math.sqrt(5)))  # fmt: skip
    return conv, nn.ReLU()


def _mlp_head(width: int, num_classes: int) -> nn.SequentialCell:
    return nn.SequentialCell([nn.Dense(width, width), nn.ReLU(), nn.Dense(width, num_classes)])


class ResNetCifar(nn.Cell):
    """ResNet for CIFAR: 3x3 stride-1 stem, no max-pool, global pool, fc to ``num_classes``.

    The layers sit in one ``net`` sequence in the order of the demo's
    ``ModelBase`` (conv1, bn1, relu, layer1-4, avgpool, flatten, fc), so
    parameter names map one to one onto its PyTorch ``state_dict`` keys
    (``net.0.weight``, ``net.3.0.conv1.weight``, ``net.9.bias``, ...).

    Args:
        layers: Number of BasicBlocks per stage.
        num_classes: Output dimension of the final fc (the MoCo feature dim).
        norm: Callable ``norm(num_channels) -> Cell``; injects e.g. SplitBatchNorm.
        mlp: MoCo v2's head, fc 512-512, ReLU, fc 512-``num_classes`` (``net.9.0``, ``net.9.2``).
        stem: ``"cifar"`` or ``"imagenet"`` (torchvision's 7x7 stride 2 and max-pool, with the
            max-pool inside ``net.2``: the parameter names stay the same).
    """

    def __init__(
        self, layers=(2, 2, 2, 2), num_classes=128, norm=SplitBatchNorm, mlp=False, stem="cifar"
    ):
        super().__init__()
        widths = (64, 128, 256, 512)
        conv, after_bn = _stem(stem)
        stages, in_channels = [], 64
        for i, (width, blocks) in enumerate(zip(widths, layers)):
            stages.append(_make_layer(in_channels, width, blocks, 1 if i == 0 else 2, norm))
            in_channels = width
        self.net = nn.SequentialCell(
            [
                conv,
                norm(64),
                after_bn,
                *stages,
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                _mlp_head(512, num_classes) if mlp else nn.Dense(512, num_classes),
            ]
        )
        self.feature_dim = 512

    def construct(self, x):
        return self.net(x)

    def forward_features(self, x):
        """Backbone features before the fc (512-d), for linear evaluation."""
        for i in range(len(self.net) - 1):
            x = self.net[i](x)
        return x


ARCHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STEMS = ("cifar", "imagenet")


def create_backbone(
    arch="resnet18", num_classes=128, bn_splits=1, mlp=False, stem="cifar"
) -> ResNetCifar:
    """Builds a ResNet whose BatchNorms are ``SplitBatchNorm(bn_splits)``; ``mlp``: with
    MoCo v2's MLP head; ``stem``: one of ``STEMS``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; available: {', '.join(STEMS)}")
    norm = partial(SplitBatchNorm, num_splits=bn_splits)
    return ResNetCifar(ARCHS[arch], num_classes, norm, mlp, stem)
