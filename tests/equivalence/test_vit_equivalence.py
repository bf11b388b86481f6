"""Our ViT (src/models/vit.py) computes the numbers of moco-v3's ``VisionTransformerMoCo``.

The reference is tests/equivalence/vit_torch.py, timm's VisionTransformer with moco-v3's changes
re-implemented in PyTorch. Both sides get the same weights (copied MindSpore -> PyTorch by
``torch_name``) and the same images. LayerNorm affines, biases and the cls token are randomised
first: at initialisation they are 1, 0 and ~1e-6, under which a bug in them would not show.
``pytest -s`` prints the measured differences. Runtime: ~15 s (PYNATIVE; torch on one thread).
"""

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is a test-only dependency (requirements-dev.txt); without it the "
    "comparison with the PyTorch reference cannot run",
)

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from equivalence import vit_torch as ref  # noqa: E402
from equivalence.measured import Measured, rel_diff  # noqa: E402
from src.models import vit  # noqa: E402
from src.tools.convert_pytorch import torch_name  # noqa: E402

torch.set_num_threads(1)

# A small ViT: 16x16 images, patch 4 (16 tokens + cls), embed 48, 3 heads of 16, 2 blocks.
SMALL = dict(image_size=16, patch_size=4, num_classes=10, embed_dim=48, depth=2, num_heads=3)
TINY = dict(SMALL, image_size=32, embed_dim=192, depth=12)  # vit_tiny on 32x32 (patch 4)
# Relative (max |ours - reference| / max |reference|), float32 on both sides; measured: 8e-7
# forward, 1.1e-6 gradients, 9e-5 with the tanh GELU planted.
TOL, GRAD_TOL = 5e-6, 1e-5

MEASURED = Measured()
record = MEASURED.record


@pytest.fixture(scope="module", autouse=True)
def print_measurements():
    """Prints the measured differences at the end of the module (visible with ``-s``)."""
    yield
    MEASURED.report()


