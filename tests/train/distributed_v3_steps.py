"""MoCo v3 steps on fixed inputs, on 2 msrun workers and on one device; or main.py on msrun.

    msrun --worker_num=2 ... tests/train/distributed_v3_steps.py OUT                # steps
    msrun --worker_num=2 ... tests/train/distributed_v3_steps.py OUT --main ARGS    # main.py ARGS
    python tests/train/distributed_v3_steps.py OUT                                  # reference

Steps: one global batch of B view pairs per step; device r takes global rows r*n..(r+1)*n-1
(n = B/2), as ``create_train_dataset`` shards a batch. The 1-device reference
(:class:`HalvesReference`, world 1) runs the whole batch, each half through the encoders and the
predictor on its own, so its BatchNorms normalise what device r's do (half r) and its keys are
the two halves in rank order: what 2 devices compute, with the all-gather, the label offset
``n * rank`` and the gradient averaging replaced by one loss over the global batch. Gradients
are recorded by :class:`RecordingSGD` (plain SGD: LARS would hide a gradient scale).

After the steps, rank 0 runs the reference from the same initial weights. ``V3_MUTATION``
plants one of ``MUTATIONS`` in the workers (not in the reference): labels without the rank
offset, keys not gathered, gradients summed instead of averaged. Each worker writes
``OUT/rank<R>.npz``, rank 0 (or the plain ``python`` run) also ``OUT/reference.npz``: the losses
and, after each step, flat vectors (rank 1: their SHA-256 digests only).

``--main ARGS``: ``main.main(ARGS)``, then each worker writes its model's parameters (BN
statistics included) to ``OUT/main_rank<R>.npz``, so the test can compare the two ranks.
"""

import functools
import hashlib
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402
from mindspore import nn, ops  # noqa: E402

from src.models import MoCoV3, create_encoder  # noqa: E402
from src.models.moco import _normalize  # noqa: E402
from src.train.step import V3TrainStep  # noqa: E402
from src.utils.device import set_device  # noqa: E402
from src.utils.distributed import init_distributed, is_scheduler  # noqa: E402

BATCH, SIZE, DIM, MLP_DIM, STEPS = 8, 16, 16, 32, 2
T, LR, MOMENTUM = 0.2, 0.05, 0.9
WORLD = 2
MUTATION = "V3_MUTATION"  # a planted bug in the 2 workers: one of MUTATIONS
MUTATIONS = ("no_offset", "no_gather", "summed_grads")


