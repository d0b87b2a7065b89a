"""Shards without Dagster: who falls in which shard, and how the mail server's limits are shared."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest

from cron_pipelines.factory.sharding import MAX_SHARDS, Shard, shard_index
from cron_pipelines.models.records import InvalidRecord


@dataclass(frozen=True)
class Record:
    id: str
    user_id: str


def test_every_user_falls_in_exactly_one_shard_and_the_shards_are_balanced() -> None:
    records = [Record(f"due_{n}", f"usr_{n // 3}") for n in range(30_000)]  # three dues per user
    shards = Shard.all_of(4)
    selected = [list(shard.select(records)) for shard in shards]

    assert sorted(record.id for part in selected for record in part) == sorted(record.id for record in records)
    for part in selected:
        assert 0.22 < len(part) / len(records) < 0.28
    owners = {record.user_id: index for index, part in enumerate(selected) for record in part}
    by_user = Counter((record.user_id, owners[record.user_id]) for part in selected for record in part)
    assert all(count == 3 for count in by_user.values())  # a user's dues never straddle two shards


def test_the_hash_is_the_same_in_every_process() -> None:
    # Python's own hash() is salted per process: it would put a user in different shards on two workers.
    program = "from cron_pipelines.factory.sharding import shard_index; print([shard_index(f'usr_{n}', 7) for n in range(50)])"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert outputs == {f"{[shard_index(f'usr_{n}', 7) for n in range(50)]}\n"}


def test_records_without_a_user_go_to_shard_zero_only() -> None:
    invalid = InvalidRecord("due_x", "user_id: missing", {})
    assert [list(shard.select([invalid])) for shard in Shard.all_of(3)] == [[invalid], [], []]


def test_the_whole_day_is_one_shard_that_keeps_everything() -> None:
    records = [Record("a", "usr_1"), InvalidRecord(None, "bad", {})]
    assert list(Shard().select(records)) == records
    assert Shard().is_whole and Shard.from_mapping_key(None) == Shard()


@pytest.mark.parametrize(("total", "count"), [(4, 1), (4, 3), (5, 2), (64, 64), (7, 7)])
def test_connection_shares_add_up_to_the_total_and_none_is_empty(total: int, count: int) -> None:
    shares = [shard.connections(total) for shard in Shard.all_of(count)]
    assert sum(shares) == total and min(shares) >= 1 and max(shares) - min(shares) <= 1


def test_more_shards_than_connections_is_refused() -> None:
    with pytest.raises(ValueError, match="3 shards need at least 3 mail connections, not 2"):
        Shard(2, 3).connections(2)


def test_rate_shares_add_up_to_the_total() -> None:
    assert sum(shard.rate(10.0) or 0 for shard in Shard.all_of(3)) == pytest.approx(10.0)
    assert Shard(0, 3).rate(None) is None


def test_mapping_keys_round_trip_and_nonsense_is_refused() -> None:
    assert [Shard.from_mapping_key(shard.mapping_key) for shard in Shard.all_of(5)] == Shard.all_of(5)
    for bad in ("3_of_2", "x_of_2", "0_of_0", f"0_of_{MAX_SHARDS + 1}", "1_of_2_of_3"):
        with pytest.raises(ValueError):
            Shard.from_mapping_key(bad)
