"""The ViT backbone (src/models/vit.py): shapes, MoCo v3's initialisation, the frozen patch
projection and fixed position embedding under an SGD step, argument errors. The comparison with
the PyTorch reference is tests/equivalence/test_vit_equivalence.py."""

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.models.vit import VITS, VisionTransformer, create_vit

SMALL = dict(image_size=16, patch_size=4, num_classes=10, embed_dim=48, depth=2, num_heads=3)


def images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return ms.Tensor(rng.standard_normal((n, 3, size, size)).astype(np.float32))


@pytest.mark.parametrize(
    "arch, size, tokens",
    [("vit_tiny", 32, 64), ("vit_small", 32, 64), ("vit_tiny", 96, 36), ("vit_small", 96, 36)],
)
def test_shapes(arch, size, tokens):
    """32 px: patch 4, an 8x8 grid; 96 px: patch 16, 6x6; one cls token in front (PyNative:
    graph mode is covered by the small ViT below, and compiling 12 blocks costs seconds)."""
    model = create_vit(arch, 7, image_size=size)
    dim = VITS[arch][0]
    assert model.feature_dim == dim and model.num_patches == tokens
    assert model.pos_embed.shape == (1, 1 + tokens, dim)
    x = images(2, size)
    assert model.patch_embed(x).shape == (2, tokens, dim)
    assert model.forward_features(x).shape == (2, dim)
    assert model(x).shape == (2, 7)


def test_vit_small_is_moco_v3s():
    assert VITS["vit_small"] == (384, 12, 12)  # embed_dim, depth, heads as moco-v3's vit_small
    model = create_vit("vit_small", 10)
    assert len(model.blocks) == 12 and model.blocks[0].attn.num_heads == 12


def test_initialisation():
    """VisionTransformerMoCo's: Q, K, V each xavier-uniform, other Dense xavier-uniform, the patch
    projection uniform with its fan, zero biases, cls token N(0, 1e-6), unit LayerNorms."""
    ms.set_seed(0)
    model = create_vit("vit_tiny", 10)
    d, p = 192, 4

    def spans(name, bound):  # U(-bound, bound): reaches (nearly) but never passes the bound
        w = np.abs(params[name])
        assert bound * 0.99 < w.max() <= bound, name

    params = {q.name: q.asnumpy() for q in model.get_parameters()}
    spans("blocks.0.attn.qkv.weight", math.sqrt(6 / (d + d)))
    spans("blocks.3.attn.proj.weight", math.sqrt(6 / (d + d)))
    spans("blocks.0.mlp.fc1.weight", math.sqrt(6 / (d + 4 * d)))
    spans("head.weight", math.sqrt(6 / (d + 10)))
    spans("patch_embed.proj.weight", math.sqrt(6 / (3 * p * p + d)))
    for name, value in params.items():
        if name.endswith(("bias", "beta")):
            np.testing.assert_array_equal(value, 0, err_msg=name)
        elif name.endswith("gamma"):
            np.testing.assert_array_equal(value, 1, err_msg=name)
    assert 0.5e-6 < params["cls_token"].std() < 1.5e-6


def sgd_step(model):
    """One SGD step (lr 0.1) on a cross-entropy of the head, over ``trainable_params()``."""
    loss = nn.WithLossCell(model, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
    step = nn.TrainOneStepCell(loss, nn.SGD(model.trainable_params(), learning_rate=0.1))
    step.set_train(True)
    step(images(4, 16, seed=1), ms.Tensor(np.array([0, 1, 2, 3], np.int32)))


@pytest.mark.parametrize("stop_grad_conv1", [True, False], ids=["frozen", "trained"])
def test_stop_grad_conv1_freezes_the_patch_projection_only(mode, stop_grad_conv1):
    ms.set_seed(0)
    model = VisionTransformer(**SMALL, stop_grad_conv1=stop_grad_conv1)
    trainable = {p.name for p in model.trainable_params()}
    patch = {"patch_embed.proj.weight", "patch_embed.proj.bias"}
    assert patch.isdisjoint(trainable) == stop_grad_conv1
    assert "pos_embed" not in trainable and "cls_token" in trainable
    before = {p.name: p.asnumpy().copy() for p in model.get_parameters()}
    sgd_step(model)
    after = {p.name: p.asnumpy() for p in model.get_parameters()}
    moved = {name for name in before if not np.array_equal(before[name], after[name])}
    np.testing.assert_array_equal(after["pos_embed"], before["pos_embed"])  # fixed
    assert ("patch_embed.proj.weight" in moved) != stop_grad_conv1
    assert {
        "cls_token",
        "blocks.0.attn.qkv.weight",
        "blocks.1.mlp.fc2.weight",
        "head.weight",
    } <= moved
    assert moved == trainable  # everything trainable moved; nothing else did


def test_default_patch_size():
    assert create_vit("vit_tiny", 10, image_size=48).num_patches == (48 // 4) ** 2  # below 64 px
    assert create_vit("vit_tiny", 10, image_size=64).num_patches == (64 // 16) ** 2
    assert create_vit("vit_tiny", 10, image_size=64, patch_size=8).num_patches == 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(arch="vit_huge"), "unknown arch 'vit_huge'"),
        (dict(image_size=30), "image size 30 is not divisible by patch size 4"),
        (dict(image_size=100), "image size 100 is not divisible by patch size 16"),
        (dict(image_size=32, patch_size=0), "not divisible by patch size 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_vit(**{"arch": "vit_tiny", "num_classes": 10, **kwargs})
