"""Sharded delivery end to end: S steps, every key once, one materialization, limits shared, stops honoured."""

from __future__ import annotations

import signal
import time
from collections import Counter

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from cron_pipelines.delivery.ledger.journal import JOURNAL_METADATA_KEY, JOURNAL_SHARD_KEY, Journal, latest_journal
from cron_pipelines.factory.sharding import Shard, merge_shard_reports, shard_breakdown
from cron_pipelines_tests.demo_services.helpers import due, user
from cron_pipelines_tests.support.job_world import JobWorld, check_result, failure_messages, metadata

D = "2026-11-28"
JOB = "send_payment_reminders"
DELIVER_STEP = "payment_reminders.deliver_payment_reminders"


def _seed(world: JobWorld, users: int, dues_per_user: int = 1) -> list[str]:
    """Dues seven days ahead of D, each one reminder; their idempotency keys."""
    world.services.store.add_users([user(f"usr_{n}") for n in range(users)])
    world.services.store.add_dues(
        [
            due(f"due_{n}_{k}", user_id=f"usr_{n}", due_date="2026-12-05")
            for n in range(users)
            for k in range(dues_per_user)
        ]
    )
    return sorted(f"payment_reminder:due_{n}_{k}:2026-12-05:7" for n in range(users) for k in range(dues_per_user))


def _deliver_steps(result: dg.ExecuteInProcessResult) -> list[str]:
    return sorted(
        event.step_key
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS" and event.step_key and event.step_key.startswith(DELIVER_STEP)
    )


def test_three_shards_send_every_key_once_and_one_materialization_sums_them(world: JobWorld) -> None:
    world.configure(DELIVERY_SHARDS="3", DELIVERY_EXECUTOR="in_process", MAIL_MAX_CONNECTIONS="3")
    expected = _seed(world, users=60, dues_per_user=2)

    result = world.run(JOB, D)

    assert result.success, failure_messages(result)
    assert _deliver_steps(result) == [f"{DELIVER_STEP}[{n}_of_3]" for n in range(3)]
    assert world.sent_keys() == expected  # each exactly once
    ledger = world.ledger()
    assert {record["status"] for record in ledger.values()} == {"sent"} and set(ledger) == set(expected)
    # A user's two reminders were sent by one shard (the shards' sessions differ; the ledger run is one).
    assert {record["run_id"] for record in ledger.values()} == {result.run_id}

    summary = metadata(result, "payment_reminders")  # exactly one materialization
    assert (summary["claimed"], summary["sent"], summary["failed"], summary["left_claimed"]) == (120, 120, 0, 0)
    shards = summary["shards"]
    assert [shard["shard"] for shard in shards] == ["0_of_3", "1_of_3", "2_of_3"]
    assert sum(shard["sent"] for shard in shards) == 120 and min(shard["sent"] for shard in shards) > 0
    assert all(shard["sent"] % 2 == 0 for shard in shards)  # users, not dues, are split
    assert summary["business_date"] == D and summary["due_to"] == "2026-12-05"
    assert len(summary["sample_sent_keys"]) == 10
    check = check_result(result, "payment_reminders", "delivery_within_thresholds")
    assert check.passed and check.metadata["failed"].value == 0


def test_a_second_sharded_run_and_a_run_with_other_shard_count_send_nothing_more(world: JobWorld) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="in_process")
    expected = _seed(world, users=30)
    assert world.run(JOB, D).success

    again = world.defs.resolve_job_def(JOB).execute_in_process(
        partition_key=D, instance=world.instance, tags={"cron_pipelines/shards": "1"}
    )

    assert again.success
    assert world.sent_keys() == expected
    summary = metadata(again, "payment_reminders")
    assert (summary["sent"], summary["duplicate"]) == (0, 30)
    assert [shard["shard"] for shard in summary["shards"]] == ["0_of_1"]


