"""One MoCo training step as a single compiled cell."""

from typing import Optional

import mindspore as ms
from mindspore import nn, ops

from .loss_scale import DynamicLossScale

_BN_STATISTICS = ("moving_mean", "moving_variance")


def create_train_step(model: nn.Cell, lr: float, weight_decay: float, amp_level="O0") -> nn.Cell:
    """The compiled step of ``model`` (a MoCo) with SGD; a dynamic loss scale in float16."""
    loss_scale = None if amp_level == "O0" else DynamicLossScale()
    return MoCoTrainStep(model, create_optimizer(model, lr, weight_decay), loss_scale)


def create_optimizer(
    model: nn.Cell, lr: float, weight_decay: float, momentum: float = 0.9
) -> nn.Momentum:
    """SGD with momentum over ``encoder_q``, decaying every weight.

    MindSpore skips weight decay on BN ``gamma``/``beta`` unless the
    parameters come as a group with its own ``weight_decay``; the reference
    (``torch.optim.SGD(weight_decay=wd)``) decays all of them.
    """
    params = model.encoder_q.trainable_params()
    return nn.Momentum(
        [{"params": params, "weight_decay": weight_decay}], learning_rate=lr, momentum=momentum
    )


def set_learning_rate(optimizer: nn.Optimizer, lr: float) -> None:
    """Sets the learning rate of the next steps without rebuilding the optimizer.

    ``ops.assign``, not ``set_data``: in PyNative mode ``set_data`` is ignored
    once the optimizer has run.
    """
    ops.assign(optimizer.learning_rate, ms.Tensor(lr, ms.float32))


class _DeviceAverage(nn.Cell):
    """On ``world`` devices: the loss, the gradients and the BN running statistics averaged over
    them, so that every device keeps the same model."""

    def __init__(self, model, parameters, world):
        super().__init__(auto_prefix=False)
        self.world, self.all_reduce = world, ops.AllReduce()
        self.grad_reducer = nn.DistributedGradReducer(parameters, True, world)
        self.bn_statistics = ms.ParameterTuple(
            p for p in model.get_parameters() if p.name.endswith(_BN_STATISTICS)
        )

    def construct(self, loss, grads):
        for p in self.bn_statistics:
            ops.assign(p, self.all_reduce(p) / self.world)
        return self.all_reduce(loss) / self.world, self.grad_reducer(grads)


class _ScaledLoss(nn.Cell):
    """The model's ``(loss * scale, keys)``: what float16 backprop differentiates."""

    def __init__(self, model, loss_scale):
        super().__init__(auto_prefix=False)
        self.model, self.loss_scale = model, loss_scale

    def construct(self, im_1, im_2, idx_shuffle):
        loss, keys = self.model(im_1, im_2, idx_shuffle)
        return self.loss_scale.scale(loss), keys


class MoCoTrainStep(nn.Cell):
    """Momentum update, loss and gradients, SGD update and enqueue, in the reference's order.

    Returns the loss and whether every gradient is finite: a NaN input can
    leave the loss finite (ReLU maps NaN to 0 on CPU) while the gradients and
    BN statistics are NaN, so the loss alone does not reveal a broken step.

    On several devices (``model.world`` > 1) the loss and gradients are averaged over them,
    as are the BN running statistics: N devices with S splits each update them as one device
    with N x S splits does, and every device keeps identical weights.

    Args:
        model: A :class:`~src.models.MoCo`.
        optimizer: Optimizer over ``model.encoder_q``'s learnable weights.
        loss_scale: For float16 (``--amp-level`` O1/O2): a :class:`DynamicLossScale`; a step
            whose gradients overflow then skips the SGD update (and its keys, which the
            float16 forward may have spoilt, stay out of the queue).
    """

    def __init__(self, model, optimizer, loss_scale=None):
        super().__init__(auto_prefix=False)
        self.model = model
        self.optimizer = optimizer
        self.loss_scale = loss_scale
        loss = model if loss_scale is None else _ScaledLoss(model, loss_scale)
        self.grad_fn = ms.value_and_grad(loss, None, optimizer.parameters, has_aux=True)
        self.world = model.world
        if self.world > 1:
            self.devices = _DeviceAverage(model, optimizer.parameters, self.world)

    def construct(self, im_1, im_2, idx_shuffle):
        self.model.momentum_update_key_encoder()
        (loss, keys), grads = self.grad_fn(im_1, im_2, idx_shuffle)
        if self.world > 1:
            loss, grads = self.devices(loss, grads)
        if self.loss_scale is not None:
            loss = loss / self.loss_scale.loss_scale
            grads = self.loss_scale.unscale(grads)
        grads_finite = ms.amp.all_finite(grads)
        if self.loss_scale is not None:
            self.loss_scale.adjust(grads_finite)
            if not grads_finite:
                return loss, grads_finite
        self.optimizer(grads)
        self.model.dequeue_and_enqueue(keys)
        return loss, grads_finite

    def current_loss_scale(self) -> Optional[float]:
        """The float16 loss scale now (halved at each overflow); None in float32."""
        return None if self.loss_scale is None else float(self.loss_scale.loss_scale.asnumpy())


class V3TrainStep(nn.Cell):
    """One MoCo v3 step: ``model(x1, x2, m)`` (momentum update inside, as the official code), its
    gradients (averaged over ``model.world`` devices, as DDP, with the loss and BN statistics),
    the optimizer's update. Returns the loss and whether every gradient is finite (float32)."""

    def __init__(self, model, optimizer):
        super().__init__(auto_prefix=False)
        self.model, self.optimizer = model, optimizer
        self.grad_fn = ms.value_and_grad(model, None, optimizer.parameters)
        self.world = model.world
        if self.world > 1:
            self.devices = _DeviceAverage(model, optimizer.parameters, self.world)

    def construct(self, x1, x2, m):
        loss, grads = self.grad_fn(x1, x2, m)
        if self.world > 1:
            loss, grads = self.devices(loss, grads)
        grads_finite = ms.amp.all_finite(grads)
        self.optimizer(grads)
        return loss, grads_finite

    def current_loss_scale(self) -> Optional[float]:
        return None
