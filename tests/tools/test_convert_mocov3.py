"""MoCo v3 converter (src/tools/convert_mocov3.py): official checkpoints of a PyTorch twin
(moco_v3_torch.py's builder over a torchvision-named ResNet-18, vit_torch.py's timm ViT-Tiny)
become ours, compute the twin's features and loss, and come back exactly; the errors.
``pytest -s`` prints the measured differences."""

import time
from functools import partial

import mindspore as ms
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is a test-only dependency (requirements-dev.txt): it writes .pth"
)

from equivalence import moco_torch, vit_torch  # noqa: E402
from equivalence import moco_v3_torch as ref  # noqa: E402
from src.eval.evaluate import restore_encoder  # noqa: E402
from src.models import MoCoV3, create_encoder  # noqa: E402
from src.tools import ConversionError  # noqa: E402
from src.tools import convert_mocov3 as cv3  # noqa: E402
from src.tools import convert_pytorch as cv  # noqa: E402
from src.train.checkpoint import MODEL_KEYS, V3_KEYS, load_checkpoint  # noqa: E402
from src.train.optimizer import create_v3_optimizer  # noqa: E402
from src.train.step import V3TrainStep  # noqa: E402

torch.set_num_threads(1)
DIM, MLP_DIM, T, M, N = 16, 32, 1.0, 0.99, 4
TOL = 1e-5  # float32, relative to the largest value
# torchvision's ResNet module of the demo's net.N (as src/tools/export.py's table)
TORCHVISION = {"0": "conv1", "1": "bn1", "3": "layer1", "4": "layer2", "5": "layer3"}
TORCHVISION.update({"6": "layer4", "9": "fc"})
CASES = {  # kind: (arch, optimizer, lr, image size, stop_grad_conv1)
    "resnet": ("resnet18", "lars", 0.3, 64, False),
    "vit": ("vit_tiny", "adamw", 1e-3, 32, True),
}


class MoCoViT(ref.MoCo):
    """The official ``MoCo_ViT`` (moco/builder.py)."""

    def _build_projector_and_predictor_mlps(self, dim, mlp_dim):
        hidden = self.base_encoder.head.weight.shape[1]
        self.base_encoder.head = self._build_mlp(3, hidden, mlp_dim, dim)
        self.momentum_encoder.head = self._build_mlp(3, hidden, mlp_dim, dim)
        self.predictor = self._build_mlp(2, dim, mlp_dim, dim)


def torchvision_resnet18(num_classes):
    """ModelBase with torchvision's stem: 7x7 stride-2 conv, then ReLU and max-pool."""
    model = moco_torch.ModelBase(num_classes, "resnet18", bn_splits=1)
    model.net[0] = torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    model.net[2] = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1))
    return model


def official_key(key):
    """The twin's key as in moco-v3's DDP state_dict (torchvision names for net.N)."""
    part, rest = key.split(".", 1)
    if rest.startswith("net."):
        _, index, leaf = rest.split(".", 2)
        rest = f"{TORCHVISION[index]}.{leaf}"
    return f"module.{part}.{rest}"


def build_twin(kind, seed=0):
    torch.manual_seed(seed)
    if kind == "resnet":
        return ref.MoCo_ResNet(torchvision_resnet18, DIM, MLP_DIM, T)
    vit = partial(vit_torch.vit, 32, 4, 192, 12, 3, stop_grad_conv1=CASES[kind][4])
    return MoCoViT(vit, DIM, MLP_DIM, T)


def crops(seed, size):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((N, 3, size, size)).astype(np.float32) for _ in range(2)]


@pytest.fixture(scope="module", params=list(CASES))
def official(request, tmp_path_factory):
    """(kind, twin after one step of main_moco.py's optimizer, the optimizer, its .pth.tar)."""
    kind, (arch, name, lr, size, _) = request.param, CASES[request.param]
    twin = build_twin(kind)
    optimizer = ref.create_optimizer(name, twin, lr, 0.1)
    twin(*(torch.from_numpy(x) for x in crops(0, size)), M).backward()
    optimizer.step()
    path = tmp_path_factory.mktemp(kind) / "checkpoint_0000.pth.tar"
    state = {official_key(k): v for k, v in twin.state_dict().items()}
    scaler = dict(scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000)
    checkpoint = dict(epoch=1, arch=arch, state_dict=state, optimizer=optimizer.state_dict())
    torch.save({**checkpoint, "scaler": {**scaler, "_growth_tracker": 0}}, path)
    return kind, twin, optimizer, path


