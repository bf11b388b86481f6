"""Export tool (src/tools/export.py): the MindIR, ONNX and torchvision-style exports of encoder_q
compute what the checkpoint's encoder computes; bad requests are one-line errors (exit code 2)."""

import os
import re
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from helpers import REPO_ROOT
from src.eval.evaluate import restore_encoder
from src.eval.features import BackboneAndEmbedding
from src.models import MoCo
from src.tools import export as ex
from src.train.checkpoint import save_checkpoint
from src.train.step import MoCoTrainStep, create_optimizer

DIM, K, SPLITS, BATCH = 16, 32, 4, 3
# float32 through 18 layers, the sums in another order. Measured max |diff| (features up to ~20,
# fc outputs up to ~6): MindIR 0 (features and fc), ONNX 5.7e-6 (features) and 3.8e-6 (fc),
# PyTorch 1.4e-5 (features) and 4.3e-6 (fc); ImageNet stem at 64 px: MindIR 0, PyTorch 1.0e-5.
TOLERANCE = dict(rtol=1e-4, atol=1e-4)
# Random BatchNorm weights and statistics: the initial ones would hide a mix-up of the four.
BN_VALUES = {
    "gamma": lambda rng, n: rng.uniform(0.5, 1.5, n),
    "beta": lambda rng, n: rng.normal(0.0, 0.1, n),
    "moving_mean": lambda rng, n: rng.normal(0.0, 0.1, n),
    "moving_variance": lambda rng, n: rng.uniform(0.5, 1.5, n),
}


def write_checkpoint(folder, stem="cifar", image_size=32) -> str:
    """A MoCo training step's checkpoint (as main.py writes it) with random BatchNorms."""
    model = MoCo(dim=DIM, K=K, bn_splits=SPLITS, stem=stem)
    rng = np.random.default_rng(0)
    for param in model.encoder_q.get_parameters():
        leaf = param.name.rpartition(".")[2]
        if leaf in BN_VALUES:
            param.set_data(ms.Tensor(BN_VALUES[leaf](rng, param.shape).astype(np.float32)))
    settings = dict(arch="resnet18", moco_dim=DIM, moco_k=K, bn_splits=SPLITS, symmetric=False)
    settings.update(mlp=False, stem=stem, image_size=image_size)
    path = str(folder / "model.ckpt")
    save_checkpoint(MoCoTrainStep(model, create_optimizer(model, 0.1, 1e-4)), path, 7, settings)
    return path


def encoder_outputs(checkpoint, size=32):
    """Normalised images, and the restored encoder_q's pooled features and fc output on them."""
    images = np.random.default_rng(1).standard_normal((BATCH, 3, size, size)).astype(np.float32)
    network = BackboneAndEmbedding(restore_encoder(checkpoint)[0])
    features, embedding = (out.asnumpy() for out in network(ms.Tensor(images)))
    assert features.shape == (BATCH, 512) and embedding.shape == (BATCH, DIM)
    return images, features, embedding


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def expected(checkpoint):
    return encoder_outputs(checkpoint)


def test_mindir_has_any_batch_size_and_the_encoders_features(checkpoint, expected, tmp_path):
    images, features, _ = expected
    out = str(tmp_path / "encoder.mindir")
    assert ex.main([checkpoint, out, "--format", "mindir"]) == 0
    assert os.listdir(tmp_path) == ["encoder.mindir"]  # no temporary file left
    graph = nn.GraphCell(ms.load(out))
    np.testing.assert_allclose(graph(ms.Tensor(images)).asnumpy(), features, **TOLERANCE)
    np.testing.assert_allclose(graph(ms.Tensor(images[:1])).asnumpy(), features[:1], **TOLERANCE)


def test_onnx_with_head_runs_in_onnxruntime(checkpoint, expected, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (test-only) is not installed")
    images, _, embedding = expected
    out = str(tmp_path / "encoder.onnx")
    assert ex.main([checkpoint, out, "--format", "onnx", "--with-head", "--batch-size", "3"]) == 0
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("images", [BATCH, 3, 32, 32])]
    (output,) = session.run(["embedding"], {"images": images})
    np.testing.assert_allclose(output, embedding, **TOLERANCE)


