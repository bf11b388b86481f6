"""A compact PyTorch re-implementation of the MoCo CIFAR-10 demo (facebookresearch/moco, colab).

Written from the demo's published description, as the yardstick for the MindSpore port:
``SplitBatchNorm``, a torchvision-style ResNet (torchvision itself is not needed), the demo's
``ModelBase`` / ``ModelMoCo`` with the same ``state_dict`` keys as its checkpoints, its weighted
``knn_predict`` and ``adjust_learning_rate``. The only deliberate difference: the shuffle-BN
permutations are arguments of ``forward`` instead of ``torch.randperm`` draws, so a test can feed
both implementations the same ones.

Test-only code: it needs ``torch`` (CPU build is fine) and nothing else.
"""

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per group of ``num_splits``.

    The batch ``(N, C, H, W)`` is viewed as ``(N / S, C * S, H, W)`` (sample ``i`` in group
    ``i % S``); the running statistics are repeated ``S`` times for one fused batch norm and the
    ``S`` updated copies are averaged back. Eval mode is a plain batch norm.
    """

    def __init__(self, num_features, num_splits, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, input):
        n, c, h, w = input.shape
        s = self.num_splits
        if self.training or not self.track_running_stats:
            mean_split = self.running_mean.repeat(s)
            var_split = self.running_var.repeat(s)
            out = F.batch_norm(
                input.view(-1, c * s, h, w),
                mean_split,
                var_split,
                self.weight.repeat(s),
                self.bias.repeat(s),
                True,
                self.momentum,
                self.eps,
            ).view(n, c, h, w)
            self.running_mean.data.copy_(mean_split.view(s, c).mean(dim=0))
            self.running_var.data.copy_(var_split.view(s, c).mean(dim=0))
            return out
        return F.batch_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            False,
            self.momentum,
            self.eps,
        )


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (same submodule names and registration order)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet layout (7x7 stem and max-pool; ModelBase replaces/drops them)."""

    def __init__(self, layers, num_classes=1000, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.inplanes = 64
        self._norm_layer = norm_layer
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes, blocks, stride=1):
        norm_layer = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * BasicBlock.expansion, stride),
                norm_layer(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, norm_layer)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [
            BasicBlock(self.inplanes, planes, norm_layer=norm_layer) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)


ARCHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class ModelBase(nn.Module):
    """The demo's backbone: a ResNet with a 3x3 stride-1 stem and no max-pool, as ``net``.

    ``net`` = conv1, bn1, relu, layer1-4, avgpool, Flatten, fc (indices 0-9), so the
    ``state_dict`` keys are ``net.0.weight``, ``net.1.running_mean``, ..., ``net.9.bias``.
    ``mlp``: MoCo v2's head (its ``builder.py``): Linear 512-512, ReLU, then the fc (``net.9.0``,
    ``net.9.2``).
    """

    def __init__(self, feature_dim=128, arch="resnet18", bn_splits=16, mlp=False):
        super().__init__()
        norm_layer = (
            partial(SplitBatchNorm, num_splits=bn_splits) if bn_splits > 1 else nn.BatchNorm2d
        )
        resnet = ResNet(ARCHS[arch], num_classes=feature_dim, norm_layer=norm_layer)
        net = []
        for name, module in resnet.named_children():
            if name == "conv1":
                module = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            if isinstance(module, nn.MaxPool2d):
                continue
            if isinstance(module, nn.Linear):
                net.append(nn.Flatten(1))
            net.append(module)
        if mlp:
            net[-1] = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), net[-1])
        self.net = nn.Sequential(*net)

    def forward(self, x):
        return self.net(x)


