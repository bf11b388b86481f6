"""The MoCo v3 benchmark's plan and memory slopes, without running a worker."""

import pytest

from benchmarks.mocov3 import ARCHS, PLANS, memory_per_image, plan
from benchmarks.workers import TASKS, VIT_PARTS


@pytest.mark.parametrize("mode", list(PLANS))
def test_plan_runs_each_configuration_of_the_rows_once(mode):
    batches, _ = PLANS[mode]
    groups, rows = plan(batches)
    configs = [config for group in groups for config in group]
    assert len({config.key for config in configs}) == len(configs)
    assert all(config.task in TASKS for config in configs)
    assert {id(config) for row in rows for config in row[3:]} == {id(c) for c in configs}
    steps = [row for row in rows if "step" in row[0]]
    assert len(steps) == len(batches) * (len(ARCHS) + 1)  # + the ViT in PyNative mode
    assert len(rows) - len(steps) == len(VIT_PARTS)


def test_memory_per_image_is_the_peak_rss_slope_between_the_batches():
    def row(what, batch, ours, theirs):
        return {
            "what": what,
            "batch": batch,
            "ours": {"rss_mib": ours},
            "theirs": {"rss_mib": theirs},
        }

    table = [row("a", 32, 1000, 500), row("a", 64, 1640, 660), row("b", 64, 1, 1)]
    assert memory_per_image(table) == ["a: 20 / 5 MiB per image of the batch (4.0x)"]