def test_run_config_chooses_the_shard_count_and_more_shards_than_connections_fail_at_once(world: JobWorld) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="in_process", MAIL_MAX_CONNECTIONS="2")
    expected = _seed(world, users=12)
    plan_config = {"ops": {"payment_reminders": {"ops": {"plan_payment_reminders_shards": {"config": {"shards": 3}}}}}}

    refused = world.run(JOB, D, run_config=plan_config)

    assert not refused.success
    assert "cannot deliver in 3 shards: 3 shards need at least 3 mail connections, not 2" in failure_messages(refused)
    assert world.mails() == [] and world.ledger() == {}

    world.configure(MAIL_MAX_CONNECTIONS="4")
    result = world.run(JOB, D, run_config=plan_config)
    assert result.success and len(_deliver_steps(result)) == 3
    assert world.sent_keys() == expected


def test_a_malformed_shard_tag_fails_the_run_with_a_clear_message(world: JobWorld) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="in_process")
    _seed(world, users=3)
    result = world.defs.resolve_job_def(JOB).execute_in_process(
        partition_key=D, instance=world.instance, tags={"cron_pipelines/shards": "lots"}, raise_on_error=False
    )
    assert not result.success
    assert "the run's `cron_pipelines/shards` tag must be a whole number from 1 to 64, not 'lots'" in (
        failure_messages(result)
    )
    assert world.mails() == []


def test_one_shard_is_todays_job_step_for_step_and_event_for_event(world: JobWorld) -> None:
    _seed(world, users=5)
    job = world.defs.resolve_job_def(JOB)
    assert [node.name for node in job.graph.node_defs] == ["payment_reminders"]
    assert job.executor_def is dg.in_process_executor and "cron_pipelines/shards" not in job.tags

    result = world.run(JOB, D)

    assert result.success and len(world.mails()) == 5
    # The events of this job's run before sharding existed (measured at fa90a51): no step, event or tag more.
    assert Counter(event.event_type_value for event in result.all_events) == TODAYS_EVENTS


TODAYS_EVENTS = Counter(
    {
        "PIPELINE_START": 1,
        "ENGINE_EVENT": 2,
        "RESOURCE_INIT_STARTED": 1,
        "RESOURCE_INIT_SUCCESS": 1,
        "LOGS_CAPTURED": 1,
        "STEP_START": 1,
        "STEP_OUTPUT": 2,
        "ASSET_MATERIALIZATION": 1,
        "ASSET_CHECK_EVALUATION": 1,
        "STEP_SUCCESS": 1,
        "PIPELINE_SUCCESS": 1,
    }
)


def test_the_multiprocess_executor_runs_each_shard_in_a_process_of_its_own(world: JobWorld) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="multiprocess")
    expected = _seed(world, users=40)

    process = world.run_in_subprocess(JOB, D)
    output, _ = process.communicate(timeout=180)

    assert process.returncode == 0, output
    assert world.sent_keys() == expected
    run = world.instance.get_runs(dg.RunsFilter(job_name=JOB))[0]
    starts = [
        record.event_log_entry
        for record in world.instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
    ]
    pids = {entry.step_key: entry.dagster_event.pid for entry in starts if entry.dagster_event is not None}
    shard_pids = {pids[f"{DELIVER_STEP}[0_of_2]"], pids[f"{DELIVER_STEP}[1_of_2]"]}
    assert len(shard_pids) == 2 and len(set(pids.values())) == len(pids)  # one process per step


def test_the_rate_limit_and_the_connection_cap_hold_for_the_run_across_shards(world: JobWorld) -> None:
    world.configure(
        DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="multiprocess", MAIL_MAX_CONNECTIONS="2", MAIL_RATE_LIMIT_PER_SECOND="20"
    )
    expected = _seed(world, users=80)

    process = world.run_in_subprocess(JOB, D)
    output, _ = process.communicate(timeout=180)

    assert process.returncode == 0, output
    assert world.sent_keys() == expected
    arrivals = sorted(world.smtp.arrivals)
    # 20 a second for the run, not 20 per shard: no 2-second window holds more than 40 (+ one burst token each).
    window = max(sum(1 for t in arrivals if start <= t < start + 2.0) for start in arrivals)
    assert window <= 44, window
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 4) / 20 - 0.5
    assert world.smtp.sessions <= 2  # one session per shard: the run's total


