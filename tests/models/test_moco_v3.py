"""The MoCo v3 cell and LARS, one mechanism per test: names, momentum encoder, loss, optimizer."""

from functools import partial

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.models.moco_v3 import MoCoV3
from src.models.resnet import create_backbone
from src.train.optimizer import LARS, create_v3_optimizer

DIM, MLP_DIM = 16, 32


def images(seed, n=8):
    rng = np.random.default_rng(seed)
    return ms.Tensor(rng.standard_normal((n, 3, 16, 16)).astype(np.float32))


@pytest.fixture
def model():
    ms.set_seed(0)
    model = MoCoV3(partial(create_backbone, "resnet18", bn_splits=1), DIM, MLP_DIM, T=0.2)
    model.set_train(True)
    return model


class TinyViT(nn.Cell):
    """What MoCoV3 needs of a ViT: ``feature_dim`` and a ``head`` Dense."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.feature_dim = 12
        self.embed = nn.Dense(3 * 16 * 16, 12)
        self.head = nn.Dense(12, num_classes)

    def construct(self, x):
        return self.head(self.embed(x.reshape(x.shape[0], -1)))


def test_parameter_names(model):
    names = [p.name for p in model.get_parameters()]
    assert len(names) == len(set(names))
    for encoder in ("base_encoder", "momentum_encoder"):
        projector = {n for n in names if n.startswith(f"{encoder}.net.9.")}
        assert projector == {
            f"{encoder}.net.9.{suffix}"
            for suffix in (
                "0.weight",  # Dense 512 -> mlp_dim, no bias
                *(f"1.{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")),
                "3.weight",  # Dense mlp_dim -> dim
                *(f"4.{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")),
            )
        }
    assert model.kind == "resnet"
    assert "base_encoder.net.0.weight" in names and "base_encoder.net.9.weight" not in names
    predictor = {n for n in names if n.startswith("predictor.")}  # no last BN for a ResNet
    assert predictor == {
        "predictor.0.weight",
        *(f"predictor.1.{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")),
        "predictor.3.weight",
    }
    trainable = {p.name for p in model.trainable_params()}
    assert "base_encoder.net.9.4.gamma" not in trainable  # the last BN has no affine
    assert trainable == {
        n for n in names if n.startswith(("base_encoder.", "predictor.")) and "moving" not in n
    } - {"base_encoder.net.9.4.gamma", "base_encoder.net.9.4.beta"}


def test_vit_kind_names_and_forward():
    model = MoCoV3(TinyViT, DIM, MLP_DIM, T=0.2)
    assert model.kind == "vit"
    names = {p.name for p in model.get_parameters() if p.name.endswith("weight")}
    head = {n for n in names if n.startswith("base_encoder.head.")}  # three Dense layers
    assert head == {f"base_encoder.head.{i}.weight" for i in (0, 3, 6)}
    assert "momentum_encoder.head.6.weight" in names
    assert "predictor.4.moving_mean" in {p.name for p in model.get_parameters()}  # last BN
    model.set_train(True)
    loss = model(images(0), images(1), ms.Tensor(0.99, ms.float32))
    assert np.isfinite(loss.asnumpy())
    with pytest.raises(ValueError, match="unknown kind"):
        MoCoV3(TinyViT, DIM, MLP_DIM, kind="convnext")


def test_momentum_encoder_starts_as_copy_and_gradient_leaves_it(model):
    base = dict(model.base_encoder.parameters_and_names())
    for name, param_m in model.momentum_encoder.parameters_and_names():
        assert not param_m.requires_grad
        if base[name].requires_grad:
            np.testing.assert_array_equal(param_m.asnumpy(), base[name].asnumpy())
    optimizer = create_v3_optimizer("lars", model.trainable_params(), 0.5, 0.1)
    assert not [p for p in optimizer.parameters if p.name.startswith("momentum_encoder.")]
    before_m = [p.asnumpy().copy() for p in model.params_m]
    before_b = [p.asnumpy().copy() for p in model.params_b]
    grad_fn = ms.value_and_grad(model, None, optimizer.parameters)
    _, grads = grad_fn(images(0), images(1), ms.Tensor(1.0, ms.float32))  # m = 1: no update
    optimizer(grads)
    for old, param_m in zip(before_m, model.params_m):
        np.testing.assert_array_equal(param_m.asnumpy(), old)
    assert any(not np.array_equal(p.asnumpy(), old) for old, p in zip(before_b, model.params_b))


def test_momentum_update(model):
    for i, param_b in enumerate(model.params_b):  # make the base differ from the momentum copy
        param_b.set_data(param_b + 1.0 + i)
    before_b = [p.asnumpy().copy() for p in model.params_b]
    before_m = [p.asnumpy().copy() for p in model.params_m]
    model._update_momentum_encoder(ms.Tensor(0.9, ms.float32))
    for b0, m0, param_m in zip(before_b, before_m, model.params_m):
        np.testing.assert_allclose(param_m.asnumpy(), 0.9 * m0 + 0.1 * b0, rtol=1e-6, atol=1e-6)


def test_contrastive_loss_is_info_nce_times_2T(model):
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 8, DIM)).astype(np.float32)
    q_, k_ = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, k))
    logits = q_ @ k_.T / 0.2  # logits: NxN, positives on the diagonal
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -np.mean(np.diag(log_softmax)) * 2 * 0.2
    loss = model.contrastive_loss(ms.Tensor(q), ms.Tensor(k))
    np.testing.assert_allclose(loss.asnumpy(), expected, rtol=1e-5)


def test_loss_shape_and_finite(model, mode):
    loss = model(images(0), images(1), ms.Tensor(0.99, ms.float32))
    assert loss.shape == () and np.isfinite(loss.asnumpy()) and loss.asnumpy() > 0


def test_lars_skips_decay_and_trust_ratio_for_1d_params():
    lr, wd, momentum, tc = 0.5, 0.1, 0.9, 0.001
    rng = np.random.default_rng(0)
    values = {
        "w": rng.standard_normal((4, 3)),
        "b": rng.standard_normal(4),
        "z": np.zeros((2, 2)),  # zero norm: trust ratio 1
    }
    params = [ms.Parameter(ms.Tensor(v.astype(np.float32)), name=k) for k, v in values.items()]
    optimizer = LARS(params, lr, weight_decay=wd, momentum=momentum, trust_coefficient=tc)
    mu = {k: np.zeros_like(v) for k, v in values.items()}
    for _ in range(2):  # the second step has a momentum buffer
        grads = {k: rng.standard_normal(v.shape) for k, v in values.items()}
        optimizer(tuple(ms.Tensor(g.astype(np.float32)) for g in grads.values()))
        for k, p in values.items():
            dp = grads[k]
            if p.ndim > 1:
                dp = dp + wd * p
                norm_p, norm_dp = np.linalg.norm(p), np.linalg.norm(dp)
                dp = dp * (tc * norm_p / norm_dp if norm_p > 0 else 1.0)
            mu[k] = momentum * mu[k] + dp
            values[k] = p - lr * mu[k]
        for param in params:
            np.testing.assert_allclose(param.asnumpy(), values[param.name], rtol=1e-5, atol=1e-6)
    # The 1-D parameter moved by lr * (its momentum of raw gradients): no decay, no trust ratio.
    assert np.abs(values["b"]).max() > 0.1
