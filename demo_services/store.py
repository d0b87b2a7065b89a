"""The SQLite file behind both stand-in services, and the write rules of docs/services.md.

One file serves the stand-ins of sql-service and mongo-service, whether they run
in the test process, in `dagster dev` or in a benchmark's own process, so every
operation opens its own connection and every write runs in `BEGIN IMMEDIATE`:
two claim batches, from two threads or two processes, can never both claim a key.

Columns carry no declared type on purpose: SQLite then stores each value exactly
as given (a text `amount_cents` stays text, `"125"` does not become 125), which is
how tests plant malformed records that the services must serve unchanged. Tables
are WITHOUT ROWID because every lookup is by a text key: one B-tree search, not two.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cron_pipelines.models.payloads import (
    Deactivation,
    NotificationClaim,
    NotificationOutcome,
    OptOut,
    PreferenceQuery,
    VerificationDecision,
    parse_instant,
)

# Each value a JSON scalar: the sort key of the last item of a page.
SortKey = tuple[Any, Any]
Row = tuple[Any, ...]

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS users (
        id NOT NULL PRIMARY KEY, email, full_name, status, last_login_at, created_at,
        -- last_login_at, or created_at for a user who never logged in, normalised (see sortable_instant)
        last_active_utc,
        deactivated_at, deactivation_reason,
        locale, timezone -- v1.1, optional: NULL is left out of the answers
        ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS users_by_status_activity ON users (status, last_active_utc, id)",
    """CREATE TABLE IF NOT EXISTS dues (
        id NOT NULL PRIMARY KEY, user_id, amount_cents, currency, due_date, status, description) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS dues_by_date ON dues (due_date, id)",
    "CREATE INDEX IF NOT EXISTS dues_by_status_date ON dues (status, due_date, id)",
    """CREATE TABLE IF NOT EXISTS verifications (
        id NOT NULL PRIMARY KEY, employee_id, email, full_name, status, requested_at,
        requested_at_utc, decision_reason, decided_at,
        locale, timezone) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS verifications_by_request ON verifications (requested_at_utc, id)",
    "CREATE INDEX IF NOT EXISTS verifications_by_status_request ON verifications (status, requested_at_utc, id)",
    """CREATE TABLE IF NOT EXISTS verification_attempts (
        id NOT NULL PRIMARY KEY, verification_id, employee_id, outcome, method, attempted_at,
        attempted_at_utc) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS attempts_by_time ON verification_attempts (attempted_at_utc, id)",
    """CREATE INDEX IF NOT EXISTS attempts_by_verification
        ON verification_attempts (verification_id, attempted_at_utc, id)""",
    """CREATE TABLE IF NOT EXISTS notifications (
        idempotency_key NOT NULL PRIMARY KEY, kind, user_id, recipient, status, run_id, job_name,
        partition_key, attempts, claimed_at, claimed_at_utc, sent_at, message_id, error,
        metadata -- JSON text
        ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS notifications_by_claim ON notifications (claimed_at_utc, idempotency_key)",
    """CREATE INDEX IF NOT EXISTS notifications_by_user
        ON notifications (user_id, claimed_at_utc, idempotency_key)""",
    """CREATE INDEX IF NOT EXISTS notifications_by_status
        ON notifications (status, claimed_at_utc, idempotency_key)""",
    # Recipients' choices (v1.1): a digest flag per user, one row per opted-out kind.
    "CREATE TABLE IF NOT EXISTS notification_preferences (user_id NOT NULL PRIMARY KEY, digest) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS opt_outs (
        user_id NOT NULL, kind NOT NULL, source, at, PRIMARY KEY (user_id, kind)) WITHOUT ROWID""",
)

# The columns a caller may insert (the normalised ones are derived, never given).
_INSERTABLE: dict[str, tuple[str, ...]] = {
    "users": (
        "id",
        "email",
        "full_name",
        "status",
        "last_login_at",
        "created_at",
        "deactivated_at",
        "deactivation_reason",
        "locale",
        "timezone",
    ),
    "dues": ("id", "user_id", "amount_cents", "currency", "due_date", "status", "description"),
    "verifications": (
        "id",
        "employee_id",
        "email",
        "full_name",
        "status",
        "requested_at",
        "decision_reason",
        "decided_at",
        "locale",
        "timezone",
    ),
    "verification_attempts": ("id", "verification_id", "employee_id", "outcome", "method", "attempted_at"),
    "notifications": (
        "idempotency_key",
        "kind",
        "user_id",
        "recipient",
        "status",
        "run_id",
        "job_name",
        "partition_key",
        "attempts",
        "claimed_at",
        "sent_at",
        "message_id",
        "error",
        "metadata",
    ),
}
_PRIMARY_KEYS: dict[str, str] = {table: columns[0] for table, columns in _INSERTABLE.items()}