class ModelMoCo(nn.Module):
    """The demo's MoCo: query encoder, momentum key encoder, a C x K queue of keys.

    ``forward(im1, im2, idx_shuffle)`` takes the shuffle-BN permutation(s) explicitly: a tensor
    of shape N (asymmetric) or 2 x N (row 0 shuffles the first key batch, row 1 the second in
    the symmetric loss), where the demo draws ``torch.randperm`` inside.
    """

    def __init__(
        self,
        dim=128,
        K=4096,
        m=0.99,
        T=0.1,
        arch="resnet18",
        bn_splits=8,
        symmetric=False,
        mlp=False,
    ):
        super().__init__()
        self.K, self.m, self.T, self.symmetric = K, m, T, symmetric
        self.encoder_q = ModelBase(dim, arch, bn_splits, mlp)
        self.encoder_k = ModelBase(dim, arch, bn_splits, mlp)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))  # C x K
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data = param_k.data * self.m + param_q.data * (1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        assert self.K % batch_size == 0
        self.queue[:, ptr : ptr + batch_size] = keys.t()
        self.queue_ptr[0] = (ptr + batch_size) % self.K

    @torch.no_grad()
    def _batch_shuffle_single_gpu(self, x, idx_shuffle):
        idx_unshuffle = torch.argsort(idx_shuffle)
        return x[idx_shuffle], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_single_gpu(self, x, idx_unshuffle):
        return x[idx_unshuffle]

    def contrastive_logits(self, im_q, im_k, idx_shuffle):
        """Returns ``(logits, q, k)``: N x (1 + K) logits / T, positive key in column 0."""
        q = F.normalize(self.encoder_q(im_q), dim=1)  # N x C
        with torch.no_grad():
            im_k_, idx_unshuffle = self._batch_shuffle_single_gpu(im_k, idx_shuffle)
            k = F.normalize(self.encoder_k(im_k_), dim=1)
            k = self._batch_unshuffle_single_gpu(k, idx_unshuffle)  # N x C
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # N x 1
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())  # N x K
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        return logits, q, k

    def contrastive_loss(self, im_q, im_k, idx_shuffle):
        logits, q, k = self.contrastive_logits(im_q, im_k, idx_shuffle)
        labels = torch.zeros(logits.shape[0], dtype=torch.long)
        return nn.CrossEntropyLoss()(logits, labels), q, k

    def forward(self, im1, im2, idx_shuffle):
        idx_shuffle = torch.as_tensor(idx_shuffle, dtype=torch.long)
        if idx_shuffle.dim() == 1:
            idx_shuffle = idx_shuffle.unsqueeze(0)
        with torch.no_grad():
            self._momentum_update_key_encoder()
        if self.symmetric:
            loss_12, q1, k2 = self.contrastive_loss(im1, im2, idx_shuffle[0])
            loss_21, q2, k1 = self.contrastive_loss(im2, im1, idx_shuffle[1])
            loss = loss_12 + loss_21
            k = torch.cat([k1, k2], dim=0)
        else:
            loss, q, k = self.contrastive_loss(im1, im2, idx_shuffle[0])
        self._dequeue_and_enqueue(k)
        return loss


def create_optimizer(model, lr, weight_decay, momentum=0.9):
    """The demo's optimizer: SGD over ``model.parameters()`` (encoder_k never gets a gradient)."""
    return torch.optim.SGD(model.parameters(), lr, weight_decay=weight_decay, momentum=momentum)


def adjust_learning_rate(optimizer, epoch, lr, epochs, cos, schedule):
    """The demo's per-epoch rate (``epoch`` is 1-based there); sets it and returns it."""
    if cos:
        lr *= 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    else:
        for milestone in schedule:
            lr *= 0.1 if epoch >= milestone else 1.0
    if optimizer is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    return lr


def knn_predict(feature, feature_bank, feature_labels, classes, knn_k, knn_t):
    """The demo's weighted kNN: ``feature`` B x D, ``feature_bank`` D x N, labels N.

    Returns the classes ranked by score, B x classes (column 0 is the prediction).
    """
    sim_matrix = torch.mm(feature, feature_bank)  # B x N
    sim_weight, sim_indices = sim_matrix.topk(k=knn_k, dim=-1)  # B x k
    sim_labels = torch.gather(feature_labels.expand(feature.size(0), -1), dim=-1, index=sim_indices)
    sim_weight = (sim_weight / knn_t).exp()
    one_hot = torch.zeros(feature.size(0) * knn_k, classes)
    one_hot = one_hot.scatter(dim=-1, index=sim_labels.view(-1, 1), value=1.0)
    pred_scores = torch.sum(
        one_hot.view(feature.size(0), -1, classes) * sim_weight.unsqueeze(-1), dim=1
    )
    return pred_scores.argsort(dim=-1, descending=True)
