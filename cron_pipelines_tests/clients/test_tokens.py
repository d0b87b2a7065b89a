"""Internal JWTs (docs/services.md, Talking to a service), decoded independently with PyJWT."""

from __future__ import annotations

import time

import jwt
import pytest

from cron_pipelines.clients.tokens import TokenError, TokenIssuer, public_key_pem
from cron_pipelines_tests.support.keys import private_key_pem
from demo_services.auth import TokenVerifier

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def _issuer(algorithm: str) -> TokenIssuer:
    if algorithm == "HS256":
        return TokenIssuer(algorithm="HS256", signing_key=SECRET, issuer="cron-pipelines")
    return TokenIssuer(algorithm=algorithm, signing_key=private_key_pem(algorithm), key_id=f"key-{algorithm}")  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("audience", ["sql-service", "mongo-service"])
def test_token_carries_every_claim_and_verifies_with_pyjwt(algorithm: str, audience: str) -> None:
    issuer = _issuer(algorithm)
    before = int(time.time())
    token = issuer.token_for(audience)
    key = SECRET if algorithm == "HS256" else public_key_pem(issuer.signing_key)

    header = jwt.get_unverified_header(token)
    assert header["alg"] == algorithm
    if algorithm != "HS256":
        assert header["kid"] == f"key-{algorithm}"
    claims = jwt.decode(token, key, algorithms=[algorithm], audience=audience, issuer="cron-pipelines")
    assert claims["sub"] == "cron-pipelines"
    assert claims["aud"] == audience  # exactly one audience, not a list
    assert before <= claims["iat"] <= int(time.time())
    assert claims["nbf"] == claims["iat"]
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    # The other service's audience and a wrong key are refused.
    other = "mongo-service" if audience == "sql-service" else "sql-service"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=[algorithm], audience=other)
    wrong_key = "x" * 40 if algorithm == "HS256" else public_key_pem(private_key_pem(algorithm))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, wrong_key, algorithms=[algorithm], audience=audience)


def test_tokens_are_reused_per_audience_and_never_across_audiences() -> None:
    issuer = _issuer("HS256")
    sql_token = issuer.token_for("sql-service")
    assert issuer.token_for("sql-service") == sql_token
    mongo_token = issuer.token_for("mongo-service")
    assert mongo_token != sql_token
    assert jwt.decode(mongo_token, SECRET, algorithms=["HS256"], audience="mongo-service")["aud"] == "mongo-service"


def test_a_token_is_replaced_shortly_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = TokenIssuer(algorithm="HS256", signing_key=SECRET, lifetime_seconds=60, refresh_margin_seconds=10)
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    first = issuer.token_for("sql-service")
    now[0] += 49  # 11 s of validity left: still reused
    assert issuer.token_for("sql-service") == first
    now[0] += 2  # 9 s left: inside the margin, a fresh token with a new jti
    second = issuer.token_for("sql-service")
    assert second != first
    decode = lambda token: jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience="sql-service",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decode(second)["jti"] != decode(first)["jti"]
    assert decode(second)["iat"] == int(now[0])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "HS256", "signing_key": "too-short"}, "at least 32 bytes"),
        ({"algorithm": "RS256", "signing_key": "not a pem", "key_id": "k"}, "not a readable PEM key"),
        ({"algorithm": "RS256", "signing_key": "irrelevant"}, "key id"),
        ({"algorithm": "HS512", "signing_key": SECRET}, "unsupported"),
        ({"algorithm": "HS256", "signing_key": SECRET, "lifetime_seconds": 301}, "lifetime"),
    ],
)
def test_bad_issuer_configuration_is_refused(options: dict, message: str) -> None:
    with pytest.raises(TokenError, match=message):
        TokenIssuer(**options)


def test_unknown_audience_is_refused() -> None:
    with pytest.raises(TokenError, match="(?i)audience"):
        _issuer("HS256").token_for("billing-service")


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256", "EdDSA"])
def test_verifier_accepts_own_service_tokens_and_refuses_the_other_services(algorithm: str) -> None:
    issuer = _issuer(algorithm)
    sql = TokenVerifier.for_issuer(issuer, "sql-service")
    mongo = TokenVerifier.for_issuer(issuer, "mongo-service")
    assert sql.verify(issuer.token_for("sql-service"))["aud"] == "sql-service"
    with pytest.raises(TokenError, match="(?i)audience"):
        sql.verify(issuer.token_for("mongo-service"))
    with pytest.raises(TokenError, match="(?i)audience"):
        mongo.verify(issuer.token_for("sql-service"))


def _signed(claims: dict, key: str = SECRET, algorithm: str = "HS256", headers: dict | None = None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": "cron-pipelines",
        "sub": "cron-pipelines",
        "aud": "sql-service",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "j1",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


@pytest.mark.parametrize(
    ("token_factory", "message"),
    [
        (
            lambda: _signed(_claims(exp=int(time.time()) - 60, iat=int(time.time()) - 120, nbf=int(time.time()) - 120)),
            "expired",
        ),
        (lambda: _signed(_claims(), key="another-secret-that-is-long-enough-xx"), "Signature"),
        (lambda: _signed(_claims(iss="someone-else")), "issuer"),
        (lambda: _signed(_claims(sub="intruder")), "subject"),
        (lambda: _signed(_claims(jti=None)), "jti"),
        (lambda: _signed(_claims(exp=int(time.time()) + 3600)), "lifetime"),
        (lambda: _signed(_claims(nbf=int(time.time()) + 120)), "not yet valid"),
        (lambda: _signed(_claims(aud=["sql-service", "mongo-service"])), "Invalid claim format"),
        (lambda: "not-a-token", "invalid token"),
    ],
)
def test_verifier_refuses_bad_tokens(token_factory, message: str) -> None:
    verifier = TokenVerifier(audience="sql-service", algorithm="HS256", verification_key=SECRET)
    with pytest.raises(TokenError, match=message):
        verifier.verify(token_factory())


def test_verifier_refuses_an_algorithm_switch() -> None:
    verifier = TokenVerifier(audience="sql-service", algorithm="HS256", verification_key=SECRET)
    rsa_issuer = _issuer("RS256")
    with pytest.raises(TokenError, match="algorithm"):
        verifier.verify(rsa_issuer.token_for("sql-service"))
