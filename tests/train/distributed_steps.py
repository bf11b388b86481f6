"""A few MoCo training steps on fixed inputs, on msrun's workers or on one device.

    msrun --worker_num=2 ... tests/train/distributed_steps.py OUT   # 2 devices, bn-splits 1
    python tests/train/distributed_steps.py OUT                     # 1 device, bn-splits 2

Both see one global batch of B fixed view pairs and one fixed shuffle-BN permutation per
step. Device r holds global rows r*n..(r+1)*n-1 (n = B/2), one BN group. The single device
holds the same images interleaved (its row 2a+r is global row r*n+a) so that split-BN group
r (rows i % 2 == r) is device r's images, and its permutations are mapped likewise. Each
process writes OUT/rank<R>.npz: the losses and, after each step, the state of ``state``.
``--no-shuffle`` (a mutation for the note) skips shuffle BN, as without the global gather.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402

from src.models import MoCo  # noqa: E402
from src.train.step import MoCoTrainStep, create_optimizer  # noqa: E402
from src.utils.device import set_device  # noqa: E402
from src.utils.distributed import init_distributed, is_scheduler  # noqa: E402

BATCH, STEPS, SIZE, K, DIM = 16, 3, 16, 32, 16


def global_inputs(step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """View pairs (B, 3, SIZE, SIZE) and a 2 x B permutation of one step, in global rows."""
    rng = np.random.default_rng([7, step])
    views = rng.standard_normal((2, BATCH, 3, SIZE, SIZE)).astype(np.float32)
    permutations = np.stack([rng.permutation(BATCH) for _ in range(2)]).astype(np.int32)
    return views[0], views[1], permutations


def single_device_row(j: np.ndarray, world: int) -> np.ndarray:
    """The single device's row of global row ``j`` (device ``j // n``, its row ``j % n``)."""
    n = BATCH // world
    return world * (j % n) + j // n


def state(model: MoCo) -> dict[str, np.ndarray]:
    """Flat vectors: encoder weights (``q``, ``k``), BN statistics (``stats``), ``queue``."""
    parts = {"q": [], "k": [], "stats": []}
    for p in model.get_parameters():
        if "scratch" in p.name or p.name.startswith("queue"):
            continue
        name = "stats" if "moving" in p.name else p.name[len("encoder_")]
        parts[name].append(p.asnumpy().ravel())
    flat = {name: np.concatenate(values) for name, values in parts.items()}
    return {**flat, "queue": model.queue.asnumpy()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--no-shuffle", action="store_true")
    args = parser.parse_args()
    set_device("CPU", ms.GRAPH_MODE)
    distributed = "MS_ROLE" in os.environ
    group = init_distributed(distributed)
    if is_scheduler():
        return
    world = 2  # the single device mirrors 2 devices
    ms.set_seed(0)
    model = MoCo(DIM, K, 0.99, 0.1, "resnet18", 1 if distributed else world, group=group)
    if args.no_shuffle:
        MoCo._batch_shuffle = MoCo._batch_unshuffle = lambda self, x, idx_shuffle: x
    train_step = MoCoTrainStep(model, create_optimizer(model, 0.03, 5e-4))
    train_step.set_train(True)
    to_single = single_device_row(np.arange(BATCH), world)
    n, losses, arrays = BATCH // world, [], {}
    for step in range(STEPS):
        im_1, im_2, permutations = global_inputs(step)
        if distributed:
            rows = slice(group.rank * n, (group.rank + 1) * n)
            im_1, im_2 = im_1[rows], im_2[rows]
        else:  # single-device rows hold the global rows ``from_single``
            from_single = np.argsort(to_single)
            im_1, im_2 = im_1[from_single], im_2[from_single]
            permutations = to_single[permutations][:, from_single]
        loss, _ = train_step(ms.Tensor(im_1), ms.Tensor(im_2), ms.Tensor(permutations))
        losses.append(float(loss.asnumpy()))
        for name, values in state(model).items():
            arrays[f"{name}{step + 1}"] = values
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, f"rank{group.rank}.npz"), losses=np.array(losses), **arrays)


if __name__ == "__main__":
    main()
