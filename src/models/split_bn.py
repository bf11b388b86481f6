"""Split BatchNorm: the single-device stand-in for MoCo's shuffling BN."""

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import initializer

# Names of the scratch copies of the running statistics: transient, left out of checkpoints.
SCRATCH_PREFIX = "split_bn_scratch_"


class SplitBatchNorm(nn.Cell):
    """BatchNorm2d that normalises each of ``num_splits`` sub-batches on its own.

    MoCo shuffles keys across GPUs so that BN statistics cannot leak which
    key belongs to which query. On one device the same effect comes from
    splitting the batch into groups with their own statistics. As in the
    PyTorch demo, ``(N, C, H, W)`` is viewed as ``(N / S, C * S, H, W)``, so
    sample ``i`` falls in group ``i % S``, and one BatchNorm over ``C * S``
    channels runs with the running statistics repeated ``S`` times; the
    updated copies are averaged back. In eval this is a plain BatchNorm.

    Args:
        num_features: Number of channels ``C``.
        num_splits: Number of groups ``S``; ``1`` is plain BatchNorm.
        momentum: Weight of the batch statistics in the running average, in
            PyTorch's convention (0.1 keeps 90% of the old value; unbiased
            variance), which is also ``ops.BatchNorm``'s.
        eps: Added to the variance for numerical stability.
    """

    def __init__(self, num_features, num_splits=1, momentum=0.1, eps=1e-5):
        super().__init__()
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_features, self.num_splits = num_features, num_splits
        self.momentum, self.eps = momentum, eps
        self.gamma = ms.Parameter(initializer("ones", num_features), name="gamma")
        self.beta = ms.Parameter(initializer("zeros", num_features), name="beta")
        self.moving_mean = ms.Parameter(
            initializer("zeros", num_features), name="moving_mean", requires_grad=False
        )
        self.moving_variance = ms.Parameter(
            initializer("ones", num_features), name="moving_variance", requires_grad=False
        )
        self.bn_train = ops.BatchNorm(is_training=True, epsilon=eps, momentum=momentum)
        self.bn_infer = ops.BatchNorm(is_training=False, epsilon=eps)
        if num_splits > 1:
            # The S repeated copies that the fused kernel updates in place.
            size = num_features * num_splits
            # MindSpore names Parameters after their attribute, so the attribute carries the prefix.
            self.split_bn_scratch_mean = ms.Parameter(
                initializer("zeros", size), requires_grad=False
            )
            self.split_bn_scratch_variance = ms.Parameter(
                initializer("ones", size), requires_grad=False
            )

    def construct(self, x):
        if not self.training:
            return self.bn_infer(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[
                0
            ]
        if self.num_splits == 1:
            return self.bn_train(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[
                0
            ]
        n, c, h, w = x.shape
        s = self.num_splits
        ops.assign(self.split_bn_scratch_mean, ops.tile(self.moving_mean, (s,)))
        ops.assign(self.split_bn_scratch_variance, ops.tile(self.moving_variance, (s,)))
        y = self.bn_train(
            x.reshape(n // s, c * s, h, w),
            ops.tile(self.gamma, (s,)),
            ops.tile(self.beta, (s,)),
            self.split_bn_scratch_mean,
            self.split_bn_scratch_variance,
        )[0]
        ops.assign(self.moving_mean, self.split_bn_scratch_mean.reshape(s, c).mean(axis=0))
        ops.assign(self.moving_variance, self.split_bn_scratch_variance.reshape(s, c).mean(axis=0))
        return y.reshape(n, c, h, w)

    def extend_repr(self):
        return (
            f"num_features={self.num_features}, num_splits={self.num_splits}, "
            f"momentum={self.momentum}, eps={self.eps}"
        )
