"""One epoch of MoCo training."""
import math

import numpy as np
import mindspore as ms

from ..utils import faults
from ..utils.progress import Progress


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


def shuffle_permutations(seed, epoch, steps, batch_size):
    """Shuffle-BN permutations of one epoch: ``steps`` x 2 x N, a function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 1])
    return np.stack([[rng.permutation(batch_size) for _ in range(2)] for _ in range(steps)]).astype(np.int32)


def train_one_epoch(train_step, dataset, epoch, epochs, lr, seed, batch_size, max_steps=0):
    """Runs the compiled step over one epoch's batches.

    Args:
        train_step: A :class:`~src.train.step.MoCoTrainStep`.
        dataset: Batches with columns ``im_1``, ``im_2`` (N x 3 x H x W).
        epoch, epochs: 1-based epoch and total, for display and the shuffle seed.
        lr: Learning rate of this epoch (display only; the optimizer holds it).
        seed: Run seed; shuffle-BN permutations derive from (seed, epoch).
        batch_size: Images per step.
        max_steps: Stop after this many steps (0: the whole epoch).

    Returns:
        ``(mean loss, seconds)``.

    Raises:
        NonFiniteLossError: The loss or a gradient is NaN or infinite; names epoch and step.
    """
    steps = dataset.get_dataset_size()
    if max_steps:
        steps = min(steps, max_steps)
    permutations = shuffle_permutations(seed, epoch, steps, batch_size)
    train_step.set_train(True)
    progress = Progress(steps, f"Train [{epoch}/{epochs}]", batch_size)
    total_loss = 0.0
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    for step, (im_1, im_2) in enumerate(iterator):
        if step == steps:
            break
        faults.kill_if_requested(f"step:{epoch}:{step + 1}")
        if faults.requested(f"nan:step:{epoch}:{step + 1}"):
            im_1 = im_1 * np.nan
        loss, grads_finite = train_step(ms.Tensor(im_1), ms.Tensor(im_2), ms.Tensor(permutations[step]))
        loss = float(loss.asnumpy())
        if not (math.isfinite(loss) and bool(grads_finite.asnumpy())):
            progress.close()
            raise NonFiniteLossError(f"non-finite loss ({loss}) or gradients at epoch {epoch}, "
                                     f"step {step + 1}/{steps}")
        total_loss += loss
        progress.update(loss=total_loss / (step + 1), lr=lr)
    return total_loss / steps, progress.close()