_RECORD_FIELDS = _INSERTABLE["notifications"]
_RECORD_COLUMNS = ", ".join(_RECORD_FIELDS)
_STATUS_INDEX = _RECORD_FIELDS.index("status")
_SELECT_RECORD = f"SELECT {_RECORD_COLUMNS} FROM notifications WHERE idempotency_key = ?"
_INSERT_CLAIM = (
    "INSERT INTO notifications (idempotency_key, kind, user_id, recipient, run_id, job_name, partition_key, "
    "metadata, claimed_at, claimed_at_utc, status, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'claimed', 1) "
    f"RETURNING {_RECORD_COLUMNS}"
)
# A failed delivery is tried again: a fresh attempt, nothing left from the last one. A released one
# (the mail server failed, not the message: contract v1.2) is claimed again without counting one.
_RETRY_CLAIM = (
    "UPDATE notifications SET recipient = ?, run_id = ?, job_name = ?, partition_key = ?, metadata = ?, "
    "claimed_at = ?, claimed_at_utc = ?, status = 'claimed', "
    "attempts = attempts + CASE WHEN status = 'failed' THEN 1 ELSE 0 END, "
    "error = NULL, message_id = NULL, sent_at = NULL "
    f"WHERE idempotency_key = ? RETURNING {_RECORD_COLUMNS}"
)
_CLAIMABLE_AGAIN = ("failed", "released")


