"""A Pushgateway stand-in on loopback: accepts pushes in the exposition format and keeps them."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Push:
    method: str
    path: str
    content_type: str
    body: str

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample as {(name, sorted labels): value}, parsed by prometheus_client's own parser."""
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(self.body)
            for sample in family.samples
        }


class PushgatewayStandIn:
    def __init__(self) -> None:
        self.pushes: list[Push] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _receive(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.pushes.append(
                    Push(
                        self.command, self.path, self.headers.get("Content-Type", ""), self.rfile.read(length).decode()
                    )
                )
                self.send_response(200)
                self.end_headers()

            do_PUT = do_POST = _receive

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> PushgatewayStandIn:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
