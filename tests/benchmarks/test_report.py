"""The benchmark's pure parts: FLOP counts, the assumed peak, the NumPy kNN baseline, the table."""

import numpy as np
import pytest

from benchmarks.report import (
    cpu_mhz,
    format_table,
    forward_flops,
    knn_flops,
    layer_flops,
    monitor_share,
    peak_flops,
    speed_ratio,
    spread,
    step_flops,
)
from benchmarks.workers import knn_data, numpy_knn
from src.eval.knn import knn_predict


def test_layer_flops_counts_two_per_multiply_accumulate():
    assert layer_flops([64, 32, 32], [64, 64, 3, 3]) == 2 * 64 * 32 * 32 * 64 * 9  # conv 3x3
    assert layer_flops([128], [128, 512]) == 2 * 128 * 512  # dense 512 -> 128
    assert forward_flops([([128], [128, 512]), ([10], [10, 128])]) == 2 * (128 * 512 + 10 * 128)


def test_step_flops_counts_the_query_side_three_times_and_the_keys_once():
    encoder, batch, dim, queue = 1000, 4, 2, 7
    logits = 2 * batch * dim * (queue + 1)
    assert step_flops(encoder, batch, dim, queue) == 3 * (batch * encoder + logits) + 4000
    assert knn_flops(10, 50, 128) == 2 * 10 * 50 * 128


def test_cpu_mhz_and_peak():
    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2000.0\n\nprocessor\t: 1\ncpu MHz\t\t: 3000.0\n"
    assert cpu_mhz(cpuinfo) == 2500.0
    assert cpu_mhz("", "Model name: X\nCPU max MHz:  3500.0000\n") == 3500.0
    assert cpu_mhz("", "") == 0.0
    assert peak_flops(2, 2500.0) == 2 * 2.5e9 * 32


def test_spread_and_speed_ratio():
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert speed_ratio(30.0, 20.0, "img/s") == 1.5
    assert speed_ratio(2.0, 4.0, "s") == 2.0  # ours takes half the time


def test_format_table_prints_missing_values_as_dashes():
    side = {"median": 30.0, "min": 29.0, "max": 31.5, "rss_mib": 1500.0, "compile_s": 8.7}
    row = {"what": "train step", "batch": 64, "unit": "img/s", "ours": side, "ratio": None}
    header, line = format_table([{**row, "ours": {**side, "peak_pct": 12.0}}]).splitlines()
    assert header.split()[:3] == ["what", "batch", "unit"]
    assert "30.0 (29.0-31.5)" in line and "1500 / -" in line and "12.0 / -" in line
    assert line.split()[-1] == "-"  # no theirs: no % of peak for it


def test_numpy_baseline_ranks_as_knn_predict():
    queries, bank, labels = knn_data(bank=500, queries=40, dim=16)
    ours = knn_predict(queries, bank, labels, 10, 20, 0.1)
    np.testing.assert_array_equal(numpy_knn(queries, bank, labels, 10, 20, 0.1, chunk=16), ours)
    assert numpy_knn(queries, bank, labels, 10, 20, 0.1).shape == (40, 10)


@pytest.mark.parametrize("unit", ["img/s", "s"])
def test_speed_ratio_above_one_means_ours_is_faster(unit):
    faster, slower = (2.0, 1.0) if unit == "img/s" else (1.0, 2.0)
    assert speed_ratio(faster, slower, unit) > 1


def test_monitor_share_of_an_epoch():
    cost = monitor_share(eval_img_s=100.0, step_img_s=25.0, train=50_000, test=10_000)
    assert (cost["monitor_s"], cost["train_s"]) == (600.0, 2000.0)
    assert cost["share"] == 600.0 / 2600.0


def test_the_benchmarks_eval_batch_is_the_monitors():
    from benchmarks.workers import EVAL_BATCH_SIZE
    from src.eval.features import EVAL_BATCH_SIZE as MONITOR_BATCH

    assert EVAL_BATCH_SIZE == MONITOR_BATCH