def sortable_instant(value: object) -> str | None:
    """An instant as fixed-width UTC text (`2026-11-28T09:00:00.000000Z`) that sorts in time order.

    Accepts an RFC 3339 string with an offset or an aware datetime; anything else
    (a malformed stored value) gives None, so the row is still stored and served.
    """
    try:
        parsed = value if isinstance(value, datetime) else parse_instant(value)  # type: ignore[arg-type]
        if parsed.tzinfo is None:
            return None
        utc = parsed.astimezone(UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        return None
    return utc.isoformat(timespec="microseconds") + "Z"


def now_instant() -> str:
    """The current instant as the services write it (RFC 3339, UTC, microseconds)."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _decode_metadata(value: Any) -> Any:
    # A stored value that is not JSON text is served as stored: the client must cope.
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _encode_metadata(value: Any) -> Any:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else value


def _record(row: Row) -> dict[str, Any]:
    """A ledger row (in _RECORD_FIELDS order) as the contract's notification record."""
    record = dict(zip(_RECORD_FIELDS, row, strict=True))
    record["metadata"] = _decode_metadata(record["metadata"])
    return record


def _without_absent_reader_fields(item: dict[str, Any]) -> dict[str, Any]:
    """A v1.1 `locale`/`timezone` left out where the record has none, as a v1.0 service answers."""
    for name in _READER_FIELDS:
        if item.get(name) is None:
            item.pop(name, None)
    return item


def _due_item(row: Row) -> dict[str, Any]:
    user = (
        None
        if row[7] is None
        else _without_absent_reader_fields(
            {"id": row[7], "email": row[8], "full_name": row[9], "locale": row[10], "timezone": row[11]}
        )
    )
    return {
        "id": row[0],
        "user_id": row[1],
        "amount_cents": row[2],
        "currency": row[3],
        "due_date": row[4],
        "status": row[5],
        "description": row[6],
        "user": user,
    }


def _columns_item(names: Sequence[str]) -> Callable[[Row], dict[str, Any]]:
    return lambda row: _without_absent_reader_fields(dict(zip(names, row, strict=True)))


_READER_FIELDS = ("locale", "timezone")
_USER_FIELDS = ("id", "email", "full_name", "status", "last_login_at", "created_at", *_READER_FIELDS)
_VERIFICATION_FIELDS = ("id", "employee_id", "email", "full_name", "status", "requested_at", *_READER_FIELDS)
_ATTEMPT_FIELDS = ("id", "verification_id", "employee_id", "outcome", "method", "attempted_at")
_user_item = _columns_item(_USER_FIELDS)
_verification_item = _columns_item(_VERIFICATION_FIELDS)
_attempt_item = _columns_item(_ATTEMPT_FIELDS)


@dataclass(frozen=True)
class KeysetPage:
    """One page of a list: its items and, when more follow, the sort key to resume after."""

    items: list[dict[str, Any]]
    next_after: SortKey | None


class DemoStore:
    """The stand-ins' data: the records of both services in one SQLite file."""

    def __init__(self, path: str | Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The file holds names and addresses: private from creation (SQLite gives its -wal and
        # -shm files the same mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._busy_timeout = busy_timeout_seconds
        with self._connection() as conn:
            # WAL lets readers page while a writer claims; the setting is stored in the file.
            conn.execute("PRAGMA journal_mode=WAL")
        with self._connection(write=True) as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            # A file made before v1.1 gains the reader columns (empty: its users behave as v1.0).
            for table in ("users", "verifications"):
                present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for column in _READER_FIELDS:
                    if column not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    # -- connections -----------------------------------------------------------

    @contextmanager
    def _connection(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        # `timeout` is SQLite's busy_timeout: a writer waits for another's lock instead of failing.
        # isolation_level=None leaves transactions to us, so a write takes its lock up front.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, far faster
            if not write:
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # some SQLite errors have rolled it back already
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- inserting (as given, for seeds and tests) -----------------------------------

    def _insert(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        derived: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda row: {},
    ) -> int:
        allowed = _INSERTABLE[table]
        prepared: list[dict[str, Any]] = []
        for row in rows:
            unknown = set(row) - set(allowed)
            if unknown:
                raise ValueError(f"{table} has no column(s) {sorted(unknown)}")
            prepared.append({**{column: row.get(column) for column in allowed}, **derived(row)})
        if not prepared:
            return 0
        columns = list(prepared[0])
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        with self._connection(write=True) as conn:
            conn.executemany(sql, ([row[column] for column in columns] for row in prepared))
        return len(prepared)

    def add_users(self, rows: Iterable[Mapping[str, Any]]) -> int:
        def derived(row: Mapping[str, Any]) -> dict[str, Any]:
            last_login = row.get("last_login_at")
            return {"last_active_utc": sortable_instant(row.get("created_at") if last_login is None else last_login)}

        return self._insert("users", rows, derived)

    def add_dues(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self._insert("dues", rows)

    def add_verifications(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self._insert(
            "verifications", rows, lambda row: {"requested_at_utc": sortable_instant(row.get("requested_at"))}
        )

    def add_attempts(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self._insert(
            "verification_attempts", rows, lambda row: {"attempted_at_utc": sortable_instant(row.get("attempted_at"))}
        )

    def add_notifications(self, rows: Iterable[Mapping[str, Any]]) -> int:
        def derived(row: Mapping[str, Any]) -> dict[str, Any]:
            return {
                "claimed_at_utc": sortable_instant(row.get("claimed_at")),
                "metadata": _encode_metadata(row.get("metadata")),
            }

        return self._insert("notifications", rows, derived)

    def reset(self) -> None:
        """Empty every table (the schema stays)."""
        with self._connection(write=True) as conn:
            for table in (*_INSERTABLE, "opt_outs", "notification_preferences"):
                conn.execute(f"DELETE FROM {table}")

    # -- reading single records (for tests and tools) ------------------------------------

    def _get(self, table: str, key: str) -> dict[str, Any] | None:
        with self._connection() as conn:
            cursor = conn.execute(f"SELECT * FROM {table} WHERE {_PRIMARY_KEYS[table]} = ?", (key,))
            row = cursor.fetchone()
            return None if row is None else dict(zip((c[0] for c in cursor.description), row, strict=True))

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        return self._get("users", user_id)

    def get_due(self, due_id: str) -> dict[str, Any] | None:
        return self._get("dues", due_id)

    def get_verification(self, verification_id: str) -> dict[str, Any] | None:
        return self._get("verifications", verification_id)

    def get_notification(self, idempotency_key: str) -> dict[str, Any] | None:
        """The ledger record as the contract shapes it (metadata decoded)."""
        with self._connection() as conn:
            row = conn.execute(_SELECT_RECORD, (idempotency_key,)).fetchone()
        return None if row is None else _record(row)

    def list_notifications(self) -> list[dict[str, Any]]:
        """Every ledger record, in the list endpoint's order."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM notifications ORDER BY claimed_at_utc, idempotency_key"
            ).fetchall()
        return [_record(row) for row in rows]

    def table_counts(self) -> dict[str, int]:
        with self._connection() as conn:
            tables = (*_INSERTABLE, "opt_outs", "notification_preferences")
            return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}

    # -- list endpoints ----------------------------------------------------------------

    def _page(
        self,
        *,
        columns: str,
        source: str,
        sort: tuple[str, str],
        where: Sequence[str],
        params: Sequence[Any],
        after: SortKey | None,
        limit: int,
        to_item: Callable[[Row], dict[str, Any]],
    ) -> KeysetPage:
        """Keyset pagination shared by every list: rows strictly after `after` in (key, id) order.

        Asking for one row more than the page tells whether another page follows, so
        the last page never carries a cursor. Resuming from a key instead of an offset
        keeps pages free of duplicates and gaps while records are being added.
        """
        key_column, id_column = sort
        clauses = list(where)
        values = list(params)
        if after is not None:
            after_key, after_id = after
            if after_key is None:
                # ASC puts NULL keys (malformed instants) first: finish those, then everything keyed.
                clauses.append(f"(({key_column} IS NULL AND {id_column} > ?) OR {key_column} IS NOT NULL)")
                values.append(after_id)
            else:
                clauses.append(f"({key_column}, {id_column}) > (?, ?)")
                values.extend((after_key, after_id))
        where_sql = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {columns}, {key_column}, {id_column} FROM {source} {where_sql} "
            f"ORDER BY {key_column}, {id_column} LIMIT ?"
        )
        with self._connection() as conn:
            rows = conn.execute(sql, [*values, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return KeysetPage(
            items=[to_item(row[:-2]) for row in rows],
            next_after=(rows[-1][-2], rows[-1][-1]) if more else None,
        )

    @staticmethod
    def _in(column: str, values: Sequence[Any] | None) -> tuple[list[str], list[Any]]:
        if not values:
            return [], []
        return [f"{column} IN ({', '.join('?' * len(values))})"], list(values)

    @classmethod
    def _statuses(cls, column: str, statuses: Sequence[str] | None) -> tuple[list[str], list[Any]]:
        """A status filter that keeps pages in index order.

        One status uses the (status, key, id) index. For several, the unary `+` keeps
        SQLite off that index: it would sort every remaining match on every page,
        where walking the (key, id) index and filtering stops after one page.
        """
        return cls._in(column if statuses is None or len(set(statuses)) <= 1 else f"+{column}", statuses)

    def page_dues(
        self,
        *,
        statuses: Sequence[str] | None = None,
        due_from: date | None = None,
        due_to: date | None = None,
        after: SortKey | None = None,
        limit: int,
    ) -> KeysetPage:
        where, params = self._statuses("d.status", statuses)
        if due_from is not None:
            where.append("d.due_date >= ?")
            params.append(due_from.isoformat())
        if due_to is not None:
            where.append("d.due_date <= ?")
            params.append(due_to.isoformat())
        return self._page(
            columns="d.id, d.user_id, d.amount_cents, d.currency, d.due_date, d.status, d.description, "
            "u.id, u.email, u.full_name, u.locale, u.timezone",
            source="dues AS d LEFT JOIN users AS u ON u.id = d.user_id",
            sort=("d.due_date", "d.id"),
            where=where,
            params=params,
            after=after,
            limit=limit,
            to_item=_due_item,
        )

    def page_verifications(
        self, *, statuses: Sequence[str] | None = None, after: SortKey | None = None, limit: int
    ) -> KeysetPage:
        where, params = self._statuses("status", statuses)
        return self._page(
            columns=", ".join(_VERIFICATION_FIELDS),
            source="verifications",
            sort=("requested_at_utc", "id"),
            where=where,
            params=params,
            after=after,
            limit=limit,
            to_item=_verification_item,
        )

    def page_inactive_users(
        self, *, last_active_before: datetime, after: SortKey | None = None, limit: int
    ) -> KeysetPage:
        return self._page(
            columns=", ".join(_USER_FIELDS),
            source="users",
            sort=("last_active_utc", "id"),
            where=["status = 'active'", "last_active_utc < ?"],
            params=[sortable_instant(last_active_before)],
            after=after,
            limit=limit,
            to_item=_user_item,
        )

    def page_attempts(
        self,
        *,
        verification_ids: Sequence[str] | None = None,
        since: datetime | None = None,
        after: SortKey | None = None,
        limit: int,
    ) -> KeysetPage:
        where, params = self._in("verification_id", verification_ids)
        if since is not None:
            where.append("attempted_at_utc >= ?")
            params.append(sortable_instant(since))
        return self._page(
            columns=", ".join(_ATTEMPT_FIELDS),
            source="verification_attempts",
            sort=("attempted_at_utc", "id"),
            where=where,
            params=params,
            after=after,
            limit=limit,
            to_item=_attempt_item,
        )

    def page_notifications(
        self,
        *,
        user_id: str | None = None,
        kind: str | None = None,
        statuses: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: SortKey | None = None,
        limit: int,
    ) -> KeysetPage:
        """Ledger records; `since` is inclusive and `until` exclusive, both on claimed_at."""
        where, params = self._statuses("status", statuses)
        for clause, value in (
            ("user_id = ?", user_id),
            ("kind = ?", kind),
            ("claimed_at_utc >= ?", sortable_instant(since) if since is not None else None),
            ("claimed_at_utc < ?", sortable_instant(until) if until is not None else None),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        return self._page(
            columns=_RECORD_COLUMNS,
            source="notifications",
            sort=("claimed_at_utc", "idempotency_key"),
            where=where,
            params=params,
            after=after,
            limit=limit,
            to_item=_record,
        )

    # -- batch writes: one transaction per batch, one result per item, in order ----------

    def mark_overdue(self, due_ids: Sequence[str]) -> list[dict[str, Any]]:
        with self._connection(write=True) as conn:
            return [{"due_id": due_id, "outcome": self._mark_overdue(conn, due_id)} for due_id in due_ids]

    @staticmethod
    def _mark_overdue(conn: sqlite3.Connection, due_id: str) -> str:
        row = conn.execute("SELECT status FROM dues WHERE id = ?", (due_id,)).fetchone()
        if row is None:
            return "not_found"
        if row[0] == "overdue":
            return "already_overdue"
        if row[0] != "pending":
            return "invalid_state"
        conn.execute("UPDATE dues SET status = 'overdue' WHERE id = ?", (due_id,))
        return "marked"

    def decide_verifications(self, decisions: Sequence[VerificationDecision]) -> list[dict[str, Any]]:
        decided_at = now_instant()
        with self._connection(write=True) as conn:
            return [
                {"verification_id": decision.verification_id, "outcome": self._decide(conn, decision, decided_at)}
                for decision in decisions
            ]

    @staticmethod
    def _decide(conn: sqlite3.Connection, decision: VerificationDecision, decided_at: str) -> str:
        row = conn.execute("SELECT status FROM verifications WHERE id = ?", (decision.verification_id,)).fetchone()
        if row is None:
            return "not_found"
        if row[0] == decision.status:
            return "unchanged"
        if row[0] != "pending":
            return "invalid_state"
        conn.execute(
            "UPDATE verifications SET status = ?, decision_reason = ?, decided_at = ? WHERE id = ?",
            (decision.status, decision.reason, decided_at, decision.verification_id),
        )
        return "updated"

    def deactivate_users(self, deactivations: Sequence[Deactivation]) -> list[dict[str, Any]]:
        deactivated_at = now_instant()
        with self._connection(write=True) as conn:
            return [
                {"user_id": item.user_id, "outcome": self._deactivate(conn, item, deactivated_at)}
                for item in deactivations
            ]

    @staticmethod
    def _deactivate(conn: sqlite3.Connection, item: Deactivation, deactivated_at: str) -> str:
        row = conn.execute("SELECT status, last_active_utc FROM users WHERE id = ?", (item.user_id,)).fetchone()
        if row is None:
            return "not_found"
        status, last_active = row
        if status != "active":  # inactive, or a status this stand-in does not know: left alone
            return "already_inactive"
        # A user whose activity cannot be read is not deactivated: the decision was not about them.
        if last_active is None or last_active > sortable_instant(item.last_active_at):
            return "active_again"
        conn.execute(
            "UPDATE users SET status = 'inactive', deactivated_at = ?, deactivation_reason = ? WHERE id = ?",
            (deactivated_at, item.reason, item.user_id),
        )
        return "deactivated"

    # -- preferences (v1.1) --------------------------------------------------------

    def lookup_preferences(self, queries: Sequence[PreferenceQuery]) -> list[dict[str, Any]]:
        """Each user's opt-outs and digest flag; a user with none stored gets the defaults."""
        with self._connection() as conn:
            return [
                {
                    "user_id": query.user_id,
                    "opted_out": [
                        kind
                        for (kind,) in conn.execute(
                            "SELECT kind FROM opt_outs WHERE user_id = ? ORDER BY kind", (query.user_id,)
                        )
                    ],
                    "digest": bool(
                        (
                            row := conn.execute(
                                "SELECT digest FROM notification_preferences WHERE user_id = ?", (query.user_id,)
                            ).fetchone()
                        )
                        and row[0]
                    ),
                }
                for query in queries
            ]

    def add_opt_outs(self, opt_outs: Sequence[OptOut]) -> list[dict[str, Any]]:
        with self._connection(write=True) as conn:
            return [{"user_id": item.user_id, "outcome": self._add_opt_out(conn, item)} for item in opt_outs]

    @staticmethod
    def _add_opt_out(conn: sqlite3.Connection, item: OptOut) -> str:
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (item.user_id,)).fetchone() is None:
            return "not_found"
        inserted = conn.execute(
            "INSERT OR IGNORE INTO opt_outs (user_id, kind, source, at) VALUES (?, ?, ?, ?)",
            (item.user_id, item.kind, item.source, item.at),
        )
        return "added" if inserted.rowcount else "already"

    def set_digest(self, user_id: str, digest: bool) -> None:
        with self._connection(write=True) as conn:
            conn.execute(
                "INSERT INTO notification_preferences (user_id, digest) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET digest = excluded.digest",
                (user_id, int(digest)),
            )

    def claim_notifications(self, claims: Sequence[NotificationClaim]) -> list[dict[str, Any]]:
        """Claim each key (docs/services.md, "mongo-service"); the whole batch is one transaction."""
        claimed_at = now_instant()
        claimed_at_utc = sortable_instant(claimed_at)
        with self._connection(write=True) as conn:
            return [self._claim(conn, claim, claimed_at, claimed_at_utc) for claim in claims]

    @staticmethod
    def _claim(
        conn: sqlite3.Connection, claim: NotificationClaim, claimed_at: str, claimed_at_utc: str | None
    ) -> dict[str, Any]:
        key = claim.idempotency_key
        row = conn.execute(_SELECT_RECORD, (key,)).fetchone()
        if row is not None and row[_STATUS_INDEX] not in _CLAIMABLE_AGAIN:
            return {"idempotency_key": key, "outcome": "duplicate", "record": _record(row)}
        fresh = (
            claim.recipient,
            claim.run_id,
            claim.job_name,
            claim.partition_key,
            _encode_metadata(claim.metadata),
            claimed_at,
            claimed_at_utc,
        )
        if row is None:
            row = conn.execute(_INSERT_CLAIM, (key, claim.kind, claim.user_id, *fresh)).fetchone()
        else:
            row = conn.execute(_RETRY_CLAIM, (*fresh, key)).fetchone()
        return {"idempotency_key": key, "outcome": "claimed", "record": _record(row)}

    def record_outcomes(self, outcomes: Sequence[NotificationOutcome]) -> list[dict[str, Any]]:
        with self._connection(write=True) as conn:
            return [
                {"idempotency_key": item.idempotency_key, "outcome": self._record_outcome(conn, item)}
                for item in outcomes
            ]

    @staticmethod
    def _record_outcome(conn: sqlite3.Connection, item: NotificationOutcome) -> str:
        # sent_at is set exactly when the record is sent, so it never outlives a later failure.
        cursor = conn.execute(
            "UPDATE notifications SET status = ?, message_id = ?, error = ?, sent_at = ? WHERE idempotency_key = ?",
            (
                item.status,
                item.message_id,
                item.error,
                item.at if item.status == "sent" else None,
                item.idempotency_key,
            ),
        )
        return "updated" if cursor.rowcount else "not_found"
