"""Vision Transformer of MoCo v3 (He, Chen, Xie 2021): timm's ``VisionTransformer`` with the
changes of facebookresearch/moco-v3's ``VisionTransformerMoCo`` (vits.py): a fixed 2-D sin-cos
position embedding, its weight initialisation and the optional frozen patch projection.
Parameter names are timm's (``blocks.0.attn.qkv.weight``); LayerNorms hold ``gamma``/``beta``."""

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, Uniform, XavierUniform, initializer


def _dense(in_channels, out_channels, bound=None) -> nn.Dense:
    """Zero bias; weight xavier-uniform, or U(-bound, bound), as VisionTransformerMoCo."""
    weight = XavierUniform() if bound is None else Uniform(bound)
    return nn.Dense(in_channels, out_channels, weight_init=weight, bias_init="zeros")


def _layer_norm(dim) -> nn.LayerNorm:
    return nn.LayerNorm((dim,), epsilon=1e-6)


def sincos_position_embedding(grid, dim, temperature=10000.0) -> np.ndarray:
    """moco-v3's ``build_2d_sincos_position_embedding``: (1, 1 + h*w, dim), zero for the cls token.
    Its ``meshgrid(grid_w, grid_h)`` ('ij') makes ``grid_w`` the slow (row) index of the tokens."""
    h, w = grid
    grid_w, grid_h = np.meshgrid(
        np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (np.arange(dim // 4, dtype=np.float32) / (dim // 4))  # (D/4,)
    out_w, out_h = np.outer(grid_w.ravel(), omega), np.outer(grid_h.ravel(), omega)  # (h*w, D/4)
    emb = np.concatenate([np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)], axis=1)
    return np.concatenate([np.zeros((1, dim), np.float32), emb])[None]


class PatchEmbed(nn.Cell):
    """Non-overlapping ``patch x patch`` convolution (with bias), then tokens: (B, N, D)."""

    def __init__(self, patch, dim, in_channels=3):
        super().__init__()
        bound = math.sqrt(6.0 / (3 * patch * patch + dim))  # xavier-uniform with the patch's fan
        kwargs = dict(stride=patch, pad_mode="valid", has_bias=True, bias_init="zeros")
        self.proj = nn.Conv2d(in_channels, dim, patch, weight_init=Uniform(bound), **kwargs)

    def construct(self, x):
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.reshape(x.shape[0], x.shape[1], -1).swapaxes(1, 2)  # (B, N, D), row-major


class Attention(nn.Cell):
    """Multi-head self-attention: one qkv Dense, softmax(q k^T / sqrt(d_head)) v, proj."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = _dense(dim, 3 * dim, bound=math.sqrt(6.0 / (dim + dim)))  # Q, K, V separately
        self.proj = _dense(dim, dim)

    def construct(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # 3 x (B, heads, N, d_head)
        q, k, v = qkv[0], qkv[1], qkv[2]  # indexed, not unstacked: ONNX exports it
        attn = ops.softmax(ops.matmul(q, k.swapaxes(-2, -1)) * self.scale, axis=-1)  # (B, h, N, N)
        return self.proj(ops.matmul(attn, v).swapaxes(1, 2).reshape(b, n, d))


class Mlp(nn.Cell):
    """fc1 -> exact (erf) GELU -> fc2, hidden width ``ratio * dim``."""

    def __init__(self, dim, ratio=4):
        super().__init__()
        self.fc1, self.fc2 = _dense(dim, ratio * dim), _dense(ratio * dim, dim)
        self.act = nn.GELU(approximate=False)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Cell):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4):
        super().__init__()
        self.norm1, self.attn = _layer_norm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = _layer_norm(dim), Mlp(dim, mlp_ratio)

    def construct(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Cell):
    """ViT as moco-v3's ``VisionTransformerMoCo``: ``forward_features`` is the final-normed cls
    token (timm's pre-logits, ``feature_dim`` wide), ``construct`` the ``head`` on it.
    ``stop_grad_conv1`` freezes the patch projection (the paper's random patch projection)."""

    def __init__(
        self,
        image_size,
        patch_size,
        num_classes,
        embed_dim,
        depth,
        num_heads,
        stop_grad_conv1=False,
    ):
        super().__init__()
        if embed_dim % 4 or embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 and by num_heads")
        grid = (image_size // patch_size, image_size // patch_size)
        self.num_patches, self.feature_dim = grid[0] * grid[1], embed_dim
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = Parameter(initializer(Normal(1e-6), (1, 1, embed_dim), ms.float32))
        pos = sincos_position_embedding(grid, embed_dim)
        self.pos_embed = Parameter(ms.Tensor(pos), requires_grad=False)  # fixed, not trained
        self.blocks = nn.SequentialCell([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = _layer_norm(embed_dim)
        self.head = _dense(embed_dim, num_classes)
        if stop_grad_conv1:
            for param in self.patch_embed.get_parameters():
                param.requires_grad = False

    def _embed(self, x):
        """Images (B, 3, H, W) -> [cls; patch tokens] + position embedding, (B, 1 + N, D)."""
        x = self.patch_embed(x)
        cls = ops.broadcast_to(self.cls_token, (x.shape[0], 1, x.shape[2]))
        return ops.cat((cls, x), axis=1) + self.pos_embed

    def forward_features(self, x):
        """The final-normed cls token, (B, D): what the linear protocol and kNN use."""
        x = self.blocks(self._embed(x))
        return self.norm(x[:, 0])  # LayerNorm is per token: norm(x)[:, 0] == norm(x[:, 0])

    def embed(self, features):
        """The head (or MoCo v3's projector) on ``forward_features``' output."""
        return self.head(features)

    def construct(self, x):
        return self.head(self.forward_features(x))


VITS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 12)}  # (embed_dim, depth, num_heads)


def create_vit(
    arch, num_classes, image_size=32, patch_size=None, stop_grad_conv1=False
) -> VisionTransformer:
    """A ``VITS`` ViT for square ``image_size`` images; ``patch_size`` None: 4 below 64 pixels
    (CIFAR), else 16 (moco-v3's)."""
    if arch not in VITS:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(VITS)}")
    if patch_size is None:
        patch_size = 4 if image_size < 64 else 16
    if patch_size < 1 or image_size % patch_size:
        raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
    embed_dim, depth, num_heads = VITS[arch]
    return VisionTransformer(
        image_size, patch_size, num_classes, embed_dim, depth, num_heads, stop_grad_conv1
    )
