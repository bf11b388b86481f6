"""MoCo v3 (Chen, Xie, He, 2021): base and momentum encoders ending in projection MLPs, a predictor
on the query side and a symmetric contrastive loss over the batch (no queue), as the official
``moco/builder.py`` of facebookresearch/moco-v3."""

import mindspore as ms
from mindspore import nn, ops

from .moco import _normalize

KINDS = ("resnet", "vit")
# (projector layers, predictor layers, predictor's last BN): the official MoCo_ResNet / MoCo_ViT.
_MLPS = {"resnet": (2, 2, False), "vit": (3, 2, True)}


def _build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True) -> nn.SequentialCell:
    """Bias-free Dense layers with BatchNorm1d + ReLU between them and, if ``last_bn``, a
    BatchNorm1d without affine at the end (SimCLR's design). ``momentum=0.9`` is PyTorch's 0.1."""
    mlp = []
    for layer in range(num_layers):
        dim1 = input_dim if layer == 0 else mlp_dim
        dim2 = output_dim if layer == num_layers - 1 else mlp_dim
        mlp.append(nn.Dense(dim1, dim2, has_bias=False))
        if layer < num_layers - 1:
            mlp += [nn.BatchNorm1d(dim2, momentum=0.9), nn.ReLU()]
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, momentum=0.9, affine=False))
    return nn.SequentialCell(mlp)


def backbone_kind(encoder: nn.Cell) -> str:
    """``"vit"`` for a backbone with a ``head`` (src/models/vit.py), ``"resnet"`` for one whose
    classifier is ``net[-1]`` (src/models/resnet.py)."""
    if hasattr(encoder, "head"):
        return "vit"
    if hasattr(encoder, "net"):
        return "resnet"
    raise ValueError(f"cannot tell the kind of {type(encoder).__name__}: no `head` and no `net`")


def with_projector(encoder: nn.Cell, mlp_dim: int, dim: int, kind=None) -> nn.Cell:
    """``encoder`` with its classifier head replaced by a fresh projection MLP (``dim`` out,
    ``mlp_dim`` hidden): MoCo v3's base or momentum encoder. ``kind``: None to detect it."""
    kind = kind or backbone_kind(encoder)
    projector = _build_mlp(_MLPS[kind][0], encoder.feature_dim, mlp_dim, dim)
    if kind == "vit":
        encoder.head = projector
    else:
        encoder.net[len(encoder.net) - 1] = projector
    return encoder


class MoCoV3(nn.Cell):
    """``create_encoder()`` builds a backbone (``feature_dim`` wide before its classifier) twice:
    ``base_encoder`` and ``momentum_encoder``, each with the classifier replaced by a projector
    (``dim`` out, ``mlp_dim`` hidden); ``predictor`` on the query side; ``T``: the temperature.
    ``kind``: one of ``KINDS`` (None: detected). On ``world`` devices the keys are all-gathered and
    this device's positives are columns ``N * rank`` on. ``construct(x1, x2, m)``: the loss."""

    def __init__(self, create_encoder, dim=256, mlp_dim=4096, T=1.0, kind=None, rank=0, world=1):
        super().__init__()
        self.T, self.rank, self.world = T, rank, world
        self.all_gather = ops.AllGather() if world > 1 else None
        base, momentum = create_encoder(), create_encoder()
        self.kind = kind or backbone_kind(base)
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; available: {', '.join(KINDS)}")
        _, predictor_layers, predictor_last_bn = _MLPS[self.kind]
        # Replaced before they become attributes: the projectors' parameters then get the clean
        # names base_encoder.net.9.0.weight (ResNet), momentum_encoder.head.0.weight (ViT), ...
        self.base_encoder = with_projector(base, mlp_dim, dim, self.kind)
        self.momentum_encoder = with_projector(momentum, mlp_dim, dim, self.kind)
        self.predictor = _build_mlp(predictor_layers, dim, mlp_dim, dim, predictor_last_bn)
        self._init_momentum_encoder()

    def _init_momentum_encoder(self):
        """Copies every learnable weight of the base encoder into the momentum encoder, whose
        parameters all get ``requires_grad=False``: no gradient, out of ``trainable_params()``.
        BN running statistics are buffers: not copied, as in the official code."""
        momentum = dict(self.momentum_encoder.parameters_and_names())
        pairs = [
            (param_b, momentum[name])
            for name, param_b in self.base_encoder.parameters_and_names()
            if param_b.requires_grad
        ]
        for param_b, param_m in pairs:
            param_m.set_data(param_b.data.copy())
        for param_m in self.momentum_encoder.get_parameters():
            param_m.requires_grad = False
        self.params_b = ms.ParameterTuple([param_b for param_b, _ in pairs])
        self.params_m = ms.ParameterTuple([param_m for _, param_m in pairs])

    def _update_momentum_encoder(self, m):
        """``param_m <- m * param_m + (1 - m) * param_b`` for every learnable weight."""
        for param_b, param_m in zip(self.params_b, self.params_m):
            ops.assign(param_m, param_m * m + param_b * (1.0 - m))
        return True

    def contrastive_loss(self, q, k):
        """InfoNCE of queries ``q`` (N x dim) against the keys ``k`` of all devices (the positive
        of query i: key i of this device), times ``2 T`` as the official code."""
        q, k = _normalize(q), _normalize(k)
        if self.world > 1:
            k = self.all_gather(k)  # world*N x dim
        logits = ops.matmul(q, k.T) / self.T  # logits: N x world*N
        n = logits.shape[0]
        labels = ops.arange(n, dtype=ms.int32) + n * self.rank  # N
        return ops.cross_entropy(logits, labels) * (2 * self.T)

    def construct(self, x1, x2, m):
        """The symmetric loss of two views (N x 3 x H x W each); ``m``: the momentum of this step
        (a float32 Tensor: a Python float would be a graph constant). As the official code:
        queries, then the momentum update, then the keys (under stop_gradient)."""
        q1 = self.predictor(self.base_encoder(x1))  # q1: N x dim
        q2 = self.predictor(self.base_encoder(x2))
        self._update_momentum_encoder(m)
        k1 = ops.stop_gradient(self.momentum_encoder(x1))  # k1: N x dim
        k2 = ops.stop_gradient(self.momentum_encoder(x2))
        return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)
