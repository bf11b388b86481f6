"""MoCo v3's optimizers: LARS as facebookresearch/moco-v3's ``moco/optimizer.py``, and AdamW as
``torch.optim.AdamW`` (its ``main_moco.py --optimizer adamw``). Both keep the rate in the
Parameter ``learning_rate``: ``src.train.step.set_learning_rate`` sets it per step."""

import mindspore as ms
from mindspore import nn, ops


class LARS(nn.Optimizer):
    """For parameters with ndim > 1: ``dp = g + wd * p``, scaled by the trust ratio
    ``trust_coefficient * |p| / |dp|`` (1 if a norm is 0); 1-D ones (BN gamma/beta, biases) keep
    ``dp = g``. Then ``mu <- momentum * mu + dp`` and ``p <- p - lr * mu``."""

    def __init__(
        self, params, learning_rate=0.0, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001
    ):
        super().__init__(learning_rate, params)
        self.decay, self.momentum, self.trust_coefficient = (
            weight_decay,
            momentum,
            trust_coefficient,
        )
        self.mu = self._parameters.clone(prefix="mu", init="zeros")
        self.scaled = tuple(param.ndim > 1 for param in self._parameters)

    def _trust_scaled(self, param, dp):
        """``dp + wd * p`` times the trust ratio."""
        dp = dp + self.decay * param
        param_norm, update_norm = ops.sqrt((param * param).sum()), ops.sqrt((dp * dp).sum())
        one = ops.ones_like(param_norm)
        q = ops.where(update_norm > 0, self.trust_coefficient * param_norm / update_norm, one)
        return dp * ops.where(param_norm > 0, q, one)

    def construct(self, gradients):
        lr = self.get_lr()
        for param, dp, mu, scaled in zip(self._parameters, gradients, self.mu, self.scaled):
            if scaled:
                dp = self._trust_scaled(param, dp)
            mu_next = mu * self.momentum + dp
            ops.assign(mu, mu_next)
            ops.assign(param, param - lr * mu_next)
        return True


class AdamW(nn.Optimizer):
    """``torch.optim.AdamW``: ``p <- p * (1 - lr * wd)`` for every parameter (decoupled decay),
    then Adam with bias correction. MindSpore's ``nn.AdamWeightDecay`` differs: no bias correction
    (a first step ~3x larger at betas 0.9/0.999), eps 1e-6, and gamma/beta undecayed by default."""

    def __init__(self, params, learning_rate=1e-3, weight_decay=1e-2, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(learning_rate, params)
        self.decay, (self.beta1, self.beta2), self.eps = weight_decay, betas, eps
        self.exp_avg = self._parameters.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self._parameters.clone(prefix="exp_avg_sq", init="zeros")
        self.state_step = ms.Parameter(
            ms.Tensor(0.0, ms.float32), "state_step", requires_grad=False
        )

    def construct(self, gradients):
        lr = self.get_lr()
        step = self.state_step + 1.0
        ops.assign(self.state_step, step)
        step_size = lr / (1.0 - ops.pow(self.beta1, step))
        bias_correction2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, step))
        for param, grad, m, v in zip(self._parameters, gradients, self.exp_avg, self.exp_avg_sq):
            m_next = m * self.beta1 + grad * (1.0 - self.beta1)
            v_next = v * self.beta2 + grad * grad * (1.0 - self.beta2)
            ops.assign(m, m_next)
            ops.assign(v, v_next)
            denom = ops.sqrt(v_next) / bias_correction2_sqrt + self.eps
            ops.assign(param, param * (1.0 - lr * self.decay) - step_size * m_next / denom)
        return True


def create_v3_optimizer(name, params, lr, weight_decay, momentum=0.9) -> nn.Optimizer:
    """``"lars"`` (momentum ``momentum``) or ``"adamw"`` (betas 0.9/0.999, eps 1e-8) over
    ``params`` (e.g. ``model.trainable_params()``: base encoder and predictor), as main_moco.py."""
    if name == "lars":
        return LARS(params, lr, weight_decay, momentum)
    if name == "adamw":
        return AdamW(params, lr, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; available: lars, adamw")
