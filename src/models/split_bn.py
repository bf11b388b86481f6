"""Split BatchNorm: the single-device stand-in for MoCo's shuffling BN."""

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import initializer

# Names of the scratch copies of the running statistics: transient, left out of checkpoints.
SCRATCH_PREFIX = "split_bn_scratch_"


class SplitBatchNorm(nn.Cell):
    """BatchNorm2d normalising each of ``num_splits`` (S) sub-batches on its own, so that, as with
    MoCo's shuffled BN across GPUs, statistics cannot leak which key belongs to which query. As in
    the PyTorch demo, N x C x H x W is viewed as N/S x CS x H x W (sample i in group i % S) with the
    running statistics repeated S times, then averaged back; in eval, a plain BatchNorm.
    ``momentum`` is PyTorch's (0.1 keeps 90% of the old value; unbiased variance), as is ops'."""

    def __init__(self, num_features, num_splits=1, momentum=0.1, eps=1e-5):
        super().__init__()
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_features, self.num_splits = num_features, num_splits
        self.momentum, self.eps = momentum, eps
        self.gamma = ms.Parameter(initializer("ones", num_features))
        self.beta = ms.Parameter(initializer("zeros", num_features))
        self.moving_mean = ms.Parameter(initializer("zeros", num_features), requires_grad=False)
        self.moving_variance = ms.Parameter(initializer("ones", num_features), requires_grad=False)
        self.bn_train = ops.BatchNorm(is_training=True, epsilon=eps, momentum=momentum)
        self.bn_infer = ops.BatchNorm(is_training=False, epsilon=eps)
        if num_splits > 1:
            # The S copies the fused kernel updates in place. MindSpore names a Parameter after its
            # attribute (as the four above), so the attribute carries SCRATCH_PREFIX.
            size = num_features * num_splits
            zeros, ones = initializer("zeros", size), initializer("ones", size)
            self.split_bn_scratch_mean = ms.Parameter(zeros, requires_grad=False)
            self.split_bn_scratch_variance = ms.Parameter(ones, requires_grad=False)

    def construct(self, x):
        if not self.training or self.num_splits == 1:
            bn = self.bn_train if self.training else self.bn_infer
            return bn(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[0]
        (n, c, h, w), s = x.shape, self.num_splits
        mean, var = self.split_bn_scratch_mean, self.split_bn_scratch_variance  # C * S
        ops.assign(mean, ops.tile(self.moving_mean, (s,)))
        ops.assign(var, ops.tile(self.moving_variance, (s,)))
        gamma, beta = ops.tile(self.gamma, (s,)), ops.tile(self.beta, (s,))
        x = x.reshape(n // s, c * s, h, w)  # N/S x CS x H x W: sample i in group i % S
        y = self.bn_train(x, gamma, beta, mean, var)[0]
        ops.assign(self.moving_mean, mean.reshape(s, c).mean(axis=0))
        ops.assign(self.moving_variance, var.reshape(s, c).mean(axis=0))
        return y.reshape(n, c, h, w)

    def extend_repr(self):
        names = ("num_features", "num_splits", "momentum", "eps")
        return ", ".join(f"{name}={getattr(self, name)}" for name in names)
