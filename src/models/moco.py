"""MoCo: Momentum Contrast for unsupervised visual representation learning (He et al., 2020)."""

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..utils.distributed import ONE_DEVICE
from .precision import apply_mixed_precision
from .resnet import create_backbone


def _normalize(x, axis=1, eps=1e-12):
    """``x / max(||x||, eps)`` along ``axis``, as ``torch.nn.functional.normalize``."""
    norm = ops.sqrt((x * x).sum(axis=axis, keepdims=True))
    return x / ops.maximum(norm, eps)


class MoCo(nn.Cell):
    """Query encoder, momentum key encoder (momentum ``m``) and a queue of ``K`` negative keys;
    ``T``: the softmax temperature, ``seed``: the random initial queue's. ``construct`` returns the
    InfoNCE loss and the keys to enqueue; the training step runs the momentum update before it and
    the enqueue after the SGD step, as the reference. On ``group.size`` devices (as the official
    ``builder.py``) shuffle BN and the enqueue use the gathered batches of all: one queue on all."""

    def __init__(
        self,
        dim=128,
        K=4096,
        m=0.99,
        T=0.1,
        arch="resnet18",
        bn_splits=8,
        symmetric=False,
        seed=0,
        group=ONE_DEVICE,
        mlp=False,
        stem="cifar",
        amp_level="O0",
    ):
        super().__init__()
        self.K, self.m, self.T, self.symmetric = K, m, T, symmetric
        self.rank, self.world = group.rank, group.size
        self.all_gather = ops.AllGather() if group.size > 1 else None
        self.encoder_q = create_backbone(arch, dim, bn_splits, mlp, stem)
        self.encoder_k = create_backbone(arch, dim, bn_splits, mlp, stem)
        for encoder in (self.encoder_q, self.encoder_k):
            apply_mixed_precision(encoder, amp_level)
        # Only learnable weights follow encoder_q, not BN running statistics (as in the demo).
        self.params_q = ms.ParameterTuple(self.encoder_q.trainable_params())
        k_params = dict(self.encoder_k.parameters_and_names())
        self.params_k = ms.ParameterTuple(
            [k_params[name] for name, p in self.encoder_q.parameters_and_names() if p.requires_grad]
        )
        for param_q, param_k in zip(self.params_q, self.params_k):
            param_k.set_data(param_q.data.copy())
        for param_k in self.encoder_k.get_parameters():
            param_k.requires_grad = False  # never touched by the optimizer

        queue = np.random.default_rng(seed).standard_normal((K, dim)).astype(np.float32)
        queue /= np.linalg.norm(queue, axis=1, keepdims=True)
        self.queue = ms.Parameter(ms.Tensor(queue), name="queue", requires_grad=False)  # K x C
        self.queue_ptr = ms.Parameter(
            ms.Tensor([0], ms.int32), name="queue_ptr", requires_grad=False
        )

    def momentum_update_key_encoder(self):
        """``k <- m * k + (1 - m) * q`` for every learnable weight."""
        for param_q, param_k in zip(self.params_q, self.params_k):
            ops.assign(param_k, param_k * self.m + param_q * (1.0 - self.m))
        return True

    def dequeue_and_enqueue(self, keys):
        """Replaces the oldest keys of the queue with ``keys`` (N x C) of every device."""
        if self.world > 1:
            keys = self.all_gather(keys)  # world*N x C, the same on every device
        batch_size = keys.shape[0]
        ptr = self.queue_ptr[0]
        indices = ptr + ops.arange(batch_size, dtype=ms.int32)  # K % N == 0: never wraps mid-batch
        ops.scatter_update(self.queue, indices, keys)
        ops.assign(self.queue_ptr, ((ptr + batch_size) % self.K).reshape(1))
        return True

    def _batch_shuffle(self, x, idx_shuffle):
        if self.world > 1:
            return self._this_device(ops.gather(self.all_gather(x), idx_shuffle, 0))
        return ops.gather(x, idx_shuffle, 0)

    def _batch_unshuffle(self, x, idx_shuffle):
        idx_unshuffle = ops.argsort(idx_shuffle.astype(ms.float32))
        if self.world > 1:
            return self._this_device(ops.gather(self.all_gather(x), idx_unshuffle, 0))
        return ops.gather(x, idx_unshuffle, 0)

    def _this_device(self, x_gather):
        """This device's N rows of a world*N batch."""
        n = x_gather.shape[0] // self.world
        return x_gather[self.rank * n : (self.rank + 1) * n]

    def contrastive_loss(self, im_q, im_k, idx_shuffle):
        """``(loss, k)``: the InfoNCE loss of queries ``im_q`` against keys ``im_k`` (two views, N x
        3 x H x W) and the queue, and the L2-normalised keys (N x C). ``idx_shuffle``: shuffle BN's
        permutation of ``range(world * N)``, the same on every device."""
        q = _normalize(self.encoder_q(im_q).astype(ms.float32))  # N x C
        k = self.encoder_k(self._batch_shuffle(im_k, idx_shuffle)).astype(ms.float32)
        k = ops.stop_gradient(self._batch_unshuffle(_normalize(k), idx_shuffle))  # N x C

        l_pos = (q * k).sum(axis=1, keepdims=True)  # N x 1
        l_neg = ops.matmul(q, ops.stop_gradient(self.queue).T)  # N x K
        logits = ops.concat((l_pos, l_neg), axis=1) / self.T  # N x (1 + K)
        labels = ops.zeros(logits.shape[0], ms.int32)  # the positive key is class 0
        return ops.cross_entropy(logits, labels), k

    def construct(self, im_1, im_2, idx_shuffle):
        """``(loss, keys)`` of two views N x 3 x H x W; the keys to enqueue are N x C (2N x C if
        symmetric). ``idx_shuffle``: 2 x world*N, a shuffle-BN permutation per key batch."""
        if self.symmetric:
            loss_12, k2 = self.contrastive_loss(im_1, im_2, idx_shuffle[0])
            loss_21, k1 = self.contrastive_loss(im_2, im_1, idx_shuffle[1])
            return loss_12 + loss_21, ops.concat((k1, k2), axis=0)
        loss, k = self.contrastive_loss(im_1, im_2, idx_shuffle[0])
        return loss, k
