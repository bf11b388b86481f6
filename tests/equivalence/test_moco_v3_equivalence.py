"""Our MoCo v3 (src/models/moco_v3.py, src/train/optimizer.py, the two schedules of
src/train/schedule.py) computes the numbers of the official PyTorch code (moco_v3_torch.py).

Both sides hold the same weights (copied MindSpore -> PyTorch by name) over our ResNet-18 and the
reference's ``ModelBase`` (BN without splits: v3 has no shuffle BN) and get the same two fixed
16x16 crops of 8 random images. Three planted bugs must exceed the tolerances. ``pytest -s``
prints the measured differences.

Why float64. As in test_equivalence.py: with 2x2 layer4 maps one activation weighs a lot, and
a pre-activation within float32 rounding of zero flips a ReLU on one side only. Here the float32
*reference* does so on the first batch (3.6e-2 on some gradients, where we are within 1e-5 of
float64), so gradients and steps are checked against a float64 copy of the reference, each step
started from our state. Batch 7 at the second step flips a 2.7e-7 pre-activation of ours
(4e-2 on one gradient); batch 10 (``STEP_SEEDS``) flips none."""

import copy
import math
from functools import partial

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is a test-only dependency (requirements-dev.txt); without it the "
    "comparison with the PyTorch reference cannot run",
)

import mindspore as ms  # noqa: E402
from mindspore import nn, ops  # noqa: E402

from equivalence import moco_torch  # noqa: E402
from equivalence import moco_v3_torch as ref  # noqa: E402
from equivalence.measured import Measured, rel_diff  # noqa: E402
from src.models import moco_v3 as moco_v3_module  # noqa: E402
from src.models.moco_v3 import MoCoV3  # noqa: E402
from src.models.resnet import create_backbone  # noqa: E402
from src.tools.convert_pytorch import torch_name  # noqa: E402
from src.train.optimizer import create_v3_optimizer  # noqa: E402
from src.train.schedule import moco_momentum, warmup_cosine_lr  # noqa: E402
from src.train.step import set_learning_rate  # noqa: E402

torch.set_num_threads(1)

DIM, MLP_DIM, T = 16, 32, 0.2
N, SIZE = 8, 16  # batch and crop size
EPOCHS, WARMUP, MOCO_M = 10, 2, 0.99
LRS = {"lars": 0.6, "adamw": 1.5e-3}
WD, MOMENTUM = 0.1, 0.9  # a large decay, so that it shows in one step
STEP_EPOCHS = (1.5, 2.25)  # two steps: one in the warmup, one after it
STEP_SEEDS = (7, 10)  # their batches (why 10: test_training_steps)
TOL = 1e-5  # float32: loss, weights, BN statistics
GRAD_TOL = 1e-4  # gradients and optimizer buffers

MEASURED = Measured()
record = MEASURED.record


@pytest.fixture(scope="module", autouse=True)
def print_measurements():
    """Prints the measured differences at the end of the module (visible with ``-s``)."""
    yield
    MEASURED.report("ours vs reference; mutations: planted bugs", 62)


def worst(ours, reference, what):
    """Worst ``rel_diff`` over the keys of ``reference``; records and returns ``(value, key)``."""
    value, key = max((rel_diff(ours[k], reference[k]), k) for k in reference)
    return record(what, value), key


# --------------------------------------------------------------------------- models and data


def affine_free(model):
    """Names of the constant gamma/beta of our BatchNorm1d(affine=False): PyTorch has none."""
    params = model.base_encoder.get_parameters(), model.predictor.get_parameters()
    names = {
        p.name
        for p in (*params[0], *params[1])
        if p.name.endswith(("gamma", "beta")) and not p.requires_grad
    }
    return names | {name.replace("base_encoder.", "momentum_encoder.", 1) for name in names}


def ours_as_torch(model):
    """Copies of all our tensors under the reference's keys."""
    skip = affine_free(model)
    return {
        torch_name(p.name): p.asnumpy().copy() for p in model.get_parameters() if p.name not in skip
    }


