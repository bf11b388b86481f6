"""Split BatchNorm: the single-device stand-in for MoCo's shuffling BN."""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import initializer


class SplitBatchNorm(nn.Cell):
    """BatchNorm2d that normalises each of ``num_splits`` sub-batches on its own.

    MoCo shuffles keys across GPUs so that BN statistics cannot leak which
    key belongs to which query. On one device the same effect comes from
    splitting the batch into groups with their own statistics. Sample ``i``
    belongs to group ``i % num_splits``, exactly as in the PyTorch demo,
    which reshapes ``(N, C, H, W)`` to ``(N / S, C * S, H, W)``.

    In training, running statistics are updated as if each group had been
    seen by its own BatchNorm and the results averaged back (so the
    variance is the unbiased per-group estimate, as in PyTorch). In eval,
    this is a plain BatchNorm using the running statistics.

    Args:
        num_features: Number of channels ``C``.
        num_splits: Number of groups ``S``; ``1`` is plain BatchNorm.
        momentum: Weight of the new batch statistics in the running
            average, in PyTorch's convention (0.1 keeps 90% of the old value).
        eps: Added to the variance for numerical stability.
    """

    def __init__(self, num_features, num_splits=1, momentum=0.1, eps=1e-5):
        super().__init__()
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_features = num_features
        self.num_splits = num_splits
        self.momentum = momentum
        self.eps = eps
        # gamma/beta/moving_* are MindSpore's names for these BN tensors.
        self.gamma = ms.Parameter(initializer("ones", num_features), name="gamma")
        self.beta = ms.Parameter(initializer("zeros", num_features), name="beta")
        self.moving_mean = ms.Parameter(
            initializer("zeros", num_features), name="mean", requires_grad=False)
        self.moving_variance = ms.Parameter(
            initializer("ones", num_features), name="variance", requires_grad=False)

    def construct(self, x):
        shape = (1, self.num_features, 1, 1)
        if not self.training:
            mean = self.moving_mean.reshape(shape)
            var = self.moving_variance.reshape(shape)
            scale = self.gamma.reshape(shape) * ops.rsqrt(var + self.eps)
            return (x - mean) * scale + self.beta.reshape(shape)

        n, c, h, w = x.shape
        s = self.num_splits
        groups = x.reshape(n // s, s, c, h, w)  # sample i -> group i % s
        mean = groups.mean(axis=(0, 3, 4), keep_dims=True)  # 1 x S x C x 1 x 1
        centered = groups - mean
        var = (centered * centered).mean(axis=(0, 3, 4), keep_dims=True)
        y = centered * ops.rsqrt(var + self.eps)
        y = y.reshape(n, c, h, w) * self.gamma.reshape(shape) + self.beta.reshape(shape)
        self._update_running_stats(ops.stop_gradient(mean), ops.stop_gradient(var), (n // s) * h * w)
        return y

    def _update_running_stats(self, mean, var, count):
        batch_mean = mean.reshape(self.num_splits, self.num_features).mean(axis=0)
        unbiased = var.reshape(self.num_splits, self.num_features) * (count / (count - 1))
        batch_var = unbiased.mean(axis=0)
        m = self.momentum
        ops.assign(self.moving_mean, (1 - m) * self.moving_mean + m * batch_mean)
        ops.assign(self.moving_variance, (1 - m) * self.moving_variance + m * batch_var)

    def extend_repr(self):
        return f"num_features={self.num_features}, num_splits={self.num_splits}, momentum={self.momentum}, eps={self.eps}"
