"""Our linear protocol's steps equal those of ``main_lincls.py`` (facebookresearch/moco), whose
training loop ``lincls_steps`` below re-writes in PyTorch: the same frozen backbone (our weights,
copied by the converter's mapping), the same fc initialisation and the same augmented batches
(from our ``create_linear_dataset`` on fake CIFAR files). ``pytest -s`` prints the differences."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is a test-only dependency")

import mindspore as ms  # noqa: E402

from equivalence import moco_torch as ref  # noqa: E402
from helpers import write_fake_cifar  # noqa: E402
from src.data import create_linear_dataset, get_dataset  # noqa: E402
from src.data.cifar import load_cifar  # noqa: E402
from src.eval import lincls  # noqa: E402
from src.eval.linear_probe import LinearProbeConfig, linear_probe_lr  # noqa: E402
from src.models import create_backbone  # noqa: E402
from src.models.split_bn import SCRATCH_PREFIX  # noqa: E402
from src.tools.convert_pytorch import mindspore_state_to_torch  # noqa: E402

torch.set_num_threads(1)
CLASSES, BATCH, STEPS = 10, 32, 4
PROBE = LinearProbeConfig(epochs=STEPS, schedule=(2,))  # lr 30, 30, then 3, 3: both rates


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Two epochs of RandomResizedCrop + flip batches of 64 fake CIFAR-10 images."""
    root = write_fake_cifar(tmp_path_factory.mktemp("cifar"), n_train=64, n_test=16)
    split, info = load_cifar("cifar10", root, "train"), get_dataset("cifar10")
    out = []
    for epoch in (1, 2):
        dataset = create_linear_dataset(split, info.mean, info.std, BATCH, 0, epoch, 32)
        out += list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
    return out[:STEPS]


def ours():
    """Our classifier on a ResNet-18 (split BN 8) with random BN affine and statistics."""
    ms.set_seed(0)
    encoder = create_backbone("resnet18", 128, bn_splits=8)
    rng = np.random.default_rng(1)
    for p in encoder.get_parameters():
        if p.name.endswith(("gamma", "moving_variance")):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
        elif p.name.endswith(("beta", "moving_mean")):
            p.set_data(ms.Tensor(rng.normal(0.0, 0.2, p.shape).astype(np.float32)))
    classifier = lincls.FrozenBackboneClassifier(encoder, CLASSES, PROBE.init_std, PROBE.seed)
    return classifier, lincls.LinearTrainStep(classifier, PROBE)


def theirs(classifier):
    """The demo's ResNet-18 holding our weights, its fc replaced as main_lincls.py trains it."""
    encoder = {
        p.name.removeprefix("encoder."): p.asnumpy()
        for p in classifier.encoder.get_parameters()
        if SCRATCH_PREFIX not in p.name
    }
    model = ref.ModelBase(128, "resnet18", bn_splits=8)
    state = mindspore_state_to_torch(encoder)
    model.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
    model.net[-1] = torch.nn.Linear(512, CLASSES)
    with torch.no_grad():  # main_lincls: normal_(0, 0.01), zero_(); here our draw of it
        model.net[-1].weight.copy_(torch.from_numpy(classifier.fc.weight.asnumpy()))
        model.net[-1].bias.zero_()
    return model


def lincls_steps(model, batches, train_mode=False):
    """main_lincls.py: freeze all but the fc, SGD(momentum 0.9, wd 0), model.eval() in train(),
    lr x0.1 at the milestones. Returns the losses and the fc after each step."""
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("net.9.")
    parameters = [p for p in model.parameters() if p.requires_grad]
    assert len(parameters) == 2  # fc.weight, fc.bias
    optimizer = torch.optim.SGD(parameters, PROBE.lr, momentum=0.9, weight_decay=0.0)
    criterion = torch.nn.CrossEntropyLoss()
    model.train(train_mode)  # main_lincls: model.eval(), so BN uses its running statistics
    out = []
    for step, (images, labels) in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = linear_probe_lr(step, PROBE)  # one step per "epoch" here
        loss = criterion(model(torch.from_numpy(images)), torch.from_numpy(labels).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        fc = model.net[-1]
        out.append(
            (loss.item(), fc.weight.detach().numpy().copy(), fc.bias.detach().numpy().copy())
        )
    return out


def our_steps(classifier, step, batches):
    out = []
    for i, (images, labels) in enumerate(batches):
        ms.ops.assign(step.optimizer.learning_rate, ms.Tensor(linear_probe_lr(i, PROBE)))
        loss = step(ms.Tensor(images), ms.Tensor(labels)).asnumpy().item()
        out.append(
            (loss, classifier.fc.weight.asnumpy().copy(), classifier.fc.bias.asnumpy().copy())
        )
    return out


def worst(a, b):
    """The largest relative difference of losses, fc weights and biases over the steps."""
    return max(
        float(np.abs(np.asarray(x) - y).max() / max(np.abs(y).max(), 1e-12))
        for step_a, step_b in zip(a, b)
        for x, y in zip(step_a, step_b)
    )


def test_linear_steps_equal_main_lincls(batches):
    classifier, step = ours()
    reference = theirs(classifier)
    mine, twin = our_steps(classifier, step, batches), lincls_steps(reference, batches)
    difference = worst(mine, twin)
    print(f"\nlinear protocol, {STEPS} steps at lr 30 and 3: max rel. difference {difference:.2g}")
    assert mine[-1][0] != mine[0][0] and np.abs(mine[-1][1]).max() > 0.1  # it really learnt
    assert difference < 1e-5
    # The same comparison sees a backbone with BN in train mode (batch statistics).
    assert worst(mine, lincls_steps(theirs(ours()[0]), batches, train_mode=True)) > 1e-2
