"""main.py on 2 msrun CPU workers: rank 0 writes, the monitor, a killed worker, resume, a busy
port. (The launcher/flag mismatch errors are checked in tests/utils/test_distributed.py.)"""

import json
import os
import re
import socket
import time

import numpy as np
import pytest

from helpers import (
    FAULTY_MAIN,
    TINY,
    checkpoint_arrays,
    free_port,
    read_log,
    run_main,
    run_msrun,
)

KILL_BOUND = 120  # seconds from launch until msrun returns after a worker is killed


def distributed_main(data_root, results, log_dir, *extra, env=None, port=None):
    script = FAULTY_MAIN if env and "MOCO_FAULT" in env else "main.py"
    args = [script, "--data-dir", data_root, "--epochs", "2", "--results-dir", results]
    return run_msrun([*args, *TINY, *extra, "--distribute"], log_dir=log_dir, env=env, port=port)


def worker_log(log_dir, rank):
    with open(os.path.join(log_dir, f"worker_{rank}.log")) as f:
        return f.read()


@pytest.fixture(scope="module")
def two_workers(data_root, tmp_path_factory):
    """Two epochs on 2 workers, kNN monitor at initialisation and at the end."""
    root = tmp_path_factory.mktemp("two_workers")
    results, logs = str(root / "run"), str(root / "logs")
    proc = distributed_main(data_root, results, logs, "--knn-interval", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results, logs


def test_only_rank_0_writes_and_reports(two_workers):
    results, logs = two_workers
    assert sorted(os.listdir(results)) == ["config.yaml", "log.csv", "model_last.ckpt", "train.log"]
    assert [row["epoch"] for row in read_log(results)] == ["0", "1", "2"]
    assert "epoch 2/2" in worker_log(logs, 0) and "Train [2/2]" in worker_log(logs, 0)
    assert "epoch 2/2" not in worker_log(logs, 1) and "Train [" not in worker_log(logs, 1)
    assert "rank 0 of 2: pid" in worker_log(logs, 0) and "8 images of each step" in worker_log(
        logs, 0
    )


def test_monitor_equals_one_device_knn_of_the_same_weights(two_workers):
    results, _ = two_workers
    output = os.path.join(os.path.dirname(results), "eval_knn.json")
    checkpoint = os.path.join(results, "model_last.ckpt")
    args = ["--checkpoint", checkpoint, "--output-json", output]
    proc = run_main(args, script="infer.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(output) as f:
        one_device = json.load(f)["knn_top1"]
    assert float(read_log(results)[-1]["knn_top1"]) == pytest.approx(one_device, abs=0.005)


def test_killed_worker_ends_the_job_and_resume_matches(two_workers, data_root, tmp_path):
    results, logs = str(tmp_path / "run"), str(tmp_path / "logs")
    env = {**os.environ, "MOCO_FAULT": "kill:step:2:2@1"}
    start = time.perf_counter()
    proc = distributed_main(data_root, results, logs, "--knn-interval", "0", env=env)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    print(f"killed job ended after {seconds:.0f} s with {proc.returncode}")
    assert proc.returncode != 0 and seconds < KILL_BOUND
    pid = re.search(r"rank 1 of 2: pid (\d+),", worker_log(logs, 1)).group(1)
    assert f"Worker process {pid} exit with exception. Error code: -9" in output
    assert int(checkpoint_arrays(os.path.join(results, "model_last.ckpt"))["epoch"]) == 1

    env.pop("MOCO_FAULT")
    proc = distributed_main(data_root, results, logs, "--knn-interval", "0", "--resume", "auto")
    assert proc.returncode == 0, proc.stdout[-3000:]
    expected = checkpoint_arrays(os.path.join(two_workers[0], "model_last.ckpt"))
    got = checkpoint_arrays(os.path.join(results, "model_last.ckpt"))
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    losses = [row["loss"] for row in read_log(results)]
    assert losses == [row["loss"] for row in read_log(two_workers[0])[1:]]


def test_busy_master_port_is_a_clear_error(data_root, tmp_path):
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        start = time.perf_counter()
        proc = distributed_main(data_root, str(tmp_path / "run"), str(tmp_path / "logs"), port=port)
    assert proc.returncode != 0 and time.perf_counter() - start < 60
    assert f"--master_port {port} on 127.0.0.1 is in use" in proc.stdout + proc.stderr