def test_terminate_stops_every_shard_and_records_what_was_and_was_not_sent(world: JobWorld) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="multiprocess", MAIL_MAX_CONNECTIONS="2")
    expected = _seed(world, users=400)
    world.smtp.latency = 0.01  # slow enough for the stop to land mid-delivery in both shards

    process = world.run_in_subprocess(JOB, D)
    world.smtp.wait_for(30, timeout=120)
    run = world.instance.get_runs(dg.RunsFilter(job_name=JOB))[0]
    world.instance.report_run_canceling(run)  # what Terminate in the UI does, then it signals the run worker
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=90)
    stopped_at = len(world.mails())
    time.sleep(2)
    world.smtp.latency = 0

    assert len(world.mails()) == stopped_at < len(expected)  # nothing was handed over after the stop
    ledger = world.ledger()
    assert [key for key, record in ledger.items() if record["status"] == "claimed"] == []
    mailed = set(world.sent_keys())
    assert {key for key, record in ledger.items() if record["status"] == "sent"} == mailed
    assert {record["status"] for key, record in ledger.items() if key not in mailed} <= {"released"}
    assert world.instance.get_run_by_id(run.run_id).status in (
        dg.DagsterRunStatus.CANCELED,
        dg.DagsterRunStatus.CANCELING,
        dg.DagsterRunStatus.FAILURE,
    )

    world.configure(DELIVERY_EXECUTOR="in_process")
    assert world.run(JOB, D).success
    assert world.sent_keys() == expected  # the next run sent the rest, each key exactly once


def test_shard_reports_merge_into_the_run_s_totals_with_bounded_samples() -> None:
    reports = [
        {
            "shard": f"{n}_of_3",
            "delivery_thresholds": {"max_failed": 0, "max_skipped_ratio": 0.05},
            "business_date": D,
            "timezone": "UTC",
            "duration_seconds": 1.5 + n,
            "claimed": 10 + n,
            "sent": 9 + n,
            "failed": 1,
            "left_claimed": 0,
            "payment_reminder.sent": 9 + n,
            "sample_sent_keys": [f"k{n}_{i}" for i in range(8)],
            "skip_reasons": {"opted_out": 2, f"reason {n}": 1},
            "sample_email": f"email of shard {n}" if n else None,
        }
        for n in range(3)
    ]
    total = merge_shard_reports(reports)

    assert (total["claimed"], total["sent"], total["failed"], total["left_claimed"]) == (33, 30, 3, 0)
    assert total["payment_reminder.sent"] == 30 and total["duration_seconds"] == 3.5
    assert total["sample_sent_keys"] == [f"k0_{i}" for i in range(8)] + ["k1_0", "k1_1"]
    assert total["skip_reasons"] == {"opted_out": 6, "reason 0": 1, "reason 1": 1, "reason 2": 1}
    assert total["business_date"] == D and total["sample_email"] == "email of shard 1"
    assert "shard" not in total and "delivery_thresholds" not in total
    assert [row["sent"] for row in shard_breakdown(reports)] == [9, 10, 11]