def rel_diff(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))


def test_official_to_ours_computes_the_same_and_comes_back(official, tmp_path):
    kind, twin, optimizer, path = official
    arch, name, _, size, stop_grad_conv1 = CASES[kind]
    started = time.perf_counter()
    ckpt = tmp_path / "model_last.ckpt"
    meta = cv3.convert_pth_to_ckpt(str(path), str(ckpt), image_size=size)
    expected = dict(arch=arch, moco_dim=DIM, moco_mlp_dim=MLP_DIM, image_size=size, epoch=1)
    expected.update(method="v3", moco_k=0, bn_splits=1, symmetric=True, mlp=False)
    assert {k: meta[k] for k in expected} == expected
    assert meta["stop_grad_conv1"] is stop_grad_conv1  # read off the optimizer's state
    assert meta["stem"] == ("imagenet" if kind == "resnet" else "cifar")

    x1, x2 = crops(1, size)
    encoder, _ = restore_encoder(str(ckpt))  # infer.py's encoder
    features = encoder.forward_features(ms.Tensor(x1))
    ours = features.asnumpy(), encoder.embed(features).asnumpy()
    base = twin.base_encoder.eval()
    with torch.no_grad():
        if kind == "resnet":
            theirs = base.net[:-1](torch.from_numpy(x1))
            theirs = theirs, base.net[-1](theirs)
        else:
            theirs = base.forward_features(torch.from_numpy(x1))
            theirs = theirs, base.head(theirs)
    diffs = [rel_diff(a, b.numpy()) for a, b in zip(ours, theirs)]

    build = partial(create_encoder, arch, DIM, stem=meta["stem"], image_size=size)
    model = MoCoV3(partial(build, stop_grad_conv1=stop_grad_conv1), DIM, MLP_DIM, T)
    step = V3TrainStep(model, create_v3_optimizer(name, model.trainable_params(), 0.0, 0.1))
    assert load_checkpoint(step, str(ckpt), {k: meta[k] for k in MODEL_KEYS + V3_KEYS}) == 1
    twin.train(), model.set_train(True)
    with torch.no_grad():  # main.py --resume's model; each side updates its momentum encoder
        their_loss = twin(torch.from_numpy(x1), torch.from_numpy(x2), M).item()
    our_loss = float(model(ms.Tensor(x1), ms.Tensor(x2), ms.Tensor(M, ms.float32)).asnumpy())
    diffs.append(rel_diff(our_loss, their_loss))
    print(f"\n{kind}: features, projector, loss rel. diff {', '.join(f'{d:.2g}' for d in diffs)}")
    assert max(diffs) < TOL, diffs
    slots = {p.name: p.asnumpy() for p in step.optimizer.get_parameters()}
    param = (
        twin.base_encoder.blocks[0].attn.qkv.weight if kind == "vit" else twin.predictor[0].weight
    )
    field, ours_name = cv3.FIELDS[name][-1], "predictor.0.weight"
    ours_name = "base_encoder.blocks.0.attn.qkv.weight" if kind == "vit" else ours_name
    np.testing.assert_array_equal(slots[f"{field}.{ours_name}"], optimizer.state[param][field])

    back = tmp_path / "back.pth.tar"
    assert cv3.main([str(ckpt), str(back)]) == 0
    original, again = torch.load(path, weights_only=True), torch.load(back, weights_only=True)
    assert list(again["state_dict"]) == list(original["state_dict"])  # the same keys, in order
    for key, value in original["state_dict"].items():
        if not key.endswith("num_batches_tracked"):  # not kept: exported as 0
            assert torch.equal(again["state_dict"][key], value), key
    old, new = original["optimizer"], again["optimizer"]
    assert new["param_groups"][0]["params"] == old["param_groups"][0]["params"]
    assert new["param_groups"][0]["lr"] == old["param_groups"][0]["lr"]
    assert list(new["state"]) == list(old["state"])
    for index, state in old["state"].items():
        assert all(torch.equal(new["state"][index][f], v) for f, v in state.items()), index
    assert (again["epoch"], again["arch"]) == (1, arch)

    fresh = build_twin(kind, seed=1)  # what main_moco.py --resume does, then one more step
    names = {official_key(key): key for key in fresh.state_dict()}  # ModelBase's net.N
    fresh.load_state_dict({names[key]: value for key, value in again["state_dict"].items()})
    resumed = ref.create_optimizer(name, fresh, 0.0, 0.1)
    resumed.load_state_dict(again["optimizer"])
    torch.amp.GradScaler("cpu").load_state_dict(again["scaler"])
    fresh(*(torch.from_numpy(x) for x in crops(2, size)), M).backward()
    resumed.step()
    print(f"{kind}: {time.perf_counter() - started:.1f} s")


