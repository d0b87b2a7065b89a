"""Talking to a running Dagster webserver as the UI does: its GraphQL API, and waiting for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

# What the UI's Launch button sends for one partition of a job.
LAUNCH_PARTITION = """mutation Launch($job: String!, $partition: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "cron_pipelines", repositoryName: "__repository__", jobName: $job},
    executionMetadata: {tags: [{key: "dagster/partition", value: $partition}]}
  }) { __typename ... on LaunchRunSuccess { run { runId status } } ... on PythonError { message } }
}"""

JOB_NAMES = "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }"


def graphql(url: str, query: str, **variables: object) -> dict:
    answer = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    answer.raise_for_status()
    return answer.json()["data"]


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """The first truthy value of `condition`; a process still starting may refuse or answer half-formed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
