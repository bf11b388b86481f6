"""One registry of backbones: the ResNets of resnet.py and the ViTs of vit.py, by name."""

from .resnet import ARCHS, create_backbone
from .vit import VITS, create_vit

BACKBONES = (*ARCHS, *VITS)


def create_encoder(
    arch, num_classes, bn_splits=1, mlp=False, stem="cifar", image_size=32, stop_grad_conv1=False
):
    """A ``BACKBONES`` network with a ``num_classes`` head. A ResNet takes ``bn_splits``, ``mlp``
    and ``stem``; a ViT ``image_size`` (patch 4 below 64 px, else 16) and ``stop_grad_conv1``."""
    if arch in VITS:
        return create_vit(arch, num_classes, image_size, stop_grad_conv1=stop_grad_conv1)
    return create_backbone(arch, num_classes, bn_splits, mlp, stem)
