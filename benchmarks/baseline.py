"""The same work as send_payment_reminders without Dagster: the floor the project is compared to.

One httpx.Client, pages of 1,000, batch claims of 500, messages built exactly as the
project builds them, one reused SMTP connection, batch outcomes. Prints a JSON summary.

  python -m benchmarks.baseline --sql-url U --mongo-url U --smtp-port P --date D
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import smtplib
import time
from datetime import date, datetime, timedelta, timezone

import httpx

from cron_pipelines.clients.tokens import TokenIssuer
from cron_pipelines.notifications.messages import MessageComposer, Notification, NotificationKind
from cron_pipelines.rules.payments import format_amount


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sql-url", required=True)
    parser.add_argument("--mongo-url", required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--date", type=date.fromisoformat, required=True)
    args = parser.parse_args()

    issuer = TokenIssuer(algorithm="HS256", signing_key=os.environ["INTERNAL_JWT_SECRET"])
    composer = MessageComposer("Cron Pipelines <no-reply@example.com>")
    started = time.perf_counter()
    sent = claimed = 0
    with httpx.Client(timeout=30) as http, smtplib.SMTP("127.0.0.1", args.smtp_port) as smtp:
        # Tokens live 5 minutes: ask the issuer each time (it re-mints shortly before expiry).
        def sql_headers() -> dict[str, str]:
            return {"Authorization": f"Bearer {issuer.token_for('sql-service')}"}

        def mongo_headers() -> dict[str, str]:
            return {"Authorization": f"Bearer {issuer.token_for('mongo-service')}"}

        def dues():
            params = {"status": "pending", "due_from": args.date.isoformat(),
                      "due_to": (args.date + timedelta(days=7)).isoformat(), "limit": 1000}
            while True:
                page = http.get(f"{args.sql_url}/v1/dues", params=params, headers=sql_headers()).json()
                yield from page["items"]
                if page["next_cursor"] is None:
                    return
                params["cursor"] = page["next_cursor"]

        def reminders():
            for due in dues():
                days_before = (date.fromisoformat(due["due_date"]) - args.date).days
                if days_before in (7, 3, 1, 0):
                    yield Notification(
                        key=f"payment_reminder:{due['id']}:{due['due_date']}:{days_before}",
                        kind=NotificationKind.PAYMENT_REMINDER, user_id=due["user_id"],
                        email=due["user"]["email"], name=due["user"]["full_name"],
                        context={"amount": format_amount(due["amount_cents"], due["currency"]),
                                 "description": due["description"], "due_date": due["due_date"],
                                 "days_before": days_before},
                    )

        stream = reminders()
        while chunk := list(itertools.islice(stream, 500)):
            claims = http.post(
                f"{args.mongo_url}/v1/notifications/claims", headers=mongo_headers(),
                json={"items": [{"idempotency_key": n.key, "kind": n.kind.value, "user_id": n.user_id,
                                 "recipient": n.email, "run_id": "baseline", "job_name": "baseline",
                                 "partition_key": args.date.isoformat(), "metadata": {}} for n in chunk]},
            ).json()["results"]
            outcomes = []
            for notification, result in zip(chunk, claims):
                if result["outcome"] != "claimed":
                    continue
                claimed += 1
                message = composer.compose(notification)
                smtp.sendmail(message.sender, [message.recipient], message.data)
                sent += 1
                outcomes.append({"idempotency_key": notification.key, "status": "sent",
                                 "message_id": message.message_id,
                                 "at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")})
            if outcomes:
                http.post(f"{args.mongo_url}/v1/notifications/outcomes", headers=mongo_headers(), json={"items": outcomes})
    print(json.dumps({"seconds": time.perf_counter() - started, "claimed": claimed, "sent": sent}))


if __name__ == "__main__":
    main()
