"""SplitBatchNorm against a NumPy computation of the PyTorch demo's semantics."""

import mindspore as ms
import numpy as np
import pytest

from src.models.split_bn import SplitBatchNorm


def reference_split_bn(x, splits, running_mean, running_var, momentum=0.1, eps=1e-5):
    """Sample i in group i % splits; per-group batch stats; unbiased running variance."""
    n, c, h, w = x.shape
    groups = x.reshape(n // splits, splits, c, h, w).astype(np.float64)
    mean = groups.mean(axis=(0, 3, 4), keepdims=True)
    var = groups.var(axis=(0, 3, 4), keepdims=True)
    y = ((groups - mean) / np.sqrt(var + eps)).reshape(n, c, h, w)
    count = (n // splits) * h * w
    new_mean = (1 - momentum) * running_mean + momentum * mean.reshape(splits, c).mean(0)
    new_var = (1 - momentum) * running_var + momentum * (var * count / (count - 1)).reshape(
        splits, c
    ).mean(0)
    return y, new_mean, new_var


@pytest.mark.parametrize("splits", [1, 4])
def test_training_matches_per_split_statistics(mode, splits):
    rng = np.random.default_rng(0)
    bn = SplitBatchNorm(3, splits)
    bn.set_train()
    running_mean, running_var = np.zeros(3), np.ones(3)
    for _ in range(2):  # the second step starts from non-trivial running statistics
        x = (rng.standard_normal((8, 3, 4, 4)) * 3 + 2).astype(np.float32)
        y = bn(ms.Tensor(x)).asnumpy()
        expected, running_mean, running_var = reference_split_bn(
            x, splits, running_mean, running_var
        )
        np.testing.assert_allclose(y, expected, atol=1e-5)
        np.testing.assert_allclose(bn.moving_mean.asnumpy(), running_mean, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(bn.moving_variance.asnumpy(), running_var, rtol=1e-5)


def test_splits_are_independent_groups(mode):
    """Shifting only group 0 (samples 0, 4) leaves the other groups' outputs unchanged."""
    rng = np.random.default_rng(1)
    bn = SplitBatchNorm(2, 4)
    bn.set_train()
    x = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    shifted = x.copy()
    shifted[[0, 4]] = shifted[[0, 4]] * 5 + 7
    y, y_shifted = bn(ms.Tensor(x)).asnumpy(), bn(ms.Tensor(shifted)).asnumpy()
    others = [1, 2, 3, 5, 6, 7]
    np.testing.assert_allclose(y_shifted[others], y[others], atol=1e-6)
    np.testing.assert_allclose(y_shifted[[0, 4]], y[[0, 4]], atol=1e-4)  # normalised away


def test_eval_uses_running_statistics(mode):
    bn = SplitBatchNorm(2, 4)
    bn.gamma.set_data(ms.Tensor([2.0, 0.5], ms.float32))
    bn.beta.set_data(ms.Tensor([1.0, -1.0], ms.float32))
    bn.moving_mean.set_data(ms.Tensor([0.5, -2.0], ms.float32))
    bn.moving_variance.set_data(ms.Tensor([4.0, 0.25], ms.float32))
    bn.set_train(False)
    x = np.random.default_rng(2).standard_normal((3, 2, 2, 2)).astype(np.float32)
    mean, var = np.array([0.5, -2.0]), np.array([4.0, 0.25])
    gamma, beta = np.array([2.0, 0.5]), np.array([1.0, -1.0])
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * gamma[
        :, None, None
    ] + beta[:, None, None]
    np.testing.assert_allclose(bn(ms.Tensor(x)).asnumpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(bn.moving_mean.asnumpy(), mean.astype(np.float32))


def test_gradient_reaches_gamma_and_beta(mode):
    bn = SplitBatchNorm(2, 2)
    bn.set_train()
    x = ms.Tensor(np.random.default_rng(3).standard_normal((4, 2, 3, 3)).astype(np.float32))
    weights = np.arange(4 * 2 * 9, dtype=np.float32).reshape(4, 2, 3, 3)

    def loss_fn(inputs):
        return (bn(inputs) * ms.Tensor(weights)).sum()

    grads = ms.grad(loss_fn, grad_position=None, weights=bn.trainable_params())(x)
    assert len(grads) == 2
    assert all(np.abs(g.asnumpy()).sum() > 0 for g in grads)


def test_rejects_zero_splits():
    with pytest.raises(ValueError, match="num_splits"):
        SplitBatchNorm(4, 0)
