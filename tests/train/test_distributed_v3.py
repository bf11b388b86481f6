"""MoCo v3 on 2 msrun workers computes what one device computes on the whole batch.

As the official moco-v3 (``moco/builder.py``, ``main_moco.py`` under DDP): each device scores its
n queries against the keys of all devices (all-gather; its positives are columns ``n * rank``
on), its loss is the mean over its queries, and the gradients are averaged. So the loss averaged
over the devices, and the averaged gradients, are those of one device running the global batch,
except for what BatchNorm does per device (each device normalises its half). The reference of
distributed_v3_steps.py therefore runs each half through the encoders on its own (the BN of
device r = half r) and concatenates the keys in rank order: the rest (the all-gather, the label
offset, the gradient averaging) must then agree up to float32 summation order.

The bounds are relative L2 differences. Measured (2 CPU workers, plain SGD at lr 0.05):
step 1: loss 1.0e-7, gradients 2.8e-7, weights 2.4e-8, momentum weights 0; step 2: loss 1.2e-7,
gradients 4.3e-5. The tiny ResNet-18 (batch 4 per BN) is chaotic: a relative 1e-7 perturbation
of the initial weights alone changes the step-1 gradients by 3.2e-5 and the step-2 ones by
1.4e-2, so only two steps are compared, step 1 tightly. Each planted bug of
``distributed_v3_steps.MUTATIONS`` fails the step-1 comparison (``V3_MUTATION=no_offset``:
loss 4.5e-2 and gradients 6.6e-1 apart; ``no_gather``: 2.4e-1 and 2.3e-1; ``summed_grads``:
gradients 1.0):

    V3_MUTATION=no_offset python -m pytest tests/train/test_distributed_v3.py -k "not main_v3"

The last tests run ``main.py --method v3 --distribute`` itself on 2 workers for one epoch.
"""

import os
import sys

import numpy as np
import pytest

from helpers import REPO_ROOT, checkpoint_arrays, read_log, run_msrun

sys.path.insert(0, str(REPO_ROOT / "tests" / "train"))
from distributed_v3_steps import STEPS  # noqa: E402

WORKER = "tests/train/distributed_v3_steps.py"
# Relative differences allowed after step 1 and after the last step (printed by -s).
BOUNDS = {"loss": (1e-6, 1e-5), "grad": (1e-5, 1e-3), "b": (1e-6, 1e-4), "m": (1e-6, 1e-6)}
MAIN_ARGS = [
    *("--method", "v3", "--distribute", "--epochs", "1", "--batch_size", "8"),
    *("--image-size", "16", "--moco-dim", "16", "--moco-mlp-dim", "32", "--lr", "0.3"),
    *("--wd", "1e-6", "--knn-k", "5", "--seed", "3"),
]


def relative(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(x) - y) / np.linalg.norm(y))


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed_v3")
    proc = run_msrun([WORKER, str(out / "steps")], log_dir=str(out / "logs"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    load = lambda name: dict(np.load(out / "steps" / f"{name}.npz"))  # noqa: E731
    return load("reference"), [load(f"rank{r}") for r in (0, 1)]


def test_both_workers_start_equal_and_hold_identical_weights_after_every_step(steps):
    _, (rank0, rank1) = steps
    digests = [name for name in rank0 if "digest" in name]
    assert len(digests) == 1 + 3 * STEPS and rank1.keys() >= set(digests)
    for name in digests:  # SHA-256 of the weights, their gradients, the momentum weights
        assert rank0[name] == rank1[name], name
    np.testing.assert_array_equal(rank0["losses"], rank1["losses"])


def test_two_workers_compute_the_loss_and_gradients_of_one_device(steps):
    reference, (dist, _) = steps
    for step in range(1, STEPS + 1):
        found = {"loss": relative(dist["losses"][step - 1], reference["losses"][step - 1])}
        for name in ("grad", "b", "m"):
            found[name] = relative(dist[f"{name}{step}"], reference[f"{name}{step}"])
        print(f"after step {step}:", ", ".join(f"{n} {d:.1e}" for n, d in found.items()))
        for name, difference in found.items():
            assert difference <= BOUNDS[name][step > 1], (step, name, difference)
    print(f"weights moved by {float(dist['moved']):.1e} (relative) in {STEPS} steps")
    assert dist["moved"] > 1e-2, dist["moved"]


@pytest.fixture(scope="module")
def main_run(data_root, tmp_path_factory):
    """One epoch of ``main.py --method v3 --distribute`` on 2 workers (graph mode, LARS, kNN
    monitor at initialisation and after the epoch); each worker's model is saved afterwards."""
    root = tmp_path_factory.mktemp("main_v3")
    results, logs, params = str(root / "run"), str(root / "logs"), str(root / "params")
    args = [WORKER, params, "--main", "--data-dir", data_root, "--results-dir", results]
    proc = run_msrun([*args, *MAIN_ARGS], log_dir=logs, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [dict(np.load(os.path.join(params, f"main_rank{r}.npz"))) for r in (0, 1)]
    return results, logs, ranks


def test_main_v3_on_two_workers_trains_logs_and_ends_with_identical_weights(main_run):
    results, logs, (rank0, rank1) = main_run
    assert sorted(os.listdir(results)) == ["config.yaml", "log.csv", "model_last.ckpt", "train.log"]
    rows = read_log(results)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert np.isfinite(float(rows[1]["loss"])) and rows[0]["knn_top1"] and rows[1]["knn_top1"]
    with open(os.path.join(logs, "worker_0.log")) as f:
        assert "rank 0 of 2: pid" in (log := f.read()) and "4 images of each step" in log
    with open(os.path.join(logs, "worker_1.log")) as f:
        assert "Train [" not in f.read()  # only rank 0 reports
    weights = [name for name in rank0 if "moving_" not in name]
    assert rank0.keys() == rank1.keys() and len(weights) > 100
    for name in weights:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    checkpoint = checkpoint_arrays(os.path.join(results, "model_last.ckpt"))
    assert checkpoint["method"] == "v3"
    for name, values in rank0.items():  # rank 0 wrote its own model
        np.testing.assert_array_equal(checkpoint[name], values, err_msg=name)
    conv1 = "encoder.net.0.weight"  # the momentum encoder trails the trained one
    assert not np.array_equal(rank0[f"base_{conv1}"], rank0[f"momentum_{conv1}"])


def test_main_v3_workers_end_with_identical_bn_statistics(main_run):
    """V3TrainStep averages the BN running statistics over the devices (as MoCoTrainStep), so the
    sharded kNN monitor sees one model and the checkpoint holds what every rank holds."""
    _, _, (rank0, rank1) = main_run
    statistics = [name for name in rank0 if "moving_" in name]
    assert statistics
    different = [name for name in statistics if not np.array_equal(rank0[name], rank1[name])]
    assert not different, f"{len(different)} of {len(statistics)} differ, e.g. {different[:3]}"
