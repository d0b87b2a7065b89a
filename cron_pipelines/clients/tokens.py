"""Internal service-to-service JWTs (docs/services.md, "Talking to a service"): minting them.

Tokens are short-lived and addressed to exactly one service. The issuer caches one
token per audience and mints a new one shortly before it expires, so a run pays
for signing a handful of times, not once per request.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import jwt
from cryptography.hazmat.primitives import serialization

Algorithm = Literal["HS256", "RS256", "ES256", "EdDSA"]
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset({"RS256", "ES256", "EdDSA"})
SERVICE_AUDIENCES: frozenset[str] = frozenset({"sql-service", "mongo-service"})
SUBJECT = "cron-pipelines"
MAX_LIFETIME_SECONDS = 300
MIN_HS256_SECRET_BYTES = 32


class TokenError(Exception):
    """A token could not be minted or was refused; the message never holds the token or key."""


def public_key_pem(private_key_pem: str) -> str:
    """The PEM public key matching a PEM private key (what a service verifies with)."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class _CachedToken:
    token: str
    expires_at: float


@dataclass
class TokenIssuer:
    """Mints the bearer tokens cron_pipelines presents to the internal services.

    `signing_key` is the HS256 secret or, for RS256/ES256/EdDSA, the PEM private key.
    """

    algorithm: Algorithm
    signing_key: str
    issuer: str = "cron-pipelines"
    key_id: str | None = None
    lifetime_seconds: int = MAX_LIFETIME_SECONDS
    # A cached token is replaced this long before it expires, so a request never
    # arrives at a service with a token that lapsed in flight.
    refresh_margin_seconds: int = 30
    _cache: dict[str, _CachedToken] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.lifetime_seconds <= MAX_LIFETIME_SECONDS:
            raise TokenError(f"token lifetime must be 1..{MAX_LIFETIME_SECONDS} s, got {self.lifetime_seconds}")
        if not 0 <= self.refresh_margin_seconds < self.lifetime_seconds:
            raise TokenError("refresh margin must be shorter than the token lifetime")
        if self.algorithm == "HS256":
            if len(self.signing_key.encode()) < MIN_HS256_SECRET_BYTES:
                raise TokenError(f"the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        elif self.algorithm in ASYMMETRIC_ALGORITHMS:
            if not self.key_id:
                raise TokenError(f"{self.algorithm} tokens need a key id (kid)")
            try:
                serialization.load_pem_private_key(self.signing_key.encode(), password=None)
            except (ValueError, TypeError) as exc:
                raise TokenError(f"the {self.algorithm} private key is not a readable PEM key") from exc
        else:
            raise TokenError(f"unsupported JWT algorithm {self.algorithm!r}")

    def token_for(self, audience: str) -> str:
        """A valid token for `audience`, reused until shortly before it expires."""
        if audience not in SERVICE_AUDIENCES:
            raise TokenError(f"unknown audience {audience!r}")
        now = time.time()
        with self._lock:
            cached = self._cache.get(audience)
            if cached is not None and cached.expires_at - self.refresh_margin_seconds > now:
                return cached.token
            token, expires_at = self._mint(audience, now)
            self._cache[audience] = _CachedToken(token, expires_at)
            return token

    def _mint(self, audience: str, now: float) -> tuple[str, float]:
        issued_at = int(now)
        expires_at = issued_at + self.lifetime_seconds
        claims = {
            "iss": self.issuer,
            "sub": SUBJECT,
            "aud": audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self.signing_key, algorithm=self.algorithm, headers=headers), float(expires_at)
