"""What a service does with our tokens (docs/services.md, "Talking to a service"): strict verification.

Lives with the stand-ins: the product only mints tokens (cron_pipelines.clients.tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from cron_pipelines.clients.tokens import (
    MAX_LIFETIME_SECONDS,
    SUBJECT,
    Algorithm,
    TokenError,
    TokenIssuer,
    public_key_pem,
)


@dataclass(frozen=True)
class TokenVerifier:
    """What a service does with our tokens: strict checks, one audience, bounded lifetime.

    `verification_key` is the HS256 secret or the PEM public key.
    """

    audience: str
    algorithm: Algorithm
    verification_key: str
    issuer: str = "cron-pipelines"
    key_id: str | None = None
    leeway_seconds: int = 5

    def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.algorithm:
                raise TokenError("token algorithm is not the one this service accepts")
            if self.key_id is not None and header.get("kid") != self.key_id:
                raise TokenError("token key id is unknown")
            claims = jwt.decode(
                token,
                self.verification_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"], "strict_aud": True},
            )
        except jwt.PyJWTError as exc:
            # PyJWT's messages name the failed check, never the token or key.
            raise TokenError(f"invalid token: {exc}") from exc
        if claims["sub"] != SUBJECT:
            raise TokenError("token subject is not cron-pipelines")
        if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
            raise TokenError(f"token lifetime exceeds {MAX_LIFETIME_SECONDS} s")
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise TokenError("token has no jti")
        return claims

    @classmethod
    def for_issuer(cls, issuer: TokenIssuer, audience: str) -> TokenVerifier:
        """The verifier a service would configure for tokens from `issuer`."""
        key = issuer.signing_key if issuer.algorithm == "HS256" else public_key_pem(issuer.signing_key)
        return cls(
            audience=audience,
            algorithm=issuer.algorithm,
            verification_key=key,
            issuer=issuer.issuer,
            key_id=issuer.key_id,
        )