def torch_state(torch_model):
    """A snapshot (copies), without the ``num_batches_tracked`` counters."""
    return {
        key: value.detach().numpy().copy()
        for key, value in torch_model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


def build_ours(seed=0):
    """Our MoCo v3 with non-trivial state: BN affine and running statistics random (independently
    for the two encoders), the momentum encoder 1% away from the base (so the update shows)."""
    ms.set_seed(seed)
    model = MoCoV3(partial(create_backbone, "resnet18", bn_splits=1), DIM, MLP_DIM, T)
    rng, skip = np.random.default_rng(seed + 100), affine_free(model)
    for param in model.get_parameters():
        name, shape = param.name, param.shape
        if name in skip:
            continue
        if name.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "moving_mean")):
            value = rng.normal(0.0, 0.2, shape)
        elif name.startswith("momentum_encoder."):
            value = param.asnumpy() * (1 + 0.01 * rng.standard_normal(shape))
        else:
            continue
        param.set_data(ms.Tensor(value.astype(np.float32)))
    model.set_train(True)
    return model


def reference_of(model):
    """The official MoCo_ResNet holding our model's tensors."""
    torch_model = ref.MoCo_ResNet(
        lambda num_classes: moco_torch.ModelBase(num_classes, "resnet18", bn_splits=1),
        DIM,
        MLP_DIM,
        T,
    )
    state = {key: torch.from_numpy(value) for key, value in ours_as_torch(model).items()}
    missing, unexpected = torch_model.load_state_dict(state, strict=False)
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing)
    return torch_model.train()


def two_crops(seed):
    """Two fixed 16x16 crops (different windows) of the same 8 random 32x32 images."""
    images = np.random.default_rng(seed).standard_normal((N, 3, 32, 32)).astype(np.float32)
    x1 = np.ascontiguousarray(images[:, :, 0:SIZE, 0:SIZE])
    x2 = np.ascontiguousarray(images[:, :, 8 : 8 + SIZE, 12 : 12 + SIZE])
    return x1, x2


@pytest.fixture(scope="module")
def crops():
    return two_crops(7)


def test_parameter_names_are_the_reference_keys():
    model = build_ours()
    reference = reference_of(model)
    assert sorted(ours_as_torch(model)) == sorted(torch_state(reference))
    ours = {torch_name(p.name) for p in model.trainable_params()}
    assert ours == {k for k, p in reference.named_parameters() if p.requires_grad}
    assert {torch_name(p.name) for p in model.params_m} == {
        k for k, _ in reference.momentum_encoder.named_parameters(prefix="momentum_encoder")
    }


# --------------------------------------------------------------------------- loss and gradients


def our_loss_and_grads(model, x1, x2, m):
    """PyNative: the loss and the gradients of every learnable weight of the reference's
    optimizer (``model.parameters()``: base encoder, predictor and momentum encoder). The momentum
    encoder's weights are made differentiable meanwhile: only the stop_gradient keeps theirs 0."""
    params = model.trainable_params() + list(model.params_m)
    for param in model.params_m:
        param.requires_grad = True
    try:
        grad_fn = ms.value_and_grad(model, None, ms.ParameterTuple(params))
        loss, grads = grad_fn(ms.Tensor(x1), ms.Tensor(x2), ms.Tensor(m, ms.float32))
    finally:
        for param in model.params_m:
            param.requires_grad = False
    return float(loss.asnumpy()), {torch_name(p.name): g.asnumpy() for p, g in zip(params, grads)}


def their_loss_and_grads(reference, x1, x2, m, dtype=torch.float32):
    """The reference's loss and gradients (None, for the momentum encoder, as zeros)."""
    reference = reference.to(dtype)
    loss = reference(torch.from_numpy(x1).to(dtype), torch.from_numpy(x2).to(dtype), m)
    loss.backward()
    grads = {
        key: np.zeros(p.shape) if p.grad is None else p.grad.numpy().copy()
        for key, p in reference.named_parameters()
    }
    return loss.item(), grads


