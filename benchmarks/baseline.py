"""The best plain script for the work of send_payment_reminders: what the project is measured against.

What an expert would write without Dagster, with the same connections as the project:
one keep-alive httpx client, pages of 1,000, claims and outcomes batched like the
project's (`--batch-size`, default DELIVERY_BATCH_SIZE's 100), the next batch claimed
and built while the current one is being sent, each message built directly with
f-strings and base64, and `--connections` SMTP sessions in threads. It sends the
project's email (the same bodies and headers: the mail server's work grows with the
message) and keeps the same protocol (claim, send, record), and skips what only a
production system needs: validation, templates, the audit metadata, logging.

  python -m benchmarks.baseline --sql-url U --mongo-url U --smtp-port P --date D [--connections 4]
"""

from __future__ import annotations

import argparse
import base64
import functools
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
from decimal import Decimal
from email.utils import formataddr, formatdate, make_msgid

import httpx
from babel.dates import format_date
from babel.numbers import format_currency, get_currency_precision
from babel.units import format_unit
from markupsafe import escape

from cron_pipelines.clients.tokens import TokenIssuer

SENDER = "no-reply@example.com"


# The project's payment reminder in English, written out: the same email, byte for byte in its
# bodies and decoded headers (cron_pipelines_tests/test_benchmark.py checks it).
_HTML = (
    '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Payment reminder</title></head>\n'
    '<body style="font-family: Arial, Helvetica, sans-serif; color: #1f2933; line-height: 1.5;">\n'
    '  <div style="max-width: 560px; margin: 0 auto; padding: 24px;">\n    \n'
    "<p>Hello {name},</p>\n<p>\nYour payment of <strong>{amount}</strong> for {description} is due {when}.\n\n</p>\n"
    "<p>If you have already paid, please ignore this message.</p>\n\n"
    '    <p style="color: #7b8794; font-size: 12px; margin-top: 32px;">\n'
    "      This is an automated message. Reference: <code>{key}</code>\n    </p>\n    \n  </div>\n</body>\n</html>\n"
)


@functools.cache
def _figures(amount_cents: int, currency: str, due_date: str, days_before: int) -> tuple[str, str, str]:
    """Amount, date and day count as Babel writes them in English; a run repeats few of them."""
    amount = format_currency(Decimal(amount_cents).scaleb(-get_currency_precision(currency)), currency, locale="en")
    day = format_date(date.fromisoformat(due_date), format="long", locale="en")
    return amount, day, format_unit(days_before, "duration-day", locale="en")


def _encoded_words(text: str) -> str:
    """A header value: ASCII as is, else RFC 2047 base64 words of at most 45 UTF-8 bytes, one per line."""
    if text.isascii():
        return text
    words, word = [], b""
    for character in text:
        encoded = character.encode()
        if len(word) + len(encoded) > 45:
            words.append(word)
            word = b""
        word += encoded
    words.append(word)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word).decode()}?=" for word in words)


def _base64_lines(text: str) -> str:
    encoded = base64.b64encode(text.encode()).decode()
    return "".join(f"{encoded[start : start + 76]}\r\n" for start in range(0, len(encoded), 76))


def build_message(due: dict, days_before: int, key: str, message_id: str) -> bytes:
    amount, day, in_days = _figures(due["amount_cents"], due["currency"], due["due_date"], days_before)
    name = due["user"]["full_name"] or "there"
    description = due["description"] or "your dues"
    if days_before == 0:
        subject = f"Payment due today, {day}: {amount}"
        text_when, html_when = f"today, {day}", f"<strong>today</strong>, {escape(day)}"
    else:
        subject = f"Payment due in {in_days}, {day}: {amount}"
        text_when, html_when = f"on {day}, in {in_days}", f"on <strong>{escape(day)}</strong>, in {escape(in_days)}"
    text = (
        f"Hello {name},\n\nYour payment of {amount} for {description} is due {text_when}.\n\n"
        f"If you have already paid, please ignore this message.\n\nReference: {key}\n\n"
    )
    html = _HTML.format(
        name=escape(name), amount=escape(amount), description=escape(description), when=html_when, key=escape(key)
    )
    boundary = f"=_{uuid.uuid4().hex}"
    return (
        f"From: Cron Pipelines <{SENDER}>\r\nTo: {formataddr((due['user']['full_name'], due['user']['email']))}\r\n"
        f"Subject: {_encoded_words(subject)}\r\nDate: {formatdate(usegmt=True)}\r\n"
        f"Message-ID: {message_id}\r\nX-Notification-Kind: payment_reminder\r\nX-Notification-Id: {key}\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        f'--{boundary}\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{_base64_lines(text)}--{boundary}\r\n"
        f'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{_base64_lines(html)}--{boundary}--\r\n"
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