def _torch_resnet(torch, state, head, stem="cifar"):
    """The reference's torchvision-style ResNet (with the demo's stem unless ``stem`` is
    "imagenet"), ``state`` loaded strictly."""
    from equivalence.moco_torch import ARCHS, ResNet

    model = ResNet(ARCHS["resnet18"], num_classes=DIM)
    if stem == "cifar":
        model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = torch.nn.Identity()
    model.fc = model.fc if head else torch.nn.Identity()
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_pth_backbone_loads_strictly_into_a_torchvision_resnet(checkpoint, expected, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    images, features, embedding = expected
    for head, name in ((False, "backbone.pth"), (True, "head.pt")):
        args = [checkpoint, str(tmp_path / name), "--format", "pth-backbone"]
        assert ex.main(args + ["--with-head"] * head) == 0
    state = torch.load(tmp_path / "backbone.pth", weights_only=True)
    bn1 = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert list(state)[:6] == ["conv1.weight", *(f"bn1.{key}" for key in bn1)]
    assert "layer2.0.downsample.1.running_var" in state and "fc.weight" not in state
    model = _torch_resnet(torch, state, head=False)
    with torch.no_grad():
        pooled = torch.nn.Sequential(*model.children())(torch.from_numpy(images)).flatten(1)
        fc = _torch_resnet(torch, torch.load(tmp_path / "head.pt", weights_only=True), True).fc
        output = fc(pooled)
    np.testing.assert_allclose(pooled.numpy(), features, **TOLERANCE)
    np.testing.assert_allclose(output.numpy(), embedding, **TOLERANCE)


def test_imagenet_stem_exports_at_the_checkpoints_image_size(tmp_path):
    """torchvision's own stem (7x7 stride 2, max-pool) on 64-pixel images: the MindIR takes
    64x64 input and torchvision's ResNet computes the same features from the .pth."""
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    checkpoint = write_checkpoint(tmp_path, stem="imagenet", image_size=64)
    images, features, _ = encoder_outputs(checkpoint, size=64)
    mindir, pth = str(tmp_path / "encoder.mindir"), str(tmp_path / "backbone.pth")
    assert ex.main([checkpoint, mindir, "--format", "mindir"]) == 0
    assert ex.main([checkpoint, pth, "--format", "pth-backbone"]) == 0
    graph = nn.GraphCell(ms.load(mindir))
    np.testing.assert_allclose(graph(ms.Tensor(images)).asnumpy(), features, **TOLERANCE)
    state = torch.load(pth, weights_only=True)
    assert tuple(state["conv1.weight"].shape) == (64, 3, 7, 7)
    model = _torch_resnet(torch, state, head=False, stem="imagenet")
    with torch.no_grad():
        pooled = torch.nn.Sequential(*model.children())(torch.from_numpy(images)).flatten(1)
    np.testing.assert_allclose(pooled.numpy(), features, **TOLERANCE)


def _error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if "error" in line] == lines[-1:], lines
    return lines[-1]


@pytest.mark.parametrize(
    "out, flags, message",
    [
        ("x.onnx", ["--format", "tflite"], "unknown format 'tflite'; choose from mindir, onnx, "),
        ("x.onnx", ["--format", "mindir"], "--format mindir writes .mindir, not "),
        ("no/x.pth", ["--format", "pth-backbone"], "cannot write .*x.pth: no folder .*no$"),
        (
            "x.onnx",
            ["--format", "onnx", "--batch-size", "0"],
            "--batch-size must be at least 1, not 0$",
        ),
        ("dir.pth", ["--format", "pth-backbone"], "cannot write .*dir.pth: .*Is a directory"),
    ],
)
def test_bad_requests_are_one_line_errors(checkpoint, tmp_path, capsys, out, flags, message):
    (tmp_path / "dir.pth").mkdir()
    assert ex.main([checkpoint, str(tmp_path / out), *flags]) == 2
    assert re.search("error: " + message, _error_line(capsys))
    assert os.listdir(tmp_path) == ["dir.pth"]  # nothing written, no temporary file left


def test_missing_checkpoint_or_torch_is_an_error(checkpoint, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "x.pth")
    assert ex.main([str(tmp_path / "nope.ckpt"), out, "--format", "pth-backbone"]) == 2
    assert _error_line(capsys).endswith(f"error: checkpoint not found: {tmp_path / 'nope.ckpt'}")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert ex.main([checkpoint, out, "--format", "pth-backbone"]) == 2
    assert "error: reading or writing .pth/.pt needs PyTorch" in _error_line(capsys)
    assert not os.path.exists(out)


def test_module_entry_point_exits_with_2_on_errors():
    command = [sys.executable, "-m", "src.tools.export", "a.ckpt", "a.mindir", "--format", "x"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    last_line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2
    assert last_line.endswith("error: unknown format 'x'; choose from mindir, onnx, pth-backbone")
