"""An alert as a Slack-compatible message: `text` for notifications, `blocks` for the reader, an HMAC signature.

The body is what Slack's incoming webhooks take (and Mattermost's, and most chat tools').
With a secret, `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>` lets the receiver
check it came from here. Text from outside (a failed step's error) is escaped for Slack's
markup and bounded by Slack's own limits, so no alert is refused for its length.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cron_pipelines.delivery.channels.base import OutgoingMessage, UnsendableNotification
from cron_pipelines.models.notification import Notification, NotificationKind
from cron_pipelines.safe_text import printable

SIGNATURE_HEADER = "X-Signature-256"
# Slack's limits: a header block's text, a section's text.
MAX_HEADER_CHARACTERS = 150
MAX_SECTION_CHARACTERS = 3000


@dataclass(frozen=True)
class WebhookMessage(OutgoingMessage):
    """A JSON body and the headers it is posted with (its signature among them)."""

    headers: tuple[tuple[str, str], ...] = ()


def _escaped(text: object, limit: int) -> str:
    """Text for Slack's markup, each line printable, `&`, `<` and `>` escaped (they open links and mentions), bounded."""
    lines = [printable(line, limit) for line in str(text).splitlines()]
    value = "\n".join(lines).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookComposer:
    """The webhook channel's composer: one ops alert into one signed JSON message."""

    name = "webhook"

    def __init__(self, secret: str | None) -> None:
        self._secret = secret

    def new_message_id(self) -> str:
        return f"<{uuid.uuid4().hex}@webhook.cron-pipelines>"

    def message(self, notifications: Sequence[Notification], message_id: str | None, *, digest: bool) -> WebhookMessage:
        if digest or len(notifications) != 1:
            raise UnsendableNotification("a webhook carries one alert")
        (notification,) = notifications
        if notification.kind != NotificationKind.OPS_ALERT:
            raise UnsendableNotification(f"the webhook channel carries ops alerts, not {notification.kind}")
        body = json.dumps(_payload(notification.context), ensure_ascii=False, separators=(",", ":")).encode()
        message_id = message_id or self.new_message_id()
        headers = [
            ("Content-Type", "application/json"),
            ("X-Notification-Kind", notification.kind.value),
            ("X-Notification-Id", notification.key),
            ("X-Message-Id", message_id),
        ]
        if self._secret is not None:
            headers.append((SIGNATURE_HEADER, signature(self._secret, body)))
        return WebhookMessage(
            key=notification.key,
            kind=notification.kind.value,
            recipient=notification.address or "",
            message_id=message_id,
            data=body,
            headers=tuple(headers),
        )

    def preview(self, message: OutgoingMessage) -> str:
        text = json.loads(message.data).get("text", "")
        return f"POST {message.recipient}\n\n{text}"


def _payload(context: Any) -> dict[str, Any]:
    headline = f"[cron_pipelines] {context['headline']}: {context['job_name']}"
    if context.get("partition_key"):
        headline += f" ({context['partition_key']})"
    fields = [
        {"type": "mrkdwn", "text": f"*Job*\n{_escaped(context['job_name'], 200)}"},
        {"type": "mrkdwn", "text": f"*Partition*\n{_escaped(context.get('partition_key') or 'none', 100)}"},
        {"type": "mrkdwn", "text": f"*Run*\n<{context['run_url']}|{_escaped(context['run_id'], 100)}>"},
    ]
    return {
        "text": f"{headline}: {printable(context['summary'], 1000)} {context['run_url']}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": printable(headline, MAX_HEADER_CHARACTERS - 5)}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _escaped(context["summary"], MAX_SECTION_CHARACTERS)},
            },
            {"type": "section", "fields": fields},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "```"
                    + _escaped(context["error"], MAX_SECTION_CHARACTERS - 6).replace("```", "'''")
                    + "```",
                },
            },
        ],
    }