def test_flags_that_contradict_the_file(official, tmp_path):
    kind, _, _, path = official
    with pytest.raises(ConversionError, match="moco_dim=32 but the tensors say 16"):
        cv3.convert_pth_to_ckpt(str(path), str(tmp_path / "a.ckpt"), moco_dim=32)
    with pytest.raises(ConversionError, match="arch='resnet34'"):
        cv3.convert_pth_to_ckpt(str(path), str(tmp_path / "a.ckpt"), arch="resnet34")
    if kind == "vit":  # the position embedding fixes the image size of a ViT
        with pytest.raises(ConversionError, match="image_size=64 but the tensors say 32"):
            cv3.convert_pth_to_ckpt(str(path), str(tmp_path / "a.ckpt"), image_size=64)
        return
    ckpt = tmp_path / "a.ckpt"
    cv3.convert_pth_to_ckpt(str(path), str(ckpt))
    with pytest.raises(ConversionError, match="moco_mlp_dim=64 but .* has 32"):
        cv3.convert_ckpt_to_pth(str(ckpt), str(tmp_path / "b.pth"), moco_mlp_dim=64)
    with pytest.raises(ConversionError, match="image_size=32 but .* has 224"):
        cv3.convert_ckpt_to_pth(str(ckpt), str(tmp_path / "b.pth"), image_size=32)
    with pytest.raises(ConversionError, match="convert_mocov3"):  # a v3 file to the v1/v2 tool
        cv.convert_ckpt_to_pth(str(ckpt), str(tmp_path / "b.pth"))
    with pytest.raises(ConversionError, match="convert_mocov3"):
        cv.convert_pth_to_ckpt(str(path), str(tmp_path / "b.ckpt"))
    assert not list(tmp_path.glob("b.*"))


def test_files_that_do_not_fit(tmp_path):
    v1 = tmp_path / "moco_v1.pth"
    weights = {"encoder_q.net.0.weight": torch.zeros(64, 3, 3, 3), "queue": torch.zeros(16, 32)}
    torch.save({"epoch": 3, "state_dict": weights}, v1)
    with pytest.raises(ConversionError, match="src.tools.convert_pytorch"):
        cv3.convert_pth_to_ckpt(str(v1), str(tmp_path / "out.ckpt"))
    ckpt = tmp_path / "v1.ckpt"  # no method recorded: v1/v2
    data = [{"name": "encoder_q.net.0.weight", "data": ms.Tensor(np.zeros((64, 3, 3, 3)))}]
    ms.save_checkpoint(data, str(ckpt), append_dict={"arch": "resnet18", "moco_dim": 16})
    with pytest.raises(ConversionError, match="src.tools.convert_pytorch"):
        cv3.convert_ckpt_to_pth(str(ckpt), str(tmp_path / "out.pth"))
    partial_v3 = {"module.base_encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}
    torch.save({"state_dict": partial_v3}, tmp_path / "broken.pth")
    with pytest.raises(ConversionError, match="predictor"):
        cv3.convert_pth_to_ckpt(str(tmp_path / "broken.pth"), str(tmp_path / "out.ckpt"))
    assert cv3.main([str(v1), str(tmp_path / "out.pth")]) == 2  # no direction
    assert not list(tmp_path.glob("out.*"))
