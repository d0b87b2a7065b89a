"""Every step that calls a service: one budget of time lost to failures, and no retries that cannot help."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg
from pydantic import BaseModel, ValidationError

from cron_pipelines.clients.errors import (
    ServiceAuthError,
    ServiceBudgetExhausted,
    ServiceError,
    ServiceProtocolError,
    ServiceRequestError,
)
from cron_pipelines.clients.http import ServiceBudget
from cron_pipelines.delivery.channels.base import ChannelUnavailable
from cron_pipelines.resources import ServiceResource

ConfigClass = TypeVar("ConfigClass", bound=BaseModel)


def config_of(config: type[ConfigClass], op_config: Mapping[str, Any]) -> ConfigClass:
    """A step's run config as its config class; a value out of its bounds fails the step at once, naming it."""
    try:
        return config.model_validate(dict(op_config))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise dg.Failure(description=f"invalid run config: {problems}", allow_retries=False) from None


PERMANENT_ERRORS = (ServiceAuthError, ServiceRequestError, ServiceProtocolError, ServiceBudgetExhausted)
# What an attempt of a step that failed on a service leaves for its retry: the time it lost.
SERVICE_TIME_LOST = "service_seconds_lost"


@contextmanager
def guarded(context: Any, services: Sequence[ServiceResource]) -> Iterator[None]:
    """One budget for the step's calls to every service, carried over to the step's retries.

    Permanent errors (a refused token or request, a protocol violation, the budget spent, a
    mail server refusing our login or sender) fail the same way on every retry: they fail
    the step now, clearly, without retries.
    """
    op_context = context.op_execution_context if isinstance(context, dg.AssetExecutionContext) else context
    budget = None
    if services:
        lost_before = _service_time_lost_before(op_context) if op_context.retry_number else 0.0
        budget = ServiceBudget(services[0].step_deadline_seconds, spent=lost_before)
        for service in services:
            service.client.budget = budget
    try:
        yield
    except PERMANENT_ERRORS as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except ChannelUnavailable as exc:
        if exc.permanent:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        raise
    except ServiceError:
        if budget is not None:
            op_context.log_event(
                dg.AssetObservation(
                    asset_key=_first_asset(op_context),
                    partition=op_context.partition_key if op_context.has_partition_key else None,
                    description="Time this step lost to failing service calls; its retry has the rest of the budget.",
                    metadata={SERVICE_TIME_LOST: round(budget.spent, 3)},
                )
            )
        raise


def _first_asset(context: dg.OpExecutionContext) -> dg.AssetKey:
    keys: list[dg.AssetKey] = sorted(context.assets_def.keys, key=lambda key: key.to_user_string())
    return keys[0]


def _service_time_lost_before(context: dg.OpExecutionContext) -> float:
    """What the earlier attempts of this step lost to failing service calls (their latest report)."""
    step_key = context.get_step_execution_context().step.key
    records = context.instance.get_records_for_run(
        context.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION, ascending=False
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key != step_key:
            continue
        entry = event.asset_observation_data.asset_observation.metadata.get(SERVICE_TIME_LOST)
        if entry is not None and isinstance(entry.value, float | int):
            return float(entry.value)
    return 0.0


def guarded_step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An asset or op body whose service calls share one budget (SERVICE_STEP_DEADLINE_SECONDS) and whose
    permanent errors fail at once: the step's RetryPolicy applies to transient failures only."""

    def services_of(kwargs: Mapping[str, Any]) -> list[ServiceResource]:
        return [value for value in kwargs.values() if isinstance(value, ServiceResource)]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(context: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with guarded(context, services_of(kwargs)):
                yield from fn(context, *args, **kwargs)

        return generator

    @functools.wraps(fn)
    def function(context: Any, *args: Any, **kwargs: Any) -> Any:
        with guarded(context, services_of(kwargs)):
            return fn(context, *args, **kwargs)

    return function