def global_inputs(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The two views (B, 3, SIZE, SIZE) of one step, in global rows."""
    views = np.random.default_rng([11, step]).standard_normal((2, BATCH, 3, SIZE, SIZE))
    return views[0].astype(np.float32), views[1].astype(np.float32)


class HalvesReference(MoCoV3):
    """One device (world 1) computing what 2 devices do: each half of the batch through the
    encoders and the predictor alone (device r's BatchNorm statistics), keys concatenated in
    rank order, one InfoNCE over all 2n queries against all 2n keys."""

    def _halves(self, cell, x):
        n = x.shape[0] // 2
        return ops.concat((cell(x[:n]), cell(x[n:])))

    def _query(self, x):
        return self.predictor(self.base_encoder(x))

    def construct(self, x1, x2, m):
        q1 = self._halves(self._query, x1)
        q2 = self._halves(self._query, x2)
        self._update_momentum_encoder(m)
        k1 = ops.stop_gradient(self._halves(self.momentum_encoder, x1))
        k2 = ops.stop_gradient(self._halves(self.momentum_encoder, x2))
        return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)


class NoGather(MoCoV3):
    """Planted bug: each device scores its queries against its own keys only."""

    def contrastive_loss(self, q, k):
        q, k = _normalize(q), _normalize(k)
        logits = ops.matmul(q, k.T) / self.T
        labels = ops.arange(logits.shape[0], dtype=ms.int32)
        return ops.cross_entropy(logits, labels) * (2 * self.T)


class RecordingSGD(nn.Cell):
    """``p <- p - lr * g``, keeping the last gradients ``g`` in ``grads`` (same order)."""

    def __init__(self, params, lr):
        super().__init__(auto_prefix=False)
        self.parameters = ms.ParameterTuple(params)
        self.grads = self.parameters.clone(prefix="recorded", init="zeros")
        self.lr = lr

    def construct(self, grads):
        for param, grad, recorded in zip(self.parameters, grads, self.grads):
            ops.assign(recorded, grad)
            ops.assign(param, param - self.lr * grad)
        return True


def build(cls, rank: int, world: int, initial=None):
    """A ``cls`` (a MoCoV3) of the tiny ResNet-18, with ``initial`` weights if given, and its
    step with :class:`RecordingSGD`."""
    ms.set_seed(0)
    encoder = functools.partial(create_encoder, "resnet18", DIM, stem="cifar", image_size=SIZE)
    model = cls(encoder, DIM, MLP_DIM, T, rank=rank, world=world)
    if initial is not None:
        for p in model.get_parameters():
            p.set_data(ms.Tensor(initial[p.name]))
    step = V3TrainStep(model, RecordingSGD(model.trainable_params(), LR))
    step.set_train(True)
    return model, step


def snapshot(model: MoCoV3) -> dict[str, np.ndarray]:
    return {p.name: p.asnumpy().copy() for p in model.get_parameters()}


def state(model: MoCoV3, train_step: V3TrainStep) -> dict[str, np.ndarray]:
    """Flat vectors: the trained weights ``b`` (base encoder and predictor), their gradients
    ``grad``, the momentum encoder's weights ``m``."""
    flat = lambda params: np.concatenate([p.asnumpy().ravel() for p in params])  # noqa: E731
    parts = (train_step.optimizer.parameters, train_step.optimizer.grads, model.params_m)
    return {name: flat(params) for name, params in zip(("b", "grad", "m"), parts)}


def digest(values: np.ndarray) -> str:
    return hashlib.sha256(values.tobytes()).hexdigest()


def train(model, train_step, rows, keep=("grad", "b", "m")) -> dict:
    """``STEPS`` steps on ``rows`` of the global batch: the losses, after each step the digest
    of every vector of ``state`` and the vectors named in ``keep`` (11 M floats each)."""
    losses, arrays = [], {}
    for step in range(1, STEPS + 1):
        x1, x2 = global_inputs(step - 1)
        m = ms.Tensor(MOMENTUM, ms.float32)
        loss, finite = train_step(ms.Tensor(x1[rows]), ms.Tensor(x2[rows]), m)
        assert bool(finite.asnumpy()), f"non-finite gradients at step {step}"
        losses.append(float(loss.asnumpy()))
        for name, values in state(model, train_step).items():
            arrays[f"digest_{name}{step}"] = digest(values)
            if name in keep:
                arrays[f"{name}{step}"] = values
    return {"losses": np.array(losses), **arrays}


def reference(initial) -> dict[str, np.ndarray]:
    model, train_step = build(HalvesReference, 0, 1, initial)
    return train(model, train_step, slice(None))


def under_test(rank: int):
    """The 2-device model and step; with the bug ``V3_MUTATION`` names, if it names one."""
    mutation = os.environ.get(MUTATION, "")
    assert mutation in ("", *MUTATIONS), f"{MUTATION}={mutation}: not one of {MUTATIONS}"
    if mutation == "no_offset":  # every device's positives at columns 0..n-1: rank 0's keys
        return build(MoCoV3, 0, WORLD)
    if mutation == "no_gather":
        return build(NoGather, rank, WORLD)
    model, train_step = build(MoCoV3, rank, WORLD)
    if mutation == "summed_grads":  # the devices' gradients summed, not averaged
        params = train_step.optimizer.parameters
        train_step.grad_reducer = nn.DistributedGradReducer(params, False)
    return model, train_step


def run_steps(out: str) -> None:
    set_device("CPU", ms.GRAPH_MODE)
    os.makedirs(out, exist_ok=True)
    if "MS_ROLE" not in os.environ:  # one device: the reference from the same initial weights
        initial = snapshot(build(MoCoV3, 0, 1)[0])
        np.savez(os.path.join(out, "reference.npz"), **reference(initial))
        return
    group = init_distributed(True)
    if is_scheduler():
        return
    assert group.size == WORLD, group.size
    n = BATCH // WORLD
    rows = slice(group.rank * n, (group.rank + 1) * n)
    model, train_step = under_test(group.rank)
    initial, initial_b = snapshot(model), state(model, train_step)["b"]
    keep = ("grad", "b", "m") if group.rank == 0 else ()  # rank 1: digests
    arrays = train(model, train_step, rows, keep=keep)
    arrays["initial_digest_b"] = digest(initial_b)
    if group.rank == 0:  # how far the trained weights moved, relative
        moved = np.linalg.norm(arrays[f"b{STEPS}"] - initial_b) / np.linalg.norm(initial_b)
        arrays["moved"] = np.array(moved)
    np.savez(os.path.join(out, f"rank{group.rank}.npz"), **arrays)
    if group.rank == 0:
        np.savez(os.path.join(out, "reference.npz"), **reference(initial))


def run_main(out: str, argv: list[str]) -> int:
    """``main.main(argv)``; then this worker's model parameters to ``OUT/main_rank<R>.npz``."""
    import main as main_module

    built = {}
    create = main_module.create_model_and_step

    def create_and_keep(args, group):
        built["model"], built["rank"] = (model_and_step := create(args, group))[0], group.rank
        return model_and_step

    main_module.create_model_and_step = create_and_keep
    code = main_module.main(argv)
    if "model" in built:  # not in msrun's scheduler process
        os.makedirs(out, exist_ok=True)
        np.savez(os.path.join(out, f"main_rank{built['rank']}.npz"), **snapshot(built["model"]))
    return code


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--main":
        sys.exit(run_main(sys.argv[1], sys.argv[3:]))
    run_steps(sys.argv[1])
