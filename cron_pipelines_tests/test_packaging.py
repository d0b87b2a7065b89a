"""What a production install brings: the product without its stand-ins' web framework."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement


def _closure(distribution: str) -> set[str]:
    """Every distribution `pip install <distribution>` pulls in, without extras (from installed metadata)."""
    seen: set[str] = set()
    pending = [distribution]
    while pending:
        name = re.sub(r"[-_.]+", "-", pending.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def test_a_plain_install_has_no_fastapi_and_the_demo_extra_brings_it() -> None:
    plain = _closure("cron_pipelines")
    assert "fastapi" not in plain
    assert {"dagster", "dagster-postgres", "httpx", "pyjwt"} <= plain
    demo = [Requirement(line) for line in metadata.requires("cron_pipelines") or [] if 'extra == "demo"' in line]
    assert {requirement.name for requirement in demo} == {"fastapi", "uvicorn"}
