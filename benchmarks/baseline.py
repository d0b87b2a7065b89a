"""The best plain script for the work of send_payment_reminders: what the project is measured against.

What an expert would write without Dagster, with the same connections as the project:
one keep-alive httpx client, pages of 1,000, claims and outcomes batched like the
project's (`--batch-size`, default DELIVERY_BATCH_SIZE's 100), the next batch claimed
and built while the current one is being sent, each message built directly with
f-strings and base64, and `--connections` SMTP sessions in threads. It keeps the
same protocol (claim, send, record) and the same headers, and skips what only a
production system needs: validation, templates, the audit metadata, logging.

  python -m benchmarks.baseline --sql-url U --mongo-url U --smtp-port P --date D [--connections 4]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import smtplib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from email.utils import formatdate, make_msgid

import httpx

from cron_pipelines.clients.tokens import TokenIssuer

SENDER = "no-reply@example.com"


def build_message(due: dict, days_before: int, key: str, message_id: str) -> bytes:
    amount = f"{due['currency']} {due['amount_cents'] // 100:,}.{due['amount_cents'] % 100:02d}"
    name = due["user"]["full_name"]
    text = (
        f"Hello {name},\r\n\r\nYour payment of {amount} for {due['description']} is due on "
        f"{due['due_date']}, in {days_before} days.\r\n\r\nIf you have already paid, please ignore this "
        f"message.\r\n\r\nReference: {key}\r\n"
    )
    html = (
        f"<html><body><p>Hello {name},</p><p>Your payment of <strong>{amount}</strong> for "
        f"{due['description']} is due on <strong>{due['due_date']}</strong>, in {days_before} days.</p>"
        f"<p>If you have already paid, please ignore this message.</p></body></html>"
    )
    boundary = uuid.uuid4().hex
    return (
        f"From: Cron Pipelines <{SENDER}>\r\nTo: {name} <{due['user']['email']}>\r\n"
        f"Subject: Payment due in {days_before} days: {amount}\r\nDate: {formatdate(usegmt=True)}\r\n"
        f"Message-ID: {message_id}\r\nX-Notification-Kind: payment_reminder\r\nX-Notification-Id: {key}\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        f'--{boundary}\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{base64.encodebytes(text.encode()).decode()}--{boundary}\r\n"
        f'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{base64.encodebytes(html.encode()).decode()}--{boundary}--\r\n"
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sql-url", required=True)
    parser.add_argument("--mongo-url", required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--date", type=date.fromisoformat, required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    issuer = TokenIssuer(algorithm="HS256", signing_key=os.environ["INTERNAL_JWT_SECRET"])
    started = time.perf_counter()
    local = threading.local()
    sessions: list[smtplib.SMTP] = []

    def send(item: tuple[str, str, bytes, str]) -> tuple[str, str]:
        key, recipient, data, message_id = item
        if not hasattr(local, "smtp"):  # one session per thread, reused
            local.smtp = smtplib.SMTP("127.0.0.1", args.smtp_port)
            sessions.append(local.smtp)
        local.smtp.sendmail(SENDER, [recipient], data)
        return key, message_id

    with httpx.Client(timeout=30) as http, ThreadPoolExecutor(args.connections) as pool:

        def headers(service: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {issuer.token_for(service)}"}

        def dues() -> Iterator[dict]:
            params = {
                "status": "pending",
                "due_from": args.date.isoformat(),
                "due_to": (args.date + timedelta(days=7)).isoformat(),
                "limit": 1000,
            }
            while True:
                page = http.get(f"{args.sql_url}/v1/dues", params=params, headers=headers("sql-service")).json()
                yield from page["items"]
                if page["next_cursor"] is None:
                    return
                params["cursor"] = page["next_cursor"]

        def reminders() -> Iterator[tuple[dict, int, str]]:
            for due in dues():
                days_before = (date.fromisoformat(due["due_date"]) - args.date).days
                if days_before in (7, 3, 1, 0):
                    yield due, days_before, f"payment_reminder:{due['id']}:{due['due_date']}:{days_before}"

        def claim_and_build(batch: list[tuple[dict, int, str]]) -> list[tuple[str, str, bytes, str]]:
            claims = http.post(
                f"{args.mongo_url}/v1/notifications/claims",
                headers=headers("mongo-service"),
                json={
                    "items": [
                        {
                            "idempotency_key": key,
                            "kind": "payment_reminder",
                            "user_id": due["user_id"],
                            "recipient": due["user"]["email"],
                            "run_id": "baseline",
                            "job_name": "baseline",
                            "partition_key": args.date.isoformat(),
                            "metadata": {},
                        }
                        for due, _, key in batch
                    ]
                },
            ).json()["results"]
            owned = [item for item, result in zip(batch, claims, strict=True) if result["outcome"] == "claimed"]
            # Preferences (v1.1), as the project looks them up: one request for the batch's users.
            preferences = (
                http.post(
                    f"{args.mongo_url}/v1/notification-preferences/lookup",
                    headers=headers("mongo-service"),
                    json={
                        "items": [{"user_id": user_id} for user_id in sorted({due["user_id"] for due, _, _ in owned})]
                    },
                ).json()["results"]
                if owned
                else []
            )
            opted_out = {p["user_id"] for p in preferences if "payment_reminder" in p["opted_out"]}
            messages = []
            for due, days_before, key in owned:
                if due["user_id"] not in opted_out:
                    message_id = make_msgid(domain="example.com")
                    data = build_message(due, days_before, key, message_id)
                    messages.append((key, due["user"]["email"], data, message_id))
            return messages

        def record(sent: list[tuple[str, str]]) -> None:
            at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            http.post(
                f"{args.mongo_url}/v1/notifications/outcomes",
                headers=headers("mongo-service"),
                json={
                    "items": [
                        {"idempotency_key": key, "status": "sent", "message_id": message_id, "at": at}
                        for key, message_id in sent
                    ]
                },
            )

        stream = reminders()
        sending: list[Future] = []
        total = 0
        while batch := list(itertools.islice(stream, args.batch_size)):
            messages = claim_and_build(batch)  # while the batch before is being sent
            if sending:
                record([future.result() for future in sending])
            sending = [pool.submit(send, message) for message in messages]
            total += len(messages)
        if sending:
            record([future.result() for future in sending])
    for session in sessions:
        session.quit()
    print(json.dumps({"seconds": time.perf_counter() - started, "sent": total}))


if __name__ == "__main__":
    main()