def test_re_executing_a_failed_sharded_run_sends_the_failed_shard_and_totals_every_shard(
    world: JobWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.configure(DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="in_process")
    expected = _seed(world, users=40)
    # The first claim is refused for good: that shard fails at once, the other one delivers.
    world.services.mongo_faults.add(method="POST", path="/v1/notifications/claims", status=401)
    failed = world.run(JOB, D)
    assert not failed.success and len(_deliver_steps(failed)) == 1
    assert 0 < len(world.sent_keys()) < len(expected)

    # Re-execute from failure, as the UI's button and run retries do: only the failed shard and the sum run.
    for name, value in world.environment.items():
        monkeypatch.setenv(name, value)
    job = ReconstructableRepository.for_module("cron_pipelines.definitions", "defs").get_reconstructable_job(JOB)
    with dg.execute_job(
        job,
        world.instance,
        tags=failed.dagster_run.tags,  # the UI's re-execution keeps the run's tags, its partition among them
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, world.instance),
    ) as again:
        assert again.success
        steps = {event.step_key for event in again.all_events if event.event_type_value == "STEP_SUCCESS"}
        materialization = again.get_asset_materialization_events()[0].step_materialization_data.materialization

    assert len([step for step in steps if step.startswith(DELIVER_STEP)]) == 1
    assert world.sent_keys() == expected  # each key once over both runs
    summary = {name: value.value for name, value in materialization.metadata.items()}
    assert summary["sent"] == len(expected) and [shard["shard"] for shard in summary["shards"]] == ["0_of_2", "1_of_2"]


def test_a_shard_s_ledger_outage_is_journaled_as_that_shard_s_and_settled_by_its_own_retry(world: JobWorld) -> None:
    world.configure(
        DELIVERY_SHARDS="2", DELIVERY_EXECUTOR="in_process", STEP_MAX_RETRIES="1", STEP_RETRY_DELAY_SECONDS="0"
    )
    expected = _seed(world, users=500)
    # The first shard's first outcomes cannot be recorded (every try answered 503): its step fails,
    # journaling them, and its retry records them first.
    world.services.mongo_faults.add(method="POST", path="/v1/notifications/outcomes", status=503, times=8)

    result = world.run(JOB, D)

    assert result.success, failure_messages(result)
    assert world.sent_keys() == expected
    assert {record["status"] for record in world.ledger().values()} == {"sent"}
    observations = [
        entry.dagster_event.asset_observation_data.asset_observation.metadata
        for entry in world.instance.all_logs(result.run_id)
        if entry.dagster_event is not None and entry.dagster_event.event_type_value == "ASSET_OBSERVATION"
    ]
    journals = [entry for entry in observations if "delivery_journal" in entry]
    assert len(journals) == 2 and journals[0]["unrecorded_outcomes"].value > 0
    assert journals[1]["unrecorded_outcomes"].value == journals[1]["unanswered_claims"].value == 0  # settled
    assert journals[0]["delivery_shard"].value == journals[1]["delivery_shard"].value  # by the same shard
    assert metadata(result, "payment_reminders")["left_claimed"] == 0


def test_each_shard_reads_its_own_journal_and_never_another_shard_s(world: JobWorld) -> None:
    owed = {
        shard: Journal(unanswered_claims={f"payment_reminder:due_{shard.index}:2026-12-05:7": f"token{shard.index}"})
        for shard in Shard.all_of(2)
    }

    @dg.op
    def write_journals(context) -> None:  # unannotated: a string annotation would not resolve for Dagster
        for shard in (Shard(1, 2), Shard(0, 2)):  # shard 0's is the latest
            context.log_event(
                dg.AssetObservation(
                    asset_key="payment_reminders",
                    metadata={
                        JOURNAL_METADATA_KEY: dg.MetadataValue.json(owed[shard].to_json()),
                        JOURNAL_SHARD_KEY: shard.mapping_key,
                    },
                )
            )

    run = (
        dg.GraphDefinition("journals", node_defs=[write_journals]).to_job().execute_in_process(instance=world.instance)
    )

    key = dg.AssetKey("payment_reminders")
    for shard in Shard.all_of(2):
        journal = latest_journal(world.instance, run.run_id, key, shard.mapping_key)
        assert journal is not None and journal.unanswered_claims == owed[shard].unanswered_claims
    assert latest_journal(world.instance, run.run_id, key) is None  # the one step of an unsharded job has none