@pytest.fixture(scope="module")
def reference_run(crops):
    """The float32 and float64 reference's loss, gradients and state after one forward."""
    m = moco_momentum(STEP_EPOCHS[0], MOCO_M, EPOCHS)
    reference = reference_of(build_ours())
    exact = copy.deepcopy(reference)
    float32 = their_loss_and_grads(reference, *crops, m)
    float64 = their_loss_and_grads(exact, *crops, m, torch.float64)
    return dict(m=m, float32=float32, float64=float64, state=torch_state(reference))


def test_loss_gradients_and_state_after_forward(crops, reference_run):
    model = build_ours()
    loss, grads = our_loss_and_grads(model, *crops, reference_run["m"])
    (loss32, grads32), (_, grads64) = reference_run["float32"], reference_run["float64"]
    assert record("loss", rel_diff(loss, loss32)) < TOL
    assert len(grads) == len(grads64) == 2 * (60 + 4) + 4  # 2 x (ResNet-18 + projector), predictor
    diff, key = worst(grads, grads64, "gradients vs float64 reference")
    assert diff < GRAD_TOL, key
    worst(grads, grads32, "gradients vs float32 reference")
    worst(grads32, grads64, "(control) float32 reference vs float64, gradients")
    momentum_grads = [g for k, g in grads.items() if k.startswith("momentum_encoder.")]
    assert all(np.abs(g).max() == 0 for g in momentum_grads)  # stop_gradient, as torch.no_grad
    # The momentum update with m, and the BN running statistics of the four forwards.
    ours, theirs = ours_as_torch(model), reference_run["state"]
    keys = [k for k in theirs if k.startswith("momentum_encoder.") and "running_" not in k]
    diff, key = worst(ours, {k: theirs[k] for k in keys}, "momentum encoder after the update")
    assert diff < 1e-6, key
    keys = [k for k in theirs if "running_" in k]
    diff, key = worst(ours, {k: theirs[k] for k in keys}, "BN running statistics after forward")
    assert diff < TOL, key


class _NoStopGradient:
    """Stands in for ``mindspore.ops`` in src/models/moco_v3.py: stop_gradient does nothing."""

    def __getattr__(self, name):
        return getattr(ops, name)

    @staticmethod
    def stop_gradient(x):
        return x


class _PredictorOnKeys(MoCoV3):
    """Planted bug: the predictor also on the momentum (key) side."""

    def construct(self, x1, x2, m):
        q1 = self.predictor(self.base_encoder(x1))
        q2 = self.predictor(self.base_encoder(x2))
        self._update_momentum_encoder(m)
        k1 = ops.stop_gradient(self.predictor(self.momentum_encoder(x1)))
        k2 = ops.stop_gradient(self.predictor(self.momentum_encoder(x2)))
        return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)


def test_mutation_keys_without_stop_gradient(crops, reference_run, monkeypatch):
    """The keys depend on the momentum encoder's weights only: the base encoder's gradients stay,
    the momentum encoder's are no longer 0 (the reference's are None; its optimizer holds them)."""
    monkeypatch.setattr(moco_v3_module, "ops", _NoStopGradient())
    _, grads = our_loss_and_grads(build_ours(), *crops, reference_run["m"])
    monkeypatch.undo()
    diff, key = worst(grads, reference_run["float64"][1], "mutation: no stop_gradient, gradients")
    assert diff > 1e3 * GRAD_TOL and key.startswith("momentum_encoder."), key


def test_mutation_predictor_on_keys(crops, reference_run):
    model = build_ours()
    state = {p.name: p.asnumpy().copy() for p in model.get_parameters()}
    mutant = _PredictorOnKeys(partial(create_backbone, "resnet18", bn_splits=1), DIM, MLP_DIM, T)
    for param in mutant.get_parameters():
        param.set_data(ms.Tensor(state[param.name]))
    mutant.set_train(True)
    loss, grads = our_loss_and_grads(mutant, *crops, reference_run["m"])
    assert (
        record("mutation: predictor on keys, loss", rel_diff(loss, reference_run["float32"][0]))
        > 100 * TOL
    )
    diff, _ = worst(grads, reference_run["float64"][1], "mutation: predictor on keys, gradients")
    assert diff > 100 * GRAD_TOL


# --------------------------------------------------------------------------- schedules


