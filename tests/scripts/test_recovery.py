"""Crash recovery: SIGKILL at fixed points, resume, and compare with an uninterrupted run."""

import os
import signal

import numpy as np

from helpers import FAULTY_MAIN, TINY, checkpoint_arrays, read_log, run_main


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def run_with_fault(data_root, results, fault):
    env = dict(os.environ)
    env.pop("MOCO_FAULT", None)
    if fault:
        env["MOCO_FAULT"] = fault
    return run_main(
        [
            "--data-dir",
            data_root,
            "--epochs",
            "2",
            "--results-dir",
            results,
            "--resume",
            "auto",
            *TINY,
        ],
        env=env,
        script=FAULTY_MAIN,
    )


def test_killed_runs_resume_to_the_uninterrupted_result(full_run, data_root, tmp_path):
    """One results folder killed three times, at three kinds of points, then finished.

    1. right after epoch 1's checkpoint;
    2. while epoch 2's checkpoint is half written (its log row is already out);
    3. in the middle of epoch 2 (before its second step).
    """
    results = str(tmp_path / "run")
    checkpoint = os.path.join(results, "model_last.ckpt")
    for fault, epoch_on_disk in [
        ("kill:epoch-end:1", 1),
        ("kill:checkpoint:2", 1),
        ("kill:step:2:2", 1),
    ]:
        proc = run_with_fault(data_root, results, fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stderr[-2000:])
        # The checkpoint on disk is always whole: the last finished epoch's.
        assert int(checkpoint_arrays(checkpoint)["epoch"]) == epoch_on_disk, fault

    proc = run_with_fault(data_root, results, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continuing at epoch 2" in proc.stderr

    expected = checkpoint_arrays(os.path.join(full_run[0], "model_last.ckpt"))
    got = checkpoint_arrays(checkpoint)
    assert expected.keys() == got.keys()
    for name in expected:  # bit-identical on CPU
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert without_seconds(read_log(results)) == without_seconds(read_log(full_run[0]))
    assert [f for f in os.listdir(results) if f.endswith(".tmp.ckpt")] == []


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
    """NaN images in epoch 2, step 2: the run stops there; epoch 1's checkpoint stays."""
    results = str(tmp_path / "run")
    proc = run_with_fault(data_root, results, "nan:step:2:2")
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "or gradients at epoch 2, step 2/3" in proc.stderr
    state = checkpoint_arrays(os.path.join(results, "model_last.ckpt"))
    assert int(state["epoch"]) == 1
    assert all(
        np.isfinite(v).all()
        for v in state.values()
        if isinstance(v, np.ndarray) and v.dtype.kind == "f"
    )
    assert [row["epoch"] for row in read_log(results)] == ["0", "1"]
