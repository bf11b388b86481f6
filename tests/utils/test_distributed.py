"""Launcher checks, sharding and rank-targeted faults, without starting msrun."""

import faults
import numpy as np
import pytest

from src.utils.device import DeviceError
from src.utils.distributed import (
    ONE_DEVICE,
    Group,
    broadcast_text,
    gather_shards,
    init_distributed,
    shard_indices,
)


@pytest.mark.parametrize("length, size", [(10, 1), (10, 2), (10, 3), (7, 4), (2, 2)])
def test_shards_are_equal_blocks_that_cover_the_range_in_order(length, size):
    blocks = [shard_indices(length, Group(rank, size)) for rank in range(size)]
    assert len({len(block) for block in blocks}) == 1
    assert np.concatenate(blocks)[:length].tolist() == list(range(length))
    assert all(block.max() < length for block in blocks)


def test_one_device_needs_no_collective():
    assert gather_shards(np.arange(6).reshape(3, 2), 2, ONE_DEVICE).tolist() == [[0, 1], [2, 3]]
    assert broadcast_text("./cache-moco", ONE_DEVICE) == "./cache-moco"


def test_launcher_and_flag_must_agree(monkeypatch):
    monkeypatch.delenv("MS_ROLE", raising=False)
    monkeypatch.delenv("MS_WORKER_NUM", raising=False)
    assert init_distributed(False) == ONE_DEVICE
    with pytest.raises(DeviceError, match="needs the msrun launcher"):
        init_distributed(True)
    monkeypatch.setenv("MS_WORKER_NUM", "2")
    with pytest.raises(DeviceError, match="2 workers but without --distribute"):
        init_distributed(False)


def test_a_fault_can_target_one_rank(monkeypatch):
    monkeypatch.setenv(faults.ENV_VAR, "kill:step:2:1@1")
    monkeypatch.setenv("RANK_ID", "0")
    assert not faults.requested("kill:step:2:1")
    monkeypatch.setenv("RANK_ID", "1")
    assert faults.requested("kill:step:2:1")
    monkeypatch.setenv(faults.ENV_VAR, "kill:step:2:1")  # no rank: every process
    monkeypatch.setenv("RANK_ID", "0")
    assert faults.requested("kill:step:2:1")