def randomised(model, seed=0):
    """``model`` with its LayerNorm affines, biases and cls token drawn at random."""
    rng = np.random.default_rng(seed + 100)
    for param in model.get_parameters():
        name, shape = param.name, param.shape
        if name.endswith(".gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith((".beta", ".bias")) or name == "cls_token":
            value = rng.normal(0.0, 0.2, shape)
        else:
            continue
        param.set_data(ms.Tensor(value.astype(np.float32)))
    return model


def build_ours(seed=0, **config):
    """Our ViT (``SMALL`` unless ``config``), randomised."""
    ms.set_seed(seed)
    return randomised(vit.VisionTransformer(**(config or SMALL)), seed)


def reference_of(model, **config):
    """The PyTorch reference holding our model's weights (all keys, strictly)."""
    reference = reference_of_fresh(**(config or SMALL))
    state = {
        torch_name(p.name): torch.from_numpy(p.asnumpy().copy()) for p in model.get_parameters()
    }
    reference.load_state_dict(state, strict=True)
    return reference


def reference_of_fresh(**c):
    """The reference with its own initialisation."""
    sizes = ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes")
    return ref.vit(*(c[key] for key in sizes), stop_grad_conv1=c.get("stop_grad_conv1", False))


def images(seed, n, size):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def outputs(model, reference, x, train):
    """(features, head output) of both sides in train or eval mode."""
    model.set_train(train)
    reference.train(train)
    ours = model.forward_features(ms.Tensor(x)).asnumpy(), model(ms.Tensor(x)).asnumpy()
    with torch.no_grad():
        theirs = reference.forward_features(torch.from_numpy(x)), reference(torch.from_numpy(x))
    return ours, tuple(t.numpy() for t in theirs)


# --------------------------------------------------------------------------- position embedding


@pytest.mark.parametrize("grid, dim", [((4, 4), 48), ((8, 8), 192), ((6, 6), 384), ((2, 3), 8)])
def test_position_embedding_is_the_official_formula(grid, dim):
    ours = vit.sincos_position_embedding(grid, dim)
    official = ref.official_sincos(grid, dim).numpy()
    assert ours.shape == official.shape == (1, 1 + grid[0] * grid[1], dim)
    assert record("position embedding (absolute)", np.abs(ours - official).max()) < 1e-6
    np.testing.assert_array_equal(ours[0, 0], 0)  # the cls position
    # Planted bug: the grid transposed (meshgrid 'xy': w and h swapped) is far off.
    if grid[0] == grid[1]:
        transposed = np.concatenate([ours[..., dim // 2 :], ours[..., : dim // 2]], axis=-1)
        assert np.abs(transposed - official).max() > 0.1


def test_model_position_embedding_is_official_and_fixed():
    model = vit.create_vit("vit_tiny", 10, image_size=32)  # an 8x8 grid
    official = ref.official_sincos((8, 8), 192).numpy()
    assert np.abs(model.pos_embed.asnumpy() - official).max() < 1e-6
    assert not model.pos_embed.requires_grad


# --------------------------------------------------------------------------- initialisation


def test_initialisation_draws_from_the_reference_distributions():
    """Fresh vit_tiny on both sides: per tensor the same spread (std and mean |w|, up to the
    sampling noise), and constants (zero biases, unit LayerNorm scales) exactly equal."""
    ms.set_seed(2)
    torch.manual_seed(2)
    ours = {
        torch_name(p.name): p.asnumpy() for p in vit.create_vit("vit_tiny", 10).get_parameters()
    }
    theirs = {k: v.detach().numpy() for k, v in reference_of_fresh(**TINY).state_dict().items()}
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if value.std() == 0:
            np.testing.assert_array_equal(ours[key], value, err_msg=key)
            continue
        tol = 0.05 + 3 / np.sqrt(value.size)  # sampling noise: 0.06 (qkv) to 0.27 (cls token)
        for stat in (np.std, lambda w: np.abs(w).mean()):
            assert abs(stat(ours[key]) / stat(value) - 1) < tol, key


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_forward_small(train):
    model = build_ours()
    reference = reference_of(model)
    (features, logits), (their_features, their_logits) = outputs(
        model, reference, images(0, 4, 16), train
    )
    mode = "train" if train else "eval"
    assert features.shape == (4, 48) and logits.shape == (4, 10)
    assert record(f"small ViT features, {mode}", rel_diff(features, their_features)) < TOL
    assert record(f"small ViT head output, {mode}", rel_diff(logits, their_logits)) < TOL


def test_forward_vit_tiny():
    assert vit.VITS["vit_tiny"] == (TINY["embed_dim"], TINY["depth"], TINY["num_heads"])
    ms.set_seed(1)
    model = randomised(vit.create_vit("vit_tiny", 10, image_size=32), seed=1)
    reference = reference_of(model, **TINY)
    for train in (True, False):
        (features, logits), (their_features, their_logits) = outputs(
            model, reference, images(1, 2, 32), train
        )
        value = rel_diff(features, their_features)
        assert record("vit_tiny features (32x32, batch 2)", value) < TOL
        assert record("vit_tiny head output", rel_diff(logits, their_logits)) < TOL


# --------------------------------------------------------------------------- gradients


def gradients(model, reference, x, r):
    """d(sum(r * model(x)))/d(x and trainable weights), ours and the reference's, by name."""
    weights = model.trainable_params()
    grad_fn = ms.grad(lambda x: (model(x) * ms.Tensor(r)).sum(), 0, weights)
    grad_x, grad_w = grad_fn(ms.Tensor(x))
    ours = {"input": grad_x.asnumpy(), **{p.name: g.asnumpy() for p, g in zip(weights, grad_w)}}
    x_t = torch.from_numpy(x).requires_grad_(True)
    (reference(x_t) * torch.from_numpy(r)).sum().backward()
    theirs = {"input": x_t.grad.numpy()}
    theirs.update({n: p.grad.numpy() for n, p in reference.named_parameters() if p.requires_grad})
    return ours, theirs


@pytest.mark.parametrize("stop_grad_conv1", [False, True], ids=["trained_patch", "frozen_patch"])
def test_gradients(stop_grad_conv1):
    model = build_ours(**SMALL, stop_grad_conv1=stop_grad_conv1)
    reference = reference_of(model, **SMALL, stop_grad_conv1=stop_grad_conv1)
    x, r = images(2, 4, 16), np.random.default_rng(3).standard_normal((4, 10)).astype(np.float32)
    ours, theirs = gradients(model, reference, x, r)
    assert sorted(torch_name(k) for k in ours) == sorted(theirs)  # the same trainable weights
    assert ("patch_embed.proj.weight" in ours) != stop_grad_conv1
    value, key = max((rel_diff(ours[k], theirs[torch_name(k)]), k) for k in ours)
    assert record("gradients (input and every weight)", value) < GRAD_TOL, key


# --------------------------------------------------------------------------- planted bugs


def test_comparison_catches_tanh_gelu():
    model = build_ours()
    reference = reference_of(model)
    for block in model.blocks:
        block.mlp.act = nn.GELU(approximate=True)  # the tanh approximation
    (features, _), (their_features, _) = outputs(model, reference, images(0, 4, 16), False)
    value = rel_diff(features, their_features)
    assert record("planted bug: tanh GELU (must be > tol)", value) > TOL


def test_comparison_catches_transposed_grid():
    model = build_ours()
    reference = reference_of(model)
    pos = model.pos_embed.asnumpy()  # (1, 1 + 4*4, 48)
    grid = pos[:, 1:].reshape(1, 4, 4, 48).swapaxes(1, 2).reshape(1, 16, 48)  # rows <-> columns
    model.pos_embed.set_data(ms.Tensor(np.concatenate([pos[:, :1], grid], axis=1)))
    (features, _), (their_features, _) = outputs(model, reference, images(0, 4, 16), False)
    value = rel_diff(features, their_features)
    assert record("planted bug: sin-cos grid transposed (must be > tol)", value) > TOL
