"""MoCo v3 in PyTorch as facebookresearch/moco-v3 (``moco/builder.py``, ``moco/optimizer.py``,
``main_moco.py``'s two schedules), the yardstick for src/models/moco_v3.py and
src/train/optimizer.py. Single process: ``concat_all_gather`` is the identity and the rank 0.
The ResNet is the demo's ``ModelBase`` of moco_torch.py, whose classifier is ``net[-1]`` (the
official code replaces torchvision's ``fc``). Test-only code: it needs ``torch`` and nothing else.
"""

import math

import torch
import torch.nn as nn


class MoCo(nn.Module):
    """The official ``MoCo``: ``base_encoder(num_classes=mlp_dim)`` builds both encoders."""

    def __init__(self, base_encoder, dim=256, mlp_dim=4096, T=1.0):
        super().__init__()
        self.T = T
        self.base_encoder = base_encoder(num_classes=mlp_dim)
        self.momentum_encoder = base_encoder(num_classes=mlp_dim)
        self._build_projector_and_predictor_mlps(dim, mlp_dim)
        for param_b, param_m in zip(
            self.base_encoder.parameters(), self.momentum_encoder.parameters()
        ):
            param_m.data.copy_(param_b.data)  # initialize
            param_m.requires_grad = False  # not update by gradient

    def _build_mlp(self, num_layers, input_dim, mlp_dim, output_dim, last_bn=True):
        mlp = []
        for layer in range(num_layers):
            dim1 = input_dim if layer == 0 else mlp_dim
            dim2 = output_dim if layer == num_layers - 1 else mlp_dim
            mlp.append(nn.Linear(dim1, dim2, bias=False))
            if layer < num_layers - 1:
                mlp.append(nn.BatchNorm1d(dim2))
                mlp.append(nn.ReLU(inplace=True))
            elif last_bn:
                mlp.append(nn.BatchNorm1d(dim2, affine=False))
        return nn.Sequential(*mlp)

    def _build_projector_and_predictor_mlps(self, dim, mlp_dim):
        pass

    @torch.no_grad()
    def _update_momentum_encoder(self, m):
        for param_b, param_m in zip(
            self.base_encoder.parameters(), self.momentum_encoder.parameters()
        ):
            param_m.data = param_m.data * m + param_b.data * (1.0 - m)

    def contrastive_loss(self, q, k):
        q = nn.functional.normalize(q, dim=1)
        k = nn.functional.normalize(k, dim=1)
        k = concat_all_gather(k)
        logits = torch.einsum("nc,mc->nm", [q, k]) / self.T  # N x N
        N = logits.shape[0]
        labels = torch.arange(N, dtype=torch.long) + N * 0  # rank 0
        return nn.CrossEntropyLoss()(logits, labels) * (2 * self.T)

    def forward(self, x1, x2, m):
        q1 = self.predictor(self.base_encoder(x1))
        q2 = self.predictor(self.base_encoder(x2))
        with torch.no_grad():
            self._update_momentum_encoder(m)
            k1 = self.momentum_encoder(x1)
            k2 = self.momentum_encoder(x2)
        return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)


class MoCo_ResNet(MoCo):
    """The official ``MoCo_ResNet`` over ``ModelBase``: ``net[-1]`` in place of ``fc``."""

    def _build_projector_and_predictor_mlps(self, dim, mlp_dim):
        hidden_dim = self.base_encoder.net[-1].weight.shape[1]
        self.base_encoder.net[-1] = self._build_mlp(2, hidden_dim, mlp_dim, dim)
        self.momentum_encoder.net[-1] = self._build_mlp(2, hidden_dim, mlp_dim, dim)
        self.predictor = self._build_mlp(2, dim, mlp_dim, dim, False)


class MoCo_ViT(MoCo):
    """The official ``MoCo_ViT``: a 3-layer projector as ``head``, a predictor with its last BN."""

    def _build_projector_and_predictor_mlps(self, dim, mlp_dim):
        hidden_dim = self.base_encoder.head.weight.shape[1]
        self.base_encoder.head = self._build_mlp(3, hidden_dim, mlp_dim, dim)
        self.momentum_encoder.head = self._build_mlp(3, hidden_dim, mlp_dim, dim)
        self.predictor = self._build_mlp(2, dim, mlp_dim, dim)


def concat_all_gather(tensor):
    """One process: the gathered keys are this process's."""
    return tensor


class LARS(torch.optim.Optimizer):
    """The official LARS: no rate scaling or weight decay for parameters <= 1D."""

    def __init__(self, params, lr=0, weight_decay=0, momentum=0.9, trust_coefficient=0.001):
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:  # if not normalization gamma/beta or bias
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(
                            update_norm > 0,
                            (g["trust_coefficient"] * param_norm / update_norm),
                            one,
                        ),
                        one,
                    )
                    dp = dp.mul(q)
                param_state = self.state[p]
                if "mu" not in param_state:
                    param_state["mu"] = torch.zeros_like(p)
                mu = param_state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def create_optimizer(name, model, lr, weight_decay, momentum=0.9):
    """main_moco.py's optimizer over ``model.parameters()`` (the momentum encoder's get no grad)."""
    if name == "lars":
        return LARS(model.parameters(), lr, weight_decay=weight_decay, momentum=momentum)
    return torch.optim.AdamW(model.parameters(), lr, weight_decay=weight_decay)


def adjust_learning_rate(optimizer, epoch, lr, epochs, warmup_epochs):
    """main_moco.py's: half-cycle cosine after a linear warmup; sets the rate and returns it."""
    if epoch < warmup_epochs:
        lr = lr * epoch / warmup_epochs
    else:
        lr = (
            lr
            * 0.5
            * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))
        )
    if optimizer is not None:
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
    return lr


def adjust_moco_momentum(epoch, moco_m, epochs):
    """main_moco.py's: the momentum from ``moco_m`` up to 1, half-cycle cosine."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) * (1.0 - moco_m)
