"""Serving the stand-in apps over real HTTP on loopback.

Tests, the benchmark and the embedded demo all talk to the stand-ins through a
real socket, so the clients' timeouts, retries and connection pooling are
exercised exactly as against the real services.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from demo_services.auth import TokenVerifier
from demo_services.mongo_app import SERVICE as MONGO_SERVICE
from demo_services.mongo_app import create_mongo_app
from demo_services.sql_app import SERVICE as SQL_SERVICE
from demo_services.sql_app import create_sql_app
from demo_services.store import DemoStore


class ServiceServer:
    """One app served by uvicorn from a daemon thread.

    The socket is bound in `start()` before uvicorn runs, so with port 0 the
    chosen port is known at once and `.url` is valid as soon as `start()` returns.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        if self._socket is None:
            raise RuntimeError("the server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ServiceServer:
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.create_server((self.host, self.port), family=family)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        # uvicorn installs signal handlers only from the main thread, so this thread leaves them alone.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"uvicorn:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.host}:{self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        stop_servers(self)

    def _request_exit(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def _wait_stopped(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def stop_servers(*servers: ServiceServer) -> None:
    """Stop several servers at once: each takes a few event-loop ticks to drain, so they drain together."""
    for server in servers:
        server._request_exit()
    for server in servers:
        server._wait_stopped()


@contextmanager
def serving(*servers: ServiceServer) -> Iterator[tuple[ServiceServer, ...]]:
    """Start the servers; stop them all on exit (also when one fails to start)."""
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        stop_servers(*servers)


def serve_demo_services(
    *,
    db_path: str | Path,
    sql_port: int,
    mongo_port: int,
    verifier_for: Callable[[str], TokenVerifier],
    host: str = "127.0.0.1",
) -> None:
    """Serve both stand-ins on one store file in the foreground until Ctrl-C."""
    store = DemoStore(db_path)
    sql_app = create_sql_app(store, verifier_for(SQL_SERVICE))
    mongo_app = create_mongo_app(store, verifier_for(MONGO_SERVICE))
    with serving(ServiceServer(sql_app, host, sql_port), ServiceServer(mongo_app, host, mongo_port)) as (sql, mongo):
        print(
            f"{SQL_SERVICE} stand-in at {sql.url}, {MONGO_SERVICE} stand-in at {mongo.url} "
            f"(data in {store.path}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
