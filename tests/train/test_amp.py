"""Mixed precision (``--amp-level``) on CPU, whose MindSpore kernels run float16: steps stay close
to float32, an overflow skips the update and halves the loss scale, the scale's rules and its
checkpointing, and a run through main.py that counts the skipped steps."""

import os

import mindspore as ms
import numpy as np
import pytest

from helpers import FAULTY_MAIN, TINY, TINY_MODEL, checkpoint_arrays, run_main
from src.models import MoCo
from src.train.checkpoint import load_checkpoint, save_checkpoint
from src.train.loop import shuffle_permutations
from src.train.loss_scale import DynamicLossScale
from src.train.step import create_train_step

STEPS, BATCH = 4, 16
# Measured after 4 steps against float32 (largest relative difference): loss O1 2.7e-4,
# O2 1.5e-4; stem weights O1 3.4e-4, O2 3.9e-4 of their largest value.
TOLERANCE = 2e-3
IMAGES = np.random.default_rng(0).standard_normal((STEPS, 2, BATCH, 3, 32, 32)).astype(np.float32)
PERMUTATIONS = shuffle_permutations(0, 1, STEPS, BATCH)


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def build(level):
    ms.set_seed(0)
    model = MoCo(16, 32, bn_splits=4, amp_level=level)
    return model, create_train_step(model, 0.06, 5e-4, level)


def step(train_step, i, scale=1.0):
    im_1, im_2 = (ms.Tensor(view) for view in IMAGES[i])
    loss, finite = train_step(ms.Tensor(IMAGES[i, 0] * scale), im_2, ms.Tensor(PERMUTATIONS[i]))
    return float(loss.asnumpy()), bool(finite.asnumpy())


def run(level):
    """``STEPS`` steps; at O2 then an overflow (an infinite image) and one more step."""
    model, train_step = build(level)
    result = {"losses": np.array([step(train_step, i)[0] for i in range(STEPS)])}
    result["weight"] = model.encoder_q.net[0].weight.asnumpy().copy()
    if level == "O2":
        params = model.encoder_q.trainable_params()
        before, queue = [p.asnumpy().copy() for p in params], model.queue.asnumpy().copy()
        result["overflow_finite"] = step(train_step, 0, scale=np.inf)[1]
        result["scale"] = float(train_step.loss_scale.loss_scale.asnumpy())
        result["kept"] = all(np.array_equal(p.asnumpy(), b) for p, b in zip(params, before))
        result["queue_kept"] = np.array_equal(model.queue.asnumpy(), queue)
        result["next_finite"] = step(train_step, 1)[1]
        result["next_trained"] = not np.array_equal(params[0].asnumpy(), before[0])
        result["step"] = train_step
    return result


@pytest.fixture(scope="module")
def runs():
    ms.set_context(mode=ms.GRAPH_MODE)
    return {level: run(level) for level in ("O0", "O1", "O2")}


@pytest.mark.parametrize("level", ["O1", "O2"])
def test_float16_steps_stay_close_to_float32(runs, level):
    losses, weight = runs[level]["losses"], runs[level]["weight"]
    losses_32, weight_32 = runs["O0"]["losses"], runs["O0"]["weight"]
    loss_error = np.abs(losses - losses_32).max() / np.abs(losses_32).max()
    weight_error = np.abs(weight - weight_32).max() / np.abs(weight_32).max()
    assert 0 < loss_error < TOLERANCE and 0 < weight_error < TOLERANCE  # > 0: float16 really ran


def test_overflow_skips_the_update_and_the_keys_and_halves_the_scale(runs, tmp_path):
    o2 = runs["O2"]
    assert o2["overflow_finite"] is False and o2["scale"] == 2.0**15
    assert o2["kept"] and o2["queue_kept"]  # no SGD update, no keys enqueued
    assert o2["next_finite"] and o2["next_trained"]  # the next step trains, at the halved scale
    # The scale is checkpointed; a float32 checkpoint resumes in float16 with a new scale.
    args = TINY_MODEL
    save_checkpoint(o2["step"], str(tmp_path / "amp.ckpt"), 1, args)
    assert checkpoint_arrays(str(tmp_path / "amp.ckpt"))["amp_loss_scale"] == 2.0**15
    _, fresh = build("O2")
    load_checkpoint(fresh, str(tmp_path / "amp.ckpt"), args)
    assert float(fresh.loss_scale.loss_scale.asnumpy()) == 2.0**15
    _, float32_step = build("O0")
    save_checkpoint(float32_step, str(tmp_path / "fp32.ckpt"), 1, args)
    load_checkpoint(fresh, str(tmp_path / "fp32.ckpt"), args)
    assert float(fresh.loss_scale.loss_scale.asnumpy()) == 2.0**15  # kept: not in the file


def test_loss_scale_halves_on_overflow_and_doubles_after_a_window():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    scale = DynamicLossScale(scale=8.0, factor=2.0, window=3)
    values = []
    for finite in (False, True, True, False, True, True, True, True):
        scale.adjust(ms.Tensor(finite))
        values.append(float(scale.loss_scale.asnumpy()))
    assert values == [4, 4, 4, 2, 2, 2, 4, 4]
    assert float(scale.scale(ms.Tensor(3.0)).asnumpy()) == 12.0
    (grad,) = scale.unscale((ms.Tensor([8.0, 2.0]),))
    np.testing.assert_array_equal(grad.asnumpy(), [2.0, 0.5])


def test_main_skips_and_counts_an_overflowed_step(data_root, tmp_path):
    """An infinite image at epoch 1, step 2 in float16: skipped and counted, the run goes on."""
    results = str(tmp_path / "run")
    env = dict(os.environ, MOCO_FAULT="inf:step:1:2")
    args = ["--data-dir", data_root, "--epochs", "1", "--results-dir", results, *TINY]
    proc = run_main(
        [*args, "--amp-level", "O2", "--knn-interval", "0"], env=env, script=FAULTY_MAIN
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "epoch 1: 1 of 3 steps overflowed in float16 and were skipped (loss scale now 32768)"
        in proc.stderr
    )
    state = checkpoint_arrays(os.path.join(results, "model_last.ckpt"))
    assert state["amp_loss_scale"] == 2.0**15 and state["amp_good_steps"] == 1
