"""Services a process serves itself, for a deployment with no service of its own: the embedded demo.

A service resource whose base URL is `in-process://<service>` reaches the server that the
deployment registered for it, started on first use in each process that needs it (code
server, run workers, the CLI). The product registers none: `definitions.py`, where the
resource set of a deployment is chosen, registers the demo's when no service URL is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cron_pipelines.clients.tokens import TokenIssuer

SCHEME = "in-process://"

# (service, issuer) → the base URL of this process's server for it, started on first use.
Starter = Callable[[str, TokenIssuer], str]

_lock = threading.Lock()
_starter: Starter | None = None


def serve_in_process(starter: Starter) -> None:
    """From now on `in-process://` URLs of this process reach the servers `starter` starts."""
    global _starter
    with _lock:
        _starter = starter


def in_process_url(service: str) -> str:
    return f"{SCHEME}{service}"


def resolve(base_url: str, issuer: TokenIssuer) -> str:
    """`base_url`, or, for an in-process service, where this process serves it."""
    if not base_url.startswith(SCHEME):
        return base_url
    with _lock:
        starter = _starter
    if starter is None:
        raise RuntimeError(
            f"{base_url}: no service URL is set and this process serves no in-process services "
            "(the embedded demo is registered by cron_pipelines.definitions; it needs the `demo` extra)"
        )
    return starter(base_url.removeprefix(SCHEME), issuer)
