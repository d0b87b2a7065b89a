"""A counting SMTP server in its own process, with a JSON status endpoint for the benchmark.

python -m benchmarks.smtp_sink --port P --status-port S [--latency 0.02]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cron_pipelines_tests.support.smtp_sink import SmtpSink


def max_per_second(arrivals: list[float]) -> int:
    """The most messages that arrived within any one-second window."""
    window: deque[float] = deque()
    best = 0
    for moment in arrivals:
        window.append(moment)
        while window[0] <= moment - 1.0:
            window.popleft()
        best = max(best, len(window))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status-port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to MAIL, RCPT and DATA")
    args = parser.parse_args()
    sink = SmtpSink(port=args.port, latency=args.latency, keep_messages=False).start()

    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with sink._lock:
                arrivals = list(sink.arrivals)
                body = {
                    "received": sink.count,
                    "unique_notification_ids": len(sink.notification_ids),
                    "duplicate_notification_ids": sink.duplicate_ids,
                }
            body["max_per_second"] = max_per_second(arrivals)
            # The sending rate between the first and the last message, without start-up.
            span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
            body["steady_per_second"] = round((len(arrivals) - 1) / span, 1) if span else None
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.status_port), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        sink.stop()


if __name__ == "__main__":
    main()
