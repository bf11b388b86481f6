"""The benchmark's plan and summaries, without running a worker."""

import pytest

from benchmarks.run import PLANS, STEP_ROW, Config, build_rows, monitor_cost, plan
from benchmarks.workers import EVAL_BATCH_SIZE, TASKS


@pytest.mark.parametrize("full", [False, True])
def test_plan_runs_each_configuration_of_the_rows_once(full):
    p = {key: plans[full] for key, plans in PLANS.items()}
    groups, rows = plan(p, "/data", encoder=10**9)
    configs = [config for group in groups for config in group]
    assert len({config.key for config in configs}) == len(configs)
    assert all(config.task in TASKS for config in configs)
    assert {id(config) for row in rows for config in row[3:]} == {id(c) for c in configs}
    assert {row[1] for row in rows if row[0] == STEP_ROW} == set(p["steps"])


def result(seconds, first_s):
    return {"seconds": seconds, "first_s": first_s, "setup_s": 1.0, "rss_mib": 100.0}


def test_rows_give_medians_compile_time_peak_share_and_the_monitors_cost():
    step = [Config(k, f"step-{k}", {}, units=2, images=64, flops=1e9) for k in ("ours", "torch")]
    evals = [Config(f"eval-{k}", f"eval-{k}", {}, 1, EVAL_BATCH_SIZE) for k in ("ours", "torch")]
    results = {"ours": result([4.0, 2.0, 3.0], 10.0), "torch": result([2.0, 2.0, 2.0], 1.0)}
    results.update({"eval-ours": result([2.56] * 3, 9.0), "eval-torch": result([1.0] * 3, 3.0)})
    rows = [(STEP_ROW, 64, "img/s", *step), ("feature extraction", 256, "img/s", *evals)]
    table = build_rows(rows, results, peak=1e11)
    ours = table[0]["ours"]
    assert ours["values"] == [32.0, 64.0, 64 / 1.5] and ours["median"] == 64 / 1.5
    assert ours["compile_s"] == 10.0 - 1.5  # the first unit minus the median unit
    assert ours["peak_pct"] == pytest.approx(100 * 1e9 * (64 / 1.5) / 1e11)
    assert table[0]["ratio"] == pytest.approx((64 / 1.5) / 64)
    assert (table[0]["ours_key"], table[0]["theirs_key"]) == ("ours", "torch")
    cost = monitor_cost(table)
    assert cost["monitor_s"] == pytest.approx(60_000 / 100) and "batch 64" in cost["text"]