def test_schedules_equal_main_moco():
    epochs = [e + i / 7 for e in range(EPOCHS) for i in range(7)] + [EPOCHS]
    for epoch in epochs:
        assert warmup_cosine_lr(epoch, 0.6, EPOCHS, WARMUP) == ref.adjust_learning_rate(
            None, epoch, 0.6, EPOCHS, WARMUP
        )
        assert moco_momentum(epoch, MOCO_M, EPOCHS) == ref.adjust_moco_momentum(
            epoch, MOCO_M, EPOCHS
        )
    assert (
        warmup_cosine_lr(0, 0.6, EPOCHS, WARMUP) == 0 and moco_momentum(0, MOCO_M, EPOCHS) == MOCO_M
    )
    assert moco_momentum(EPOCHS, MOCO_M, EPOCHS) == 1.0


def test_mutation_momentum_schedule_reversed():
    """m from 1 down to ``m``: the momentum encoder after one update leaves the tolerance."""

    def reversed_momentum(epoch, m, epochs):
        return 1.0 - 0.5 * (1.0 - math.cos(math.pi * epoch / epochs)) * (1.0 - m)

    epoch = STEP_EPOCHS[0]
    model = build_ours()
    reference = reference_of(model)
    model._update_momentum_encoder(ms.Tensor(reversed_momentum(epoch, MOCO_M, EPOCHS), ms.float32))
    reference._update_momentum_encoder(ref.adjust_moco_momentum(epoch, MOCO_M, EPOCHS))
    ours, theirs = ours_as_torch(model), torch_state(reference)
    keys = [k for k in theirs if k.startswith("momentum_encoder.") and "running_" not in k]
    diff, _ = worst(ours, {k: theirs[k] for k in keys}, "mutation: momentum schedule reversed")
    assert diff > 100 * 1e-6


# --------------------------------------------------------------------------- training steps


class V3Step(nn.Cell):
    """A compiled training step: loss and gradients of the MoCoV3 cell (the momentum update
    inside), then the optimizer."""

    def __init__(self, model, optimizer):
        super().__init__(auto_prefix=False)
        self.model, self.optimizer = model, optimizer
        self.grad_fn = ms.value_and_grad(model, None, optimizer.parameters)

    def construct(self, x1, x2, m):
        loss, grads = self.grad_fn(x1, x2, m)
        self.optimizer(grads)
        return loss


_BUFFERS = {"lars": ("mu",), "adamw": ("exp_avg", "exp_avg_sq")}


def our_buffers(optimizer, name):
    entries = {p.name: p.asnumpy().copy() for p in optimizer.get_parameters()}
    return {
        f"{buffer} {torch_name(p.name)}": entries[f"{buffer}.{p.name}"]
        for buffer in _BUFFERS[name]
        for p in optimizer.parameters
    }


def their_buffers(reference, optimizer, name):
    params = dict(reference.named_parameters())
    return {
        f"{buffer} {key}": optimizer.state[params[key]][buffer].numpy().copy()
        for buffer in _BUFFERS[name]
        for key in params
        if params[key].requires_grad
    }


def sync_reference(reference, optimizer, name, model, our_optimizer, steps_done):
    """Puts our state (weights, BN statistics, optimizer buffers and step) into the reference."""
    state = ours_as_torch(model)
    with torch.no_grad():
        for key, value in reference.state_dict().items():
            if key in state:
                value.copy_(torch.from_numpy(state[key]))
    if not steps_done:
        return
    params = dict(reference.named_parameters())
    for label, value in our_buffers(our_optimizer, name).items():
        buffer, key = label.split(" ")
        optimizer.state[params[key]][buffer] = torch.from_numpy(value).to(params[key].dtype)
        if name == "adamw":
            optimizer.state[params[key]]["step"] = torch.tensor(float(steps_done))


