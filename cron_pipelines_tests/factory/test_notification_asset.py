"""A new notification job is one deliver function given to the factory: a throwaway one, built and run here."""

from __future__ import annotations

import dagster as dg

from cron_pipelines.defs.services_data import NOTIFICATION_LEDGER, USER_ACTIVITY
from cron_pipelines.factory.checks import DELIVERY_CHECK, DeliveryConfig
from cron_pipelines.factory.daily import DailyOptions, daily_job
from cron_pipelines.factory.notification_asset import Delivery, NotificationAssetSpec, notification_asset
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.models.payloads import InactiveUser
from cron_pipelines.resources import MongoServiceResource, build_resources
from cron_pipelines_tests.demo_services.helpers import user
from cron_pipelines_tests.support.job_world import JobWorld, check_result, metadata

D = "2026-11-28"
NOTES = dg.AssetKey("throwaway_notes")


class NotesConfig(DeliveryConfig):
    greeting: str = "Hello"


def throwaway_notes(delivery: Delivery, config: NotesConfig, mongo_service: MongoServiceResource) -> None:
    """Every inactive user gets a note (of an existing kind, with keys of this job's own)."""
    users = mongo_service.client.iter_inactive_users(last_active_before=delivery.day.start)
    delivery.pipeline().deliver(
        Notification(
            key=f"inactivity_warning:{user.id}:throwaway-{delivery.day.day.isoformat()}",
            kind=NotificationKind.INACTIVITY_WARNING,
            user_id=user.id,
            address=user.email,
            name=user.full_name,
            context={"last_active_date": delivery.day.day, "deactivation_date": delivery.day.day},
        )
        for user in users
        if isinstance(user, InactiveUser)
    )
    delivery.report(greeting=config.greeting)


def _definitions(world: JobWorld) -> dg.Definitions:
    options = DailyOptions.from_settings(world.settings)
    asset = notification_asset(
        throwaway_notes,
        specs=[NotificationAssetSpec(NOTES, "Notes.", deps=[USER_ACTIVITY, NOTIFICATION_LEDGER])],
        config=NotesConfig,
        options=options,
        group_name="throwaway",
        owners=["team:tests"],
        resources=["mongo_service"],
    )
    return dg.Definitions.merge(
        daily_job("send_throwaway_notes", [asset], at=(7, 0), options=options, description="Notes."),
        dg.Definitions(resources=build_resources(world.settings)),
    )


def test_a_job_built_from_the_factory_delivers_once_and_reports_like_every_notification_asset(
    world: JobWorld,
) -> None:
    world.services.store.add_users(
        [user("usr_a", last_login_at="2026-01-01T00:00:00Z"), user("usr_b", last_login_at="2026-11-28T10:00:00Z")]
    )
    defs = _definitions(world)
    job = defs.resolve_job_def("send_throwaway_notes")
    assert {schedule.name for schedule in defs.schedules} == {"send_throwaway_notes_daily"}

    first = job.execute_in_process(
        partition_key=D,
        instance=world.instance,
        run_config={"ops": {"throwaway_notes": {"config": {"greeting": "Hi"}}}},
        raise_on_error=False,
    )
    again = job.execute_in_process(partition_key=D, instance=world.instance, raise_on_error=False)

    assert first.success and again.success
    assert world.sent_keys() == ["inactivity_warning:usr_a:throwaway-2026-11-28"]  # once, however often it runs
    summary = metadata(first, "throwaway_notes")
    assert (summary["business_date"], summary["greeting"], summary["sent"], summary["left_claimed"]) == (
        D,
        "Hi",
        1,
        0,
    )
    assert metadata(again, "throwaway_notes")["duplicate"] == 1
    assert check_result(first, "throwaway_notes", DELIVERY_CHECK).passed
    assert world.ledger()["inactivity_warning:usr_a:throwaway-2026-11-28"]["metadata"]["channel"] == "email"


def test_a_config_value_out_of_its_bounds_fails_the_step_at_once_naming_it(world: JobWorld) -> None:
    job = _definitions(world).resolve_job_def("send_throwaway_notes")
    result = job.execute_in_process(
        partition_key=D,
        instance=world.instance,
        run_config={"ops": {"throwaway_notes": {"config": {"max_failed": -1}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert "invalid run config: max_failed: Input should be greater than or equal to 0" in str(
        failure.event_specific_data.error.message
    )
    assert [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"] == []
