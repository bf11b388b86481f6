"""Dynamic loss scaling for float16 training, as a cell so that its state is checkpointed."""

import mindspore as ms
from mindspore import nn, ops

INITIAL_SCALE, FACTOR, WINDOW = 2.0**16, 2.0, 1000  # MindSpore's and PyTorch's GradScaler's
PREFIX = "amp_"  # of the state's names in checkpoints


class DynamicLossScale(nn.Cell):
    """Multiplies the loss by ``loss_scale`` before backprop, divides the gradients by it after.

    A step with non-finite gradients halves the scale (the caller skips its update); after
    ``window`` finite steps in a row the scale doubles. ``loss_scale`` and ``good_steps`` are
    parameters: a resumed run continues with the same scale.
    """

    def __init__(self, scale=INITIAL_SCALE, factor=FACTOR, window=WINDOW):
        super().__init__()
        self.factor, self.window = factor, window
        # Named in full: the training step does not prefix its cells' parameters.
        self.loss_scale = ms.Parameter(
            ms.Tensor(scale, ms.float32), name=f"{PREFIX}loss_scale", requires_grad=False
        )
        self.good_steps = ms.Parameter(
            ms.Tensor(0, ms.int32), name=f"{PREFIX}good_steps", requires_grad=False
        )

    def scale(self, loss):
        return loss * self.loss_scale.astype(loss.dtype)

    def unscale(self, grads):
        return tuple(g / self.loss_scale.astype(g.dtype) for g in grads)

    def adjust(self, finite):
        """Updates the scale after a step whose gradients were ``finite`` (a bool tensor)."""
        good = ops.select(finite, self.good_steps + 1, ops.zeros_like(self.good_steps))
        grow = good >= self.window
        scale = ops.select(finite, self.loss_scale, self.loss_scale / self.factor)
        ops.assign(self.loss_scale, ops.select(grow, scale * self.factor, scale))
        ops.assign(self.good_steps, ops.select(grow, ops.zeros_like(good), good))
        return finite