def torch_step(reference, optimizer, name, x1, x2, epoch, dtype):
    """main_moco.py's iteration: rate and momentum of the (fractional) epoch, loss, step."""
    ref.adjust_learning_rate(optimizer, epoch, LRS[name], EPOCHS, WARMUP)
    m = ref.adjust_moco_momentum(epoch, MOCO_M, EPOCHS)
    loss = reference(torch.from_numpy(x1).to(dtype), torch.from_numpy(x2).to(dtype), m)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def weights_diff(ours, reference, optimizer, name, label):
    """Worst relative difference of the learnable weights after a step. AdamW's step is about
    ``lr * sign(g)`` wherever ``|g|`` is tiny, so a float32 rounding of such a gradient (1e-5 of
    the largest) moves that weight by up to ``2 lr``: for AdamW, only weights whose gradient RMS
    ``sqrt(exp_avg_sq)`` is at least 1% of their tensor's largest count."""
    params = {key: p for key, p in reference.named_parameters() if p.requires_grad}
    theirs = {key: p.detach().numpy() for key, p in params.items()}
    if name == "adamw":
        state = {key: optimizer.state[p]["exp_avg_sq"].numpy() for key, p in params.items()}
        masks = {key: np.sqrt(v) >= 0.01 * np.sqrt(v).max() for key, v in state.items()}
        ours = {key: np.where(masks[key], ours[key], theirs[key]) for key in theirs}
        record(
            f"{label}: fraction of weights left out",
            1 - float(np.mean(np.concatenate([m.ravel() for m in masks.values()]))),
        )
    return worst(ours, theirs, f"{label}: weights")


@pytest.mark.parametrize("name", ["lars", "adamw"])
def test_training_steps(name):
    """Momentum update (m of the cosine schedule), loss, then LARS or AdamW at the rate of the
    warmup-cosine schedule, set per step: two compiled steps, each against a float64 reference
    step from our state (weights, BN statistics, optimizer buffers); float32 only recorded."""
    model = build_ours()
    references = {"float32": reference_of(model)}
    references["float64"] = copy.deepcopy(references["float32"]).double()
    optimizers = {
        precision: ref.create_optimizer(name, reference, LRS[name], WD, MOMENTUM)
        for precision, reference in references.items()
    }
    optimizer = create_v3_optimizer(name, model.trainable_params(), 0.0, WD, MOMENTUM)
    step = V3Step(model, optimizer)
    step.set_train(True)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        for index, (epoch, seed) in enumerate(zip(STEP_EPOCHS, STEP_SEEDS)):
            x1, x2 = two_crops(seed)
            for precision, reference in references.items():
                sync_reference(reference, optimizers[precision], name, model, optimizer, index)
            set_learning_rate(optimizer, warmup_cosine_lr(epoch, LRS[name], EPOCHS, WARMUP))
            m = ms.Tensor(moco_momentum(epoch, MOCO_M, EPOCHS), ms.float32)
            loss = float(step(ms.Tensor(x1), ms.Tensor(x2), m).asnumpy())
            ours, buffers = ours_as_torch(model), our_buffers(optimizer, name)
            for precision, reference in references.items():
                dtype = torch.float32 if precision == "float32" else torch.float64
                torch_optimizer = optimizers[precision]
                their_loss = torch_step(reference, torch_optimizer, name, x1, x2, epoch, dtype)
                label = f"{name} step {index + 1} vs {precision}"
                theirs = torch_state(reference)
                momentum_keys = [k for k in theirs if k.startswith("momentum_encoder.")]
                diffs = {
                    "loss": (record(f"{label}: loss", rel_diff(loss, their_loss)), "loss"),
                    "weights": weights_diff(ours, reference, torch_optimizer, name, label),
                    "momentum encoder": worst(
                        ours,
                        {k: theirs[k] for k in momentum_keys if "running_" not in k},
                        f"{label}: momentum encoder",
                    ),
                    "BN statistics": worst(
                        ours,
                        {k: v for k, v in theirs.items() if "running_" in k},
                        f"{label}: BN statistics",
                    ),
                    "buffers": worst(
                        buffers,
                        their_buffers(reference, torch_optimizer, name),
                        f"{label}: optimizer buffers",
                    ),
                }
                if precision == "float64":  # the float32 reference flips a ReLU: see above
                    for what, (diff, key) in diffs.items():
                        assert diff < (GRAD_TOL if what == "buffers" else TOL), (what, key)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
